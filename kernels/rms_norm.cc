#include "kernels/rms_norm.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <stdexcept>

namespace layerprune::kernels {

at::Tensor rms_norm_reference(const at::Tensor& x, const at::Tensor& weight, double eps) {
  at::Tensor xf = x.to(at::kFloat);
  at::Tensor inv = at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps);
  return (xf * inv).to(x.scalar_type()) * weight;
}

namespace {
__attribute__((target_clones("avx2", "default")))
void rms_rows_f32(const float* __restrict x, const float* __restrict w, float* __restrict y, int64_t rows, int64_t D,
                  float eps) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * D;
    float* yr = y + r * D;
    float ss = 0.f;
    for (int64_t i = 0; i < D; ++i) ss += xr[i] * xr[i];
    const float inv = 1.f / std::sqrt(ss / float(D) + eps);
    for (int64_t i = 0; i < D; ++i) yr[i] = xr[i] * inv * w[i];
  }
}
}  // namespace

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  const int64_t D = x.size(-1);
  // bf16, and every device but the CPU (CUDA: the same ATen ops run as GPU kernels): LibTorch's ops.
  if (x.scalar_type() != at::kFloat || !x.is_cpu()) return rms_norm_reference(x, weight, eps);
  if (!x.is_contiguous() || weight.scalar_type() != at::kFloat || weight.numel() != D)
    throw std::invalid_argument("rms_norm: x must be contiguous [..., D] and weight [D] of the same dtype");
  at::Tensor w = weight.contiguous();
  at::Tensor y = at::empty_like(x);
  const int64_t rows = x.numel() / std::max<int64_t>(D, 1);
  const float* xp = x.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    rms_rows_f32(xp + begin * D, wp, yp + begin * D, end - begin, D, float(eps));
  });
  return y;
}

}  // namespace layerprune::kernels
