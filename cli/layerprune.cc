// layerprune: one program, one subcommand per user action. With --json a subcommand prints one JSON
// document on stdout (logs and progress go to stderr). Exit status: 0 success, 2 usage or input error,
// 4 coordinator unreachable, 1 any other failure.
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "common/error.h"
#include "common/version.h"
#include "proto/client.h"
#include "model/runtime.h"

namespace {

struct Command {
  const char* name;
  const char* summary;
  int (*run)(int, char**);
  bool computes;  // runs LibTorch work: worth a re-exec for the OpenMP wait policy (model/runtime.h)
};

const Command kCommands[] = {
    {"run", "run an experiment YAML here: coordinator, MPI worker groups, progress, curves (resumable)",
     layerprune::cli::run, false},
    {"submit", "submit an experiment YAML to a running coordinator", layerprune::cli::submit, false},
    {"status", "progress of experiments (per task with --tasks)", layerprune::cli::status, false},
    {"cancel", "cancel an experiment", layerprune::cli::cancel, false},
    {"slurm", "render, submit or cancel an experiment's Slurm jobs (coordinator + worker arrays)",
     layerprune::cli::slurm, false},
    {"results", "metrics of every finished grid point (table, CSV, JSON)", layerprune::cli::results, false},
    {"curves", "accuracy and loss against the fraction pruned per strategy x healing (table + SVG)",
     layerprune::cli::curves, false},
    {"check", "read every tensor of a model once: NaN/Inf values, dtype, shape and naming problems by tensor",
     layerprune::cli::check, false},
    {"convert", "turn a llama2.c checkpoint + tokenizer, or a llama.cpp GGUF Llama, into a Hugging Face-layout model directory",
     layerprune::cli::convert, false},
    {"distances", "angular distance between layer inputs (paper Eq. 7), l*(n) per block size, heatmap SVG",
     layerprune::cli::distances, true},
    {"eval", "MMLU / BoolQ accuracy of a whole or layer-pruned model (lm-evaluation-harness scoring)",
     layerprune::cli::eval, true},
    {"generate", "greedy text generation from a prompt", layerprune::cli::generate, true},
    {"heal", "LoRA healing of a pruned model (frozen base, AdamW, cosine), resumable, merged export",
     layerprune::cli::heal, true},
    {"locate", "print where a known model or dataset is on this machine", layerprune::cli::locate, false},
    {"loss", "mean next-token loss of a model on a text or JSONL file", layerprune::cli::loss, true},
    {"make-model", "write a random-initialised Llama of any shape (tests, benchmarks)",
     layerprune::cli::make_model, false},
    {"plan", "per-rank memory and FLOPs of a pruned (optionally NF4, LoRA-healed) model, from config.json",
     layerprune::cli::plan, false},
    {"prune", "drop layers (similarity, simple or block_influence strategy) and export the pruned model",
     layerprune::cli::prune, true},
    {"sweep", "the paper's curves for one model: accuracy and loss vs pruning fraction per strategy (no healing)",
     layerprune::cli::sweep, true},
};

void usage(std::FILE* out) {
  std::fprintf(out, "usage: layerprune COMMAND [options]   (layerprune COMMAND --help for its options)\n\n"
                    "Layer pruning of Llama-family models (Gromov et al. 2024).\n\ncommands:\n");
  for (const auto& c : kCommands) std::fprintf(out, "  %-12s %s\n", c.name, c.summary);
  std::fprintf(out, "\nversion %s\n", layerprune_version());
}

bool wants_json(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--json") == 0) return true;
  return false;
}

int fail(int status, const std::string& message, bool json) {
  if (json) std::cout << nlohmann::json{{"error", message}, {"exit_status", status}}.dump() << std::endl;
  std::fprintf(stderr, "layerprune: error: %s\n", message.c_str());
  return status;
}

}  // namespace

static bool wants_help(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--help") == 0) return true;
  return false;
}

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
    usage(stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!std::strcmp(argv[1], "--version")) {
    std::printf("layerprune %s\n", layerprune_version());
    return 0;
  }
  const bool json = wants_json(argc, argv);
  for (const auto& c : kCommands) {
    if (std::strcmp(argv[1], c.name) != 0) continue;
    if (c.computes && !wants_help(argc, argv)) layerprune::ensure_passive_openmp(argv);
    try {
      return c.run(argc - 1, argv + 1);
    } catch (const layerprune::InputError& e) {
      return fail(2, e.what(), json);
    } catch (const layerprune::CoordinatorUnavailable& e) {
      return fail(layerprune::kExitCoordinatorUnavailable, e.what(), json);
    } catch (const c10::Error& e) {  // LibTorch's own checks: keep the message, drop its backtrace
      return fail(1, e.what_without_backtrace(), json);
    } catch (const std::exception& e) {
      return fail(1, e.what(), json);
    }
  }
  usage(stderr);
  return fail(2, std::string("unknown command '") + argv[1] + "'", json);
}
