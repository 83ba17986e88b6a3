// libFuzzer target: a GGUF file (formats/gguf.h, formats/gguf_llama.h). The bytes become a file, opened by
// GgufFile::open; then, each stage on its own so that one refusal does not hide the next: every metadata
// value read with the getter its type calls for (arrays element by element, nested ones too), the
// tokenizer metadata (read_gguf_tokenizer) and the byte-level BPE built from it (BpeTokenizer::from_gguf,
// encode/decode), the Llama config (gguf_llama_config), the tokenizer.json/tokenizer_config.json that
// convert_gguf would write (gguf_hf_tokenizer, then loaded back), and small tensors dequantised as
// convert_gguf reads them (gguf_llama_tensor).
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "formats/bpe_tokenizer.h"
#include "formats/gguf.h"
#include "formats/gguf_llama.h"
#include "formats/llama_config.h"
#include "fuzz_support.h"

using namespace layerprune;

namespace {

void read_value(const GgufValue& v, int depth) {
  (void)v.describe();
  lpfuzz::accept_input_errors([&] {
    if (v.is_integer()) (void)v.as_int();
    else if (v.is_float()) (void)v.as_double();
    else if (v.type() == GgufValueType::BOOL) (void)v.as_bool();
    else if (v.type() == GgufValueType::STRING) (void)v.as_string();
    else if (v.is_array()) {
      (void)v.size();
      const GgufValueType e = v.element_type();
      if (e == GgufValueType::STRING) (void)v.as_strings();
      else if (e == GgufValueType::FLOAT32 || e == GgufValueType::FLOAT64) (void)v.as_floats();
      else if (e != GgufValueType::ARRAY && e != GgufValueType::BOOL) (void)v.as_ints();
      if (depth < 3)
        for (const GgufValue& x : v.elements()) read_value(x, depth + 1);
    }
  });
  // The wrong getters must refuse with an InputError, never misread.
  lpfuzz::accept_input_errors([&] { (void)v.as_string(); });
  lpfuzz::accept_input_errors([&] { (void)v.as_int(); });
  lpfuzz::accept_input_errors([&] { (void)v.as_strings(); });
}

void use_tokenizer(const BpeTokenizer& tok) {
  for (bool special : {false, true}) {
    const std::vector<int32_t> ids = tok.encode(lpfuzz::sample_text(), special);
    for (int32_t id : ids) LPFUZZ_CHECK(id >= 0 && id < tok.vocab_size(), "encode gives ids in the vocabulary");
    (void)tok.decode(ids, special);
    for (int32_t id : ids) (void)tok.token_bytes(id);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = lpfuzz::scratch().write("model.gguf", data, size);
  std::shared_ptr<GgufFile> file;
  lpfuzz::accept_input_errors([&] { file = GgufFile::open(path); });
  if (!file) return 0;
  const GgufFile& f = *file;
  for (const GgufValue& v : f.metadata()) {
    LPFUZZ_CHECK(f.find(v.key()) != nullptr, "every key is found");
    read_value(v, 0);
  }

  lpfuzz::accept_input_errors([&] {
    const GgufTokenizerMetadata meta = read_gguf_tokenizer(f);
    BpeTokenizer::GgufVocab vocab;
    vocab.tokens = meta.tokens;
    vocab.merges = meta.merges;
    for (int64_t t : meta.token_types) vocab.token_types.push_back(int32_t(t));
    vocab.pre = meta.pre;
    vocab.bos_id = int32_t(meta.bos_token_id.value_or(-1));
    vocab.eos_id = int32_t(meta.eos_token_id.value_or(-1));
    vocab.unk_id = int32_t(meta.unknown_token_id.value_or(-1));
    vocab.add_bos = meta.add_bos_token.value_or(false);
    vocab.add_eos = meta.add_eos_token.value_or(false);
    use_tokenizer(BpeTokenizer::from_gguf(vocab, path));
  });

  std::optional<LlamaConfig> config;
  lpfuzz::accept_input_errors([&] { config = gguf_llama_config(f); });
  if (config) {
    lpfuzz::accept_input_errors([&] {
      const HfTokenizerFiles files = gguf_hf_tokenizer(f, *config);
      use_tokenizer(BpeTokenizer::from_json(files.tokenizer_json, path + "/tokenizer.json"));
    });
  }
  for (const GgufTensor& t : f.tensors()) {
    LPFUZZ_CHECK(f.find_tensor(t.name) == &t, "every tensor is found");
    (void)gguf_to_hf_tensor_name(t.name);
    LPFUZZ_CHECK(f.data_offset() + t.offset + t.nbytes <= size, "a tensor lies inside the file");
    const GgmlTypeInfo* info = ggml_type_info(t.type);
    LPFUZZ_CHECK(info && t.numel() % info->block_size == 0 &&
                     t.nbytes == size_t(t.numel() / info->block_size * info->type_size),
                 "a tensor's bytes are its blocks");
    if (t.numel() > (1 << 16)) continue;  // the reader's bounds are what is under test, not the arithmetic
    lpfuzz::accept_input_errors([&] {
      if (config) (void)gguf_llama_tensor(f, t, *config);
      else (void)f.dequantize(t);
    });
  }
  return 0;
}
