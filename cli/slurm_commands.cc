// layerprune slurm render|submit|cancel: an experiment on a Slurm cluster (deploy/slurm/README.md).
//
//   layerprune slurm render EXPERIMENT.yaml [--state DIR] [--out DIR]   the sbatch scripts, nothing submitted
//   layerprune slurm submit EXPERIMENT.yaml [--state DIR]               token, scripts, coordinator, worker arrays
//   layerprune slurm cancel EXPERIMENT.yaml [--state DIR]               scancel what submit submitted
//
// The YAML's slurm: section (experiments/README.md) sets partition, account, QoS, time, TP groups, GPUs,
// CPUs and memory; the flags below override it. --state must be on a filesystem every node sees. The jobs are
// submitted, watched and cancelled through the launcher interface (launcher/launcher.h; SlurmLauncher in
// deploy/slurm/slurm_launcher.h), the one `layerprune run` uses with LocalLauncher.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <thread>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/experiment_prep.h"
#include "common/args.h"
#include "common/error.h"
#include "common/text_file.h"
#include "proto/client.h"
#include "experiment/experiment.h"
#include "deploy/slurm/slurm_jobs.h"
#include "deploy/slurm/slurm_launcher.h"
#include "launcher/launcher.h"

namespace layerprune::cli {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Flags that override the YAML's slurm: section, named like its keys.
const char* const kOverrides[][2] = {
    {"partition", "partition (#SBATCH --partition)"},
    {"account", "account to charge"},
    {"qos", "quality of service"},
    {"constraint", "node features for the workers, e.g. 'a100|h100'"},
    {"time", "time limit per worker job attempt ([D-]HH:MM:SS)"},
    {"coordinator-time", "the coordinator job's time limit (default: --time)"},
    {"coordinator-on", "where the coordinator runs: job (a one-CPU Slurm job) or login (this host)"},
    {"groups", "worker array tasks (tensor-parallel groups) per TP size"},
    {"max-running", "array throttle: at most this many groups at once (%N; 0: no limit)"},
    {"gpus-per-rank", "GPUs per worker rank (--gpus-per-task)"},
    {"cpus-per-rank", "CPUs per worker rank (--cpus-per-task; the worker's threads)"},
    {"mem", "memory per worker node (--mem, e.g. 500G)"},
    {"warning-seconds", "USR1 this long before the time limit: checkpoint, lease back, requeue (0: off)"},
    {"mpi", "srun --mpi plugin"},
    {"lease-seconds", "the coordinator's lease length (a dead worker's task is re-leased after it)"},
};

void add_common(ArgParser& p) {
  p.positional("EXPERIMENT", "the experiment YAML (experiments/*.yaml)")
      .option("state", "shared directory for database, address, token, models, checkpoints, logs (default runs/<name>)", "");
  for (const auto& o : kOverrides) p.option(o[0], o[1], "");
}

int64_t integer_flag(const ArgParser& p, const std::string& name, int64_t min) {
  const int64_t v = p.get_int(name);
  if (v < min) throw UsageError("--" + name + " must be >= " + std::to_string(min));
  return v;
}

// The experiment with the flags applied, and the absolute state directory.
Experiment load(const ArgParser& p, std::string* state) {
  Experiment e = parse_experiment_file(p.get("EXPERIMENT"));
  SlurmSpec& s = e.slurm;
  auto text = [&](const char* flag, std::string& field) {
    if (!p.get(flag).empty()) field = p.get(flag);
  };
  text("partition", s.partition);
  text("account", s.account);
  text("qos", s.qos);
  text("constraint", s.constraint);
  text("time", s.time);
  text("coordinator-time", s.coordinator_time);
  text("coordinator-on", s.coordinator);
  text("mem", s.mem);
  text("mpi", s.mpi);
  if (s.coordinator != "job" && s.coordinator != "login") throw UsageError("--coordinator-on must be job or login");
  if (!p.get("groups").empty()) s.groups = integer_flag(p, "groups", 1);
  if (!p.get("max-running").empty()) s.max_running = integer_flag(p, "max-running", 0);
  if (!p.get("gpus-per-rank").empty()) s.gpus_per_rank = integer_flag(p, "gpus-per-rank", 0);
  if (!p.get("cpus-per-rank").empty()) s.cpus_per_rank = integer_flag(p, "cpus-per-rank", 1);
  if (!p.get("warning-seconds").empty()) s.warning_seconds = integer_flag(p, "warning-seconds", 0);
  if (!p.get("lease-seconds").empty()) s.lease_seconds = integer_flag(p, "lease-seconds", 1);
  *state = fs::absolute(p.get("state").empty() ? "runs/" + e.name : p.get("state")).lexically_normal().string();
  return e;
}

// The programs beside this one (a build tree: build/cli/layerprune, build/coordinator/..., build/worker/...;
// installed: one bin/ directory).
std::string program(const std::string& name, const std::string& build_subdir) {
  const fs::path self = fs::read_symlink("/proc/self/exe");
  for (const fs::path& c : {self.parent_path() / name, self.parent_path().parent_path() / build_subdir / name})
    if (fs::exists(c)) return c.string();
  throw InputError("cannot find " + name + " beside " + self.string() + " (build it: ninja -C build " + name + ")");
}

SlurmPaths paths_for(const ArgParser& p, const std::string& state, const std::string& bin_dir) {
  SlurmPaths s;
  s.experiment = fs::absolute(p.get("EXPERIMENT")).lexically_normal().string();
  s.state = state;
  if (!bin_dir.empty()) {
    const std::string b = fs::absolute(bin_dir).lexically_normal().string();
    s.layerprune = b + "/layerprune";
    s.coordinator = b + "/layerprune-coordinator";
    s.worker = b + "/layerprune-worker";
  } else {
    s.layerprune = fs::read_symlink("/proc/self/exe").string();
    s.coordinator = program("layerprune-coordinator", "coordinator");
    s.worker = program("layerprune-worker", "worker");
  }
  return s;
}

// 32 random bytes as hex, in a file only its owner can read.
void ensure_token(const std::string& file) {
  if (fs::exists(file)) return;
  unsigned char bytes[32];
  const int in = open("/dev/urandom", O_RDONLY);
  if (in < 0 || read(in, bytes, sizeof bytes) != ssize_t(sizeof bytes)) throw std::runtime_error("cannot read /dev/urandom");
  close(in);
  std::string hex;
  char b[3];
  for (unsigned char c : bytes) {
    std::snprintf(b, sizeof b, "%02x", c);
    hex += b;
  }
  const int fd = open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (fd < 0) throw std::runtime_error("cannot create " + file + ": " + std::strerror(errno));
  hex += "\n";
  const bool ok = write(fd, hex.data(), hex.size()) == ssize_t(hex.size());
  close(fd);
  if (!ok) throw std::runtime_error("cannot write " + file);
}

// The coordinator on this host, detached (its own session, output in a log), for `coordinator: login`.
pid_t start_login_coordinator(const SlurmPaths& paths, const SlurmSpec& s) {
  const std::string log = paths.state + "/logs/coordinator-login.log";
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    setsid();
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    const std::string db = paths.state + "/layerprune.db", token = paths.state + "/coordinator.token",
                      addr = paths.state + "/coordinator.starting", lease = std::to_string(s.lease_seconds);
    execl(paths.coordinator.c_str(), paths.coordinator.c_str(), "--db", db.c_str(), "--listen", "0.0.0.0:0",
          "--token-file", token.c_str(), "--address-file", addr.c_str(), "--lease-seconds", lease.c_str(),
          (char*)nullptr);
    _exit(127);
  }
  return pid;
}

int slurm_render(int argc, char** argv) {
  ArgParser p("slurm render", "Write the sbatch scripts of an experiment (nothing is submitted): the coordinator's\n"
                              "and one worker array per tensor-parallel size. Stable output: the golden files in\n"
                              "tests/golden/slurm/ are made with this command (tests/golden/README.md).");
  add_common(p);
  p.option("out", "directory for the scripts (default <state>/slurm; '-' prints them)", "")
      .option("bin-dir", "where the programs are on the compute nodes (default: beside this program)", "")
      .option("experiment-path", "the YAML's path as the compute nodes see it (default: its absolute path here)", "");
  if (!p.parse(argc, argv)) return 0;
  std::string state;
  const Experiment e = load(p, &state);
  SlurmPaths paths = paths_for(p, state, p.get("bin-dir"));
  if (!p.get("experiment-path").empty()) paths.experiment = p.get("experiment-path");
  const std::string out = p.get("out").empty() ? state + "/slurm" : p.get("out");
  for (const SlurmScript& s : render_slurm_jobs(e, paths)) {
    if (out == "-") {
      std::printf("==> %s <==\n%s\n", s.name.c_str(), s.text.c_str());
      continue;
    }
    fs::create_directories(out);
    write_file(out + "/" + s.name, s.text);
    std::printf("%s/%s\n", out.c_str(), s.name.c_str());
  }
  return 0;
}

int slurm_submit(int argc, char** argv) {
  ArgParser p("slurm submit",
              "Launch an experiment on Slurm: converts llama2.c models into <state>/models, checks the grid,\n"
              "writes the token (<state>/coordinator.token, mode 0600) and the scripts (<state>/slurm/), submits\n"
              "the coordinator job (or starts the coordinator here with --coordinator-on login) and one worker\n"
              "array per TP size. Job ids go to <state>/slurm/jobs.json (`layerprune slurm cancel` reads it).\n"
              "Watch it: layerprune status 1 --tasks --coordinator <state>/coordinator.address --token-file\n"
              "<state>/coordinator.token (each task's worker shows its Slurm job, e.g. 'slurm 1234_0').");
  add_common(p);
  p.flag("json", "print one JSON document (the job ids)");
  if (!p.parse(argc, argv)) return 0;
  std::string state;
  Experiment e = load(p, &state);
  const SlurmPaths paths = paths_for(p, state, "");
  SlurmLauncher slurm;
  if (const auto old = read_submitted_jobs(state)) {
    std::vector<JobId> active;
    for (const JobId& id : old->job_ids())
      if (job_active(slurm.status(id).state)) active.push_back(id);
    if (!active.empty())
      throw InputError("experiment " + e.name + " is already submitted from " + state + ": jobs " + active.front() +
                       (active.size() > 1 ? " and others" : "") + " are queued or running (layerprune slurm cancel first)");
  }
  // Everything that can be wrong with the experiment is found here, before anything is queued.
  fs::create_directories(state + "/logs");
  fs::create_directories(state + "/slurm");
  Experiment prepared = e;
  prepare_models(prepared, state + "/models");
  const ExperimentPlan plan = plan_experiment(prepared);
  ensure_token(state + "/coordinator.token");
  const std::vector<SlurmScript> scripts = render_slurm_jobs(e, paths);
  for (const SlurmScript& s : scripts) write_file(state + "/slurm/" + s.name, s.text);

  SubmittedJobs jobs;
  jobs.experiment = e.name;
  int64_t experiment_id = 0;  // known here only when the coordinator runs here
  if (e.slurm.coordinator == "job") {
    fs::remove(state + "/coordinator.address");  // a previous run's: the new job publishes its own
    jobs.coordinator_job = slurm.submit(slurm_job(e, paths, scripts.front()));  // coordinator.sbatch
  } else {
    // Here: started detached, the experiment submitted, then the address published for the workers.
    fs::remove(state + "/coordinator.address");
    fs::remove(state + "/coordinator.starting");
    const pid_t pid = start_login_coordinator(paths, e.slurm);
    for (int i = 0; i < 300 && !fs::exists(state + "/coordinator.starting"); ++i) {
      if (waitpid(pid, nullptr, WNOHANG) == pid)
        throw std::runtime_error("the coordinator exited; see " + state + "/logs/coordinator-login.log");
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    CoordinatorClient client(find_coordinator(state + "/coordinator.starting", state + "/coordinator.token"));
    experiment_id = client.submit(plan).experiment_id;
    fs::rename(state + "/coordinator.starting", state + "/coordinator.address");
    jobs.coordinator_pid = pid;
  }
  write_submitted_jobs(state, jobs);  // before the workers: cancel finds the coordinator already
  for (const SlurmScript& s : scripts) {
    if (s.tp == 0) continue;
    jobs.workers[std::to_string(s.tp)] = slurm.submit(slurm_job(e, paths, s));  // workers-tp<N>.sbatch
    write_submitted_jobs(state, jobs);
  }
  if (p.flag_set("json")) {
    json j = json::parse(read_file(submitted_jobs_file(state)));
    if (experiment_id) j["experiment_id"] = experiment_id;
    std::cout << j.dump() << std::endl;
    return 0;
  }
  std::printf("experiment %s: %zu grid points, %zu tasks\n", e.name.c_str(), plan.points.size(), plan.tasks.size());
  if (!jobs.coordinator_job.empty())
    std::printf("  coordinator: job %s (log %s/logs/coordinator-%s.log)\n", jobs.coordinator_job.c_str(), state.c_str(),
                jobs.coordinator_job.c_str());
  else
    std::printf("  coordinator: pid %d on this host (log %s/logs/coordinator-login.log)\n", int(jobs.coordinator_pid),
                state.c_str());
  for (const auto& [tp, id] : jobs.workers)
    std::printf("  workers tp %s: array job %s, %lld group(s) (logs %s/logs/workers-tp%s-%s_*.log)\n", tp.c_str(),
                id.c_str(), (long long)e.slurm.groups, state.c_str(), tp.c_str(), id.c_str());
  std::printf("watch: layerprune status 1 --tasks --state %s\n"
              "stop:  layerprune slurm cancel %s --state %s   (resumable: submit again)\n"
              "       layerprune cancel 1 --state %s   (the experiment's tasks and these jobs, for good)\n",
              state.c_str(), p.get("EXPERIMENT").c_str(), state.c_str(), state.c_str());
  return 0;
}

int slurm_cancel(int argc, char** argv) {
  ArgParser p("slurm cancel",
              "Cancel the jobs `layerprune slurm submit` submitted for an experiment: the worker arrays first (their\n"
              "ranks get TERM: healing checkpoints and leases go back), then the coordinator. The database keeps\n"
              "every finished point: `layerprune slurm submit` again resumes the experiment.");
  add_common(p);
  p.option("wait-seconds", "how long to wait for the workers to leave before stopping the coordinator", "120");
  if (!p.parse(argc, argv)) return 0;
  std::string state;
  const Experiment e = load(p, &state);
  const auto jobs = read_submitted_jobs(state);
  if (!jobs) throw InputError("nothing submitted from " + state + " (no " + submitted_jobs_file(state) + ")");
  SlurmLauncher slurm;
  for (const std::string& line : cancel_submitted_jobs(slurm, state, *jobs, p.get_double("wait-seconds")))
    std::printf("%s\n", line.c_str());
  (void)e;
  return 0;
}

}  // namespace

int slurm(int argc, char** argv) {
  const char* usage =
      "usage: layerprune slurm render|submit|cancel EXPERIMENT.yaml [options]   (--help after each for its options)\n"
      "  render   write the sbatch scripts (coordinator job, one worker array per TP size); nothing submitted\n"
      "  submit   token, scripts, coordinator (a job, or this host), worker arrays; job ids in <state>/slurm/jobs.json\n"
      "  cancel   scancel the jobs submit submitted (workers checkpoint and give their leases back)\n"
      "deploy/slurm/README.md: the jobs, the signals, preemption and requeueing, a one-machine cluster.\n";
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    std::printf("%s", usage);
    return argc < 2 ? 2 : 0;
  }
  const std::string sub = argv[1];
  if (sub == "render") return slurm_render(argc - 1, argv + 1);
  if (sub == "submit") return slurm_submit(argc - 1, argv + 1);
  if (sub == "cancel") return slurm_cancel(argc - 1, argv + 1);
  std::fprintf(stderr, "%s", usage);
  throw UsageError("unknown slurm command '" + sub + "'");
}

}  // namespace layerprune::cli
