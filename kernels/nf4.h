// NF4 blockwise quantisation of a weight matrix, as QLoRA stores its frozen base model (Dettmers et al. 2023,
// bitsandbytes' quantize_4bit(quant_type="nf4", compress_statistics=True)).
//
// Format, over the row-major flattening of a [rows, cols] weight (numel = rows x cols):
// - blocks of kNf4Block = 64 weights (the last one partial when numel % 64 != 0); per block its absmax
//   a = max |w| in float32, and each weight w -> the index of the nearest of the 16 kNf4Codes to w / a.
//   Nearest is decided against the 15 midpoints m_k = (c_k + c_{k+1}) / 2 (float32): code = #{k : x > m_k},
//   so a value exactly at a midpoint takes the LOWER code (bitsandbytes' dQuantizeNF4 rule, `x > m`).
//   A zero block (a = 0) gets code 7 (0.0) for every weight: no division by zero. Codes are assigned with
//   the exact float32 absmax, as bitsandbytes does; only the stored absmax is double-quantised.
// - two codes per byte: element 2i in the high nibble, 2i+1 in the low one (bitsandbytes' order); an odd
//   numel leaves the last low nibble 0.
// - double quantisation of the absmax values: mean = their mean (float64 sum in block order, stored as
//   float32), then per group of kNf4AbsmaxBlock = 256 blocks (the last one partial) a symmetric linear int8
//   code: scale = max |a - mean| / 127, q = round-half-even((a - mean) / scale) in [-127, 127] (q = 0 when
//   scale = 0). Dequantised absmax = fma(q, scale, mean), and a weight = code value x dequantised absmax.
//   bitsandbytes instead quantises (a - mean) with its dynamic 8-bit code map (create_dynamic_map), which
//   keeps more relative precision when one block is an outlier; the linear code here has absolute error
//   <= scale / 2 per absmax. So: packing, code table and code assignment are bitsandbytes-identical; the
//   absmax bytes and hence the reconstructed values are not.
// - storage: numel / 2 bytes + 1 byte per block + 4 bytes per 256 blocks + 4 (mean)
//   = 4 + 8/64 + 32/(64 x 256) = 4.127 bits per weight for a large tensor.
//
// The fast paths are parallel over blocks (at::parallel_for); dequantisation expands each byte through a
// 256-entry table of code pairs. nf4_linear / nf4_linear_input_grad never materialise the whole float
// weight: they dequantise tiles of nf4_tile_rows(...) rows into one float32 buffer and multiply each tile
// with BLAS. Peak extra memory: that one tile (<= kNf4TileFloats floats = 4 MiB, or one row if a row is
// longer), plus a float32 copy of a bfloat16 input.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

#include "kernels/nf4_format.h"

namespace layerprune::kernels {

constexpr int64_t kNf4TileFloats = 1 << 20;  // target size of one dequantised tile of W (4 MiB of float32)

// A quantised [rows, cols] weight; blocks of 64 over the row-major flattening.
struct Nf4Weight {
  int64_t rows = 0, cols = 0;
  at::Tensor packed;        // uint8 [ceil(numel / 2)]: element 2i in the high nibble, 2i+1 in the low
  at::Tensor absmax_q;      // int8 [nblocks]: double-quantised absmax, symmetric linear code in [-127, 127]
  at::Tensor absmax_scale;  // float32 [ceil(nblocks / 256)]
  float absmax_mean = 0;    // subtracted before the 8-bit quantisation

  int64_t numel() const { return rows * cols; }
  int64_t nblocks() const { return (numel() + kNf4Block - 1) / kNf4Block; }
  // Bytes of packed + absmax_q + absmax_scale + the mean.
  int64_t storage_bytes() const;
  double bits_per_weight() const;  // 8 x storage_bytes / numel
};

// The NF4 code of x = w / absmax (see the tie rule above). Plain, for references and tests.
int nf4_code_reference(float x);

// Plain scalar loops: the definition. w: float32 or bfloat16 [rows, cols].
Nf4Weight nf4_quantize_reference(const at::Tensor& w);
at::Tensor nf4_dequantize_reference(const Nf4Weight& q, at::ScalarType dtype = at::kFloat);
// The definition of the fused products: dequantise all of W, then LibTorch's matmul (in float32).
at::Tensor nf4_linear_reference(const at::Tensor& x, const Nf4Weight& w);
at::Tensor nf4_linear_input_grad_reference(const at::Tensor& g, const Nf4Weight& w);

// Fast: vectorised, parallel over blocks. Same bytes as the references (tested).
Nf4Weight nf4_quantize(const at::Tensor& w);
at::Tensor nf4_dequantize(const Nf4Weight& q, at::ScalarType dtype = at::kFloat);
// Into an existing contiguous float32 or bfloat16 tensor of rows x cols elements (no allocation).
void nf4_dequantize_out(const Nf4Weight& q, const at::Tensor& out);
// Dequantises elements [begin, end) of the flattened weight into out (float32, end - begin values).
void nf4_dequantize_range(const Nf4Weight& q, int64_t begin, int64_t end, float* out);

// The double quantisation alone (shared by the CPU paths and the CUDA quantiser, which returns float32
// absmax): fills q.absmax_q, q.absmax_scale and q.absmax_mean from absmax (float32 [nblocks]).
void nf4_double_quantize(const at::Tensor& absmax, Nf4Weight& q);
// Dequantised absmax of every block, float32 [nblocks]: fma(q, scale, mean).
at::Tensor nf4_absmax(const Nf4Weight& q);

// Rows of W dequantised at a time by the fused products: max(1, min(rows, kNf4TileFloats / cols)).
int64_t nf4_tile_rows(int64_t rows, int64_t cols);
// x [..., cols] -> x W^T [..., rows], in x's dtype (float32 or bfloat16; computed in float32).
at::Tensor nf4_linear(const at::Tensor& x, const Nf4Weight& w);
// g [..., rows] -> g W [..., cols]: the input gradient of nf4_linear (W frozen, as in QLoRA).
at::Tensor nf4_linear_input_grad(const at::Tensor& g, const Nf4Weight& w);

// The device path (a GPU): the same format in ATen ops on the weight's device, so NF4 weights live there
// and every product is a dequantise + a dense GEMM (cuBLAS). nf4_quantize, nf4_dequantize, nf4_absmax,
// nf4_linear and nf4_linear_input_grad take it by themselves when the tensors are not on the CPU; these
// entry points also run on CPU tensors, so tests check the device path against the kernels above.
// - quantise: absmax and codes on the device (IEEE division and the same `x > m_k` count, via bucketize:
//   the CPU's bytes); the double quantisation on the host from the nblocks absmax values (nf4_double_quantize:
//   its float64 mean in block order), its two small tensors then moved to the device.
// - dequantise: a 256-entry table of code pairs indexed by the packed bytes, times each block's absmax
//   computed as float64 q * scale + mean rounded to float32 (the CPU's fma, but for a double rounding that
//   can differ by one ulp of the absmax, about once in 2^29 blocks).
// - products: W dequantised to x's dtype (bfloat16 on a GPU: cuBLAS's bf16 GEMM with float32
//   accumulation), then at::linear / at::matmul; the dequantised W lives only during the product.
Nf4Weight nf4_quantize_aten(const at::Tensor& w);
at::Tensor nf4_dequantize_aten(const Nf4Weight& q, at::ScalarType dtype = at::kFloat);
at::Tensor nf4_linear_aten(const at::Tensor& x, const Nf4Weight& w);
at::Tensor nf4_linear_input_grad_aten(const at::Tensor& g, const Nf4Weight& w);
// The Nf4Weight's tensors on `device` (quantised elsewhere, or for a test of the device path).
Nf4Weight nf4_to(const Nf4Weight& q, c10::Device device);

}  // namespace layerprune::kernels
