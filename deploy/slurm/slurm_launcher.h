// The Slurm side of the launcher interface (launcher/launcher.h): a job is a rendered batch script
// (render_slurm_jobs, slurm_jobs.h), submitted with sbatch; its state comes from squeue alone (no sacct: many
// sites run no accounting database), and scancel stops it. The programs are found on PATH, as on a login node.
//
//   submit  sbatch --parsable <job.script>                                   -> "1234" (an array: all its tasks)
//   status  squeue --noheader --states=all --Format=ArrayJobID:|,JobArrayID:|,State:|,exit_code: --jobs=<id>
//   cancel  scancel <id>
//
// An array's status is its tasks' together: running while one runs, else queued while one waits; once all have
// ended, cancelled if one was, else failed if one failed (FAILED, TIMEOUT, NODE_FAIL, OUT_OF_MEMORY, ...),
// else finished. A job squeue no longer lists (ended more than MinJobAge ago, 300 s by default) is kUnknown.
#pragma once
#include <string>
#include <vector>

#include "launcher/launcher.h"

namespace layerprune {

struct CommandResult {
  int status = -1;     // exit status; 127 when the program is not found
  std::string output;  // stdout and stderr together
};
// Runs argv (argv[0] looked up on PATH) and collects its output.
CommandResult run_command(const std::vector<std::string>& argv);

class SlurmLauncher : public Launcher {
 public:
  // Throws InputError on a job without a script; std::runtime_error with sbatch's message when it fails.
  JobId submit(const WorkerGroupJob& job) override;
  // Throws std::runtime_error when squeue is not found; kUnknown when squeue does not know the id.
  JobStatus status(const JobId& id) override;
  // Every array task of an array id. Throws std::runtime_error with scancel's message when it fails.
  void cancel(const JobId& id) override;
};

// The status of job `id` (a plain job, an array, or one array task "1234_5") from the output of status()'s
// squeue command; kUnknown when no line is about it.
JobStatus parse_squeue_status(const std::string& output, const JobId& id);

}  // namespace layerprune
