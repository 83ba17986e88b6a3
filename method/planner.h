// `layerprune plan`: what one rank of a tensor-parallel group needs (memory, FLOPs per token) to run or heal
// a Llama with some of its layers pruned, computed from config.json alone -- before renting the GPUs.
//
// Torch-free (lp_formats), so it cannot call plan_tensor_parallel (lp_model); it re-states the same layout
// and the same divisibility rules as model/tensor_parallel.h instead, and the tests pin both to the numbers.
// Every figure is a closed-form estimate; the formulas are listed in `layerprune plan --help` and in
// docs/tensor-parallel.md ("Planner"). Per-rank figures are for the largest rank (FFN and vocabulary split into ranges
// that differ by at most one); group figures are tp x the per-rank figure.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "formats/llama_config.h"

namespace layerprune {

struct PlanOptions {
  int tp = 1;                   // tensor-parallel ranks
  std::string weights = "bf16";  // bf16 | f16 | f32 | nf4 (nf4: decoder linear weights only)
  double prune_fraction = 0;    // fraction of the L layers removed, in [0, 1)
  int64_t batch = 1, seq = 2048;
  bool healing = false;          // QLoRA-style healing: LoRA on the FFN projections of the kept layers
  int64_t lora_rank = 8;
  std::string compute = "bf16";  // bf16 | f16 | f32: activations, KV cache, and non-linear weights under nf4
};

// Every line of the breakdown, per rank, in bytes (double: NF4's constants are a fraction of a byte per
// parameter; every value below 2^53 is exact).
struct MemoryPlan {
  PlanOptions options;
  // The model and what pruning leaves.
  int64_t layers = 0, pruned_layers = 0, kept_layers = 0;
  int64_t hidden = 0, heads = 0, kv_heads = 0, head_dim = 0, ffn = 0, vocab = 0;
  bool tied_embeddings = false;
  int64_t model_params = 0;       // the whole unpruned model
  int64_t kept_model_params = 0;  // the whole model after pruning
  // The tensor-parallel layout of one rank (model/tensor_parallel.h).
  int64_t heads_per_rank = 0, kv_heads_per_rank = 0, ffn_per_rank = 0, vocab_per_rank = 0;
  bool kv_replicated = false;  // tp % KV == 0 and tp > KV: each rank holds one KV head's k and v
  // Parameters on one rank.
  int64_t rank_linear_params = 0;     // q, k, v, o, gate, up, down of the kept layers
  int64_t rank_norm_params = 0;       // two RMSNorm vectors per kept layer + the final norm (replicated)
  int64_t rank_bias_params = 0;       // q/k/v biases of the rank's heads (+ o_proj's, replicated), per kept layer
  int64_t rank_embedding_params = 0;  // V x D, replicated
  int64_t rank_lm_head_params = 0;    // ceil(V / tp) x D (0 when tied: the head is the embedding)
  int64_t rank_lora_params = 0;       // healing only
  // Weights on one rank, bytes.
  double linear_bytes = 0;          // the linear weights (packed 4-bit under nf4)
  double quant_constant_bytes = 0;  // nf4: 8-bit absmax per 64 + fp32 per 256 blocks
  double embedding_bytes = 0, lm_head_bytes = 0, norm_bytes = 0, bias_bytes = 0;
  double weight_bytes = 0;  // sum of the five above
  // Inference (forward with a KV cache) on one rank, bytes.
  double kv_cache_bytes = 0;
  double activation_bytes = 0;  // one layer's peak: residual, normed copy, attention out, q/k/v, gate/up
  double logits_bytes = 0;      // B x T x V float32, gathered on every rank
  double inference_bytes = 0;   // weights + KV cache + activations + logits
  // Healing (LoRA training with checkpointing at layer boundaries) on one rank, bytes; 0 unless healing.
  double lora_bytes = 0;        // adapter weights fp32 + grads fp32 + AdamW m and v fp32: 16 per param
  double checkpoint_bytes = 0;  // the residual stream stored at each kept layer's input
  double recompute_bytes = 0;   // one layer's activations, recomputed in the backward pass
  double healing_bytes = 0;     // weights + LoRA + checkpoints + recompute + logits
  // Forward FLOPs per token of the whole model (divide by tp for one rank).
  double matmul_flops_before = 0, attention_flops_before = 0;
  double matmul_flops_after = 0, attention_flops_after = 0;
  // The naive figure the paper quotes (all kept parameters x bytes per linear weight), for comparison.
  double naive_weight_bytes = 0;
};

// Bytes per element of a dtype name (bf16, f16, f32, and the long names bfloat16, float16, float32);
// InputError for anything else.
double dtype_bytes(const std::string& dtype);
// NF4 with double quantisation, bytes per parameter: 0.5 + 1/64 + 4/(64*256) = 0.515869140625.
double nf4_bytes_per_param();

// InputError (naming the numbers) for options that cannot be planned: tp that does not divide the heads,
// a prune fraction outside [0, 1) or one that leaves no layer, non-positive sizes, unknown dtypes.
MemoryPlan plan_memory(const LlamaConfig& config, const PlanOptions& options);

// One line of the printed breakdown: its JSON key, its label, and its per-rank bytes.
struct PlanLine {
  std::string key, label;
  double bytes;
};
// The lines `format_plan` prints and `plan_to_json` writes, in order (healing lines only when healing).
std::vector<PlanLine> plan_lines(const MemoryPlan& plan);

std::string format_plan(const MemoryPlan& plan);
nlohmann::json plan_to_json(const MemoryPlan& plan);

}  // namespace layerprune
