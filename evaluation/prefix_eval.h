// Few-shot prefix reuse (issue 4): every MMLU question of a subject starts with the same k-shot context
// (description + k dev examples, about 90% of a 5-shot prompt's tokens), so its attention keys/values are
// computed once per subject and kept-layer list, and each question runs only its own tokens on top of them.
//
// The answers are the plain scorer's (evaluation/evaluate.h), never an approximation of them:
//   - the tokens are the plain path's, unchanged: the prefix text is tokenized alone (same add_bos rule),
//     and an item uses the cache only when its context tokens (build_request) START WITH exactly those
//     tokens, leave at least one token after them, and its rows are not left-truncated. Otherwise (a
//     SentencePiece merge across the boundary, truncation, a prompt longer than the model's positions)
//     the item falls back to the plain full rows, and is counted;
//   - the question's rows are the plain rows minus their first P tokens (plan_rows on the suffixes), run
//     at positions P.. against the cached keys/values, so every read sees the same causal context. Single-
//     token choices are all read from the suffix's last position, as plan_rows reads them from the context's.
// Only the summation order differs (the prefix's keys enter attention from the cache rather than from the
// same forward), which moves log-likelihoods by ~1e-6 in float32.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "evaluation/eval_tasks.h"
#include "evaluation/evaluate.h"
#include "model/llama.h"
#include "formats/tokenizer.h"

namespace layerprune {

// Items whose context tokens start with one shared prefix's tokens.
struct PrefixGroup {
  std::vector<int32_t> prefix;            // tokens every item starts with: the shared text encoded alone, or
                                          // its first tokens (prefix_eval.cc: the boundary)
  std::vector<int64_t> items;             // indices into the item/request list
  std::vector<EvalRequest> suffixes;      // per item: context tokens after the prefix, same continuations
};

struct PrefixSplit {
  std::vector<PrefixGroup> groups;
  std::vector<int64_t> fallback;          // items scored on their full rows
  std::vector<std::string> fallback_reason;  // per fallback item, why
};

// True when some item declares a shared prefix (EvalItem::shared_prefix_bytes > 0).
bool has_shared_prefix(const std::vector<EvalItem>& items);

// Groups items by their shared prefix text (equal text, one group) and checks each item's tokens as the
// header says. requests[i] must be build_request(tok, items[i], add_bos); max_length as for plan_rows.
PrefixSplit split_shared_prefix(const Tokenizer& tok, const std::vector<EvalItem>& items,
                                const std::vector<EvalRequest>& requests, bool add_bos, int64_t max_length);

struct PrefixScoreStats {
  int64_t prefixes = 0, cached_items = 0, fallback_items = 0;
  int64_t prefix_tokens = 0;              // each prefix once
  int64_t suffix_tokens = 0;              // rows run on a cached prefix
  int64_t fallback_tokens = 0;            // full rows of the fallback items
  int64_t rows = 0;                       // forward rows run (prefixes + suffix rows + fallback rows)
  int64_t tokens() const { return prefix_tokens + suffix_tokens + fallback_tokens; }
};

// Log-likelihoods of every (request, choice), as score_requests gives them with model.forward: each group's
// prefix runs once (batch 1) into a KV cache, then its suffix rows in right-padded batches of
// options.batch_size with the cache broadcast to the batch; fallback items run on plain rows.
Loglikelihoods score_with_prefix_reuse(const LlamaModel& model, const std::vector<int64_t>& layers,
                                       const std::vector<EvalRequest>& requests, const PrefixSplit& split,
                                       const ScoreOptions& options, PrefixScoreStats* stats = nullptr);

// evaluate() with prefix reuse (it calls this when EvalOptions::reuse_prefix and an item has a prefix).
EvalReport evaluate_with_prefix_reuse(const LlamaModel& model, const Tokenizer& tok, const std::vector<EvalItem>& items,
                                      const EvalOptions& options);

}  // namespace layerprune
