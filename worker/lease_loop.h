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
#pragma once
#include <chrono>
#include <string>

#include "worker/worker_group.h"

namespace layerprune {

struct LeaseLoopOptions {
  std::string coordinator;  // host:port or address file ("": $LAYERPRUNE_COORDINATOR)
  std::string token_file, tls_ca;
  bool exit_when_drained = true;  // exit 0 once the coordinator has nothing left to do
  // How long calls keep retrying an unreachable coordinator before the group exits 4.
  std::chrono::milliseconds retry_for{30'000};
  double idle_exit_seconds = 0;   // > 0: also exit after this long without a task
};

// Returns the process exit status.
int run_lease_loop(WorkerGroup& group, const LeaseLoopOptions& options);

}  // namespace layerprune
