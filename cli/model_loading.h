// What every model-level subcommand shares: the --model/--threads/--dtype/--json flags and loading the
// model directory with its tokenizer (the vocabulary sizes must agree).
#pragma once
#include "common/args.h"
#include "model/llama.h"
#include "formats/tokenizer.h"

namespace layerprune::cli {

void add_model_flags(ArgParser& p);

struct LoadedModel {
  LlamaModel model;
  Tokenizer tokenizer;
};

// Sets the thread count, loads --model DIR (config.json, safetensors, tokenizer.model) and logs to stderr.
LoadedModel load_model(const ArgParser& p);

}  // namespace layerprune::cli
