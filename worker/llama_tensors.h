// The Hugging Face tensor names and shapes of a Llama checkpoint (LlamaForCausalLM's state dict).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "worker/llama_config.h"
#include "worker/safetensors.h"

namespace layerprune {

struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> shape;
};

// model.embed_tokens.weight [V, D]; per layer i, model.layers.{i}.: input_layernorm.weight [D],
// self_attn.{q_proj [H*hd, D], k_proj [KV*hd, D], v_proj [KV*hd, D], o_proj [D, H*hd]}.weight,
// post_attention_layernorm.weight [D], mlp.{gate_proj [F, D], up_proj [F, D], down_proj [D, F]}.weight;
// model.norm.weight [D]; lm_head.weight [V, D] unless tie_word_embeddings.
std::vector<ExpectedTensor> llama_tensor_layout(const LlamaConfig& config);

// Throws one InputError listing every missing tensor, unexpected tensor, wrong shape and dtype other than
// F32/F16/BF16, each with its file. Rotary inv_freq buffers (older HF exports) are ignored.
void check_llama_checkpoint(const Checkpoint& ckpt, const LlamaConfig& config);

}  // namespace layerprune
