// libFuzzer target: a Hugging Face config.json (formats/llama_config.h LlamaConfig::from_json, what
// from_file, Checkpoint loading and the planner read). An accepted config must survive its own round trip
// (from_json(to_json()) == config, which the header promises), and its derived numbers are computed: RoPE
// frequencies, head sizes, the tensor-parallel head split for a few rank counts.
#include <cstddef>
#include <cstdint>
#include <string>

#include "formats/llama_config.h"
#include "fuzz_support.h"

using namespace layerprune;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  lpfuzz::accept_input_errors([&] {
    const LlamaConfig c = LlamaConfig::from_json(text, "config.json");
    const std::string again = c.to_json();
    LlamaConfig back;
    try {
      back = LlamaConfig::from_json(again, "to_json()");
    } catch (const InputError& e) {
      std::fprintf(stderr, "to_json() of an accepted config is refused: %s\n%s\n", e.what(), again.c_str());
      std::abort();
    }
    LPFUZZ_CHECK(back == c, "from_json(to_json()) == config");
    LPFUZZ_CHECK(c.head_dim() > 0 && c.head_dim() % 2 == 0, "head_dim positive and even");
    LPFUZZ_CHECK(c.kv_dim() > 0, "kv_dim positive");
    if (c.head_dim() <= 4096) (void)c.rope_inverse_frequencies();
    for (int tp : {1, 2, 3, 8}) lpfuzz::accept_input_errors([&] { (void)split_heads(c, tp); });
  });
  return 0;
}
