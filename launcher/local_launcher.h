// The launcher of `layerprune run`: jobs are child processes of this one. A job with `mpi` runs as
//   <mpirun> --oversubscribe -np <tp * groups> [--allow-run-as-root] <command...>
// (as root, as in containers and CI, mpirun needs the flag); one without runs <command...> itself. Each job is
// started in its own process group (the terminal's Ctrl-C reaches only the parent, which passes it on) with
// stdout and stderr appended to its log file.
//
// cancel() sends TERM to the job's first process (mpirun passes it on to every rank); a job still running
// `stop_seconds` later gets KILL, at the next status(): its whole process group and every process descended
// from its first one (mpirun puts each rank in a process group of its own). Once a job's first process has
// ended, whatever is left in its process group is killed too. The destructor kills and reaps the jobs still
// running.
#pragma once
#include <sys/types.h>

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "launcher/launcher.h"

namespace layerprune {

class LocalLauncher : public Launcher {
 public:
  struct Options {
    std::string mpirun = "mpirun";  // the MPI launcher of jobs with `mpi`
  };
  LocalLauncher() : LocalLauncher(Options{}) {}
  explicit LocalLauncher(Options options);
  ~LocalLauncher() override;
  LocalLauncher(const LocalLauncher&) = delete;
  LocalLauncher& operator=(const LocalLauncher&) = delete;

  // The id is the first process's pid, which is also its process group's id. Throws InputError on a job without a
  // command (or a non-MPI one of more than one rank), std::runtime_error when fork fails. A program that cannot
  // be started ends the job at once with status 127 ("cannot run ..." in its log).
  JobId submit(const WorkerGroupJob& job) override;
  // kRunning until the first process exits; then kFinished (status 0), kFailed, or kCancelled after cancel().
  JobStatus status(const JobId& id) override;
  void cancel(const JobId& id) override;

  // The command line submit() runs for `job`.
  std::vector<std::string> command_line(const WorkerGroupJob& job) const;
  // The job's process group (its first process's pid); -1 for an unknown id.
  pid_t process_group(const JobId& id) const;

 private:
  struct Child {
    pid_t pid = -1;
    double stop_seconds = 0;
    bool ended = false, cancelled = false, killed = false, has_exit = false;
    int exit_status = 0;
    std::chrono::steady_clock::time_point kill_at;
  };
  void poll(Child& c);

  Options options_;
  std::map<JobId, Child> jobs_;
};

}  // namespace layerprune
