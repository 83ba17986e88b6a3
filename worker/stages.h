// The stages a worker runs on a loaded model for one task of an experiment (experiment/experiment.h):
//
//   distances  the layer-distance table of the model on its calibration data (paper Eq. 7)
//   evaluate   every no-healing grid point of the model in one shared-prefix sweep (method/sweep.h)
//   heal       one pruned point: QLoRA/LoRA healing with resumable checkpoints, then its evaluation
//
// Each takes what it needs as arguments and returns its result as the JSON the coordinator stores:
//   {"points": [{"key", "kept", "dropped", "metrics": {"mmlu", "mmlu/<subject>", "boolq", "loss", ...},
//                "items": [per-item records]}], ...}
// Under tensor parallelism every rank of the group calls the same stage with the same arguments (the model
// is its shard); every rank returns the same result, and one of them reports it.
// The `layerprune sweep` command and the worker share evaluate_points, so a grid point evaluated from the
// command line and by the coordinator's worker is the same computation.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "experiment/experiment.h"
#include "method/distances.h"
#include "evaluation/evaluate.h"
#include "model/llama.h"
#include "model/lora.h"
#include "experiment/pruning.h"
#include "method/sweep.h"
#include "formats/tokenizer.h"
#include "healing/trainer.h"

namespace layerprune {

// ---- distances ----

// Measures (never caches: the coordinator stores results) the table for `model` loaded from `model_dir`.
DistanceResult run_distances(const LlamaModel& model, const Tokenizer& tok, const std::string& model_dir,
                             const std::string& dtype, const CalibrationSpec& calibration);

// ---- evaluation data ----

// Tokens [floor(begin n), floor(end n)) of n: a part of a text (a training split, a held-out split).
std::vector<int32_t> token_range(std::vector<int32_t> tokens, double begin, double end);

// The items and loss text of an evaluation spec, read and tokenised once per task. InputError (file:line)
// for malformed data.
struct EvalData {
  std::vector<EvalItem> items;            // MMLU then BoolQ
  std::vector<std::string> tasks;         // "mmlu", "boolq" (those present)
  std::vector<int32_t> loss_stream;       // tokens of the loss text (empty: no loss)
  int64_t loss_seq_len = 0, loss_windows = 0;
  nlohmann::json data_sha256 = nlohmann::json::object();  // file -> sha256
};
EvalData load_eval_data(const EvaluationSpec& spec, const Tokenizer& tok);

// ---- points ----

// A grid point as a pruning plan: strategy "none" (n = 0), "similarity", "simple" or "block_influence"; `kept` given directly
// when non-empty (the `--drop/--keep` path), else derived from the strategy, n and the distance table.
struct PointSpec {
  std::string key;
  std::string strategy = "none";
  int64_t n = 0;
};

struct PointResult {
  std::string key;
  std::vector<int64_t> kept, dropped;
  std::map<std::string, double> metrics;  // "mmlu", "mmlu/<subject>", "boolq", "loss"
  nlohmann::json items = nlohmann::json::array();  // per-item records (eval_records_jsonl's objects)
  nlohmann::json to_json() const;
};

// The kept layers of a point; InputError when similarity or block_influence needs a table that is missing.
PrunePlan plan_point(const PointSpec& point, int64_t layers, const DistanceTable* table);

struct EvaluateStats {
  SweepStats sweep;
  size_t variants = 0;
  int64_t truncated = 0;  // prompts left-truncated to the context (the same for every variant)
};

// Every point on the same items in one shared-prefix sweep (points with equal kept layers evaluated once),
// plus the loss of each distinct model on data.loss_stream.
std::vector<PointResult> evaluate_points(const LlamaModel& model, const Tokenizer& tok, const EvalData& data,
                                         const std::vector<PointSpec>& points, const DistanceTable* table,
                                         const EvalOptions& options, EvaluateStats* stats = nullptr);

// The metrics of one already-pruned model (the healed one): evaluate() with prefix reuse, and the loss.
PointResult evaluate_model(const LlamaModel& model, const Tokenizer& tok, const EvalData& data,
                           const std::vector<int64_t>& kept, const EvalOptions& options);

// ---- healing ----

// LoRA and trainer settings of a healing spec (the paper's recipe by default).
LoraConfig lora_config(const HealingSpec& spec, uint64_t seed);
TrainConfig train_config(const HealingSpec& spec);

struct HealOutcome {
  PointResult point;           // metrics of the healed model (undefined when stopped)
  bool stopped = false;        // a stop request (SIGTERM) ended training; `checkpoint` holds the state
  std::string checkpoint;      // the last checkpoint written
  int64_t steps_run = 0, final_step = 0;
  double train_loss = 0;       // mean training loss of the last step
  double seconds = 0;
  nlohmann::json summary() const;  // the "healing" object of the result
};

// Prunes `point`, trains adapters on spec.train_data (checkpoints every spec.checkpoint_every steps into
// checkpoint_dir; resumes from the newest checkpoint there, so a re-leased task continues where its last
// attempt stopped), merges them and evaluates the healed model. on_step: after each optimizer step; stop:
// checkpoint and return early when set (besides g_stop_training).
HealOutcome run_heal(const LlamaModel& model, const Tokenizer& tok, const HealingSpec& spec, uint64_t seed,
                     const PointSpec& point, const DistanceTable* table, const EvalData& eval,
                     const EvalOptions& options, const std::string& checkpoint_dir,
                     const std::function<void(const TrainStep&)>& on_step = nullptr,
                     const std::atomic<bool>* stop = nullptr);

// The newest step-NNNNNN.safetensors in `dir` ("" when none).
std::string latest_checkpoint(const std::string& dir);

}  // namespace layerprune
