// LoRA adapters on a frozen Llama (model/lora.h): the differentiable forward equals the inference model,
// gradients match finite differences, dropout is seeded, and merging the adapters gives the same model.
#include <ATen/core/grad_mode.h>
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "common/error.h"
#include "tests/llama_shapes.h"
#include "tests/model_fixtures.h"
#include "tests/test_support.h"
#include "model/llama.h"
#include "model/lora.h"
#include "kernels/nf4.h"
#include "model/make_model.h"

namespace layerprune {
namespace {

using testing::Stories260K;
using testing::TempDir;

// The two forwards are the same math in a different op order (unfused RMSNorm, RoPE and softmax here, the
// kernels of model/llama.cc there), all float32: over 5 layers and logits around 15 they differ by a few
// ulps (measured 1.03e-5 of 1 + |logit|). 5e-5 allows that and is far below any real difference (a wrong
// RoPE half or a missing norm moves logits by O(1)).
constexpr double kSameModel = 5e-5;

double max_rel(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).abs() / (b.abs() + 1)).max().item<double>();
}

TEST_F(Stories260K, ZeroAdaptersEqualTheInferenceModel) {
  LlamaModel model = LlamaModel::load(model_dir());
  at::Tensor tokens = at::randint(0, 512, {2, 33}, at::kLong);
  for (std::vector<int64_t> kept : std::vector<std::vector<int64_t>>{{}, {0, 1, 4}}) {
    LoraConfig cfg;
    cfg.targets = {"all-linear"};
    LoraLlama lora(model, kept, cfg);
    EXPECT_EQ(lora.adapters().size(), 7 * lora.kept_layers().size());
    ForwardOptions fo;
    fo.layers = kept;
    at::NoGradGuard no_grad;
    EXPECT_LT(max_rel(lora.forward(tokens, /*train=*/false), model.forward(tokens, fo).logits), kSameModel)
        << "B = 0: the adapted model starts as the base (layers " << kept.size() << ")";
  }
}

TEST(Lora, GradientsMatchFiniteDifferences) {
  TempDir d;
  MakeModelOptions mo;
  mo.init_std = 0.3;
  make_random_model(testing::llama_shape(16, 24, 2, 4, 2, 32, 16), d.path(), mo);
  LlamaModel model = LlamaModel::load(d.path());
  LoraConfig cfg;
  cfg.rank = 2;
  cfg.dropout = 0;
  cfg.targets = {"all-linear"};
  LoraLlama lora(model, {}, cfg);
  {
    at::NoGradGuard no_grad;  // B != 0 so that A gets a gradient too
    for (LoraAdapter& a : lora.adapters()) a.b.normal_(0.0, 0.3);
  }
  at::Tensor tokens = at::randint(0, 32, {2, 9}, at::kLong);
  at::Tensor loss = lora.loss(tokens, false);
  loss.backward();
  // Central differences in float32: eps 1e-2 keeps rounding (~1e-7 / eps) far below the truncation error.
  const double eps = 1e-2;
  int checked = 0;
  for (size_t i = 0; i < lora.adapters().size(); i += 3)
    for (at::Tensor p : {lora.adapters()[i].a, lora.adapters()[i].b}) {
      at::Tensor g = p.grad().clone();
      for (int64_t k : {int64_t(0), p.numel() / 2, p.numel() - 1}) {
        at::NoGradGuard no_grad;
        float* v = p.data_ptr<float>() + k;
        const float old = *v;
        *v = old + eps;
        const double up = lora.loss(tokens, false).item<double>();
        *v = old - eps;
        const double down = lora.loss(tokens, false).item<double>();
        *v = old;
        const double fd = (up - down) / (2 * eps), an = g.view(-1)[k].item<double>();
        EXPECT_NEAR(an, fd, 2e-3 + 2e-2 * std::abs(fd)) << lora.adapters()[i].name << " entry " << k;
        ++checked;
      }
    }
  EXPECT_GE(checked, 24);
  // The base stays frozen: no gradient reaches it.
  EXPECT_FALSE(model.weights().layers[0].w_up.requires_grad());
}

TEST(Lora, DropoutIsSeededAndOffInEvaluation) {
  TempDir d;
  make_random_model(testing::llama_shape(16, 24, 2, 4, 2, 32, 16), d.path(), {});
  LlamaModel model = LlamaModel::load(d.path());
  at::Tensor tokens = at::randint(0, 32, {2, 9}, at::kLong);
  LoraConfig cfg;
  cfg.dropout = 0.5;
  cfg.seed = 3;
  auto run = [&](bool train) {
    LoraLlama lora(model, {}, cfg);
    at::NoGradGuard no_grad;
    for (LoraAdapter& a : lora.adapters()) a.b.normal_(0.0, 1.0, lora.generator());
    std::vector<double> out;
    for (int i = 0; i < 2; ++i) out.push_back(lora.loss(tokens, train).item<double>());
    return out;
  };
  std::vector<double> a = run(true), b = run(true), e = run(false);
  EXPECT_EQ(a, b) << "same seed, same masks";
  EXPECT_NE(a[0], a[1]) << "a new mask each step";
  EXPECT_EQ(e[0], e[1]) << "no dropout in evaluation";
  EXPECT_NE(a[0], e[0]);
}

TEST_F(Stories260K, MergedWeightsGiveTheAdaptedModel) {
  LlamaModel model = LlamaModel::load(model_dir());
  LoraConfig cfg;
  cfg.rank = 4;
  LoraLlama lora(model, {0, 2, 4}, cfg);
  at::NoGradGuard no_grad;
  for (LoraAdapter& a : lora.adapters()) a.b.normal_(0.0, 0.05, lora.generator());
  LlamaModel merged = lora.merged_model();
  at::Tensor tokens = at::randint(0, 512, {2, 40}, at::kLong);
  ForwardOptions fo;
  fo.layers = {0, 2, 4};
  at::Tensor want = lora.forward(tokens, false), got = merged.forward(tokens, fo).logits;
  EXPECT_GT((want - model.forward(tokens, fo).logits).abs().max().item<double>(), 1e-3) << "the adapters do something";
  EXPECT_LT(max_rel(got, want), kSameModel);
}

// bf16 compute: the frozen base runs in bfloat16 (weights, activations, products), the adapters and their
// optimizer state stay float32. Loss and gradients track the float32 run to bfloat16 precision (8
// significant bits: relative 1e-2 on the loss, gradient directions within a few degrees), and it trains.
TEST_F(Stories260K, BFloat16ComputeTracksFloat32) {
  LoadOptions bf;
  bf.dtype = "bfloat16";
  LlamaModel m32 = LlamaModel::load(model_dir()), m16 = LlamaModel::load(model_dir(), bf);
  LoraConfig cfg;
  cfg.dropout = 0;
  LoraLlama l32(m32, {0, 1, 4}, cfg), l16(m16, {0, 1, 4}, cfg);
  {
    at::NoGradGuard no_grad;  // the same non-zero B in both, so that A gets a gradient too
    for (size_t i = 0; i < l32.adapters().size(); ++i) {
      l32.adapters()[i].b.normal_(0.0, 0.05, l32.generator());
      l16.adapters()[i].b.copy_(l32.adapters()[i].b);
    }
  }
  at::Tensor tokens = at::randint(1, 512, {4, 64}, at::kLong);
  at::Tensor loss32 = l32.loss(tokens, true), loss16 = l16.loss(tokens, true);
  EXPECT_EQ(m16.weights().layers[0].w_up.scalar_type(), at::kBFloat16);
  EXPECT_EQ(l16.adapters()[0].a.scalar_type(), at::kFloat) << "adapters stay float32";
  EXPECT_LT(std::abs(loss16.item<double>() - loss32.item<double>()) / loss32.item<double>(), 1e-2);
  loss32.backward();
  loss16.backward();
  for (size_t i = 0; i < l32.adapters().size(); ++i)
    for (bool b : {false, true}) {
      const at::Tensor& g32 = b ? l32.adapters()[i].b.grad() : l32.adapters()[i].a.grad();
      const at::Tensor& g16 = b ? l16.adapters()[i].b.grad() : l16.adapters()[i].a.grad();
      ASSERT_EQ(g16.scalar_type(), at::kFloat);
      const double cosine = (g32 * g16).sum().item<double>() / (g32.norm().item<double>() * g16.norm().item<double>());
      EXPECT_GT(cosine, 0.99) << l32.adapters()[i].name << (b ? " B" : " A");
    }
}

// QLoRA: the NF4 base behaves as the dequantised weights would. The reference is a plain LoRA model on a
// LlamaModel built from nf4_dequantize of every projection: same logits, and the same adapter gradients
// (the fused input-gradient kernel against autograd through at::linear).
TEST(Lora, Nf4BaseEqualsLoraOnTheDequantisedWeights) {
  TempDir d;
  MakeModelOptions mo;
  mo.init_std = 0.3;
  make_random_model(testing::llama_shape(64, 96, 2, 4, 2, 48, 32), d.path(), mo);
  LlamaModel model = LlamaModel::load(d.path());
  LlamaWeights dq = model.weights();
  for (LlamaLayerWeights& l : dq.layers)
    for (at::Tensor* w : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down})
      *w = kernels::nf4_dequantize(kernels::nf4_quantize(*w));
  LlamaModel reference(model.config(), dq);
  LoraConfig cfg;
  cfg.rank = 4;
  cfg.dropout = 0;
  cfg.targets = {"all-linear"};
  LoraLlama plain(reference, {}, cfg);
  cfg.base_quant = "nf4";
  LoraLlama q(model, {}, cfg);
  EXPECT_LT(q.base_projection_bytes() * 7, plain.base_projection_bytes()) << "NF4: ~4.13 of 32 bits";
  {
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < q.adapters().size(); ++i) {
      q.adapters()[i].b.normal_(0.0, 0.3, q.generator());
      plain.adapters()[i].b.copy_(q.adapters()[i].b);
      ASSERT_TRUE(at::equal(plain.adapters()[i].a, q.adapters()[i].a)) << "same seed, same A";
    }
  }
  at::Tensor tokens = at::randint(0, 48, {2, 11}, at::kLong);
  at::Tensor lq = q.loss(tokens, false), lp = plain.loss(tokens, false);
  EXPECT_NEAR(lq.item<double>(), lp.item<double>(), 1e-5);
  lq.backward();
  lp.backward();
  for (size_t i = 0; i < q.adapters().size(); ++i) {
    EXPECT_LT(max_rel(q.adapters()[i].a.grad(), plain.adapters()[i].a.grad()), 1e-4) << q.adapters()[i].name;
    EXPECT_LT(max_rel(q.adapters()[i].b.grad(), plain.adapters()[i].b.grad()), 1e-4) << q.adapters()[i].name;
  }
  // Merging dequantises: the merged weight is the reference's merged weight.
  EXPECT_LT(max_rel(q.merged_weight(0), plain.merged_weight(0)), 1e-6);
  cfg.base_quant = "int3";
  EXPECT_CONTAINS(testing::input_error([&] { LoraLlama(model, {}, cfg); }), "expected none or nf4");
}

// The GPU's code paths on the CPU (LoraConfig::device_kernels): attention through
// at::scaled_dot_product_attention (causal; Mistral's window as a boolean mask, T past the window; GQA in
// the kernel) and NF4 as dequantise + GEMM, against the default path: the same loss, adapter gradients
// and, with dropout, the same masks (both draw from the host generator on the CPU).
TEST(Lora, DeviceKernelsEqualTheCpuPath) {
  TempDir d;
  MakeModelOptions mo;
  mo.init_std = 0.3;
  make_random_model(testing::llama_shape(64, 96, 2, 4, 2, 48, 32), d.path(), mo);
  for (const std::string& dir : {d.path(), testing::source_file("tests/golden/family_mistral")})
    for (const std::string quant : {"none", "nf4"}) {
      LlamaModel model = LlamaModel::load(dir);
      const std::string what = dir + " " + quant;
      LoraConfig cfg;
      cfg.rank = 4;
      cfg.targets = {"all-linear"};
      cfg.base_quant = quant;
      LoraLlama cpu(model, {}, cfg);
      cfg.device_kernels = true;
      LoraLlama dev(model, {}, cfg);
      {
        at::NoGradGuard no_grad;
        for (size_t i = 0; i < cpu.adapters().size(); ++i) {
          cpu.adapters()[i].b.normal_(0.0, 0.3, cpu.generator());
          dev.adapters()[i].b.copy_(cpu.adapters()[i].b);
          ASSERT_TRUE(at::equal(dev.adapters()[i].a, cpu.adapters()[i].a)) << what;
        }
        dev.generator().set_state(cpu.generator().get_state());
      }
      at::Tensor tokens = at::randint(0, model.config().vocab_size, {2, 13}, at::kLong);  // 13 > Mistral's window 4
      at::Tensor lc = cpu.loss(tokens, /*train=*/true), ld = dev.loss(tokens, /*train=*/true);
      EXPECT_NEAR(ld.item<double>(), lc.item<double>(), 1e-5 * (1 + std::fabs(lc.item<double>()))) << what;
      lc.backward();
      ld.backward();
      for (size_t i = 0; i < cpu.adapters().size(); ++i) {
        EXPECT_LT(max_rel(dev.adapters()[i].a.grad(), cpu.adapters()[i].a.grad()), 1e-4) << what << " " << cpu.adapters()[i].name;
        EXPECT_LT(max_rel(dev.adapters()[i].b.grad(), cpu.adapters()[i].b.grad()), 1e-4) << what << " " << cpu.adapters()[i].name;
      }
      EXPECT_EQ(dev.device(), at::Device(at::kCPU));
    }
}

TEST(Lora, BadConfigurations) {
  EXPECT_EQ(lora_targets({"all-linear"}).size(), 7u);
  EXPECT_CONTAINS(testing::input_error([] { lora_targets({"gate"}); }), "unknown LoRA target \"gate\"");
  EXPECT_CONTAINS(testing::input_error([] { lora_targets({}); }), "at least one");
  TempDir d;
  make_random_model(testing::llama_shape(16, 24, 2, 4, 2, 32, 16), d.path(), {});
  LlamaModel model = LlamaModel::load(d.path());
  LoraConfig cfg;
  cfg.rank = 17;
  EXPECT_CONTAINS(testing::input_error([&] { LoraLlama(model, {}, cfg); }), "exceeds");
  cfg.rank = 4;
  cfg.dropout = 1;
  EXPECT_CONTAINS(testing::input_error([&] { LoraLlama(model, {}, cfg); }), "dropout");
  cfg.dropout = 0.05;
  EXPECT_EQ(LoraLlama(model, {}, cfg).trainable_parameters(), 2 * (4 * (16 + 24) * 2 + 4 * (24 + 16)));
}

}  // namespace
}  // namespace layerprune
