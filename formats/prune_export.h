// `layerprune prune`: a pruned model as a Hugging Face directory of its own.
//
// The kept layers are renumbered 0..L'-1 (model.layers.{kept[i]}.* -> model.layers.{i}.*), config.json gets
// num_hidden_layers = L' (every other field kept as it was), and the embedding, final norm, LM head and
// tokenizer files are copied unchanged. Tensors are copied byte for byte from the memory-mapped source (no
// dtype conversion), into one model.safetensors, or shards plus an index when the source was sharded. The
// shards' metadata records the source and the kept layers. Loading the result gives the same logits as
// running the source with ForwardOptions::layers = kept.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "formats/safetensors.h"

namespace layerprune {

struct PruneExport {
  int64_t source_layers = 0, kept_layers = 0;
  uint64_t bytes_written = 0;
  std::vector<std::string> files;  // written, relative to the output directory
};

// `kept` ascending, non-empty, within the source's layers (InputError otherwise). `out_dir` must not be the
// source; existing files in it are overwritten.
// `replace` maps source tensor names to new contents of the same dtype and shape (healed weights with LoRA
// merged in); their names are renumbered like the rest.
PruneExport export_pruned_model(const std::string& source_dir, const std::vector<int64_t>& kept,
                                const std::string& out_dir, uint64_t max_shard_bytes = 5'000'000'000ull,
                                const std::map<std::string, TensorToWrite>& replace = {});

}  // namespace layerprune
