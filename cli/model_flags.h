// The flags every model-level subcommand shares (--model, --threads, --dtype, --json) and loading the model
// with its tokenizer from them.
#pragma once
#include "common/args.h"
#include "worker/llama.h"
#include "worker/tokenizer.h"

namespace layerprune::cli {

void add_model_flags(ArgParser& p);

struct LoadedModel {
  LlamaModel model;
  Tokenizer tokenizer;
};

// Loads --model DIR (config.json, safetensors, tokenizer.model) with --threads and --dtype; progress and a
// one-line summary on stderr. InputError for a missing directory, tokenizer or a vocabulary mismatch.
LoadedModel load_model(const ArgParser& p);

}  // namespace layerprune::cli
