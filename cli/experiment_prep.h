// Getting an experiment's models into the form workers load: a llama2.c checkpoint (model/llama2c.h) or a
// GGUF file (formats/gguf_llama.h) is converted once into a Hugging Face directory under
// `models_dir/<name>`, and the experiment's model spec is rewritten to point at it. Hugging Face models are
// checked for config.json and a tokenizer (tokenizer.model or tokenizer.json).
#pragma once
#include <string>

#include "experiment/experiment.h"

namespace layerprune::cli {

// InputError naming the model and its YAML line for a missing checkpoint, tokenizer or directory.
void prepare_models(Experiment& experiment, const std::string& models_dir);

}  // namespace layerprune::cli
