#include "formats/lora_checkpoint.h"

#include <cerrno>
#include <cstdlib>

#include "common/error.h"
#include "formats/json_input.h"
#include "formats/tensor_scan.h"

namespace layerprune {

namespace {

constexpr const char* kFormat = "layerprune-lora-checkpoint";

// A decimal integer >= 0 that fits int64, the whole string.
int64_t count_field(const std::string& path, const std::string& key, const std::string& text) {
  if (text.empty() || text.size() > 19 || text.find_first_not_of("0123456789") != std::string::npos)
    throw InputError(path + ": checkpoint metadata \"" + key + "\" is \"" + text.substr(0, 40) +
                     "\", expected an integer >= 0");
  errno = 0;
  const long long v = std::strtoll(text.c_str(), nullptr, 10);
  if (errno == ERANGE) throw InputError(path + ": checkpoint metadata \"" + key + "\" is out of range");
  return v;
}

}  // namespace

std::map<std::string, std::string> lora_checkpoint_metadata(const LoraCheckpointInfo& info) {
  return {{"format", kFormat},
          {"step", std::to_string(info.step)},
          {"data_position", std::to_string(info.data_position)},
          {"lora", info.lora.dump()},
          {"rng_device", info.rng_device}};
}

LoraCheckpointInfo check_lora_checkpoint(const SafetensorsFile& file, const std::string& path,
                                         const nlohmann::json& identity, const std::vector<ExpectedTensor>& tensors) {
  const auto& meta = file.metadata();
  auto field = [&](const std::string& k) -> const std::string& {
    auto it = meta.find(k);
    if (it == meta.end())
      throw InputError(path + ": not a layerprune LoRA checkpoint (no \"" + k + "\" in its metadata)");
    return it->second;
  };
  if (field("format") != kFormat) throw InputError(path + ": not a layerprune LoRA checkpoint");
  LoraCheckpointInfo info;
  info.step = count_field(path, "step", field("step"));
  info.data_position = count_field(path, "data_position", field("data_position"));
  info.lora = parse_json_input(field("lora"), path + " (metadata \"lora\")");
  if (!info.lora.is_object()) throw InputError(path + ": checkpoint metadata \"lora\" is not a JSON object");
  for (const auto& [key, value] : identity.items()) {
    auto it = info.lora.find(key);
    if (it == info.lora.end() || *it != value)
      throw InputError(path + ": checkpoint is for another adapter set (its " + key + " is " +
                       (it == info.lora.end() ? std::string("missing") : it->dump()) + ", this run's " +
                       value.dump() + ")");
  }
  if (auto it = meta.find("rng_device"); it != meta.end()) info.rng_device = it->second;

  for (const ExpectedTensor& e : tensors) {
    const TensorView* v = file.find(e.name);
    if (!v) throw InputError(path + ": missing tensor " + e.name);
    if (v->dtype != DType::F32)
      throw InputError(path + ": tensor " + e.name + " is " + dtype_name(v->dtype) + ", expected F32");
    if (v->shape != e.shape)
      throw InputError(path + ": tensor " + e.name + " has shape " + format_shape(v->shape) + ", expected " +
                       format_shape(e.shape));
    const TensorScan s = scan_tensor(*v);
    if (!s.finite())
      throw NonFiniteError(path + ": tensor " + e.name + " holds " + std::to_string(s.nan) + " NaN and " +
                           std::to_string(s.inf) + " Inf values (first at flat index " +
                           std::to_string(s.first_bad) + "): the run that wrote it had diverged");
  }
  const TensorView* rng = file.find("rng_state");
  if (!rng) throw InputError(path + ": missing tensor rng_state");
  if (rng->dtype != DType::U8 || rng->shape.size() != 1)
    throw InputError(path + ": tensor rng_state is " + dtype_name(rng->dtype) + " " + format_shape(rng->shape) +
                     ", expected a U8 vector");
  return info;
}

}  // namespace layerprune
