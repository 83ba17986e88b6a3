#include "worker/llama_config.h"

#include <optional>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/text_file.h"

namespace layerprune {

namespace {

using nlohmann::json;

int64_t get_int(const json& j, const char* key, const std::string& src, std::optional<int64_t> fallback) {
  if (!j.contains(key) || j[key].is_null()) {
    if (fallback) return *fallback;
    throw InputError(src + ": missing required field \"" + key + "\"");
  }
  if (!j[key].is_number_integer())
    throw InputError(src + ": field \"" + key + "\" must be an integer, found " + j[key].dump());
  return j[key].get<int64_t>();
}

double get_double(const json& j, const char* key, const std::string& src, double fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_number()) throw InputError(src + ": field \"" + key + "\" must be a number, found " + j[key].dump());
  return j[key].get<double>();
}

}  // namespace

LlamaConfig LlamaConfig::from_json(const std::string& text, const std::string& src) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    throw InputError(src + ": invalid JSON (" + e.what() + ")");
  }
  if (!j.is_object()) throw InputError(src + ": expected a JSON object");
  std::string model_type = j.value("model_type", std::string());
  std::string arch;
  if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
      j["architectures"][0].is_string())
    arch = j["architectures"][0].get<std::string>();
  if (model_type != "llama" && arch != "LlamaForCausalLM")
    throw InputError(src + ": unsupported architecture (model_type \"" + model_type + "\", architectures [\"" + arch +
                     "\"]); supported: Llama-family models (model_type \"llama\", LlamaForCausalLM)");
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null())
    throw InputError(src + ": rope_scaling " + j["rope_scaling"].dump() + " is not supported (only plain RoPE)");
  LlamaConfig c;
  c.architecture = arch.empty() ? "LlamaForCausalLM" : arch;
  c.hidden_size = get_int(j, "hidden_size", src, std::nullopt);
  c.intermediate_size = get_int(j, "intermediate_size", src, std::nullopt);
  c.num_hidden_layers = get_int(j, "num_hidden_layers", src, std::nullopt);
  c.num_attention_heads = get_int(j, "num_attention_heads", src, std::nullopt);
  c.num_key_value_heads = get_int(j, "num_key_value_heads", src, c.num_attention_heads);
  c.vocab_size = get_int(j, "vocab_size", src, std::nullopt);
  c.max_position_embeddings = get_int(j, "max_position_embeddings", src, 2048);
  c.rms_norm_eps = get_double(j, "rms_norm_eps", src, 1e-6);
  c.rope_theta = get_double(j, "rope_theta", src, 10000.0);
  if (j.contains("tie_word_embeddings") && !j["tie_word_embeddings"].is_null()) {
    if (!j["tie_word_embeddings"].is_boolean())
      throw InputError(src + ": field \"tie_word_embeddings\" must be true or false");
    c.tie_word_embeddings = j["tie_word_embeddings"].get<bool>();
  }
  if (j.contains("torch_dtype") && j["torch_dtype"].is_string()) c.torch_dtype = j["torch_dtype"].get<std::string>();
  c.bos_token_id = get_int(j, "bos_token_id", src, 1);
  c.eos_token_id = get_int(j, "eos_token_id", src, 2);
  c.validate(src);
  return c;
}

LlamaConfig LlamaConfig::from_file(const std::string& path) { return from_json(read_file(path), path); }

std::string LlamaConfig::to_json() const {
  json j = {{"architectures", {architecture}},
            {"model_type", "llama"},
            {"hidden_size", hidden_size},
            {"intermediate_size", intermediate_size},
            {"num_hidden_layers", num_hidden_layers},
            {"num_attention_heads", num_attention_heads},
            {"num_key_value_heads", num_key_value_heads},
            {"vocab_size", vocab_size},
            {"max_position_embeddings", max_position_embeddings},
            {"rms_norm_eps", rms_norm_eps},
            {"rope_theta", rope_theta},
            {"rope_scaling", nullptr},
            {"hidden_act", "silu"},
            {"tie_word_embeddings", tie_word_embeddings},
            {"torch_dtype", torch_dtype},
            {"bos_token_id", bos_token_id},
            {"eos_token_id", eos_token_id}};
  return j.dump(2) + "\n";
}

void LlamaConfig::validate(const std::string& src) const {
  auto positive = [&](const char* name, int64_t v) {
    if (v <= 0) throw InputError(src + ": " + name + " must be positive, found " + std::to_string(v));
  };
  positive("hidden_size", hidden_size);
  positive("intermediate_size", intermediate_size);
  positive("num_hidden_layers", num_hidden_layers);
  positive("num_attention_heads", num_attention_heads);
  positive("num_key_value_heads", num_key_value_heads);
  positive("vocab_size", vocab_size);
  positive("max_position_embeddings", max_position_embeddings);
  if (hidden_size % num_attention_heads != 0)
    throw InputError(src + ": hidden_size " + std::to_string(hidden_size) + " is not divisible by num_attention_heads " +
                     std::to_string(num_attention_heads));
  if (num_attention_heads % num_key_value_heads != 0)
    throw InputError(src + ": num_attention_heads " + std::to_string(num_attention_heads) +
                     " is not divisible by num_key_value_heads " + std::to_string(num_key_value_heads));
  if (head_dim() % 2 != 0)
    throw InputError(src + ": head dimension " + std::to_string(head_dim()) + " is odd; RoPE rotates pairs");
  if (!(rms_norm_eps > 0)) throw InputError(src + ": rms_norm_eps must be positive");
  if (!(rope_theta > 0)) throw InputError(src + ": rope_theta must be positive");
}

bool LlamaConfig::operator==(const LlamaConfig& o) const {
  return architecture == o.architecture && hidden_size == o.hidden_size && intermediate_size == o.intermediate_size &&
         num_hidden_layers == o.num_hidden_layers && num_attention_heads == o.num_attention_heads &&
         num_key_value_heads == o.num_key_value_heads && vocab_size == o.vocab_size &&
         max_position_embeddings == o.max_position_embeddings && rms_norm_eps == o.rms_norm_eps &&
         rope_theta == o.rope_theta && tie_word_embeddings == o.tie_word_embeddings && torch_dtype == o.torch_dtype &&
         bos_token_id == o.bos_token_id && eos_token_id == o.eos_token_id;
}

}  // namespace layerprune
