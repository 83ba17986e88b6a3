// The experiment commands: run (local all-in-one), submit, status, cancel, results, curves.
//
//   layerprune run experiments/stories260k.yaml
//       starts a coordinator on an SQLite file in the run's state directory, submits the experiment, starts
//       worker groups with mpirun, shows progress, and prints the curves at the end; a job that dies is started
//       again (--max-restarts). Both go through the launcher interface (launcher/launcher.h: LocalLauncher),
//       as `layerprune slurm` does with SlurmLauncher. Ctrl-C stops the workers (healing checkpoints, leases
//       given back) and the coordinator; running the same command again resumes where it stopped (nothing
//       lost, nothing repeated).
//   layerprune submit|status|cancel|results|curves --coordinator HOST:PORT|ADDRESS_FILE ...
//       the same against a running coordinator (a cluster's), or results/curves straight from the
//       database file with --db.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <thread>
#include <utility>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/experiment_prep.h"
#include "common/args.h"
#include "common/error.h"
#include "common/text_file.h"
#include "proto/client.h"
#include "coordinator/curves.h"
#include "experiment/experiment.h"
#include "coordinator/store.h"
#include "deploy/slurm/slurm_jobs.h"
#include "deploy/slurm/slurm_launcher.h"
#include "launcher/launcher.h"
#include "method/distances.h"
#include "launcher/local_launcher.h"

namespace layerprune::cli {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

void add_coordinator_flags(ArgParser& p) {
  p.option("coordinator", "HOST:PORT or the address file a coordinator wrote (default $LAYERPRUNE_COORDINATOR)", "")
      .option("token-file", "the coordinator's shared token (default $LAYERPRUNE_COORDINATOR_TOKEN_FILE)", "")
      .option("state", "a state directory of `run` or `slurm submit`: its address and token files are the defaults", "")
      .option("tls-ca", "CA certificate of a coordinator that serves TLS", "")
      .option("retry-seconds", "how long to keep trying an unreachable coordinator before giving up (exit 4)", "30");
}

std::unique_ptr<CoordinatorClient> connect(const ArgParser& p) {
  ClientOptions o;
  o.retry_for = std::chrono::milliseconds(int64_t(p.get_double("retry-seconds") * 1000));
  std::string address = p.get("coordinator"), token = p.get("token-file");
  const std::string state = p.get("state");
  if (!state.empty()) {
    if (!fs::is_directory(state)) throw InputError("--state " + state + ": no such directory");
    if (address.empty()) address = state + "/coordinator.address";
    if (token.empty() && fs::exists(state + "/coordinator.token")) token = state + "/coordinator.token";
  }
  return std::make_unique<CoordinatorClient>(find_coordinator(address, token, p.get("tls-ca")), o);
}

// "[#######.............]  7/18 points  tasks: 3 done, 1 leased, 7 queued"
std::string progress_line(const ExperimentStatus& s) {
  const int width = 24;
  const int filled = s.points_total ? int(width * s.points_done / s.points_total) : 0;
  std::string bar = "[" + std::string(size_t(filled), '#') + std::string(size_t(width - filled), '.') + "]";
  std::string counts;
  for (const char* state : {"done", "leased", "queued", "blocked", "failed", "cancelled"}) {
    auto it = s.task_counts.find(state);
    if (it == s.task_counts.end() || it->second == 0) continue;
    counts += (counts.empty() ? "" : ", ") + std::to_string(it->second) + " " + state;
  }
  char buf[512];
  std::snprintf(buf, sizeof buf, "%s #%lld %s %lld/%lld points  tasks: %s  (%s)", s.name.c_str(),
                (long long)s.experiment_id, bar.c_str(), (long long)s.points_done, (long long)s.points_total,
                counts.c_str(), s.state.c_str());
  return buf;
}

std::vector<CurveSample> curve_samples(const std::vector<ResultRow>& rows) {
  std::vector<CurveSample> out;
  for (const ResultRow& r : rows) {
    if (r.metric.find('/') != std::string::npos) continue;  // per-subject metrics: in `results`, not the figure
    out.push_back({r.model, r.strategy, r.healing, r.metric, r.n, r.layers, r.value});
  }
  return out;
}

// Results of an experiment, through the coordinator or from the database file.
std::vector<ResultRow> fetch_results(const ArgParser& p, int64_t id) {
  if (!p.get("db").empty()) {
    if (!fs::exists(p.get("db"))) throw InputError(p.get("db") + ": no such database file");
    Store store(p.get("db"));
    return store.results(id);
  }
  return connect(p)->query_results(id);
}

int64_t experiment_id(const ArgParser& p) {
  const int64_t id = p.get_int("ID");
  if (id < 1) throw UsageError("experiment id must be >= 1 (see `layerprune status`)");
  return id;
}

void print_results(const std::vector<ResultRow>& rows, const std::string& format) {
  if (format == "json") {
    json a = json::array();
    for (const ResultRow& r : rows)
      a.push_back({{"point", r.point}, {"model", r.model}, {"n", r.n}, {"layers", r.layers},
                   {"fraction", r.layers ? double(r.n) / double(r.layers) : 0.0}, {"strategy", r.strategy},
                   {"healing", r.healing}, {"seed", r.seed}, {"metric", r.metric}, {"value", r.value}});
    std::cout << a.dump() << std::endl;
    return;
  }
  if (format == "csv") {
    std::printf("point,model,n,layers,fraction,strategy,healing,seed,metric,value\n");
    for (const ResultRow& r : rows)
      std::printf("%s,%s,%lld,%lld,%.6f,%s,%s,%llu,%s,%.10g\n", r.point.c_str(), r.model.c_str(), (long long)r.n,
                  (long long)r.layers, r.layers ? double(r.n) / double(r.layers) : 0.0, r.strategy.c_str(),
                  r.healing.c_str(), (unsigned long long)r.seed, r.metric.c_str(), r.value);
    return;
  }
  if (format != "table") throw UsageError("--format must be table, csv or json");
  std::printf("%-44s %-12s %9s\n", "point", "metric", "value");
  for (const ResultRow& r : rows) std::printf("%-44s %-12s %9.4f\n", r.point.c_str(), r.metric.c_str(), r.value);
}

// ---- run: child processes ----

// The coordinator and worker programs sit beside this one in a build tree (build/cli/layerprune,
// build/coordinator/..., build/worker/...) or in the same bin/ directory when installed.
std::string sibling_program(const std::string& name, const std::string& build_subdir) {
  const fs::path self = fs::read_symlink("/proc/self/exe");
  for (const fs::path& candidate : {self.parent_path() / name, self.parent_path().parent_path() / build_subdir / name})
    if (fs::exists(candidate)) return candidate.string();
  throw InputError("cannot find " + name + " beside " + self.string() + " (build it: ninja -C build " + name + ")");
}

std::string tail_of(const std::string& file, size_t bytes) {
  std::string s;
  try {
    s = read_file(file);
  } catch (const std::exception&) {
    return "";
  }
  return s.size() > bytes ? "..." + s.substr(s.size() - bytes) : s;
}

std::string trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  return s;
}

// A job `run` looks after through the launcher (LocalLauncher: its own process group, its output in a log file):
// started again if it dies before the experiment is finished, at most `max_restarts` times.
struct Supervised {
  Supervised(WorkerGroupJob j, std::string w, int max) : job(std::move(j)), what(std::move(w)), max_restarts(max) {}
  WorkerGroupJob job;
  std::string what;  // "the coordinator", "a worker job"
  int max_restarts;
  JobId id;
  int restarts = 0;

  void start(Launcher& launcher) { id = launcher.submit(job); }
  void restart(Launcher& launcher, int status) {
    if (++restarts > max_restarts)
      throw std::runtime_error(what + " died " + std::to_string(restarts) + " times (last status " +
                               std::to_string(status) + "); see " + job.log + ":\n" + tail_of(job.log, 2000));
    std::fprintf(stderr, "run: %s exited with status %d; starting it again (log %s)\n", what.c_str(), status,
                 job.log.c_str());
    start(launcher);
  }
};

bool ended(JobState s) { return !job_active(s); }
int exit_of(const JobStatus& s) { return s.exit_status.value_or(-1); }

std::atomic<int> g_interrupts{0};
extern "C" void on_interrupt(int) { g_interrupts++; }

}  // namespace

int run(int argc, char** argv) {
  ArgParser p("run", "Run an experiment on this machine: a coordinator on an SQLite file in --state, the worker\n"
                     "groups with mpirun, progress while it runs, and the curves at the end. A coordinator or worker\n"
                     "job that dies is started again, up to --max-restarts times each. Ctrl-C stops it cleanly\n"
                     "(healing checkpoints, leases given back); the same command again resumes it.");
  p.positional("EXPERIMENT", "the experiment YAML (experiments/*.yaml)")
      .option("state", "directory for the database, converted models, checkpoints and logs (default runs/<name>)", "")
      .option("groups", "worker groups per tensor-parallel size (each tp ranks)", "1")
      .option("threads", "CPU threads per worker rank (0: the cores divided among the ranks)", "0")
      .option("lease-seconds", "the coordinator's lease length (a dead worker's task is re-leased after it)", "60")
      .option("max-restarts", "times a coordinator or worker job that dies is started again before run gives up (exit 1)",
              "5")
      .option("svg", "write the curves here (default <state>/curves.svg)", "")
      .option("mpirun", "the MPI launcher", "mpirun");
  if (!p.parse(argc, argv)) return 0;
  const auto t0 = std::chrono::steady_clock::now();
  const int groups = int(p.get_int("groups"));
  if (groups < 1) throw UsageError("--groups must be >= 1");
  const int max_restarts = int(p.get_int("max-restarts"));
  if (max_restarts < 0) throw UsageError("--max-restarts must be >= 0");
  Experiment e = parse_experiment_file(p.get("EXPERIMENT"));
  const std::string state = p.get("state").empty() ? "runs/" + e.name : p.get("state");
  fs::create_directories(state + "/logs");
  // Models in a form the workers load (llama2.c checkpoints converted once), then the grid.
  prepare_models(e, state + "/models");
  const ExperimentPlan plan = plan_experiment(e);
  std::fprintf(stderr, "run: %s: %zu grid points, %zu tasks; state in %s\n", e.name.c_str(), plan.points.size(),
               plan.tasks.size(), state.c_str());

  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  // Every job goes through the launcher interface, as `layerprune slurm` does with Slurm's: here each is a child
  // process group with its output in <state>/logs/; whatever is still running when run() leaves is killed.
  LocalLauncher launcher(LocalLauncher::Options{p.get("mpirun")});

  // The coordinator: one process (no MPI), loopback only, a fresh port written to the address file (kept on a
  // restart). 20 s to stop after TERM.
  const std::string address_file = state + "/coordinator.address";
  fs::remove(address_file);
  WorkerGroupJob cj;
  cj.experiment = e.name;
  cj.name = "coordinator";
  cj.mpi = false;
  cj.command = {sibling_program("layerprune-coordinator", "coordinator"), "--db", state + "/layerprune.db",
                "--listen", "127.0.0.1:0", "--address-file", address_file, "--lease-seconds", p.get("lease-seconds")};
  cj.log = state + "/logs/coordinator.log";
  cj.stop_seconds = 20;
  Supervised coordinator(cj, "the coordinator", max_restarts);
  coordinator.start(launcher);
  for (int i = 0; i < 300 && !fs::exists(address_file); ++i) {
    const JobStatus cs = launcher.status(coordinator.id);
    if (ended(cs.state))
      throw std::runtime_error("the coordinator exited with status " + std::to_string(exit_of(cs)) + ":\n" +
                               tail_of(coordinator.job.log, 2000));
    usleep(100'000);
  }
  if (!fs::exists(address_file)) throw std::runtime_error("the coordinator did not start within 30 s");
  coordinator.job.command[4] = trim(read_file(address_file));  // restarts listen where the workers look

  int exit_status = 0;
  std::vector<Supervised> workers;
  auto ids = [&] {
    std::vector<JobId> out;
    for (const Supervised& w : workers) out.push_back(w.id);
    return out;
  };
  // TERM to every worker job at once (mpirun forwards it: healing checkpoints, leases back; KILL after their
  // stop_seconds), then the coordinator.
  auto stop_all = [&] {
    for (const Supervised& w : workers) launcher.cancel(w.id);
    wait_for_end(launcher, ids(), 125);
    launcher.cancel(coordinator.id);
    wait_for_end(launcher, {coordinator.id}, 25);
  };
  try {
    CoordinatorClient client(find_coordinator(address_file));
    const SubmitOutcome sub = client.submit(plan);
    std::fprintf(stderr, "run: experiment #%lld %s (%lld points, %lld tasks)\n", (long long)sub.experiment_id,
                 sub.existed ? "resumed from the database" : "submitted", (long long)sub.points, (long long)sub.tasks);

    // Worker groups: one job (one mpirun of tp x groups ranks) per tensor-parallel size the models need.
    std::set<int> tps;
    for (const ModelSpec& m : plan.experiment.models) tps.insert(m.tp);
    for (int tp : tps) {
      WorkerGroupJob wj;
      wj.experiment = e.name;
      wj.name = "workers-tp" + std::to_string(tp);
      wj.tp = tp;
      wj.groups = groups;
      wj.command = {sibling_program("layerprune-worker", "worker"), "--tp", std::to_string(tp), "--coordinator",
                    address_file, "--work-dir", state, "--threads", p.get("threads")};
      wj.log = state + "/logs/workers-tp" + std::to_string(tp) + ".log";
      wj.stop_seconds = 120;
      workers.emplace_back(wj, "a worker job", max_restarts);
      workers.back().start(launcher);
      std::fprintf(stderr, "run: %d worker group(s) of tp %d (log %s)\n", groups, tp, wj.log.c_str());
    }

    // Progress until the experiment is finished or Ctrl-C. A job that dies is started again (a killed worker's
    // task is re-leased when its lease expires and resumes from its checkpoint; a killed coordinator restarts
    // from its database), --max-restarts times at most.
    ExperimentStatus s;
    std::string last;
    auto last_print = std::chrono::steady_clock::now();
    while (g_interrupts == 0) {
      const JobStatus cs = launcher.status(coordinator.id);
      if (ended(cs.state)) coordinator.restart(launcher, exit_of(cs));
      // Which worker jobs had ended before the status below: one that ended after it may have found the
      // experiment finished.
      std::vector<std::optional<JobStatus>> dead(workers.size());
      for (size_t i = 0; i < workers.size(); ++i)
        if (const JobStatus ws = launcher.status(workers[i].id); ended(ws.state)) dead[i] = ws;
      try {
        s = client.watch_status(sub.experiment_id, /*follow=*/false, {}, /*include_tasks=*/true);
      } catch (const CoordinatorUnavailable&) {
        continue;  // restarting: the next round restarts it or finds it back
      }
      // A line when points finish or tasks fail, else every 15 s (leases come and go too often to print).
      const std::string key = std::to_string(s.points_done) + " " + s.state + " " +
                              std::to_string(s.task_counts.count("failed") ? s.task_counts.at("failed") : 0);
      if (key != last || std::chrono::steady_clock::now() - last_print > std::chrono::seconds(15)) {
        std::fprintf(stderr, "%s\n", progress_line(s).c_str());
        last = key;
        last_print = std::chrono::steady_clock::now();
      }
      if (s.finished) break;
      for (size_t i = 0; i < workers.size(); ++i)
        if (dead[i]) workers[i].restart(launcher, exit_of(*dead[i]));
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }

    if (g_interrupts > 0) {
      std::fprintf(stderr, "run: interrupted: stopping the workers (healing checkpoints, leases given back)...\n");
      stop_all();
      std::fprintf(stderr, "run: stopped; run the same command again to resume from %s\n", state.c_str());
      return 130;
    }
    // The workers exit by themselves once the coordinator has nothing left; one that has not within 60 s is
    // stopped.
    const std::vector<JobId> lingering = wait_for_end(launcher, ids(), 60);
    for (const JobId& id : lingering) launcher.cancel(id);
    wait_for_end(launcher, lingering, 125);
    for (const TaskStatus& t : s.tasks)
      if (t.state == "failed") {
        std::fprintf(stderr, "run: task %s failed after %d attempt(s): %s\n", t.key.c_str(), t.attempts, t.error.c_str());
        exit_status = 1;
      }

    const std::vector<CurveSample> samples = curve_samples(client.query_results(sub.experiment_id));
    if (!samples.empty()) {
      std::printf("%s", curves_table(samples).c_str());
      const std::string svg = p.get("svg").empty() ? state + "/curves.svg" : p.get("svg");
      write_file(svg, curves_svg(samples, e.name));
      const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      // Each model's distances as the paper's Figure 1c, beside the curves.
      std::string heatmaps;
      for (const nlohmann::json& d : client.query(sub.experiment_id, "distances")) {
        const std::string model = d.at("model").get<std::string>();
        const DistanceResult r = DistanceResult::from_json(d.at("table").dump(), "distances of " + model);
        const std::string file = state + "/distances-" + model + ".svg";
        write_file(file, distance_heatmap_svg(r.table, model));
        heatmaps += ", " + file;
      }
      std::printf("\ncurves: %s%s; database: %s/layerprune.db (experiment #%lld); %.0fs\n", svg.c_str(),
                  heatmaps.c_str(), state.c_str(), (long long)sub.experiment_id, wall);
    }
  } catch (...) {
    stop_all();
    throw;
  }
  launcher.cancel(coordinator.id);
  wait_for_end(launcher, {coordinator.id}, 25);
  return exit_status;
}

int submit(int argc, char** argv) {
  ArgParser p("submit", "Submit an experiment to a running coordinator (idempotent: the same experiment again\n"
                        "returns its id). llama2.c models are converted into --models first.");
  p.positional("EXPERIMENT", "the experiment YAML").option("models", "where converted models go", "models");
  add_coordinator_flags(p);
  p.flag("json", "print one JSON document");
  if (!p.parse(argc, argv)) return 0;
  Experiment e = parse_experiment_file(p.get("EXPERIMENT"));
  prepare_models(e, p.get("models"));
  const ExperimentPlan plan = plan_experiment(e);
  const SubmitOutcome r = connect(p)->submit(plan);
  if (p.flag_set("json")) {
    std::cout << json{{"experiment_id", r.experiment_id}, {"existed", r.existed}, {"points", r.points}, {"tasks", r.tasks}}
                     .dump()
              << std::endl;
  } else {
    std::printf("experiment #%lld %s: %lld grid points, %lld tasks\n", (long long)r.experiment_id,
                r.existed ? "(already submitted)" : "submitted", (long long)r.points, (long long)r.tasks);
  }
  return 0;
}

int status(int argc, char** argv) {
  ArgParser p("status", "Progress of experiments: one bar per experiment, or the tasks of one (--tasks).");
  p.positional("ID", "experiment id (default: every experiment)", "0");
  add_coordinator_flags(p);
  p.flag("follow", "keep printing until the experiment is finished (needs ID)")
      .flag("tasks", "list the experiment's tasks with their state, worker and attempts")
      .flag("json", "print one JSON document");
  if (!p.parse(argc, argv)) return 0;
  auto client = connect(p);
  const int64_t id = p.get_int("ID");
  if (id == 0) {
    for (const ExperimentStatus& s : client->list()) std::printf("%s\n", progress_line(s).c_str());
    return 0;
  }
  ExperimentStatus s = client->watch_status(
      id, p.flag_set("follow"), [&](const ExperimentStatus& u) { if (p.flag_set("follow")) std::fprintf(stderr, "%s\n", progress_line(u).c_str()); },
      p.flag_set("tasks"));
  if (p.flag_set("json")) {
    json tasks = json::array();
    for (const TaskStatus& t : s.tasks)
      tasks.push_back({{"key", t.key}, {"kind", t.kind}, {"model", t.model}, {"state", t.state}, {"worker", t.worker},
                       {"attempts", t.attempts}, {"failures", t.failures}, {"error", t.error}});
    std::cout << json{{"experiment_id", s.experiment_id}, {"name", s.name}, {"state", s.state},
                      {"points_done", s.points_done}, {"points_total", s.points_total},
                      {"task_counts", s.task_counts}, {"tasks", tasks}}
                     .dump()
              << std::endl;
    return 0;
  }
  std::printf("%s\n", progress_line(s).c_str());
  for (const TaskStatus& t : s.tasks)
    std::printf("  %-9s %-52s %-9s attempts %d%s%s\n", t.kind.c_str(), t.key.c_str(), t.state.c_str(), t.attempts,
                t.worker.empty() ? "" : ("  " + t.worker).c_str(), t.error.empty() ? "" : ("  error: " + t.error).c_str());
  return 0;
}

int cancel(int argc, char** argv) {
  ArgParser p("cancel", "Cancel an experiment: queued tasks are dropped, running ones told at their next heartbeat.\n"
                        "With --state of a `layerprune slurm submit`, its Slurm jobs are cancelled too (the worker\n"
                        "arrays, then the coordinator job); `layerprune slurm cancel` stops only the jobs.");
  p.positional("ID", "experiment id");
  add_coordinator_flags(p);
  p.option("wait-seconds", "how long to wait for the worker jobs to leave before stopping the coordinator", "120");
  if (!p.parse(argc, argv)) return 0;
  const int64_t id = experiment_id(p);
  const std::string state = p.get("state");
  const std::optional<SubmittedJobs> jobs = state.empty() ? std::nullopt : read_submitted_jobs(state);
  SlurmLauncher slurm;
  std::exception_ptr unreachable;
  try {
    const CancelOutcome c = connect(p)->cancel(id);
    std::printf("experiment #%lld: %lld tasks cancelled, %lld running tasks told to stop\n", (long long)id,
                (long long)c.cancelled, (long long)c.leased);
  } catch (const CoordinatorUnavailable& e) {
    if (!jobs) throw;
    // The jobs go anyway (they are what costs); the database keeps the tasks as they were; exit 4 after.
    std::fprintf(stderr, "cancel: %s; cancelling the Slurm jobs anyway (the experiment's tasks stay as they are)\n",
                 e.what());
    unreachable = std::current_exception();
  }
  if (jobs)
    for (const std::string& line : cancel_submitted_jobs(slurm, state, *jobs, p.get_double("wait-seconds")))
      std::printf("%s\n", line.c_str());
  if (unreachable) std::rethrow_exception(unreachable);
  return 0;
}

int results(int argc, char** argv) {
  ArgParser p("results", "The metrics of every finished grid point of an experiment.");
  p.positional("ID", "experiment id");
  add_coordinator_flags(p);
  p.option("db", "read this database file instead of asking a coordinator", "")
      .option("format", "table, csv or json", "table");
  if (!p.parse(argc, argv)) return 0;
  print_results(fetch_results(p, experiment_id(p)), p.get("format"));
  return 0;
}

int curves(int argc, char** argv) {
  ArgParser p("curves", "The paper's Figure 2 for an experiment: each metric against the fraction of layers dropped,\n"
                        "per strategy and healing variant, as tables and an SVG plot.");
  p.positional("ID", "experiment id");
  add_coordinator_flags(p);
  p.option("db", "read this database file instead of asking a coordinator", "")
      .option("svg", "write the plot here", "")
      .option("title", "plot title", "");
  if (!p.parse(argc, argv)) return 0;
  const std::vector<CurveSample> samples = curve_samples(fetch_results(p, experiment_id(p)));
  if (samples.empty()) throw InputError("experiment #" + p.get("ID") + " has no results yet");
  std::printf("%s", curves_table(samples).c_str());
  if (!p.get("svg").empty()) {
    write_file(p.get("svg"), curves_svg(samples, p.get("title")));
    std::printf("\nplot: %s\n", p.get("svg").c_str());
  }
  return 0;
}

}  // namespace layerprune::cli
