// libFuzzer target: a SentencePiece tokenizer.model (formats/tokenizer.h Tokenizer::from_bytes, the
// protobuf ModelProto reader that Tokenizer::load and load_dir use). An accepted model then encodes a fixed
// text (lpfuzz::sample_text) with and without BOS, decodes it, streams it token by token as llama2.c's
// run.c prints it, and looks its pieces up again.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "formats/tokenizer.h"
#include "fuzz_support.h"

using namespace layerprune;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  lpfuzz::accept_input_errors([&] {
    const Tokenizer tok = Tokenizer::from_bytes(bytes, "tokenizer.model");
    const int32_t n = tok.vocab_size();
    LPFUZZ_CHECK(n > 0, "an accepted model has pieces");
    LPFUZZ_CHECK(tok.unk_id() >= 0 && tok.unk_id() < n, "unk in the vocabulary");
    for (bool bos : {false, true}) {
      std::vector<int32_t> ids;
      if (bos && tok.bos_id() < 0) {
        lpfuzz::accept_input_errors([&] { ids = tok.encode(lpfuzz::sample_text(), true); });  // InputError: no BOS
        continue;
      }
      ids = tok.encode(lpfuzz::sample_text(), bos);
      for (int32_t id : ids) LPFUZZ_CHECK(id >= 0 && id < n, "encode gives ids in the vocabulary");
      (void)tok.decode(ids);
      int32_t prev = bos ? tok.bos_id() : -1;
      for (int32_t id : ids) {
        (void)tok.token_text(prev, id);
        (void)tok.score(id);
        (void)tok.piece_type(id);
        const int32_t back = tok.piece_to_id(tok.piece(id));
        LPFUZZ_CHECK(back >= 0 && back < n, "piece_to_id gives an id in the vocabulary");
        prev = id;
      }
    }
    std::vector<int32_t> all;
    for (int32_t id = 0; id < n && id < 4096; ++id) all.push_back(id);
    (void)tok.decode(all);
    for (int32_t bad : {-1, n}) lpfuzz::accept_input_errors([&] { (void)tok.decode({bad}); });
    (void)tok.encode("", false);
  });
  return 0;
}
