// Non-finite numbers are errors (common/error.h NonFiniteError): the cheap test every stage applies to
// what it computed before it reports it, and the search for where a bad result first went non-finite,
// run only once the end result is bad.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace layerprune {

// True when no element is NaN or Inf (an undefined or empty tensor is finite). One float64 sum; on a GPU
// one synchronisation.
bool all_finite(const at::Tensor& t);

// The first non-finite place of a forward pass: hidden = the residual stream [B, T, D] entering each kept
// layer and leaving the last (kept.size() + 1 tensors); logits its result. "layer 12 (model.layers.12) at
// sequence 0, position 3" (the first layer whose output holds a NaN or Inf), "the embedding
// (model.embed_tokens.weight) at ..." (or "the input hidden state" when the pass started from one), "the
// final norm or the LM head ..." when every layer's output is finite, or "" when nothing is non-finite.
std::string describe_non_finite(const std::vector<at::Tensor>& hidden, const std::vector<int64_t>& kept,
                                const at::Tensor& logits, bool input_hidden);

}  // namespace layerprune
