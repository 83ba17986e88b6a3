#include "method/planner.h"

#include <cmath>
#include <cstdio>

#include "common/error.h"

namespace layerprune {

namespace {

std::string n(int64_t v) { return std::to_string(v); }

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// "68,976,648,192": parameter counts are read by eye against the paper's.
std::string grouped(int64_t v) {
  std::string digits = std::to_string(v < 0 ? -v : v), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return (v < 0 ? "-" : "") + out;
}

std::string fmt(const char* format, double a, double b = 0, double c = 0, double d = 0) {
  char buf[256];
  std::snprintf(buf, sizeof buf, format, a, b, c, d);
  return buf;
}

void require_positive(int64_t v, const std::string& what) {
  if (v < 1) throw InputError("plan: " + what + " must be at least 1 (got " + n(v) + ")");
}

}  // namespace

double dtype_bytes(const std::string& d) {
  if (d == "bf16" || d == "bfloat16" || d == "f16" || d == "float16") return 2;
  if (d == "f32" || d == "float32") return 4;
  throw InputError("plan: unknown dtype '" + d + "' (expected bf16, f16 or f32)");
}

double nf4_bytes_per_param() {
  // QLoRA (Dettmers et al. 2023): 4-bit codes, an 8-bit absmax per block of 64 weights, and (double
  // quantisation) one fp32 constant per 256 of those absmax values. The two 256-entry code tables per
  // tensor are a few KB and ignored.
  return 0.5 + 1.0 / 64 + 4.0 / (64 * 256);
}

MemoryPlan plan_memory(const LlamaConfig& c, const PlanOptions& o) {
  c.validate("plan: model config");
  MemoryPlan p;
  p.options = o;
  const int tp = o.tp;
  if (tp < 1) throw InputError("plan: --tp must be at least 1 (got " + n(tp) + ")");
  require_positive(o.batch, "the batch size");
  require_positive(o.seq, "the sequence length");
  if (o.healing) require_positive(o.lora_rank, "the LoRA rank");
  if (!(o.prune_fraction >= 0 && o.prune_fraction < 1))  // also refuses NaN
    throw InputError("plan: the prune fraction must be in [0, 1) (got " + fmt("%g", o.prune_fraction) + ")");
  const bool nf4 = o.weights == "nf4";
  if (!nf4 && o.weights != "bf16" && o.weights != "f16" && o.weights != "f32" && o.weights != "bfloat16" &&
      o.weights != "float16" && o.weights != "float32")
    throw InputError("plan: unknown weights format '" + o.weights + "' (expected bf16, f16, f32 or nf4)");
  const double cb = dtype_bytes(o.compute);
  // Non-linear weights (embedding, head, norms) stay at the compute dtype under nf4, else at the weights'.
  const double wb = nf4 ? cb : dtype_bytes(o.weights);

  const int64_t L = c.num_hidden_layers, D = c.hidden_size, H = c.num_attention_heads,
                KV = c.num_key_value_heads, hd = c.head_dim(), F = c.intermediate_size, V = c.vocab_size;
  p.layers = L;
  p.hidden = D;
  p.heads = H;
  p.kv_heads = KV;
  p.head_dim = hd;
  p.ffn = F;
  p.vocab = V;
  p.tied_embeddings = c.tie_word_embeddings;
  // Gromov et al.: n of the L layers are removed, n = round(fraction * L).
  p.pruned_layers = std::llround(o.prune_fraction * double(L));
  p.kept_layers = L - p.pruned_layers;
  if (p.kept_layers < 1)
    throw InputError("plan: pruning a fraction " + fmt("%g", o.prune_fraction) + " of " + n(L) +
                     " layers removes all of them (round(" + fmt("%g", o.prune_fraction * double(L)) + ") = " +
                     n(p.pruned_layers) + ")");
  const int64_t Lk = p.kept_layers;
  // Counts below are int64 products of three sizes; validate() bounds each size by int32 only.
  const double approx_params = double(L) * (4.0 * D * D + 3.0 * D * F) + 2.0 * V * D;
  if (approx_params > 1e18) throw InputError("plan: the model's shapes are too large to count (~" +
                                             fmt("%.3g", approx_params) + " parameters)");
  if (o.healing && o.lora_rank > D)
    throw InputError("plan: a LoRA rank of " + n(o.lora_rank) + " exceeds the hidden size " + n(D));

  const HeadSplit split = split_heads(c, tp);  // the model's split and refusals
  p.kv_heads_per_rank = split.kv_heads_per_rank;
  p.kv_replicated = split.kv_replicated;
  p.heads_per_rank = split.heads_per_rank;
  p.ffn_per_rank = ceil_div(F, tp);  // the largest of the near-equal ranges
  p.vocab_per_rank = ceil_div(V, tp);

  // Parameters. One layer: q, o D x D; k, v D x KV*hd; gate, up, down D x F; two norms of D.
  const int64_t layer_linear = 2 * D * D + 2 * D * KV * hd + 3 * D * F;
  const int64_t head = c.tie_word_embeddings ? 0 : V * D;
  // Qwen2 (and Llama with attention_bias): q/k/v biases, one per output feature of those projections;
  // Llama's attention_bias adds o_proj's, D.
  const int64_t layer_bias = (c.qkv_bias() ? (H + 2 * KV) * hd : 0) + (c.o_bias() ? D : 0);
  p.model_params = L * (layer_linear + layer_bias + 2 * D) + V * D + head + D;
  p.kept_model_params = Lk * (layer_linear + layer_bias + 2 * D) + V * D + head + D;
  const int64_t rank_layer_linear = 2 * D * p.heads_per_rank * hd      // q rows, o columns of its heads
                                    + 2 * D * p.kv_heads_per_rank * hd  // k, v of its KV heads
                                    + 3 * D * p.ffn_per_rank;           // gate, up rows; down columns
  p.rank_linear_params = Lk * rank_layer_linear;
  p.rank_norm_params = Lk * 2 * D + D;
  // A bias is split with its projection's rows: the rank's query heads and (own or replicated) KV heads.
  // o_proj's bias is added once, after the all-reduce: replicated.
  p.rank_bias_params = Lk * ((c.qkv_bias() ? (p.heads_per_rank + 2 * p.kv_heads_per_rank) * hd : 0) + (c.o_bias() ? D : 0));
  p.rank_embedding_params = V * D;
  p.rank_lm_head_params = c.tie_word_embeddings ? 0 : p.vocab_per_rank * D;

  // Weights.
  const double lin = double(p.rank_linear_params);
  p.linear_bytes = nf4 ? lin * 0.5 : lin * wb;
  p.quant_constant_bytes = nf4 ? lin * (nf4_bytes_per_param() - 0.5) : 0;
  p.embedding_bytes = double(p.rank_embedding_params) * wb;
  p.lm_head_bytes = double(p.rank_lm_head_params) * wb;
  p.norm_bytes = double(p.rank_norm_params) * wb;
  p.bias_bytes = double(p.rank_bias_params) * wb;  // never quantised
  p.weight_bytes =
      p.linear_bytes + p.quant_constant_bytes + p.embedding_bytes + p.lm_head_bytes + p.norm_bytes + p.bias_bytes;
  p.naive_weight_bytes = double(p.kept_model_params) * (nf4 ? 0.5 : wb);

  // Inference.
  const double BT = double(o.batch) * double(o.seq);
  p.kv_cache_bytes = 2.0 * double(Lk) * BT * double(p.kv_heads_per_rank * hd) * cb;
  p.activation_bytes = cb * (3.0 * BT * double(D)                                          // residual, normed, attn out
                             + BT * double((p.heads_per_rank + 2 * p.kv_heads_per_rank) * hd)  // q, k, v
                             + 2.0 * BT * double(p.ffn_per_rank));                         // gate, up
  p.logits_bytes = BT * double(V) * 4;
  p.inference_bytes = p.weight_bytes + p.kv_cache_bytes + p.activation_bytes + p.logits_bytes;

  // Healing: LoRA A [r, in] and B [out, r] on gate, up (D -> F) and down (F -> D) of every kept layer; the
  // F-sized side is split by tp, the D-sized side replicated.
  if (o.healing) {
    p.rank_lora_params = Lk * 3 * o.lora_rank * (D + p.ffn_per_rank);
    p.lora_bytes = double(p.rank_lora_params) * 16;  // fp32 weight + fp32 grad + AdamW m, v
    p.checkpoint_bytes = double(Lk) * BT * double(D) * cb;
    p.recompute_bytes = p.activation_bytes;
    p.healing_bytes = p.weight_bytes + p.lora_bytes + p.checkpoint_bytes + p.recompute_bytes + p.logits_bytes;
  }

  // FLOPs per token: 2 per weight of a matmul (layers + LM head), and QK^T + AV = 4 x D per attended
  // position per layer, (T + 1) / 2 positions on average for a causal sequence of T.
  const double ctx = (double(o.seq) + 1) / 2;
  p.matmul_flops_before = 2.0 * (double(L) * double(layer_linear) + double(V) * double(D));
  p.matmul_flops_after = 2.0 * (double(Lk) * double(layer_linear) + double(V) * double(D));
  p.attention_flops_before = 4.0 * double(L) * double(D) * ctx;
  p.attention_flops_after = 4.0 * double(Lk) * double(D) * ctx;
  return p;
}

std::vector<PlanLine> plan_lines(const MemoryPlan& p) {
  const bool nf4 = p.options.weights == "nf4";
  std::vector<PlanLine> lines = {
      {"linear_weights", nf4 ? "linear weights (packed 4-bit)" : "linear weights (" + p.options.weights + ")",
       p.linear_bytes},
      {"quant_constants", "quantisation constants (nf4)", p.quant_constant_bytes},
      {"embedding", "embedding (replicated)", p.embedding_bytes},
      {"lm_head", p.tied_embeddings ? "LM head (tied: the embedding)" : "LM head (vocab-parallel)", p.lm_head_bytes},
      {"norms", "norms (replicated)", p.norm_bytes},
  };
  if (p.rank_bias_params > 0) lines.push_back({"biases", "attention biases (q/k/v split)", p.bias_bytes});
  std::vector<PlanLine> rest = {
      {"weights", "= weights", p.weight_bytes},
      {"kv_cache", "KV cache", p.kv_cache_bytes},
      {"activations", "activations (one layer, peak)", p.activation_bytes},
      {"logits", "logits (float32, gathered)", p.logits_bytes},
      {"inference_total", "= inference total", p.inference_bytes},
  };
  lines.insert(lines.end(), rest.begin(), rest.end());
  if (p.options.healing) {
    lines.push_back({"lora_adapters", "LoRA adapters (weight+grad+AdamW)", p.lora_bytes});
    lines.push_back({"checkpoints", "checkpoints (layer inputs)", p.checkpoint_bytes});
    lines.push_back({"recompute", "recompute (one layer)", p.recompute_bytes});
    lines.push_back({"healing_total", "= healing total (+ logits)", p.healing_bytes});
  }
  return lines;
}

std::string format_plan(const MemoryPlan& p) {
  const auto& o = p.options;
  const int tp = o.tp;
  std::string s;
  s += "model: " + n(p.layers) + " layers, dim " + n(p.hidden) + ", " + n(p.heads) + " heads (" + n(p.kv_heads) +
       " kv, head dim " + n(p.head_dim) + "), FFN " + n(p.ffn) + ", vocab " + n(p.vocab) +
       (p.tied_embeddings ? ", tied LM head\n" : "\n");
  s += "pruning: " + n(p.pruned_layers) + " of " + n(p.layers) + " layers removed (fraction " +
       fmt("%g", o.prune_fraction) + "), " + n(p.kept_layers) + " kept; parameters " + grouped(p.model_params) +
       " -> " + grouped(p.kept_model_params) + "\n";
  s += "layout: tp " + n(tp) + ", per rank " + n(p.heads_per_rank) + " query heads, " + n(p.kv_heads_per_rank) +
       " kv head" + (p.kv_heads_per_rank == 1 ? "" : "s") +
       (p.kv_replicated ? " (replicated on " + n(tp / p.kv_heads) + " ranks)" : " (split)") + ", FFN " +
       n(p.ffn_per_rank) + ", vocab rows " + n(p.vocab_per_rank) + "\n";
  s += "dtypes: weights " + o.weights +
       (o.weights == "nf4" ? fmt(" (decoder linears, %.12g B/param; the rest at ", nf4_bytes_per_param()) + o.compute + ")"
                           : std::string()) +
       ", compute " + o.compute + "; batch " + n(o.batch) + " x seq " + n(o.seq) +
       (o.healing ? "; healing: LoRA rank " + n(o.lora_rank) + " on gate/up/down" : std::string()) + "\n\n";

  char buf[256];
  std::snprintf(buf, sizeof buf, "%-36s %12s %10s   %12s %10s\n", "", "per rank GB", "GiB",
                ("group GB (x" + n(tp) + ")").c_str(), "GiB");
  s += buf;
  for (const auto& l : plan_lines(p)) {
    if (l.key == "kv_cache" || l.key == "lora_adapters") s += "\n";
    std::snprintf(buf, sizeof buf, "  %-34s %12.3f %10.3f   %12.3f %10.3f\n", l.label.c_str(), l.bytes / 1e9,
                  l.bytes / double(1ull << 30), l.bytes * tp / 1e9, l.bytes * tp / double(1ull << 30));
    s += buf;
  }
  // The usual back-of-envelope figure (every parameter at the linear weights' width) against the plan: the
  // gap is what the breakdown adds beyond the packed linears.
  s += "\nnaive weights, whole model: " + grouped(p.kept_model_params) + " kept params x " +
       fmt("%g", o.weights == "nf4" ? 0.5 : dtype_bytes(o.weights)) + " B = " +
       fmt("%.2f GB", p.naive_weight_bytes / 1e9) + "\nplanned weights per rank: " +
       fmt("%.3f GB = linears %.3f + (constants %.3f", p.weight_bytes / 1e9, p.linear_bytes / 1e9,
           p.quant_constant_bytes / 1e9) +
       fmt(" + embedding %.3f + LM head %.3f", p.embedding_bytes / 1e9, p.lm_head_bytes / 1e9) +
       fmt(" + norms %.4f", p.norm_bytes / 1e9) +
       (p.bias_bytes > 0 ? fmt(" + biases %.4f", p.bias_bytes / 1e9) : std::string()) +
       fmt(" = %.3f GB)\n", (p.quant_constant_bytes + p.embedding_bytes + p.lm_head_bytes + p.norm_bytes + p.bias_bytes) / 1e9);

  s += "\nforward FLOPs per token            before pruning (total / per rank)   after pruning (total / per rank)\n";
  auto flops_row = [&](const char* label, double before, double after) {
    std::snprintf(buf, sizeof buf, "  %-32s %12.2f G / %10.2f G       %12.2f G / %10.2f G\n", label, before / 1e9,
                  before / tp / 1e9, after / 1e9, after / tp / 1e9);
    s += buf;
  };
  flops_row("matmul (2 x weights)", p.matmul_flops_before, p.matmul_flops_after);
  flops_row(("attention (ctx " + fmt("%g", (double(o.seq) + 1) / 2) + ")").c_str(), p.attention_flops_before,
            p.attention_flops_after);
  flops_row("total", p.matmul_flops_before + p.attention_flops_before,
            p.matmul_flops_after + p.attention_flops_after);
  return s;
}

nlohmann::json plan_to_json(const MemoryPlan& p) {
  using nlohmann::json;
  const auto& o = p.options;
  json per_rank = json::object(), group = json::object();
  for (const auto& l : plan_lines(p)) {
    per_rank[l.key + "_bytes"] = l.bytes;
    group[l.key + "_bytes"] = l.bytes * o.tp;
  }
  auto flops = [&](double matmul, double attention) {
    return json{{"matmul", matmul}, {"attention", attention}, {"total", matmul + attention},
                {"per_rank", {{"matmul", matmul / o.tp}, {"attention", attention / o.tp},
                              {"total", (matmul + attention) / o.tp}}}};
  };
  return json{
      {"options", {{"tp", o.tp}, {"weights", o.weights}, {"compute", o.compute},
                   {"prune_fraction", o.prune_fraction}, {"batch", o.batch}, {"seq", o.seq},
                   {"healing", o.healing}, {"lora_rank", o.lora_rank}}},
      {"model", {{"layers", p.layers}, {"hidden_size", p.hidden}, {"heads", p.heads}, {"kv_heads", p.kv_heads},
                 {"head_dim", p.head_dim}, {"ffn", p.ffn}, {"vocab", p.vocab},
                 {"tie_word_embeddings", p.tied_embeddings}, {"parameters", p.model_params}}},
      {"pruning", {{"pruned_layers", p.pruned_layers}, {"kept_layers", p.kept_layers},
                   {"kept_parameters", p.kept_model_params}}},
      {"layout", {{"tp", o.tp}, {"heads_per_rank", p.heads_per_rank}, {"kv_heads_per_rank", p.kv_heads_per_rank},
                  {"kv_replicated", p.kv_replicated}, {"ffn_per_rank", p.ffn_per_rank},
                  {"vocab_per_rank", p.vocab_per_rank}}},
      {"parameters_per_rank", {{"linear", p.rank_linear_params}, {"norms", p.rank_norm_params}, {"biases", p.rank_bias_params},
                               {"embedding", p.rank_embedding_params}, {"lm_head", p.rank_lm_head_params},
                               {"lora", p.rank_lora_params}}},
      {"per_rank", per_rank},
      {"group", group},
      {"naive_weight_bytes", p.naive_weight_bytes},
      {"flops_per_token", {{"before_pruning", flops(p.matmul_flops_before, p.attention_flops_before)},
                           {"after_pruning", flops(p.matmul_flops_after, p.attention_flops_after)},
                           {"attention_context", (double(o.seq) + 1) / 2}}},
  };
}

}  // namespace layerprune
