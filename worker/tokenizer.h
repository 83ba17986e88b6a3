// Llama's SentencePiece tokenizer (BPE with byte fallback), implemented here rather than linked: Debian's
// libsentencepiece carries its own protobuf and crashes processes that also load the system one (LibTorch
// and gRPC do; see ../shared/PLATFORM.md). The .model file is a protobuf ModelProto, read with a small
// wire-format reader. Output is id-for-id what Python's sentencepiece gives (tests/golden/).
#pragma once
#include <cstdint>
#include <string>
#include <memory>
#include <vector>

namespace layerprune {

class Tokenizer {
 public:
  // Throws InputError naming the file for a truncated/corrupt file or a model that is not BPE.
  static Tokenizer load(const std::string& path);

  // sentencepiece's encode(text), with BOS prepended when add_bos.
  std::vector<int32_t> encode(const std::string& text, bool add_bos) const;
  // sentencepiece's decode(ids): control tokens dropped, byte pieces joined, '▁' -> ' ', the dummy-prefix
  // space of the first piece removed.
  std::string decode(const std::vector<int32_t>& ids) const;
  // One token as llama2.c's run.c prints it while streaming: '▁' -> ' ', "<0xXX>" -> that byte, and a
  // leading space dropped right after BOS.
  std::string token_text(int32_t prev, int32_t id) const;

  const std::string& piece(int32_t id) const;
  int32_t vocab_size() const;
  int32_t bos_id() const;
  int32_t eos_id() const;
  int32_t unk_id() const;
  const std::string& file_sha256() const;

  struct Model;  // the parsed ModelProto and its lookup tables (tokenizer.cc)

 private:
  std::shared_ptr<const Model> m_;  // shared: copies stay cheap and the piece lookups stay valid
};

}  // namespace layerprune
