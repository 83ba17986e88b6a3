// The Hugging Face config.json of the Llama-architecture families this project runs: Llama (1, 2, 3.x),
// Mistral and Qwen2. They share one decoder (RMSNorm, RoPE, grouped-query attention, SwiGLU); they differ in
// RoPE scaling (Llama 3.x: "llama3"; "linear"), Mistral's sliding-window attention and Qwen2's q/k/v
// biases. Fields and defaults follow transformers' LlamaConfig, MistralConfig and Qwen2Config, as 4.x
// writes them (top-level rope_theta, rope_scaling) and as 5.x does (rope_parameters). Options the model
// does not implement (other RoPE types, MLP biases, activations other than SiLU, a head_dim other
// than hidden/heads, Qwen2's sliding window) are rejected naming the field, never silently ignored, so
// that a config we cannot run faithfully never loads.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace layerprune {

struct LlamaConfig {
  // The family: transformers' model_type ("llama", "mistral", "qwen2") and its causal-LM class.
  std::string model_type = "llama";
  std::string architecture = "LlamaForCausalLM";
  int64_t hidden_size = 0, intermediate_size = 0, num_hidden_layers = 0, num_attention_heads = 0,
          num_key_value_heads = 0, vocab_size = 0, max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6, rope_theta = 10000.0;
  bool tie_word_embeddings = false;
  std::string torch_dtype = "float32";  // "float32", "float16" or "bfloat16"
  int64_t bos_token_id = 1, eos_token_id = 2;
  // RoPE frequency scaling (transformers' rope_type): "default" (none), "linear" (positions / factor) or
  // "llama3" (Llama 3.1's wavelength-dependent scaling; the other three fields). Unused fields stay 0.
  std::string rope_type = "default";
  double rope_factor = 0, rope_low_freq_factor = 0, rope_high_freq_factor = 0;
  int64_t rope_original_max_position_embeddings = 0;
  // Mistral: a query at position p sees keys at positions p - sliding_window < j <= p; 0 = no window.
  int64_t sliding_window = 0;
  // Llama's attention_bias: biases on q_proj, k_proj, v_proj and o_proj (LlamaAttention's bias= flag).
  bool attention_bias = false;

  int64_t head_dim() const;  // hidden_size / num_attention_heads
  int64_t kv_dim() const;    // num_key_value_heads * head_dim()
  // Biases on q_proj, k_proj and v_proj: Qwen2Attention always has them (its o_proj none); a Llama with
  // attention_bias has them and one on o_proj too; Mistral has none.
  bool qkv_bias() const { return model_type == "qwen2" || attention_bias; }
  bool o_bias() const { return attention_bias; }

  // RoPE's inverse frequencies w_i, i < head_dim/2, with the config's scaling applied: theta^(-2i/hd), then
  // transformers' _compute_llama3_parameters or _compute_linear_scaling_rope_parameters. Both forward
  // passes (model/llama.cc, model/lora.cc) build their cos/sin tables from this one function.
  std::vector<double> rope_inverse_frequencies() const;

  // Parses and validates an HF config.json. Required: hidden_size, intermediate_size, num_hidden_layers,
  // num_attention_heads, vocab_size; everything else takes LlamaConfig's default (num_key_value_heads:
  // num_attention_heads). A null value means "use the default", as in Python. eos_token_id may be a list
  // (Llama 3): the first id is kept. Throws InputError naming `source_name` and the field.
  static LlamaConfig from_json(const std::string& text, const std::string& source_name);
  static LlamaConfig from_file(const std::string& path);
  // An HF-compatible config.json of the family (model_type, architectures [...]) in transformers 4.x's
  // layout (top-level rope_theta and rope_scaling, which 5.x reads too); from_json(to_json()) == *this.
  std::string to_json() const;
  // Positive sizes (each within int32, so a product of two fits int64), heads divide hidden, kv heads divide
  // heads, even head_dim (RoPE rotates pairs), positive finite eps and theta, a supported dtype, a known
  // family and RoPE type with sane scaling numbers, a non-negative sliding window.
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
