#include "kernels/causal_softmax.h"
#include "kernels/fast_exp.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <stdexcept>

namespace layerprune::kernels {

void causal_softmax_reference(float* scores, int64_t N, int64_t R, int64_t S, int64_t T, int64_t start, float scale) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t r = 0; r < R; ++r) {
      float* row = scores + (n * R + r) * S;
      int64_t valid = std::min(S, start + r % T + 1);
      double mx = -INFINITY;
      for (int64_t j = 0; j < valid; ++j) mx = std::max(mx, double(row[j]) * scale);
      double sum = 0;
      for (int64_t j = 0; j < valid; ++j) sum += std::exp(double(row[j]) * scale - mx);
      for (int64_t j = 0; j < valid; ++j) row[j] = float(std::exp(double(row[j]) * scale - mx) / sum);
      for (int64_t j = valid; j < S; ++j) row[j] = 0.f;
    }
}

namespace {

// One row: max, then exp and sum, then normalise; the masked tail is zeroed.
__attribute__((target_clones("avx2", "default")))
void softmax_row(float* __restrict row, int64_t valid, int64_t S, float scale) {
  float mx = -INFINITY;
  for (int64_t j = 0; j < valid; ++j) mx = row[j] > mx ? row[j] : mx;
  const float shift = mx * scale;
  float sum = 0.f;
  for (int64_t j = 0; j < valid; ++j) {
    const float e = fast_exp(row[j] * scale - shift);
    row[j] = e;
    sum += e;
  }
  const float inv = 1.f / sum;
  for (int64_t j = 0; j < valid; ++j) row[j] *= inv;
  for (int64_t j = valid; j < S; ++j) row[j] = 0.f;
}

}  // namespace

void causal_softmax(const at::Tensor& scores, int64_t T, int64_t start, float scale) {
  if (scores.scalar_type() != at::kFloat || !scores.is_contiguous() || scores.dim() != 3 || scale <= 0)
    throw std::invalid_argument("causal_softmax: expects a contiguous float32 [N, R, S] tensor and scale > 0");
  const int64_t N = scores.size(0), R = scores.size(1), S = scores.size(2);
  float* data = scores.data_ptr<float>();
  at::parallel_for(0, N * R, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      int64_t r = i % R;
      softmax_row(data + i * S, std::min(S, start + r % T + 1), S, scale);
    }
  });
}

}  // namespace layerprune::kernels
