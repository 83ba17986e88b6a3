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

// Sets the thread count, loads --model DIR (config.json, safetensors, tokenizer.model or tokenizer.json)
// and logs to stderr.
LoadedModel load_model(const ArgParser& p);

// --add-bos / --no-add-bos: whether prompts start with BOS. Neither: the tokenizer's own choice
// (tokenizer_config.json's add_bos_token; Tokenizer::add_bos_default), as lm-evaluation-harness decides.
void add_bos_flags(ArgParser& p);
bool add_bos_from_flags(const ArgParser& p, const Tokenizer& tokenizer);

}  // namespace layerprune::cli
