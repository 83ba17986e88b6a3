#include "deploy/slurm/slurm_launcher.h"

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>

#include "common/error.h"
#include "deploy/slurm/slurm_jobs.h"

namespace layerprune {

namespace {

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
  size_t i = 0;
  while (i < s.size() && s[i] == ' ') ++i;
  return s.substr(i);
}

// squeue's extended state names (squeue(1), JOB STATE CODES).
JobState from_squeue(const std::string& state) {
  static const std::set<std::string> queued = {"PENDING",      "REQUEUED",      "REQUEUE_HOLD", "REQUEUE_FED",
                                               "RESV_DEL_HOLD", "SPECIAL_EXIT", "SUSPENDED"};
  static const std::set<std::string> running = {"RUNNING",   "CONFIGURING", "COMPLETING", "SIGNALING",
                                                "STAGE_OUT", "STOPPED",     "RESIZING"};
  static const std::set<std::string> failed = {"FAILED",        "TIMEOUT",   "NODE_FAIL", "OUT_OF_MEMORY",
                                               "BOOT_FAIL",     "DEADLINE",  "PREEMPTED"};
  if (queued.count(state)) return JobState::kQueued;
  if (running.count(state)) return JobState::kRunning;
  if (failed.count(state)) return JobState::kFailed;
  if (state == "COMPLETED") return JobState::kFinished;
  if (state == "CANCELLED" || state == "REVOKED") return JobState::kCancelled;
  return JobState::kUnknown;
}

// squeue's exit_code is the job's wait status: 256 for exit 1, 15 for a job killed by TERM.
int exit_status_of(long wait_status) {
  if (wait_status & 0x7f) return 128 + int(wait_status & 0x7f);
  return int((wait_status >> 8) & 0xff);
}

}  // namespace

CommandResult run_command(const std::vector<std::string>& argv) {
  std::string cmd;
  for (const std::string& a : argv) cmd += (cmd.empty() ? "" : " ") + shell_quote(a);
  cmd += " 2>&1";
  CommandResult r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
  const int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return r;
}

JobId SlurmLauncher::submit(const WorkerGroupJob& job) {
  if (job.script.empty())
    throw InputError("job " + job.name + ": the Slurm launcher submits a rendered batch script, and it has none");
  const std::string& script_file = job.script;
  const CommandResult r = run_command({"sbatch", "--parsable", script_file});
  if (r.status == 127) throw std::runtime_error("sbatch not found: is this a Slurm login node (or SLURM_CONF set)?");
  if (r.status != 0) throw std::runtime_error("sbatch " + script_file + " failed (status " + std::to_string(r.status) + "): " + trimmed(r.output));
  // --parsable: "jobid" or "jobid;cluster"; sbatch may print warnings on lines before it.
  std::string last;
  std::istringstream lines(r.output);
  for (std::string line; std::getline(lines, line);)
    if (!trimmed(line).empty()) last = trimmed(line);
  const std::string id = last.substr(0, last.find(';'));
  if (id.empty() || id.find_first_not_of("0123456789") != std::string::npos)
    throw std::runtime_error("sbatch " + script_file + ": cannot read a job id from: " + trimmed(r.output));
  return id;
}

JobStatus SlurmLauncher::status(const JobId& id) {
  // --states=all: ended jobs too, for as long as slurmctld keeps them (MinJobAge), with their exit codes.
  const CommandResult r = run_command({"squeue", "--noheader", "--states=all",
                                       "--Format=ArrayJobID:|,JobArrayID:|,State:|,exit_code:", "--jobs=" + id});
  if (r.status == 127) throw std::runtime_error("squeue not found");
  return parse_squeue_status(r.output, id);  // an id squeue does not know: an error message, no line: kUnknown
}

void SlurmLauncher::cancel(const JobId& id) {
  const CommandResult r = run_command({"scancel", id});
  if (r.status != 0) throw std::runtime_error("scancel " + id + " failed: " + trimmed(r.output));
}

JobStatus parse_squeue_status(const std::string& output, const JobId& id) {
  bool any = false, running = false, queued = false, unknown = false, cancelled = false, failed = false;
  std::optional<int> exit_status;
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);) {
    std::vector<std::string> f;
    std::istringstream fields(line);
    for (std::string field; std::getline(fields, field, '|');) f.push_back(trimmed(field));
    if (f.size() < 4 || (f[0] != id && f[1] != id)) continue;  // not a line of ours (an error message, another job)
    any = true;
    const JobState s = from_squeue(f[2]);
    running = running || s == JobState::kRunning;
    queued = queued || s == JobState::kQueued;
    unknown = unknown || s == JobState::kUnknown;
    cancelled = cancelled || s == JobState::kCancelled;
    failed = failed || s == JobState::kFailed;
    if (!f[3].empty() && f[3].size() < 10 && f[3].find_first_not_of("0123456789") == std::string::npos) {
      const int e = exit_status_of(std::stol(f[3]));
      if (!exit_status || (*exit_status == 0 && e != 0)) exit_status = e;
    }
  }
  JobStatus out;
  if (!any) return out;
  out.state = running   ? JobState::kRunning
              : queued  ? JobState::kQueued
              : unknown ? JobState::kUnknown
              : cancelled ? JobState::kCancelled
              : failed  ? JobState::kFailed
                        : JobState::kFinished;
  if (!job_active(out.state) && out.state != JobState::kUnknown) out.exit_status = exit_status;
  return out;
}

}  // namespace layerprune
