// Attention's softmax with the causal mask and the 1/sqrt(head_dim) scale fused into one pass over the
// scores (the scores are the biggest activation of a prefill: B x heads x T x T).
//
// Layout: scores [N, R, S] float32, contiguous. Row r is the query at absolute position start + (r % T)
// (R = rep x T when the rep query heads of a GQA group are folded into the rows). Keys j <= that position
// get softmax(scale * s) over them; later keys get exactly 0.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace layerprune::kernels {

// Plain loops, the definition.
void causal_softmax_reference(float* scores, int64_t N, int64_t R, int64_t S, int64_t T, int64_t start, float scale);

// Vectorised and parallel over rows; in place on a contiguous float32 [N, R, S] tensor.
void causal_softmax(const at::Tensor& scores, int64_t T, int64_t start, float scale);

}  // namespace layerprune::kernels
