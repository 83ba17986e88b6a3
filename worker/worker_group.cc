#include "worker/worker_group.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "common/error.h"
#include "common/memory.h"
#include "common/text_file.h"
#include "common/version.h"
#include "formats/safetensors.h"
#include "model/tensor_io.h"

namespace layerprune {

bool test_fault(const char* what, int group_rank) {
  const char* spec = std::getenv("LAYERPRUNE_TEST_FAULT");
  return spec && std::string(spec) == std::string(what) + "@" + std::to_string(group_rank);
}

void WorkerGroup::log(const std::string& message) const {
  if (leader()) std::fprintf(stderr, "layerprune-worker: %s: %s\n", label.c_str(), message.c_str());
}

nlohmann::json WorkerGroup::run(const std::string& kind, const nlohmann::json& payload, const nlohmann::json& inputs,
                                const std::string& task_key, const std::function<void(const TrainStep&)>& on_step,
                                const std::atomic<bool>* abandon) {
  model.reset();  // one model in memory at a time
  loaded_key.clear();
  if (!cache) cache = std::make_unique<ModelCache>(comm, groups.local_rank, device_comm);
  TaskContext ctx;
  ctx.work_dir = work_dir;
  ctx.task_key = task_key;
  ctx.tp = groups.tp;
  ctx.on_train_step = on_step;
  ctx.abandon = abandon;
  return run_experiment_task(kind, payload, inputs, *cache, ctx);
}

// Loads (or keeps) the model; every rank learns whether all ranks succeeded.
void WorkerGroup::load(const ForwardTask& task) {
  std::string key = task.model + "|" + task.dtype;
  if (model && loaded_key == key) return;
  model.reset();
  cache.reset();
  std::string error;
  auto start = std::chrono::steady_clock::now();
  try {
    if (test_fault("load", groups.group_rank)) throw InputError("injected load failure (LAYERPRUNE_TEST_FAULT)");
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

void WorkerGroup::run(const ForwardTask& task) {
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
  if (test_fault("stall", groups.group_rank)) std::this_thread::sleep_for(std::chrono::hours(1));
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

  // Per-rank memory: bytes read from the checkpoint, and checkpoint pages still
  // resident after the forward pass touched every weight (the measured shard).
  at::Tensor mine =
      at::tensor({int64_t(model->loaded_bytes()), int64_t(model->mapped_bytes()), int64_t(model->copied_bytes()),
                  int64_t(resident_bytes_of_files(model->checkpoint_files())), int64_t(resident_set().anon)},
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

}  // namespace layerprune
