// The SwiGLU gate of the Llama MLP (Shazeer 2020), fused: gate <- silu(gate) * up, silu(x) = x / (1 + e^-x),
// one pass over two [tokens, ffn] activations instead of three.
#pragma once
#include <ATen/core/Tensor.h>

namespace layerprune::kernels {

at::Tensor swiglu_reference(const at::Tensor& gate, const at::Tensor& up);

// In place on `gate` (contiguous float32 or bfloat16, same shape and dtype as `up`); returns gate. Off the
// CPU (a GPU) the reference's ATen ops in float32, written back into gate.
at::Tensor& swiglu_(at::Tensor& gate, const at::Tensor& up);

}  // namespace layerprune::kernels
