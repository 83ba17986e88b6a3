// The shared-prefix sweep: many no-healing pruned variants of one base model evaluated on the same items for
// little more than the cost of the largest one.
//
// A variant keeps a list of layers. Every layer before its first dropped one is the base model's, so its
// hidden state at that cut point equals the base's. Per batch of rows the sweep runs the base once, in
// segments between the variants' cut points, keeping the hidden state at each cut, and resumes each variant
// from its cut with only its remaining layers (ForwardOptions::input_hidden). The same operations run on the
// same inputs as when each variant is evaluated on its own, so the log-likelihoods are the same numbers.
// A variant whose kept layers are exactly a prefix 0..c-1 resumes one layer earlier (a forward needs at
// least one layer). Memory: one hidden state per distinct cut point for one batch, plus one variant's logits.
//
// Work is counted in layer evaluations (one layer on one batch): naive = sum over variants of their kept
// layers; shared = base layers run + the variants' remaining layers. The LM head runs once per variant in
// both, on the positions the scorer reads only.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "evaluation/evaluate.h"
#include "model/llama.h"
#include "formats/tokenizer.h"

namespace layerprune {

struct SweepVariant {
  std::string name;           // e.g. "similarity n=3"
  std::vector<int64_t> kept;  // ascending kept layers (all layers: 0..L-1)
};

struct SweepStats {
  int64_t batches = 0;
  int64_t layer_evals_shared = 0, layer_evals_naive = 0;  // summed over batches
  double work_ratio() const { return layer_evals_shared ? double(layer_evals_naive) / double(layer_evals_shared) : 0; }
};

// The cut point of a variant: the number of leading layers it shares with the base (0..L-1 kept in order),
// capped so that at least one of its layers runs after the cut.
int64_t sweep_cut(const std::vector<int64_t>& kept);

// Scores `items` under every variant. Batching as evaluate(); options.layers is ignored.
std::vector<EvalReport> evaluate_sweep(const LlamaModel& model, const Tokenizer& tok, const std::vector<EvalItem>& items,
                                       const std::vector<SweepVariant>& variants, const EvalOptions& options,
                                       SweepStats* stats = nullptr);

}  // namespace layerprune
