// layerprune-worker against the coordinator: register, lease, run, heartbeat, report.
//
// Rank 0 of each group talks to the coordinator; the group follows it:
//   loop: rank 0 leases a task (preferring the model the group holds) and broadcasts it; every rank runs it
//         (worker/experiment_tasks.h); rank 0 heartbeats from its own thread meanwhile (carrying the
//         newest healing checkpoint) and reports the result, or the error (bad input: not retried; anything
//         else: retried by the coordinator), then leases the next.
//   SIGTERM: a healing task checkpoints after its current step; rank 0 gives the lease back with the
//         checkpoint (the next lease resumes from it) and the group exits with status 3. Other stages are
//         short enough to finish first.
//   A lease the coordinator declares lost or cancelled (heartbeat answer) stops a healing task at its next
//   step; a result for it would be rejected by its fencing token anyway.
//   The coordinator unreachable past the client's retry window: exit status 4 (kExitCoordinatorUnavailable).
//
// Torch-free: the loop sees its group through LeaseGroup (worker_main.cc adapts a WorkerGroup; the tests a
// stand-in), so the loop, its heartbeat thread and the client run under ThreadSanitizer in the torch-free
// build (tests/test_lease_loop.cc).
#pragma once
#include <atomic>
#include <chrono>
#include <exception>
#include <string>

#include <nlohmann/json.hpp>

namespace layerprune {

// What the lease loop needs of a tensor-parallel group. Every rank calls the loop; the collective methods
// (broadcast, stop_requested, run) are called by every rank in the same order.
class LeaseGroup {
 public:
  virtual ~LeaseGroup() = default;
  virtual bool leader() const = 0;  // rank 0: talks to the coordinator
  virtual int tp() const = 0;       // ranks in the group
  virtual std::string label() const = 0;
  virtual void log(const std::string& message) const = 0;
  // The model the group holds ("" none): leases prefer its tasks.
  virtual std::string loaded_model() const = 0;
  // Rank 0's `s` on every rank.
  virtual void broadcast(std::string& s) = 0;
  // Whether a stop (SIGTERM, Slurm's warning) was asked of any rank.
  virtual bool stop_requested() = 0;
  // Runs a task on every rank and returns its result (the same on every rank). Throws InputError for bad
  // input (the task fails without retries); a result {"stopped": true, "checkpoint": ...} means it stopped
  // at a checkpoint (abandon set, or a stop request). checkpoint_key names its checkpoint directory.
  virtual nlohmann::json run(const std::string& kind, const nlohmann::json& payload, const nlohmann::json& inputs,
                             const std::string& checkpoint_key, const std::atomic<bool>* abandon) = 0;
  // An error after which the group cannot go on (its communicator broke): the loop rethrows it.
  virtual bool broken(const std::exception&) const { return false; }
  // The newest checkpoint of a task ("" none): heartbeats carry it, so a re-lease resumes from it.
  virtual std::string latest_checkpoint(const std::string& checkpoint_key) const = 0;
};

struct LeaseLoopOptions {
  std::string coordinator;  // host:port or address file ("": $LAYERPRUNE_COORDINATOR)
  std::string token_file, tls_ca;
  bool exit_when_drained = true;  // exit 0 once the coordinator has nothing left to do
  // How long calls keep retrying an unreachable coordinator before the group exits 4.
  std::chrono::milliseconds retry_for{30'000};
  double idle_exit_seconds = 0;   // > 0: also exit after this long without a task
};

// Returns the process exit status.
int run_lease_loop(LeaseGroup& group, const LeaseLoopOptions& options);

}  // namespace layerprune
