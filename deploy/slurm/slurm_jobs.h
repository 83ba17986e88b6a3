// The Slurm launcher: an experiment -> sbatch scripts (pure text, golden-tested), the jobs they are for the
// launcher interface (SlurmLauncher, slurm_launcher.h: sbatch/squeue/scancel), and the jobs file of what was
// submitted. Torch-free: it runs on a login node.
//
// What gets submitted (deploy/slurm/README.md has the whole story):
//   coordinator.sbatch   one CPU: layerprune-coordinator on the shared state directory's database, bound
//                        off loopback with the shared token; submits the experiment to itself, then publishes
//                        its address in <state>/coordinator.address, and stops once the experiment is finished.
//                        (With `coordinator: login` the submitting host runs it instead and this script is
//                        not used.)
//   workers-tp<N>.sbatch a job array, one array task per tensor-parallel group: `srun --mpi=pmix` starts N
//                        ranks of layerprune-worker, which lease tasks of TP size N. The warning signal
//                        (--signal=B:USR1@warning_seconds) makes the batch shell pass USR1 to the ranks: healing
//                        checkpoints, the lease goes back, the ranks exit 3, and the shell requeues the array
//                        task; the next attempt's lease carries the checkpoint. scancel and preemption (TERM)
//                        also checkpoint and give the lease back, without the self-requeue.
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "experiment/experiment.h"
#include "launcher/launcher.h"

namespace layerprune {

// Where things are, as the compute nodes see them (absolute paths on a shared filesystem).
struct SlurmPaths {
  std::string experiment;     // the experiment YAML
  std::string state;          // database, address and token files, converted models, checkpoints, logs
  std::string layerprune;     // the programs
  std::string coordinator;
  std::string worker;
};

struct SlurmScript {
  std::string name;  // "coordinator.sbatch", "workers-tp8.sbatch"
  std::string text;
  int tp = 0;        // workers scripts: the TP size they serve; 0 for the coordinator
};

// The scripts for an experiment: the coordinator's (only when e.slurm.coordinator == "job"), then one worker
// array per distinct TP size of e.models, in increasing TP. Deterministic: the same inputs give the same bytes.
std::vector<SlurmScript> render_slurm_jobs(const Experiment& e, const SlurmPaths& paths);

// 'text' as one shell word (single quotes; plain words stay as they are, for readable scripts).
std::string shell_quote(const std::string& text);

// ---- submitting: through the launcher interface (slurm_launcher.h) ----

// The job `script` is, for a Launcher: the coordinator's (tp 0 in `script`) or one TP size's worker array, with
// its batch script at <state>/slurm/<script.name> (where `layerprune slurm submit` writes it).
WorkerGroupJob slurm_job(const Experiment& e, const SlurmPaths& paths, const SlurmScript& script);

// ---- what `layerprune slurm submit` submitted: <state>/slurm/jobs.json ----

struct SubmittedJobs {
  std::string experiment;                   // its name
  std::string coordinator_job;              // the coordinator's job id ("" with `coordinator: login`)
  pid_t coordinator_pid = 0;                // `coordinator: login`: the coordinator on the submitting host
  std::map<std::string, std::string> workers;  // TP size -> worker array job id
  std::vector<std::string> job_ids() const;  // the coordinator's, then the arrays'
};
std::string submitted_jobs_file(const std::string& state);
// nullopt when nothing was submitted from `state`; throws InputError on a file that is not what submit writes.
std::optional<SubmittedJobs> read_submitted_jobs(const std::string& state);
void write_submitted_jobs(const std::string& state, const SubmittedJobs& jobs);

// Cancels what was submitted from `state` through `slurm` (a SlurmLauncher): the worker arrays first (their ranks
// get TERM: healing checkpoints, leases go back), waiting up to `wait_seconds` for them to leave the queue, then
// the coordinator job (or the login-node coordinator, by pid, if it is still that program). One line per thing
// done, for the user.
std::vector<std::string> cancel_submitted_jobs(Launcher& slurm, const std::string& state, const SubmittedJobs& jobs,
                                               double wait_seconds);

}  // namespace layerprune
