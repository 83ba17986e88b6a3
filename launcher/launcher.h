// One interface for starting worker groups wherever they run, in the shape of submitit's Executor: submit a
// job, ask its status, cancel it. Two implementations:
//
//   LocalLauncher (launcher/local_launcher.h)   `layerprune run`: mpirun child processes on this machine, each
//                                               job in its own process group, its output in a log file.
//   SlurmLauncher (deploy/slurm/slurm_launcher.h) `layerprune slurm`: the rendered sbatch script submitted with
//                                               `sbatch --parsable`, its state from squeue, scancel.
//
// What a caller does on top (restart a dead job, print progress, wait for the workers before stopping the
// coordinator) is the same code for both. Torch-free and MPI-free: it runs on a login node.
#pragma once
#include <optional>
#include <string>
#include <vector>

namespace layerprune {

// What a job is doing. kUnknown: the launcher does not know the id (never submitted by it, or, on Slurm, ended
// so long ago that squeue has forgotten it).
enum class JobState { kQueued, kRunning, kFinished, kFailed, kCancelled, kUnknown };

// "queued", "running", "finished", "failed", "cancelled", "unknown".
const char* job_state_name(JobState s);
// Queued or running: it holds (or will hold) resources; cancel it to stop it.
inline bool job_active(JobState s) { return s == JobState::kQueued || s == JobState::kRunning; }

struct JobStatus {
  JobState state = JobState::kUnknown;
  // Where known, once it has ended: the exit status (128 + N when killed by signal N). A Slurm array: the first
  // non-zero one among its tasks, else 0.
  std::optional<int> exit_status;
};

// A launcher's id of a submitted job: a pid locally ("12345"), a Slurm job id ("1234", a whole array).
using JobId = std::string;

// One job of `groups` tensor-parallel groups of `tp` ranks each.
struct WorkerGroupJob {
  std::string experiment;            // the experiment's name
  std::string name;                  // what it is, for messages: "workers-tp2", "coordinator"
  int tp = 1;                        // ranks per group
  int groups = 1;                    // groups (locally: one mpirun of tp * groups ranks; Slurm: array tasks)
  std::vector<std::string> command;  // one rank's program and its arguments
  std::string log;                   // where its output goes (locally appended to; Slurm: the script's --output)
  // Locally: false runs `command` itself as one process, without an MPI launcher (the coordinator; tp * groups
  // must then be 1).
  bool mpi = true;
  // Locally: how long it has after cancel() (TERM) to stop, healing checkpoints and leases given back, before
  // its process group is killed. (Slurm: the site's KillWait.)
  double stop_seconds = 120;
  // Slurm: the rendered batch script that is this job (render_slurm_jobs, deploy/slurm/slurm_jobs.h); the
  // fields above describe it. Not used locally.
  std::string script;
};

class Launcher {
 public:
  virtual ~Launcher() = default;
  // Starts (or queues) the job; throws with the launcher's message when it cannot.
  virtual JobId submit(const WorkerGroupJob& job) = 0;
  // Where the job is now; never blocks for long.
  virtual JobStatus status(const JobId& id) = 0;
  // Asks the job to stop: TERM to its ranks (healing checkpoints, leases go back). Returns at once; status()
  // says when it has ended, as kCancelled. A job that has already ended is left as it is.
  virtual void cancel(const JobId& id) = 0;
};

// Polls `launcher.status` every `poll_seconds` until none of `ids` is active or `seconds` have passed; returns the
// ids still active.
std::vector<JobId> wait_for_end(Launcher& launcher, const std::vector<JobId>& ids, double seconds,
                                double poll_seconds = 0.1);

}  // namespace layerprune
