// libFuzzer target: a Hugging Face tokenizer.json (formats/bpe_tokenizer.h BpeTokenizer::from_json, what
// BpeTokenizer::load and Tokenizer::load_dir read). An accepted tokenizer then encodes and decodes a fixed
// text (lpfuzz::sample_text: Unicode, digits, whitespace runs, special-token spellings, malformed UTF-8),
// with and without special tokens, directly and through the Tokenizer wrapper.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "formats/bpe_tokenizer.h"
#include "formats/tokenizer.h"
#include "fuzz_support.h"

using namespace layerprune;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  lpfuzz::accept_input_errors([&] {
    const BpeTokenizer tok = BpeTokenizer::from_json(text, "tokenizer.json");
    const int32_t n = tok.vocab_size();
    LPFUZZ_CHECK(n >= 0, "vocab_size is not negative");
    for (bool special : {false, true}) {
      const std::vector<int32_t> ids = tok.encode(lpfuzz::sample_text(), special);
      for (int32_t id : ids) {
        LPFUZZ_CHECK(id >= 0 && id < n, "encode gives ids in the vocabulary");
        (void)tok.token_bytes(id);
        (void)tok.is_special(id);
      }
      (void)tok.decode(ids, special);
      (void)tok.decode(ids, !special);
    }
    // Every token once (a bounded number of them), and the lookup back.
    std::vector<int32_t> all;
    for (int32_t id = 0; id < n && id < 4096; ++id) {
      all.push_back(id);
      LPFUZZ_CHECK(tok.token_to_id(tok.token(id)) >= 0, "a token's string is in the vocabulary");
    }
    (void)tok.decode(all, false);
    (void)tok.decode(all, true);
    for (int32_t bad : {-1, n}) {
      lpfuzz::accept_input_errors([&] { (void)tok.decode({bad}, false); });
    }
    if (tok.bos_id() >= 0) LPFUZZ_CHECK(tok.bos_id() < n, "BOS in the vocabulary");
    if (tok.eos_id() >= 0) LPFUZZ_CHECK(tok.eos_id() < n, "EOS in the vocabulary");
    const Tokenizer wrapped = Tokenizer::from_bpe(tok);
    const std::vector<int32_t> ids = wrapped.encode(lpfuzz::sample_text(), false);
    (void)wrapped.decode(ids);
    int32_t prev = -1;
    for (int32_t id : ids) {
      (void)wrapped.token_text(prev, id);
      prev = id;
    }
    lpfuzz::accept_input_errors([&] { (void)wrapped.encode("x", true); });  // InputError when there is no BOS
  });
  return 0;
}
