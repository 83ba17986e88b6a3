#include "model/loss.h"

#include <ATen/ATen.h>

#include <cmath>

#include "common/error.h"
#include "model/finite.h"
#include "common/progress.h"

namespace layerprune {

const char* const kLossRecipe =
    "the file is tokenized as one stream (no BOS), cut into consecutive non-overlapping chunks of context-1 "
    "tokens (final partial chunk dropped); each window is BOS + chunk (for a model whose tokenizer adds no BOS: "
    "chunks of context tokens, each a window); the result is the mean next-token negative log-likelihood over "
    "all predicted tokens (context-1 per window), in nats/token and divided by ln(vocab)";

LossResult stream_loss(const LlamaModel& model, const std::vector<int32_t>& stream, int32_t bos,
                       const LossOptions& options) {
  ForwardOptions fwd;
  fwd.layers = options.layers;
  return stream_loss([&](const at::Tensor& tokens) { return model.forward(tokens, fwd).logits; },
                     model.config().max_position_embeddings, model.config().vocab_size, stream, bos, options);
}

LossResult stream_loss(const std::function<at::Tensor(const at::Tensor&)>& logits_of, int64_t max_positions,
                       int64_t vocab_size, const std::vector<int32_t>& stream, int32_t bos, const LossOptions& options) {
  LossResult r;
  r.context = options.context > 0 ? options.context : max_positions;
  if (r.context < 2) throw InputError("loss: context must be at least 2 tokens");
  if (r.context > max_positions)
    throw InputError("loss: context " + std::to_string(r.context) + " exceeds the model's " +
                     std::to_string(max_positions) + " positions");
  // Without a BOS (bos < 0: the tokenizer adds none) a window is `context` tokens of the stream and its first
  // token is predicted from nothing, so it is not scored: context-1 predictions per window either way.
  const bool with_bos = bos >= 0;
  const int64_t chunk = with_bos ? r.context - 1 : r.context;
  r.stream_tokens = int64_t(stream.size());
  r.windows = r.stream_tokens / chunk;
  if (options.max_windows > 0) r.windows = std::min(r.windows, options.max_windows);
  if (r.windows == 0)
    throw InputError("loss: the text has " + std::to_string(stream.size()) + " tokens, fewer than one window of " +
                     std::to_string(chunk));
  const int64_t B = std::max<int64_t>(1, options.batch_size);
  double total = 0;
  Progress progress("loss", r.windows, "windows");
  for (int64_t w0 = 0; w0 < r.windows; w0 += B) {
    const int64_t nb = std::min(B, r.windows - w0);
    at::Tensor tokens = at::empty({nb, r.context}, at::kLong);
    auto acc = tokens.accessor<int64_t, 2>();
    for (int64_t b = 0; b < nb; ++b) {
      if (with_bos) acc[b][0] = bos;
      const int32_t* src = stream.data() + (w0 + b) * chunk;
      for (int64_t t = 0; t < chunk; ++t) acc[b][t + (with_bos ? 1 : 0)] = src[t];
    }
    const int64_t predicted = r.context - 1;
    at::Tensor logits;                                                       // [nb, ctx, V]
    try {
      logits = logits_of(tokens);
      if (!all_finite(logits)) throw NonFiniteError("non-finite logits (NaN or Inf)");  // a forward without the check
    } catch (const NonFiniteError& e) {
      throw NonFiniteError("loss: windows " + std::to_string(w0) + "-" + std::to_string(w0 + nb - 1) + " (stream tokens " +
                           std::to_string(w0 * chunk) + "-" + std::to_string((w0 + nb) * chunk - 1) + "): " + e.what());
    }
    at::Tensor logp = at::log_softmax(logits.narrow(1, 0, predicted), -1);   // predictions for t+1
    at::Tensor target = tokens.narrow(1, 1, predicted).unsqueeze(-1).to(logp.device());
    at::Tensor nll = logp.gather(-1, target).neg();
    total += nll.to(at::kDouble).sum().item<double>();
    r.predicted_tokens += nb * predicted;
    progress.advance(nb);
  }
  r.mean_nll = total / double(r.predicted_tokens);
  r.normalized = r.mean_nll / std::log(double(vocab_size));
  return r;
}

}  // namespace layerprune
