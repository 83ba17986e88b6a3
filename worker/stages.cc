#include "worker/stages.h"

#include <ATen/core/grad_mode.h>
#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "common/error.h"
#include "common/hashing.h"
#include "common/text_file.h"
#include "common/version.h"
#include "evaluation/eval_data.h"
#include "evaluation/eval_tasks.h"
#include "model/loss.h"
#include "method/sweep.h"

namespace layerprune {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::vector<int64_t> dropped_layers(const std::vector<int64_t>& kept, int64_t layers) {
  std::vector<int64_t> out;
  for (int64_t l = 0; l < layers; ++l)
    if (!std::binary_search(kept.begin(), kept.end(), l)) out.push_back(l);
  return out;
}

// Accuracy per task and per MMLU subject, and the per-item records, of one report.
void add_eval_metrics(PointResult& r, const std::vector<EvalItem>& items, const EvalReport& report) {
  std::map<std::string, SubjectScore> per_task;
  for (size_t i = 0; i < items.size(); ++i) {
    SubjectScore& s = per_task[items[i].task];
    s.total += 1;
    s.correct += report.items[i].correct ? 1 : 0;
  }
  for (const auto& [task, s] : per_task) r.metrics[task] = s.acc();
  for (const auto& [subject, s] : report.subjects)
    if (!subject.empty()) r.metrics["mmlu/" + subject] = s.acc();
  std::istringstream lines(eval_records_jsonl(items, report));
  for (std::string line; std::getline(lines, line);)
    if (!line.empty()) r.items.push_back(json::parse(line));
}
}  // namespace

// ---- distances ----

DistanceResult run_distances(const LlamaModel& model, const Tokenizer& tok, const std::string& model_dir,
                             const std::string& dtype, const CalibrationSpec& c) {
  const auto t0 = std::chrono::steady_clock::now();
  DistanceResult r;
  r.recipe.samples = c.samples;
  r.recipe.seq_len = c.seq_len;
  r.recipe.seed = c.seed;
  r.recipe.add_bos = tok.add_bos_default();
  r.model_dir = model_dir;
  r.model_fingerprint = model_fingerprint(model_dir);
  r.dtype = dtype;
  r.data_path = c.data;
  r.data_sha256 = sha256_file(c.data);
  r.key = distance_key(r.model_fingerprint, r.data_sha256, r.recipe, dtype);
  CalibrationSet set = build_calibration(c.data, tok, r.recipe, model.config().max_position_embeddings);
  r.table = measure_distances(model, set);
  r.documents = set.documents;
  r.tokens = set.tokens();
  r.seconds = seconds_since(t0);
  r.code_version = layerprune_version();
  return r;
}

// ---- evaluation data ----

std::vector<int32_t> token_range(std::vector<int32_t> tokens, double begin, double end) {
  if (!(0 <= begin && begin < end && end <= 1))
    throw InputError("a text range must satisfy 0 <= begin < end <= 1, found [" + std::to_string(begin) + ", " +
                     std::to_string(end) + "]");
  const size_t n = tokens.size(), b = size_t(std::floor(begin * double(n))), e = size_t(std::floor(end * double(n)));
  return std::vector<int32_t>(tokens.begin() + std::ptrdiff_t(b), tokens.begin() + std::ptrdiff_t(e));
}

EvalData load_eval_data(const EvaluationSpec& spec, const Tokenizer& tok) {
  EvalData d;
  if (spec.mmlu) {
    MmluReadOptions ro;
    ro.subjects = spec.mmlu_subjects;
    ro.shots = spec.mmlu_shots;
    ro.limit = spec.mmlu_limit;
    const std::vector<MmluSubject> subjects = read_mmlu(spec.mmlu_data, ro);
    for (const MmluSubject& s : subjects)
      for (const std::string& f : {s.dev_file, s.eval_file})
        if (!f.empty()) d.data_sha256[f] = sha256_file(f);
    for (EvalItem& it : mmlu_items(subjects, ro.shots)) d.items.push_back(std::move(it));
    d.tasks.push_back("mmlu");
  }
  if (spec.boolq) {
    d.data_sha256[spec.boolq_data] = sha256_file(spec.boolq_data);
    for (EvalItem& it : boolq_items(read_boolq(spec.boolq_data, spec.boolq_limit))) d.items.push_back(std::move(it));
    d.tasks.push_back("boolq");
  }
  if (spec.loss) {
    d.data_sha256[spec.loss_data] = sha256_file(spec.loss_data);
    d.loss_stream = token_range(tok.encode(read_text_stream(spec.loss_data), /*add_bos=*/false), spec.loss_begin, spec.loss_end);
    d.loss_seq_len = spec.loss_seq_len;
    d.loss_windows = spec.loss_windows;
  }
  return d;
}

// ---- points ----

json PointResult::to_json() const {
  return {{"key", key}, {"kept", kept}, {"dropped", dropped}, {"metrics", metrics}, {"items", items}};
}

PrunePlan plan_point(const PointSpec& p, int64_t layers, const DistanceTable* table) {
  if (p.n == 0 || p.strategy == "none") {
    if (p.n != 0) throw InputError("point " + p.key + ": strategy \"none\" drops no layers, but n = " + std::to_string(p.n));
    return plan_pruning(Strategy::kSimple, layers, 0, nullptr);
  }
  const Strategy s = parse_strategy(p.strategy);
  if (strategy_needs_distances(s) && !table)
    throw InputError("point " + p.key + ": the " + strategy_name(s) + " strategy needs the model's distance table");
  return plan_pruning(s, layers, p.n, strategy_needs_distances(s) ? table : nullptr);
}

namespace {
double loss_of(const LlamaModel& model, const Tokenizer& tok, const EvalData& data, const std::vector<int64_t>& kept) {
  LossOptions lo;
  lo.layers = kept;
  lo.context = data.loss_seq_len;
  lo.max_windows = data.loss_windows;
  return stream_loss(model, data.loss_stream, tok.sequence_bos(), lo).mean_nll;
}
}  // namespace

std::vector<PointResult> evaluate_points(const LlamaModel& model, const Tokenizer& tok, const EvalData& data,
                                         const std::vector<PointSpec>& points, const DistanceTable* table,
                                         const EvalOptions& options, EvaluateStats* stats) {
  const int64_t L = model.config().num_hidden_layers;
  // Points -> distinct kept-layer lists (n = 0 and equal plans are one model).
  std::vector<SweepVariant> variants;
  std::map<std::vector<int64_t>, size_t> by_kept;
  std::vector<size_t> variant_of;
  std::vector<PointResult> out;
  for (const PointSpec& p : points) {
    PrunePlan plan = plan_point(p, L, table);
    auto [it, fresh] = by_kept.emplace(plan.kept, variants.size());
    if (fresh) variants.push_back({p.strategy + " n=" + std::to_string(p.n), plan.kept});
    variant_of.push_back(it->second);
    PointResult r;
    r.key = p.key;
    r.kept = plan.kept;
    r.dropped = dropped_layers(plan.kept, L);
    out.push_back(std::move(r));
  }
  SweepStats sweep;
  std::vector<EvalReport> reports;
  if (!data.items.empty()) reports = evaluate_sweep(model, tok, data.items, variants, options, &sweep);
  std::vector<double> losses(variants.size(), std::nan(""));
  if (!data.loss_stream.empty())
    for (size_t v = 0; v < variants.size(); ++v) losses[v] = loss_of(model, tok, data, variants[v].kept);
  for (size_t i = 0; i < out.size(); ++i) {
    if (!reports.empty()) add_eval_metrics(out[i], data.items, reports[variant_of[i]]);
    if (!std::isnan(losses[variant_of[i]])) out[i].metrics["loss"] = losses[variant_of[i]];
  }
  if (stats) {
    stats->sweep = sweep;
    stats->variants = variants.size();
    stats->truncated = reports.empty() ? 0 : reports.front().truncated;
  }
  return out;
}

PointResult evaluate_model(const LlamaModel& model, const Tokenizer& tok, const EvalData& data,
                           const std::vector<int64_t>& kept, const EvalOptions& options) {
  PointResult r;
  r.kept = kept;
  r.dropped = dropped_layers(kept, model.config().num_hidden_layers);
  if (!data.items.empty()) {
    EvalOptions o = options;
    o.layers = kept;
    add_eval_metrics(r, data.items, evaluate(model, tok, data.items, o));
  }
  if (!data.loss_stream.empty()) r.metrics["loss"] = loss_of(model, tok, data, kept);
  return r;
}

// ---- healing ----

LoraConfig lora_config(const HealingSpec& spec, uint64_t seed) {
  LoraConfig c;
  c.rank = spec.rank;
  c.alpha = spec.alpha;
  c.dropout = spec.dropout;
  c.targets = spec.targets;
  c.seed = seed;
  c.base_quant = spec.quant;
  return c;
}

TrainConfig train_config(const HealingSpec& spec) {
  TrainConfig c;
  c.steps = spec.steps;
  c.global_batch = spec.global_batch;
  c.micro_batch = spec.micro_batch;
  c.lr = spec.lr;
  c.warmup = spec.warmup;
  c.min_lr_ratio = spec.min_lr_ratio;
  c.checkpoint_every = spec.checkpoint_every;
  return c;
}

json HealOutcome::summary() const {
  return {{"stopped", stopped}, {"checkpoint", checkpoint}, {"steps_run", steps_run}, {"final_step", final_step},
          {"train_loss", train_loss}, {"seconds", seconds}};
}

std::string latest_checkpoint(const std::string& dir) {
  std::string best;
  std::error_code ec;
  if (dir.empty() || !fs::is_directory(dir, ec)) return best;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    // step-NNNNNN.safetensors: zero-padded, so name order is step order
    if (name.rfind("step-", 0) == 0 && name.size() > 17 && name.substr(name.size() - 12) == ".safetensors" &&
        (best.empty() || name > fs::path(best).filename().string()))
      best = e.path().string();
  }
  return best;
}

HealOutcome run_heal(const LlamaModel& model, const Tokenizer& tok, const HealingSpec& spec, uint64_t seed,
                     const PointSpec& point, const DistanceTable* table, const EvalData& eval,
                     const EvalOptions& options, const std::string& checkpoint_dir,
                     const std::function<void(const TrainStep&)>& on_step, const std::atomic<bool>* stop) {
  const auto t0 = std::chrono::steady_clock::now();
  const LlamaConfig& c = model.config();
  const PrunePlan plan = plan_point(point, c.num_hidden_layers, table);
  if (spec.seq_len < 2 || spec.seq_len > c.max_position_embeddings)
    throw InputError("healing seq_len " + std::to_string(spec.seq_len) + " must be in [2, " +
                     std::to_string(c.max_position_embeddings) + "] (the model's context)");
  LoraLlama lora(model, plan.kept, lora_config(spec, seed));
  TrainConfig tc = train_config(spec);
  tc.checkpoint_dir = checkpoint_dir;
  tc.stop = stop;
  PackedStream data(token_range(tok.encode(read_text_stream(spec.train_data), false), spec.train_begin, spec.train_end),
                    tok.sequence_bos(), spec.seq_len, seed);
  const std::string resume = latest_checkpoint(checkpoint_dir);
  TrainResult tr = train(lora, data, tc, resume, on_step);
  HealOutcome o;
  o.stopped = tr.stopped;
  o.checkpoint = tr.last_checkpoint;
  o.steps_run = int64_t(tr.steps.size());
  o.final_step = tr.final_step;
  o.train_loss = tr.steps.empty() ? std::nan("") : tr.steps.back().loss;
  if (!tr.stopped) {
    at::NoGradGuard no_grad;
    o.point = evaluate_model(lora.merged_model(), tok, eval, plan.kept, options);
    o.point.key = point.key;
  }
  o.seconds = seconds_since(t0);
  return o;
}

}  // namespace layerprune
