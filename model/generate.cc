#include "model/generate.h"

#include <ATen/ATen.h>

#include <cctype>
#include <chrono>

#include "common/error.h"

namespace layerprune {

namespace {
// run.c's safe_printf: a piece that is one non-printable, non-space byte is not printed.
std::string printable(const std::string& piece) {
  if (piece.size() == 1) {
    unsigned char c = piece[0];
    if (!(std::isprint(c) || std::isspace(c))) return "";
  }
  return piece;
}
}  // namespace

GenerateResult generate_greedy(const LlamaModel& model, const Tokenizer& tokenizer, const std::string& prompt,
                               int64_t max_new_tokens, const std::function<void(const std::string&)>& on_text) {
  GenerateResult r;
  // BOS as the tokenizer says (llama2.c's models: yes; SmolLM2: no, its BOS is the chat template's <|im_start|>).
  const bool bos = tokenizer.add_bos_default();
  r.prompt_ids = tokenizer.encode(prompt, bos);
  if (r.prompt_ids.empty())
    throw InputError("generate: the prompt is empty and the tokenizer adds no BOS: there is nothing to continue");
  const int64_t context = model.config().max_position_embeddings;
  if (int64_t(r.prompt_ids.size()) >= context)
    throw InputError("generate: the prompt has " + std::to_string(r.prompt_ids.size()) +
                     " tokens, no room in the model's context of " + std::to_string(context));
  auto emit = [&](int32_t prev, int32_t id) {
    std::string s = printable(tokenizer.token_text(prev, id));
    r.text += s;
    if (on_text) on_text(s);
  };
  for (size_t i = bos ? 1 : 0; i < r.prompt_ids.size(); ++i) emit(i ? r.prompt_ids[i - 1] : -1, r.prompt_ids[i]);

  KVCache cache;
  at::Tensor input = at::tensor(std::vector<int64_t>(r.prompt_ids.begin(), r.prompt_ids.end()), at::kLong).unsqueeze(0);
  int32_t prev = r.prompt_ids.back();
  auto t0 = std::chrono::steady_clock::now();
  r.stop_reason = "max_new_tokens";
  while (int64_t(r.new_ids.size()) < max_new_tokens) {
    if (cache.length + input.size(1) > context) {
      r.stop_reason = "context";
      break;
    }
    at::Tensor logits = model.forward(input, {}, &cache).logits;  // [1, T, V]
    int32_t next = int32_t(logits[0][-1].argmax().item<int64_t>());
    if (next == tokenizer.bos_id()) {
      r.stop_reason = "bos";
      break;
    }
    if (next == tokenizer.eos_id()) {
      r.stop_reason = "eos";
      break;
    }
    r.new_ids.push_back(next);
    emit(prev, next);
    prev = next;
    input = at::full({1, 1}, int64_t(next), at::kLong);
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.tokens_per_second = secs > 0 ? double(r.new_ids.size()) / secs : 0;
  return r;
}

}  // namespace layerprune
