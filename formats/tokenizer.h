// The tokenizer callers use: either the Llama SentencePiece tokenizer below or a byte-level BPE
// (formats/bpe_tokenizer.h, from a Hugging Face tokenizer.json), chosen by the file (load) or the model
// directory (load_dir). With a BPE, encode/decode/token_text keep their meaning (BOS only when asked,
// special tokens dropped by decode, token_text one token's bytes); score() is 0 and piece_type() kControl
// for special tokens, kNormal otherwise.
//
// The Llama SentencePiece tokenizer, implemented natively: reads `tokenizer.model` (a protobuf ModelProto)
// with a small wire-format reader and reproduces sentencepiece's BPE encode/decode token for token.
//
// Why not link libsentencepiece: Debian's build bundles its own protobuf and crashes in any process that
// also loads the system libprotobuf (LibTorch, gRPC); see ../shared/PLATFORM.md, "SentencePiece clash".
// Checked against Python's sentencepiece 0.1.97 by tests/test_tokenizer.cc on the golden files written by
// tests/golden/make_token_ids.py.
//
// Supported: BPE models (TrainerSpec.model_type = BPE) with byte fallback or <unk>, user-defined and unused
// pieces, and the "identity" normalizer (no precompiled character map) with its add_dummy_prefix,
// remove_extra_whitespaces and escape_whitespaces switches. That covers Llama-1/2 and llama2.c's
// custom vocabularies. Anything else (Unigram, NFKC character maps, whitespace-as-suffix) is rejected at
// load time with an InputError rather than tokenized slightly wrong.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace layerprune {

class BpeTokenizer;

class Tokenizer {
 public:
  // SentencePiece's ModelProto.SentencePiece.Type values.
  enum class PieceType : uint8_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

  // Reads a SentencePiece ModelProto (tokenizer.model). Throws InputError naming the file on an unreadable,
  // truncated or corrupt file, on an inconsistent vocabulary (what sentencepiece's loader also refuses), or
  // on a model sentencepiece supports but this class does not (only BPE with the identity normalizer).
  // A path ending in ".json" is read as a tokenizer.json (byte-level BPE), anything else as SentencePiece.
  static Tokenizer load(const std::string& path);
  // A model directory: tokenizer.model when present (Llama-2 ships both; SentencePiece stays its tokenizer),
  // else tokenizer.json; tokenizer_config.json, when present, gives add_bos_token and the BOS/EOS token
  // strings. InputError when the directory has neither tokenizer file.
  static Tokenizer load_dir(const std::string& dir);
  // Wraps a byte-level BPE (e.g. one built from a GGUF's metadata); add_bos_default is whether its
  // post-processor (or the GGUF's add_bos_token) adds BOS.
  static Tokenizer from_bpe(const BpeTokenizer& bpe);
  // The same from the file's bytes; `name` stands for the file in error messages and path().
  static Tokenizer from_bytes(const std::string& bytes, const std::string& name);

  // Exactly sentencepiece's SentencePieceProcessor.encode(text) ids, with BOS prepended when add_bos (an
  // InputError if the model has no BOS). `text` is UTF-8; malformed bytes are read as U+FFFD, as
  // sentencepiece's normalizer does.
  std::vector<int32_t> encode(const std::string& text, bool add_bos) const;

  // sentencepiece's decode(ids): control tokens dropped, runs of byte pieces joined and read as UTF-8
  // (U+FFFD per malformed byte), <unk> -> the model's unk_surface, ▁ -> space, and the dummy prefix removed
  // (the leading ▁ of the first piece; with remove_extra_whitespaces, of every piece until some text is
  // out). Throws InputError on an id outside [0, vocab_size).
  std::string decode(const std::vector<int32_t>& ids) const;

  // Streaming decode of one token as llama2.c's run.c prints it: the piece with ▁ -> ' ', a "<0xXX>" byte
  // piece -> that single byte, and a leading space dropped when prev is BOS. Control tokens (BOS/EOS)
  // give "" (run.c stops at them; its tok*.bin spells them "\n<s>\n"); <unk> gives its piece "<unk>".
  std::string token_text(int32_t prev, int32_t id) const;

  const std::string& piece(int32_t id) const;
  float score(int32_t id) const;
  PieceType piece_type(int32_t id) const;
  // The id sentencepiece's PieceToId gives: control/unknown/byte pieces first, then the rest, else unk_id.
  int32_t piece_to_id(std::string_view piece) const;

  int32_t vocab_size() const;
  int32_t bos_id() const;  // -1 when the model has none
  int32_t eos_id() const;  // -1 when the model has none
  int32_t unk_id() const;
  bool byte_fallback() const;
  // sha256 of the model file (provenance)
  const std::string& file_sha256() const;
  const std::string& path() const;

  // Whether this model's prompts start with BOS (evaluation, loss windows, calibration and training
  // sequences follow it; lm-evaluation-harness 0.4.13 does the same): tokenizer_config.json's add_bos_token
  // when load_dir read one; else, for a tokenizer.json, whether its post-processor adds BOS; else, for
  // SentencePiece, whether it has a BOS (transformers' LlamaTokenizer defaults add_bos_token to true).
  // load() of a file alone reads no config: the same defaults.
  bool add_bos_default() const { return add_bos_default_; }
  // The token loss windows and training sequences start with: BOS when add_bos_default(), else -1 (none).
  int32_t sequence_bos() const { return add_bos_default_ ? bos_id() : -1; }
  // The byte-level BPE inside, or nullptr for SentencePiece.
  const BpeTokenizer* bpe() const { return bpe_.get(); }

 private:
  // The loaded model and its lookup tables, immutable after load() and shared by copies.
  struct Model;
  explicit Tokenizer(std::shared_ptr<const Model> m) : m_(std::move(m)) {}
  void check_id(int32_t id) const;  // InputError naming the model file for an id outside the vocabulary
  std::shared_ptr<const Model> m_;           // SentencePiece, or null
  std::shared_ptr<const BpeTokenizer> bpe_;  // byte-level BPE, or null
  bool add_bos_default_ = false;
};

}  // namespace layerprune
