// HF config.json parsing (the real Llama-2 configs, defaults, wrong types, unsupported options) and the Llama
// tensor-layout check of a checkpoint.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>

#include <nlohmann/json.hpp>

#include "common/error.h"
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
  std::string err = parse_error({{"model_type", "mistral"}, {"architectures", {"MistralForCausalLM"}}});
  EXPECT_CONTAINS(err, "cfg.json: unsupported model (model_type 'mistral', architectures [MistralForCausalLM])");
  EXPECT_CONTAINS(err, "supported: model_type 'llama' with architecture LlamaForCausalLM");
  err = parse_error({{"architectures", {"LlamaForSequenceClassification"}}});
  EXPECT_CONTAINS(err, "LlamaForSequenceClassification");
  err = parse_error({{"architectures", nullptr}, {"model_type", nullptr}});
  EXPECT_CONTAINS(err, "model_type (none), architectures []");
  EXPECT_CONTAINS(parse_error({{"architectures", "LlamaForCausalLM"}}), "field 'architectures' must be a list of strings");
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
  EXPECT_CONTAINS(input_error([] { LlamaConfig::from_file("/nonexistent/config.json"); }), "/nonexistent/config.json");
}

TEST(LlamaConfig, UnsupportedOptions) {
  std::string err = parse_error({{"rope_scaling", {{"type", "linear"}, {"factor", 2.0}}}});
  EXPECT_CONTAINS(err, "cfg.json: field 'rope_scaling' is not supported");
  EXPECT_CONTAINS(err, "linear");
  EXPECT_CONTAINS(parse_error({{"hidden_act", "gelu"}}), "field 'hidden_act' 'gelu' is not supported");
  EXPECT_CONTAINS(parse_error({{"attention_bias", true}}), "field 'attention_bias' = true is not supported");
  EXPECT_CONTAINS(parse_error({{"head_dim", 32}}), "field 'head_dim' = 32 is not supported");
  EXPECT_NO_THROW(parse({{"head_dim", 16}, {"attention_bias", false}, {"mlp_bias", false}, {"hidden_act", "silu"}}));
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
