// `layerprune heal`: LoRA healing of a pruned model (the paper's appendix recipe by default), with validation
// loss before and after and the unpruned model's for the gap, checkpoints, resume, SIGTERM, merged export.
#include <ATen/core/grad_mode.h>
#include <ATen/ATen.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/model_loading.h"
#include "common/args.h"
#include "common/data_locator.h"
#include "common/error.h"
#include "common/hashing.h"
#include "common/text_file.h"
#include "common/version.h"
#include "model/lora.h"
#include "model/loss.h"
#include "formats/prune_export.h"
#include "worker/stages.h"
#include "experiment/pruning.h"
#include "model/tensor_io.h"
#include "healing/trainer.h"

namespace layerprune::cli {

using nlohmann::json;

namespace {
extern "C" void on_sigterm(int) { g_stop_training = true; }
}  // namespace

int heal(int argc, char** argv) {
  ArgParser p("heal", "Heal a pruned model with LoRA adapters (frozen base) on text, then report the validation loss\n"
                      "of the unpruned, pruned and healed models. SIGTERM (or Ctrl-C) checkpoints after the current\n"
                      "step and exits; --resume continues the identical run.");
  add_model_flags(p);
  p.option("drop", "dropped layers, e.g. 2-3", "")
      .option("keep", "kept layers, e.g. 0,1,4", "")
      .option("train-data", "training text (.txt or .jsonl with \"text\"); a `layerprune locate` name works")
      .option("eval-data", "held-out text for the validation loss (the `loss` recipe)")
      .option("eval-windows", "validation windows (0: all)", "16")
      .option("eval-context", "validation window length (0: the model's context)", "0")
      .option("steps", "optimizer steps", "5000")
      .option("global-batch", "sequences per step", "16")
      .option("micro-batch", "sequences per forward/backward", "4")
      .option("seq-len", "tokens per training sequence incl. BOS (0: the model's context)", "0")
      .option("lr", "peak learning rate", "2e-4")
      .option("warmup", "linear warm-up steps (then cosine)", "100")
      .option("weight-decay", "AdamW weight decay", "0")
      .option("clip", "max gradient norm (0: none)", "1.0")
      .option("rank", "LoRA rank", "8")
      .option("alpha", "LoRA alpha (0: = rank, as the paper)", "0")
      .option("dropout", "LoRA dropout", "0.05")
      .option("targets", "projections with adapters (comma-separated, or all-linear)", "gate_proj,up_proj,down_proj")
      .option("quant", "frozen base: none, or nf4 (QLoRA: projections quantised to NF4)", "none")
      .option("seed", "seed of the adapters, dropout and data order", "0")
      .option("checkpoint-dir", "checkpoints (adapters, optimizer, data position, RNG)", "")
      .option("checkpoint-every", "steps between checkpoints (0: at the end and on SIGTERM)", "0")
      .option("resume", "continue from this checkpoint file", "")
      .option("out", "write the healed model (pruned, adapters merged) here", "");
  if (!p.parse(argc, argv)) return 0;
  const auto t0 = std::chrono::steady_clock::now();
  const std::string train_path = locate_data(p.get("train-data")), eval_path = locate_data(p.get("eval-data"));
  LoadedModel m = load_model(p);
  const int64_t L = m.model.config().num_hidden_layers;
  std::vector<int64_t> kept = kept_layers_from(p.get("keep"), p.get("drop"), L);
  // The flags as an experiment's healing spec, mapped onto the LoRA and trainer configs the way the worker's
  // heal tasks map it (worker/stages.h), so both heal alike.
  HealingSpec spec;
  spec.enabled = true;
  spec.rank = p.get_int("rank");
  spec.alpha = p.get_double("alpha");
  spec.dropout = p.get_double("dropout");
  spec.targets = split_commas(p.get("targets"));
  spec.quant = p.get("quant");
  spec.steps = p.get_int("steps");
  spec.global_batch = p.get_int("global-batch");
  spec.micro_batch = p.get_int("micro-batch");
  spec.lr = p.get_double("lr");
  spec.warmup = p.get_int("warmup");
  spec.checkpoint_every = p.get_int("checkpoint-every");
  const LoraConfig lc = lora_config(spec, uint64_t(p.get_int("seed")));
  LoraLlama lora(m.model, kept, lc);
  TrainConfig tc = train_config(spec);
  tc.weight_decay = p.get_double("weight-decay");  // not experiment settings (the paper's: none, clip 1)
  tc.clip = p.get_double("clip");
  tc.checkpoint_dir = p.get("checkpoint-dir");
  const int64_t seq_len = p.get_int("seq-len") > 0 ? p.get_int("seq-len") : m.model.config().max_position_embeddings;
  if (seq_len > m.model.config().max_position_embeddings)
    throw InputError("--seq-len " + std::to_string(seq_len) + " exceeds the model's " +
                     std::to_string(m.model.config().max_position_embeddings) + " positions");

  const int32_t bos = m.tokenizer.sequence_bos();  // none when the tokenizer adds none (SmolLM2)
  std::vector<int32_t> eval_stream = m.tokenizer.encode(read_text_stream(eval_path), false);
  LossOptions lo;
  lo.context = p.get_int("eval-context");
  lo.max_windows = p.get_int("eval-windows");
  auto val_loss = [&](bool adapted, const std::vector<int64_t>& layers) {
    at::NoGradGuard no_grad;
    if (adapted)
      return stream_loss([&](const at::Tensor& t) { return lora.forward(t, false); },
                         m.model.config().max_position_embeddings, m.model.config().vocab_size, eval_stream, bos, lo)
          .mean_nll;
    LossOptions o = lo;
    o.layers = layers;
    return stream_loss(m.model, eval_stream, bos, o).mean_nll;
  };
  const double base_loss = val_loss(false, {}), pruned_loss = val_loss(false, kept);
  std::fprintf(stderr, "heal: validation loss unpruned %.4f, pruned (kept %s) %.4f; %lld trainable parameters\n",
               base_loss, format_layer_ranges(kept).c_str(), pruned_loss, (long long)lora.trainable_parameters());

  PackedStream data(m.tokenizer.encode(read_text_stream(train_path), false), bos, seq_len, lc.seed);
  std::signal(SIGTERM, on_sigterm);
  std::signal(SIGINT, on_sigterm);
  TrainResult r = train(lora, data, tc, p.get("resume"));
  std::signal(SIGTERM, SIG_DFL);
  std::signal(SIGINT, SIG_DFL);
  const double healed_loss = val_loss(true, {});
  const double gap = pruned_loss - base_loss;
  const double recovered = gap > 0 ? (pruned_loss - healed_loss) / gap : 0.0;

  if (!p.get("out").empty() && !r.stopped) {
    std::map<std::string, TensorToWrite> replace;
    std::vector<at::Tensor> merged;
    merged.reserve(lora.adapters().size());
    for (size_t i = 0; i < lora.adapters().size(); ++i) {
      merged.push_back(lora.merged_weight(i).to(at::kCPU).contiguous());  // from the model's device
      replace.emplace(lora.adapters()[i].name + ".weight", tensor_to_write(lora.adapters()[i].name + ".weight", merged.back()));
    }
    export_pruned_model(p.get("model"), kept, p.get("out"), 5'000'000'000ull, replace);
  }
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  json steps = json::array();
  for (const TrainStep& s : r.steps) steps.push_back({{"step", s.step}, {"loss", s.loss}, {"lr", s.lr}});
  json out{{"model", p.get("model")}, {"kept", kept}, {"steps_run", r.steps.size()}, {"final_step", r.final_step},
           {"stopped", r.stopped}, {"checkpoint", r.last_checkpoint}, {"val_loss_unpruned", base_loss},
           {"val_loss_pruned", pruned_loss}, {"val_loss_healed", healed_loss}, {"gap_recovered", recovered},
           {"trainable_parameters", lora.trainable_parameters()}, {"train_data_sha256", sha256_file(train_path)},
           {"eval_data_sha256", sha256_file(eval_path)}, {"seed", lc.seed}, {"rank", lc.rank},
           {"alpha", lc.alpha > 0 ? lc.alpha : double(lc.rank)}, {"dropout", lc.dropout}, {"targets", lc.targets}, {"quant", lc.base_quant},
           {"base_projection_bytes", lora.base_projection_bytes()},
           {"lr", tc.lr}, {"global_batch", tc.global_batch}, {"seq_len", seq_len}, {"out", p.get("out")},
           {"code_version", layerprune_version()}, {"wall_seconds", wall}, {"loss_curve", steps}};
  if (p.flag_set("json")) {
    std::cout << out.dump() << std::endl;
  } else {
    std::printf("validation loss: unpruned %.4f, pruned %.4f, healed %.4f (%.0f%% of the gap recovered)\n", base_loss,
                pruned_loss, healed_loss, 100.0 * recovered);
    std::printf("%lld steps%s; %.1fs%s%s\n", (long long)r.final_step, r.stopped ? " (stopped: resume with --resume)" : "",
                wall, r.last_checkpoint.empty() ? "" : "; checkpoint ", r.last_checkpoint.c_str());
  }
  return r.stopped ? 3 : 0;
}

}  // namespace layerprune::cli
