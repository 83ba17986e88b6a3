// A worker that computes nothing: it registers, leases tasks, heartbeats from its own thread while it
// "works" (sleeps), and reports the deterministic fake result of tests/coordinator_fixtures.h. The
// coordinator's process tests run several of these and kill, pause and restart them and the coordinator.
//
// Every event is one line on stderr and, with --log, appended to a file the tests read:
//   registered id=W | leased key=K token=T attempt=A checkpoint=C | heartbeat lost|cancel key=K reason=R |
//   reported key=K token=T | rejected key=K token=T reason=R | released key=K token=T checkpoint=C |
//   abandoned key=K | drained
// Exit status: 0 done (drained or --max-tasks), 3 stopped by SIGTERM after releasing its lease,
// 4 (kExitCoordinatorUnavailable) coordinator unreachable, 1 anything else.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>

#include "common/args.h"
#include "common/error.h"
#include "proto/client.h"
#include "tests/coordinator_fixtures.h"

using namespace layerprune;

namespace {

std::atomic<bool> g_stop{false};
void on_sigterm(int) { g_stop = true; }

class EventLog {
 public:
  explicit EventLog(const std::string& path) : file_(path.empty() ? nullptr : std::fopen(path.c_str(), "a")) {}
  ~EventLog() {
    if (file_) std::fclose(file_);
  }
  void operator()(const std::string& line) {
    std::lock_guard<std::mutex> lock(mu_);
    const double t = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    std::fprintf(stderr, "noop_worker[%d] %.3f: %s\n", int(getpid()), t, line.c_str());
    if (file_) {
      std::fprintf(file_, "%s\n", line.c_str());
      std::fflush(file_);
    }
  }

 private:
  std::FILE* file_;
  std::mutex mu_;
};

}  // namespace

int main(int argc, char** argv) {
  ArgParser p("noop_worker", "A worker that reports deterministic fake results (coordinator tests and bench).");
  p.option("coordinator", "host:port or address file ($LAYERPRUNE_COORDINATOR when empty)", "")
      .option("token-file", "shared token file", "")
      .option("tls-ca", "CA certificate (PEM) of a TLS coordinator", "")
      .option("name", "worker name", "noop")
      .option("model", "model loaded at start (its tasks are preferred)", "")
      .option("sleep-ms", "time each task takes", "0")
      .option("wait-ms", "long-poll wait of each lease call", "1000")
      .option("max-tasks", "stop after this many tasks (0: no limit)", "0")
      .option("retry-seconds", "how long to retry an unreachable coordinator", "30")
      .option("items", "evaluation items per grid point", "3")
      .option("log", "append events to this file", "")
      .flag("exit-when-drained", "exit when the coordinator has nothing left to do")
      .flag("report-even-if-lost",
            "report even after a heartbeat said the lease was lost (tests the coordinator's fencing, as a "
            "worker cut off from the coordinator would)");
  try {
    if (!p.parse(argc, argv)) return 0;
    EventLog events(p.get("log"));
    struct sigaction sa {};
    sa.sa_handler = on_sigterm;
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);

    ClientOptions options;
    options.retry_for = std::chrono::milliseconds(int64_t(p.get_double("retry-seconds") * 1000));
    options.rpc_timeout = std::chrono::milliseconds(5000);
    CoordinatorClient client(find_coordinator(p.get("coordinator"), p.get("token-file"), p.get("tls-ca")), options);
    char host[256] = {0};
    gethostname(host, sizeof host - 1);
    const std::string id = client.register_worker({p.get("name"), host, "noop", int64_t(getpid())});
    events("registered id=" + id);

    std::string loaded = p.get("model");
    const int64_t sleep_ms = p.get_int("sleep-ms"), max_tasks = p.get_int("max-tasks");
    const int items = int(p.get_int("items"));
    const bool report_lost = p.flag_set("report-even-if-lost");
    int64_t done = 0;
    while (!g_stop && (max_tasks == 0 || done < max_tasks)) {
      bool drained = false;
      std::optional<Lease> l = client.lease(id, loaded, std::chrono::milliseconds(p.get_int("wait-ms")), &drained);
      if (!l) {
        if (drained && p.flag_set("exit-when-drained")) {
          events("drained");
          break;
        }
        continue;
      }
      const std::string tag = "key=" + l->task_key + " token=" + std::to_string(l->token);
      events("leased " + tag + " attempt=" + std::to_string(l->attempt) + " checkpoint=" + l->checkpoint);
      loaded = l->model;

      // Heartbeats from their own thread, as a real worker's trainer would be busy.
      std::atomic<bool> working{true}, lost{false}, cancelled{false};
      const std::string checkpoint = "noop-checkpoint/" + l->task_key;
      std::thread heart([&] {
        const auto every = std::chrono::milliseconds(std::max<int64_t>(20, client.heartbeat_ms()));
        auto next = std::chrono::steady_clock::now() + every;
        while (working) {
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
          if (std::chrono::steady_clock::now() < next) continue;
          next = std::chrono::steady_clock::now() + every;
          try {
            HeartbeatAnswer a = client.heartbeat(id, *l, checkpoint);
            if (a.action == LeaseAction::kLost && !lost.exchange(true)) events("heartbeat lost " + tag + " reason=" + a.reason);
            if (a.action == LeaseAction::kCancel && !cancelled.exchange(true))
              events("heartbeat cancel " + tag + " reason=" + a.reason);
          } catch (const std::exception& e) {
            events(std::string("heartbeat error ") + tag + " " + e.what());
          }
        }
      });
      const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(sleep_ms);
      while (std::chrono::steady_clock::now() < until && !g_stop && !cancelled && !(lost && !report_lost))
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      working = false;
      heart.join();

      if (g_stop || cancelled) {
        Verdict v = client.release(id, *l, checkpoint, g_stop ? "SIGTERM" : "cancelled");
        events(std::string(v.accepted ? "released " : "release rejected ") + tag + " checkpoint=" + checkpoint +
               (v.accepted ? "" : " reason=" + v.reason));
        if (g_stop) return 3;
        continue;
      }
      if (lost && !report_lost) {
        events("abandoned " + tag);
        continue;
      }
      Verdict v = client.report(id, *l, testing::noop_result(*l, items));
      events(std::string(v.accepted ? "reported " : "rejected ") + tag + (v.duplicate ? " duplicate" : "") +
             (v.accepted ? "" : " reason=" + v.reason));
      ++done;
    }
    return g_stop ? 3 : 0;
  } catch (const CoordinatorUnavailable& e) {
    std::fprintf(stderr, "noop_worker: error: %s\n", e.what());
    return kExitCoordinatorUnavailable;
  } catch (const InputError& e) {
    std::fprintf(stderr, "noop_worker: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "noop_worker: error: %s\n", e.what());
    return 1;
  }
}
