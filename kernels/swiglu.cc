#include "kernels/swiglu.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <stdexcept>

#include "kernels/fast_exp.h"

namespace layerprune::kernels {

at::Tensor swiglu_reference(const at::Tensor& gate, const at::Tensor& up) { return at::silu(gate) * up; }

namespace {
__attribute__((target_clones("avx2", "default")))
void swiglu_f32(float* __restrict g, const float* __restrict u, int64_t n) {
  for (int64_t i = 0; i < n; ++i) g[i] = g[i] / (1.f + fast_exp(-g[i])) * u[i];
}
}  // namespace

at::Tensor& swiglu_(at::Tensor& gate, const at::Tensor& up) {
  if (!gate.is_contiguous() || !up.is_contiguous() || !gate.sizes().equals(up.sizes()) ||
      gate.scalar_type() != up.scalar_type())
    throw std::invalid_argument("swiglu_: gate and up must be contiguous tensors of one shape and dtype");
  if (gate.scalar_type() != at::kFloat || !gate.is_cpu()) {  // bf16 or a GPU: in float32 by LibTorch's ops
    gate.copy_(swiglu_reference(gate.to(at::kFloat), up.to(at::kFloat)));
    return gate;
  }
  float* g = gate.data_ptr<float>();
  const float* u = up.data_ptr<float>();
  at::parallel_for(0, gate.numel(), 1 << 14, [&](int64_t begin, int64_t end) { swiglu_f32(g + begin, u + begin, end - begin); });
  return gate;
}

}  // namespace layerprune::kernels
