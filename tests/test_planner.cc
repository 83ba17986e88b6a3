// The planner (method/planner.h) against numbers worked out by hand from the formulas: every expected value
// below is written out as arithmetic on the model's shapes, never obtained from the code under test. The
// Llama-2 configs come from the shared data (skipped with a message where absent).
#include <gtest/gtest.h>

#include <cmath>

#include "tests/llama_shapes.h"
#include "tests/test_support.h"
#include "formats/llama_config.h"
#include "method/planner.h"

namespace layerprune {
namespace {

// Declares `var` as the config of Llama-2-`size`, or skips the test.
#define LP_LLAMA2(var, size)                                                    \
  LP_REQUIRE_DATA(var##_path, "llama2/Llama-2-" size "/config.json");           \
  const LlamaConfig var = LlamaConfig::from_file(var##_path)

PlanOptions opts(int tp, const std::string& weights = "bf16", double prune = 0) {
  PlanOptions o;
  o.tp = tp;
  o.weights = weights;
  o.prune_fraction = prune;
  return o;
}

// Llama-2-70B: L=80, D=8192, H=64, KV=8, hd=128, F=28672, V=32000, untied.
const double q70 = 8192.0 * 8192;          // q_proj
const double kv70 = 8192.0 * 8 * 128;      // k_proj (and v_proj): D x KV*hd = 8,388,608
const double mlp70 = 8192.0 * 28672;       // gate, up, down each
const double layer70 = 2 * q70 + 2 * kv70 + 3 * mlp70;  // 855,638,016 linear params per layer
const double norms70 = 2 * 8192.0;         // two RMSNorm vectors per layer
const double emb70 = 32000.0 * 8192;       // embedding = LM head = 262,144,000

TEST(Planner, ParameterCountsOfLlama2) {
  LP_LLAMA2(c7, "7b-hf");
  LP_LLAMA2(c13, "13b-hf");
  LP_LLAMA2(c70, "70b-chat-hf");
  // 7B: 32 x (4 x 4096^2 + 3 x 4096 x 11008 + 2 x 4096) + 2 x 32000 x 4096 + 4096.
  const double layer7 = 4 * 4096.0 * 4096 + 3 * 4096.0 * 11008 + 2 * 4096.0;
  EXPECT_EQ(32 * layer7 + 2 * 32000.0 * 4096 + 4096, 6738415616.0) << "the hand formula itself";
  MemoryPlan p7 = plan_memory(c7, opts(1));
  EXPECT_EQ(p7.model_params, 6738415616LL);
  EXPECT_EQ(p7.weight_bytes, 6738415616.0 * 2);
  EXPECT_NEAR(p7.weight_bytes / 1e9, 13.48, 0.005);
  // 13B: 40 x (4 x 5120^2 + 3 x 5120 x 13824 + 2 x 5120) + 2 x 32000 x 5120 + 5120.
  EXPECT_EQ(plan_memory(c13, opts(1)).model_params, 13015864320LL);
  EXPECT_EQ(40 * (4 * 5120.0 * 5120 + 3 * 5120.0 * 13824 + 2 * 5120.0) + 2 * 32000.0 * 5120 + 5120, 13015864320.0);
  // 70B.
  MemoryPlan p70 = plan_memory(c70, opts(1));
  EXPECT_EQ(80 * (layer70 + norms70) + 2 * emb70 + 8192, 68976648192.0);
  EXPECT_EQ(p70.model_params, 68976648192LL);
  EXPECT_EQ(p70.rank_linear_params, int64_t(80 * layer70));
  EXPECT_EQ(p70.weight_bytes, 68976648192.0 * 2);
  EXPECT_NEAR(p70.weight_bytes / 1e9, 137.95, 0.005);  // "~138 GB"
  EXPECT_EQ(p70.quant_constant_bytes, 0);
}

TEST(Planner, Nf4DoubleQuantisedWeights) {
  LP_LLAMA2(c70, "70b-chat-hf");
  // 4 bits + an 8-bit absmax per 64 params + an fp32 constant per 256 blocks.
  EXPECT_EQ(nf4_bytes_per_param(), 0.5 + 0.015625 + 0.000244140625);
  MemoryPlan p = plan_memory(c70, opts(1, "nf4"));
  const double linear = 80 * layer70;  // 68,451,041,280 params
  EXPECT_EQ(p.linear_bytes, linear * 0.5);
  EXPECT_EQ(p.quant_constant_bytes, linear * (0.015625 + 0.000244140625));
  EXPECT_EQ(p.embedding_bytes, emb70 * 2) << "the embedding stays bf16";
  EXPECT_EQ(p.lm_head_bytes, emb70 * 2) << "the LM head stays bf16";
  EXPECT_EQ(p.norm_bytes, (80 * norms70 + 8192) * 2);
  const double total = linear * 0.515869140625 + 2 * emb70 * 2 + (80 * norms70 + 8192) * 2;  // 36,362,993,664
  EXPECT_EQ(p.weight_bytes, total);
  EXPECT_GT(p.weight_bytes / 1e9, 35);
  EXPECT_LT(p.weight_bytes / 1e9, 37);
  EXPECT_NEAR(p.weight_bytes / 1e9, 36.36, 0.005);
}

TEST(Planner, Nf4PlusHalfThePrunedLayersAgainstThePaper) {
  LP_LLAMA2(c70, "70b-chat-hf");
  MemoryPlan p = plan_memory(c70, opts(1, "nf4", 0.5));
  EXPECT_EQ(p.pruned_layers, 40);
  EXPECT_EQ(p.kept_layers, 40);
  const double linear = 40 * layer70;  // 34,225,520,640 params
  const double constants = linear * (0.015625 + 0.000244140625);   // 0.54 GB
  const double embedding = emb70 * 2, head = emb70 * 2;            // 0.52 GB each
  const double norms = (40 * norms70 + 8192) * 2;                  // 1.3 MB
  EXPECT_EQ(p.linear_bytes, linear * 0.5);
  EXPECT_EQ(p.quant_constant_bytes, constants);
  EXPECT_EQ(p.norm_bytes, norms);
  EXPECT_EQ(p.weight_bytes, linear * 0.5 + constants + embedding + head + norms);  // 18,705,793,024
  EXPECT_GT(p.weight_bytes / 1e9, 17.5);
  EXPECT_LT(p.weight_bytes / 1e9, 19);
  EXPECT_NEAR(p.weight_bytes / 1e9, 18.71, 0.005);
  // The paper's 17.5 GB is 70e9 params x 0.5 (pruned) x 0.5 byte: the plan's extra is the constants, the
  // 16-bit embedding and head and the norms (and 70e9 rounding the real 69.0e9 up).
  const double paper = 70e9 * 0.5 * 0.5;
  EXPECT_EQ(paper, 17.5e9);
  EXPECT_NEAR(p.weight_bytes - p.linear_bytes, constants + embedding + head + norms, 1);
  EXPECT_EQ(p.naive_weight_bytes, (40 * (layer70 + norms70) + 2 * emb70 + 8192) * 0.5);
  const std::string table = format_plan(p);
  for (const char* line : {"linear weights (packed 4-bit)", "quantisation constants", "embedding (replicated)",
                           "LM head (vocab-parallel)", "norms (replicated)", "naive weights"})
    EXPECT_CONTAINS(table, line);
  EXPECT_CONTAINS(table, "18.706");  // the weights total, GB
}

TEST(Planner, FlopsPerToken) {
  LP_LLAMA2(c70, "70b-chat-hf");
  PlanOptions o = opts(8, "bf16", 0.5);
  o.seq = 2048;
  MemoryPlan p = plan_memory(c70, o);
  EXPECT_EQ(p.matmul_flops_before, 2 * (80 * layer70 + 32000.0 * 8192));  // 137.4 GFLOP
  EXPECT_EQ(p.matmul_flops_after, 2 * (40 * layer70 + 32000.0 * 8192));   // 69.0 GFLOP
  EXPECT_EQ(p.attention_flops_before, 4 * 80 * 8192.0 * (2049.0 / 2));
  EXPECT_EQ(p.attention_flops_after, 4 * 40 * 8192.0 * (2049.0 / 2));
  auto j = plan_to_json(p);
  EXPECT_EQ(j["flops_per_token"]["after_pruning"]["per_rank"]["matmul"].get<double>(),
            2 * (40 * layer70 + 32000.0 * 8192) / 8);
}

TEST(Planner, TensorParallelLayout) {
  LP_LLAMA2(c70, "70b-chat-hf");
  // tp 8: 8 % 8 == 0, k and v split, one KV head per rank, not replicated.
  MemoryPlan p8 = plan_memory(c70, opts(8));
  EXPECT_EQ(p8.heads_per_rank, 8);
  EXPECT_EQ(p8.kv_heads_per_rank, 1);
  EXPECT_FALSE(p8.kv_replicated);
  EXPECT_EQ(p8.rank_linear_params, int64_t(80 * (layer70 / 8)));
  // tp 16: 16 % 8 == 0, each rank holds one whole KV head: k and v are D x hd each, not D x KV*hd / 16.
  MemoryPlan p16 = plan_memory(c70, opts(16));
  EXPECT_EQ(p16.kv_heads_per_rank, 1);
  EXPECT_TRUE(p16.kv_replicated);
  const double rank16 = 2 * 8192.0 * 4 * 128    // q, o: 4 of the 64 heads
                        + 2 * 8192.0 * 128      // k, v: one KV head (replicated on 2 ranks)
                        + 3 * 8192.0 * 1792;    // gate, up, down: 28672 / 16 features
  EXPECT_EQ(p16.rank_linear_params, int64_t(80 * rank16));
  EXPECT_GT(16 * p16.rank_linear_params, int64_t(80 * layer70)) << "replicated k/v cost extra over the group";
  EXPECT_EQ(p16.vocab_per_rank, 2000);
  EXPECT_EQ(p16.rank_lm_head_params, 2000 * 8192);
  EXPECT_EQ(p16.rank_embedding_params, 32000 * 8192) << "the embedding is replicated";
  // tp 3: 64 % 3 != 0.
  std::string e = testing::input_error([&] { plan_memory(c70, opts(3)); });
  EXPECT_CONTAINS(e, "64 % 3");
  // 12 heads, 4 KV heads, tp 3: heads split but 4 % 3 and 3 % 4 are both non-zero.
  LlamaConfig c = testing::llama_shape(768, 2048, 2, 12, 4, 1000);
  e = testing::input_error([&] { plan_memory(c, opts(3)); });
  EXPECT_CONTAINS(e, "4 % 3 = 1");
  EXPECT_CONTAINS(e, "3 % 4 = 3");
  // tp 2 and 4 work: KV % tp == 0.
  EXPECT_EQ(plan_memory(c, opts(4)).kv_heads_per_rank, 1);
}

TEST(Planner, PerRankWeightsOf7BOnTwoRanks) {
  LP_LLAMA2(c7, "7b-hf");
  MemoryPlan p = plan_memory(c7, opts(2));
  const double linear = 32 * (4 * 4096.0 * 4096 + 3 * 4096.0 * 11008);  // all 32 layers
  const double norms = 32 * 2 * 4096.0 + 4096;
  const double embedding = 32000.0 * 4096, head = 32000.0 * 4096;
  EXPECT_EQ(p.weight_bytes, (linear / 2 + norms + embedding + head / 2) * 2);
  EXPECT_EQ(p.ffn_per_rank, 5504);
  EXPECT_EQ(p.kv_heads_per_rank, 16);
}

TEST(Planner, InferenceAndHealingMemory) {
  LP_LLAMA2(c70, "70b-chat-hf");
  PlanOptions o = opts(8, "nf4", 0.5);
  o.batch = 1;
  o.seq = 2048;
  o.healing = true;
  o.lora_rank = 8;
  MemoryPlan p = plan_memory(c70, o);
  const double BT = 1 * 2048.0;
  EXPECT_EQ(p.kv_cache_bytes, 2 * 40 * BT * 1 * 128 * 2);  // 1 KV head per rank at tp 8
  EXPECT_EQ(p.activation_bytes, 2 * (3 * BT * 8192 + BT * (8 + 2 * 1) * 128 + 2 * BT * 3584));
  EXPECT_EQ(p.logits_bytes, BT * 32000 * 4);
  EXPECT_EQ(p.inference_bytes, p.weight_bytes + p.kv_cache_bytes + p.activation_bytes + p.logits_bytes);
  EXPECT_EQ(p.rank_lora_params, 40 * 3 * 8 * (8192 + 3584));  // 11,304,960
  EXPECT_EQ(p.lora_bytes, 40 * 3 * 8 * (8192 + 3584) * 16.0);
  EXPECT_EQ(p.checkpoint_bytes, 40 * BT * 8192 * 2);
  EXPECT_EQ(p.recompute_bytes, p.activation_bytes);
  EXPECT_EQ(p.healing_bytes,
            p.weight_bytes + p.lora_bytes + p.checkpoint_bytes + p.recompute_bytes + p.logits_bytes);
  // Whole-model adapter count at tp 1: 3 x r x (D + F) per kept layer.
  o.tp = 1;
  EXPECT_EQ(plan_memory(c70, o).rank_lora_params, 40 * 3 * 8 * (8192 + 28672));
}

TEST(Planner, RefusesImpossibleOptions) {
  LP_LLAMA2(c7, "7b-hf");
  for (double f : {-0.1, 1.0, 1.5, std::nan("")})
    EXPECT_CONTAINS(testing::input_error([&] { plan_memory(c7, opts(1, "bf16", f)); }), "[0, 1)");
  // 0.99 x 32 rounds to 32: nothing left.
  EXPECT_CONTAINS(testing::input_error([&] { plan_memory(c7, opts(1, "bf16", 0.99)); }), "removes all");
  EXPECT_EQ(plan_memory(c7, opts(1, "bf16", 0.25)).kept_layers, 24);
  EXPECT_CONTAINS(testing::input_error([&] { plan_memory(c7, opts(0)); }), "at least 1");
  EXPECT_CONTAINS(testing::input_error([&] { plan_memory(c7, opts(1, "int8")); }), "int8");
  PlanOptions o = opts(1);
  o.compute = "fp8";
  EXPECT_CONTAINS(testing::input_error([&] { plan_memory(c7, o); }), "fp8");
  o = opts(1);
  o.seq = 0;
  EXPECT_CONTAINS(testing::input_error([&] { plan_memory(c7, o); }), "sequence length");
}

TEST(Planner, TiedHeadIsTheEmbedding) {
  LlamaConfig c = testing::llama_shape(64, 128, 2, 4, 2, 100);
  c.tie_word_embeddings = true;
  MemoryPlan p = plan_memory(c, opts(2, "f32"));
  EXPECT_EQ(p.rank_lm_head_params, 0);
  EXPECT_EQ(p.model_params, 2 * (2 * 64 * 64 + 2 * 64 * 2 * 16 + 3 * 64 * 128 + 2 * 64) + 100 * 64 + 64);
  EXPECT_EQ(p.weight_bytes, (2 * (64 * 64 + 64 * 16 * 2 + 3 * 64 * 64 + 2 * 64) + 100 * 64 + 64) * 4.0);
  EXPECT_EQ(p.matmul_flops_before, 2.0 * (2 * (2 * 64 * 64 + 2 * 64 * 2 * 16 + 3 * 64 * 128) + 100 * 64))
      << "the tied head still multiplies";
}

TEST(Planner, JsonHasThePrintedFields) {
  LP_LLAMA2(c70, "70b-chat-hf");
  PlanOptions o = opts(8, "nf4", 0.5);
  o.healing = true;
  MemoryPlan p = plan_memory(c70, o);
  const auto j = plan_to_json(p);
  const std::string table = format_plan(p);
  const auto lines = plan_lines(p);
  EXPECT_EQ(lines.size(), 14u);
  for (const auto& l : lines) {
    EXPECT_CONTAINS(table, l.label);
    ASSERT_TRUE(j["per_rank"].contains(l.key + "_bytes")) << l.key;
    EXPECT_EQ(j["per_rank"][l.key + "_bytes"].get<double>(), l.bytes) << l.key;
    EXPECT_EQ(j["group"][l.key + "_bytes"].get<double>(), l.bytes * 8) << l.key;
  }
  EXPECT_EQ(j["pruning"]["kept_layers"], 40);
  EXPECT_EQ(j["model"]["parameters"], 68976648192LL);
  EXPECT_EQ(j["layout"]["kv_heads_per_rank"], 1);
  EXPECT_EQ(j["layout"]["kv_replicated"], false);
  for (const char* k : {"before_pruning", "after_pruning"})
    for (const char* f : {"matmul", "attention", "total"}) EXPECT_TRUE(j["flops_per_token"][k].contains(f)) << k << f;
  EXPECT_CONTAINS(table, "matmul");
  EXPECT_CONTAINS(table, "attention");
  EXPECT_CONTAINS(table, "GiB");
}

}  // namespace
}  // namespace layerprune

namespace layerprune {
namespace {

LlamaConfig family_config(const std::string& name) {
  return LlamaConfig::from_file(testing::source_file("tests/golden/configs/" + name));
}

// The published parameter counts of the families (tests/golden/configs/), from the formula by hand:
// per layer 2 D^2 (q, o) + 2 D KV hd (k, v) + 3 D F + 2 D (norms) [+ (H + 2 KV) hd q/k/v biases], then the
// embedding, the head unless tied, and the final norm.
TEST(Planner, ParameterCountsOfTheFamilies) {
  auto count = [](double L, double D, double H, double KV, double hd, double F, double V, bool tied, bool bias) {
    return L * (2 * D * D + 2 * D * KV * hd + 3 * D * F + 2 * D + (bias ? (H + 2 * KV) * hd : 0)) +
           V * D * (tied ? 1 : 2) + D;
  };
  EXPECT_EQ(count(32, 4096, 32, 8, 128, 14336, 128256, false, false), 8030261248.0);  // "8.03B"
  EXPECT_EQ(plan_memory(family_config("Llama-3.1-8B.json"), opts(1)).model_params, 8030261248LL);
  EXPECT_EQ(count(16, 2048, 32, 8, 64, 8192, 128256, true, false), 1235814400.0);     // "1.24B"
  EXPECT_EQ(plan_memory(family_config("Llama-3.2-1B.json"), opts(1)).model_params, 1235814400LL);
  EXPECT_EQ(count(32, 4096, 32, 8, 128, 14336, 32000, false, false), 7241732096.0);   // "7.24B"
  EXPECT_EQ(plan_memory(family_config("Mistral-7B-v0.1.json"), opts(1)).model_params, 7241732096LL);
  EXPECT_EQ(count(28, 3584, 28, 4, 128, 18944, 152064, false, true), 7615616512.0);   // "7.62B"
  const LlamaConfig qwen = family_config("Qwen2-7B.json");
  MemoryPlan p1 = plan_memory(qwen, opts(1));
  EXPECT_EQ(p1.model_params, 7615616512LL);
  EXPECT_EQ(p1.rank_bias_params, 28 * (28 + 2 * 4) * 128);
  EXPECT_EQ(p1.bias_bytes, 28.0 * (28 + 2 * 4) * 128 * 2);
  // tp 2: 14 query heads and 2 KV heads per rank; the biases split with them.
  MemoryPlan p2 = plan_memory(qwen, opts(2));
  EXPECT_EQ(p2.rank_bias_params, 28 * (14 + 2 * 2) * 128);
  EXPECT_EQ(p2.weight_bytes, p2.linear_bytes + p2.embedding_bytes + p2.lm_head_bytes + p2.norm_bytes + p2.bias_bytes);
  // tp 4 = 4 KV heads: each rank holds one KV head and its biases.
  EXPECT_EQ(plan_memory(qwen, opts(4)).rank_bias_params, 28 * (7 + 2 * 1) * 128);
  EXPECT_CONTAINS(format_plan(p2), "attention biases (q/k/v split)");
  EXPECT_EQ(plan_to_json(p2)["parameters_per_rank"]["biases"], 28 * (14 + 2 * 2) * 128);
  EXPECT_EQ(plan_memory(family_config("Llama-3.1-8B.json"), opts(1)).rank_bias_params, 0);
  // Llama's attention_bias: q/k/v biases split, o_proj's (D) replicated on every rank.
  LlamaConfig biased = family_config("Llama-3.1-8B.json");
  biased.attention_bias = true;
  EXPECT_EQ(plan_memory(biased, opts(1)).model_params, 8030261248LL + 32 * ((32 + 2 * 8) * 128 + 4096));
  EXPECT_EQ(plan_memory(biased, opts(2)).rank_bias_params, 32 * ((16 + 2 * 4) * 128 + 4096));
  EXPECT_EQ(format_plan(plan_memory(family_config("Llama-3.1-8B.json"), opts(1))).find("biases"), std::string::npos);
}

}  // namespace
}  // namespace layerprune
