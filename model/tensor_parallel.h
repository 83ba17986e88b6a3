// Megatron-style tensor parallelism for the Llama decoder, declared in one place (as gpt-fast's tp.py).
//
// Weights are stored [out, in] (Hugging Face), so "rows" are output features and a row range is one
// contiguous byte range of the file; a column range is strided. With tp ranks, rank r holds:
//   q_proj, k_proj, v_proj  column-parallel: the rows of the heads it owns            (contiguous read)
//                           and the same elements of their biases (Qwen2, Llama attention_bias); a
//                           replicated KV head's bias is replicated with it; o_proj's bias is replicated
//                           and added once, after the all-reduce
//   o_proj                  row-parallel:    the columns of those heads               (strided read)
//   gate_proj, up_proj      column-parallel: rows [f0, f1) of the FFN                 (contiguous read)
//   down_proj               row-parallel:    columns [f0, f1)                         (strided read)
//   input/post-attention norms, final norm: replicated
// o_proj and down_proj then produce partial sums of the residual update: one all-reduce after attention
// and one after the MLP, 2 per kept layer, each of B x T x D elements.
//
// Heads: the H query heads must split evenly (H % tp == 0). KV heads: either KV % tp == 0 (each rank owns
// KV/tp of them) or tp % KV == 0 (each KV head is replicated on tp/KV ranks, whose query heads all use it);
// anything else is refused with the numbers. The FFN and vocabulary split into near-equal ranges.
//
// Embedding: replicated. A lookup needs no communication; the cost is V x D per rank (Llama-2: 32000 x
// 8192 x 2 bytes = 0.52 GB bf16 on each rank of a 70B group).
// LM head: vocab-parallel. Rank r multiplies by rows [v0, v1) of the head only (1/tp of its memory and
// FLOPs), and one all-gather of B x T x ceil(V/tp) float32 logits per rank assembles [B, T, V] on every
// rank. A tied head is a zero-copy row range of the replicated embedding. Passes that need no logits
// (layer distances) skip the head and its all-gather; the scorer's passes run both on the positions they
// read only (ForwardOptions::logit_positions: N x ceil(V/tp) per rank).
#pragma once
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>

#include "model/comm.h"
#include "formats/llama_config.h"

namespace layerprune {

// What rank `rank` of a tp-rank group owns.
struct TensorParallelPlan {
  int tp = 1, rank = 0;
  int64_t heads = 0, head_begin = 0;        // query heads [head_begin, head_begin + heads)
  int64_t kv_heads = 0, kv_head_begin = 0;  // KV heads [kv_head_begin, kv_head_begin + kv_heads)
  bool kv_replicated = false;               // tp % KV == 0 and tp > KV: KV heads copied on tp/KV ranks
  int64_t ffn_begin = 0, ffn_end = 0;       // intermediate features
  int64_t vocab_begin = 0, vocab_end = 0;   // LM head rows
  int64_t vocab_shard = 0;                  // ceil(V / tp): each rank's block in the logits all-gather
};

// The plan for one rank; InputError naming the numbers when the shapes cannot be split tp ways.
TensorParallelPlan plan_tensor_parallel(const LlamaConfig& config, int tp, int rank);

// How a checkpoint tensor is split: the whole tensor, a range of rows, or a range of columns.
struct ShardRule {
  enum Kind { kReplicated, kRows, kColumns } kind = kReplicated;
  int64_t begin = 0, end = 0;
};

// The rule for one Hugging Face tensor name ("model.layers.3.self_attn.o_proj.weight", "lm_head.weight").
ShardRule shard_rule(const std::string& name, const LlamaConfig& config, const TensorParallelPlan& plan);

// The seam the model calls: the collectives its layout needs, nothing else.
class TensorParallel {
 public:
  TensorParallel(std::shared_ptr<Communicator> comm, TensorParallelPlan plan);
  const TensorParallelPlan& plan() const { return plan_; }
  Communicator& comm() const { return *comm_; }
  // After a row-parallel product: partial sums -> the full residual update, in place.
  void reduce(at::Tensor& partial) const;
  // [B, T, v1 - v0] float32 logits of this rank's vocabulary rows -> [B, T, V] on every rank.
  at::Tensor gather_vocab(const at::Tensor& local_logits, int64_t vocab_size) const;

 private:
  std::shared_ptr<Communicator> comm_;
  TensorParallelPlan plan_;
};

}  // namespace layerprune
