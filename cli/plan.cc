// `layerprune plan`: per-rank memory and FLOPs of running or healing a pruned Llama, from its config.json
// alone (method/planner.h). Loads no weights and no LibTorch work, so it answers "how many GPUs, which
// quantisation" in milliseconds before any job is submitted.
#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "common/args.h"
#include "common/error.h"
#include "formats/llama_config.h"
#include "method/planner.h"

namespace layerprune::cli {

namespace {

const char* kAssumptions = R"(What is counted (per rank of a tensor-parallel group of --tp ranks; L layers, n = round(f x L) pruned,
L' = L - n kept; D hidden, H heads, KV kv heads, hd = D/H, F FFN, V vocab; B batch, T sequence):
  layout        as model/tensor_parallel.h: q, o split by heads (H % tp == 0); k, v split when KV % tp == 0,
                else (tp % KV == 0) one KV head per rank, replicated; gate, up, down split by FFN features
                (ceil(F/tp) on the largest rank); norms and the embedding (V x D) replicated; LM head
                vocab-parallel, ceil(V/tp) x D (0 when tied to the embedding).
  weights       linear weights of the L' kept layers at 2 bytes (bf16/f16) or 4 (f32). nf4 (QLoRA,
                Dettmers et al. 2023), decoder linears only: 0.5 byte + an 8-bit absmax per 64 (1/64) + an
                fp32 constant per 256 blocks (4/16384) = 0.515869140625 byte/param (the two 256-entry code
                tables are ignored); embedding, LM head and norms stay at the compute dtype.
  KV cache      2 x L' x B x T x (kv heads on the rank) x hd x bytes(compute).
  activations   peak of one layer's forward, at bytes(compute): residual + normed copy + attention output
                3 x B x T x D, q/k/v B x T x (H/tp + 2 x kv heads on the rank) x hd, gate and up
                2 x B x T x ceil(F/tp); plus logits B x T x V x 4 bytes (float32, gathered on every rank).
  healing       LoRA (rank r, alpha = r, dropout 0.05: the paper's recipe) on gate, up, down of the kept
                layers: A [r, in] and B [out, r], the F side split by tp, the D side replicated:
                3 x r x (D + ceil(F/tp)) per layer, 16 bytes each (fp32 weight, fp32 grad, AdamW m and v).
                Activations checkpointed at layer boundaries: L' x B x T x D x bytes(compute) stored, plus
                one layer's recompute (the activation formula) and the logits.
  FLOPs/token   forward: matmul 2 x (linear params of the layers + V x D), attention 4 x layers x D x
                (T + 1)/2 (the average causal context); per rank = total / tp.
  GB = 1e9 bytes, GiB = 2^30 bytes; group = tp x the per-rank figure. Not counted: framework and CUDA
  context overhead, allocator fragmentation, communication buffers, the optimizer's master weights
  (none: the base model is frozen).)";

}  // namespace

int plan(int argc, char** argv) {
  ArgParser p("plan", "Plan the per-rank memory and forward FLOPs of a Llama with layers pruned (Gromov et al.\n"
                      "2024), optionally quantised to NF4 and healed with LoRA, from config.json alone.");
  p.option("config", "the model's Hugging Face config.json")
      .option("tp", "tensor-parallel ranks", "1")
      .option("dtype", "compute dtype, and the weights' dtype unless --quant nf4: bf16, f16 or f32", "bf16")
      .option("quant", "none, or nf4 (4-bit decoder linear weights with double quantisation)", "none")
      .option("prune-fraction", "fraction of the layers removed, in [0, 1)", "0")
      .option("batch", "sequences per forward pass", "1")
      .option("seq", "tokens per sequence", "2048")
      .flag("healing", "add LoRA healing of the FFN projections (training memory)")
      .option("lora-rank", "LoRA rank for --healing", "8")
      .flag("json", "print one JSON document on stdout")
      .epilog(kAssumptions);
  if (!p.parse(argc, argv)) return 0;
  const std::string quant = p.get("quant");
  if (quant != "none" && quant != "nf4") throw InputError("plan: --quant must be none or nf4 (got '" + quant + "')");
  PlanOptions o;
  const int64_t tp = p.get_int("tp");
  if (tp < 1 || tp > 1 << 20) throw InputError("plan: --tp must be between 1 and 2^20 (got " + std::to_string(tp) + ")");
  o.tp = int(tp);
  o.compute = p.get("dtype");
  o.weights = quant == "nf4" ? "nf4" : o.compute;
  o.prune_fraction = p.get_double("prune-fraction");
  o.batch = p.get_int("batch");
  o.seq = p.get_int("seq");
  o.healing = p.flag_set("healing");
  o.lora_rank = p.get_int("lora-rank");
  MemoryPlan plan = plan_memory(LlamaConfig::from_file(p.get("config")), o);
  if (p.flag_set("json")) {
    nlohmann::json j = plan_to_json(plan);
    j["config"] = p.get("config");
    std::cout << j.dump() << std::endl;
  } else {
    std::printf("config: %s\n%s", p.get("config").c_str(), format_plan(plan).c_str());
  }
  return 0;
}

}  // namespace layerprune::cli
