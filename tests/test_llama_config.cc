// HF config.json parsing (the real Llama-2 configs, defaults, wrong types, unsupported options) and the Llama
// tensor-layout check of a checkpoint.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/text_file.h"
#include "tests/test_support.h"
#include "formats/llama_config.h"
#include "formats/llama_tensors.h"
#include "formats/safetensors.h"

namespace layerprune {
namespace {

using testing::TempDir;


using testing::input_error;

// ------------------------------------------------------------------------------------------------
// config.json
// ------------------------------------------------------------------------------------------------

struct Expected {
  const char* dir;
  int64_t hidden, intermediate, layers, heads, kv_heads;
};

void expect_llama2(const std::string& path, const Expected& e) {
  LlamaConfig c = LlamaConfig::from_file(path);
  EXPECT_EQ(c.hidden_size, e.hidden);
  EXPECT_EQ(c.intermediate_size, e.intermediate);
  EXPECT_EQ(c.num_hidden_layers, e.layers);
  EXPECT_EQ(c.num_attention_heads, e.heads);
  EXPECT_EQ(c.num_key_value_heads, e.kv_heads);
  EXPECT_EQ(c.vocab_size, 32000);
  EXPECT_EQ(c.max_position_embeddings, 4096);
  EXPECT_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_EQ(c.rope_theta, 10000.0);  // absent from the 13B config: the default
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.torch_dtype, "float32");
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_id, 2);
  EXPECT_EQ(c.head_dim(), 128);
  EXPECT_EQ(c.kv_dim(), e.kv_heads * 128);
  EXPECT_EQ(LlamaConfig::from_json(c.to_json(), "round trip"), c);
}

TEST(LlamaConfig, Llama2_7B) {
  LP_REQUIRE_DATA(path, "llama2/Llama-2-7b-hf/config.json");
  expect_llama2(path, {"7b", 4096, 11008, 32, 32, 32});
}

TEST(LlamaConfig, Llama2_13B) {
  LP_REQUIRE_DATA(path, "llama2/Llama-2-13b-hf/config.json");
  expect_llama2(path, {"13b", 5120, 13824, 40, 40, 40});
}

TEST(LlamaConfig, Llama2_70B_GroupedQueryAttention) {
  LP_REQUIRE_DATA(path, "llama2/Llama-2-70b-chat-hf/config.json");
  expect_llama2(path, {"70b", 8192, 28672, 80, 64, 8});
}

// A small valid config, as JSON, with `patch` merged in (a null in the patch removes the field).
std::string config_json(const nlohmann::json& patch = nlohmann::json::object()) {
  nlohmann::json j = {{"architectures", {"LlamaForCausalLM"}},
                      {"model_type", "llama"},
                      {"hidden_size", 64},
                      {"intermediate_size", 160},
                      {"num_hidden_layers", 2},
                      {"num_attention_heads", 4},
                      {"vocab_size", 100}};
  for (const auto& [k, v] : patch.items()) {
    if (v.is_null()) j.erase(k);
    else j[k] = v;
  }
  return j.dump();
}

LlamaConfig parse(const nlohmann::json& patch) { return LlamaConfig::from_json(config_json(patch), "cfg.json"); }
std::string parse_error(const nlohmann::json& patch) { return input_error([&] { parse(patch); }); }

TEST(LlamaConfig, Defaults) {
  LlamaConfig c = parse({});
  EXPECT_EQ(c.num_key_value_heads, 4);  // = num_attention_heads
  EXPECT_EQ(c.max_position_embeddings, 2048);
  EXPECT_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.torch_dtype, "float32");
  EXPECT_EQ(c.architecture, "LlamaForCausalLM");
  // null means "default", as transformers reads it.
  EXPECT_EQ(LlamaConfig::from_json(R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 160,
      "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100, "num_key_value_heads": null,
      "rope_theta": null, "rope_scaling": null})", "x"), c);
  // Either marker alone identifies a Llama.
  EXPECT_NO_THROW(parse({{"architectures", nullptr}}));
  EXPECT_NO_THROW(parse({{"model_type", nullptr}}));
}

TEST(LlamaConfig, RoundTripNonDefaults) {
  LlamaConfig c = parse({{"num_key_value_heads", 2},
                         {"tie_word_embeddings", true},
                         {"torch_dtype", "bfloat16"},
                         {"rms_norm_eps", 1.234567890123e-7},
                         {"rope_theta", 500000.0},
                         {"max_position_embeddings", 8192},
                         {"bos_token_id", 128000},
                         {"eos_token_id", {128001, 128008, 128009}}});
  EXPECT_EQ(c.eos_token_id, 128001);  // the first of a list
  EXPECT_EQ(c.kv_dim(), 32);
  const std::string text = c.to_json();
  EXPECT_EQ(LlamaConfig::from_json(text, "round trip"), c);
  auto j = nlohmann::json::parse(text);  // what transformers needs to load it
  EXPECT_EQ(j["model_type"], "llama");
  EXPECT_EQ(j["architectures"], nlohmann::json({"LlamaForCausalLM"}));
  EXPECT_EQ(j["hidden_act"], "silu");
  EXPECT_TRUE(j["rope_scaling"].is_null());
  EXPECT_EQ(j["num_key_value_heads"], 2);
  // transformers >= 4.56 spells torch_dtype "dtype".
  EXPECT_EQ(parse({{"torch_dtype", nullptr}, {"dtype", "float16"}}).torch_dtype, "float16");
}

TEST(LlamaConfig, UnsupportedArchitectures) {
  std::string err = parse_error({{"model_type", "gemma"}, {"architectures", {"GemmaForCausalLM"}}});
  EXPECT_CONTAINS(err, "cfg.json: unsupported model (model_type 'gemma', architectures [GemmaForCausalLM])");
  EXPECT_CONTAINS(err, "supported: llama (LlamaForCausalLM), mistral (MistralForCausalLM), qwen2 (Qwen2ForCausalLM)");
  err = parse_error({{"architectures", {"LlamaForSequenceClassification"}}});
  EXPECT_CONTAINS(err, "LlamaForSequenceClassification");
  err = parse_error({{"architectures", nullptr}, {"model_type", nullptr}});
  EXPECT_CONTAINS(err, "model_type (none), architectures []");
  EXPECT_CONTAINS(parse_error({{"architectures", "LlamaForCausalLM"}}), "field 'architectures' must be a list of strings");
  // The two markers must name the same family.
  EXPECT_CONTAINS(parse_error({{"model_type", "mistral"}}), "model_type 'mistral', architectures [LlamaForCausalLM]");
  EXPECT_CONTAINS(parse_error({{"architectures", {"LlamaForCausalLM", "Qwen2ForCausalLM"}}}), "unsupported model");
}

TEST(LlamaConfig, WrongTypesNameTheField) {
  EXPECT_CONTAINS(parse_error({{"hidden_size", "4096"}}), "cfg.json: field 'hidden_size' must be an integer, got string (\"4096\")");
  EXPECT_CONTAINS(parse_error({{"hidden_size", 64.5}}), "field 'hidden_size' must be an integer, got number (64.5)");
  EXPECT_CONTAINS(parse_error({{"num_key_value_heads", true}}), "field 'num_key_value_heads' must be an integer");
  EXPECT_CONTAINS(parse_error({{"tie_word_embeddings", "false"}}), "field 'tie_word_embeddings' must be true or false");
  EXPECT_CONTAINS(parse_error({{"rms_norm_eps", "1e-5"}}), "field 'rms_norm_eps' must be a number");
  EXPECT_CONTAINS(parse_error({{"torch_dtype", 16}}), "field 'torch_dtype' must be a string");
  EXPECT_CONTAINS(parse_error({{"eos_token_id", nlohmann::json::array()}}), "field 'eos_token_id' must be a token id or a non-empty list");
  EXPECT_CONTAINS(parse_error({{"eos_token_id", {2, "x"}}}), "field 'eos_token_id' must be an integer");
  EXPECT_CONTAINS(parse_error({{"vocab_size", 18446744073709551615ull}}), "field 'vocab_size' is too large");
  EXPECT_CONTAINS(parse_error({{"hidden_size", nullptr}}), "field 'hidden_size' is required but missing");
  EXPECT_CONTAINS(input_error([] { LlamaConfig::from_json("{\"hidden_size\": ", "cfg.json"); }),
                  "cfg.json: not valid JSON");
  EXPECT_CONTAINS(input_error([] { LlamaConfig::from_json("[1]", "cfg.json"); }), "cfg.json: expected a JSON object");
  EXPECT_CONTAINS(input_error([] { LlamaConfig::from_json(config_json() + std::string("\0junk", 5), "cfg.json"); }),
                  "cfg.json: not valid JSON (it contains a NUL byte)");
  // A hostile file nested a million deep: refused before parsing (nlohmann's parser recurses).
  EXPECT_CONTAINS(input_error([] {
                    LlamaConfig::from_json("{\"rope_scaling\": " + std::string(1000000, '[') + std::string(1000000, ']') + "}",
                                           "cfg.json");
                  }),
                  "cfg.json: JSON nested deeper than 64 levels");
  EXPECT_CONTAINS(input_error([] { LlamaConfig::from_file("/nonexistent/config.json"); }), "/nonexistent/config.json");
}

TEST(LlamaConfig, UnsupportedOptions) {
  EXPECT_CONTAINS(parse_error({{"hidden_act", "gelu"}}), "field 'hidden_act' 'gelu' is not supported");
  EXPECT_CONTAINS(parse_error({{"mlp_bias", true}}), "cfg.json: field 'mlp_bias' = true is not supported");
  EXPECT_CONTAINS(parse_error({{"head_dim", 32}}), "field 'head_dim' = 32 is not supported");
  EXPECT_NO_THROW(parse({{"head_dim", 16}, {"attention_bias", false}, {"mlp_bias", false}, {"hidden_act", "silu"}}));
  // RoPE types other than default, linear and llama3, in both layouts and the legacy "type" key.
  for (const char* type : {"yarn", "dynamic", "longrope", "su"}) {
    std::string err = parse_error({{"rope_scaling", {{"rope_type", type}, {"factor", 2.0}}}});
    EXPECT_CONTAINS(err, "cfg.json: field 'rope_scaling.rope_type' '" + std::string(type) + "' is not supported");
    EXPECT_CONTAINS(parse_error({{"rope_scaling", {{"type", type}, {"factor", 2.0}}}}), "field 'rope_scaling.type' '" + std::string(type));
    EXPECT_CONTAINS(parse_error({{"rope_parameters", {{"rope_type", type}, {"rope_theta", 1e4}, {"factor", 2.0}}}}),
                    "field 'rope_parameters.rope_type' '" + std::string(type) + "' is not supported");
  }
  EXPECT_CONTAINS(parse_error({{"rope_scaling", "linear"}}), "field 'rope_scaling' must be an object");
  EXPECT_CONTAINS(parse_error({{"rope_scaling", {{"type", "linear"}}}}), "field 'rope_scaling.factor' is required");
  EXPECT_CONTAINS(parse_error({{"rope_scaling", {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                                                 {"high_freq_factor", 4.0}}}}),
                  "field 'rope_scaling.original_max_position_embeddings' is required for rope_type 'llama3'");
  EXPECT_CONTAINS(parse_error({{"rope_scaling", {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 4.0},
                                                 {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}}}}),
                  "high_freq_factor (4.000000) must be larger than low_freq_factor (4.000000)");
  EXPECT_CONTAINS(parse_error({{"rope_scaling", {{"type", "linear"}, {"factor", 0}}}}), "RoPE scaling factor must be a positive number");
  EXPECT_CONTAINS(parse_error({{"rope_scaling", {{"type", "linear"}, {"factor", "2"}}}}), "field 'rope_scaling.factor' must be a number");
  // A null rope_scaling beside rope_parameters is no conflict.
  EXPECT_NO_THROW(parse({{"rope_scaling", nullptr}, {"rope_parameters", {{"rope_type", "default"}}}}));
}

TEST(LlamaConfig, FamilyOptionsAreRefusedNamingTheField) {
  const nlohmann::json qwen = {{"model_type", "qwen2"}, {"architectures", {"Qwen2ForCausalLM"}}};
  auto with = [](nlohmann::json j, const nlohmann::json& more) {
    for (const auto& [k, v] : more.items()) j[k] = v;
    return j;
  };
  EXPECT_CONTAINS(parse_error(with(qwen, {{"use_sliding_window", true}, {"sliding_window", 4096}})),
                  "cfg.json: field 'use_sliding_window' = true is not supported for qwen2");
  EXPECT_CONTAINS(parse_error(with(qwen, {{"layer_types", {"full_attention", "sliding_attention"}}})),
                  "field 'layer_types' lists string (\"sliding_attention\"): only 'full_attention'");
  // Qwen2's sliding_window is ignored while use_sliding_window is false (Qwen2-7B sets both).
  EXPECT_EQ(parse(with(qwen, {{"sliding_window", 131072}, {"use_sliding_window", false}})).sliding_window, 0);
  const nlohmann::json mistral = {{"model_type", "mistral"}, {"architectures", {"MistralForCausalLM"}}};
  EXPECT_CONTAINS(parse_error(with(mistral, {{"sliding_window", -1}})), "sliding_window must be positive or null, got -1");
  EXPECT_CONTAINS(parse_error(with(mistral, {{"sliding_window", "4096"}})), "field 'sliding_window' must be an integer");
  EXPECT_EQ(parse(with(mistral, {{"sliding_window", nullptr}})).sliding_window, 0);
  // A Llama's sliding_window field is not Llama's (LlamaConfig has none): it changes nothing.
  EXPECT_EQ(parse({{"sliding_window", 16}}).sliding_window, 0);
  EXPECT_CONTAINS(parse_error(with(qwen, {{"attention_bias", true}})),
                  "cfg.json: field 'attention_bias' = true is not supported for qwen2 (only llama has the option)");
  EXPECT_CONTAINS(parse_error(with(mistral, {{"attention_bias", true}})), "field 'attention_bias' = true is not supported for mistral");
  // Llama's attention_bias: q/k/v and o_proj biases.
  LlamaConfig biased = parse({{"attention_bias", true}});
  EXPECT_TRUE(biased.qkv_bias());
  EXPECT_TRUE(biased.o_bias());
  EXPECT_FALSE(parse({}).o_bias());
  EXPECT_FALSE(LlamaConfig::from_file(testing::source_file("tests/golden/family_qwen2/config.json")).o_bias());
  EXPECT_EQ(LlamaConfig::from_json(biased.to_json(), "round trip"), biased);
  EXPECT_NE(biased, parse({}));
}

// The published config.json files of the families (tests/golden/configs/, see tests/golden/README.md).
LlamaConfig golden_config(const std::string& name) {
  return LlamaConfig::from_file(testing::source_file("tests/golden/configs/" + name));
}

TEST(LlamaConfig, Llama31_8B) {
  LlamaConfig c = golden_config("Llama-3.1-8B.json");
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.architecture, "LlamaForCausalLM");
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.intermediate_size, 14336);
  EXPECT_EQ(c.num_hidden_layers, 32);
  EXPECT_EQ(c.num_attention_heads, 32);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_EQ(c.max_position_embeddings, 131072);
  EXPECT_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rope_type, "llama3");
  EXPECT_EQ(c.rope_factor, 8.0);
  EXPECT_EQ(c.rope_low_freq_factor, 1.0);
  EXPECT_EQ(c.rope_high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_original_max_position_embeddings, 8192);
  EXPECT_EQ(c.sliding_window, 0);
  EXPECT_FALSE(c.qkv_bias());
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_EQ(c.eos_token_id, 128001);
  EXPECT_EQ(c.head_dim(), 128);
  EXPECT_EQ(LlamaConfig::from_json(c.to_json(), "round trip"), c);
}

TEST(LlamaConfig, Llama32_1B) {
  LlamaConfig c = golden_config("Llama-3.2-1B.json");  // explicit head_dim 64 = 2048 / 32
  EXPECT_EQ(c.hidden_size, 2048);
  EXPECT_EQ(c.intermediate_size, 8192);
  EXPECT_EQ(c.num_hidden_layers, 16);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.head_dim(), 64);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.rope_type, "llama3");
  EXPECT_EQ(c.rope_factor, 32.0);
  EXPECT_EQ(c.rope_original_max_position_embeddings, 8192);
  EXPECT_EQ(LlamaConfig::from_json(c.to_json(), "round trip"), c);
}

TEST(LlamaConfig, Qwen2_7B) {
  LlamaConfig c = golden_config("Qwen2-7B.json");
  EXPECT_EQ(c.model_type, "qwen2");
  EXPECT_EQ(c.architecture, "Qwen2ForCausalLM");
  EXPECT_EQ(c.hidden_size, 3584);
  EXPECT_EQ(c.intermediate_size, 18944);
  EXPECT_EQ(c.num_hidden_layers, 28);
  EXPECT_EQ(c.num_attention_heads, 28);
  EXPECT_EQ(c.num_key_value_heads, 4);
  EXPECT_EQ(c.head_dim(), 128);
  EXPECT_EQ(c.vocab_size, 152064);
  EXPECT_EQ(c.max_position_embeddings, 131072);
  EXPECT_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.rope_theta, 1000000.0);
  EXPECT_EQ(c.rope_type, "default");
  EXPECT_EQ(c.sliding_window, 0);  // use_sliding_window false
  EXPECT_TRUE(c.qkv_bias());
  EXPECT_EQ(c.bos_token_id, 151643);
  EXPECT_EQ(LlamaConfig::from_json(c.to_json(), "round trip"), c);
  auto j = nlohmann::json::parse(c.to_json());
  EXPECT_EQ(j["model_type"], "qwen2");
  EXPECT_EQ(j["architectures"], nlohmann::json({"Qwen2ForCausalLM"}));
  EXPECT_EQ(j["use_sliding_window"], false);
}

TEST(LlamaConfig, Mistral_7B) {
  LlamaConfig c = golden_config("Mistral-7B-v0.1.json");
  EXPECT_EQ(c.model_type, "mistral");
  EXPECT_EQ(c.architecture, "MistralForCausalLM");
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.intermediate_size, 14336);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.vocab_size, 32000);
  EXPECT_EQ(c.max_position_embeddings, 32768);
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.rope_type, "default");
  EXPECT_EQ(c.sliding_window, 4096);
  EXPECT_FALSE(c.qkv_bias());
  EXPECT_EQ(LlamaConfig::from_json(c.to_json(), "round trip"), c);
  EXPECT_EQ(nlohmann::json::parse(c.to_json())["sliding_window"], 4096);
}

// transformers 5.x's rope_parameters and 4.x's rope_theta + rope_scaling say the same thing.
TEST(LlamaConfig, RopeLayoutsOfTransformers4And5) {
  const nlohmann::json scaling = {{"factor", 8.0}, {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                                  {"original_max_position_embeddings", 8192}};
  nlohmann::json v4 = scaling, v5 = scaling;
  v4["rope_type"] = "llama3";
  v5["rope_type"] = "llama3";
  v5["rope_theta"] = 500000.0;
  LlamaConfig a = parse({{"rope_theta", 500000.0}, {"rope_scaling", v4}});
  LlamaConfig b = parse({{"rope_parameters", v5}});
  EXPECT_EQ(a, b);
  EXPECT_EQ(a.rope_theta, 500000.0);
  EXPECT_EQ(a.rope_type, "llama3");
  EXPECT_EQ(LlamaConfig::from_json(a.to_json(), "round trip"), a);
  // The legacy "type" key, and linear scaling.
  LlamaConfig lin = parse({{"rope_scaling", {{"type", "linear"}, {"factor", 4.0}}}});
  EXPECT_EQ(lin.rope_type, "linear");
  EXPECT_EQ(lin.rope_factor, 4.0);
  EXPECT_EQ(lin, parse({{"rope_parameters", {{"rope_type", "linear"}, {"factor", 4.0}, {"rope_theta", 10000.0}}}}));
  EXPECT_EQ(LlamaConfig::from_json(lin.to_json(), "round trip"), lin);
  EXPECT_EQ(parse({{"rope_parameters", {{"rope_type", "default"}, {"rope_theta", 1e6}}}}).rope_theta, 1e6);
  EXPECT_CONTAINS(parse_error({{"rope_parameters", {{"rope_type", "default"}}}, {"rope_scaling", {{"type", "linear"}}}}),
                  "field 'rope_scaling' and 'rope_parameters' are both set");
}

// Against transformers' ROPE_INIT_FUNCTIONS (tests/golden/family_rope.json, float32 there).
TEST(LlamaConfig, RopeInverseFrequenciesEqualTransformers) {
  auto golden = nlohmann::json::parse(read_file(testing::source_file("tests/golden/family_rope.json")));
  int checked = 0;
  for (const auto& [name, entry] : golden.at("float32 inv_freq by config").items()) {
    const std::string path = name.find(".json") != std::string::npos ? "tests/golden/configs/" + name
                                                                      : "tests/golden/" + name + "/config.json";
    LlamaConfig c = LlamaConfig::from_file(testing::source_file(path));
    EXPECT_EQ(c.rope_type, entry.at("rope_type").get<std::string>()) << name;
    std::vector<double> want = entry.at("inv_freq").get<std::vector<double>>();
    std::vector<double> got = c.rope_inverse_frequencies();
    ASSERT_EQ(got.size(), want.size()) << name;
    for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-6 * want[i]) << name << " i=" << i;
    ++checked;
  }
  EXPECT_EQ(checked, 8);
  // llama3 scaling must change something for the test to mean anything: its low frequencies are / factor.
  LlamaConfig c = golden_config("Llama-3.1-8B.json");
  std::vector<double> scaled = c.rope_inverse_frequencies();
  c.rope_type = "default";
  std::vector<double> plain = c.rope_inverse_frequencies();
  EXPECT_EQ(scaled.front(), plain.front());
  EXPECT_NEAR(scaled.back(), plain.back() / 8, 1e-18);
}

TEST(LlamaConfig, Validation) {
  EXPECT_CONTAINS(parse_error({{"hidden_size", 0}}), "cfg.json: hidden_size must be positive, got 0");
  EXPECT_CONTAINS(parse_error({{"num_hidden_layers", -3}}), "num_hidden_layers must be positive, got -3");
  EXPECT_CONTAINS(parse_error({{"num_attention_heads", 5}}), "num_attention_heads (5) must divide hidden_size (64)");
  EXPECT_CONTAINS(parse_error({{"num_key_value_heads", 3}}), "num_key_value_heads (3) must divide num_attention_heads (4)");
  EXPECT_CONTAINS(parse_error({{"hidden_size", 60}, {"num_attention_heads", 4}}), "must be even");
  EXPECT_CONTAINS(parse_error({{"hidden_size", 4294967296}}), "hidden_size = 4294967296 is too large");
  EXPECT_CONTAINS(parse_error({{"rms_norm_eps", 0}}), "rms_norm_eps must be a positive number");
  EXPECT_CONTAINS(parse_error({{"rope_theta", -1.0}}), "rope_theta must be a positive number");
  EXPECT_CONTAINS(parse_error({{"torch_dtype", "int8"}}), "torch_dtype 'int8' is not supported");
  LlamaConfig c;  // all sizes 0
  EXPECT_CONTAINS(input_error([&] { c.validate("mine"); }), "mine: hidden_size must be positive");
}

// ------------------------------------------------------------------------------------------------
// Llama tensor layout
// ------------------------------------------------------------------------------------------------

LlamaConfig tiny_config(bool tied = false) {
  return parse({{"hidden_size", 8},
                {"intermediate_size", 12},
                {"num_attention_heads", 2},
                {"num_key_value_heads", 1},
                {"vocab_size", 10},
                {"tie_word_embeddings", tied}});
}

TEST(LlamaTensors, Layout) {
  const auto layout = llama_tensor_layout(tiny_config());
  ASSERT_EQ(layout.size(), 1u + 2 * 9 + 1 + 1);
  EXPECT_EQ(layout.front().name, "model.embed_tokens.weight");
  EXPECT_EQ(layout.front().shape, (std::vector<int64_t>{10, 8}));
  EXPECT_EQ(layout[1].name, "model.layers.0.input_layernorm.weight");
  EXPECT_EQ(layout[2].name, "model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(layout[2].shape, (std::vector<int64_t>{8, 8}));
  EXPECT_EQ(layout[3].name, "model.layers.0.self_attn.k_proj.weight");
  EXPECT_EQ(layout[3].shape, (std::vector<int64_t>{4, 8}));  // one kv head of head_dim 4
  EXPECT_EQ(layout[5].shape, (std::vector<int64_t>{8, 8}));  // o_proj
  EXPECT_EQ(layout[9].name, "model.layers.0.mlp.down_proj.weight");
  EXPECT_EQ(layout[9].shape, (std::vector<int64_t>{8, 12}));
  EXPECT_EQ(layout[19].name, "model.norm.weight");
  EXPECT_EQ(layout.back().name, "lm_head.weight");
  EXPECT_EQ(llama_tensor_layout(tiny_config(true)).back().name, "model.norm.weight");
}

TEST(LlamaTensors, Qwen2HasQkvBiases) {
  LlamaConfig c = tiny_config();
  c.model_type = "qwen2";
  c.architecture = "Qwen2ForCausalLM";
  const auto layout = llama_tensor_layout(c);
  ASSERT_EQ(layout.size(), 1u + 2 * 12 + 1 + 1);
  EXPECT_EQ(layout[5].name, "model.layers.0.self_attn.q_proj.bias");
  EXPECT_EQ(layout[5].shape, (std::vector<int64_t>{8}));
  EXPECT_EQ(layout[6].name, "model.layers.0.self_attn.k_proj.bias");
  EXPECT_EQ(layout[6].shape, (std::vector<int64_t>{4}));
  EXPECT_EQ(layout[7].name, "model.layers.0.self_attn.v_proj.bias");
  EXPECT_EQ(layout[8].name, "model.layers.0.self_attn.o_proj.weight");
  // The checkpoint transformers saved passes; read as a Llama its biases are unexpected, and the reverse.
  const std::string dir = testing::source_file("tests/golden/family_qwen2");
  LlamaConfig qwen = LlamaConfig::from_file(dir + "/config.json");
  Checkpoint ckpt = Checkpoint::open(dir);
  EXPECT_NO_THROW(check_llama_checkpoint(ckpt, qwen));
  LlamaConfig as_llama = qwen;
  as_llama.model_type = "llama";
  as_llama.architecture = "LlamaForCausalLM";
  std::string err = input_error([&] { check_llama_checkpoint(ckpt, as_llama); });
  EXPECT_CONTAINS(err, "unexpected tensor 'model.layers.0.self_attn.q_proj.bias'");
  LlamaConfig llama = LlamaConfig::from_file(testing::source_file("tests/golden/family_llama3/config.json"));
  llama.model_type = "qwen2";
  llama.architecture = "Qwen2ForCausalLM";
  err = input_error([&] { check_llama_checkpoint(Checkpoint::open(testing::source_file("tests/golden/family_llama3")), llama); });
  EXPECT_CONTAINS(err, "missing tensor 'model.layers.1.self_attn.v_proj.bias' (expected shape [16])");
}

TEST(LlamaTensors, LlamaAttentionBiasAddsOProjBias) {
  LlamaConfig c = tiny_config();
  c.attention_bias = true;
  const auto layout = llama_tensor_layout(c);
  ASSERT_EQ(layout.size(), 1u + 2 * 13 + 1 + 1);
  EXPECT_EQ(layout[5].name, "model.layers.0.self_attn.q_proj.bias");
  EXPECT_EQ(layout[8].name, "model.layers.0.self_attn.o_proj.weight");
  EXPECT_EQ(layout[9].name, "model.layers.0.self_attn.o_proj.bias");
  EXPECT_EQ(layout[9].shape, (std::vector<int64_t>{8}));
  const std::string dir = testing::source_file("tests/golden/family_linear");  // transformers' attention_bias model
  EXPECT_NO_THROW(check_llama_checkpoint(Checkpoint::open(dir), LlamaConfig::from_file(dir + "/config.json")));
}

TEST(LlamaTensors, Llama2_70B_LayoutSize) {
  LP_REQUIRE_DATA(path, "llama2/Llama-2-70b-chat-hf/config.json");
  const auto layout = llama_tensor_layout(LlamaConfig::from_file(path));
  EXPECT_EQ(layout.size(), 3u + 80 * 9);
  int64_t params = 0;
  for (const auto& t : layout) {
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    params += n;
  }
  EXPECT_EQ(params, 68976648192);  // Llama-2-70B's parameter count
}

// Writes a checkpoint for `config`, changed by `edit` (which may add, drop or alter tensors).
class CheckpointCheck : public ::testing::Test {
 protected:
  template <typename Edit>
  Checkpoint write(const LlamaConfig& config, Edit edit) {
    std::vector<TensorToWrite> tensors;
    for (const auto& e : llama_tensor_layout(config)) {
      int64_t n = 1;
      for (int64_t d : e.shape) n *= d;
      tensors.push_back({e.name, DType::F32, e.shape, zeros.data(), size_t(n) * 4});
    }
    edit(tensors);
    write_safetensors(dir.file("model.safetensors"), tensors);
    return Checkpoint::open(dir.path());
  }
  std::string check_error(const LlamaConfig& config, std::function<void(std::vector<TensorToWrite>&)> edit) {
    Checkpoint c = write(config, edit);
    return input_error([&] { check_llama_checkpoint(c, config); });
  }
  static void drop(std::vector<TensorToWrite>& ts, const std::string& name) {
    ts.erase(std::remove_if(ts.begin(), ts.end(), [&](const TensorToWrite& t) { return t.name == name; }), ts.end());
  }
  TempDir dir;
  std::vector<float> zeros = std::vector<float>(1000, 0.f);
  std::string file() const { return dir.file("model.safetensors"); }
};

TEST_F(CheckpointCheck, MatchingCheckpointPasses) {
  LlamaConfig c = tiny_config();
  // An old export's rotary buffer is ignored.
  EXPECT_NO_THROW(check_llama_checkpoint(write(c, [&](auto& ts) {
    ts.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq", DType::F32, {2}, zeros.data(), 8});
  }), c));
  LlamaConfig tied = tiny_config(true);
  EXPECT_NO_THROW(check_llama_checkpoint(write(tied, [](auto&) {}), tied));
  // BF16 and F16 are fine.
  EXPECT_NO_THROW(check_llama_checkpoint(write(c, [](auto& ts) {
    ts[0].dtype = DType::BF16;
    ts[0].nbytes /= 2;
    ts[1].dtype = DType::F16;
    ts[1].nbytes /= 2;
  }), c));
}

TEST_F(CheckpointCheck, Missing) {
  std::string err = check_error(tiny_config(), [](auto& ts) { drop(ts, "model.layers.1.mlp.up_proj.weight"); });
  EXPECT_CONTAINS(err, "does not match its Llama config (2 layers, hidden 8): 1 problem\n");
  EXPECT_CONTAINS(err, dir.path() + ": missing tensor 'model.layers.1.mlp.up_proj.weight' (expected shape [12, 8])");
}

TEST_F(CheckpointCheck, Unexpected) {
  std::string err = check_error(tiny_config(), [&](auto& ts) {
    ts.push_back({"model.layers.2.input_layernorm.weight", DType::F32, {8}, zeros.data(), 32});
  });
  EXPECT_CONTAINS(err, file() + ": unexpected tensor 'model.layers.2.input_layernorm.weight'");
  err = check_error(tiny_config(true), [&](auto& ts) {
    ts.push_back({"lm_head.weight", DType::F32, {10, 8}, zeros.data(), 320});
  });
  EXPECT_CONTAINS(err, "unexpected tensor 'lm_head.weight' (the config ties the output head");
}

TEST_F(CheckpointCheck, WrongShapeAndDtype) {
  std::string err = check_error(tiny_config(), [](auto& ts) {
    for (auto& t : ts)
      if (t.name == "model.layers.0.self_attn.k_proj.weight") t.shape = {8, 8}, t.nbytes = 256;
      else if (t.name == "model.norm.weight") t.dtype = DType::I32;
      else if (t.name == "lm_head.weight") t.dtype = DType::F64, t.shape = {10, 4};
  });
  EXPECT_CONTAINS(err, "4 problems");
  EXPECT_CONTAINS(err, file() + ": tensor 'model.layers.0.self_attn.k_proj.weight' has shape [8, 8], expected [4, 8]");
  EXPECT_CONTAINS(err, file() + ": tensor 'model.norm.weight' has dtype I32, expected F32, F16 or BF16");
  EXPECT_CONTAINS(err, file() + ": tensor 'lm_head.weight' has shape [10, 4], expected [10, 8]");
  EXPECT_CONTAINS(err, file() + ": tensor 'lm_head.weight' has dtype F64");
}

TEST_F(CheckpointCheck, ManyProblemsAreCapped) {
  // A checkpoint of a different size: every layer tensor is wrong.
  LlamaConfig c = tiny_config();
  Checkpoint ckpt = write(c, [](auto&) {});
  LlamaConfig deeper = c;
  deeper.num_hidden_layers = 10;
  const std::string err = input_error([&] { check_llama_checkpoint(ckpt, deeper); });
  EXPECT_CONTAINS(err, "72 problems");
  EXPECT_CONTAINS(err, "... and 52 more");
}

}  // namespace
}  // namespace layerprune
