#include "model/finite.h"

#include <ATen/ATen.h>

#include <cmath>

namespace layerprune {

bool all_finite(const at::Tensor& t) {
  // A float64 sum is NaN or Inf exactly when some element is (finite float32/bfloat16 values cannot
  // overflow it): one reduction, no boolean copy of the tensor.
  return !t.defined() || t.numel() == 0 || std::isfinite(t.sum(at::kDouble).item<double>());
}

std::string describe_non_finite(const std::vector<at::Tensor>& hidden, const std::vector<int64_t>& kept,
                                const at::Tensor& logits, bool input_hidden) {
  auto first_bad = [](const at::Tensor& h) {  // "sequence b, position t" of the first non-finite value
    at::Tensor bad = at::isfinite(h).logical_not().any(-1).nonzero().to(at::kCPU);  // [n, 2]: (b, t)
    return "sequence " + std::to_string(bad[0][0].item<int64_t>()) + ", position " +
           std::to_string(bad[0][1].item<int64_t>());
  };
  for (size_t k = 0; k < hidden.size(); ++k) {
    if (all_finite(hidden[k])) continue;
    if (k == 0)
      return (input_hidden ? std::string("the input hidden state") : std::string("the embedding (model.embed_tokens.weight)")) +
             " at " + first_bad(hidden[k]);
    const int64_t layer = kept.at(k - 1);
    return "layer " + std::to_string(layer) + "'s output (model.layers." + std::to_string(layer) + ") at " +
           first_bad(hidden[k]);
  }
  if (logits.defined() && !all_finite(logits))
    return "the final norm or the LM head (model.norm.weight, lm_head.weight): every layer's output is finite";
  return "";
}

}  // namespace layerprune
