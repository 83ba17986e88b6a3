// The SentencePiece tokenizer against Python's sentencepiece (tests/golden/make_token_ids.py), on both
// Llama tokenizers: token ids, decoding, streaming text, and bad model files.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/hashing.h"
#include "common/text_file.h"
#include "tests/test_support.h"
#include "worker/tokenizer.h"

namespace layerprune {
namespace {

struct Case {
  const char* name;
  const char* golden;
  const char* model;
};

class TokenizerGolden : public ::testing::TestWithParam<Case> {};

std::string from_hex(const std::string& h) {
  std::string out;
  for (size_t i = 0; i + 1 < h.size(); i += 2) out += char(std::stoi(h.substr(i, 2), nullptr, 16));
  return out;
}

TEST_P(TokenizerGolden, IdsAndDecodingEqualPythonSentencepiece) {
  LP_REQUIRE_DATA(model, GetParam().model);
  Tokenizer tok = Tokenizer::load(model);
  auto doc = nlohmann::json::parse(read_file(testing::source_file(GetParam().golden)));
  int checked = 0;
  for (const auto& s : doc.at("samples")) {
    std::string text = s.contains("hex") ? from_hex(s.at("hex")) : s.at("text").get<std::string>();
    std::vector<int32_t> want = s.at("ids").get<std::vector<int32_t>>();
    ASSERT_EQ(tok.encode(text, false), want) << s.at("kind") << " sample: " << text.substr(0, 200);
    if (s.contains("decoded")) {
      EXPECT_EQ(tok.decode(want), s.at("decoded").get<std::string>()) << text.substr(0, 200);
    }
    std::vector<int32_t> with_bos = tok.encode(text, true);
    ASSERT_FALSE(with_bos.empty());
    EXPECT_EQ(with_bos[0], tok.bos_id());
    ++checked;
  }
  EXPECT_GT(checked, 150);
}

TEST_P(TokenizerGolden, WholeTinyStoriesFileAsOneStream) {
  LP_REQUIRE_DATA(model, GetParam().model);
  LP_REQUIRE_DATA(text, "tinystories/tinystories_val.txt");
  auto doc = nlohmann::json::parse(read_file(testing::source_file(GetParam().golden)));
  std::vector<int32_t> ids = Tokenizer::load(model).encode(read_file(text), false);
  EXPECT_EQ(int64_t(ids.size()), doc.at("tinystories_file").at("tokens").get<int64_t>());
  EXPECT_EQ(sha256_hex(ids.data(), ids.size() * sizeof(int32_t)), doc.at("tinystories_file").at("sha256"));
}

INSTANTIATE_TEST_SUITE_P(BothLlamaTokenizers, TokenizerGolden,
                         ::testing::Values(Case{"tok512", "tests/golden/token_ids_tok512.json", "stories260K/tok512.model"},
                                           Case{"llama2", "tests/golden/token_ids_llama2.json", "llama2/tokenizer/tokenizer.model"}),
                         [](const ::testing::TestParamInfo<Case>& info) { return std::string(info.param.name); });

TEST(Tokenizer, SpecialIdsAndStreamingText) {
  LP_REQUIRE_DATA(model, "stories260K/tok512.model");
  Tokenizer tok = Tokenizer::load(model);
  EXPECT_EQ(tok.vocab_size(), 512);
  EXPECT_EQ(tok.unk_id(), 0);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_EQ(tok.piece(3), "<0x00>");
  std::vector<int32_t> ids = tok.encode("Once upon", true);
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(tok.token_text(ids[0], ids[1]), "Once") << "a leading space is dropped right after BOS";
  EXPECT_EQ(tok.token_text(ids[1], ids[2]), " upon");
  EXPECT_EQ(tok.token_text(1, 3 + 'A'), "A") << "byte pieces print as their byte";
  EXPECT_EQ(tok.file_sha256(), "822b28dcdee7b4f2de3332e0066a3f33688e08afb26e9e7808a58aa6426bd55b");
  EXPECT_THROW(tok.decode({512}), InputError);
}

TEST(Tokenizer, CorruptAndForeignFilesAreRejected) {
  LP_REQUIRE_DATA(model, "stories260K/tok512.model");
  testing::TempDir d;
  std::string bytes = read_file(model);
  for (size_t cut : {size_t(1), size_t(5), bytes.size() / 2, bytes.size() - 3}) {
    write_file(d.file("cut.model"), bytes.substr(0, cut));
    EXPECT_THROW(Tokenizer::load(d.file("cut.model")), InputError) << "truncated at " << cut;
  }
  write_file(d.file("empty.model"), "");
  EXPECT_THROW(Tokenizer::load(d.file("empty.model")), InputError);
  write_file(d.file("text.model"), "this is not a protobuf at all, just some text\n");
  EXPECT_THROW(Tokenizer::load(d.file("text.model")), InputError);
  EXPECT_THROW(Tokenizer::load(d.file("missing.model")), InputError);
  // The same model with its type switched to unigram (TrainerSpec field 3 = 1) is refused by name.
  std::string unigram = bytes;
  // TrainerSpec: field 3 (model_type) = 2 (BPE), then field 4 (vocab_size); piece types also use field 3.
  size_t at = unigram.find(std::string("\x18\x02\x20", 3));
  ASSERT_NE(at, std::string::npos);
  unigram[at + 1] = '\x01';
  write_file(d.file("unigram.model"), unigram);
  try {
    Tokenizer::load(d.file("unigram.model"));
    FAIL() << "expected an error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("only BPE"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace layerprune
