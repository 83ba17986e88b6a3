#include "deploy/slurm/slurm_jobs.h"

#include <signal.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/text_file.h"

namespace layerprune {

namespace {

std::string sbatch_line(const std::string& option, const std::string& value) {
  return "#SBATCH --" + option + "=" + value + "\n";
}

// The site-specific lines both jobs share: partition, account, QoS, and the YAML's extra options.
std::string site_lines(const SlurmSpec& s) {
  std::string out;
  if (!s.partition.empty()) out += sbatch_line("partition", s.partition);
  if (!s.account.empty()) out += sbatch_line("account", s.account);
  if (!s.qos.empty()) out += sbatch_line("qos", s.qos);
  for (const std::string& a : s.sbatch_args) out += "#SBATCH " + a + "\n";
  return out;
}

std::string setup_lines(const SlurmSpec& s) {
  if (s.setup.empty()) return "";
  std::string text = s.setup;
  if (text.back() != '\n') text += '\n';
  return "# The experiment's slurm.setup (environment for the programs):\n" + text;
}

std::string header(const Experiment& e, const SlurmPaths& p, const std::string& what) {
  return "#!/bin/bash\n"
         "# layerprune: " + what + " of experiment '" + e.name + "'.\n"
         "# Rendered by `layerprune slurm render|submit` from " + p.experiment + "\n"
         "# (edit the YAML's slurm: section or the command's flags, not this file; deploy/slurm/README.md).\n";
}

// The lines both jobs end their header with: the time-limit warning (what the shell does on it), requeueable,
// the log appended to across attempts, then the start of the script.
std::string requeue_lines(const SlurmSpec& s, const std::string& on_warning, const std::string& output) {
  std::string t;
  if (s.warning_seconds > 0)
    t += "# USR1 to this shell " + std::to_string(s.warning_seconds) + " s before the time limit: " + on_warning +
         ".\n" + sbatch_line("signal", "B:USR1@" + std::to_string(s.warning_seconds));
  t += "#SBATCH --requeue\n";
  t += "#SBATCH --open-mode=append\n";
  t += sbatch_line("output", output);
  return t + "\nset -u\n";
}

std::string coordinator_script(const Experiment& e, const SlurmPaths& p) {
  const SlurmSpec& s = e.slurm;
  const std::string time = s.coordinator_time.empty() ? s.time : s.coordinator_time;
  std::string t = header(e, p, "the coordinator");
  t += "# One CPU: it serves the state directory's SQLite database to the worker arrays, submits the experiment\n"
       "# to itself (idempotent: a requeued attempt finds it in the database), publishes its address for the\n"
       "# workers, and stops once every task is done or failed.\n";
  t += sbatch_line("job-name", "lp-" + e.name + "-coordinator");
  t += sbatch_line("nodes", "1");
  t += sbatch_line("ntasks", "1");
  t += sbatch_line("cpus-per-task", "1");
  t += sbatch_line("mem", "4G");
  t += sbatch_line("time", time);
  t += site_lines(s);
  t += requeue_lines(s, "stop, withdraw the address, requeue", p.state + "/logs/coordinator-%j.log");
  t += setup_lines(s);
  t += "STATE=" + shell_quote(p.state) + "\n";
  t += "echo \"coordinator job $SLURM_JOB_ID, attempt $((${SLURM_RESTART_COUNT:-0} + 1)), on $(hostname) at $(date -Is)\"\n\n";
  t += "# A requeued attempt may run on another node: the previous address is stale until this one is up.\n"
       "rm -f \"$STATE/coordinator.address\" \"$STATE/coordinator.starting\"\n"
       "# Reachable from the compute nodes, so the shared token is required (the coordinator refuses to bind off\n"
       "# loopback without one); `layerprune slurm submit` wrote it with mode 0600.\n";
  t += shell_quote(p.coordinator) + " --db \"$STATE/layerprune.db\" --listen 0.0.0.0:0 \\\n"
       "    --token-file \"$STATE/coordinator.token\" --address-file \"$STATE/coordinator.starting\" \\\n"
       "    --lease-seconds " + std::to_string(s.lease_seconds) + " &\n";
  t += "coordinator=$!\n"
       "follow=\"\"\n"
       "stopping=0\n"
       "requeue=0\n"
       "# scancel, the end of a preemption's grace time (Slurm then requeues this job), the time-limit warning\n"
       "# (USR1: this job requeues itself): stop it cleanly (the database keeps everything for the next start), and\n"
       "# withdraw the address at once, so that workers wait for the next attempt's instead of trying this one's.\n"
       "stop_coordinator() { stopping=1; rm -f \"$STATE/coordinator.address\"; kill -TERM $coordinator; [ -n \"$follow\" ] && kill $follow 2>/dev/null; }\n"
       "trap stop_coordinator TERM INT\n"
       "trap 'echo \"USR1: time limit near: stopping, to requeue\"; requeue=1; stop_coordinator' USR1\n"
       "while [ ! -s \"$STATE/coordinator.starting\" ]; do\n"
       "  kill -0 $coordinator 2>/dev/null || { echo \"the coordinator did not start\"; exit 1; }\n"
       "  sleep 0.2\n"
       "done\n\n";
  t += "# The experiment goes in before the workers can see the coordinator: a worker that finds nothing to do\n"
       "# exits.\n"
       "export LAYERPRUNE_COORDINATOR_TOKEN_FILE=\"$STATE/coordinator.token\"\n";
  t += "submitted=$(" + shell_quote(p.layerprune) + " submit " + shell_quote(p.experiment) +
       " --models \"$STATE/models\" \\\n"
       "    --coordinator \"$STATE/coordinator.starting\" --json) || { kill -TERM $coordinator; wait $coordinator; exit 2; }\n";
  t += "echo \"$submitted\"\n"
       "id=$(echo \"$submitted\" | sed -n 's/.*\"experiment_id\":\\([0-9]*\\).*/\\1/p')\n"
       "mv \"$STATE/coordinator.starting\" \"$STATE/coordinator.address\"  # the workers wait for this file\n\n";
  t += "# Until the experiment is finished; then 15 s for the workers to hear that nothing is left\n"
       "# (their next lease answers \"drained\" within 2 s) and exit.\n";
  t += shell_quote(p.layerprune) +
       " status \"$id\" --follow --coordinator \"$STATE/coordinator.address\" --retry-seconds 600 &\n"
       "follow=$!\n"
       "wait $follow\n"
       "if [ \"$stopping\" -eq 0 ] && kill -0 $coordinator 2>/dev/null; then\n"
       "  sleep 15\n"
       "  kill -TERM $coordinator\n"
       "fi\n"
       "wait $coordinator\n"
       "status=$?\n"
       "rm -f \"$STATE/coordinator.address\"\n"
       "echo \"coordinator exited with status $status at $(date -Is)\"\n"
       "if [ \"$requeue\" -eq 1 ]; then\n"
       "  echo \"requeueing $SLURM_JOB_ID: the next attempt goes on from the database; the workers wait for it\"\n"
       "  scontrol requeue \"$SLURM_JOB_ID\"\n"
       "fi\n"
       "exit $status\n";
  return t;
}

std::string workers_script(const Experiment& e, const SlurmPaths& p, int tp) {
  const SlurmSpec& s = e.slurm;
  std::string models;
  for (const ModelSpec& m : e.models)
    if (m.tp == tp) models += (models.empty() ? "" : ", ") + m.name;
  const std::string tps = std::to_string(tp);
  std::string t = header(e, p, "worker groups of tensor-parallel size " + tps);
  t += "# A job array: each array task is one group of " + tps + " ranks (srun --mpi=" + s.mpi +
       ") that leases the tasks of the\n"
       "# models with tp " + tps + " (" + models + ") from the coordinator until none is left.\n";
  t += sbatch_line("job-name", "lp-" + e.name + "-tp" + tps);
  t += sbatch_line("array", "0-" + std::to_string(s.groups - 1) +
                                (s.max_running > 0 ? "%" + std::to_string(s.max_running) : ""));
  t += sbatch_line("nodes", "1");
  t += sbatch_line("ntasks", tps);
  t += sbatch_line("cpus-per-task", std::to_string(s.cpus_per_rank));
  if (s.gpus_per_rank > 0) t += sbatch_line("gpus-per-task", std::to_string(s.gpus_per_rank));
  if (!s.mem.empty()) t += sbatch_line("mem", s.mem);
  t += sbatch_line("time", s.time);
  if (!s.constraint.empty()) t += sbatch_line("constraint", s.constraint);
  t += site_lines(s);
  t += requeue_lines(s, "checkpoint, give the lease back, requeue", p.state + "/logs/workers-tp" + tps + "-%A_%a.log");
  t += setup_lines(s);
  t += "STATE=" + shell_quote(p.state) + "\n";
  t += "# Where the coordinator is and its token (proto/client.h find_coordinator reads both).\n"
       "export LAYERPRUNE_COORDINATOR=\"$STATE/coordinator.address\"\n"
       "export LAYERPRUNE_COORDINATOR_TOKEN_FILE=\"$STATE/coordinator.token\"\n";
  t += "echo \"workers ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID} (job $SLURM_JOB_ID), attempt $((${SLURM_RESTART_COUNT:-0} + 1)), \"\\\n"
       "     \"on $(hostname) at $(date -Is)\"\n\n";
  t += "# The coordinator publishes its address once the experiment is in (and again after each restart).\n"
       "until [ -s \"$LAYERPRUNE_COORDINATOR\" ]; do sleep 2; done\n\n";
  t += "# Signals. The time-limit warning (USR1, to this shell only) goes on to every rank: a healing task\n"
       "# checkpoints after its current step, the lease goes back with the checkpoint, the ranks exit 3, and this\n"
       "# array task requeues itself. scancel and preemption send TERM to the ranks themselves (same checkpoint\n"
       "# and lease hand-back): a cancelled job stays cancelled, a preempted one requeues itself (below). A rank\n"
       "# that dies without warning ends its group (--kill-on-bad-exit); its lease expires and the coordinator\n"
       "# re-queues the task from its last checkpoint.\n"
       "requeue=0\n"
       "# (By array task: the first array task's SLURM_JOB_ID is also the whole array's id.)\n"
       "trap 'echo \"USR1: time limit near: checkpointing\"; requeue=1\n"
       "      scancel --signal=USR1 \"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}\"' USR1\n"
       "trap 'echo \"TERM: stopping (checkpoint, lease given back)\"' TERM\n";
  t += "published() { stat -c '%i %y' \"$LAYERPRUNE_COORDINATOR\" 2>/dev/null; }  # which address file\n"
       "while true; do\n"
       "  address=$(published)\n";
  t += "  srun --mpi=" + s.mpi + " --kill-on-bad-exit=1 " + shell_quote(p.worker) + " --tp " + tps +
       " --work-dir \"$STATE\" \\\n"
       "      --threads \"${SLURM_CPUS_PER_TASK:-1}\" &\n";
  t += "  ranks=$!\n"
       "  while true; do  # a trapped signal interrupts wait; wait again until srun is gone\n"
       "    wait $ranks\n"
       "    status=$?\n"
       "    kill -0 $ranks 2>/dev/null || break\n"
       "  done\n"
       "  echo \"workers exited with status $status at $(date -Is)\"\n"
       "  # Exit 4: the coordinator stopped answering (requeued after a preemption or a node failure). Its next\n"
       "  # attempt publishes a new address file: wait for it, up to 30 minutes, then lease again.\n"
       "  [ \"$status\" -eq 4 ] || break\n"
       "  echo \"the coordinator is unreachable: waiting up to 30 minutes for it to come back\"\n"
       "  for _ in $(seq 900); do\n"
       "    [ -s \"$LAYERPRUNE_COORDINATOR\" ] && [ \"$(published)\" != \"$address\" ] && break\n"
       "    [ \"$requeue\" -eq 1 ] && break\n"
       "    sleep 2\n"
       "  done\n"
       "  [ -s \"$LAYERPRUNE_COORDINATOR\" ] && [ \"$(published)\" != \"$address\" ] && [ \"$requeue\" -eq 0 ] || break\n"
       "  echo \"the coordinator is back at $(cat \"$LAYERPRUNE_COORDINATOR\")\"\n"
       "done\n";
  t += "# Preemption (PreemptMode=REQUEUE) sends TERM and waits GraceTime, but requeues only a job still running\n"
       "# when that ends: one whose ranks checkpointed and exited first ends FAILED (measured, Slurm 22.05). So a\n"
       "# preempted array task requeues itself as well; its job record tells preemption (PreemptTime set) from\n"
       "# scancel (PreemptTime=None).\n"
       "if [ \"$status\" -eq 3 ] && [ \"$requeue\" -eq 0 ] &&\n"
       "   scontrol show job \"$SLURM_JOB_ID\" 2>/dev/null | grep -q 'PreemptTime=[0-9]'; then\n"
       "  echo \"preempted\"\n"
       "  requeue=1\n"
       "fi\n"
       "if [ \"$requeue\" -eq 1 ] && { [ \"$status\" -eq 3 ] || [ \"$status\" -eq 4 ]; }; then\n"
       "  echo \"requeueing ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}: the next attempt resumes from the checkpoint\"\n"
       "  scontrol requeue \"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}\"\n"
       "fi\n"
       "exit $status\n";
  return t;
}

}  // namespace

std::string shell_quote(const std::string& text) {
  if (!text.empty() && text.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                                              "-_./:=+,@%") == std::string::npos)
    return text;
  std::string out = "'";
  for (char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::vector<SlurmScript> render_slurm_jobs(const Experiment& e, const SlurmPaths& p) {
  std::vector<SlurmScript> out;
  if (e.slurm.coordinator == "job") out.push_back({"coordinator.sbatch", coordinator_script(e, p), 0});
  std::set<int> tps;
  for (const ModelSpec& m : e.models) tps.insert(m.tp);
  for (int tp : tps) out.push_back({"workers-tp" + std::to_string(tp) + ".sbatch", workers_script(e, p, tp), tp});
  return out;
}

WorkerGroupJob slurm_job(const Experiment& e, const SlurmPaths& paths, const SlurmScript& script) {
  WorkerGroupJob job;
  job.experiment = e.name;
  job.script = paths.state + "/slurm/" + script.name;
  if (script.tp == 0) {  // one CPU, one process: the coordinator
    job.name = "coordinator";
    job.mpi = false;
    job.command = {paths.coordinator, "--db", paths.state + "/layerprune.db", "--listen", "0.0.0.0:0",
                   "--token-file", paths.state + "/coordinator.token", "--lease-seconds",
                   std::to_string(e.slurm.lease_seconds)};
    job.log = paths.state + "/logs/coordinator-%j.log";
    return job;
  }
  const std::string tp = std::to_string(script.tp);
  job.name = "workers-tp" + tp;
  job.tp = script.tp;
  job.groups = int(e.slurm.groups);
  job.command = {paths.worker, "--tp", tp, "--work-dir", paths.state};
  job.log = paths.state + "/logs/workers-tp" + tp + "-%A_%a.log";
  return job;
}

std::vector<std::string> SubmittedJobs::job_ids() const {
  std::vector<std::string> out;
  if (!coordinator_job.empty()) out.push_back(coordinator_job);
  for (const auto& [tp, id] : workers) out.push_back(id);
  return out;
}

std::string submitted_jobs_file(const std::string& state) { return state + "/slurm/jobs.json"; }

std::optional<SubmittedJobs> read_submitted_jobs(const std::string& state) {
  const std::string file = submitted_jobs_file(state);
  if (!std::filesystem::exists(file)) return std::nullopt;
  try {
    const nlohmann::json j = nlohmann::json::parse(read_file(file));
    SubmittedJobs out;
    out.experiment = j.value("experiment", "");
    out.coordinator_job = j.value("coordinator_job", "");
    out.coordinator_pid = j.value("coordinator_pid", 0);
    for (const auto& [tp, id] : j.at("workers").items()) out.workers[tp] = id.get<std::string>();
    return out;
  } catch (const nlohmann::json::exception& e) {
    throw InputError(file + ": not a jobs file of `layerprune slurm submit` (" + e.what() + ")");
  }
}

void write_submitted_jobs(const std::string& state, const SubmittedJobs& jobs) {
  nlohmann::json j = {{"experiment", jobs.experiment}, {"state", state}, {"workers", jobs.workers}};
  if (!jobs.coordinator_job.empty()) j["coordinator_job"] = jobs.coordinator_job;
  if (jobs.coordinator_pid > 0) j["coordinator_pid"] = jobs.coordinator_pid;
  write_file(submitted_jobs_file(state), j.dump(2) + "\n");
}

std::vector<std::string> cancel_submitted_jobs(Launcher& slurm, const std::string& state, const SubmittedJobs& jobs,
                                               double wait_seconds) {
  std::vector<std::string> said;
  std::vector<JobId> active;
  for (const auto& [tp, id] : jobs.workers)
    if (job_active(slurm.status(id).state)) active.push_back(id);
  for (const JobId& id : active) slurm.cancel(id);
  wait_for_end(slurm, active, wait_seconds, 0.5);
  for (const auto& [tp, id] : jobs.workers)
    said.push_back(std::count(active.begin(), active.end(), id) ? "cancelled worker array " + id + " (tp " + tp + ")"
                                                                 : "worker array " + id + " (tp " + tp + ") had already ended");
  if (!jobs.coordinator_job.empty()) {
    const bool running = job_active(slurm.status(jobs.coordinator_job).state);
    if (running) slurm.cancel(jobs.coordinator_job);
    said.push_back(running ? "cancelled coordinator job " + jobs.coordinator_job
                           : "coordinator job " + jobs.coordinator_job + " had already ended");
  } else if (jobs.coordinator_pid > 0) {
    // Only if that pid is still our coordinator (pids are reused).
    std::string cmdline;
    try {
      cmdline = read_file("/proc/" + std::to_string(jobs.coordinator_pid) + "/cmdline");
    } catch (const std::exception&) {
    }
    const bool ours = cmdline.find("layerprune-coordinator") != std::string::npos && cmdline.find(state) != std::string::npos;
    if (ours) kill(jobs.coordinator_pid, SIGTERM);
    said.push_back(ours ? "stopped the coordinator (pid " + std::to_string(jobs.coordinator_pid) + ")"
                        : "the coordinator (pid " + std::to_string(jobs.coordinator_pid) + ") had already ended");
  }
  return said;
}

}  // namespace layerprune
