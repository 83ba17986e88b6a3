// Chaos: the real layerprune-coordinator and several no-op worker processes (tests/noop_worker) over a grid of
// about 500 points, while a driver SIGKILLs a random worker or the coordinator every few seconds and now and
// then SIGSTOPs a worker past its lease (it wakes up, reports late, and must be fenced off). Killed workers
// are replaced; a killed coordinator is restarted on the same database (workers follow its address file).
// At the end every point must have exactly one result per metric, and a checker reads the database for
// broken invariants: a task done but still leased, a result, item, distance table or provenance whose
// attempt did not finish, a task with other than one finished attempt, a result from an attempt that was
// not the task's last (a stale fencing token accepted), a task not done, and the rest of the store's
// invariants (coordinator/invariants.h, shared with fuzz/fuzz_coordinator_rpc.cc).
//
// Printed: kills (workers, coordinator), stops, leases and re-leases, the work thrown away (seconds of
// attempts that did not finish), the wall time, and each invariant's count. Exit 0 when everything holds,
// 1 otherwise (never because of a time measured). tests/CMakeLists.txt runs a 30-second version.
//
// Usage: bench_chaos [--seconds 300] [--models 56] [--workers 4] [--task-ms 2000] [--kill-every 3] [--seed 1]
//                    [--dir DIR] [--require-each-fault]
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/args.h"
#include "common/error.h"
#include "coordinator/invariants.h"
#include "coordinator/sqlite.h"
#include "proto/client.h"
#include "tests/child_process.h"
#include "tests/coordinator_fixtures.h"

using namespace layerprune;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// A child process (fork + exec), output appended to `log`.
struct Child {
  pid_t pid = -1;
  void spawn(const std::vector<std::string>& argv, const std::string& log) { pid = testing::spawn_logged(argv, log); }
  bool exited() {  // reaps it when it has ended
    if (pid > 0 && waitpid(pid, nullptr, WNOHANG) == pid) pid = -1;
    return pid <= 0;
  }
  void end(int sig) {
    if (pid <= 0) return;
    ::kill(pid, sig);
    ::kill(pid, SIGCONT);
    waitpid(pid, nullptr, 0);
    pid = -1;
  }
};

int64_t one(sqlite::Database& db, const std::string& sql) {
  auto st = db.prepare(sql);
  st.step();
  return st.int64(0);
}

}  // namespace

int main(int argc, char** argv) {
  ArgParser p("bench_chaos", "Kill workers and the coordinator while a grid runs; check nothing is lost or repeated.");
  p.option("seconds", "how long the driver kills (the grid may finish first)", "300")
      .option("models", "models in the grid (9 points and 6 tasks each)", "56")
      .option("workers", "no-op worker processes", "4")
      .option("task-ms", "time each task takes", "2000")
      .option("kill-every", "seconds between faults", "3")
      .option("seed", "seed of the driver's choices", "1")
      .option("dir", "working directory (default: a new one under /tmp)", "")
      .flag("require-each-fault", "fail unless every kind of fault (worker kill, coordinator kill, stop) happened");
  try {
    if (!p.parse(argc, argv)) return 0;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "bench_chaos: %s\n", e.what());
    return 2;
  }
  std::string dir = p.get("dir");
  const bool own_dir = dir.empty();  // removed at the end when everything held
  if (own_dir) {
    char tmpl[] = "/tmp/layerprune-chaos-XXXXXX";
    dir = mkdtemp(tmpl);
  }
  std::filesystem::create_directories(dir);
  const std::string db = dir + "/coordinator.db", address_file = dir + "/address";
  std::mt19937_64 rng(uint64_t(p.get_int("seed")));
  const double lease_s = 1.0;

  Child coordinator;
  auto start_coordinator = [&] {
    std::filesystem::remove(address_file);
    coordinator.spawn({LAYERPRUNE_COORDINATOR, "--db", db, "--listen", "127.0.0.1:0", "--address-file", address_file,
                       "--lease-seconds", std::to_string(lease_s), "--backoff-seconds", "0.1", "--max-attempts",
                       "1000", "--max-wait-seconds", "1"},
                      dir + "/coordinator.log");
    const auto t0 = Clock::now();
    while (!std::filesystem::exists(address_file) && seconds_since(t0) < 30)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (!std::filesystem::exists(address_file)) throw std::runtime_error("the coordinator did not start: see " + dir);
  };
  std::vector<std::string> models;
  for (int64_t i = 0; i < p.get_int("models"); ++i) models.push_back("m" + std::to_string(i));
  const Submission plan = testing::small_plan("chaos", models, 2);
  int64_t experiment = 0;
  std::vector<Child> workers(size_t(p.get_int("workers")));
  int next_worker = 0;
  auto start_worker = [&](Child& w) {
    const std::string name = "w" + std::to_string(next_worker++);
    w.spawn({LAYERPRUNE_NOOP_WORKER, "--coordinator", address_file, "--name", name, "--sleep-ms", p.get("task-ms"),
             "--wait-ms", "500", "--retry-seconds", "60", "--report-even-if-lost", "--exit-when-drained"},
            dir + "/workers.log");
  };
  int worker_kills = 0, coordinator_kills = 0, stops = 0;
  const auto t0 = Clock::now();
  try {
    start_coordinator();
    ClientOptions o;
    o.retry_for = std::chrono::seconds(60);
    CoordinatorClient client(find_coordinator(address_file, "", ""), o);  // follows the file across restarts
    experiment = client.submit(plan).experiment_id;
    for (Child& w : workers) start_worker(w);
    std::printf("chaos: %zu points in %zu tasks, %zu workers, tasks of %s ms, a fault every %s s for up to %s s (%s)\n",
                plan.points.size(), plan.tasks.size(), workers.size(), p.get("task-ms").c_str(),
                p.get("kill-every").c_str(), p.get("seconds").c_str(), dir.c_str());
    std::fflush(stdout);
    struct Paused {
      Child* worker;
      Clock::time_point until;
    };
    std::vector<Paused> paused;
    auto next_fault = Clock::now();
    bool finished = false;
    while (!finished && seconds_since(t0) < p.get_double("seconds")) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      for (auto it = paused.begin(); it != paused.end();) {
        if (Clock::now() < it->until) {
          ++it;
          continue;
        }
        ::kill(it->worker->pid, SIGCONT);  // it wakes past its lease: its late report must be fenced off
        it = paused.erase(it);
      }
      for (Child& w : workers)
        if (w.exited() && std::none_of(paused.begin(), paused.end(), [&](const Paused& q) { return q.worker == &w; }))
          start_worker(w);  // a worker that ended (drained, or gave up) is replaced while the grid runs
      if (Clock::now() >= next_fault) {
        next_fault = Clock::now() + std::chrono::milliseconds(int64_t(p.get_double("kill-every") * 1000));
        const double r = std::uniform_real_distribution<double>(0, 1)(rng);
        Child& w = workers[size_t(std::uniform_int_distribution<size_t>(0, workers.size() - 1)(rng))];
        const bool is_paused = std::any_of(paused.begin(), paused.end(), [&](const Paused& q) { return q.worker == &w; });
        if (r < 0.15) {
          coordinator.end(SIGKILL);
          ++coordinator_kills;
          start_coordinator();
        } else if (r < 0.3 && !is_paused && w.pid > 0) {
          ::kill(w.pid, SIGSTOP);
          paused.push_back({&w, Clock::now() + std::chrono::milliseconds(int64_t((lease_s + 1.5) * 1000))});
          ++stops;
        } else if (!is_paused) {
          w.end(SIGKILL);
          ++worker_kills;
          start_worker(w);
        }
      }
      try {
        finished = client.watch_status(experiment, false).finished;
      } catch (const std::exception&) {
        // the coordinator is restarting: ask again next round
      }
    }
    for (const Paused& q : paused) ::kill(q.worker->pid, SIGCONT);
    const double chaos_s = seconds_since(t0);
    // Faults over: let the workers finish what is left.
    const auto drain0 = Clock::now();
    while (!finished && seconds_since(drain0) < 600) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      for (Child& w : workers)
        if (w.exited()) start_worker(w);
      finished = client.watch_status(experiment, false).finished;
    }
    for (Child& w : workers) w.end(SIGTERM);
    coordinator.end(SIGTERM);
    const double wall_s = seconds_since(t0);

    sqlite::Database d(db);
    const int64_t points = one(d, "SELECT COUNT(*) FROM grid_points"), tasks = one(d, "SELECT COUNT(*) FROM tasks"),
                  attempts = one(d, "SELECT COUNT(*) FROM attempts");
    const double lost_s =
        double(one(d, "SELECT COALESCE(SUM(ended_at - started_at), 0) FROM attempts WHERE outcome != 'done'")) / 1000.0;
    // What must hold once the grid has finished, then the store's invariants (coordinator/invariants.h:
    // they hold after every call; the fuzz target checks the same queries after every request).
    std::vector<std::pair<const char*, const char*>> invariants = {
        {"tasks not done", "SELECT COUNT(*) FROM tasks WHERE state != 'done'"},
        {"points without exactly one result per metric",
         "SELECT COUNT(*) FROM grid_points g WHERE (SELECT COUNT(*) FROM results r WHERE r.point_id = g.id) != 2 "
         "OR (SELECT COUNT(DISTINCT metric) FROM results r WHERE r.point_id = g.id) != 2"},
    };
    for (const StoreInvariant& i : kStoreInvariants) invariants.emplace_back(i.what, i.sql);
    std::printf("chaos: %.0f s of faults, %.0f s in all: %d worker kills, %d coordinator kills, %d worker stops past "
                "their lease\n",
                chaos_s, wall_s, worker_kills, coordinator_kills, stops);
    std::printf("chaos: %lld points, %lld tasks, %lld attempts (%lld re-leases), %.1f s of work thrown away\n",
                (long long)points, (long long)tasks, (long long)attempts, (long long)(attempts - tasks), lost_s);
    int broken = points == int64_t(plan.points.size()) ? 0 : 1;
    if (p.flag_set("require-each-fault") && (worker_kills == 0 || coordinator_kills == 0 || stops == 0)) {
      std::printf("chaos: not every kind of fault happened (--require-each-fault): a longer run or another --seed\n");
      ++broken;
    }
    for (const auto& [what, sql] : invariants) {
      const int64_t n = one(d, sql);
      std::printf("  %-100s %lld\n", what, (long long)n);
      broken += n != 0;
    }
    std::printf("chaos: %s\n", broken ? "BROKEN INVARIANTS (see above)" : "every point has exactly one result; no invariant broken");
    if (!broken && own_dir) std::filesystem::remove_all(dir);
    return broken ? 1 : 0;
  } catch (const std::exception& e) {
    for (Child& w : workers) w.end(SIGKILL);
    coordinator.end(SIGKILL);
    std::fprintf(stderr, "bench_chaos: %s (logs in %s)\n", e.what(), dir.c_str());
    return 1;
  }
}
