// NF4 quantisation (kernels/nf4.h): the fast CPU paths against the plain references over many shapes, odd
// ones included; the code assignment rule on edge inputs; the error bounds; the storage formula; the CUDA
// kernels against the CPU reference where a GPU is present (skipped with a message elsewhere).
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/nf4.h"
#ifdef LAYERPRUNE_HAVE_CUDA
#include <cuda_runtime.h>

#include "kernels/cuda/device.h"
#endif

namespace layerprune {
namespace {

using kernels::Nf4Weight;

at::Tensor gaussian(std::vector<int64_t> shape, uint64_t seed, double stddev = 1.0) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::normal(0.0, stddev, shape, gen, at::TensorOptions(at::kFloat));
}

void expect_same_bytes(const Nf4Weight& got, const Nf4Weight& want, const std::string& what) {
  EXPECT_EQ(got.rows, want.rows) << what;
  EXPECT_EQ(got.cols, want.cols) << what;
  EXPECT_TRUE(at::equal(got.packed, want.packed)) << what << ": packed codes differ";
  EXPECT_TRUE(at::equal(got.absmax_q, want.absmax_q)) << what << ": absmax bytes differ";
  EXPECT_TRUE(at::equal(got.absmax_scale, want.absmax_scale)) << what << ": absmax scales differ";
  EXPECT_EQ(got.absmax_mean, want.absmax_mean) << what;
}

// Shapes around every boundary: 1 element, numel % 64 != 0, odd numel (a half-used last byte), exactly one
// 256-block group of absmax, nblocks % 256 != 0, and a few thousand blocks.
const std::vector<std::vector<int64_t>> kShapes = {{1, 1},   {1, 63},    {1, 64},   {1, 65},   {3, 7},
                                                   {7, 129}, {64, 64},   {128, 128}, {256, 64}, {257, 64},
                                                   {300, 100}, {513, 65}, {1000, 333}, {96, 2048}};

TEST(Nf4, CodeRuleIsNearestWithTiesToTheLowerCode) {
  for (int k = 0; k < 15; ++k) {
    EXPECT_LT(kernels::kNf4Codes[k], kernels::kNf4Midpoints[k]);
    EXPECT_LT(kernels::kNf4Midpoints[k], kernels::kNf4Codes[k + 1]);
    EXPECT_EQ(kernels::nf4_code_reference(kernels::kNf4Midpoints[k]), k) << "a midpoint takes the lower code";
    EXPECT_EQ(kernels::nf4_code_reference(std::nextafter(kernels::kNf4Midpoints[k], 2.f)), k + 1);
  }
  for (int k = 0; k < 16; ++k) EXPECT_EQ(kernels::nf4_code_reference(kernels::kNf4Codes[k]), k);
  EXPECT_EQ(kernels::nf4_code_reference(-0.f), 7);
  // Away from the midpoints the rule is plain nearest-value.
  at::Tensor xs = at::rand({20000}) * 2 - 1;
  for (int64_t i = 0; i < xs.numel(); ++i) {
    const float x = xs.data_ptr<float>()[i];
    const double d = std::fabs(double(x) - kernels::kNf4Codes[kernels::nf4_code_reference(x)]);
    for (int j = 0; j < 16; ++j) ASSERT_LE(d, std::fabs(double(x) - kernels::kNf4Codes[j]) + 1e-7) << x;
  }
}

TEST(Nf4, QuantizeAndDequantizeEqualReference) {
  uint64_t seed = 1;
  for (const auto& shape : kShapes)
    for (double stddev : {1.0, 0.02, 1e-30}) {
      const std::string what = "shape [" + std::to_string(shape[0]) + ", " + std::to_string(shape[1]) +
                               "] sd " + std::to_string(stddev);
      at::Tensor w = gaussian(shape, seed++, stddev);
      Nf4Weight want = kernels::nf4_quantize_reference(w);
      Nf4Weight got = kernels::nf4_quantize(w);
      expect_same_bytes(got, want, what);
      at::Tensor deq = kernels::nf4_dequantize(got);
      EXPECT_TRUE(at::equal(deq, kernels::nf4_dequantize_reference(want))) << what;
      EXPECT_TRUE(at::equal(kernels::nf4_dequantize(got, at::kBFloat16),
                            kernels::nf4_dequantize_reference(want, at::kBFloat16))) << what;
      // Any sub-range (odd starts and ends, crossing blocks) gives the same values as the whole.
      const int64_t n = w.numel(), b = n / 3, e = std::max(b, n - n / 5 - 1);
      std::vector<float> part(size_t(e - b));
      kernels::nf4_dequantize_range(got, b, e, part.data());
      EXPECT_TRUE(at::equal(at::from_blob(part.data(), {e - b}), deq.flatten().slice(0, b, e))) << what;
      // bfloat16 weights quantise as their float32 values.
      at::Tensor wb = w.to(at::kBFloat16);
      expect_same_bytes(kernels::nf4_quantize(wb), kernels::nf4_quantize_reference(wb.to(at::kFloat)), what + " bf16");
    }
}

TEST(Nf4, EdgeInputs) {
  // Block 0: absmax exactly 1, then every midpoint (and its negative-side twin) exactly: x = w / 1 = m_k.
  std::vector<float> v = {1.f};
  for (int k = 0; k < 15; ++k) v.push_back(kernels::kNf4Midpoints[k]);
  for (int k = 0; k < 15; ++k) v.push_back(std::nextafter(kernels::kNf4Midpoints[k], 2.f));
  while (v.size() < 64) v.push_back(0.f);
  // Block 1: all zeros. Block 2: huge values. Block 3: tiny (subnormal) values. Block 4: mixed signs of one
  // magnitude. Then a partial block of 37, so numel = 293 (odd: the last byte is half used).
  for (int i = 0; i < 64; ++i) v.push_back(0.f);
  for (int i = 0; i < 64; ++i) v.push_back((i % 2 ? -1.f : 1.f) * 3e38f * (float(i + 1) / 64.f));
  for (int i = 0; i < 64; ++i) v.push_back(float(i - 30) * 1e-44f);
  for (int i = 0; i < 64; ++i) v.push_back(i % 3 ? -2.5f : 2.5f);
  for (int i = 0; i < 37; ++i) v.push_back(float(i) - 18.f);
  at::Tensor w = at::from_blob(v.data(), {1, int64_t(v.size())}).clone();
  Nf4Weight want = kernels::nf4_quantize_reference(w), got = kernels::nf4_quantize(w);
  expect_same_bytes(got, want, "edge inputs");
  const uint8_t* p = got.packed.data_ptr<uint8_t>();
  auto code = [&](int64_t i) { return i % 2 ? p[i / 2] & 15 : p[i / 2] >> 4; };
  EXPECT_EQ(code(0), 15);
  for (int k = 0; k < 15; ++k) {
    EXPECT_EQ(code(1 + k), k) << "exactly at midpoint " << k;
    EXPECT_EQ(code(16 + k), k + 1) << "just above midpoint " << k;
  }
  for (int64_t i = 64; i < 128; ++i) EXPECT_EQ(code(i), 7) << "zero block -> code 7 (0.0)";
  EXPECT_EQ(p[got.packed.numel() - 1] & 15, 0) << "unused low nibble of an odd numel";
  at::Tensor deq = kernels::nf4_dequantize(got);
  EXPECT_TRUE(at::equal(deq, kernels::nf4_dequantize_reference(want)));
  EXPECT_EQ(deq.narrow(1, 64, 64).abs().max().item<float>(), 0.f) << "a zero block reconstructs exactly";
  EXPECT_TRUE(at::isfinite(deq).all().item<bool>());
  // An all-zero weight: absmax 0 everywhere, scale 0, q 0 (no 0 / 0 anywhere).
  Nf4Weight zero = kernels::nf4_quantize(at::zeros({5, 77}));
  expect_same_bytes(zero, kernels::nf4_quantize_reference(at::zeros({5, 77})), "zeros");
  EXPECT_EQ(kernels::nf4_dequantize(zero).abs().max().item<float>(), 0.f);
  // Empty.
  Nf4Weight empty = kernels::nf4_quantize(at::zeros({0, 5}));
  EXPECT_EQ(kernels::nf4_dequantize(empty).numel(), 0);
}

TEST(Nf4, RejectsBadInput) {
  for (float bad : {INFINITY, -INFINITY, NAN}) {
    at::Tensor w = at::randn({3, 100});
    w.data_ptr<float>()[150] = bad;
    EXPECT_THROW(kernels::nf4_quantize(w), std::invalid_argument) << bad;
    EXPECT_THROW(kernels::nf4_quantize_reference(w), std::invalid_argument) << bad;
    try {
      kernels::nf4_quantize(w);
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("block 2"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(kernels::nf4_quantize(at::randn({8})), std::invalid_argument);
  EXPECT_THROW(kernels::nf4_quantize(at::randn({2, 8}).to(at::kDouble)), std::invalid_argument);
  Nf4Weight q = kernels::nf4_quantize(at::randn({4, 64}));
  EXPECT_THROW(kernels::nf4_linear(at::randn({2, 63}), q), std::invalid_argument);
  EXPECT_THROW(kernels::nf4_linear_input_grad(at::randn({2, 64}), q), std::invalid_argument);
  q.absmax_q = q.absmax_q.narrow(0, 0, 2);
  EXPECT_THROW(kernels::nf4_dequantize(q), std::invalid_argument);
}

// Per block, |dequantised absmax - absmax| <= scale / 2 (round to nearest; the fma adds < 1 ulp).
TEST(Nf4, DoubleQuantisedAbsmaxWithinHalfAStep) {
  for (const auto& shape : kShapes) {
    at::Tensor w = gaussian(shape, 7) * at::rand({shape[0], 1}) * 10;  // rows of different scales
    Nf4Weight q = kernels::nf4_quantize(w);
    const int64_t n = w.numel(), nb = q.nblocks();
    at::Tensor padded = at::zeros({nb * kernels::kNf4Block});
    padded.narrow(0, 0, n).copy_(w.flatten());
    at::Tensor exact = padded.view({nb, kernels::kNf4Block}).abs().amax(1);
    at::Tensor dq = kernels::nf4_absmax(q);
    at::Tensor scale = q.absmax_scale.repeat_interleave(kernels::kNf4AbsmaxBlock).narrow(0, 0, nb);
    at::Tensor err = (dq.to(at::kDouble) - exact.to(at::kDouble)).abs();
    at::Tensor bound = scale.to(at::kDouble) * 0.5 + 1e-6 * (exact.to(at::kDouble) + std::fabs(q.absmax_mean));
    EXPECT_TRUE((err <= bound).all().item<bool>()) << "max excess " << (err - bound).max().item<double>();
    // And the bytes use the whole int8 range in every group with spread: some |q| = 127.
    EXPECT_EQ(q.absmax_q.abs().max().item<int>(), nb > 1 ? 127 : 0);
  }
}

// N(0, 1) weights: the relative RMS reconstruction error ||w - deq(q(w))|| / ||w||.
// Expected value: an independent float64 NumPy simulation of the same definition (absmax per 64, nearest code
// by the midpoints) on 1e7 N(0, 1) weights gives 0.0920 (three draws: 0.09196, 0.09198, 0.09203); over 20
// draws of 2^20 weights, the size used here, its sd is 4e-5. Asserted: 0.0920 +- 0.002 (50 sd; a wrong code
// table or rounding rule moves it by far more, truncation instead of nearest roughly doubles it). The
// double-quantised absmax (error <= scale / 2, about 0.3% of an absmax here) may add at most 0.002 on top.
TEST(Nf4, GaussianReconstructionError) {
  at::Tensor w = gaussian({1024, 1024}, 42);
  Nf4Weight q = kernels::nf4_quantize(w);
  at::Tensor deq = kernels::nf4_dequantize(q);
  const double rel = ((deq - w).norm() / w.norm()).item<double>();
  // The same codes with the exact float32 absmax: the error of the 4-bit codes alone.
  at::Tensor padded = at::zeros({q.nblocks() * kernels::kNf4Block});
  padded.narrow(0, 0, w.numel()).copy_(w.flatten());
  at::Tensor exact_absmax = padded.view({q.nblocks(), kernels::kNf4Block}).abs().amax(1, true);
  at::Tensor codes_only = (deq.flatten().view({q.nblocks(), kernels::kNf4Block}) / kernels::nf4_absmax(q).unsqueeze(1)) * exact_absmax;
  const double rel_codes = ((codes_only.flatten() - w.flatten()).norm() / w.norm()).item<double>();
  std::printf("N(0,1) 1024x1024: relative RMS error %.5f (exact absmax: %.5f); %.4f bits/weight\n", rel, rel_codes,
              q.bits_per_weight());
  EXPECT_NEAR(rel_codes, 0.0920, 0.002);
  EXPECT_NEAR(rel, 0.0920, 0.002);
  EXPECT_LE(rel - rel_codes, 0.002);
}

TEST(Nf4, StorageIsAbout4127BitsPerWeight) {
  for (const auto& shape : kShapes) {
    Nf4Weight q = kernels::nf4_quantize(at::randn(shape));
    const int64_t n = shape[0] * shape[1], nb = (n + 63) / 64, ng = (nb + 255) / 256;
    EXPECT_EQ(q.storage_bytes(), (n + 1) / 2 + nb + 4 * ng + 4);
  }
  Nf4Weight big = kernels::nf4_quantize(at::zeros({4096, 4096}));
  // 4 (code) + 8 / 64 (absmax byte) + 32 / (64 x 256) (scale) = 4.126953125, plus 32 bits of mean per tensor.
  EXPECT_DOUBLE_EQ(big.bits_per_weight(), 4.126953125 + 32.0 / (4096.0 * 4096.0));
  std::printf("4096 x 4096: %lld bytes = %.6f bits/weight (4 + 8/64 + 32/(64*256) = 4.126953)\n",
              (long long)big.storage_bytes(), big.bits_per_weight());
}

// nf4_linear and its input gradient against dequantise-all + at::matmul. Shapes cover one token, batch dims,
// cols not a multiple of 64, several tiles with a partial last one starting at an odd element
// (4000 x 331: tiles of 3167 rows), and rows longer than a tile (one row per tile).
TEST(Nf4, FusedLinearEqualsReference) {
  struct Case {
    int64_t rows, cols;
    std::vector<int64_t> lead;
  };
  for (const Case& c : {Case{1, 1, {1}}, Case{3, 65, {1}}, Case{64, 64, {7}}, Case{100, 333, {2, 3}},
                        Case{1000, 333, {5}}, Case{257, 130, {1, 1}}, Case{4000, 331, {5}}, Case{2, 1048577, {3}}, Case{512, 512, {33}}}) {
    const std::string what = std::to_string(c.rows) + " x " + std::to_string(c.cols);
    Nf4Weight q = kernels::nf4_quantize(gaussian({c.rows, c.cols}, uint64_t(c.rows * 31 + c.cols), 0.05));
    std::vector<int64_t> xs = c.lead, gs = c.lead;
    xs.push_back(c.cols);
    gs.push_back(c.rows);
    at::Tensor x = at::randn(xs), g = at::randn(gs);
    at::Tensor y = kernels::nf4_linear(x, q), y_ref = kernels::nf4_linear_reference(x, q);
    ASSERT_EQ(y.sizes(), y_ref.sizes()) << what;
    const double tol_y = 1e-5 * (1 + y_ref.abs().max().item<double>()) * std::sqrt(double(c.cols));
    EXPECT_LE((y - y_ref).abs().max().item<double>(), tol_y) << what;
    at::Tensor dx = kernels::nf4_linear_input_grad(g, q), dx_ref = kernels::nf4_linear_input_grad_reference(g, q);
    ASSERT_EQ(dx.sizes(), dx_ref.sizes()) << what;
    const double tol_dx = 1e-5 * (1 + dx_ref.abs().max().item<double>()) * std::sqrt(double(c.rows));
    EXPECT_LE((dx - dx_ref).abs().max().item<double>(), tol_dx) << what;
    // bfloat16 in, bfloat16 out (computed in float32): at most one bfloat16 rounding apart.
    at::Tensor yb = kernels::nf4_linear(x.to(at::kBFloat16), q);
    EXPECT_EQ(yb.scalar_type(), at::kBFloat16);
    at::Tensor yb_ref = kernels::nf4_linear_reference(x.to(at::kBFloat16), q).to(at::kFloat);
    EXPECT_LE((yb.to(at::kFloat) - yb_ref).abs().max().item<double>(), 1e-2 * (1 + yb_ref.abs().max().item<double>())) << what;
    at::Tensor dxb = kernels::nf4_linear_input_grad(g.to(at::kBFloat16), q);
    at::Tensor dxb_ref = kernels::nf4_linear_input_grad_reference(g.to(at::kBFloat16), q).to(at::kFloat);
    EXPECT_LE((dxb.to(at::kFloat) - dxb_ref).abs().max().item<double>(), 1e-2 * (1 + dxb_ref.abs().max().item<double>())) << what;
  }
}

// The fused products never hold the whole float weight: one tile of at most 4 MiB (or a single row).
TEST(Nf4, TileBufferIsSmall) {
  for (auto [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{{8192, 8192}, {11008, 4096}, {4096, 11008},
                                                                     {28672, 8192}, {2048, 768}, {7, 5}}) {
    const int64_t tile = kernels::nf4_tile_rows(rows, cols) * cols;
    EXPECT_LE(tile, std::max(kernels::kNf4TileFloats, cols)) << rows << " x " << cols;
    if (rows * cols >= 16 * kernels::kNf4TileFloats) {
      EXPECT_LE(tile * 16, rows * cols) << rows << " x " << cols;
    }
  }
  EXPECT_EQ(kernels::nf4_tile_rows(2, 1048577), 1) << "a row longer than a tile is one tile";
  EXPECT_EQ(kernels::nf4_tile_rows(4000, 331), 3167);
}

// The device path (ATen ops: what a GPU runs; kernels/nf4.h) on CPU tensors, against the CPU kernels: the
// same bytes from quantisation (edge blocks, bf16, odd sizes), the same dequantised values, the products
// within float32 rounding; a non-finite weight is refused naming its block; a weight moved with nf4_to
// keeps its bytes.
TEST(Nf4, DevicePathEqualsTheCpuKernels) {
  uint64_t seed = 300;
  for (const auto& shape : kShapes)
    for (double stddev : {1.0, 1e-30}) {
      const std::string what = std::to_string(shape[0]) + " x " + std::to_string(shape[1]) + " sd " + std::to_string(stddev);
      at::Tensor w = gaussian(shape, seed++, stddev);
      if (shape[1] >= 64) w.narrow(1, 0, 64).zero_();  // an all-zero block (code 7)
      Nf4Weight want = kernels::nf4_quantize(w);
      Nf4Weight got = kernels::nf4_quantize_aten(w);
      expect_same_bytes(got, want, what + " (device quantise)");
      expect_same_bytes(kernels::nf4_quantize_aten(w.to(at::kBFloat16)), kernels::nf4_quantize(w.to(at::kBFloat16)),
                        what + " bf16");
      at::Tensor deq = kernels::nf4_dequantize(want);
      at::Tensor dev = kernels::nf4_dequantize_aten(got);
      // Equal but for the one-ulp double rounding of an absmax the header allows.
      EXPECT_LE((dev - deq).abs().max().item<double>(), 1e-6 * std::max(1e-38, deq.abs().max().item<double>())) << what;
      EXPECT_TRUE(at::allclose(kernels::nf4_dequantize_aten(got, at::kBFloat16).to(at::kFloat),
                               kernels::nf4_dequantize(want, at::kBFloat16).to(at::kFloat), 1e-2, 0)) << what;
      at::Tensor x = at::randn({3, 2, shape[1]}), g = at::randn({5, shape[0]});
      at::Tensor y = kernels::nf4_linear_aten(x, got), y_cpu = kernels::nf4_linear(x, want);
      EXPECT_EQ(y.sizes(), y_cpu.sizes());
      EXPECT_LE((y - y_cpu).abs().max().item<double>(), 1e-4 * std::max(1e-30, y_cpu.abs().max().item<double>())) << what;
      at::Tensor dx = kernels::nf4_linear_input_grad_aten(g, got), dx_cpu = kernels::nf4_linear_input_grad(g, want);
      EXPECT_LE((dx - dx_cpu).abs().max().item<double>(), 1e-4 * std::max(1e-30, dx_cpu.abs().max().item<double>())) << what;
      expect_same_bytes(kernels::nf4_to(got, at::Device(at::kCPU)), want, what + " nf4_to");
    }
  at::Tensor bad = at::zeros({4, 64});
  bad[2][5] = std::numeric_limits<float>::quiet_NaN();
  try {
    kernels::nf4_quantize_aten(bad);
    ADD_FAILURE() << "a NaN weight was quantised";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("block 2"), std::string::npos) << e.what();
  }
  EXPECT_THROW(kernels::nf4_linear_aten(at::zeros({2, 63}), kernels::nf4_quantize_aten(at::zeros({4, 64}))),
               std::invalid_argument);
}

TEST(Nf4, CudaEqualsReference) {
#ifndef LAYERPRUNE_HAVE_CUDA
  GTEST_SKIP() << "built without CUDA (no toolkit found at configure time): CUDA kernels not compiled";
#else
  if (kernels::cuda::device_count() == 0) GTEST_SKIP() << "CUDA NF4 kernels compiled, but this machine has no GPU";
  auto to_device = [](const at::Tensor& t) {
    void* d = nullptr;
    const size_t bytes = size_t(t.numel()) * t.element_size();
    EXPECT_EQ(cudaMalloc(&d, std::max<size_t>(bytes, 4)), cudaSuccess);
    cudaMemcpy(d, t.data_ptr(), bytes, cudaMemcpyHostToDevice);
    return d;
  };
  auto to_host = [](const void* d, at::Tensor t) {
    cudaMemcpy(t.data_ptr(), d, size_t(t.numel()) * t.element_size(), cudaMemcpyDeviceToHost);
    return t;
  };
  uint64_t seed = 100;
  for (const auto& shape : kShapes) {
    const std::string what = std::to_string(shape[0]) + " x " + std::to_string(shape[1]);
    at::Tensor w = gaussian(shape, seed++);
    Nf4Weight want = kernels::nf4_quantize_reference(w);
    // Quantise on the GPU: codes and float32 absmax; the double quantisation on the host.
    void* dw = to_device(w);
    uint8_t* dp = nullptr;
    float* dam = nullptr;
    ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&dp), size_t(want.packed.numel())), cudaSuccess);
    ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&dam), size_t(want.nblocks()) * 4), cudaSuccess);
    kernels::cuda::nf4_quantize(static_cast<float*>(dw), w.numel(), dp, dam);
    Nf4Weight got;
    got.rows = shape[0];
    got.cols = shape[1];
    got.packed = to_host(dp, at::empty({want.packed.numel()}, at::kByte));
    kernels::nf4_double_quantize(to_host(dam, at::empty({want.nblocks()})), got);
    expect_same_bytes(got, want, what + " (CUDA quantise)");
    // Dequantise and the fused products on the GPU.
    kernels::cuda::Nf4DeviceWeight dq;
    dq.packed = dp;
    dq.absmax_q = static_cast<const int8_t*>(to_device(want.absmax_q));
    dq.absmax_scale = static_cast<const float*>(to_device(want.absmax_scale));
    dq.absmax_mean = want.absmax_mean;
    dq.rows = shape[0];
    dq.cols = shape[1];
    float* dout = nullptr;
    ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&dout), size_t(w.numel()) * 4), cudaSuccess);
    kernels::cuda::nf4_dequantize(dq, dout);
    EXPECT_TRUE(at::equal(to_host(dout, at::empty(shape)), kernels::nf4_dequantize_reference(want))) << what;
    const int64_t M = 5;
    at::Tensor x = at::randn({M, shape[1]}), g = at::randn({M, shape[0]});
    void *dx = to_device(x), *dg = to_device(g), *dy = nullptr, *ddx = nullptr;
    ASSERT_EQ(cudaMalloc(&dy, size_t(M * shape[0]) * 4), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&ddx, size_t(M * shape[1]) * 4), cudaSuccess);
    kernels::cuda::nf4_linear(static_cast<float*>(dx), M, dq, static_cast<float*>(dy));
    kernels::cuda::nf4_linear_input_grad(static_cast<float*>(dg), M, dq, static_cast<float*>(ddx));
    at::Tensor y_ref = kernels::nf4_linear_reference(x, want), dx_ref = kernels::nf4_linear_input_grad_reference(g, want);
    EXPECT_LE((to_host(dy, at::empty({M, shape[0]})) - y_ref).abs().max().item<double>(),
              1e-4 * (1 + y_ref.abs().max().item<double>()) * std::sqrt(double(shape[1]))) << what;
    EXPECT_LE((to_host(ddx, at::empty({M, shape[1]})) - dx_ref).abs().max().item<double>(),
              1e-4 * (1 + dx_ref.abs().max().item<double>()) * std::sqrt(double(shape[0]))) << what;
    for (void* d : {dw, static_cast<void*>(dp), static_cast<void*>(dam), const_cast<void*>(static_cast<const void*>(dq.absmax_q)),
                    const_cast<void*>(static_cast<const void*>(dq.absmax_scale)), static_cast<void*>(dout), dx, dg, dy, ddx})
      cudaFree(d);
  }
#endif
}

}  // namespace
}  // namespace layerprune
