// Every kernel against its plain reference over many shapes, odd sizes included (the llama.cpp
// test-backend-ops idea). CUDA variants run only where a GPU is present and skip with a message elsewhere.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/causal_softmax.h"
#include "kernels/rms_norm.h"
#include "kernels/rope.h"
#include "kernels/swiglu.h"
#ifdef LAYERPRUNE_HAVE_CUDA
#include <cuda_runtime.h>

#include "kernels/cuda/device.h"
#endif

namespace layerprune {
namespace {

struct Shape {
  int64_t N, rep, T, start;
};

const std::vector<Shape> kShapes = {{1, 1, 1, 0},   {1, 1, 7, 0},  {3, 2, 5, 0},  {2, 4, 13, 3},
                                    {1, 1, 64, 0},  {5, 3, 33, 0}, {2, 1, 1, 17}, {4, 2, 100, 28}};

TEST(CausalSoftmax, CpuEqualsReference) {
  for (const Shape& s : kShapes) {
    const int64_t R = s.rep * s.T, S = s.start + s.T;
    at::Tensor x = at::randn({s.N, R, S}) * 4;
    at::Tensor want = x.clone();
    const float scale = 1.f / std::sqrt(8.f);
    kernels::causal_softmax_reference(want.data_ptr<float>(), s.N, R, S, s.T, s.start, scale);
    at::Tensor got = x.clone();
    kernels::causal_softmax(got, s.T, s.start, scale);
    EXPECT_LT((got - want).abs().max().item<float>(), 1e-6) << "N " << s.N << " R " << R << " S " << S;
    // Rows sum to one and masked keys are exactly zero.
    EXPECT_LT((got.sum(-1) - 1).abs().max().item<float>(), 1e-5);
    for (int64_t r = 0; r < R; ++r) {
      int64_t valid = s.start + r % s.T + 1;
      if (valid < S) {
        EXPECT_EQ(got.select(1, r).narrow(-1, valid, S - valid).abs().max().item<float>(), 0.f);
      }
    }
  }
}

TEST(CausalSoftmax, ReferenceMatchesMaskedSoftmaxDefinition) {
  const int64_t T = 6, S = 6;
  at::Tensor x = at::randn({1, T, S});
  at::Tensor want = (x * 0.5).masked_fill(at::ones({T, S}, at::kBool).triu(1), -INFINITY).softmax(-1);
  at::Tensor got = x.clone();
  kernels::causal_softmax_reference(got.data_ptr<float>(), 1, T, S, T, 0, 0.5f);
  EXPECT_TRUE(at::allclose(got, want, 1e-6, 1e-7));
}

TEST(CausalSoftmax, RejectsWrongLayout) {
  EXPECT_THROW(kernels::causal_softmax(at::randn({2, 3}), 3, 0, 1.f), std::invalid_argument);
  EXPECT_THROW(kernels::causal_softmax(at::randn({1, 3, 3}).to(at::kDouble), 3, 0, 1.f), std::invalid_argument);
}

TEST(CausalSoftmax, CudaEqualsReference) {
#ifndef LAYERPRUNE_HAVE_CUDA
  GTEST_SKIP() << "built without CUDA (no toolkit found at configure time): CUDA kernels not compiled";
#else
  if (kernels::cuda::device_count() == 0) GTEST_SKIP() << "CUDA kernels compiled, but this machine has no GPU";
  for (const Shape& s : kShapes) {
    const int64_t R = s.rep * s.T, S = s.start + s.T;
    at::Tensor x = at::randn({s.N, R, S}) * 4;
    at::Tensor want = x.clone();
    kernels::causal_softmax_reference(want.data_ptr<float>(), s.N, R, S, s.T, s.start, 0.25f);
    float* d = nullptr;
    size_t bytes = size_t(x.numel()) * 4;
    ASSERT_EQ(cudaMalloc(&d, bytes), cudaSuccess);
    cudaMemcpy(d, x.data_ptr<float>(), bytes, cudaMemcpyHostToDevice);
    kernels::cuda::causal_softmax(d, s.N, R, S, s.T, s.start, 0.25f);
    at::Tensor got = at::empty_like(x);
    cudaMemcpy(got.data_ptr<float>(), d, bytes, cudaMemcpyDeviceToHost);
    cudaFree(d);
    EXPECT_LT((got - want).abs().max().item<float>(), 1e-5);
  }
#endif
}

TEST(Rope, FusedEqualsReference) {
  struct RopeShape {
    int64_t B, T, heads, hd, start;
  };
  for (const RopeShape& s : {RopeShape{1, 1, 1, 2, 0}, RopeShape{2, 7, 3, 8, 0}, RopeShape{3, 5, 4, 6, 11},
                             RopeShape{1, 33, 12, 64, 90}, RopeShape{2, 1, 2, 16, 127}}) {
    const int64_t max_pos = 128;
    at::Tensor ang = at::outer(at::arange(max_pos, at::kFloat), at::rand({s.hd / 2}));
    at::Tensor cos = ang.cos().contiguous(), sin = ang.sin().contiguous();
    at::Tensor x = at::randn({s.B, s.T, s.heads * s.hd});
    at::Tensor want = kernels::rope_reference(x, s.heads, s.start, cos, sin);
    EXPECT_LT((kernels::rope(x, s.heads, s.start, cos, sin) - want).abs().max().item<float>(), 1e-6);
    at::Tensor xb = x.to(at::kBFloat16);
    at::Tensor got_b = kernels::rope(xb, s.heads, s.start, cos, sin);
    EXPECT_EQ(got_b.scalar_type(), at::kBFloat16);
    EXPECT_LT((got_b.to(at::kFloat) - kernels::rope_reference(xb, s.heads, s.start, cos, sin).to(at::kFloat)).abs().max().item<float>(), 0.02);
  }
  at::Tensor cos = at::ones({4, 2}), sin = at::zeros({4, 2});
  EXPECT_THROW(kernels::rope(at::randn({1, 5, 4}), 1, 0, cos, sin), std::invalid_argument) << "5 positions > table";
  EXPECT_THROW(kernels::rope(at::randn({1, 2, 6}), 1, 0, cos, sin), std::invalid_argument) << "head_dim 6 != 2 x 2";
}

TEST(RmsNorm, FusedEqualsReference) {
  for (auto shape : std::vector<std::vector<int64_t>>{{1}, {3, 7}, {2, 5, 64}, {4, 33, 100}, {1, 1, 768}}) {
    at::Tensor x = at::randn(shape) * 3, w = at::randn({shape.back()});
    at::Tensor want = kernels::rms_norm_reference(x, w, 1e-5);
    EXPECT_LT((kernels::rms_norm(x, w, 1e-5) - want).abs().max().item<float>(), 1e-5);
    at::Tensor xb = x.to(at::kBFloat16), wb = w.to(at::kBFloat16);
    EXPECT_TRUE(at::equal(kernels::rms_norm(xb, wb, 1e-5), kernels::rms_norm_reference(xb, wb, 1e-5)));
  }
  at::Tensor zeros = at::zeros({2, 8});
  EXPECT_EQ(kernels::rms_norm(zeros, at::ones({8}), 1e-6).abs().max().item<float>(), 0.f) << "eps keeps 0/0 away";
  EXPECT_THROW(kernels::rms_norm(at::randn({2, 8}), at::ones({7}), 1e-6), std::invalid_argument);
}

TEST(Swiglu, FusedEqualsReference) {
  for (int64_t n : {1, 7, 64, 1000, 40000}) {
    at::Tensor g = at::randn({n}) * 6, u = at::randn({n});  // gates far into both tails of silu
    at::Tensor want = kernels::swiglu_reference(g, u);
    at::Tensor got = g.clone();
    kernels::swiglu_(got, u);
    EXPECT_LT(((got - want).abs() / (want.abs() + 1e-3)).max().item<float>(), 1e-5) << n;
    at::Tensor gb = g.to(at::kBFloat16), ub = u.to(at::kBFloat16);
    at::Tensor want_b = kernels::swiglu_reference(gb.to(at::kFloat), ub.to(at::kFloat));
    kernels::swiglu_(gb, ub);
    EXPECT_EQ(gb.scalar_type(), at::kBFloat16);
    EXPECT_LT(((gb.to(at::kFloat) - want_b).abs() / (want_b.abs() + 1e-3)).max().item<float>(), 1e-2) << n;  // bf16 rounding
  }
  at::Tensor extreme = at::tensor({-200.f, -88.f, 0.f, 88.f, 200.f}), ones = at::ones({5});
  kernels::swiglu_(extreme, ones);
  EXPECT_TRUE(at::allclose(extreme, at::tensor({0.f, 0.f, 0.f, 88.f, 200.f}), 1e-5, 1e-6)) << extreme;
  at::Tensor a = at::randn({4}), b = at::randn({5});
  EXPECT_THROW(kernels::swiglu_(a, b), std::invalid_argument);
}

TEST(Nccl, LibraryIsLinkedWhereCudaIs) {
#ifndef LAYERPRUNE_HAVE_NCCL
  GTEST_SKIP() << "built without NCCL (no CUDA toolkit with NCCL at configure time)";
#else
  std::string v = kernels::cuda::nccl_version();  // ncclGetVersion needs no GPU
  EXPECT_EQ(v.rfind("NCCL 2.", 0), 0u) << v;
  std::printf("%s, %d GPU(s) visible\n", v.c_str(), kernels::cuda::device_count());
#endif
}

}  // namespace
}  // namespace layerprune
