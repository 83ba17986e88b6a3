#include "worker/lease_loop.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "common/error.h"
#include "common/version.h"
#include "proto/client.h"

namespace layerprune {

using nlohmann::json;

namespace {

std::string hostname() {
  char buf[256] = {0};
  gethostname(buf, sizeof buf - 1);
  return buf;
}

// What rank 0 tells its group each round.
json lease_message(const Lease& l) {
  return {{"op", "task"},    {"task_key", l.task_key}, {"kind", l.kind},
          {"payload", l.payload}, {"inputs", l.dependencies}, {"attempt", l.attempt},
          {"experiment", l.experiment}};
}

// Heartbeats a lease from its own thread while the group works; carries the newest healing checkpoint.
class Heartbeat {
 public:
  Heartbeat(CoordinatorClient& client, const std::string& worker, const Lease& lease, const LeaseGroup& group,
            const std::string& checkpoint_key, std::atomic<bool>& abandon)
      : client_(client), worker_(worker), lease_(lease), group_(group), key_(checkpoint_key), abandon_(abandon) {
    thread_ = std::thread([this] { loop(); });
  }
  ~Heartbeat() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  std::string lost_reason() {
    std::lock_guard<std::mutex> lock(mu_);
    return reason_;
  }

 private:
  void loop() {
    const auto interval = std::chrono::milliseconds(std::max<int64_t>(200, client_.heartbeat_ms()));
    std::unique_lock<std::mutex> lock(mu_);
    while (!cv_.wait_for(lock, interval, [this] { return done_; })) {
      lock.unlock();
      HeartbeatAnswer a;
      std::string error;
      try {
        a = client_.heartbeat(worker_, lease_, group_.latest_checkpoint(key_));
      } catch (const std::exception& e) {
        error = e.what();  // unreachable for now: keep working, the lease may still be ours
      }
      lock.lock();
      if (!error.empty()) {
        std::fprintf(stderr, "worker: heartbeat for %s failed: %s\n", lease_.task_key.c_str(), error.c_str());
      } else if (a.action != LeaseAction::kContinue) {
        reason_ = (a.action == LeaseAction::kCancel ? "cancelled: " : "lease lost: ") + a.reason;
        abandon_ = true;  // a healing task checkpoints and stops at its next step
      }
    }
  }
  CoordinatorClient& client_;
  std::string worker_;
  Lease lease_;
  const LeaseGroup& group_;
  std::string key_;
  std::atomic<bool>& abandon_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::string reason_;
  std::thread thread_;
};

}  // namespace

int run_lease_loop(LeaseGroup& g, const LeaseLoopOptions& o) {
  // Rank 0 connects and registers; a failure there ends the whole group with the same status.
  std::unique_ptr<CoordinatorClient> client;
  std::string worker_id, error;
  int status = 0;
  if (g.leader()) {
    try {
      ClientOptions options;
      options.retry_for = o.retry_for;
      client = std::make_unique<CoordinatorClient>(find_coordinator(o.coordinator, o.token_file, o.tls_ca), options);
      WorkerInfo info;
      info.host = hostname();
      info.pid = getpid();
      info.code_version = layerprune_version();
      // "slurm 1234_5" for array task 5 of array job 1234 (what squeue and scancel take), else "slurm 1234".
      const char* array_job = std::getenv("SLURM_ARRAY_JOB_ID");
      const char* array_task = std::getenv("SLURM_ARRAY_TASK_ID");
      const char* job = array_job && array_task ? array_job : std::getenv("SLURM_JOB_ID");
      if (!array_job) array_task = nullptr;
      info.name = info.host + ":" + std::to_string(info.pid) + " " + g.label() + " tp " + std::to_string(g.tp()) +
                  (job ? std::string(" slurm ") + job + (array_task ? std::string("_") + array_task : "") : "");
      worker_id = client->register_worker(info);
      g.log("registered with " + client->address() + " as " + worker_id);
    } catch (const CoordinatorUnavailable& e) {
      error = e.what();
      status = kExitCoordinatorUnavailable;
    } catch (const std::exception& e) {
      error = e.what();
      status = 2;
    }
  }
  std::string failed = error.empty() ? "" : std::to_string(status) + " " + error;
  g.broadcast(failed);
  if (!failed.empty()) {
    if (g.leader()) std::fprintf(stderr, "layerprune-worker: error: %s\n", error.c_str());
    return std::atoi(failed.c_str());
  }

  auto idle_since = std::chrono::steady_clock::now();
  while (true) {
    if (g.stop_requested()) {
      g.log("stop requested: exiting");
      return 3;
    }
    // Rank 0 leases (preferring the model the group holds) and tells the group what to do.
    std::string message;
    std::optional<Lease> lease;
    if (g.leader()) {
      json m;
      try {
        bool drained = false;
        lease = client->lease(worker_id, g.loaded_model(), std::chrono::milliseconds(2000), &drained, g.tp());
        const double idle = std::chrono::duration<double>(std::chrono::steady_clock::now() - idle_since).count();
        if (lease)
          m = lease_message(*lease);
        else if ((drained && o.exit_when_drained) || (o.idle_exit_seconds > 0 && idle > o.idle_exit_seconds))
          m = {{"op", "exit"}, {"why", drained ? "the coordinator has nothing left to do" : "idle"}};
        else
          m = {{"op", "wait"}};
      } catch (const CoordinatorUnavailable& e) {
        m = {{"op", "fatal"}, {"status", kExitCoordinatorUnavailable}, {"why", e.what()}};
      } catch (const std::exception& e) {
        m = {{"op", "fatal"}, {"status", 1}, {"why", e.what()}};
      }
      message = m.dump();
    }
    g.broadcast(message);
    const json m = json::parse(message);
    const std::string op = m.at("op");
    if (op == "exit") {
      g.log("exiting: " + m.value("why", std::string()));
      return status;
    }
    if (op == "fatal") {
      g.log("error: " + m.value("why", std::string()));
      return m.value("status", 1);
    }
    if (op == "wait") continue;

    // Every rank runs the task; rank 0 heartbeats meanwhile and reports.
    const std::string key = m.at("task_key"), kind = m.at("kind");
    const std::string checkpoint_key = m.value("experiment", std::string("experiment")) + "/" + key;
    std::atomic<bool> abandon{false};
    std::unique_ptr<Heartbeat> heartbeat;
    if (g.leader()) {
      g.log("task " + key + " (attempt " + std::to_string(m.value("attempt", 1)) + ")");
      heartbeat = std::make_unique<Heartbeat>(*client, worker_id, *lease, g, checkpoint_key, abandon);
    }
    const auto start = std::chrono::steady_clock::now();
    json result;
    std::string task_error;
    bool retryable = true;
    try {
      result = g.run(kind, m.at("payload"), m.at("inputs"), checkpoint_key, &abandon);
    } catch (const InputError& e) {  // the same on every rank: bad data or payload, retrying cannot help
      task_error = e.what();
      retryable = false;
    } catch (const std::exception& e) {
      if (g.broken(e)) throw;  // the group is broken: the job ends and the lease expires (the coordinator re-queues)
      task_error = e.what();
    }
    const std::string lost = heartbeat ? heartbeat->lost_reason() : "";
    heartbeat.reset();
    if (!g.leader()) continue;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    try {
      Verdict v;
      if (!task_error.empty()) {
        v = client->fail(worker_id, *lease, task_error, retryable);
        g.log("task " + key + " failed (" + (retryable ? "retryable" : "bad input") + "): " + task_error);
      } else if (result.value("stopped", false)) {
        const std::string ckpt = result.value("checkpoint", std::string());
        v = client->release(worker_id, *lease, ckpt, lost.empty() ? "stopped by a signal" : lost);
        g.log("task " + key + " stopped at its checkpoint " + ckpt + "; " +
              (v.accepted ? "lease given back" : "release not accepted (" + v.reason + ")") +
              (lost.empty() ? "" : " after " + lost));
      } else {
        v = client->report(worker_id, *lease, result);
        g.log("task " + key + " done in " + std::to_string(secs).substr(0, 6) + " s" +
              (v.accepted ? "" : "; report rejected: " + v.reason));
        // A result the coordinator cannot store is a bug, not bad luck: fail the task rather than let its
        // lease expire and the same result be computed and rejected again (a stale lease's fail is
        // rejected too, harmlessly).
        if (!v.accepted && !v.duplicate) client->fail(worker_id, *lease, "result rejected: " + v.reason, false);
      }
    } catch (const std::exception& e) {
      g.log("cannot reach the coordinator after task " + key + ": " + e.what() +
            " (its lease will expire and the task be re-queued)");
    }
    idle_since = std::chrono::steady_clock::now();
  }
}

}  // namespace layerprune
