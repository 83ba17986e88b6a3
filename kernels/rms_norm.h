// RMSNorm (Zhang & Sennrich 2019) as Llama uses it: y = x / sqrt(mean(x^2) + eps) * w, the statistics in
// float32 whatever the activation dtype (as Hugging Face computes it), fused into two passes per row.
#pragma once
#include <ATen/core/Tensor.h>

namespace layerprune::kernels {

at::Tensor rms_norm_reference(const at::Tensor& x, const at::Tensor& weight, double eps);

// x: contiguous [..., D] float32 or bfloat16; weight [D] of the same dtype. Returns a new tensor. Off the CPU
// (a GPU) it is rms_norm_reference: the same ATen ops, run there as GPU kernels.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

}  // namespace layerprune::kernels
