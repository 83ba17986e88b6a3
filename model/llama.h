// The Llama decoder (Touvron et al. 2023; Hugging Face's LlamaForCausalLM layout) on LibTorch, and the
// families that share it (formats/llama_config.h): Llama 3.x's scaled RoPE, Mistral's sliding-window
// attention (a query at position p attends to keys p - window < j <= p, as transformers' sliding-window
// causal mask), Qwen2's q/k/v biases (and Llama's attention_bias: q/k/v/o).
//
// One forward pass, read top to bottom like the equations:
//   x_0 = embed(tokens)
//   for each kept layer l:   x += W_o attn(rope(W_q n(x)), rope(W_k n(x)), W_v n(x))      n = RMSNorm
//                            x += W_down (silu(W_gate n(x)) * W_up n(x))
//   logits = W_head n_final(x)
// The pruning stages need the hidden states: the input of every kept layer and the last layer's output
// before the final norm (paper Eq. 7 compares them). A model runs with any subset of its layers by
// skipping, never copying, weights.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <memory>
#include <string>
#include <vector>

#include "model/comm.h"
#include "formats/llama_config.h"
#include "model/tensor_parallel.h"

namespace layerprune {

struct LlamaLayerWeights {
  at::Tensor attn_norm;                 // [D]
  at::Tensor wq, wk, wv, wo;            // [H*hd, D], [KV*hd, D], [KV*hd, D], [D, H*hd]
  at::Tensor bq, bk, bv;                // [H*hd], [KV*hd], [KV*hd]: Qwen2's biases (undefined otherwise)
  at::Tensor bo;                        // [D]: Llama's attention_bias (undefined otherwise)
  at::Tensor ffn_norm;                  // [D]
  at::Tensor w_gate, w_up, w_down;      // [F, D], [F, D], [D, F]
};

struct LlamaWeights {
  at::Tensor embed;                     // [V, D]
  std::vector<LlamaLayerWeights> layers;
  at::Tensor final_norm;                // [D]
  at::Tensor lm_head;                   // [V, D] (the embedding itself when tied)
};

// Keys and values of the positions seen so far, per kept layer: [B, KV, T_seen, hd] each.
struct KVCache {
  std::vector<at::Tensor> k, v;
  int64_t length = 0;  // positions cached
};

struct ForwardOptions {
  // Indices of the layers to run, in order (empty = all). Pruned models are a list of kept layers.
  std::vector<int64_t> layers;
  // Also return the hidden states (inputs of each kept layer + final output before the norm).
  bool return_hidden = false;
  // Compute logits (the LM head is a large share of the work; distance passes skip it).
  bool logits = true;
  // Logits at chosen positions only: when defined (int64 [N], flat indices b*T + t into the batch's [B, T],
  // any order, repeats allowed), the final norm and the LM head run on those N hidden states alone and the
  // logits are [N, V]. The scorer reads a few positions per row (its continuations'), and the head is a
  // large share of a small model's work (SmolLM2-135M: 49152 x 576, 57 of 287 MFLOP per token at 512
  // positions). Undefined: logits at every position, [B, T, V]. Under tensor parallelism every rank passes
  // the same positions (the head's all-gather then carries N rows instead of B*T).
  at::Tensor logit_positions;
  // Resume from a hidden state: when defined ([B, T, D], compute dtype), it is the input of the first layer
  // in `layers` instead of the embedding of `tokens` (which still give the batch shape and positions).
  // The shared-prefix sweep runs the layers every variant shares once and resumes each variant from there.
  at::Tensor input_hidden;
  // Attention through at::scaled_dot_product_attention also on the CPU. Off the CPU (CUDA) attention always
  // goes that way (flash or memory-efficient kernels, GQA without copying K/V); on the CPU the blocked path
  // below is faster. Tests set it to check the device path against the CPU path on any machine.
  bool sdpa_attention = false;
  // Logits with a NaN or Inf throw NonFiniteError naming the first layer whose output was non-finite (a
  // sum over the logits per call; the layer search re-runs the call only once the result is bad).
  bool check_finite = true;
};

struct ForwardResult {
  at::Tensor logits;                    // [B, T, V] float32, or [N, V] at options.logit_positions
                                        // (undefined when options.logits is false)
  std::vector<at::Tensor> hidden;       // n_kept + 1 tensors of [B, T, D] (compute dtype)
};

struct LoadOptions {
  std::string dtype = "float32";        // compute dtype: float32 or bfloat16
  bool check_tensors = true;            // verify names/shapes against config.json
  // A tensor-parallel group (model/tensor_parallel.h): load only this rank's shard and run the forward
  // pass with the group. Null or size 1: the whole model in this process.
  std::shared_ptr<Communicator> comm;
  // Where the weights go and the forward pass runs (model/device.h): the CPU keeps zero-copy views of the
  // checkpoint mapping; a GPU gets each tensor copied from the mapping on its own (never a whole host copy).
  c10::Device device = c10::Device(c10::kCPU);
};

class LlamaModel {
 public:
  // Weights of the whole model, or, with `tp`, of that rank's shard (shapes as tensor_parallel.h says).
  LlamaModel(LlamaConfig config, LlamaWeights weights, std::shared_ptr<const TensorParallel> tp = nullptr);

  // Loads a Hugging Face-layout directory: config.json + model.safetensors (or a sharded index).
  // Weights whose dtype matches the compute dtype are zero-copy views of the memory-mapped file.
  static LlamaModel load(const std::string& dir, const LoadOptions& options = {});

  const LlamaConfig& config() const { return config_; }
  const LlamaWeights& weights() const { return weights_; }
  at::ScalarType dtype() const { return weights_.embed.scalar_type(); }
  c10::Device device() const { return weights_.embed.device(); }
  // Bytes of weights mapped from the checkpoint vs copied into memory at load (dtype conversions, or to a
  // GPU: every byte there is copied).
  uint64_t mapped_bytes() const { return mapped_bytes_; }
  uint64_t copied_bytes() const { return copied_bytes_; }
  // Bytes of the checkpoint this process read: its shard under tensor parallelism, else the whole model.
  uint64_t loaded_bytes() const { return loaded_bytes_; }
  // The checkpoint files the weights come from (empty for a model built in memory).
  const std::vector<std::string>& checkpoint_files() const { return files_; }
  // The tensor-parallel group this model is a shard of (null: a whole model).
  const TensorParallel* tensor_parallel() const { return tp_.get(); }
  // This model's config, tensor-parallel group and checkpoint mapping with other weights of the same
  // shapes (healed models: merged adapters); tensors not replaced may stay views of this model's mapping.
  LlamaModel with_weights(LlamaWeights weights) const;

  // tokens: [B, T] int64, right-padded; sequences of different lengths in one batch need no mask beyond
  // the causal one, because every padding position comes after every real one (outputs at real positions
  // never see padding). With a cache, the tokens continue at position cache->length (same for the batch).
  ForwardResult forward(const at::Tensor& tokens, const ForwardOptions& options = {},
                        KVCache* cache = nullptr) const;

  // Where a forward call's numbers first go non-finite: re-runs it (from the same cache positions, which
  // it does not change) with the hidden states and returns "layer 12 (model.layers.12) at sequence 0,
  // position 3", "the embedding ...", "the final norm or LM head ..." or "" when everything is finite.
  // Under tensor parallelism every rank must call it (the layers' collectives).
  std::string locate_non_finite(const at::Tensor& tokens, const ForwardOptions& options,
                                const KVCache* cache = nullptr) const;

  // The number of kept layers an options.layers list means (validates indices: increasing, in range).
  std::vector<int64_t> kept_layers(const std::vector<int64_t>& layers) const;

 private:
  at::Tensor attention(const LlamaLayerWeights& w, const at::Tensor& xn, int64_t start, at::Tensor* k_cache,
                       at::Tensor* v_cache, bool sdpa) const;
  // Scores, mask, softmax and values for q [B, H, T, hd] against k, v [B, KV, S, hd] (S = start + T):
  // the CPU's blocked loop, or at::scaled_dot_product_attention. Both return [B, H, T, hd].
  at::Tensor attend_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t start) const;
  at::Tensor attend_sdpa(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t start) const;

  LlamaConfig config_;
  LlamaWeights weights_;
  std::shared_ptr<const TensorParallel> tp_;
  int64_t heads_, kv_heads_;            // attention heads this process computes (all of them without tp_)
  at::Tensor rope_cos_, rope_sin_;      // [max_pos, hd/2] float32: cos and sin of position x frequency
  uint64_t mapped_bytes_ = 0, copied_bytes_ = 0, loaded_bytes_ = 0;
  std::vector<std::string> files_;
  std::shared_ptr<const void> keepalive_;  // the checkpoint mapping the weights point into
};

// RoPE's tables for positions [0, max_position_embeddings): cos and sin of p w_i, [P, hd/2] float32, with
// w_i = config.rope_inverse_frequencies() (the scaling applied). Both forward passes use these.
std::pair<at::Tensor, at::Tensor> rope_tables(const LlamaConfig& config);

// at::ScalarType for a compute-dtype name ("float32", "bfloat16"); InputError otherwise.
at::ScalarType parse_compute_dtype(const std::string& name);

}  // namespace layerprune
