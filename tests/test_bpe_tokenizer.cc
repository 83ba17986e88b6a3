// The byte-level BPE tokenizer (formats/bpe_tokenizer.h) against the PyPI `tokenizers` package and llama.cpp:
// golden ids and decodes written by tests/golden/make_bpe_golden.py for SmolLM2-135M's tokenizer (its
// tokenizer.json rebuilt from the GGUF's vocabulary and merges), a Llama-3-style and a Qwen2-style
// tokenizer.json trained for the test; the GGUF construction (pre = smollm) against llama.cpp's
// llama-tokenize; Tokenizer::load/load_dir choosing the kind; and the load-time errors on hostile files.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <tuple>

#include "common/error.h"
#include "common/hashing.h"
#include "common/text_file.h"
#include "formats/bpe_tokenizer.h"
#include "formats/gguf.h"
#include "formats/tokenizer.h"
#include "tests/test_support.h"
#include "tests/tokenizer_test_support.h"

namespace layerprune {
namespace {

using nlohmann::json;
using testing::from_hex;
using testing::sample_text;
using testing::show;
using testing::show_ids;

constexpr const char* kSmolLM2 = "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

// ------------------------------------------------------------------------------------------------------
// Helpers

json read_golden(const std::string& name) { return json::parse(read_file(testing::source_file("tests/golden/bpe/" + name))); }

std::string ids_sha256(const std::vector<int32_t>& ids) {  // little-endian int32, as the script hashes them
  std::string bytes;
  bytes.reserve(ids.size() * 4);
  for (int32_t id : ids)
    for (int k = 0; k < 4; ++k) bytes += char((uint32_t(id) >> (8 * k)) & 0xFF);
  return sha256_hex(bytes);
}

std::string first_difference(const BpeTokenizer& tok, const std::string& name, const std::string& text,
                             const std::vector<int32_t>& want, const std::vector<int32_t>& got) {
  size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  const size_t from = i > 3 ? i - 3 : 0;
  std::ostringstream m;
  m << "sample '" << name << "' text " << show(text) << "\n  first difference at index " << i;
  if (i < want.size()) m << " (want " << show(tok.token(want[i])) << ")";
  if (i < got.size()) m << " (got " << show(tok.token(got[i])) << ")";
  m << "\n  want " << show_ids(want, from) << "\n  got  " << show_ids(got, from);
  return m.str();
}

// Every sample of a golden file: encode with and without special tokens, decode with and without skipping
// them, and the streamed token_bytes joining to decode's bytes.
void expect_matches_golden(const BpeTokenizer& tok, const json& g) {
  EXPECT_EQ(tok.vocab_size(), g["vocab_size"].get<int>());
  int bad = 0;
  std::string first;
  auto fail = [&](const std::string& m) {
    if (bad++ == 0) first = m;
  };
  for (const json& s : g["samples"]) {
    const std::string name = s["name"], text = sample_text(s);
    const auto want = s["ids"].get<std::vector<int32_t>>();
    const auto got = tok.encode(text, false);
    if (got != want) fail(first_difference(tok, name, text, want, got));
    const auto want_special = s.contains("ids_special") ? s["ids_special"].get<std::vector<int32_t>>() : want;
    const auto got_special = tok.encode(text, true);
    if (got_special != want_special) fail(first_difference(tok, name + " (add_special_tokens)", text, want_special, got_special));
    const std::string want_text = s.contains("decoded") ? s["decoded"].get<std::string>() : text;
    const std::string want_skip = s.contains("decoded_skip") ? s["decoded_skip"].get<std::string>() : want_text;
    const std::string decoded = tok.decode(want, false), skipped = tok.decode(want, true);
    if (decoded != want_text) fail("sample '" + name + "' decode: want " + show(want_text) + ", got " + show(decoded));
    if (skipped != want_skip) fail("sample '" + name + "' decode(skip_special_tokens): want " + show(want_skip) + ", got " + show(skipped));
  }
  EXPECT_EQ(bad, 0) << bad << " mismatches; the first: " << first;
}

// The TinyStories excerpt and the C4 excerpt (texts joined by "\n\n"), each encoded as one string.
void expect_whole_files(const BpeTokenizer& tok, const json& g) {
  const std::string ts = testing::data_file("tinystories/tinystories_val.txt"),
                    c4 = testing::data_file("c4/c4_en_train_first1000.jsonl");
  if (ts.empty() || c4.empty()) GTEST_SKIP() << "TinyStories or C4 excerpt not under " << testing::data_dir();
  std::string c4_text;
  std::istringstream lines(read_file(c4));
  for (std::string line; std::getline(lines, line);) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    c4_text += (c4_text.empty() ? "" : "\n\n") + json::parse(line)["text"].get<std::string>();
  }
  for (const auto& [name, text] : {std::pair<std::string, std::string>{"tinystories", read_file(ts)}, {"c4", c4_text}}) {
    const json& w = g["whole_files"][name];
    const auto ids = tok.encode(text, false);
    const auto first = w["first"].get<std::vector<int32_t>>();
    EXPECT_EQ(ids.size(), w["count"].get<size_t>()) << name;
    EXPECT_EQ(std::vector<int32_t>(ids.begin(), ids.begin() + std::min(ids.size(), first.size())), first) << name;
    EXPECT_EQ(ids_sha256(ids), w["sha256"].get<std::string>()) << name;
  }
}

// ------------------------------------------------------------------------------------------------------
// SmolLM2's tokenizer from the GGUF, its tokenizer.ggml.* keys read by formats/gguf.h.

const GgufTokenizerMetadata& smollm2_metadata() {
  static const GgufTokenizerMetadata m = read_gguf_tokenizer(*GgufFile::open(testing::data_file(kSmolLM2)));
  return m;
}

BpeTokenizer::GgufVocab smollm2_vocab() {
  const GgufTokenizerMetadata& m = smollm2_metadata();
  BpeTokenizer::GgufVocab v;
  v.tokens = m.tokens;
  v.merges = m.merges;
  for (int64_t t : m.token_types) v.token_types.push_back(int32_t(t));
  v.pre = m.pre;
  v.bos_id = int32_t(m.bos_token_id.value());
  v.eos_id = int32_t(m.eos_token_id.value());
  v.unk_id = int32_t(m.unknown_token_id.value());
  v.add_bos = m.add_bos_token.value();
  return v;
}

// SmolLM2's tokenizer.json: the checked-in template with the GGUF's vocabulary and merges filled in, merges
// as ["a", "b"] pairs (the layout tokenizers >= 0.20 writes).
std::string smollm2_tokenizer_json() {
  json j = json::parse(read_file(testing::source_file("tests/golden/bpe/smollm2_template.json")));
  const auto& tokens = smollm2_metadata().tokens;
  json vocab = json::object();
  for (size_t i = 0; i < tokens.size(); ++i) vocab[tokens[i]] = i;
  json merges = json::array();
  for (const std::string& s : smollm2_metadata().merges) {
    const size_t sp = s.find(' ', 1);
    merges.push_back(json::array({s.substr(0, sp), s.substr(sp + 1)}));
  }
  j["model"]["vocab"] = std::move(vocab);
  j["model"]["merges"] = std::move(merges);
  return j.dump();
}

#define LP_REQUIRE_SMOLLM2()                                                                              \
  if (testing::data_file(kSmolLM2).empty())                                                             \
  GTEST_SKIP() << "test data " << kSmolLM2 << " not found under " << testing::data_dir()                \
               << " (set LAYERPRUNE_DATA to the shared data directory)"

// ------------------------------------------------------------------------------------------------------
// Golden ids from tokenizers

TEST(BpeTokenizer, SmolLM2MatchesTokenizers) {
  LP_REQUIRE_SMOLLM2();
  const BpeTokenizer tok = BpeTokenizer::from_json(smollm2_tokenizer_json(), "smollm2/tokenizer.json");
  const json g = read_golden("smollm2_ids.json");
  expect_matches_golden(tok, g);
  EXPECT_FALSE(tok.adds_bos());
  EXPECT_TRUE(tok.is_special(1));
  EXPECT_EQ(tok.token(2), "<|im_end|>");
  expect_whole_files(tok, g);
}

TEST(BpeTokenizer, Llama3StyleMatchesTokenizers) {
  const BpeTokenizer tok = BpeTokenizer::load(testing::source_file("tests/golden/bpe/llama3_style.json"));
  const json g = read_golden("llama3_style_ids.json");
  EXPECT_TRUE(tok.adds_bos());
  EXPECT_EQ(tok.bos_id(), tok.token_to_id("<|begin_of_text|>"));
  expect_matches_golden(tok, g);
  expect_whole_files(tok, g);
}

TEST(BpeTokenizer, Qwen2StyleMatchesTokenizers) {
  // merges in the older "a b" layout, NFC normalizer, no BOS
  const BpeTokenizer tok = BpeTokenizer::load(testing::source_file("tests/golden/bpe/qwen2_style.json"));
  const json g = read_golden("qwen2_style_ids.json");
  EXPECT_FALSE(tok.adds_bos());
  EXPECT_EQ(tok.bos_id(), -1);
  expect_matches_golden(tok, g);
  expect_whole_files(tok, g);
}

TEST(BpeTokenizer, Gpt2StyleAddPrefixSpaceMatchesTokenizers) {
  // qwen2_style.json with GPT-2's pre-tokenizer: ByteLevel alone, add_prefix_space on, no normalizer
  json j = json::parse(read_file(testing::source_file("tests/golden/bpe/qwen2_style.json")));
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  const BpeTokenizer tok = BpeTokenizer::from_json(j.dump(), "gpt2_style.json");
  expect_matches_golden(tok, read_golden("gpt2_style_ids.json"));
}

TEST(BpeTokenizer, MalformedUtf8IsReplacedAsPythonDoes) {
  // One U+FFFD per maximal ill-formed subsequence (Python's errors="replace"): "\xE6\x97" is one, not two.
  const BpeTokenizer tok = BpeTokenizer::load(testing::source_file("tests/golden/bpe/qwen2_style.json"));
  EXPECT_EQ(tok.encode("\xE6\x97 ok", false), tok.encode("\xEF\xBF\xBD ok", false));
  EXPECT_EQ(tok.encode("a\xFF\xFE" "b", false), tok.encode("a\xEF\xBF\xBD\xEF\xBF\xBD" "b", false));
  EXPECT_EQ(tok.encode("\xED\xA0\x80", false), tok.encode("\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD", false));
}

TEST(BpeTokenizer, StreamedTokenBytesJoinToDecode) {
  const BpeTokenizer tok = BpeTokenizer::load(testing::source_file("tests/golden/bpe/qwen2_style.json"));
  const std::string text = "na\xC3\xAFve \xF0\x9F\x98\x80 \xE6\x97\xA5\xE6\x9C\xAC<|im_end|> end";
  const auto ids = tok.encode(text, false);
  std::string streamed;
  for (int32_t id : ids) streamed += tok.token_bytes(id);
  EXPECT_EQ(streamed, tok.decode(ids, true));
  EXPECT_EQ(tok.token_bytes(tok.token_to_id("<|im_end|>")), "");
  EXPECT_CONTAINS(testing::input_error([&] { tok.decode({tok.vocab_size()}, false); }), "outside the vocabulary");
}

// ------------------------------------------------------------------------------------------------------
// GGUF construction: llama.cpp's tokenizer

// A tokenizer.json's vocabulary as a GGUF holds it, as make_bpe_golden.vocab_of_json() writes it: tokens by
// id, merges "a b", special added tokens control (3), other added tokens user-defined (4).
BpeTokenizer::GgufVocab gguf_vocab_of_json(const std::string& file, const std::string& pre) {
  const json j = json::parse(read_file(testing::source_file("tests/golden/bpe/" + file)));
  BpeTokenizer::GgufVocab v;
  int32_t n = 0;
  for (const auto& [t, id] : j["model"]["vocab"].items()) n = std::max(n, id.get<int32_t>() + 1);
  for (const json& a : j["added_tokens"]) n = std::max(n, a["id"].get<int32_t>() + 1);
  v.tokens.assign(size_t(n), "");
  v.token_types.assign(size_t(n), 1);
  for (const auto& [t, id] : j["model"]["vocab"].items()) v.tokens[id.get<size_t>()] = t;
  for (const json& a : j["added_tokens"]) {
    v.tokens[a["id"].get<size_t>()] = a["content"].get<std::string>();
    v.token_types[a["id"].get<size_t>()] = a["special"].get<bool>() ? 3 : 4;
  }
  for (const json& m : j["model"]["merges"])
    v.merges.push_back(m.is_string() ? m.get<std::string>() : m[0].get<std::string>() + " " + m[1].get<std::string>());
  v.pre = pre;
  return v;
}

void expect_matches_llama_cpp(const BpeTokenizer& tok, const json& g) {
  int bad = 0;
  std::string first;
  for (const json& s : g["samples"]) {
    const std::string text = s["text"];
    const auto want = s["ids"].get<std::vector<int32_t>>(), got = tok.encode(text, false);
    if (got != want && bad++ == 0) first = first_difference(tok, s["name"], text, want, got);
  }
  EXPECT_EQ(bad, 0) << bad << " mismatches; the first: " << first;
}

TEST(BpeTokenizer, SmolLM2GgufMatchesLlamaCpp) {
  LP_REQUIRE_SMOLLM2();
  const std::string golden = testing::source_file("tests/golden/bpe/smollm2_llama_cpp_ids.json");
  if (!std::ifstream(golden)) GTEST_SKIP() << "no llama.cpp golden file " << golden;
  auto vocab = smollm2_vocab();
  vocab.file_sha256 = "feed";
  const BpeTokenizer tok = BpeTokenizer::from_gguf(vocab, testing::data_file(kSmolLM2));
  EXPECT_EQ(tok.file_sha256(), "feed");
  EXPECT_FALSE(tok.adds_bos());
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  const json g = json::parse(read_file(golden));
  expect_matches_llama_cpp(tok, g);
  const std::string c4 = testing::data_file("c4/c4_en_train_first1000.jsonl");
  if (c4.empty()) return;
  std::string c4_text;
  std::istringstream lines(read_file(c4));
  for (std::string line; std::getline(lines, line);) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    c4_text += (c4_text.empty() ? "" : "\n\n") + json::parse(line)["text"].get<std::string>();
  }
  const auto ids = tok.encode(c4_text, false);
  EXPECT_EQ(ids.size(), g["c4"]["count"].get<size_t>());
  EXPECT_EQ(ids_sha256(ids), g["c4"]["sha256"].get<std::string>());
}

TEST(BpeTokenizer, GgufPreTokenizersMatchLlamaCpp) {
  // llama.cpp on vocabulary-only GGUFs of the two trained tokenizers: its llama-bpe and qwen2 rules (no NFC,
  // no single_word/lstrip/rstrip: where tokenizers differs, the golden file says so in "hf_ids")
  // and, on the Qwen2-style vocabulary, its gpt-2 and default rules
  for (const auto& [out, name, pre] : {std::tuple<std::string, std::string, std::string>{"llama3_style", "llama3_style", "llama-bpe"},
                                       {"qwen2_style", "qwen2_style", "qwen2"},
                                       {"gpt2_pre", "qwen2_style", "gpt-2"},
                                       {"default_pre", "qwen2_style", "default"}}) {
    SCOPED_TRACE(out);
    const std::string golden = testing::source_file("tests/golden/bpe/" + out + "_llama_cpp_ids.json");
    if (!std::ifstream(golden)) GTEST_SKIP() << "no llama.cpp golden file " << golden;
    const BpeTokenizer tok = BpeTokenizer::from_gguf(gguf_vocab_of_json(name + ".json", pre), out + ".gguf");
    expect_matches_llama_cpp(tok, json::parse(read_file(golden)));
  }
}

TEST(BpeTokenizer, SmolLM2GgufNewlinesBeforeADigit) {
  // The case the issue names: llama.cpp's smollm rules split digits off first, so "\n\n" stays one pre-token
  // ("ĊĊ"); transformers' GGUF loader uses the plain GPT-2 regex and gives "Ċ", "Ċ".
  LP_REQUIRE_SMOLLM2();
  const BpeTokenizer tok = BpeTokenizer::from_gguf(smollm2_vocab(), "smollm2.gguf");
  const auto ids = tok.encode("\n\n2", false);
  ASSERT_EQ(ids.size(), 2u) << show_ids(ids);
  EXPECT_EQ(tok.token(ids[0]), "\xC4\x8A\xC4\x8A");
  EXPECT_EQ(tok.token(ids[1]), "2");
  auto gpt2 = smollm2_vocab();
  gpt2.pre = "gpt-2";
  const BpeTokenizer plain = BpeTokenizer::from_gguf(gpt2, "smollm2.gguf");
  EXPECT_EQ(plain.encode("\n\n2", false), (std::vector<int32_t>{198, 198, 34}));
}

TEST(BpeTokenizer, GgufRefusesUnknownPre) {
  BpeTokenizer::GgufVocab v;
  v.tokens = {"a", "b", "ab"};
  v.merges = {"a b"};
  v.pre = "deepseek-coder";
  EXPECT_CONTAINS(testing::input_error([&] { BpeTokenizer::from_gguf(v, "m.gguf"); }),
                  "m.gguf: tokenizer.ggml.pre: \"deepseek-coder\" is not supported");
  v.pre = "gpt-2";
  v.merges = {"a c"};
  EXPECT_CONTAINS(testing::input_error([&] { BpeTokenizer::from_gguf(v, "m.gguf"); }), "not in the vocabulary");
  v.merges = {"ab"};
  EXPECT_CONTAINS(testing::input_error([&] { BpeTokenizer::from_gguf(v, "m.gguf"); }), "is not \"left right\"");
  v.merges = {"a b"};
  v.token_types = {1, 1};
  EXPECT_CONTAINS(testing::input_error([&] { BpeTokenizer::from_gguf(v, "m.gguf"); }), "2 types for 3 tokens");
  v.token_types = {};
  v.bos_id = 3;
  EXPECT_CONTAINS(testing::input_error([&] { BpeTokenizer::from_gguf(v, "m.gguf"); }), "bos_token_id");
  v.bos_id = 0;
  const BpeTokenizer t = BpeTokenizer::from_gguf(v, "m.gguf");
  EXPECT_EQ(t.encode("ab ba", false), (std::vector<int32_t>{2, 1, 0}));  // " " is not in this vocabulary
}

// ------------------------------------------------------------------------------------------------------
// One Tokenizer for callers

TEST(BpeTokenizer, TokenizerLoadsJsonAsBpe) {
  const std::string path = testing::source_file("tests/golden/bpe/llama3_style.json");
  const Tokenizer tok = Tokenizer::load(path);
  ASSERT_NE(tok.bpe(), nullptr);
  EXPECT_EQ(tok.path(), path);
  EXPECT_EQ(tok.file_sha256(), sha256_file(path));
  EXPECT_TRUE(tok.add_bos_default());
  const int32_t bos = tok.piece_to_id("<|begin_of_text|>");
  EXPECT_EQ(tok.bos_id(), bos);
  const auto ids = tok.encode("Once upon a time", true);
  EXPECT_EQ(ids.front(), bos);
  EXPECT_EQ(std::vector<int32_t>(ids.begin() + 1, ids.end()), tok.encode("Once upon a time", false));
  EXPECT_EQ(tok.decode(ids), "Once upon a time");
  std::string streamed;
  int32_t prev = bos;
  for (int32_t id : ids) {
    streamed += tok.token_text(prev, id);
    prev = id;
  }
  EXPECT_EQ(streamed, "Once upon a time");
  EXPECT_EQ(tok.piece_type(bos), Tokenizer::PieceType::kControl);
  // Qwen2 style has no BOS: asking for one is an error, as with SentencePiece
  const Tokenizer qwen = Tokenizer::load(testing::source_file("tests/golden/bpe/qwen2_style.json"));
  EXPECT_FALSE(qwen.add_bos_default());
  EXPECT_CONTAINS(testing::input_error([&] { qwen.encode("x", true); }), "no BOS token");
}

TEST(BpeTokenizer, LoadDirPrefersTokenizerModelAndReadsConfig) {
  testing::TempDir dir;
  // tokenizer.json alone, with a config naming BOS/EOS and turning add_bos on
  write_file(dir.file("tokenizer.json"), read_file(testing::source_file("tests/golden/bpe/qwen2_style.json")));
  Tokenizer t = Tokenizer::load_dir(dir.path());
  ASSERT_NE(t.bpe(), nullptr);
  EXPECT_FALSE(t.add_bos_default());
  write_file(dir.file("tokenizer_config.json"),
             R"({"add_bos_token": true, "bos_token": {"content": "<|im_start|>"}, "eos_token": "<|im_end|>"})");
  t = Tokenizer::load_dir(dir.path());
  EXPECT_TRUE(t.add_bos_default());
  EXPECT_EQ(t.bos_id(), t.piece_to_id("<|im_start|>"));
  EXPECT_EQ(t.eos_id(), t.piece_to_id("<|im_end|>"));
  EXPECT_EQ(t.encode("x", true).front(), t.bos_id());
  write_file(dir.file("tokenizer_config.json"), R"({"bos_token": "<nope>"})");
  EXPECT_CONTAINS(testing::input_error([&] { Tokenizer::load_dir(dir.path()); }), "tokenizer_config.json");
  write_file(dir.file("tokenizer_config.json"), R"({"add_bos_token": "yes"})");
  EXPECT_CONTAINS(testing::input_error([&] { Tokenizer::load_dir(dir.path()); }), "add_bos_token: expected true or false");
  std::remove(dir.file("tokenizer_config.json").c_str());
  std::remove(dir.file("tokenizer.json").c_str());
  EXPECT_CONTAINS(testing::input_error([&] { Tokenizer::load_dir(dir.path()); }), "no tokenizer.model or tokenizer.json");
}

TEST(BpeTokenizer, LoadDirLlama2KeepsSentencePiece) {
  LP_REQUIRE_DATA(model, "llama2/tokenizer/tokenizer.model");
  const std::string dir = model.substr(0, model.size() - std::strlen("/tokenizer.model"));
  const Tokenizer t = Tokenizer::load_dir(dir);  // the directory has tokenizer.json too
  EXPECT_EQ(t.bpe(), nullptr);
  EXPECT_EQ(t.path(), dir + "/tokenizer.model");
  EXPECT_TRUE(t.add_bos_default());  // its tokenizer_config.json says add_bos_token: true
  EXPECT_EQ(t.encode("Hello", true), Tokenizer::load(model).encode("Hello", true));
  // Llama-2's own tokenizer.json is Metaspace-style (Prepend/Replace normalizers): refused, naming the type
  EXPECT_CONTAINS(testing::input_error([&] { BpeTokenizer::load(dir + "/tokenizer.json"); }), "is not supported");
}

// ------------------------------------------------------------------------------------------------------
// Hostile tokenizer.json files

std::string minimal_json(const std::string& patch_key = "", const json& patch = nullptr) {
  json j = {{"version", "1.0"},
            {"added_tokens", json::array()},
            {"normalizer", nullptr},
            {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
            {"post_processor", nullptr},
            {"decoder", {{"type", "ByteLevel"}}},
            {"model", {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 1}, {"ab", 2}}}, {"merges", json::array({"a b"})}}}};
  if (!patch_key.empty()) {
    json* at = &j;
    std::string key = patch_key;
    for (size_t dot; (dot = key.find('.')) != std::string::npos; key = key.substr(dot + 1)) at = &(*at)[key.substr(0, dot)];
    (*at)[key] = patch;
  }
  return j.dump();
}

std::string load_error(const std::string& text) {
  return testing::input_error([&] { BpeTokenizer::from_json(text, "t/tokenizer.json"); });
}

TEST(BpeTokenizer, MinimalJsonWorks) {
  const BpeTokenizer t = BpeTokenizer::from_json(minimal_json(), "t/tokenizer.json");
  EXPECT_EQ(t.encode("abab", false), (std::vector<int32_t>{2, 2}));
  EXPECT_EQ(t.encode("ab\xF0\x9F\x98\x80", false), (std::vector<int32_t>{2}));  // no unk_token: dropped, as tokenizers does
}

TEST(BpeTokenizer, HostileJsonIsRefusedNamingTheField) {
  EXPECT_CONTAINS(load_error("{\"model\": {\"type\": \"BPE\",\n  \"vocab\": [}"), "line 2, column");
  EXPECT_CONTAINS(load_error("[1, 2]"), "t/tokenizer.json: expected a JSON object");
  EXPECT_CONTAINS(load_error(std::string("{}\0{}", 5)), "NUL byte");
  EXPECT_CONTAINS(load_error("{}"), "no \"model\"");
  EXPECT_CONTAINS(load_error(minimal_json("model.type", "WordPiece")), "t/tokenizer.json.model.type: model type \"WordPiece\" is not supported");
  EXPECT_CONTAINS(load_error(minimal_json("model.vocab", json::array())), "model.vocab: expected an object, found array");
  EXPECT_CONTAINS(load_error(minimal_json("model.vocab", {{"a", 0}, {"b", "1"}})), "model.vocab[\"b\"]: expected a token id, found string");
  EXPECT_CONTAINS(load_error(minimal_json("model.vocab", {{"a", 0}, {"b", 7}})), "token id 7 is outside the vocabulary");
  EXPECT_CONTAINS(load_error(minimal_json("model.vocab", {{"a", 0}, {"b", 0}})), "is given to two tokens");
  EXPECT_CONTAINS(load_error(minimal_json("model.merges", json::array({"a x"}))), "names \"x\", which is not in the vocabulary");
  EXPECT_CONTAINS(load_error(minimal_json("model.merges", json::array({"b a"}))), "names \"ba\", which is not in the vocabulary");
  EXPECT_CONTAINS(load_error(minimal_json("model.merges", json::array({"ab"}))), "model.merges[0]: expected \"left right\"");
  EXPECT_CONTAINS(load_error(minimal_json("model.merges", json::array({json::array({"a", 3})}))), "model.merges[0][1]: expected a string");
  EXPECT_CONTAINS(load_error(minimal_json("model.merges", json::array({42}))), "model.merges[0]: expected");
  EXPECT_CONTAINS(load_error(minimal_json("model.dropout", 0.1)), "model.dropout: BPE dropout is not supported");
  EXPECT_CONTAINS(load_error(minimal_json("model.continuing_subword_prefix", "##")), "continuing_subword_prefix is not supported");
  EXPECT_CONTAINS(load_error(minimal_json("model.end_of_word_suffix", "</w>")), "end_of_word_suffix is not supported");
  EXPECT_CONTAINS(load_error(minimal_json("model.unk_token", "<unk>")), "unk_token \"<unk>\" is not in the vocabulary");
  EXPECT_CONTAINS(load_error(minimal_json("model.ignore_merges", "yes")), "model.ignore_merges: expected true or false");
  EXPECT_CONTAINS(load_error(minimal_json("normalizer", {{"type", "NFKC"}})), "normalizer.type: normalizer type \"NFKC\" is not supported");
  EXPECT_CONTAINS(load_error(minimal_json("normalizer", {{"type", "Sequence"}, {"normalizers", json::array({{{"type", "NFC"}}, {{"type", "Lowercase"}}})}})),
                  "normalizer.normalizers[1].type: normalizer type \"Lowercase\"");
  EXPECT_CONTAINS(load_error(minimal_json("pre_tokenizer", {{"type", "Metaspace"}})), "pre_tokenizer.type: pre-tokenizer type \"Metaspace\" is not supported");
  EXPECT_CONTAINS(load_error(minimal_json("pre_tokenizer", {{"type", "Split"}, {"pattern", {{"Regex", "(a"}}}, {"behavior", "Isolated"}})),
                  "pre_tokenizer.pattern.Regex: the regex \"(a\" does not compile (PCRE2: missing closing parenthesis, at offset 2)");
  EXPECT_CONTAINS(load_error(minimal_json("pre_tokenizer", {{"type", "Split"}, {"pattern", {{"Regex", "a"}}}, {"behavior", "Sideways"}})),
                  "pre_tokenizer.behavior: unknown split behavior \"Sideways\"");
  EXPECT_CONTAINS(load_error(minimal_json("pre_tokenizer", {{"type", "Split"}, {"pattern", "a"}, {"behavior", "Isolated"}})),
                  "pre_tokenizer.pattern: expected an object");
  EXPECT_CONTAINS(load_error(minimal_json("decoder", {{"type", "WordPiece"}})), "decoder.type: decoder type \"WordPiece\" is not supported");
  EXPECT_CONTAINS(load_error(minimal_json("post_processor", {{"type", "RobertaProcessing"}})), "post-processor type \"RobertaProcessing\"");
  EXPECT_CONTAINS(load_error(minimal_json("post_processor", {{"type", "TemplateProcessing"}, {"single", json::array({{{"SpecialToken", {{"id", "<s>"}}}}, {{"Sequence", {{"id", "A"}}}}})}, {"special_tokens", json::object()}})),
                  "special token \"<s>\" is not in special_tokens");
  EXPECT_CONTAINS(load_error(minimal_json("added_tokens", json::array({{{"id", 9}, {"content", "<x>"}}}))), "added_tokens[0].id: id 9 leaves a gap");
  EXPECT_CONTAINS(load_error(minimal_json("added_tokens", json::array({{{"id", 3}, {"content", ""}}}))), "added_tokens[0].content: an added token cannot be empty");
  EXPECT_CONTAINS(load_error(minimal_json("truncation", {{"max_length", 5}})), "truncation is not supported");
  std::string deep = R"({"type": "ByteLevel"})";
  for (int i = 0; i < 20; ++i) deep = R"({"type": "Sequence", "pretokenizers": [)" + deep + "]}";
  EXPECT_CONTAINS(load_error(minimal_json("pre_tokenizer", json::parse(deep))), "Sequences nested deeper than 16");
  // JSON nested a million deep: refused before anything recurses over it
  EXPECT_CONTAINS(load_error(std::string(1000000, '[') + std::string(1000000, ']')), "nested deeper than");
  EXPECT_CONTAINS(load_error(minimal_json("pre_tokenizer", {{"type", "ByteLevel"}, {"use_regex", 1}})), "pre_tokenizer.use_regex: expected true or false, found number 1");
  EXPECT_CONTAINS(load_error(minimal_json("model.vocab", json::object())), "model.vocab: the vocabulary is empty");
  EXPECT_CONTAINS(testing::input_error([] { BpeTokenizer::load("/nonexistent/tokenizer.json"); }), "/nonexistent/tokenizer.json");
}

TEST(BpeTokenizer, SplitBehaviors) {
  // tokenizers' Split on "a-b--c" with the pattern "-", each behavior, plain and inverted; the vocabulary
  // has a token for each two-character piece, so the ids show the pieces. The expected ids are what
  // tokenizers 0.23.3 gives for the same JSON (Python, by hand: Tokenizer.from_str(...).encode("a-b--c")).
  auto tok = [](const std::string& behavior, bool invert) {
    json j = json::parse(minimal_json());
    j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"String", "-"}}}, {"behavior", behavior}, {"invert", invert}};
    j["model"]["vocab"] = {{"a", 0}, {"b", 1}, {"c", 2}, {"-", 3}, {"a-", 4}, {"-b", 5}, {"--", 6}, {"b-", 7}, {"-c", 8}};
    j["model"]["merges"] = json::array({"a -", "- b", "- -", "b -", "- c"});
    j["decoder"] = nullptr;
    return BpeTokenizer::from_json(j.dump(), "split.json");
  };
  const std::string text = "a-b--c";
  EXPECT_EQ(tok("Isolated", false).encode(text, false), (std::vector<int32_t>{0, 3, 1, 3, 3, 2}));
  EXPECT_EQ(tok("Removed", false).encode(text, false), (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(tok("MergedWithPrevious", false).encode(text, false), (std::vector<int32_t>{4, 7, 3, 2}));
  EXPECT_EQ(tok("MergedWithNext", false).encode(text, false), (std::vector<int32_t>{0, 5, 3, 8}));
  EXPECT_EQ(tok("Contiguous", false).encode(text, false), (std::vector<int32_t>{0, 3, 1, 6, 2}));
  EXPECT_EQ(tok("Removed", true).encode(text, false), (std::vector<int32_t>{3, 3, 3}));
  EXPECT_EQ(tok("Contiguous", true).encode(text, false), (std::vector<int32_t>{0, 3, 1, 6, 2}));
  EXPECT_EQ(tok("MergedWithPrevious", true).encode(text, false), (std::vector<int32_t>{0, 5, 3, 8}));
  EXPECT_EQ(tok("MergedWithNext", true).encode(text, false), (std::vector<int32_t>{4, 7, 3, 2}));
}

}  // namespace
}  // namespace layerprune
