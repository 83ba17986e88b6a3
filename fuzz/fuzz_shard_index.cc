// libFuzzer target: a sharded checkpoint's model.safetensors.index.json (formats/safetensors.h,
// Checkpoint::open on a directory). The bytes become the index of a directory that also holds three small
// valid shards (two at the top, one in a subdirectory), so the fuzzer can name real, missing, misplaced,
// duplicated and escaping shard files; an accepted checkpoint is then looked up tensor by tensor.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "formats/safetensors.h"
#include "fuzz_support.h"

using namespace layerprune;

namespace {

std::string dir;

void write_shards() {
  dir = lpfuzz::scratch().dir() + "/ckpt";
  const std::vector<float> v(8, 1.5f);
  const std::vector<uint16_t> h(6, 0x3c00);
  lpfuzz::scratch().write("ckpt/.keep", "");
  write_safetensors(dir + "/model-00001-of-00002.safetensors",
                    {{"model.embed_tokens.weight", DType::F32, {2, 4}, v.data(), 32},
                     {"model.norm.weight", DType::F16, {6}, h.data(), 12}},
                    {{"format", "pt"}});
  write_safetensors(dir + "/model-00002-of-00002.safetensors",
                    {{"lm_head.weight", DType::F32, {8}, v.data(), 32}, {"scalar", DType::BF16, {}, h.data(), 2}});
  lpfuzz::scratch().write("ckpt/sub/.keep", "");
  write_safetensors(dir + "/sub/extra.safetensors", {{"model.layers.0.mlp.up_proj.weight", DType::F16, {3, 2}, h.data(), 12}});
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  write_shards();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lpfuzz::scratch().write("ckpt/model.safetensors.index.json", data, size);
  lpfuzz::accept_input_errors([&] {
    Checkpoint c = Checkpoint::open(dir);
    uint64_t total = 0;
    for (const std::string& name : c.names()) {
      const TensorView& t = c.tensor(name);
      LPFUZZ_CHECK(c.find(name) == &t, "find and tensor agree");
      total += t.nbytes;
    }
    LPFUZZ_CHECK(total == c.total_bytes(), "total_bytes is the sum of the tensors");
    LPFUZZ_CHECK(c.find("no.such.tensor") == nullptr, "an absent tensor is not found");
  });
  return 0;
}
