// The coordinator under load, measured in one run against the real layerprune-coordinator process on
// loopback:
//
// 1. Throughput: N client threads (each its own gRPC channel, as N workers would have) lease one-point
//    tasks and report a one-metric result for each, until none is left. Printed: leases + reports per
//    second over the whole run (the target is at least 2000/s), and the latency of each call.
//    Every lease and report is a committed SQLite transaction (WAL, synchronous=NORMAL).
// 2. Resume: a 100,000-point grid (one heal task per point), half of it done and a few leases open, the
//    coordinator killed with SIGKILL and started again on the same database. Printed: the time from the
//    new process's start to the first lease it serves, next to the same on an empty database.
//
// Usage: bench_coordinator [--clients N] [--tasks T] [--resume-points P] [--resume-done F]
// Exits 1 if any task was not reported exactly once (never because of the time measured).
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>
#include <vector>

#include "common/args.h"
#include "proto/client.h"
#include "coordinator/store.h"
#include "tests/coordinator_fixtures.h"

using namespace layerprune;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// CPU seconds (user + system) of this process, or of its reaped children.
double cpu_seconds(int who) {
  rusage u{};
  getrusage(who, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

// layerprune-coordinator as a child process, its output in `log`.
struct CoordinatorProcess {
  pid_t pid = -1;
  std::string address;

  void start(const std::string& db, const std::string& address_file, const std::string& listen,
             const std::string& log) {
    std::filesystem::remove(address_file);
    pid = fork();
    if (pid == 0) {
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      execl(LAYERPRUNE_COORDINATOR, LAYERPRUNE_COORDINATOR, "--db", db.c_str(), "--listen", listen.c_str(),
            "--address-file", address_file.c_str(), "--lease-seconds", "60", nullptr);
      _exit(127);
    }
  }
  // Waits for the address file (the server is listening once it exists).
  bool wait_address(const std::string& address_file, double timeout_s = 30) {
    const auto t0 = Clock::now();
    while (seconds_since(t0) < timeout_s) {
      std::ifstream in(address_file);
      if (in && std::getline(in, address) && !address.empty()) return true;
      if (waitpid(pid, nullptr, WNOHANG) == pid) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return false;
  }
  void signal_and_wait(int sig) {
    if (pid <= 0) return;
    ::kill(pid, sig);
    waitpid(pid, nullptr, 0);
    pid = -1;
  }
};

nlohmann::json minimal_result(const Lease& l) {
  nlohmann::json points = nlohmann::json::array();
  for (const auto& p : l.points) points.push_back({{"key", p.at("key")}, {"metrics", {{"loss", 1.0}}}});
  return {{"points", points}};
}

struct Latencies {
  std::mutex mu;
  std::vector<double> lease_ms, report_ms;
  static double percentile(std::vector<double> v, double q) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, size_t(q * double(v.size())))];
  }
};

// Time from spawning a coordinator on `db` to the first lease it grants.
double first_lease_after_start(const std::string& dir, const std::string& db, const std::string& listen,
                               double* to_listening) {
  CoordinatorProcess c;
  const std::string address_file = dir + "/address";
  const auto t0 = Clock::now();
  c.start(db, address_file, listen, dir + "/coordinator.log");
  if (!c.wait_address(address_file)) throw std::runtime_error("the coordinator did not start: see " + dir + "/coordinator.log");
  *to_listening = seconds_since(t0);
  ClientOptions o;
  o.retry_for = std::chrono::seconds(30);
  CoordinatorClient client(c.address, o);
  const std::string w = client.register_worker({"bench", "localhost", "bench", getpid()});
  std::optional<Lease> l;
  while (!l) l = client.lease(w, "", std::chrono::milliseconds(1000));
  const double t = seconds_since(t0);
  c.signal_and_wait(SIGTERM);
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  ArgParser p("bench_coordinator", "Coordinator throughput (leases + reports per second) and resume time.");
  p.option("clients", "concurrent no-op clients (threads, one channel each)", "8")
      .option("tasks", "one-point tasks for the throughput run", "20000")
      .option("resume-points", "grid points of the resume run", "100000")
      .option("resume-done", "share of the resume grid already done when the coordinator is killed", "0.5");
  try {
    if (!p.parse(argc, argv)) return 0;
    const int clients = int(p.get_int("clients"));
    const int64_t tasks = p.get_int("tasks");
    const std::string dir = (std::filesystem::temp_directory_path() / "layerprune-bench-coordinator").string();
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);

    // ---- 1. throughput ----
    const std::string db = dir + "/throughput.db";
    {
      Store s(db);
      s.submit(testing::flat_plan("throughput", tasks, 1, 4));
    }
    CoordinatorProcess coord;
    coord.start(db, dir + "/address", "127.0.0.1:0", dir + "/coordinator.log");
    if (!coord.wait_address(dir + "/address")) throw std::runtime_error("the coordinator did not start: see " + dir + "/coordinator.log");
    std::atomic<int64_t> leases{0}, reports{0}, rejected{0};
    Latencies lat;
    std::vector<std::thread> threads;
    const double self_cpu0 = cpu_seconds(RUSAGE_SELF), child_cpu0 = cpu_seconds(RUSAGE_CHILDREN);
    const auto t0 = Clock::now();
    for (int i = 0; i < clients; ++i)
      threads.emplace_back([&, i] {
        ClientOptions o;
        o.retry_for = std::chrono::seconds(30);
        CoordinatorClient c(coord.address, o);
        const std::string w = c.register_worker({"bench-" + std::to_string(i), "localhost", "bench", getpid()});
        std::string model;
        std::vector<double> lm, rm;
        for (;;) {
          bool drained = false;
          auto a = Clock::now();
          std::optional<Lease> l = c.lease(w, model, std::chrono::milliseconds(200), &drained);
          if (!l) {
            if (drained) break;
            continue;
          }
          lm.push_back(seconds_since(a) * 1000);
          ++leases;
          model = l->model;
          a = Clock::now();
          Verdict v = c.report(w, *l, minimal_result(*l));
          rm.push_back(seconds_since(a) * 1000);
          v.accepted ? ++reports : ++rejected;
        }
        std::lock_guard<std::mutex> lock(lat.mu);
        lat.lease_ms.insert(lat.lease_ms.end(), lm.begin(), lm.end());
        lat.report_ms.insert(lat.report_ms.end(), rm.begin(), rm.end());
      });
    for (auto& t : threads) t.join();
    const double elapsed = seconds_since(t0);
    const double clients_cpu = cpu_seconds(RUSAGE_SELF) - self_cpu0;
    coord.signal_and_wait(SIGTERM);
    const double server_cpu = cpu_seconds(RUSAGE_CHILDREN) - child_cpu0;
    const double rate = double(leases + reports) / elapsed;
    std::printf("throughput: %d clients on loopback, %lld one-point tasks: %lld leases + %lld reports (%lld rejected) "
                "in %.2f s = %.0f calls/s (target >= 2000/s), %.0f tasks/s\n",
                clients, (long long)tasks, (long long)leases.load(), (long long)reports.load(),
                (long long)rejected.load(), elapsed, rate, double(reports) / elapsed);
    std::printf("  latency ms: lease p50 %.2f p99 %.2f, report p50 %.2f p99 %.2f\n",
                Latencies::percentile(lat.lease_ms, 0.5), Latencies::percentile(lat.lease_ms, 0.99),
                Latencies::percentile(lat.report_ms, 0.5), Latencies::percentile(lat.report_ms, 0.99));
    std::printf("  CPU: coordinator %.2f s (%.0f us per call), clients %.2f s, on %u cores shared by both\n", server_cpu,
                1e6 * server_cpu / double(leases + reports), clients_cpu, std::thread::hardware_concurrency());

    // ---- 2. resume ----
    const int64_t points = p.get_int("resume-points");
    const int64_t done = int64_t(double(points) * p.get_double("resume-done"));
    const std::string rdb = dir + "/resume.db";
    auto t1 = Clock::now();
    {
      Store s(rdb);
      s.submit(testing::flat_plan("resume", points, 1, 8));
      const double submit_s = seconds_since(t1);
      t1 = Clock::now();
      const std::string w = s.register_worker({"prep", "localhost", "bench", getpid()});
      for (int64_t i = 0; i < done; ++i) {
        std::optional<Lease> l = s.lease(w, "");
        s.report(w, l->task_id, l->token, minimal_result(*l).dump());
      }
      std::printf("resume: %lld-point grid stored in %.2f s (one transaction); %lld points leased and reported "
                  "through the store in %.2f s\n",
                  (long long)points, submit_s, (long long)done, seconds_since(t1));
    }
    // A few leases open and un-checkpointed WAL content, then SIGKILL: what a crashed coordinator leaves.
    coord.start(rdb, dir + "/address", "127.0.0.1:0", dir + "/coordinator.log");
    if (!coord.wait_address(dir + "/address")) throw std::runtime_error("the coordinator did not start");
    const std::string listen = coord.address;
    {
      CoordinatorClient c(coord.address);
      const std::string w = c.register_worker({"held", "localhost", "bench", getpid()});
      for (int i = 0; i < 8; ++i) c.lease(w, "");
    }
    coord.signal_and_wait(SIGKILL);
    const auto wal = std::filesystem::exists(rdb + "-wal") ? std::filesystem::file_size(rdb + "-wal") : 0;
    double listening = 0, listening_empty = 0;
    const double resume_s = first_lease_after_start(dir, rdb, listen, &listening);
    const std::string edb = dir + "/empty.db";
    {
      Store s(edb);
      s.submit(testing::flat_plan("empty", 1, 1, 1));
    }
    const double empty_s = first_lease_after_start(dir, edb, "127.0.0.1:0", &listening_empty);
    std::printf("resume: coordinator killed (-9) with 8 leases open on the %lld-point grid (%lld done, database %.1f MB, "
                "WAL %.1f MB), restarted: listening after %.0f ms, first lease served %.0f ms after start "
                "(a one-point database: %.0f ms and %.0f ms)\n",
                (long long)points, (long long)done, double(std::filesystem::file_size(rdb)) / 1e6, double(wal) / 1e6,
                listening * 1000, resume_s * 1000, listening_empty * 1000, empty_s * 1000);
    std::printf("Throughput counts every lease and report, each one committed SQLite transaction (WAL, synchronous=NORMAL: "
                "durable across a killed process, not across power loss before a checkpoint); resume time is process "
                "start, database open and WAL recovery, lease renewal and the first indexed lease query.\n");
    std::filesystem::remove_all(dir);
    if (reports != tasks || rejected != 0) {
      std::fprintf(stderr, "bench_coordinator: error: %lld of %lld tasks reported, %lld rejected\n",
                   (long long)reports.load(), (long long)tasks, (long long)rejected.load());
      return 1;
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_coordinator: error: %s\n", e.what());
    return 1;
  }
}
