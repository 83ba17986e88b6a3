// The healing run's checkpoint file (healing/trainer.h), torch-free: a safetensors file whose metadata holds
//   format         "layerprune-lora-checkpoint"
//   step           optimizer steps taken (a decimal integer >= 0)
//   data_position  the training stream's position (a decimal integer >= 0)
//   lora           {"rank", "alpha", "dropout", "targets", "seed", "kept_layers"} (JSON)
//   rng_device     the kind of device whose dropout generator wrote rng_state ("cpu", "cuda"; absent: "cpu")
// and whose tensors are, for each adapter <name>, <name>.lora_A.{weight,exp_avg,exp_avg_sq} [rank, in] and
// <name>.lora_B.{...} [out, rank] as F32, full shapes whatever the tensor-parallel size, and rng_state (U8).
// Reading one checks everything a resume relies on, so the trainer copies only checked tensors.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "formats/safetensors.h"

namespace layerprune {

struct LoraCheckpointInfo {
  int64_t step = 0, data_position = 0;
  nlohmann::json lora;  // the adapter configuration it was written with (an object)
  std::string rng_device = "cpu";
};

// The metadata of a checkpoint at `step`.
std::map<std::string, std::string> lora_checkpoint_metadata(const LoraCheckpointInfo& info);

// The checkpoint's metadata and tensors, checked: the format, step and data position (integers >= 0),
// lora an object whose keys in `identity` (e.g. rank, targets, kept_layers) equal the run's, each expected
// tensor present as F32 with its shape and only finite values, and rng_state as U8. An InputError names
// the file and what is wrong otherwise.
LoraCheckpointInfo check_lora_checkpoint(const SafetensorsFile& file, const std::string& path,
                                         const nlohmann::json& identity, const std::vector<ExpectedTensor>& tensors);

}  // namespace layerprune
