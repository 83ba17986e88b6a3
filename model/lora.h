// LoRA adapters on a frozen (pruned) Llama, differentiable end to end (Hu et al. 2021; QLoRA, Dettmers et
// al. 2023; the healing recipe of Gromov et al. 2024, appendix).
//
// For a target projection with frozen weight W [out, in]:
//     y = x W^T + (alpha / r) * dropout(x) A^T B^T,     A [r, in], B [out, r]
// A starts Kaiming-uniform (PEFT's kaiming_uniform_(a = sqrt(5)): U(-1/sqrt(in), 1/sqrt(in))), B at zero, so
// the adapted model starts equal to the base. Only A and B train. Defaults are the paper's: the FFN
// projections (gate, up, down), alpha = r, dropout 0.05.
//
// A projection with a frozen bias (Qwen2's q/k/v; Llama's attention_bias q/k/v/o) computes base(x) + bias
// + the adapter's term; the bias is never trained nor quantised, and merged models keep it as it is. Under
// tensor parallelism a q/k/v bias is sliced with its weight's rows (column-parallel) and o_proj's is added
// once after the row-parallel sum, so the adapter needs no other change.
//
// The forward pass here is the inference model's math (model/llama.h) written with plain differentiable
// ATen ops (RMSNorm, rotate-half RoPE with the config's scaling, causal softmax attention with GQA and
// Mistral's sliding window, SwiGLU), because the inference
// kernels are in-place and have no backward. With B = 0 its logits equal LlamaModel::forward's (tested).
// It reads the base model's weights (zero-copy views of the checkpoint mapping), never copies them.
//
// Devices: everything lives on the base model's device (model/device.h). Adapters are initialised on the
// host from the seed and moved there, so A is the same on every device; AdamW's moments follow the
// parameters (healing/trainer.h). On a GPU attention runs through at::scaled_dot_product_attention (flash
// or memory-efficient kernels with their backward) and NF4 weights are quantised on the device and
// multiplied as dequantise + cuBLAS (kernels/nf4.h); dropout masks come from a generator of the device.
//
// Tensor parallelism (a base model loaded as one rank's shard, model/tensor_parallel.h), as Megatron:
//   column-parallel projection (q, k, v, gate, up; this rank holds rows [b, e) of W):
//       A [r, in] replicated, B rows [b, e): the rank's output slice x A^T B_[b,e)^T needs no communication.
//   row-parallel projection (o, down; this rank holds columns [b, e) of W and of its input x):
//       A columns [b, e), B [out, r] replicated: x_[b,e) A_[b,e)^T B^T is a partial sum, added to the base's
//       partial product before the one all-reduce the layer already does (the sum is linear).
// Autograd follows the same seams: the input of a parallel region is the identity forward and an
// all-reduce of the gradient backward; the all-reduce after a row-parallel product is the identity
// backward; the vocab-parallel head's all-gather hands back this rank's slice of the gradient. Replicated
// adapter tensors (A of column-parallel, B of row-parallel) then hold partial gradients, summed by
// reduce_gradients(). Initial values and dropout masks are drawn at the full shape and sliced, so a TP
// group draws exactly what one process draws: TP training equals single-process training up to float
// summation order (tested). LoRA on k/v is refused where KV heads are replicated across ranks.
#pragma once
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/nf4.h"
#include "model/llama.h"
#include "model/tensor_parallel.h"

namespace layerprune {

struct LoraConfig {
  int64_t rank = 8;
  double alpha = 0;  // 0: alpha = rank (the paper)
  double dropout = 0.05;
  // Projection names: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj; "all-linear" = all seven.
  std::vector<std::string> targets = {"gate_proj", "up_proj", "down_proj"};
  uint64_t seed = 0;  // A's initialisation and the dropout masks
  // "none": the base projections are the checkpoint's weights; "nf4": QLoRA, every projection of the kept
  // layers quantised to NF4 once (kernels/nf4.h) and dequantised tile by tile in each product.
  std::string base_quant = "none";
  // Tests: take the device (GPU) code paths also on the CPU -- attention through
  // at::scaled_dot_product_attention and NF4 through ATen + a dense GEMM (kernels/nf4.h) -- so a machine
  // without a GPU checks the arithmetic every GPU runs. Off the CPU they are always taken.
  bool device_kernels = false;
  double scale() const { return (alpha > 0 ? alpha : double(rank)) / double(rank); }
};

// The target list with "all-linear" expanded; InputError for an unknown name or an empty list.
std::vector<std::string> lora_targets(const std::vector<std::string>& names);

struct LoraAdapter {
  std::string name;  // "model.layers.3.mlp.up_proj" (the index is the base model's layer)
  int64_t layer = 0; // base model layer
  int proj = 0;      // index into kLoraProjections
  at::Tensor a, b;   // [r, in], [out, r], float32, requires_grad (this rank's shards under TP)
  // The base weight's shard under TP: kRows [begin, end) -> B holds those rows (A replicated); kColumns ->
  // A holds those columns (B replicated); kReplicated without TP.
  ShardRule shard;
  int64_t full_rows = 0, full_cols = 0;  // the whole W's [out, in]
};

// The seven projections of a Llama layer, in the order LoraAdapter::proj counts them.
extern const char* const kLoraProjections[7];

class LoraLlama {
 public:
  // Adapters on `kept` layers of `base` (empty: all layers). The base must outlive this object; when it is
  // a tensor-parallel shard, every rank of its group constructs and trains this model in step.
  LoraLlama(const LlamaModel& base, std::vector<int64_t> kept, LoraConfig config);

  // [B, T] int64 -> [B, T, V] float32 logits; dropout is active when `train`. With `hidden`, also every
  // kept layer's input and the last layer's output (the residual stream, as LlamaModel's return_hidden).
  at::Tensor forward(const at::Tensor& tokens, bool train, std::vector<at::Tensor>* hidden = nullptr);
  // Mean next-token cross-entropy over every position but the last (sequences packed, no padding).
  at::Tensor loss(const at::Tensor& tokens, bool train);

  std::vector<LoraAdapter>& adapters() { return adapters_; }
  const std::vector<LoraAdapter>& adapters() const { return adapters_; }
  std::vector<at::Tensor> parameters() const;  // a0, b0, a1, b1, ... in adapter order
  int64_t trainable_parameters() const;
  // Where the (adapted, evaluation-mode) forward of `tokens` first goes non-finite: "layer 12
  // (model.layers.12) at sequence 0, position 3", "the embedding ...", "the final norm or the LM head ..."
  // or "" when everything is finite. Every rank of a TP group must call it (the layers' collectives).
  std::string locate_non_finite(const at::Tensor& tokens);
  const LoraConfig& config() const { return config_; }
  const std::vector<int64_t>& kept_layers() const { return kept_; }
  // Dropout's RNG (its state goes into checkpoints): a CPU generator on the CPU, the device's own kind (a
  // CUDA generator seeded with LoraConfig::seed) on a GPU, so masks are drawn where they are used.
  at::Generator& generator() { return gen_; }
  c10::Device device() const { return base_.device(); }

  // Bytes of the frozen projections as this model holds them (NF4 packed + constants, or the base's).
  int64_t base_projection_bytes() const;

  // W + scale * B A for adapter i's projection, in the base dtype (for export); W dequantised under NF4.
  // Under TP: this rank's shard of it (B_[b,e) A, or B A_[b,e)), which needs no communication.
  at::Tensor merged_weight(size_t adapter) const;
  // The pruned model with every adapter merged (and, under NF4, every kept projection dequantised): an
  // inference model (model/llama.h) for evaluation. Its weights are new tensors where merged or
  // dequantised, views of the base elsewhere; the base must outlive it. Its layers are the kept layers.
  LlamaModel merged_model() const;

  // Tensor parallelism (no-ops without it). After backward: sum the partial gradients of replicated
  // adapter tensors over the group. The global gradient norm (each shard counted once).
  void reduce_gradients();
  double gradient_norm() const;
  // Adapter i's A (is_b false) or B in full, gathered from the group (every rank gets it), and the inverse:
  // this rank's shard of a full-shape tensor. Checkpoints hold full tensors, so they resume at any TP size.
  at::Tensor gather_full(size_t adapter, bool is_b, const at::Tensor& local) const;
  at::Tensor shard_of(size_t adapter, bool is_b, const at::Tensor& full) const;
  const TensorParallel* tensor_parallel() const { return base_.tensor_parallel(); }

 private:
  at::Tensor project(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, size_t pos, int proj, bool train);
  at::Tensor dropout_mask(const at::Tensor& x, const LoraAdapter& adapter);
  const at::Tensor& base_weight(int64_t layer, int proj) const;
  const LlamaModel& base_;
  std::vector<int64_t> kept_;
  LoraConfig config_;
  std::vector<std::string> targets_;
  std::vector<LoraAdapter> adapters_;
  std::vector<std::vector<int>> index_;  // [kept position][projection] -> adapter index or -1
  bool device_kernels_ = false;          // SDPA attention and the NF4 device path (off the CPU, or asked)
  at::Generator gen_;
  at::Tensor cos_, sin_;                 // [max_pos, hd/2]
  std::vector<std::vector<kernels::Nf4Weight>> nf4_;  // [kept position][projection] under base_quant nf4
};

}  // namespace layerprune
