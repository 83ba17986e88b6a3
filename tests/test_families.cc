// The Llama-3, Mistral and Qwen2 families against Hugging Face transformers (tests/golden/family_*, made by
// tests/golden/make_families_golden.py): llama3 and linear RoPE scaling, Mistral's sliding window (also
// with the KV cache), Qwen2's q/k/v biases; the LoRA/QLoRA training forward on the same models, and the
// pruned export of a biased model.
#include <ATen/core/grad_mode.h>
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/text_file.h"
#include "formats/prune_export.h"
#include "formats/safetensors.h"
#include "model/llama.h"
#include "model/lora.h"
#include "model/tensor_io.h"
#include "tests/test_support.h"

namespace layerprune {
namespace {

const char* const kFamilies[] = {"family_llama3", "family_linear", "family_mistral", "family_qwen2"};

std::string golden_dir(const std::string& name) { return testing::source_file("tests/golden/" + name); }

struct Golden {
  at::Tensor tokens, lengths, logits;  // [B, T] right-padded, [B], [B, T, V] (valid up to each length)
};

Golden golden(const std::string& name) {
  auto f = SafetensorsFile::open(golden_dir(name) + "/golden.safetensors");
  auto get = [&](const char* t) { return tensor_from_view(*f->find(t), f).clone(); };
  return {get("tokens"), get("lengths"), get("logits")};
}

// The largest |logit difference| over the real (unpadded) positions.
double max_diff(const at::Tensor& logits, const Golden& g) {
  double worst = 0;
  for (int64_t b = 0; b < g.tokens.size(0); ++b) {
    const int64_t n = g.lengths[b].item<int64_t>();
    worst = std::max(worst, (logits[b].narrow(0, 0, n) - g.logits[b].narrow(0, 0, n)).abs().max().item<double>());
  }
  return worst;
}

// Float32 against transformers' eager float32 forward: the same math in another op order.
constexpr double kTransformers = 1e-4;

TEST(Families, LogitsEqualTransformers) {
  for (const char* name : kFamilies) {
    LlamaModel m = LlamaModel::load(golden_dir(name));
    Golden g = golden(name);
    const double d = max_diff(m.forward(g.tokens).logits, g);
    EXPECT_LT(d, kTransformers) << name;
    std::printf("%s: max |logit - transformers| = %.3g\n", name, d);
  }
  // What each model exercises, so that the comparison above means it.
  EXPECT_EQ(LlamaConfig::from_file(golden_dir("family_llama3") + "/config.json").rope_type, "llama3");
  EXPECT_EQ(LlamaConfig::from_file(golden_dir("family_linear") + "/config.json").rope_type, "linear");
  EXPECT_TRUE(LlamaConfig::from_file(golden_dir("family_linear") + "/config.json").o_bias());
  EXPECT_EQ(LlamaConfig::from_file(golden_dir("family_mistral") + "/config.json").sliding_window, 4);
  EXPECT_TRUE(LlamaConfig::from_file(golden_dir("family_qwen2") + "/config.json").qkv_bias());
}

// Each family feature moves the logits by far more than the tolerance: without the RoPE scaling, with a
// window one longer (transformers' other possible convention) or none, without the biases.
TEST(Families, EachFeatureMatters) {
  auto without = [](const char* name, const std::function<void(LlamaConfig&, LlamaWeights&)>& change) {
    LlamaModel m = LlamaModel::load(golden_dir(name));
    LlamaConfig c = m.config();
    LlamaWeights w = m.weights();
    change(c, w);
    return max_diff(LlamaModel(c, w).forward(golden(name).tokens).logits, golden(name));
  };
  EXPECT_GT(without("family_llama3", [](LlamaConfig& c, LlamaWeights&) { c.rope_type = "default"; }), 1e-2);
  EXPECT_GT(without("family_linear", [](LlamaConfig& c, LlamaWeights&) { c.rope_type = "default"; }), 1e-2);
  EXPECT_GT(without("family_mistral", [](LlamaConfig& c, LlamaWeights&) { c.sliding_window = 5; }), 1e-2);
  EXPECT_GT(without("family_mistral", [](LlamaConfig& c, LlamaWeights&) { c.sliding_window = 3; }), 1e-2);
  EXPECT_GT(without("family_mistral", [](LlamaConfig& c, LlamaWeights&) { c.sliding_window = 0; }), 1e-2);
  EXPECT_GT(without("family_linear", [](LlamaConfig&, LlamaWeights& w) { for (auto& l : w.layers) l.bo = at::Tensor(); }),
            1e-2);
  EXPECT_GT(without("family_qwen2",
                    [](LlamaConfig&, LlamaWeights& w) {
                      for (auto& l : w.layers) l.bq = l.bk = l.bv = at::Tensor();
                    }),
            1e-2);
}

// Mistral with the KV cache: one token at a time and in uneven chunks, past the window, equals the
// transformers logits of the whole sequence.
TEST(Families, SlidingWindowWithTheKVCache) {
  LlamaModel m = LlamaModel::load(golden_dir("family_mistral"));
  Golden g = golden("family_mistral");
  const int64_t b = 3, n = g.lengths[b].item<int64_t>();
  ASSERT_GT(n, 3 * m.config().sliding_window);
  at::Tensor seq = g.tokens[b].narrow(0, 0, n).unsqueeze(0), want = g.logits[b].narrow(0, 0, n);
  for (std::vector<int64_t> chunks : {std::vector<int64_t>(size_t(n), 1), std::vector<int64_t>{3, 1, 6, n - 10}}) {
    KVCache cache;
    int64_t at = 0;
    for (int64_t len : chunks) {
      at::Tensor logits = m.forward(seq.narrow(1, at, len), {}, &cache).logits[0];
      EXPECT_LT((logits - want.narrow(0, at, len)).abs().max().item<double>(), kTransformers)
          << "positions " << at << ".." << at + len - 1 << " in chunks of " << chunks.front();
      at += len;
    }
    EXPECT_EQ(cache.length, n);
  }
}

// The LoRA training forward (its own attention and RoPE) on each family, with B = 0: transformers' logits.
TEST(Families, LoraForwardEqualsTransformers) {
  for (const char* name : kFamilies) {
    LlamaModel m = LlamaModel::load(golden_dir(name));
    LoraConfig cfg;
    cfg.targets = {"all-linear"};
    LoraLlama lora(m, {}, cfg);
    Golden g = golden(name);
    at::NoGradGuard no_grad;
    EXPECT_LT(max_diff(lora.forward(g.tokens, false), g), kTransformers) << name;
  }
}

// A LoRA step on the biased Qwen2 model (all seven projections, the biased q/k/v included): it trains,
// the biases stay frozen, and merging gives the adapted model; the same under QLoRA's NF4 base.
TEST(Families, LoraStepOnQwen2AndTheMergedModel) {
  LlamaModel m = LlamaModel::load(golden_dir("family_qwen2"));
  Golden g = golden("family_qwen2");
  at::Tensor tokens = g.tokens.narrow(0, 3, 1);  // the 17-token sequence
  const at::Tensor bias_before = m.weights().layers[1].bq.clone();
  for (const char* quant : {"none", "nf4"}) {
    LoraConfig cfg;
    cfg.targets = {"all-linear"};
    cfg.rank = 4;
    cfg.dropout = 0;
    cfg.base_quant = quant;
    LoraLlama lora(m, {}, cfg);
    EXPECT_EQ(lora.adapters().size(), 2u * 7);
    const double before = lora.loss(tokens, true).item<double>();
    for (int step = 0; step < 3; ++step) {  // plain SGD, enough to move B off zero
      for (at::Tensor& p : lora.parameters()) p.mutable_grad() = at::Tensor();
      lora.loss(tokens, true).backward();
      at::NoGradGuard no_grad;
      for (at::Tensor& p : lora.parameters()) p.sub_(p.grad() * 0.5);
    }
    at::NoGradGuard no_grad;
    const double after = lora.loss(tokens, false).item<double>();
    EXPECT_LT(after, before) << quant;
    EXPECT_TRUE(at::equal(m.weights().layers[1].bq, bias_before)) << "the bias is frozen";
    EXPECT_FALSE(m.weights().layers[1].bq.requires_grad());
    LlamaModel merged = lora.merged_model();
    ASSERT_TRUE(merged.weights().layers[1].bq.defined());
    at::Tensor want = lora.forward(g.tokens, false), got = merged.forward(g.tokens).logits;
    EXPECT_GT(max_diff(want, g), 1e-3) << quant << ": the adapters (or NF4) change the model";
    EXPECT_LT(((got - want).abs() / (want.abs() + 1)).max().item<double>(), 5e-5) << quant;
  }
}

// The same on Llama's attention_bias model (q/k/v and o_proj biases).
TEST(Families, LoraStepOnLlamaWithAttentionBias) {
  LlamaModel m = LlamaModel::load(golden_dir("family_linear"));
  Golden g = golden("family_linear");
  LoraConfig cfg;
  cfg.targets = {"all-linear"};
  cfg.rank = 4;
  cfg.dropout = 0;
  LoraLlama lora(m, {}, cfg);
  at::Tensor tokens = g.tokens.narrow(0, 3, 1);
  const double before = lora.loss(tokens, true).item<double>();
  for (int step = 0; step < 3; ++step) {
    for (at::Tensor& p : lora.parameters()) p.mutable_grad() = at::Tensor();
    lora.loss(tokens, true).backward();
    at::NoGradGuard no_grad;
    for (at::Tensor& p : lora.parameters()) p.sub_(p.grad() * 0.5);
  }
  at::NoGradGuard no_grad;
  EXPECT_LT(lora.loss(tokens, false).item<double>(), before);
  LlamaModel merged = lora.merged_model();
  ASSERT_TRUE(merged.weights().layers[0].bo.defined());
  at::Tensor want = lora.forward(g.tokens, false), got = merged.forward(g.tokens).logits;
  EXPECT_GT(max_diff(want, g), 1e-3);
  EXPECT_LT(((got - want).abs() / (want.abs() + 1)).max().item<double>(), 5e-5);
}

// Pruning keeps the kept layers' biases (renumbered) and cuts transformers 5.x's layer_types to match.
TEST(Families, PrunedQwen2KeepsItsBiases) {
  testing::TempDir out;
  export_pruned_model(golden_dir("family_qwen2"), {1}, out.path());
  Checkpoint ckpt = Checkpoint::open(out.path());
  ASSERT_NE(ckpt.find("model.layers.0.self_attn.q_proj.bias"), nullptr);
  EXPECT_EQ(ckpt.find("model.layers.1.self_attn.q_proj.bias"), nullptr);
  auto cfg = nlohmann::json::parse(read_file(out.path() + "/config.json"));
  EXPECT_EQ(cfg["num_hidden_layers"], 1);
  EXPECT_EQ(cfg["layer_types"], nlohmann::json({"full_attention"}));
  LlamaModel whole = LlamaModel::load(golden_dir("family_qwen2")), pruned = LlamaModel::load(out.path());
  at::Tensor tokens = golden("family_qwen2").tokens;
  ForwardOptions only1;
  only1.layers = {1};
  EXPECT_TRUE(at::allclose(pruned.forward(tokens).logits, whole.forward(tokens, only1).logits, 1e-6, 1e-6));
}

}  // namespace
}  // namespace layerprune
