// Import of llama2.c checkpoints (Karpathy's run.c "legacy" version-0 format) into a Hugging Face-layout
// model directory that the rest of layerprune loads.
#pragma once
#include <string>

#include "formats/llama_config.h"

namespace layerprune {

struct Llama2cImport {
  LlamaConfig config;
  bool shared_classifier = true;  // llama2.c: vocab_size > 0 in the header means lm_head = embedding
  int64_t parameters = 0;         // real parameters (without the unused RoPE tables)
};

// Reads `checkpoint` (7 x int32 header dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len,
// then float32 weights), permutes the q/k rows from llama2.c's interleaved RoPE pairs to HF's rotate-half
// halves, and writes out_dir/{config.json, model.safetensors, tokenizer.model}. The tokenizer is the
// SentencePiece model the checkpoint was trained with; its vocabulary size must match.
Llama2cImport convert_llama2c(const std::string& checkpoint, const std::string& tokenizer_model,
                              const std::string& out_dir);

}  // namespace layerprune
