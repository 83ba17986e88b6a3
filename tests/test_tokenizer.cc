// The native SentencePiece tokenizer against Python's sentencepiece: golden ids and decodes written by
// tests/golden/make_token_ids.py for tok512 (stories260K), Llama-2, and a rewritten tok512 that exercises
// <unk>, user-defined and unused pieces; llama2.c's run.c streaming decode; and the load-time errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.h"
#include "common/hashing.h"
#include "common/text_file.h"
#include "tests/test_support.h"
#include "tests/tokenizer_test_support.h"
#include "formats/tokenizer.h"

namespace layerprune {
namespace {

using nlohmann::json;
using testing::from_hex;
using testing::sample_text;
using testing::show;
using testing::show_ids;

// ------------------------------------------------------------------------------------------------------
// Helpers

json read_golden(const std::string& name) {
  return json::parse(read_file(testing::source_file("tests/golden/" + name)));
}

// sha256 of ids as little-endian int32, as make_token_ids.py hashes them.
std::string ids_sha256(const std::vector<int32_t>& ids) {
  std::string bytes;
  bytes.reserve(ids.size() * 4);
  for (int32_t id : ids)
    for (int k = 0; k < 4; ++k) bytes += char((uint32_t(id) >> (8 * k)) & 0xFF);
  return sha256_hex(bytes);
}

// Everything in a golden file that does not need the data files: header, samples, decode cases.
void expect_matches_golden(const Tokenizer& tok, const json& g) {
  EXPECT_EQ(tok.file_sha256(), g["model_sha256"].get<std::string>()) << "golden file made from another model";
  EXPECT_EQ(tok.vocab_size(), g["vocab_size"].get<int>());
  EXPECT_EQ(tok.bos_id(), g["bos_id"].get<int>());
  EXPECT_EQ(tok.eos_id(), g["eos_id"].get<int>());
  EXPECT_EQ(tok.unk_id(), g["unk_id"].get<int>());

  int encode_bad = 0, decode_bad = 0;
  std::string first_encode, first_decode;
  for (const json& s : g["samples"]) {
    const std::string name = s["name"], text = sample_text(s);
    const auto want = s["ids"].get<std::vector<int32_t>>();
    const auto got = tok.encode(text, false);
    if (got != want) {
      if (encode_bad++ == 0) {
        size_t i = 0;
        while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
        const size_t from = i > 3 ? i - 3 : 0;
        std::ostringstream m;
        m << "sample '" << name << "' text " << show(text) << "\n  first difference at id index " << i;
        if (i < want.size()) m << " (want piece " << show(tok.piece(want[i])) << ")";
        if (i < got.size()) m << " (got piece " << show(tok.piece(got[i])) << ")";
        m << "\n  want " << show_ids(want, from) << "\n  got  " << show_ids(got, from);
        first_encode = m.str();
      }
    }
    const std::string want_text = s.contains("decoded") ? s["decoded"].get<std::string>() : text;
    const std::string decoded = tok.decode(want);
    // Streaming the ids through token_text from BOS gives the same text as decode, unless there is an <unk>
    // (its surface differs) or the ids start with two whitespace pieces: run.c then drops one leading space,
    // sentencepiece (with remove_extra_whitespaces) all of them.
    std::string streamed;
    int32_t prev = tok.bos_id();
    for (int32_t id : want) {
      streamed += tok.token_text(prev, id);
      prev = id;
    }
    auto only_spaces = [&](size_t i) {
      return i < want.size() && tok.piece(want[i]).find_first_not_of("\xE2\x96\x81") == std::string::npos;
    };
    const bool comparable =
        std::find(want.begin(), want.end(), tok.unk_id()) == want.end() && !(only_spaces(0) && only_spaces(1));
    if (decoded != want_text || (comparable && streamed != want_text)) {
      if (decode_bad++ == 0)
        first_decode = "sample '" + name + "' ids " + show_ids(want) + "\n  want " + show(want_text) + "\n  decode " +
                       show(decoded) + "\n  token_text stream " + show(streamed);
    }
  }
  EXPECT_EQ(encode_bad, 0) << encode_bad << " of " << g["samples"].size()
                           << " samples encode differently from sentencepiece; the first:\n"
                           << first_encode;
  EXPECT_EQ(decode_bad, 0) << decode_bad << " samples decode differently; the first:\n" << first_decode;

  int cases_bad = 0;
  for (const json& c : g["decode_cases"]) {
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    const std::string got = tok.decode(ids), want = c["text"];
    if (got != want && cases_bad++ == 0)
      ADD_FAILURE() << "decode(" << show_ids(ids, 0, 30) << ")\n  want " << show(want) << "\n  got  " << show(got);
  }
  EXPECT_EQ(cases_bad, 0) << cases_bad << " of " << g["decode_cases"].size() << " decode cases differ";
}

// ------------------------------------------------------------------------------------------------------
// Protobuf wire format, enough to rewrite a ModelProto (the same few lines as make_token_ids.py).

struct PbField {
  uint32_t field = 0, wire = 0;
  uint64_t value = 0;  // wire type 0
  std::string bytes;   // wire types 1, 2, 5
};

uint64_t pb_varint(const std::string& b, size_t* i) {
  uint64_t r = 0;
  for (int shift = 0;; shift += 7) {
    const auto c = static_cast<unsigned char>(b.at((*i)++));
    r |= uint64_t(c & 0x7F) << shift;
    if (c < 0x80) return r;
  }
}

std::vector<PbField> pb_fields(const std::string& b) {
  std::vector<PbField> out;
  for (size_t i = 0; i < b.size();) {
    PbField f;
    const uint64_t tag = pb_varint(b, &i);
    f.field = uint32_t(tag >> 3);
    f.wire = uint32_t(tag & 7);
    size_t n = f.wire == 1 ? 8 : f.wire == 5 ? 4 : 0;
    if (f.wire == 0) f.value = pb_varint(b, &i);
    if (f.wire == 2) n = size_t(pb_varint(b, &i));
    f.bytes = b.substr(i, n);
    i += n;
    out.push_back(f);
  }
  return out;
}

void pb_put_varint(uint64_t v, std::string* out) {
  do {
    const auto c = uint8_t(v & 0x7F);
    v >>= 7;
    out->push_back(char(v ? c | 0x80 : c));
  } while (v);
}

std::string pb_serialize(const std::vector<PbField>& fields) {
  std::string out;
  for (const PbField& f : fields) {
    pb_put_varint(uint64_t(f.field) << 3 | f.wire, &out);
    if (f.wire == 0) {
      pb_put_varint(f.value, &out);
    } else {
      if (f.wire == 2) pb_put_varint(f.bytes.size(), &out);
      out += f.bytes;
    }
  }
  return out;
}

PbField pb_varint_field(uint32_t field, uint64_t v) { return {field, 0, v, {}}; }
PbField pb_bytes_field(uint32_t field, std::string b) { return {field, 2, 0, std::move(b)}; }

// Replaces every occurrence of `field` in a message by `with` (appended at the end, as Python's rewrite does).
std::string pb_set(const std::string& msg, const PbField& with) {
  std::vector<PbField> fs;
  for (const PbField& f : pb_fields(msg))
    if (f.field != with.field) fs.push_back(f);
  fs.push_back(with);
  return pb_serialize(fs);
}

// Applies `edit` to the ModelProto submessage with the given field number (2 = TrainerSpec, 3 = NormalizerSpec).
template <class Edit>
std::string edit_spec(const std::string& model, uint32_t field, Edit edit) {
  auto fs = pb_fields(model);
  for (PbField& f : fs)
    if (f.field == field) f.bytes = edit(f.bytes);
  return pb_serialize(fs);
}

// make_token_ids.py's variant_model(): tok512 without byte fallback, with user-defined and unused pieces.
std::string variant_model(const std::string& src) {
  const char* const kUserDefined[] = {"<sep>", "\xE2\x96\x81Once\xE2\x96\x81upon", "qzq", "qz"};
  const std::string kUnused = "\xE2\x96\x81the";
  const auto top = pb_fields(src);
  size_t last_piece = 0;
  for (size_t i = 0; i < top.size(); ++i)
    if (top[i].field == 1) last_piece = i;
  std::vector<PbField> out;
  for (size_t i = 0; i < top.size(); ++i) {
    const PbField& f = top[i];
    if (f.field == 1) {
      auto piece = pb_fields(f.bytes);
      uint64_t type = 1;
      std::string text;
      for (const PbField& p : piece) {
        if (p.field == 3) type = p.value;
        if (p.field == 1) text = p.bytes;
      }
      if (type != 6) {  // drop BYTE pieces
        out.push_back(pb_bytes_field(1, text == kUnused ? pb_set(f.bytes, pb_varint_field(3, 5)) : f.bytes));
      }
      if (i == last_piece) {
        for (const char* u : kUserDefined)
          out.push_back(pb_bytes_field(
              1, pb_serialize({pb_bytes_field(1, u), {2, 5, 0, std::string(4, '\0')}, pb_varint_field(3, 4)})));
      }
    } else if (f.field == 2) {
      out.push_back(pb_bytes_field(2, pb_set(f.bytes, pb_varint_field(35, 0))));
    } else {
      out.push_back(f);
    }
  }
  return pb_serialize(out);
}

// make_token_ids.py's synthetic_model(): a tiny BPE model made from scratch (see SYNTHETIC_PIECES there).
std::string synthetic_model() {
  struct P {
    std::string text;
    float score;
    int type;  // 1 NORMAL, 2 UNKNOWN, 3 CONTROL, 4 USER_DEFINED, 6 BYTE
  };
  const std::string ws = "\xE2\x96\x81", e_acute = "\xC3\xA9";
  std::vector<P> pieces = {{"<unk>", 0, 2}, {"<s>", 0, 3}, {"</s>", 0, 3}};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    pieces.push_back({name, 0, 6});
  }
  const std::vector<P> rest = {{ws, -1.0f, 1},
                               {"a", -2.0f, 1},
                               {"b", -2.0f, 1},
                               {"c", -2.0f, 1},
                               {"d", -2.0f, 1},
                               {"e", -2.0f, 1},
                               {"h", -2.0f, 1},
                               {"l", -2.0f, 1},
                               {"o", -2.0f, 1},
                               {e_acute, -3.0f, 1},
                               {"\xE6\x97\xA5", -3.0f, 1},
                               {"ab", -1.0f, 1},
                               {"bc", -1.0f, 1},
                               {"abc", -0.5f, 1},
                               {"aa", -2.0f, 1},
                               {"cd", -3.0f, 1},
                               {"bcd", -0.25f, 1},
                               {"de", -1.0f, 1},
                               {"ed", -1.0f, 1},
                               {ws + "a", -1.5f, 1},
                               {ws + "ab", -0.125f, 1},
                               {ws + ws, -4.0f, 1},
                               {ws + ws + ws + ws, -4.5f, 1},
                               {"e" + ws, -2.5f, 1},
                               {"he", -1.25f, 1},
                               {"ll", -1.75f, 1},
                               {"hell", -0.75f, 1},
                               {"hello", -0.625f, 1},
                               {ws + "hello", -0.375f, 1},
                               {e_acute + e_acute, -1.0f, 1},
                               {"<sep>", 0.0f, 4}};
  pieces.insert(pieces.end(), rest.begin(), rest.end());
  std::vector<PbField> fields;
  for (const P& p : pieces) {
    std::string score(4, '\0');
    std::memcpy(score.data(), &p.score, 4);  // little-endian on every machine this runs on
    fields.push_back(pb_bytes_field(
        1, pb_serialize({pb_bytes_field(1, p.text), {2, 5, 0, score}, pb_varint_field(3, uint64_t(p.type))})));
  }
  fields.push_back(pb_bytes_field(
      2, pb_serialize({pb_varint_field(3, 2), pb_varint_field(4, pieces.size()), pb_varint_field(35, 1)})));
  fields.push_back(
      pb_bytes_field(3, pb_serialize({pb_bytes_field(1, "identity"), pb_varint_field(3, 1), pb_varint_field(4, 0)})));
  return pb_serialize(fields);
}

// Expects load(path) to throw InputError whose message names the file and contains `needle`.
void expect_load_error(const std::string& path, const std::string& needle) {
  try {
    Tokenizer::load(path);
    ADD_FAILURE() << "loading " << path << " succeeded; expected an error containing '" << needle << "'";
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << "error does not name the file: " << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << "error lacks '" << needle << "': " << msg;
  }
}

// ------------------------------------------------------------------------------------------------------
// Golden ids from Python's sentencepiece

TEST(Tokenizer, Tok512MatchesSentencepiece) {
  LP_REQUIRE_DATA(model, "stories260K/tok512.model");
  const Tokenizer tok = Tokenizer::load(model);
  expect_matches_golden(tok, read_golden("token_ids_tok512.json"));
}

TEST(Tokenizer, Llama2MatchesSentencepiece) {
  LP_REQUIRE_DATA(model, "llama2/tokenizer/tokenizer.model");
  const Tokenizer tok = Tokenizer::load(model);
  expect_matches_golden(tok, read_golden("token_ids_llama2.json"));
}

// Needs no data directory: the algorithm (merge order, ties, whitespace, bytes) on a model built here.
TEST(Tokenizer, SyntheticModelMatchesSentencepiece) {
  const json g = read_golden("token_ids_synthetic.json");
  const std::string bytes = synthetic_model();
  ASSERT_EQ(sha256_hex(bytes), g["model_sha256"].get<std::string>())
      << "synthetic_model() here and in make_token_ids.py built different files";
  expect_matches_golden(Tokenizer::from_bytes(bytes, "synthetic.model"), g);
}

// No byte fallback (unknown characters -> one <unk> per run), user-defined pieces matched whole, an unused
// piece split back into the pieces that formed it.
TEST(Tokenizer, VariantWithUnkUserDefinedAndUnusedMatchesSentencepiece) {
  LP_REQUIRE_DATA(model, "stories260K/tok512.model");
  const json g = read_golden("token_ids_tok512_variant.json");
  const std::string bytes = variant_model(read_file(model));
  ASSERT_EQ(sha256_hex(bytes), g["model_sha256"].get<std::string>())
      << "variant_model() here and in make_token_ids.py built different files";
  testing::TempDir dir;
  write_file(dir.file("variant.model"), bytes);
  const Tokenizer tok = Tokenizer::load(dir.file("variant.model"));
  EXPECT_FALSE(tok.byte_fallback());
  EXPECT_EQ(tok.piece_type(tok.piece_to_id("<sep>")), Tokenizer::PieceType::kUserDefined);
  expect_matches_golden(tok, g);
}

// The whole TinyStories excerpt (~800 KB) as one string: count and sha256 of the ids.
void check_whole_file(const std::string& model, const std::string& golden_name) {
  const json w = read_golden(golden_name)["whole_file"];
  const std::string rel = w["file"];
  const std::string path = testing::data_file(rel);
  if (path.empty()) GTEST_SKIP() << "test data " << rel << " not found under " << testing::data_dir();
  const std::string text = read_file(path);
  ASSERT_EQ(sha256_hex(text), w["file_sha256"].get<std::string>())
      << path << " is not the file the golden ids were made from";
  const Tokenizer tok = Tokenizer::load(model);
  const auto t0 = std::chrono::steady_clock::now();
  const auto ids = tok.encode(text, false);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("  %s: %zu bytes -> %zu ids in %.3f s (%.1f MB/s)\n", golden_name.c_str(), text.size(), ids.size(), s,
              double(text.size()) / s / 1e6);
  const auto first = w["first_ids"].get<std::vector<int32_t>>();
  ASSERT_GE(ids.size(), first.size());
  EXPECT_EQ(std::vector<int32_t>(ids.begin(), ids.begin() + std::ptrdiff_t(first.size())), first);
  EXPECT_EQ(ids.size(), w["count"].get<size_t>());
  EXPECT_EQ(ids_sha256(ids), w["ids_sha256"].get<std::string>());
}

TEST(Tokenizer, WholeTinyStoriesFileTok512) {
  LP_REQUIRE_DATA(model, "stories260K/tok512.model");
  check_whole_file(model, "token_ids_tok512.json");
}

TEST(Tokenizer, WholeTinyStoriesFileLlama2) {
  LP_REQUIRE_DATA(model, "llama2/tokenizer/tokenizer.model");
  check_whole_file(model, "token_ids_llama2.json");
}

TEST(Tokenizer, AddBosPrependsBos) {
  LP_REQUIRE_DATA(model, "llama2/tokenizer/tokenizer.model");
  const Tokenizer tok = Tokenizer::load(model);
  EXPECT_EQ(tok.encode("hello", true), (std::vector<int32_t>{1, 22172}));
  EXPECT_EQ(tok.encode("", true), (std::vector<int32_t>{1}));
  EXPECT_EQ(tok.encode("", false), (std::vector<int32_t>{}));
  EXPECT_EQ(tok.decode(tok.encode("Hello world", true)), "Hello world");
}

// ------------------------------------------------------------------------------------------------------
// token_text: llama2.c run.c's decode()

TEST(Tokenizer, TokenTextBasics) {
  LP_REQUIRE_DATA(model, "stories260K/tok512.model");
  const Tokenizer tok = Tokenizer::load(model);
  const int32_t bos = tok.bos_id(), the = tok.piece_to_id("\xE2\x96\x81the"), he = tok.piece_to_id("he");
  ASSERT_NE(the, tok.unk_id());
  EXPECT_EQ(tok.token_text(he, the), " the");
  EXPECT_EQ(tok.token_text(bos, the), "the");  // leading space dropped after BOS
  EXPECT_EQ(tok.token_text(bos, he), "he");
  EXPECT_EQ(tok.token_text(tok.piece_to_id("<0x0A>"), the), " the");
  EXPECT_EQ(tok.token_text(he, tok.piece_to_id("<0x0A>")), "\n");
  EXPECT_EQ(tok.token_text(bos, tok.piece_to_id("<0x20>")), " ");    // a byte piece is not a "leading space"
  EXPECT_EQ(tok.token_text(he, tok.piece_to_id("<0xE6>")), "\xE6");  // one raw byte, not UTF-8 yet
  EXPECT_EQ(tok.token_text(he, bos), "");
  EXPECT_EQ(tok.token_text(he, tok.eos_id()), "");
  EXPECT_EQ(tok.token_text(he, tok.unk_id()), "<unk>");
}

// Every piece against llama2.c's own tokenizer file (tok512.bin: float score, int32 len, bytes per piece,
// with ▁ already turned into spaces) decoded exactly as run.c's decode() does.
TEST(Tokenizer, TokenTextMatchesRunCOnTok512Bin) {
  LP_REQUIRE_DATA(model, "stories260K/tok512.model");
  LP_REQUIRE_DATA(bin, "stories260K/tok512.bin");
  const Tokenizer tok = Tokenizer::load(model);
  const std::string b = read_file(bin);
  size_t pos = 4;  // int32 max_token_length
  auto take = [&](void* dst, size_t n) {
    if (pos + n > b.size()) return false;
    std::memcpy(dst, b.data() + pos, n);
    pos += n;
    return true;
  };
  for (int32_t id = 0; id < tok.vocab_size(); ++id) {
    float score = 0;
    int32_t len = 0;
    ASSERT_TRUE(take(&score, 4) && take(&len, 4) && len >= 0) << bin << " is truncated at piece " << id;
    std::string vocab(size_t(len), '\0');
    ASSERT_TRUE(take(vocab.data(), size_t(len))) << bin << " is truncated at piece " << id;
    EXPECT_EQ(score, tok.score(id)) << "piece " << id;
    if (tok.piece_type(id) == Tokenizer::PieceType::kControl) continue;  // run.c stops at BOS/EOS
    for (const int32_t prev : {tok.bos_id(), int32_t(300)}) {
      // run.c: skip a leading space after BOS (id 1); "<0xXX>" is the raw byte.
      std::string piece = prev == 1 && !vocab.empty() && vocab[0] == ' ' ? vocab.substr(1) : vocab;
      unsigned char byte = 0;
      if (std::sscanf(piece.c_str(), "<0x%02hhX>", &byte) == 1) piece = std::string(1, char(byte));
      EXPECT_EQ(tok.token_text(prev, id), piece) << "id " << id << " after " << prev;
    }
  }
}

// ------------------------------------------------------------------------------------------------------
// Errors

TEST(Tokenizer, OutOfRangeIdsAreInputErrors) {
  LP_REQUIRE_DATA(model, "stories260K/tok512.model");
  const Tokenizer tok = Tokenizer::load(model);
  EXPECT_THROW(tok.decode({5, 512}), InputError);
  EXPECT_THROW(tok.decode({-1}), InputError);
  EXPECT_THROW(tok.piece(512), InputError);
  EXPECT_THROW(tok.token_text(1, 9999), InputError);
  const Tokenizer copy = tok;  // copies share the loaded model
  EXPECT_EQ(copy.encode("hello", false), tok.encode("hello", false));
}

TEST(TokenizerLoad, MissingOrEmptyOrForeignFile) {
  testing::TempDir dir;
  expect_load_error(dir.file("absent.model"), "cannot open");
  write_file(dir.file("empty.model"), "");
  expect_load_error(dir.file("empty.model"), "no pieces");
  write_file(dir.file("text.model"), "this is not a protobuf file\n");
  expect_load_error(dir.file("text.model"), "corrupt");
}

// Every proper prefix of a model is an error (inside a record: corrupt/truncated; at a record boundary: the
// specs after it are missing), never a crash or a silently smaller vocabulary.
void expect_every_prefix_rejected(const std::string& bytes, const std::string& name) {
  int accepted = 0;
  for (size_t n = 0; n < bytes.size(); ++n) {
    const std::string prefix_name = name + "[:" + std::to_string(n) + "]";
    try {
      Tokenizer::from_bytes(bytes.substr(0, n), prefix_name);
      if (accepted++ == 0)
        ADD_FAILURE() << "the first " << n << " of " << bytes.size() << " bytes of " << name << " loaded";
    } catch (const InputError& e) {
      if (std::string(e.what()).find(prefix_name) == std::string::npos)
        FAIL() << "error does not name the file: " << e.what();
    }
  }
  EXPECT_EQ(accepted, 0);
}

TEST(TokenizerLoad, EveryTruncationOfSyntheticModelIsRejected) {
  expect_every_prefix_rejected(synthetic_model(), "synthetic.model");
}

// All prefixes of tok512.model in memory, and a few as truncated copies on disk.
TEST(TokenizerLoad, TruncatedModelFilesAreRejected) {
  LP_REQUIRE_DATA(model, "stories260K/tok512.model");
  const std::string bytes = read_file(model);
  expect_every_prefix_rejected(bytes, "tok512.model");

  // Cut inside a record, and at the record boundaries after the pieces and after the trainer_spec.
  const auto fields = pb_fields(bytes);
  ASSERT_EQ(fields.size(), 514u);  // 512 pieces, trainer_spec, normalizer_spec
  const size_t after_pieces = pb_serialize({fields.begin(), fields.begin() + 512}).size();
  const size_t after_trainer = pb_serialize({fields.begin(), fields.begin() + 513}).size();
  testing::TempDir dir;
  const std::pair<size_t, const char*> cuts[] = {{bytes.size() - 1, "truncated"},
                                                 {bytes.size() / 2, "truncated"},
                                                 {after_pieces, "no trainer_spec"},
                                                 {after_trainer, "no normalizer_spec"},
                                                 {0, "no pieces"}};
  for (const auto& [n, needle] : cuts) {
    write_file(dir.file("truncated.model"), bytes.substr(0, n));
    expect_load_error(dir.file("truncated.model"), needle);
  }
}

TEST(TokenizerLoad, CorruptRecordsAreRejected) {
  const std::string bytes = synthetic_model();
  testing::TempDir dir;
  const std::string path = dir.file("corrupt.model");
  // The first record's length made huge.
  std::string huge = bytes;
  ASSERT_EQ(huge[0], '\x0a');  // field 1, length-delimited
  huge[1] = '\xff';
  huge[2] = '\xff';
  write_file(path, huge);
  expect_load_error(path, "runs past the end");
  // A piece type outside the enum.
  auto fs = pb_fields(bytes);
  fs[5].bytes = pb_set(fs[5].bytes, pb_varint_field(3, 9));
  write_file(path, pb_serialize(fs));
  expect_load_error(path, "unknown piece type 9");
  // A duplicated piece.
  fs = pb_fields(bytes);
  fs[270].bytes = fs[271].bytes;
  write_file(path, pb_serialize(fs));
  expect_load_error(path, "already defined");
  // Byte fallback on, one byte piece gone.
  fs = pb_fields(bytes);
  fs.erase(fs.begin() + 3 + 0x41);
  write_file(path, pb_serialize(fs));
  expect_load_error(path, "<0x41> is missing");
}

TEST(TokenizerLoad, UnsupportedModelsAreRejected) {
  const std::string bytes = synthetic_model();
  testing::TempDir dir;
  const std::string path = dir.file("other.model");
  const std::pair<int, const char*> types[] = {{1, "UNIGRAM"}, {3, "WORD"}, {4, "CHAR"}, {7, "unknown"}};
  for (const auto& [type, name] : types) {
    write_file(
        path, edit_spec(bytes, 2, [&](const std::string& m) { return pb_set(m, pb_varint_field(3, uint64_t(type))); }));
    expect_load_error(path, std::string("model type ") + name);
    expect_load_error(path, "only BPE");
  }
  write_file(path, edit_spec(bytes, 2, [](const std::string& m) { return pb_set(m, pb_varint_field(24, 1)); }));
  expect_load_error(path, "treat_whitespace_as_suffix");
  write_file(path, edit_spec(bytes, 3, [](const std::string& m) {
               return pb_set(pb_set(m, pb_bytes_field(1, "nmt_nfkc")), pb_bytes_field(2, std::string(8, 'x')));
             }));
  expect_load_error(path, "only the identity normalizer");
  // Without a trainer_spec the model type would default to UNIGRAM; say what is missing instead.
  std::vector<PbField> no_trainer;
  for (const PbField& f : pb_fields(bytes))
    if (f.field != 2) no_trainer.push_back(f);
  write_file(path, pb_serialize(no_trainer));
  expect_load_error(path, "no trainer_spec");
}

}  // namespace
}  // namespace layerprune
