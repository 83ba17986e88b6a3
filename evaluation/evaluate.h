// Log-likelihood scoring of multiple-choice tasks (evaluation/eval_tasks.h), as lm-evaluation-harness v0.4
// scores them: the log-likelihood of a continuation is the sum of log-softmax over its tokens given the
// context; the prediction is the argmax over the choices (the first on ties); accuracy is the share of
// items predicted right.
//
// Three steps, so that a different forward can be plugged in (a sweep that runs the base model once and
// resumes pruned variants from a cached hidden state; KV reuse of the shared few-shot prefix):
//   (a) requests: token ids per (item, choice) -- build_request() in eval_tasks.h;
//   (b) rows and batches: each row is one token sequence to run and the reads it serves (which request
//       and choice, at which positions); rows go into right-padded [B, T] batches -- plan_rows(),
//       batch_rows(), batch_tokens();
//   (c) reading the log-likelihoods of a batch out of its logits -- read_loglikelihoods(); the forward is
//       asked for logits at the positions the reads need only (read_positions(): one position per single-
//       token row, a continuation's length per multi-token row), which skips the LM head everywhere else.
// score_requests() runs the three with any BatchForward; evaluate() is the default driver on a LlamaModel.
//
// Rows follow the harness's truncation: the input is (context + continuation)[-(L+1):][:-1], L the model's
// max_position_embeddings, and the continuation is read from the last len(continuation) positions. A
// single-token continuation's input is therefore the context itself (its last L tokens), so every
// single-token choice of an item is read from ONE row, the context, at its last position (MMLU's four
// letters and BoolQ's no/yes are single tokens for Llama's tokenizer): the same numbers with 1/4 of the work.
// Multi-token choices get a row each.
#pragma once
#include <ATen/core/Tensor.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "evaluation/eval_tasks.h"
#include "model/llama.h"
#include "formats/tokenizer.h"

namespace layerprune {

// (b) ---------------------------------------------------------------------------------------------------

// Row positions start .. start+targets.size()-1 predict targets (log p(targets[j] | tokens[..start+j])).
struct ScoreRead {
  int64_t request = 0, choice = 0;
  int64_t start = 0;
  std::vector<int32_t> targets;
};

struct ScoreRow {
  std::vector<int32_t> tokens;
  std::vector<ScoreRead> reads;
};

struct ScorePlan {
  std::vector<ScoreRow> rows;
  std::vector<char> truncated;  // per request: some input was left-truncated to max_length
  int64_t max_length = 0;
};

// share_single_token = false gives one row per (request, choice), as the harness runs them.
ScorePlan plan_rows(const std::vector<EvalRequest>& requests, int64_t max_length, bool share_single_token = true);

// Rows grouped into batches of at most batch_size, longest first (less padding); any grouping gives the
// same numbers, because right padding is invisible to real positions under the causal mask.
std::vector<std::vector<int64_t>> batch_rows(const ScorePlan& plan, int64_t batch_size);

// [B, T] int64, rows right-padded with `pad` to the longest.
at::Tensor batch_tokens(const ScorePlan& plan, const std::vector<int64_t>& rows, int32_t pad = 0);

// (c) ---------------------------------------------------------------------------------------------------

using Loglikelihoods = std::vector<std::vector<double>>;  // [request][choice]

// The positions the reads of a batch of `rows` need, each once, ascending: int64 [N], flat indices b*T + t
// into the batch as batch_tokens() pads it (T = its longest row). For ForwardOptions::logit_positions.
// For error messages: the requests of a batch's rows, and "items 3, 4 (0-based, of 57)".
std::vector<int64_t> row_requests(const ScorePlan& plan, const std::vector<int64_t>& rows);
std::string describe_items(std::vector<int64_t> items, size_t of);
at::Tensor read_positions(const ScorePlan& plan, const std::vector<int64_t>& rows);

// Adds each read's log-likelihood (log-softmax in float64 of the logits at its positions) into out.
// logits (any float dtype): [B, T, V] for the batch of `rows`, or [N, V] at read_positions(plan, rows).
void read_loglikelihoods(const at::Tensor& logits, const ScorePlan& plan, const std::vector<int64_t>& rows,
                         Loglikelihoods& out);

// The drivers ----------------------------------------------------------------------------------------------

// [B, T] tokens -> [B, T, V] logits.
using BatchForward = std::function<at::Tensor(const at::Tensor& tokens)>;
// [B, T] tokens and the read positions (read_positions(), int64 [N]) -> [N, V] logits at those positions
// (or [B, T, V]: read_loglikelihoods takes either).
using PositionsForward = std::function<at::Tensor(const at::Tensor& tokens, const at::Tensor& positions)>;

struct ScoreOptions {
  int64_t batch_size = 8;
  bool share_single_token = true;
  std::string progress_label = "eval";  // "" for no progress line
};

// Several model variants on the same rows (the shared-prefix sweep, method/sweep.h): for each batch the
// driver calls emit(variant, logits) once per variant, so only one variant's logits are alive at a time.
// The logits are [N, V] at `positions` (read_positions()) or [B, T, V].
using EmitLogits = std::function<void(size_t variant, const at::Tensor& logits)>;
using MultiBatchForward =
    std::function<void(const at::Tensor& tokens, const at::Tensor& positions, const EmitLogits& emit)>;

// Log-likelihoods of every (request, choice) for each of `variants` variants.
std::vector<Loglikelihoods> score_requests_multi(const std::vector<EvalRequest>& requests, int64_t max_length,
                                                 size_t variants, const MultiBatchForward& forward,
                                                 const ScoreOptions& options, ScorePlan* plan_out = nullptr);

// Log-likelihoods of every (request, choice); `plan_out` receives the plan (truncation flags, row count).
// The forward computes logits at the read positions only (PositionsForward) or everywhere (BatchForward).
Loglikelihoods score_requests(const std::vector<EvalRequest>& requests, int64_t max_length,
                              const PositionsForward& forward, const ScoreOptions& options, ScorePlan* plan_out = nullptr);
Loglikelihoods score_requests(const std::vector<EvalRequest>& requests, int64_t max_length,
                              const BatchForward& forward, const ScoreOptions& options, ScorePlan* plan_out = nullptr);

struct EvalOptions {
  int64_t batch_size = 8;
  bool add_bos = false;
  std::vector<int64_t> layers;       // kept layers (empty = all)
  bool share_single_token = true;
  bool progress = true;
  // Compute the keys/values of each group's shared few-shot prefix once and run only the questions' own
  // tokens (evaluation/prefix_eval.h; the same answers). Items without a shared prefix (BoolQ) ignore it.
  bool reuse_prefix = true;
};

// The scoring options an evaluation runs with: its batch size and single-token rule, and a progress line
// labelled with the task (none when options.progress is false).
ScoreOptions score_options(const EvalOptions& options, const std::vector<EvalItem>& items);

struct ItemScore {
  std::vector<double> loglik;        // per choice
  int pred = 0;
  bool correct = false, truncated = false;
  int64_t context_tokens = 0;        // before truncation
  std::string prompt_sha256;         // of the context text
};

struct SubjectScore {
  int64_t correct = 0, total = 0;
  double acc() const { return total ? double(correct) / double(total) : 0.0; }
};

struct EvalReport {
  std::vector<ItemScore> items;                 // in item order
  std::map<std::string, SubjectScore> subjects; // MMLU subjects ("" holds BoolQ's items)
  SubjectScore overall;                         // micro-average over all items
  int64_t truncated = 0, rows = 0, max_length = 0;
  // Tokens the forward passes ran (padding not counted) vs what full prompts, one row set per item, run.
  int64_t tokens_processed = 0, full_prompt_tokens = 0;
  // Shared-prefix reuse (evaluation/prefix_eval.h): prefixes run, items scored from a cached prefix.
  bool prefix_reuse = false;
  int64_t prefixes = 0, prefix_cached_items = 0;
};

// Argmax (first on ties), correctness and the per-subject / overall tallies of scored items.
EvalReport summarize(const std::vector<EvalItem>& items, const Loglikelihoods& ll, const ScorePlan& plan);

EvalReport evaluate(const LlamaModel& model, const Tokenizer& tok, const std::vector<EvalItem>& items,
                    const EvalOptions& options);

// One JSON object per item (the harness's samples file): task, subject, index, prompt_sha256,
// loglikelihoods, pred, gold, correct, truncated, context_tokens.
std::string eval_records_jsonl(const std::vector<EvalItem>& items, const EvalReport& report);

// The prompt format and scoring in a few sentences, for --help and results.
extern const char* const kEvalRecipe;

}  // namespace layerprune
