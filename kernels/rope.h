// Rotary position embedding (Su et al. 2021) in Hugging Face's rotate-half layout, fused into one pass:
//   out[..., i]        = x[..., i] cos(p w_i) - x[..., i + hd/2] sin(p w_i)
//   out[..., i + hd/2] = x[..., i + hd/2] cos(p w_i) + x[..., i] sin(p w_i)        i < hd/2
// on a projection's output [B, T, heads * hd] (token-major, as the linear layer writes it), with
// position p = start + t. cos/sin are the [max_pos, hd/2] tables of p w_i.
#pragma once
#include <ATen/core/Tensor.h>

namespace layerprune::kernels {

// The definition, in LibTorch ops.
at::Tensor rope_reference(const at::Tensor& x, int64_t heads, int64_t start, const at::Tensor& cos, const at::Tensor& sin);

// One pass, parallel over tokens; float32 or bfloat16 x (math in float32), contiguous; returns a new tensor.
// Off the CPU (a GPU; cos and sin on the same device) it is rope_reference, in ATen ops.
at::Tensor rope(const at::Tensor& x, int64_t heads, int64_t start, const at::Tensor& cos, const at::Tensor& sin);

}  // namespace layerprune::kernels
