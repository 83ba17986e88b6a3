// The Hugging Face tensor naming and shape contract for Llama (LlamaForCausalLM's state dict), and the check
// that a checkpoint honours it before anything is loaded.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "formats/llama_config.h"
#include "formats/safetensors.h"

namespace layerprune {

// With V vocab, D hidden, F intermediate, H heads, KV key/value heads, hd head_dim:
// model.embed_tokens.weight [V,D]; per layer i: model.layers.{i}.input_layernorm.weight [D],
// self_attn.{q_proj [H*hd, D], k_proj [KV*hd, D], v_proj [KV*hd, D], o_proj [D, H*hd]}.weight,
// (Qwen2 and Llama with attention_bias: self_attn.{q_proj [H*hd], k_proj [KV*hd], v_proj [KV*hd]}.bias
// after v_proj.weight; Llama with attention_bias also self_attn.o_proj.bias [D] after o_proj.weight),
// post_attention_layernorm.weight [D], mlp.{gate_proj [F,D], up_proj [F,D], down_proj [D,F]}.weight;
// model.norm.weight [D]; lm_head.weight [V,D] unless tie_word_embeddings. In this order.
std::vector<ExpectedTensor> llama_tensor_layout(const LlamaConfig& config);

// Throws one InputError listing every problem, one per line: missing tensors, unexpected tensors, wrong
// shapes, and dtypes other than F32/F16/BF16, each naming the file (or the checkpoint) and the tensor.
// Ignores "*.rotary_emb.inv_freq" buffers, which old HF exports saved but which are recomputed from rope_theta.
void check_llama_checkpoint(const Checkpoint& ckpt, const LlamaConfig& config);

}  // namespace layerprune
