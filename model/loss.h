// Validation loss as `layerprune loss` measures it (also used by evaluation and healing).
//
// Recipe: the corpus is tokenized as one stream (no BOS), cut into consecutive non-overlapping chunks of
// context-1 tokens (the final partial chunk is dropped), each window is [BOS] + chunk, and the result is the
// mean next-token negative log-likelihood over all predicted tokens (context-1 per window; the logits at
// the last position predict nothing). Reported in nats/token and divided by ln(vocab). For a model whose
// tokenizer adds no BOS (Tokenizer::add_bos_default(); callers pass bos = -1), the chunks are `context`
// tokens long and each is a window as it is; its first token is not predicted.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/llama.h"

namespace layerprune {

struct LossOptions {
  int64_t context = 0;       // window length including BOS; 0 = the model's max_position_embeddings
  int64_t batch_size = 4;    // windows per forward
  int64_t max_windows = 0;   // 0 = all
  std::vector<int64_t> layers;  // kept layers (empty = all)
};

struct LossResult {
  double mean_nll = 0;           // nats per predicted token
  double normalized = 0;         // mean_nll / ln(vocab)
  int64_t stream_tokens = 0, windows = 0, predicted_tokens = 0, context = 0;
};

LossResult stream_loss(const LlamaModel& model, const std::vector<int32_t>& stream, int32_t bos,
                       const LossOptions& options);

// The same recipe for any model: `logits` maps [B, T] tokens to [B, T, V] float logits (options.layers is
// ignored; the caller's model decides). Used for LoRA-adapted models during healing.
LossResult stream_loss(const std::function<at::Tensor(const at::Tensor&)>& logits, int64_t max_positions,
                       int64_t vocab_size, const std::vector<int32_t>& stream, int32_t bos, const LossOptions& options);

// The recipe above as one sentence, for --help and results.
extern const char* const kLossRecipe;

}  // namespace layerprune
