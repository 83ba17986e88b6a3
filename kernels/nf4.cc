#include "kernels/nf4.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <atomic>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace layerprune::kernels {

int64_t Nf4Weight::storage_bytes() const {
  return packed.numel() + absmax_q.numel() + absmax_scale.numel() * int64_t(sizeof(float)) + int64_t(sizeof(float));
}

double Nf4Weight::bits_per_weight() const { return numel() ? 8.0 * double(storage_bytes()) / double(numel()) : 0.0; }

int nf4_code_reference(float x) {
  int c = 0;
  while (c < 15 && x > kNf4Midpoints[c]) ++c;  // strictly greater: a midpoint goes to the lower code
  return c;
}

namespace {

// The float32 values of a 2-D float32 or bfloat16 weight, contiguous.
at::Tensor checked_weight(const at::Tensor& w, const char* who) {
  if (w.dim() != 2 || (w.scalar_type() != at::kFloat && w.scalar_type() != at::kBFloat16))
    throw std::invalid_argument(std::string(who) + ": expects a float32 or bfloat16 [rows, cols] weight, got " +
                                std::to_string(w.dim()) + "-D " + std::string(c10::toString(w.scalar_type())));
  return w.contiguous();
}

[[noreturn]] void throw_non_finite(const char* who, int64_t block) {
  throw std::invalid_argument(std::string(who) + ": weight has a non-finite value (inf or NaN) in block " +
                              std::to_string(block) + " (flat elements " + std::to_string(block * kNf4Block) +
                              ".." + std::to_string(block * kNf4Block + kNf4Block - 1) + ")");
}

Nf4Weight empty_weight(const at::Tensor& w) {
  Nf4Weight q;
  q.rows = w.size(0);
  q.cols = w.size(1);
  q.packed = at::zeros({(q.numel() + 1) / 2}, at::kByte);
  return q;
}

float dequantized_absmax(const int8_t* aq, const float* scale, float mean, int64_t b) {
  return std::fma(float(aq[b]), scale[b / kNf4AbsmaxBlock], mean);
}

void check_quantized(const Nf4Weight& q, const char* who) {
  const int64_t nb = q.nblocks();
  if (q.rows < 0 || q.cols < 0 || !q.packed.defined() || q.packed.scalar_type() != at::kByte ||
      q.packed.numel() != (q.numel() + 1) / 2 || !q.absmax_q.defined() || q.absmax_q.scalar_type() != at::kChar ||
      q.absmax_q.numel() != nb || !q.absmax_scale.defined() || q.absmax_scale.scalar_type() != at::kFloat ||
      q.absmax_scale.numel() != (nb + kNf4AbsmaxBlock - 1) / kNf4AbsmaxBlock || !q.packed.is_contiguous() ||
      !q.absmax_q.is_contiguous() || !q.absmax_scale.is_contiguous())
    throw std::invalid_argument(std::string(who) + ": inconsistent Nf4Weight for [" + std::to_string(q.rows) + ", " +
                                std::to_string(q.cols) + "] (packed, absmax_q or absmax_scale has the wrong size or dtype)");
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// References: one element at a time.

Nf4Weight nf4_quantize_reference(const at::Tensor& w_in) {
  at::Tensor w = checked_weight(w_in, "nf4_quantize_reference").to(at::kFloat);
  Nf4Weight q = empty_weight(w);
  const int64_t n = q.numel(), nb = q.nblocks();
  const float* v = w.data_ptr<float>();
  uint8_t* p = q.packed.data_ptr<uint8_t>();
  std::vector<float> absmax(size_t(nb), 0.f);
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t begin = b * kNf4Block, end = std::min(n, begin + kNf4Block);
    float a = 0.f;
    for (int64_t i = begin; i < end; ++i) {
      if (!std::isfinite(v[i])) throw_non_finite("nf4_quantize_reference", b);
      a = std::max(a, std::fabs(v[i]));
    }
    absmax[size_t(b)] = a;
    for (int64_t i = begin; i < end; ++i) {
      const int code = nf4_code_reference(a > 0.f ? v[i] / a : 0.f);
      p[i / 2] |= uint8_t(i % 2 == 0 ? code << 4 : code);
    }
  }
  // Double quantisation, the same definition as nf4_double_quantize, in plain loops.
  double sum = 0;
  for (float a : absmax) sum += a;
  const float mean = nb ? float(sum / double(nb)) : 0.f;
  const int64_t ng = (nb + kNf4AbsmaxBlock - 1) / kNf4AbsmaxBlock;
  q.absmax_mean = mean;
  q.absmax_q = at::empty({nb}, at::kChar);
  q.absmax_scale = at::empty({ng}, at::kFloat);
  for (int64_t g = 0; g < ng; ++g) {
    const int64_t begin = g * kNf4AbsmaxBlock, end = std::min(nb, begin + kNf4AbsmaxBlock);
    float m = 0.f;
    for (int64_t b = begin; b < end; ++b) m = std::max(m, std::fabs(absmax[size_t(b)] - mean));
    const float s = m / 127.f;
    q.absmax_scale.data_ptr<float>()[g] = s;
    for (int64_t b = begin; b < end; ++b) {
      float c = s > 0.f ? std::nearbyint((absmax[size_t(b)] - mean) / s) : 0.f;
      q.absmax_q.data_ptr<int8_t>()[b] = int8_t(std::clamp(c, -127.f, 127.f));
    }
  }
  return q;
}

at::Tensor nf4_dequantize_reference(const Nf4Weight& q, at::ScalarType dtype) {
  check_quantized(q, "nf4_dequantize_reference");
  at::Tensor out = at::empty({q.rows, q.cols}, at::kFloat);
  const uint8_t* p = q.packed.data_ptr<uint8_t>();
  const int8_t* aq = q.absmax_q.data_ptr<int8_t>();
  const float* scale = q.absmax_scale.data_ptr<float>();
  float* o = out.data_ptr<float>();
  for (int64_t i = 0; i < q.numel(); ++i) {
    const int code = i % 2 == 0 ? p[i / 2] >> 4 : p[i / 2] & 15;
    o[i] = kNf4Codes[code] * dequantized_absmax(aq, scale, q.absmax_mean, i / kNf4Block);
  }
  return out.to(dtype);
}

at::Tensor nf4_linear_reference(const at::Tensor& x, const Nf4Weight& w) {
  return at::matmul(x.to(at::kFloat), nf4_dequantize_reference(w).t()).to(x.scalar_type());
}

at::Tensor nf4_linear_input_grad_reference(const at::Tensor& g, const Nf4Weight& w) {
  return at::matmul(g.to(at::kFloat), nf4_dequantize_reference(w)).to(g.scalar_type());
}

// ---------------------------------------------------------------------------------------------------------
// Fast paths.

namespace {

// One block (len <= 64 values starting at an even flat index): absmax, then the codes packed two per byte.
// Returns false on a non-finite value. The comparison count below is the reference's while-loop unrolled:
// code = #{k : x > m_k}, branch-free so GCC vectorises it.
__attribute__((target_clones("avx2", "default")))
bool quantize_block(const float* __restrict v, int64_t len, uint8_t* __restrict packed, float* absmax_out) {
  float a = 0.f;
  int bad = 0;
  for (int64_t i = 0; i < len; ++i) {
    const float m = std::fabs(v[i]);
    bad |= !(m <= FLT_MAX);
    a = m > a ? m : a;
  }
  *absmax_out = a;
  const float den = a > 0.f ? a : 1.f;  // a zero block holds only zeros: 0 / 1 = 0 -> code 7
  uint8_t codes[kNf4Block];
  for (int64_t i = 0; i < len; ++i) {
    const float x = v[i] / den;
    uint8_t c = 0;
    for (int k = 0; k < 15; ++k) c += x > kNf4Midpoints[k];
    codes[i] = c;
  }
  for (int64_t j = 0; j < len / 2; ++j) packed[j] = uint8_t(codes[2 * j] << 4 | codes[2 * j + 1]);
  if (len % 2) packed[len / 2] = uint8_t(codes[len - 1] << 4);
  return !bad;
}

// Byte -> its two code values (high nibble first), so one 8-byte load expands two weights.
struct CodePair {
  float hi, lo;
};
const CodePair* code_pairs() {
  static const auto* table = [] {
    auto* t = new CodePair[256];
    for (int b = 0; b < 256; ++b) t[b] = {kNf4Codes[b >> 4], kNf4Codes[b & 15]};
    return t;
  }();
  return table;
}

__attribute__((target_clones("avx2", "default")))
void expand_pairs(const uint8_t* __restrict p, int64_t npairs, float am, const CodePair* __restrict lut,
                  float* __restrict o) {
  for (int64_t j = 0; j < npairs; ++j) std::memcpy(o + 2 * j, &lut[p[j]], sizeof(CodePair));
  for (int64_t i = 0; i < 2 * npairs; ++i) o[i] *= am;
}

}  // namespace

void nf4_double_quantize(const at::Tensor& absmax_in, Nf4Weight& q) {
  at::Tensor absmax = absmax_in.to(at::kFloat).contiguous();
  const float* a = absmax.data_ptr<float>();
  const int64_t nb = absmax.numel(), ng = (nb + kNf4AbsmaxBlock - 1) / kNf4AbsmaxBlock;
  double sum = 0;  // in block order, so the mean (and every byte after it) is the reference's
  for (int64_t b = 0; b < nb; ++b) sum += a[b];
  const float mean = nb ? float(sum / double(nb)) : 0.f;
  q.absmax_mean = mean;
  q.absmax_q = at::empty({nb}, at::kChar);
  q.absmax_scale = at::empty({ng}, at::kFloat);
  int8_t* aq = q.absmax_q.data_ptr<int8_t>();
  float* scale = q.absmax_scale.data_ptr<float>();
  at::parallel_for(0, ng, 16, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t begin = g * kNf4AbsmaxBlock, end = std::min(nb, begin + kNf4AbsmaxBlock);
      float m = 0.f;
      for (int64_t b = begin; b < end; ++b) m = std::max(m, std::fabs(a[b] - mean));
      const float s = m / 127.f;
      scale[g] = s;
      for (int64_t b = begin; b < end; ++b) {
        float c = s > 0.f ? std::nearbyint((a[b] - mean) / s) : 0.f;
        aq[b] = int8_t(std::clamp(c, -127.f, 127.f));
      }
    }
  });
}

namespace {
at::Tensor absmax_aten(const Nf4Weight& q);
}  // namespace

at::Tensor nf4_absmax(const Nf4Weight& q) {
  check_quantized(q, "nf4_absmax");
  if (!q.packed.is_cpu()) return absmax_aten(q);
  at::Tensor out = at::empty({q.nblocks()}, at::kFloat);
  for (int64_t b = 0; b < q.nblocks(); ++b)
    out.data_ptr<float>()[b] =
        dequantized_absmax(q.absmax_q.data_ptr<int8_t>(), q.absmax_scale.data_ptr<float>(), q.absmax_mean, b);
  return out;
}

Nf4Weight nf4_quantize(const at::Tensor& w_in) {
  if (!w_in.is_cpu()) return nf4_quantize_aten(w_in);
  at::Tensor w = checked_weight(w_in, "nf4_quantize");
  Nf4Weight q = empty_weight(w);
  const int64_t n = q.numel(), nb = q.nblocks();
  at::Tensor absmax = at::empty({nb}, at::kFloat);
  float* am = absmax.data_ptr<float>();
  uint8_t* p = q.packed.data_ptr<uint8_t>();
  const bool bf16 = w.scalar_type() == at::kBFloat16;
  const float* vf = bf16 ? nullptr : w.data_ptr<float>();
  const c10::BFloat16* vb = bf16 ? w.data_ptr<c10::BFloat16>() : nullptr;
  std::atomic<int64_t> first_bad{nb};
  at::parallel_for(0, nb, 256, [&](int64_t b0, int64_t b1) {
    float local[kNf4Block];
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t begin = b * kNf4Block, len = std::min(kNf4Block, n - begin);
      const float* v = local;
      if (bf16)  // one block at a time: no float32 copy of the whole weight
        for (int64_t i = 0; i < len; ++i) local[i] = float(vb[begin + i]);
      else
        v = vf + begin;
      if (!quantize_block(v, len, p + begin / 2, am + b)) {
        int64_t cur = first_bad.load();
        while (b < cur && !first_bad.compare_exchange_weak(cur, b)) {
        }
      }
    }
  });
  if (first_bad.load() < nb) throw_non_finite("nf4_quantize", first_bad.load());
  nf4_double_quantize(absmax, q);
  return q;
}

void nf4_dequantize_range(const Nf4Weight& q, int64_t begin, int64_t end, float* out) {
  const uint8_t* p = q.packed.data_ptr<uint8_t>();
  const int8_t* aq = q.absmax_q.data_ptr<int8_t>();
  const float* scale = q.absmax_scale.data_ptr<float>();
  const CodePair* lut = code_pairs();
  for (int64_t b = begin / kNf4Block; b * kNf4Block < end; ++b) {
    int64_t s = std::max(begin, b * kNf4Block);
    const int64_t e = std::min(end, (b + 1) * kNf4Block);
    const float am = dequantized_absmax(aq, scale, q.absmax_mean, b);
    float* o = out + (s - begin);
    if (s % 2) {  // odd start: the low nibble alone
      *o++ = kNf4Codes[p[s / 2] & 15] * am;
      ++s;
    }
    const int64_t npairs = (e - s) / 2;
    expand_pairs(p + s / 2, npairs, am, lut, o);
    if ((e - s) % 2) o[2 * npairs] = kNf4Codes[p[(e - 1) / 2] >> 4] * am;  // odd end: the high nibble alone
  }
}

namespace {

// Elements [begin, end) into out, split over the threads.
void dequantize_parallel(const Nf4Weight& q, int64_t begin, int64_t end, float* out) {
  at::parallel_for(begin, end, 1 << 15, [&](int64_t s, int64_t e) { nf4_dequantize_range(q, s, e, out + (s - begin)); });
}

}  // namespace

void nf4_dequantize_out(const Nf4Weight& q, const at::Tensor& out) {
  check_quantized(q, "nf4_dequantize_out");
  if (!out.is_contiguous() || out.numel() != q.numel() ||
      (out.scalar_type() != at::kFloat && out.scalar_type() != at::kBFloat16))
    throw std::invalid_argument("nf4_dequantize_out: expects a contiguous float32 or bfloat16 tensor of " +
                                std::to_string(q.numel()) + " elements, got " + std::to_string(out.numel()) + " " +
                                std::string(c10::toString(out.scalar_type())));
  if (out.scalar_type() == at::kFloat) {
    dequantize_parallel(q, 0, q.numel(), out.data_ptr<float>());
    return;
  }
  c10::BFloat16* o = out.data_ptr<c10::BFloat16>();
  constexpr int64_t kChunk = 1 << 12;  // float32 staging per thread (16 KiB)
  at::parallel_for(0, q.numel(), 1 << 15, [&](int64_t s, int64_t e) {
    float buf[kChunk];
    for (int64_t c = s; c < e; c += kChunk) {
      const int64_t ce = std::min(e, c + kChunk);
      nf4_dequantize_range(q, c, ce, buf);
      for (int64_t i = c; i < ce; ++i) o[i] = c10::BFloat16(buf[i - c]);
    }
  });
}

at::Tensor nf4_dequantize(const Nf4Weight& q, at::ScalarType dtype) {
  if (dtype != at::kFloat && dtype != at::kBFloat16)
    throw std::invalid_argument("nf4_dequantize: dtype must be float32 or bfloat16, got " + std::string(c10::toString(dtype)));
  if (!q.packed.is_cpu()) return nf4_dequantize_aten(q, dtype);
  at::Tensor out = at::empty({q.rows, q.cols}, dtype);
  nf4_dequantize_out(q, out);
  return out;
}

int64_t nf4_tile_rows(int64_t rows, int64_t cols) {
  return std::max<int64_t>(1, std::min(rows, kNf4TileFloats / std::max<int64_t>(1, cols)));
}

namespace {

at::Tensor as_float_matrix(const at::Tensor& x, int64_t inner, const char* who) {
  if (x.dim() < 1 || x.size(-1) != inner || (x.scalar_type() != at::kFloat && x.scalar_type() != at::kBFloat16))
    throw std::invalid_argument(std::string(who) + ": expects a float32 or bfloat16 [..., " + std::to_string(inner) +
                                "] input, got last dimension " + (x.dim() ? std::to_string(x.size(-1)) : "none") +
                                " and dtype " + std::string(c10::toString(x.scalar_type())));
  return x.reshape({-1, inner}).to(at::kFloat).contiguous();
}

at::Tensor shaped_like(const at::Tensor& out2d, const at::Tensor& x, int64_t last) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = last;
  return out2d.view(shape).to(x.scalar_type());
}

}  // namespace

namespace {
// Calls f(r0, tile) for consecutive row tiles of W, each dequantised into one reused float32 buffer of at
// most nf4_tile_rows rows: the only full-precision memory the fused products use.
template <typename F>
void for_each_tile(const Nf4Weight& w, F f) {
  const int64_t R = nf4_tile_rows(w.rows, w.cols);
  at::Tensor tile = at::empty({R, w.cols}, at::kFloat);
  for (int64_t r0 = 0; r0 < w.rows; r0 += R) {
    at::Tensor t = tile.narrow(0, 0, std::min(R, w.rows - r0));
    dequantize_parallel(w, r0 * w.cols, (r0 + t.size(0)) * w.cols, t.data_ptr<float>());
    f(r0, t);
  }
}
}  // namespace

at::Tensor nf4_linear(const at::Tensor& x, const Nf4Weight& w) {
  if (!w.packed.is_cpu()) return nf4_linear_aten(x, w);
  check_quantized(w, "nf4_linear");
  at::Tensor xf = as_float_matrix(x, w.cols, "nf4_linear");
  at::Tensor out = at::empty({xf.size(0), w.rows}, at::kFloat);
  for_each_tile(w, [&](int64_t r0, const at::Tensor& t) {
    at::Tensor cols_out = out.narrow(1, r0, t.size(0));  // a strided column slice: BLAS writes it in place
    at::mm_out(cols_out, xf, t.t());
  });
  return shaped_like(out, x, w.rows);
}

at::Tensor nf4_linear_input_grad(const at::Tensor& g, const Nf4Weight& w) {
  if (!w.packed.is_cpu()) return nf4_linear_input_grad_aten(g, w);
  check_quantized(w, "nf4_linear_input_grad");
  at::Tensor gf = as_float_matrix(g, w.rows, "nf4_linear_input_grad");
  at::Tensor out = at::zeros({gf.size(0), w.cols}, at::kFloat);
  // g W = sum over row tiles of g[:, tile] W[tile, :]
  for_each_tile(w, [&](int64_t r0, const at::Tensor& t) { out.addmm_(gf.narrow(1, r0, t.size(0)), t); });
  return shaped_like(out, g, w.cols);
}

// ---------------------------------------------------------------------------------------------------------
// The device path: ATen ops on the weight's device (nf4.h).

namespace {

at::Tensor float_table(const float* values, int64_t n, c10::Device device) {
  return at::tensor(at::ArrayRef<float>(values, size_t(n)), at::kFloat).to(device);
}

// Each block's dequantised absmax, float32 [nblocks] on the weight's device.
at::Tensor absmax_aten(const Nf4Weight& q) {
  const int64_t nb = q.nblocks();
  if (nb == 0) return at::empty({0}, q.absmax_scale.options());
  at::Tensor scale = q.absmax_scale.to(at::kDouble).repeat_interleave(kNf4AbsmaxBlock).narrow(0, 0, nb);
  return (q.absmax_q.to(at::kDouble) * scale + double(q.absmax_mean)).to(at::kFloat);
}

void check_device_input(const at::Tensor& x, int64_t inner, const Nf4Weight& w, const char* who) {
  if (x.dim() < 1 || x.size(-1) != inner || (x.scalar_type() != at::kFloat && x.scalar_type() != at::kBFloat16))
    throw std::invalid_argument(std::string(who) + ": expects a float32 or bfloat16 [..., " + std::to_string(inner) +
                                "] input, got last dimension " + (x.dim() ? std::to_string(x.size(-1)) : "none") +
                                " and dtype " + std::string(c10::toString(x.scalar_type())));
  if (x.device() != w.packed.device())
    throw std::invalid_argument(std::string(who) + ": input on " + x.device().str() + ", NF4 weight on " +
                                w.packed.device().str());
}

}  // namespace

Nf4Weight nf4_quantize_aten(const at::Tensor& w_in) {
  at::Tensor w = checked_weight(w_in, "nf4_quantize").to(at::kFloat).reshape({-1});
  Nf4Weight q;
  q.rows = w_in.size(0);
  q.cols = w_in.size(1);
  const int64_t n = q.numel(), nb = q.nblocks();
  const c10::Device device = w.device();
  at::Tensor blocks = at::constant_pad_nd(w, {0, nb * kNf4Block - n}).view({nb, kNf4Block});  // zeros pad the last
  at::Tensor bad = at::isfinite(blocks).logical_not().any(1);
  if (nb > 0 && bad.any().item<bool>()) throw_non_finite("nf4_quantize", bad.nonzero()[0][0].item<int64_t>());
  at::Tensor absmax = nb ? blocks.abs().amax(1) : at::zeros({0}, w.options());
  at::Tensor den = at::where(absmax > 0, absmax, at::ones_like(absmax));  // a zero block: 0 / 1 -> code 7
  // code = #{k : x > m_k}: bucketize's index with right = false counts the boundaries strictly below x.
  at::Tensor codes = at::bucketize(blocks / den.unsqueeze(1), float_table(kNf4Midpoints, 15, device),
                                   /*out_int32=*/true, /*right=*/false)
                         .to(at::kByte)
                         .reshape({-1})
                         .narrow(0, 0, n);
  if (n % 2) codes = at::constant_pad_nd(codes, {0, 1});  // an odd numel leaves the last low nibble 0
  at::Tensor pairs = codes.view({-1, 2});
  q.packed = pairs.select(1, 0).bitwise_left_shift(4).bitwise_or(pairs.select(1, 1)).contiguous();
  nf4_double_quantize(absmax.to(at::kCPU), q);  // nblocks values: the CPU's exact definition
  q.absmax_q = q.absmax_q.to(device);
  q.absmax_scale = q.absmax_scale.to(device);
  return q;
}

at::Tensor nf4_dequantize_aten(const Nf4Weight& q, at::ScalarType dtype) {
  check_quantized(q, "nf4_dequantize");
  if (dtype != at::kFloat && dtype != at::kBFloat16)
    throw std::invalid_argument("nf4_dequantize: dtype must be float32 or bfloat16, got " + std::string(c10::toString(dtype)));
  const c10::Device device = q.packed.device();
  const int64_t n = q.numel(), nb = q.nblocks();
  if (n == 0) return at::empty({q.rows, q.cols}, at::TensorOptions().dtype(dtype).device(device));
  static const std::vector<float> pair_values = [] {  // byte -> (high code's value, low code's value)
    std::vector<float> t(512);
    for (int b = 0; b < 256; ++b) {
      t[size_t(2 * b)] = kNf4Codes[b >> 4];
      t[size_t(2 * b + 1)] = kNf4Codes[b & 15];
    }
    return t;
  }();
  at::Tensor table = float_table(pair_values.data(), 512, device).view({256, 2});
  at::Tensor values = table.index_select(0, q.packed.to(at::kInt)).reshape({-1});  // [2 * bytes]
  values = at::constant_pad_nd(values.narrow(0, 0, n), {0, nb * kNf4Block - n}).view({nb, kNf4Block});
  return (values * absmax_aten(q).unsqueeze(1)).reshape({-1}).narrow(0, 0, n).view({q.rows, q.cols}).to(dtype);
}

at::Tensor nf4_linear_aten(const at::Tensor& x, const Nf4Weight& w) {
  check_quantized(w, "nf4_linear");
  check_device_input(x, w.cols, w, "nf4_linear");
  return at::linear(x, nf4_dequantize_aten(w, x.scalar_type()));
}

at::Tensor nf4_linear_input_grad_aten(const at::Tensor& g, const Nf4Weight& w) {
  check_quantized(w, "nf4_linear_input_grad");
  check_device_input(g, w.rows, w, "nf4_linear_input_grad");
  return at::matmul(g, nf4_dequantize_aten(w, g.scalar_type()));
}

Nf4Weight nf4_to(const Nf4Weight& q, c10::Device device) {
  Nf4Weight out = q;
  out.packed = q.packed.to(device);
  out.absmax_q = q.absmax_q.to(device);
  out.absmax_scale = q.absmax_scale.to(device);
  return out;
}

}  // namespace layerprune::kernels
