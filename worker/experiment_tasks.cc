#include "worker/experiment_tasks.h"

#include <ATen/Parallel.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "common/error.h"
#include "common/hashing.h"
#include "common/version.h"
#include "method/distances.h"
#include "method/planner.h"
#include "model/device.h"
#include "worker/stages.h"

namespace layerprune {

namespace fs = std::filesystem;
using nlohmann::json;

const LlamaModel& ModelCache::model(const ModelSpec& spec) {
  const std::string key = spec.path + "|" + spec.dtype + "|" + spec.device;
  if (model_ && key == key_) return *model_;
  model_.reset();
  tokenizer_.reset();
  key_.clear();
  name_.clear();
  std::string error;
  const auto t0 = std::chrono::steady_clock::now();
  try {
    if (spec.format != "hf")
      throw InputError("model " + spec.name + ": format \"" + spec.format + "\" reaches the worker unconverted "
                       "(layerprune run/submit converts llama2c and gguf checkpoints to Hugging Face directories)");
    if (!fs::is_directory(spec.path)) throw InputError("model " + spec.name + ": " + spec.path + " is not a directory");
    LoadOptions o;
    o.dtype = spec.dtype;
    o.device = parse_device(spec.device, local_rank_);
    o.comm = comm_;
    if (o.device.is_cuda() && comm_ && comm_->size() > 1) {  // the group's collectives on the GPUs
      if (!device_comm_)
        throw InputError("model " + spec.name + ": device " + spec.device + " with tp " + std::to_string(comm_->size()) +
                         " needs NCCL, and this worker was built without it (a CUDA toolkit with NCCL at build time)");
      o.comm = device_comm_(o.device);
    }
    model_ = std::make_unique<LlamaModel>(LlamaModel::load(spec.path, o));
    tokenizer_ = std::make_unique<Tokenizer>(Tokenizer::load_dir(spec.path));
    if (tokenizer_->vocab_size() != model_->config().vocab_size)
      throw InputError(tokenizer_->path() + ": " + std::to_string(tokenizer_->vocab_size()) +
                       " pieces, but the model's vocabulary is " + std::to_string(model_->config().vocab_size));
    fingerprint_ = model_fingerprint(spec.path);
  } catch (const std::exception& e) {
    error = e.what();
  }
  const bool failed = comm_ ? comm_->any(!error.empty()) : !error.empty();
  if (failed) {
    model_.reset();
    tokenizer_.reset();
    throw InputError("cannot load model " + spec.name + " (" + spec.path + ")" +
                     (error.empty() ? ": another rank of the group failed (see its message)" : ": " + error));
  }
  key_ = key;
  name_ = spec.name;
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!comm_ || comm_->rank() == 0)
    std::fprintf(stderr, "worker: loaded %s (%s, %s, on %s): %lld layers, %.1f MB read in %.1fs\n", spec.name.c_str(),
                 spec.path.c_str(), spec.dtype.c_str(), describe_device(model_->device()).c_str(),
                 (long long)model_->config().num_hidden_layers, model_->loaded_bytes() / 1e6, s);
  return *model_;
}

namespace {

template <typename T>
T field(const json& payload, const char* key, const std::string& kind) {
  if (!payload.contains(key)) throw InputError(kind + " task: payload has no \"" + key + "\"");
  return payload.at(key).get<T>();
}

std::vector<PointSpec> point_specs(const json& payload, const std::string& kind) {
  std::vector<PointSpec> out;
  for (const GridPoint& g : field<std::vector<GridPoint>>(payload, "points", kind)) out.push_back({g.key, g.strategy, g.n});
  if (out.empty()) throw InputError(kind + " task: no grid points in the payload");
  return out;
}

// The distance table among the dependencies' results (the model's distances task), if any.
std::unique_ptr<DistanceResult> distances_input(const json& inputs) {
  if (!inputs.is_object() && !inputs.is_array()) return nullptr;
  for (const json& r : inputs)
    if (r.is_object() && r.contains("distances"))
      return std::make_unique<DistanceResult>(DistanceResult::from_json(r.at("distances").dump(), "distances input"));
  return nullptr;
}

std::string hostname() {
  char buf[256] = {0};
  gethostname(buf, sizeof buf - 1);
  return buf;
}

EvalOptions eval_options(const EvaluationSpec& spec, const Tokenizer& tok) {
  EvalOptions o;
  o.batch_size = spec.batch_size;
  o.add_bos = tok.add_bos_default();  // the model's tokenizer_config.json, as lm-evaluation-harness decides
  return o;
}

// The task's measured peak on its GPU beside `layerprune plan`'s figure for the same work (method/planner.h:
// weights + KV cache + activations + logits, or the healing figure), per rank. On the CPU only the plan.
json device_memory_report(const LlamaModel& model, const ModelSpec& spec, int tp, PlanOptions plan) {
  const LlamaConfig& c = model.config();
  plan.tp = tp;
  plan.compute = spec.dtype == "float32" ? "f32" : "bf16";
  if (plan.weights != "nf4") plan.weights = plan.compute;  // the model's dtype, unless healing on NF4
  plan.seq = std::min<int64_t>(plan.seq, c.max_position_embeddings);
  json out{{"device", describe_device(model.device())},
           {"plan", {{"batch", plan.batch}, {"seq", plan.seq}, {"weights", plan.weights}, {"healing", plan.healing},
                     {"prune_fraction", plan.prune_fraction}}}};
  try {
    const MemoryPlan m = plan_memory(c, plan);
    out["planned_bytes"] = plan.healing ? m.healing_bytes : m.inference_bytes;
  } catch (const InputError& e) {
    out["planned_bytes"] = nullptr;
    out["plan_error"] = e.what();
  }
  if (model.device().is_cuda()) {
    const DeviceMemory d = device_memory(model.device());
    out["peak_allocated_bytes"] = d.peak_allocated;
    out["peak_reserved_bytes"] = d.peak_reserved;
  }
  return out;
}

// The last guard before a result leaves the worker: every metric a finite number (the stages already stop at
// the first non-finite logit, loss or distance, naming where; JSON would carry a NaN as null).
void check_finite_metrics(const PointResult& r) {
  for (const auto& [name, value] : r.metrics)
    if (!std::isfinite(value))
      throw NonFiniteError("point " + r.key + ": metric " + name + " is " + std::to_string(value) + ": not stored");
}

}  // namespace

json run_experiment_task(const std::string& kind, const json& payload, const json& inputs, ModelCache& cache,
                         const TaskContext& ctx) {
  const ModelSpec spec = field<ModelSpec>(payload, "model", kind);
  const uint64_t seed = payload.value("seed", uint64_t(0));
  json provenance{{"code_version", layerprune_version()}, {"model", spec.name}, {"model_path", spec.path},
                  {"dtype", spec.dtype}, {"device", spec.device}, {"tp", ctx.tp}, {"seed", seed},
                  {"threads", at::get_num_threads()},
                  {"host", hostname()}};
  if (kind == "distances") {
    const CalibrationSpec calibration = field<CalibrationSpec>(payload, "calibration", kind);
    const LlamaModel& model = cache.model(spec);
    reset_peak_device_memory(model.device());
    DistanceResult r = run_distances(model, cache.tokenizer(), spec.path, spec.dtype, calibration);
    PlanOptions plan;
    plan.batch = DistanceOptions{}.batch_size;
    plan.seq = calibration.seq_len;
    provenance["device_memory"] = device_memory_report(model, spec, ctx.tp, plan);
    provenance["model_fingerprint"] = r.model_fingerprint;
    provenance["add_bos"] = cache.tokenizer().add_bos_default();
    provenance["tokenizer_sha256"] = cache.tokenizer().file_sha256();
    provenance["data_sha256"] = {{calibration.data, r.data_sha256}};
    return {{"distances", json::parse(r.to_json())}, {"provenance", provenance}};
  }
  if (kind != "evaluate" && kind != "heal")
    throw InputError("unknown task kind \"" + kind + "\" (distances, evaluate, heal)");
  const EvaluationSpec evaluation = field<EvaluationSpec>(payload, "evaluation", kind);
  const std::vector<PointSpec> points = point_specs(payload, kind);
  std::unique_ptr<DistanceResult> dist = distances_input(inputs);
  // Data before the model: a malformed file fails before minutes of loading.
  const EvalData data = load_eval_data(evaluation, Tokenizer::load_dir(spec.path));
  const LlamaModel& model = cache.model(spec);
  reset_peak_device_memory(model.device());
  provenance["model_fingerprint"] = cache.fingerprint();
  provenance["add_bos"] = cache.tokenizer().add_bos_default();  // prompts, loss windows and healing sequences
  provenance["tokenizer_sha256"] = cache.tokenizer().file_sha256();
  provenance["data_sha256"] = data.data_sha256;
  if (dist) {
    if (dist->table.layers() != model.config().num_hidden_layers)
      throw InputError("the distance table has " + std::to_string(dist->table.layers()) + " layers, model " + spec.name +
                       " has " + std::to_string(model.config().num_hidden_layers));
    provenance["distance_key"] = dist->key;
  }
  const DistanceTable* table = dist ? &dist->table : nullptr;
  json out_points = json::array();
  if (kind == "evaluate") {
    EvaluateStats stats;
    for (const PointResult& r : evaluate_points(model, cache.tokenizer(), data, points, table, eval_options(evaluation, cache.tokenizer()), &stats)) {
      check_finite_metrics(r);
      out_points.push_back(r.to_json());
    }
    PlanOptions plan;  // the unpruned model in memory, batches of evaluation contexts
    plan.batch = evaluation.batch_size;
    plan.seq = data.loss_seq_len > 0 ? std::max<int64_t>(data.loss_seq_len, 2048) : 2048;
    provenance["device_memory"] = device_memory_report(model, spec, ctx.tp, plan);
    provenance["sweep"] = {{"variants", stats.variants},
                           {"truncated", stats.truncated},
                           {"layer_evals_shared", stats.sweep.layer_evals_shared},
                           {"layer_evals_naive", stats.sweep.layer_evals_naive}};
    return {{"points", out_points}, {"provenance", provenance}};
  }
  // heal: one point
  if (points.size() != 1) throw InputError("heal task: expected one grid point, found " + std::to_string(points.size()));
  const HealingSpec healing = field<HealingSpec>(payload, "healing", kind);
  provenance["data_sha256"][healing.train_data] = sha256_file(healing.train_data);
  const std::string dir = ctx.work_dir.empty() ? "" : ctx.work_dir + "/checkpoints/" + ctx.task_key;
  HealOutcome o = run_heal(model, cache.tokenizer(), healing, seed, points[0], table, data, eval_options(evaluation, cache.tokenizer()), dir,
                           ctx.on_train_step, ctx.abandon);
  if (o.stopped) return {{"stopped", true}, {"checkpoint", o.checkpoint}, {"healing", o.summary()}};
  PlanOptions plan;
  plan.healing = true;
  plan.batch = healing.micro_batch;
  plan.seq = healing.seq_len;
  plan.lora_rank = healing.rank;
  if (healing.quant == "nf4") plan.weights = "nf4";
  plan.prune_fraction = double(points[0].n) / double(model.config().num_hidden_layers);
  provenance["device_memory"] = device_memory_report(model, spec, ctx.tp, plan);
  check_finite_metrics(o.point);
  json point = o.point.to_json();
  point["healing"] = o.summary();
  out_points.push_back(point);
  return {{"points", out_points}, {"provenance", provenance}};
}

}  // namespace layerprune
