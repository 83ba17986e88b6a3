// layerprune-worker: an MPI program. The world splits into groups of --tp ranks (MPI_Comm_split); each
// group is one tensor-parallel model replica (model/tensor_parallel.h), so a node can run several small
// groups side by side. Rank 0 of each group is the only one that talks to the outside: it leases tasks from
// the coordinator (worker/lease_loop.h) or reads them from a file (group g takes tasks g, g + G, ...),
// broadcasts each one to its group, and reports or writes the results.
//
//   mpirun -np 4 layerprune-worker --tp 2 --coordinator state/coordinator.address
//   mpirun -np 4 layerprune-worker --tp 2 --tasks tasks.jsonl --out results/
//
// Failure never hangs a group: a rank that cannot load its shard tells the group (all exit with status 2
// and the rank's message), and any other failure, or a collective that does not complete within
// --comm-timeout seconds because a peer died or stalled, aborts the job (MPI_Abort) with a message.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/args.h"
#include "common/error.h"
#include "common/memory.h"
#include "common/progress.h"
#include "common/text_file.h"
#include "common/version.h"
#include "model/llama.h"
#include "worker/mpi_comm.h"
#ifdef LAYERPRUNE_HAVE_NCCL
#include "worker/nccl_comm.h"
#endif
#include "model/runtime.h"
#include "formats/safetensors.h"
#include "model/tensor_io.h"
#include "worker/experiment_tasks.h"
#include "healing/trainer.h"
#include "worker/lease_loop.h"
#include "worker/stages.h"
#include "worker/worker_group.h"
#include "worker/worker_tasks.h"

namespace layerprune {
namespace {

extern "C" void on_stop_signal(int) { g_stop_training = true; }  // healing checkpoints and returns

using nlohmann::json;

// A WorkerGroup as the lease loop sees it.
class WorkerLeaseGroup : public LeaseGroup {
 public:
  explicit WorkerLeaseGroup(WorkerGroup& g) : g_(g) {}
  bool leader() const override { return g_.leader(); }
  int tp() const override { return g_.groups.tp; }
  std::string label() const override { return g_.label; }
  void log(const std::string& message) const override { g_.log(message); }
  std::string loaded_model() const override { return g_.cache ? g_.cache->loaded_name() : ""; }
  void broadcast(std::string& s) override { g_.comm->broadcast_string(s, 0); }
  bool stop_requested() override { return g_.comm->any(g_stop_training.load()); }
  json run(const std::string& kind, const json& payload, const json& inputs, const std::string& checkpoint_key,
           const std::atomic<bool>* abandon) override {
    return g_.run(kind, payload, inputs, checkpoint_key, nullptr, abandon);
  }
  bool broken(const std::exception& e) const override { return dynamic_cast<const CommError*>(&e) != nullptr; }
  std::string latest_checkpoint(const std::string& checkpoint_key) const override {
    return layerprune::latest_checkpoint(g_.work_dir + "/checkpoints/" + checkpoint_key);
  }

 private:
  WorkerGroup& g_;
};

int worker_main(int argc, char** argv) {
  ArgParser p("layerprune-worker",
              "An MPI program: groups of --tp ranks run tasks tensor-parallel, leased from the coordinator\n"
              "(--coordinator) or read from a JSONL file (--tasks, see worker/worker_tasks.h). Start it with\n"
              "mpirun -np (tp x groups).");
  p.option("tp", "ranks per tensor-parallel group (the world size must be a multiple)", "1")
      .option("tasks", "tasks file (JSONL, one task per line); or --coordinator", "")
      .option("coordinator", "lease tasks from the coordinator at HOST:PORT or the address file it wrote "
              "(\"\" with no --tasks: $LAYERPRUNE_COORDINATOR)", "")
      .option("token-file", "the coordinator's shared token (default $LAYERPRUNE_COORDINATOR_TOKEN_FILE)", "")
      .option("tls-ca", "CA certificate of a coordinator that serves TLS", "")
      .option("coordinator-retry", "seconds to keep retrying an unreachable coordinator before exiting 4 "
              "(default $LAYERPRUNE_COORDINATOR_RETRY_SECONDS, else 30)", "")
      .option("idle-exit", "with --coordinator: exit after this many seconds without a task (0: only when drained)", "0")
      .flag("stay", "with --coordinator: keep polling when the coordinator has nothing left to do")
      .option("out", "directory for the results of --tasks (<id>.safetensors, <id>.json)", "")
      .option("work-dir", "healing checkpoints go under <work-dir>/checkpoints/ (default: --out)", "")
      .option("threads", "CPU threads per rank (0: the host's cores divided among its ranks)", "0")
      .option("comm-timeout", "seconds a collective may wait for the other ranks before the job aborts", "600");
  int world_rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  bool go = false;
  try {
    go = p.parse(argc, argv);
  } catch (const UsageError& e) {
    if (world_rank == 0) std::fprintf(stderr, "layerprune-worker: error: %s\n", e.what());
    return 2;
  }
  if (!go) return 0;

  WorkerGroup w;
  try {
    w.groups = split_into_groups(int(p.get_int("tp")));
  } catch (const InputError& e) {
    if (world_rank == 0) std::fprintf(stderr, "layerprune-worker: error: %s\n", e.what());
    return 2;
  }
  const MpiGroups& g = w.groups;
  w.label = "group " + std::to_string(g.group) + "/" + std::to_string(g.groups);
  std::string rank_label = w.label + " rank " + std::to_string(g.group_rank) + " (world rank " +
                           std::to_string(g.world_rank) + ")";
  double timeout = p.get_double("comm-timeout");
  auto mpi = std::make_shared<MpiCommunicator>(g.group_comm, timeout, rank_label);
  w.comm = std::make_shared<CountingCommunicator>(mpi);
#ifdef LAYERPRUNE_HAVE_NCCL
  // A TP group whose model is on GPUs runs its collectives over NCCL (the unique id travels over MPI, which
  // stays for control); made when the first such model loads, kept for the next (same GPU).
  w.device_comm = [mpi, timeout, nccl = std::shared_ptr<Communicator>(), gpu = -1](c10::Device d) mutable {
    if (!nccl || gpu != d.index()) {
      nccl.reset();
      nccl = std::make_shared<CountingCommunicator>(std::make_shared<NcclCommunicator>(mpi, d.index(), timeout));
      gpu = d.index();
    }
    return nccl;
  };
#endif
  w.out_dir = p.get("out");
  w.work_dir = p.get("work-dir").empty() ? (w.out_dir.empty() ? "." : w.out_dir) : p.get("work-dir");
  if (!w.leader()) Progress::set_quiet(true);  // progress lines once per group
  std::signal(SIGTERM, on_stop_signal);
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGUSR1, on_stop_signal);  // Slurm's time-limit warning (deploy/slurm/README.md): the same stop
  int threads = int(p.get_int("threads"));
  if (threads <= 0) threads = std::max(1, int(std::thread::hardware_concurrency()) / g.local_ranks);
  configure_threads(threads);

  if (p.get("tasks").empty()) {
    LeaseLoopOptions lo;
    lo.coordinator = p.get("coordinator");
    lo.token_file = p.get("token-file");
    lo.tls_ca = p.get("tls-ca");
    lo.exit_when_drained = !p.flag_set("stay");
    lo.idle_exit_seconds = p.get_double("idle-exit");
    std::string retry = p.get("coordinator-retry");
    if (retry.empty() && std::getenv("LAYERPRUNE_COORDINATOR_RETRY_SECONDS")) retry = std::getenv("LAYERPRUNE_COORDINATOR_RETRY_SECONDS");
    if (!retry.empty()) {
      char* end = nullptr;
      const double seconds = std::strtod(retry.c_str(), &end);
      if (end == retry.c_str() || *end != '\0' || !(seconds > 0) || seconds > 86400) {
        if (w.leader())
          std::fprintf(stderr, "layerprune-worker: error: coordinator retry window \"%s\": expected seconds in (0, 86400]\n",
                       retry.c_str());
        return 2;
      }
      lo.retry_for = std::chrono::milliseconds(int64_t(seconds * 1000));
    }
    WorkerLeaseGroup group(w);
    return run_lease_loop(group, lo);
  }
  if (w.out_dir.empty()) {
    if (w.leader()) std::fprintf(stderr, "layerprune-worker: error: --tasks needs --out\n");
    return 2;
  }
  // Rank 0 reads the tasks; a bad file is reported once and every rank of the group exits with 2.
  std::vector<WorkerTask> tasks;
  std::string error;
  if (w.leader()) {
    try {
      tasks = read_tasks(p.get("tasks"));
      std::filesystem::create_directories(w.out_dir);
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  w.comm->broadcast_string(error, 0);
  if (!error.empty()) {
    if (w.leader()) std::fprintf(stderr, "layerprune-worker: error: %s\n", error.c_str());
    return 2;
  }

  int status = 0;
  size_t index = size_t(g.group);
  while (true) {
    // SIGTERM (Slurm's warning, mpirun's forwarding): the group stops together after the current task.
    if (w.comm->any(g_stop_training.load())) {
      w.log("stop requested: exiting after checkpointing");
      return 3;
    }
    std::string message;  // the next task for this group, "" when there are no more
    if (w.leader() && index < tasks.size()) message = tasks[index].to_json().dump();
    w.comm->broadcast_string(message, 0);
    if (message.empty()) break;
    WorkerTask task = WorkerTask::from_json(nlohmann::json::parse(message), "task");
    try {
      if (task.kind == "forward") {
        w.run(task.forward);
      } else {
        const ExperimentTaskLine& t = task.experiment;
        auto start = std::chrono::steady_clock::now();
        nlohmann::json result = w.run(t.kind, t.payload, t.inputs, t.payload.value("experiment", std::string("tasks")) + "/" + t.id);
        if (w.leader()) {
          write_file(w.out_dir + "/" + t.id + ".json", result.dump(2) + "\n");
          double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
          w.log("task " + t.id + " (" + t.kind + ")" + (result.value("stopped", false) ? " stopped (checkpointed)" : " done") +
                " in " + std::to_string(s).substr(0, 6) + " s");
        }
      }
    } catch (const InputError& e) {
      // Every rank knows (agreed in load, or the input is the same everywhere): report and go on.
      w.log("error: " + std::string(e.what()));
      status = 2;
    }
    index += size_t(g.groups);
  }
  return status;
}

}  // namespace
}  // namespace layerprune

int main(int argc, char** argv) {
  layerprune::ensure_passive_openmp(argv);
  MPI_Init(&argc, &argv);
  int status;
  try {
    status = layerprune::worker_main(argc, argv);
  } catch (const std::exception& e) {
    // A collective timed out, or a rank failed where its group cannot agree on it: end the whole job.
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    layerprune::abort_job("layerprune-worker: fatal on world rank " + std::to_string(rank) + ": " + e.what(), 3);
  }
  MPI_Finalize();
  return status;
}
