// Greedy text generation with a KV cache, printing as llama2.c's run.c does (so the two can be compared
// byte for byte on the same checkpoint).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/llama.h"
#include "formats/tokenizer.h"

namespace layerprune {

struct GenerateResult {
  std::vector<int32_t> prompt_ids;  // with BOS
  std::vector<int32_t> new_ids;     // generated after the prompt
  std::string text;                 // what was printed: the prompt's tokens then the new ones
  double tokens_per_second = 0;     // generated tokens / wall time of the decode loop
  std::string stop_reason;          // "max_new_tokens", "bos", "eos" or "context"
};

// Runs the prompt (BOS + encode(prompt)), then appends argmax tokens until max_new_tokens, the context is
// full, or the model emits BOS or EOS (llama2.c stops at BOS: it separates stories). on_text receives each
// token's text as run.c prints it (non-printable single bytes are skipped, like its safe_printf).
GenerateResult generate_greedy(const LlamaModel& model, const Tokenizer& tokenizer, const std::string& prompt,
                               int64_t max_new_tokens, const std::function<void(const std::string&)>& on_text = {});

}  // namespace layerprune
