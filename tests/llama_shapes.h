// A Llama config of a given shape, for tests that build random models or plans.
#pragma once
#include <cstdint>

#include "formats/llama_config.h"

namespace layerprune::testing {

inline LlamaConfig llama_shape(int64_t dim, int64_t ffn, int64_t layers, int64_t heads, int64_t kv_heads,
                               int64_t vocab, int64_t context = 64) {
  LlamaConfig c;
  c.hidden_size = dim;
  c.intermediate_size = ffn;
  c.num_hidden_layers = layers;
  c.num_attention_heads = heads;
  c.num_key_value_heads = kv_heads;
  c.vocab_size = vocab;
  c.max_position_embeddings = context;
  return c;
}

}  // namespace layerprune::testing
