// The Hugging Face Llama config.json: the hyperparameters that fix a checkpoint's tensor shapes and the
// forward pass. Fields and defaults follow transformers' LlamaConfig; options this project's model does not
// implement (RoPE scaling, biases, activations other than SiLU, a head_dim other than hidden/heads) are
// rejected rather than silently ignored, so that a config we cannot run faithfully never loads.
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
  std::string torch_dtype = "float32";  // "float32", "float16" or "bfloat16"
  int64_t bos_token_id = 1, eos_token_id = 2;

  int64_t head_dim() const;  // hidden_size / num_attention_heads
  int64_t kv_dim() const;    // num_key_value_heads * head_dim()

  // Parses and validates an HF config.json. Required: hidden_size, intermediate_size, num_hidden_layers,
  // num_attention_heads, vocab_size; everything else takes LlamaConfig's default (num_key_value_heads:
  // num_attention_heads). A null value means "use the default", as in Python. eos_token_id may be a list
  // (Llama 3): the first id is kept. Throws InputError naming `source_name` and the field.
  static LlamaConfig from_json(const std::string& text, const std::string& source_name);
  static LlamaConfig from_file(const std::string& path);
  // An HF-compatible config.json (model_type "llama", architectures [...]); from_json(to_json()) == *this.
  std::string to_json() const;
  // Positive sizes (each within int32, so a product of two fits int64), heads divide hidden, kv heads divide
  // heads, even head_dim (RoPE rotates pairs), positive finite eps and theta, a supported dtype.
  void validate(const std::string& source_name) const;
};

bool operator==(const LlamaConfig& a, const LlamaConfig& b);
inline bool operator!=(const LlamaConfig& a, const LlamaConfig& b) { return !(a == b); }

// How tp ranks split the heads (Megatron layout, model/tensor_parallel.h): the query heads evenly; the KV
// heads evenly when KV % tp == 0, else one per rank replicated on tp/KV ranks when tp % KV == 0. Anything
// else, or fewer FFN features than ranks, is an InputError naming the numbers. Shared by the model and the
// planner so both refuse the same shapes with the same words.
struct HeadSplit {
  int64_t heads_per_rank = 0, kv_heads_per_rank = 0;
  bool kv_replicated = false;
};
HeadSplit split_heads(const LlamaConfig& config, int tp);

}  // namespace layerprune
