// Random-initialised Llama models of any shape, written as Hugging Face-layout directories, for tests and
// benchmarks (they need no download).
#pragma once
#include <cstdint>
#include <string>

#include "formats/llama_config.h"

namespace layerprune {

struct MakeModelOptions {
  uint64_t seed = 0;
  std::string dtype = "float32";   // stored dtype: float32 or bfloat16
  double init_std = 0.02;          // HF's initializer_range: linear and embedding weights ~ N(0, std^2)
  std::string tokenizer_model;     // optional: copied in as tokenizer.model (its size must match vocab_size)
  uint64_t max_shard_bytes = 0;    // > 0: write sharded safetensors with an index
};

// Writes out_dir/config.json and the weights (norm weights are 1, as HF initialises them).
void make_random_model(const LlamaConfig& config, const std::string& out_dir, const MakeModelOptions& options);

}  // namespace layerprune
