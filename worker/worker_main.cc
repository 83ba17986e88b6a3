// layerprune-worker: an MPI program. The world splits into groups of --tp ranks (MPI_Comm_split); each
// group is one tensor-parallel model replica (worker/tensor_parallel.h), so a node can run several small
// groups side by side. Rank 0 of each group is the only one that talks to the outside: it reads the tasks,
// broadcasts each one to its group, and writes the results. Group g takes tasks g, g + G, g + 2G, ...
//
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
#include "worker/llama.h"
#include "worker/mpi_comm.h"
#include "worker/runtime.h"
#include "worker/safetensors.h"
#include "worker/tensor_io.h"
#include "worker/experiment_tasks.h"
#include "worker/trainer.h"
#include "worker/worker_tasks.h"

namespace layerprune {
namespace {

// Test hook: LAYERPRUNE_TEST_FAULT="load@R" makes group rank R fail to load its shard, "stall@R" makes it
// sleep through the forward pass (its peers must time out, not hang).
bool fault(const char* what, int group_rank) {
  const char* spec = std::getenv("LAYERPRUNE_TEST_FAULT");
  return spec && std::string(spec) == std::string(what) + "@" + std::to_string(group_rank);
}

extern "C" void on_stop_signal(int) { g_stop_training = true; }  // healing checkpoints and returns

struct Worker {
  MpiGroups groups;
  std::shared_ptr<CountingCommunicator> comm;
  std::string out_dir, work_dir, label;
  std::string loaded_key;  // model + dtype of `model`
  std::unique_ptr<LlamaModel> model;  // forward tasks' model
  std::unique_ptr<ModelCache> cache;  // experiment tasks' model (one of the two is loaded at a time)

  bool leader() const { return groups.group_rank == 0; }

  void log(const std::string& message) const {
    if (leader()) std::fprintf(stderr, "layerprune-worker: %s: %s\n", label.c_str(), message.c_str());
  }

  // Loads (or keeps) the model; every rank learns whether all ranks succeeded.
  // An experiment task (worker/experiment_tasks.h): every rank runs it, rank 0 writes <out>/<id>.json.
  void run(const ExperimentTaskLine& task) {
    model.reset();
    loaded_key.clear();
    if (!cache) cache = std::make_unique<ModelCache>(comm);
    TaskContext ctx;
    ctx.work_dir = work_dir;
    ctx.task_key = task.payload.value("experiment", std::string("tasks")) + "/" + task.id;
    ctx.tp = groups.tp;
    auto start = std::chrono::steady_clock::now();
    nlohmann::json result = run_experiment_task(task.kind, task.payload, task.inputs, *cache, ctx);
    if (!leader()) return;
    write_file(out_dir + "/" + task.id + ".json", result.dump(2) + "\n");
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    log("task " + task.id + " (" + task.kind + ")" + (result.value("stopped", false) ? " stopped (checkpointed)" : " done") +
        " in " + std::to_string(s).substr(0, 6) + " s");
  }

  void load(const ForwardTask& task) {
    std::string key = task.model + "|" + task.dtype;
    if (model && loaded_key == key) return;
    model.reset();
    cache.reset();
    std::string error;
    auto start = std::chrono::steady_clock::now();
    try {
      if (fault("load", groups.group_rank)) throw InputError("injected load failure (LAYERPRUNE_TEST_FAULT)");
      LoadOptions options;
      options.dtype = task.dtype;
      options.comm = comm;
      model = std::make_unique<LlamaModel>(LlamaModel::load(task.model, options));
    } catch (const std::exception& e) {
      error = e.what();
      std::fprintf(stderr, "layerprune-worker: %s rank %d: cannot load %s: %s\n", label.c_str(), groups.group_rank,
                   task.model.c_str(), e.what());
    }
    if (comm->any(!error.empty())) {
      model.reset();
      throw InputError("task " + task.id + ": a rank of the group could not load " + task.model +
                       (error.empty() ? " (see that rank's message above)" : ": " + error));
    }
    loaded_key = key;
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    log("loaded " + task.model + " (" + std::to_string(model->loaded_bytes() >> 20) + " MiB on rank 0, tp " +
        std::to_string(groups.tp) + ") in " + std::to_string(s).substr(0, 5) + " s");
  }

  void run(const ForwardTask& task) {
    load(task);
    const int64_t B = int64_t(task.tokens.size());
    int64_t T = 0;
    for (const auto& s : task.tokens) T = std::max<int64_t>(T, int64_t(s.size()));
    at::Tensor tokens = at::zeros({B, T}, at::kLong), lengths = at::empty({B}, at::kLong);
    for (int64_t b = 0; b < B; ++b) {
      lengths[b] = int64_t(task.tokens[b].size());
      for (size_t t = 0; t < task.tokens[b].size(); ++t) tokens[b][int64_t(t)] = task.tokens[b][t];
    }
    ForwardOptions fo;
    fo.layers = task.layers;
    fo.return_hidden = task.hidden;
    fo.logits = task.logits;
    if (fault("stall", groups.group_rank)) std::this_thread::sleep_for(std::chrono::hours(1));
    ForwardResult r;
    CommStats stats;
    std::vector<double> times;
    for (int64_t i = 0; i < task.repeat; ++i) {
      comm->reset();  // report one forward pass's traffic
      auto start = std::chrono::steady_clock::now();
      r = model->forward(tokens, fo);
      times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      stats = comm->stats();
    }
    const double seconds = *std::min_element(times.begin(), times.end());

    // Per-rank memory: bytes read from the checkpoint, and checkpoint pages still resident after the
    // forward pass touched every weight (the measured shard).
    at::Tensor mine = at::tensor({int64_t(model->loaded_bytes()), int64_t(model->mapped_bytes()),
                                  int64_t(model->copied_bytes()),
                                  int64_t(resident_bytes_of_files(model->checkpoint_files())),
                                  int64_t(resident_set().anon)},
                                 at::kLong);
    at::Tensor per_rank = comm->all_gather(mine);
    if (!leader()) return;

    std::vector<at::Tensor> keep;
    std::vector<TensorToWrite> tensors;
    auto add = [&](const std::string& name, at::Tensor t) {
      keep.push_back(t.contiguous());
      tensors.push_back(tensor_to_write(name, keep.back()));
    };
    add("lengths", lengths);
    if (r.logits.defined()) add("logits", r.logits.to(at::kFloat));
    for (size_t k = 0; k < r.hidden.size(); ++k) add("hidden." + std::to_string(k), r.hidden[k].to(at::kFloat));
    std::string base = out_dir + "/" + task.id;
    write_safetensors(base + ".safetensors", tensors, {{"task", task.id}, {"code_version", layerprune_version()}});

    nlohmann::json ranks = nlohmann::json::array();
    for (int i = 0; i < groups.tp; ++i) {
      auto v = per_rank[i];
      ranks.push_back({{"rank", i},
                       {"loaded_bytes", v[0].item<int64_t>()},
                       {"mapped_bytes", v[1].item<int64_t>()},
                       {"copied_bytes", v[2].item<int64_t>()},
                       {"resident_checkpoint_bytes", v[3].item<int64_t>()},
                       {"resident_anon_bytes", v[4].item<int64_t>()}});
    }
    nlohmann::json doc = {
        {"task", task.to_json()},
        {"group", groups.group},
        {"groups", groups.groups},
        {"tp", groups.tp},
        {"backend", comm->backend()},
        {"batch", B},
        {"time", T},
        {"kept_layers", model->kept_layers(task.layers).size()},
        {"forward_seconds", seconds},  // the fastest of `repeat` passes
        {"forward_seconds_all", times},
        {"threads_per_rank", at::get_num_threads()},
        {"comm",
         {{"all_reduce", stats.all_reduce},
          {"all_reduce_bytes", stats.all_reduce_bytes},
          {"all_gather", stats.all_gather},
          {"all_gather_bytes", stats.all_gather_bytes},
          {"broadcast", stats.broadcast},
          {"seconds", stats.seconds}}},
        {"ranks", ranks},
        {"code_version", layerprune_version()},
    };
    write_file(base + ".json", doc.dump(2) + "\n");
    log("task " + task.id + ": " + std::to_string(B) + " x " + std::to_string(T) + " tokens in " +
        std::to_string(seconds).substr(0, 6) + " s, " + std::to_string(stats.all_reduce) + " all-reduces");
  }
};

int worker_main(int argc, char** argv) {
  ArgParser p("layerprune-worker",
              "An MPI program: groups of --tp ranks run tensor-parallel forward passes of the tasks in --tasks\n"
              "(JSONL, see worker/worker_tasks.h). Start it with mpirun -np (tp x groups).");
  p.option("tp", "ranks per tensor-parallel group (the world size must be a multiple)", "1")
      .option("tasks", "tasks file (JSONL, one task per line)")
      .option("out", "directory for the results (<id>.safetensors, <id>.json)")
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

  Worker w;
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
  w.comm = std::make_shared<CountingCommunicator>(std::make_shared<MpiCommunicator>(g.group_comm, timeout, rank_label));
  w.out_dir = p.get("out");
  w.work_dir = p.get("work-dir").empty() ? w.out_dir : p.get("work-dir");
  if (!w.leader()) Progress::set_quiet(true);  // progress lines once per group
  std::signal(SIGTERM, on_stop_signal);
  std::signal(SIGINT, on_stop_signal);
  int threads = int(p.get_int("threads"));
  if (threads <= 0) threads = std::max(1, int(std::thread::hardware_concurrency()) / g.local_ranks);
  configure_threads(threads);

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
      if (task.kind == "forward")
        w.run(task.forward);
      else
        w.run(task.experiment);
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
