// LoRA adapters on a frozen (pruned) Llama, differentiable end to end (Hu et al. 2021; QLoRA, Dettmers et
// al. 2023; the healing recipe of Gromov et al. 2024, appendix).
//
// For a target projection with frozen weight W [out, in]:
//     y = x W^T + (alpha / r) * dropout(x) A^T B^T,     A [r, in], B [out, r]
// A starts Kaiming-uniform (PEFT's kaiming_uniform_(a = sqrt(5)): U(-1/sqrt(in), 1/sqrt(in))), B at zero, so
// the adapted model starts equal to the base. Only A and B train. Defaults are the paper's: the FFN
// projections (gate, up, down), alpha = r, dropout 0.05.
//
// The forward pass here is the inference model's math (worker/llama.h) written with plain differentiable
// ATen ops (RMSNorm, rotate-half RoPE, causal softmax attention with GQA, SwiGLU), because the inference
// kernels are in-place and have no backward. With B = 0 its logits equal LlamaModel::forward's (tested).
// It reads the base model's weights (zero-copy views of the checkpoint mapping), never copies them.
#pragma once
#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/nf4.h"
#include "worker/llama.h"

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
  double scale() const { return (alpha > 0 ? alpha : double(rank)) / double(rank); }
};

// The target list with "all-linear" expanded; InputError for an unknown name or an empty list.
std::vector<std::string> lora_targets(const std::vector<std::string>& names);

struct LoraAdapter {
  std::string name;  // "model.layers.3.mlp.up_proj" (the index is the base model's layer)
  int64_t layer = 0; // base model layer
  int proj = 0;      // index into kLoraProjections
  at::Tensor a, b;   // [r, in], [out, r], float32, requires_grad
};

// The seven projections of a Llama layer, in the order LoraAdapter::proj counts them.
extern const char* const kLoraProjections[7];

class LoraLlama {
 public:
  // Adapters on `kept` layers of `base` (empty: all layers). The base must outlive this object and must
  // not be tensor-parallel (TP-aware adapters are not implemented yet).
  LoraLlama(const LlamaModel& base, std::vector<int64_t> kept, LoraConfig config);

  // [B, T] int64 -> [B, T, V] float32 logits; dropout is active when `train`.
  at::Tensor forward(const at::Tensor& tokens, bool train);
  // Mean next-token cross-entropy over every position but the last (sequences packed, no padding).
  at::Tensor loss(const at::Tensor& tokens, bool train);

  std::vector<LoraAdapter>& adapters() { return adapters_; }
  const std::vector<LoraAdapter>& adapters() const { return adapters_; }
  std::vector<at::Tensor> parameters() const;  // a0, b0, a1, b1, ... in adapter order
  int64_t trainable_parameters() const;
  const LoraConfig& config() const { return config_; }
  const std::vector<int64_t>& kept_layers() const { return kept_; }
  at::Generator& generator() { return gen_; }  // dropout's RNG (its state goes into checkpoints)

  // Bytes of the frozen projections as this model holds them (NF4 packed + constants, or the base's).
  int64_t base_projection_bytes() const;

  // W + scale * B A for adapter i's projection, in the base dtype (for export); W dequantised under NF4.
  at::Tensor merged_weight(size_t adapter) const;

 private:
  at::Tensor project(const at::Tensor& x, const at::Tensor& w, size_t pos, int proj, bool train);
  const at::Tensor& base_weight(int64_t layer, int proj) const;
  const LlamaModel& base_;
  std::vector<int64_t> kept_;
  LoraConfig config_;
  std::vector<std::string> targets_;
  std::vector<LoraAdapter> adapters_;
  std::vector<std::vector<int>> index_;  // [kept position][projection] -> adapter index or -1
  at::Generator gen_;
  at::Tensor cos_, sin_;                 // [max_pos, hd/2]
  std::vector<std::vector<kernels::Nf4Weight>> nf4_;  // [kept position][projection] under base_quant nf4
};

}  // namespace layerprune
