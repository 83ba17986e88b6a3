// A Llama-family model's shape, read from (and written as) a Hugging Face config.json.
#pragma once
#include <cstdint>
#include <string>

namespace layerprune {

struct LlamaConfig {
  std::string architecture = "LlamaForCausalLM";
  int64_t hidden_size = 0, intermediate_size = 0, num_hidden_layers = 0, num_attention_heads = 0,
          num_key_value_heads = 0, vocab_size = 0, max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6, rope_theta = 10000.0;
  bool tie_word_embeddings = false;
  std::string torch_dtype = "float32";
  int64_t bos_token_id = 1, eos_token_id = 2;

  int64_t head_dim() const { return num_attention_heads ? hidden_size / num_attention_heads : 0; }
  int64_t kv_dim() const { return num_key_value_heads * head_dim(); }

  // HF config.json text. Defaults as transformers' LlamaConfig: num_key_value_heads = num_attention_heads,
  // rope_theta 10000, tie_word_embeddings false. InputError naming `source_name` and the field otherwise.
  static LlamaConfig from_json(const std::string& text, const std::string& source_name);
  static LlamaConfig from_file(const std::string& path);
  std::string to_json() const;
  // Positive sizes; heads divide hidden_size; kv heads divide heads; even head_dim (RoPE rotates pairs).
  void validate(const std::string& source_name) const;

  bool operator==(const LlamaConfig& o) const;
};

}  // namespace layerprune
