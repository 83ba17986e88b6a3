// A llama.cpp GGUF Llama as a Hugging Face model: the config from the `llama.*` keys, the tensor names and
// layouts, the byte-level BPE tokenizer from `tokenizer.ggml.*`, and `convert_gguf`, which writes all of it
// as a Hugging Face-layout directory (float32 weights). Torch-free.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "formats/gguf.h"
#include "formats/llama_config.h"

namespace layerprune {

// The LlamaConfig a GGUF file describes. Refuses (InputError naming the file and the key) another
// `general.architecture`, and any `llama.*` key the model cannot honour: RoPE scaling, experts, a rope
// dimension or key/value length other than hidden/heads, or a key this reader does not know (so that
// nothing the file says about the model is silently dropped). Vocab size from tokenizer.ggml.tokens or
// token_embd (which must agree); tie_word_embeddings when there is no output.weight; BOS/EOS from
// tokenizer.ggml.{bos,eos}_token_id; float32 dtype (what convert_gguf writes).
LlamaConfig gguf_llama_config(const GgufFile& file);

// "blk.3.attn_q.weight" -> "model.layers.3.self_attn.q_proj.weight", "token_embd.weight" ->
// "model.embed_tokens.weight", ...; "" for a name with no Hugging Face Llama counterpart.
std::string gguf_to_hf_tensor_name(const std::string& gguf_name);

// llama.cpp's convert_hf_to_gguf.py (LlamaModel.permute) interleaves the two halves of every head's rows
// of q_proj/k_proj for its RoPE, which rotates adjacent pairs: GGUF row h*hd + 2*i + j holds Hugging Face
// row h*hd + j*hd/2 + i (i < hd/2, j in {0, 1}). This undoes it: `src` [heads*hd, cols] in GGUF row order,
// `dst` the same rows in Hugging Face (rotate-half) order. rows must be a multiple of 2 * heads.
void unpermute_rope_rows(const float* src, float* dst, int64_t rows, int64_t cols, int64_t heads);

// One tensor dequantised to float32 in Hugging Face layout (row-major in shape(), q/k rows unpermuted).
std::vector<float> gguf_llama_tensor(const GgufFile& file, const GgufTensor& t, const LlamaConfig& config);

// The Hugging Face tokenizer files for the byte-level BPE vocabulary in the metadata (tokenizer.ggml.model
// "gpt2"): tokenizer.json (BPE model with vocab and merges, the pre-tokenizer for tokenizer.ggml.pre,
// byte-level decoder, control tokens as special added tokens) and tokenizer_config.json. Supported `pre`
// values are listed in docs/formats.md; others are refused with the value named.
struct HfTokenizerFiles {
  std::string tokenizer_json, tokenizer_config_json;
};
HfTokenizerFiles gguf_hf_tokenizer(const GgufFile& file, const LlamaConfig& config);

struct GgufImport {
  LlamaConfig config;
  int64_t parameters = 0;  // stored weights (tied embeddings counted once)
  size_t tensors = 0;      // written to model.safetensors
};
// Writes out_dir (created if needed): config.json, model.safetensors (float32, llama_tensor_layout's names
// and order; no lm_head.weight when tied), tokenizer.json, tokenizer_config.json. Progress on stderr.
GgufImport convert_gguf(const std::string& gguf_path, const std::string& out_dir);

}  // namespace layerprune
