// Byte-level BPE (GPT-2 style: SmolLM2, Llama-3, Qwen2), implemented natively in two ways of being built:
//
// - from a Hugging Face tokenizer.json, reproducing the `tokenizers` library's encode/decode (checked token
//   for token against tokenizers 0.23 by tests/test_bpe_tokenizer.cc on golden files written by
//   tests/golden/make_bpe_golden.py);
// - from a GGUF's tokenizer metadata (tokens, merges, token types, `tokenizer.ggml.pre`), reproducing
//   llama.cpp's tokenizer: the pre-tokenizer regexes llama.cpp's src/llama-vocab.cpp lists for that `pre`.
//
// The pipeline, as `tokenizers` runs it: added tokens are cut out of the raw text (longest match first);
// the rest is normalized (NFC, by utf8proc), pre-tokenized (regex splits through PCRE2 in UTF + UCP mode,
// so \p{L}, \p{N}, \s and lookaheads mean what they mean to the Rust `regex`/`fancy-regex` crates), mapped
// to GPT-2's byte alphabet, and each pre-token merged by the BPE ranks; a post-processor adds BOS/EOS.
//
// What is not implemented is refused at load time with an InputError naming the file and the field (e.g.
// a WordPiece model, BPE dropout, a Metaspace pre-tokenizer, an NFKC normalizer), never tokenized slightly
// wrong. docs/formats.md ("tokenizer.json") lists what is supported.
//
// Malformed UTF-8 in the text to encode (a Python str cannot hold it, so `tokenizers` never sees it) is
// first replaced as Python's bytes.decode("utf-8", errors="replace") does: one U+FFFD per maximal ill-formed
// subsequence. Decoding maps the byte alphabet back and reads the bytes as UTF-8 the same way, as
// `tokenizers`' ByteLevel decoder (Rust's String::from_utf8_lossy) does.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace layerprune {

class BpeTokenizer {
 public:
  // Reads a tokenizer.json. Throws InputError naming the file (and the JSON field) when it is unreadable,
  // malformed, inconsistent (a merge naming a token not in the vocabulary) or uses what is not implemented.
  static BpeTokenizer load(const std::string& path);
  // The same from the file's text; `name` stands for the file in error messages and path().
  static BpeTokenizer from_json(const std::string& text, const std::string& name);

  // A GGUF's tokenizer metadata (`tokenizer.ggml.*`), as plain vectors, so a GGUF reader can hand them over.
  struct GgufVocab {
    std::vector<std::string> tokens;       // tokenizer.ggml.tokens, in the byte alphabet ("Ġthe")
    std::vector<std::string> merges;       // tokenizer.ggml.merges, "a b" (the two tokens, one space)
    std::vector<int32_t> token_types;      // tokenizer.ggml.token_type (llama.cpp: 1 normal, 2 unknown,
                                           // 3 control, 4 user-defined, 5 unused, 6 byte); empty: all normal
    std::string pre;                       // tokenizer.ggml.pre: llama.cpp's pre-tokenizer name
    int32_t bos_id = -1, eos_id = -1, unk_id = -1;
    // tokenizer.ggml.add_bos_token / add_eos_token; where the GGUF lacks the key, pass llama.cpp's default
    // for the `pre` (llama-vocab.cpp sets add_bos for llama-bpe), as llama.cpp would use it
    bool add_bos = false, add_eos = false;
    std::string file_sha256;                 // of the GGUF file, for file_sha256() (provenance)
  };
  // llama.cpp's tokenizer for that vocabulary: `pre` one of smollm, llama-bpe (also llama3, llama-v3),
  // qwen2, gpt-2, default (anything else is refused, naming it). Control and user-defined tokens are
  // matched in the text, as llama.cpp does with parse_special (llama-tokenize's default).
  static BpeTokenizer from_gguf(const GgufVocab& vocab, const std::string& name);

  // tokenizers' Tokenizer.encode(text, add_special_tokens).ids.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const;
  // tokenizers' Tokenizer.decode(ids, skip_special_tokens). InputError on an id outside the vocabulary.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const;
  // One token's bytes for streaming output (concatenating them for a sequence gives decode's bytes before
  // the UTF-8 repair, so a character split over two tokens comes out whole); special tokens give "".
  std::string token_bytes(int32_t id) const;

  int32_t vocab_size() const;
  const std::string& token(int32_t id) const;           // the vocabulary string ("Ġthe", "<|im_end|>")
  int32_t token_to_id(std::string_view token) const;    // -1 when absent
  bool is_special(int32_t id) const;                    // an added token marked special (or GGUF control)
  int32_t bos_id() const;  // the BOS the post-processor adds (or the declared one); -1 when none
  int32_t eos_id() const;  // -1 when none
  bool adds_bos() const;   // whether encode(text, true) puts a BOS first
  // Sets BOS/EOS from tokenizer_config.json's token strings (InputError when not in the vocabulary).
  void set_bos_eos(const std::string& bos_token, const std::string& eos_token);

  const std::string& file_sha256() const;
  const std::string& path() const;

  struct Model;  // defined in bpe_tokenizer.cc

 private:
  explicit BpeTokenizer(std::shared_ptr<Model> m) : m_(std::move(m)) {}
  std::shared_ptr<Model> m_;
};

}  // namespace layerprune
