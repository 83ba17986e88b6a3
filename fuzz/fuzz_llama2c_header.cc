// libFuzzer target: a llama2.c checkpoint's header as the torch-free code reads it
// (experiment/experiment.h default_layer_resolver with format llama2c: the planner's layer count). The
// importer itself (model/llama2c.cc convert_llama2c) builds LibTorch tensors and is not built here.
#include <cstddef>
#include <cstdint>
#include <string>

#include "experiment/experiment.h"
#include "fuzz_support.h"

using namespace layerprune;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ModelSpec m;
  m.name = "fuzz";
  m.format = "llama2c";
  m.path = lpfuzz::scratch().write("model.bin", data, size);
  lpfuzz::accept_input_errors([&] {
    const int64_t layers = default_layer_resolver(m);
    LPFUZZ_CHECK(layers > 0 && layers <= 100000, "a plausible layer count");
  });
  return 0;
}
