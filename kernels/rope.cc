#include "kernels/rope.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <stdexcept>

namespace layerprune::kernels {

at::Tensor rope_reference(const at::Tensor& x, int64_t heads, int64_t start, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t B = x.size(0), T = x.size(1), hd = x.size(2) / heads, half = hd / 2;
  at::Tensor v = x.to(at::kFloat).view({B, T, heads, hd});
  at::Tensor c = cos.narrow(0, start, T).view({1, T, 1, half});
  at::Tensor s = sin.narrow(0, start, T).view({1, T, 1, half});
  at::Tensor x1 = v.narrow(-1, 0, half), x2 = v.narrow(-1, half, half);
  return at::cat({x1 * c - x2 * s, x2 * c + x1 * s}, -1).view({B, T, heads * hd}).to(x.scalar_type());
}

namespace {
template <typename T>
void rope_rows(const T* __restrict in, T* __restrict out, int64_t rows, int64_t T_len, int64_t heads, int64_t hd,
               int64_t start, const float* __restrict cos, const float* __restrict sin, int64_t row_begin) {
  const int64_t half = hd / 2;
  for (int64_t r = row_begin; r < row_begin + rows; ++r) {
    const int64_t pos = start + r % T_len;
    const float* c = cos + pos * half;
    const float* s = sin + pos * half;
    for (int64_t h = 0; h < heads; ++h) {
      const T* x = in + (r * heads + h) * hd;
      T* y = out + (r * heads + h) * hd;
      for (int64_t i = 0; i < half; ++i) {
        const float a = float(x[i]), b = float(x[i + half]);
        y[i] = T(a * c[i] - b * s[i]);
        y[i + half] = T(b * c[i] + a * s[i]);
      }
    }
  }
}
}  // namespace

at::Tensor rope(const at::Tensor& x, int64_t heads, int64_t start, const at::Tensor& cos, const at::Tensor& sin) {
  if (x.dim() != 3 || !x.is_contiguous() || x.size(2) % heads != 0 || (x.size(2) / heads) % 2 != 0)
    throw std::invalid_argument("rope: expects a contiguous [B, T, heads * even head_dim] tensor");
  if (cos.scalar_type() != at::kFloat || !cos.is_contiguous() || !sin.is_contiguous() ||
      cos.size(1) * 2 != x.size(2) / heads || start + x.size(1) > cos.size(0))
    throw std::invalid_argument("rope: cos/sin tables must be contiguous float32 [max_pos >= start + T, head_dim / 2]");
  if (!x.is_cpu()) return rope_reference(x, heads, start, cos, sin);  // a GPU: the same math in ATen ops
  const int64_t B = x.size(0), T = x.size(1), hd = x.size(2) / heads;
  at::Tensor out = at::empty_like(x);
  auto run = [&](auto* in, auto* o) {
    at::parallel_for(0, B * T, 16, [&](int64_t begin, int64_t end) {
      rope_rows(in, o, end - begin, T, heads, hd, start, cos.data_ptr<float>(), sin.data_ptr<float>(), begin);
    });
  };
  if (x.scalar_type() == at::kFloat) run(x.data_ptr<float>(), out.data_ptr<float>());
  else if (x.scalar_type() == at::kBFloat16) run(x.data_ptr<at::BFloat16>(), out.data_ptr<at::BFloat16>());
  else throw std::invalid_argument("rope: float32 or bfloat16 only");
  return out;
}

}  // namespace layerprune::kernels
