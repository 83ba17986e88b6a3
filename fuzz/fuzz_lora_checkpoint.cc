// libFuzzer target: a healing checkpoint (formats/lora_checkpoint.h), the file `layerprune heal --resume` and a
// re-leased healing task read. The bytes become a file, opened as safetensors and checked against a fixed
// adapter set (two adapters of rank 2: up_proj [16, 8] and down_proj [8, 16] of layers 0 and 1), as the
// trainer checks it before copying anything. Whatever it accepts must hold exactly the expected tensors'
// shapes and F32 dtype with finite values, and a step and data position >= 0.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "formats/lora_checkpoint.h"
#include "formats/tensor_scan.h"
#include "fuzz_support.h"

using namespace layerprune;

namespace {

const std::vector<ExpectedTensor>& expected() {
  static const std::vector<ExpectedTensor> e = [] {
    std::vector<ExpectedTensor> out;
    for (const char* name : {"model.layers.0.mlp.up_proj", "model.layers.1.mlp.down_proj"}) {
      const bool up = std::string(name).find("up_proj") != std::string::npos;
      const int64_t rows = up ? 16 : 8, cols = up ? 8 : 16;
      for (const char* suffix : {"weight", "exp_avg", "exp_avg_sq"}) {
        out.push_back({std::string(name) + ".lora_A." + suffix, {2, cols}});
        out.push_back({std::string(name) + ".lora_B." + suffix, {rows, 2}});
      }
    }
    return out;
  }();
  return e;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = lpfuzz::scratch().write("step-000003.safetensors", data, size);
  lpfuzz::accept_input_errors([&] {
    auto f = SafetensorsFile::open(path);
    const nlohmann::json identity = {{"rank", 2}, {"kept_layers", {0, 1}}, {"targets", {"up_proj", "down_proj"}}};
    const LoraCheckpointInfo info = check_lora_checkpoint(*f, path, identity, expected());
    LPFUZZ_CHECK(info.step >= 0 && info.data_position >= 0, "step and data position >= 0");
    LPFUZZ_CHECK(info.lora.is_object() && info.lora.at("rank") == 2, "the adapter set is the run's");
    for (const ExpectedTensor& e : expected()) {
      const TensorView* v = f->find(e.name);
      LPFUZZ_CHECK(v && v->dtype == DType::F32 && v->shape == e.shape, "accepted tensors have the expected layout");
      LPFUZZ_CHECK(scan_tensor(*v).finite(), "accepted tensors are finite");
    }
    // What the trainer writes back from it round-trips.
    LPFUZZ_CHECK(lora_checkpoint_metadata(info).at("step") == std::to_string(info.step), "metadata round-trips");
  });
  return 0;
}
