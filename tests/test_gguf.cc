// The GGUF reader (formats/gguf.h) and the GGUF -> Hugging Face conversion (formats/gguf_llama.h), against
// gguf-py (llama.cpp's own Python package) and transformers: see tests/golden/make_gguf_golden.py.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>

#include <nlohmann/json.hpp>

#include "common/progress.h"
#include "common/text_file.h"
#include "formats/gguf.h"
#include "formats/gguf_llama.h"
#include "formats/llama_config.h"
#include "formats/llama_tensors.h"
#include "formats/safetensors.h"
#include "test_support.h"

namespace layerprune {
namespace {

using json = nlohmann::json;
using testing::TempDir;
using testing::input_error;
using testing::source_file;

constexpr const char* kSmolLM2 = "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

json read_json(const std::string& path) { return json::parse(read_file(path)); }

std::vector<uint8_t> from_hex(const std::string& hex) {
  std::vector<uint8_t> out(hex.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) out[i] = uint8_t(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  return out;
}

std::vector<float> floats_from_hex(const std::string& hex) {
  const std::vector<uint8_t> bytes = from_hex(hex);
  std::vector<float> out(bytes.size() / 4);
  std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

// ------------------------------------------------------------------------------------------------
// Dequantisation against gguf.quants
// ------------------------------------------------------------------------------------------------

// Plain types must match bit for bit. The block types compute the same float32 expressions as gguf-py's
// numpy code (scale x quant [+ min]); a compiler may contract or reorder them, which moves a result by an
// ulp or so of the block's largest term, so they are compared within 1e-6 of the block's largest |value|
// (the K-quants subtract two products, so the error is relative to the terms, not to their difference).
TEST(GgufDequantize, EqualsGgufPy) {
  const json golden = read_json(source_file("tests/golden/gguf_dequant.json"));
  ASSERT_EQ(golden["types"].size(), 11u);
  for (const auto& [name, entry] : golden["types"].items()) {
    SCOPED_TRACE(name);
    const uint32_t id = entry["id"];
    const GgmlTypeInfo* info = ggml_type_info(id);
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(info->name, name);
    ASSERT_TRUE(info->dequantizable);
    const std::vector<uint8_t> raw = from_hex(entry["raw"]);
    const std::vector<float> want = floats_from_hex(entry["values_f32le"]);
    const int64_t n = entry["n"];
    ASSERT_EQ(int64_t(want.size()), n);
    ASSERT_EQ(int64_t(raw.size()), n / info->block_size * info->type_size);
    std::vector<float> got(size_t(n), -12345.f);
    dequantize(GgmlType(id), raw.data(), n, got.data());
    const bool plain = info->block_size == 1;
    for (int64_t b = 0; b < n; b += info->block_size) {
      float largest = 0;
      for (int64_t i = b; i < b + info->block_size; ++i) largest = std::max(largest, std::fabs(want[size_t(i)]));
      for (int64_t i = b; i < b + info->block_size; ++i) {
        const float g = got[size_t(i)], w = want[size_t(i)];
        if (plain) {
          EXPECT_TRUE(std::memcmp(&g, &w, 4) == 0) << "element " << i << ": " << g << " vs gguf-py " << w;
        } else {
          EXPECT_NEAR(g, w, 1e-6f * largest) << "element " << i;
        }
      }
    }
  }
}

TEST(GgufDequantize, RejectsWhatItCannotDo) {
  std::vector<uint8_t> raw(64);
  std::vector<float> out(64);
  EXPECT_THROW(dequantize(GgmlType::Q8_0, raw.data(), 33, out.data()), std::invalid_argument);
  EXPECT_THROW(dequantize(GgmlType::IQ2_XXS, raw.data(), 256, out.data()), std::invalid_argument);
  EXPECT_EQ(ggml_type_info(4), nullptr);  // Q4_2, retired by ggml
  EXPECT_EQ(ggml_type_name(4), "type id 4");
}

#ifdef __FLT16_MAX__
// Every half, against the compiler's own _Float16 -> float conversion (an independent implementation).
TEST(GgufDequantize, HalfToFloatEveryValue) {
  for (uint32_t h = 0; h < 65536; ++h) {
    _Float16 x;
    const uint16_t bits = uint16_t(h);
    std::memcpy(&x, &bits, 2);
    const float want = float(x), got = half_to_float(bits);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << h;
    } else {
      ASSERT_TRUE(std::memcmp(&want, &got, 4) == 0) << "half 0x" << std::hex << h << ": " << got << " vs " << want;
    }
  }
}
#endif

// ------------------------------------------------------------------------------------------------
// The tiny file gguf-py wrote: every metadata value type, alignment 64
// ------------------------------------------------------------------------------------------------

void expect_matches_tiny_golden(const GgufFile& f, const json& golden) {
  EXPECT_EQ(f.alignment(), 64u);
  EXPECT_EQ(f.data_offset(), golden["data_offset"].get<uint64_t>());
  ASSERT_EQ(f.metadata().size(), golden["keys"].size());
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_int("t.u8"), 200);
  EXPECT_EQ(f.get_int("t.i8"), -100);
  EXPECT_EQ(f.get_int("t.u16"), 60000);
  EXPECT_EQ(f.get_int("t.i16"), -30000);
  EXPECT_EQ(f.get_int("t.u32"), 4000000000);
  EXPECT_EQ(f.get_int("t.i32"), -2000000000);
  EXPECT_EQ(std::to_string(f.get_int("t.i64")), golden["keys"]["t.i64"]["value"].get<std::string>());
  // 18e18 does not fit in int64: a clear error, not a wrapped negative number
  EXPECT_CONTAINS(input_error([&] { f.get_int("t.u64"); }), "does not fit");
  EXPECT_EQ(f.get("t.u64").type(), GgufValueType::UINT64);
  EXPECT_EQ(f.get_double("t.f32"), golden["keys"]["t.f32"]["value"].get<double>());
  EXPECT_EQ(f.get_double("t.f64"), -2.5e-300);
  EXPECT_TRUE(f.get_bool("t.true"));
  EXPECT_FALSE(f.get_bool("t.false"));
  EXPECT_EQ(f.get_string("t.string"), "héllo, wörld");
  EXPECT_EQ(f.get_string("t.empty_string"), "");
  EXPECT_EQ(f.get("t.strings").as_strings(), (std::vector<std::string>{"a", "", "Ġthe", "<|im_end|>"}));
  EXPECT_EQ(f.get("t.u8s").as_ints(), (std::vector<int64_t>{1, 2, 255}));
  EXPECT_EQ(f.get("t.i32s").as_ints(), (std::vector<int64_t>{-1, 0, 7}));
  EXPECT_EQ(f.get("t.i64s").as_ints(), (std::vector<int64_t>{-(int64_t(1) << 40), int64_t(1) << 40}));
  EXPECT_EQ(f.get("t.f32s").as_floats(), (std::vector<float>{0.5f, -1.25f, 3.0f}));
  EXPECT_EQ(f.get("t.f64s").as_floats(), (std::vector<float>{1e-10f, 2.0f}));
  const std::vector<GgufValue> bools = f.get("t.bools").elements();
  ASSERT_EQ(bools.size(), 3u);
  EXPECT_TRUE(bools[0].as_bool());
  EXPECT_FALSE(bools[1].as_bool());
  // nested arrays: [[1, 2], [3], [4, 5, 6]] and [["x", "yz"], ["w"]]
  const GgufValue& nested = f.get("t.nested");
  EXPECT_EQ(nested.element_type(), GgufValueType::ARRAY);
  const std::vector<GgufValue> rows = nested.elements();
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].as_ints(), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(rows[1].as_ints(), (std::vector<int64_t>{3}));
  EXPECT_EQ(rows[2].as_ints(), (std::vector<int64_t>{4, 5, 6}));
  const std::vector<GgufValue> srows = f.get("t.nested_strings").elements();
  ASSERT_EQ(srows.size(), 2u);
  EXPECT_EQ(srows[0].as_strings(), (std::vector<std::string>{"x", "yz"}));
  EXPECT_EQ(srows[1].as_strings(), (std::vector<std::string>{"w"}));
  // Every key's type as gguf-py reports it (["ARRAY", "STRING"], ...).
  for (const GgufValue& v : f.metadata()) {
    SCOPED_TRACE(v.key());
    const json& types = golden["keys"][v.key()]["types"];
    std::string want_type = types[0];
    for (char& ch : want_type) ch = char(std::tolower(ch));
    EXPECT_EQ(gguf_value_type_name(v.type()), want_type);
    if (v.is_array()) {
      std::string elem = types[1];
      for (char& ch : elem) ch = char(std::tolower(ch));
      EXPECT_EQ(gguf_value_type_name(v.element_type()), elem);
    }
  }

  ASSERT_EQ(f.tensors().size(), golden["tensors"].size());
  for (size_t i = 0; i < f.tensors().size(); ++i) {
    const GgufTensor& t = f.tensors()[i];
    const json& g = golden["tensors"][i];
    SCOPED_TRACE(t.name);
    EXPECT_EQ(t.name, g["name"].get<std::string>());
    EXPECT_EQ(t.type_name(), g["type"].get<std::string>());
    EXPECT_EQ(t.dims, g["dims"].get<std::vector<int64_t>>());
    EXPECT_EQ(t.offset, g["offset"].get<uint64_t>());
    EXPECT_EQ(t.offset % 64, 0u);
    EXPECT_EQ(f.dequantize(t), floats_from_hex(g["values_f32le"]));  // exact: gguf-py made these
  }
}

TEST(GgufFile, ReadsEveryValueTypeAsGgufPyWroteIt) {
  const json golden = read_json(source_file("tests/golden/gguf_tiny.json"));
  auto f = GgufFile::open(source_file("tests/golden/gguf_tiny.gguf"));
  EXPECT_EQ(f->version(), 3u);
  expect_matches_tiny_golden(*f, golden);
}

TEST(GgufFile, ReadsVersion2) {
  // Versions 2 and 3 share the layout (3 added big-endian files); gguf-py writes 3, so patch the field.
  TempDir dir;
  std::vector<uint8_t> bytes = read_bytes(source_file("tests/golden/gguf_tiny.gguf"));
  bytes[4] = 2;
  write_bytes(dir.file("v2.gguf"), bytes);
  auto f = GgufFile::open(dir.file("v2.gguf"));
  EXPECT_EQ(f->version(), 2u);
  expect_matches_tiny_golden(*f, read_json(source_file("tests/golden/gguf_tiny.json")));
}

TEST(GgufFile, TypedGettersNameKeyAndTypes) {
  auto f = GgufFile::open(source_file("tests/golden/gguf_tiny.gguf"));
  std::string e = input_error([&] { f->get_string("t.u32"); });
  EXPECT_CONTAINS(e, "gguf_tiny.gguf");
  EXPECT_CONTAINS(e, "'t.u32'");
  EXPECT_CONTAINS(e, "expected a string, found uint32");
  EXPECT_CONTAINS(input_error([&] { f->get("t.strings").as_ints(); }), "found array of 4 string");
  EXPECT_CONTAINS(input_error([&] { f->get_double("t.i32"); }), "expected a float32 or float64");
  EXPECT_CONTAINS(input_error([&] { f->get_bool("t.u8"); }), "expected a bool");
  EXPECT_CONTAINS(input_error([&] { f->get("t.u8").size(); }), "expected an array");
  EXPECT_CONTAINS(input_error([&] { f->get("no.such.key"); }), "'no.such.key' is missing");
  EXPECT_CONTAINS(input_error([&] { f->tensor("nope"); }), "no tensor 'nope'");
}

// ------------------------------------------------------------------------------------------------
// Hand-made files: each specific error
// ------------------------------------------------------------------------------------------------

// A GGUF writer for the tests, byte by byte, so that any field can be made wrong.
struct Builder {
  std::vector<uint8_t> b;
  void u8(uint8_t v) { b.push_back(v); }
  void u32(uint32_t v) {
    for (int i = 0; i < 4; ++i) b.push_back(uint8_t(v >> (8 * i)));
  }
  void u64(uint64_t v) {
    for (int i = 0; i < 8; ++i) b.push_back(uint8_t(v >> (8 * i)));
  }
  void str(const std::string& s) {
    u64(s.size());
    b.insert(b.end(), s.begin(), s.end());
  }
  void header(uint64_t tensors, uint64_t keys, uint32_t version = 3) {
    b.insert(b.end(), {'G', 'G', 'U', 'F'});
    u32(version);
    u64(tensors);
    u64(keys);
  }
  void kv_string(const std::string& k, const std::string& v) {
    str(k);
    u32(8);
    str(v);
  }
  void kv_u32(const std::string& k, uint32_t v) {
    str(k);
    u32(4);
    u32(v);
  }
  void tensor_info(const std::string& name, std::vector<uint64_t> dims, uint32_t type, uint64_t offset) {
    str(name);
    u32(uint32_t(dims.size()));
    for (uint64_t d : dims) u64(d);
    u32(type);
    u64(offset);
  }
  void pad(size_t alignment = 32) {
    while (b.size() % alignment) b.push_back(0);
  }
  void zeros(size_t n) { b.insert(b.end(), n, 0); }
};

// The InputError opening these bytes gives (and a failure when it opens).
std::string open_error(const std::vector<uint8_t>& bytes) {
  TempDir dir;
  const std::string path = dir.file("bad.gguf");
  write_bytes(path, bytes);
  std::string e = input_error([&] { GgufFile::open(path); });
  EXPECT_CONTAINS(e, path);
  return e;
}

TEST(GgufErrors, Header) {
  Builder bad_magic;
  bad_magic.b = {'G', 'G', 'M', 'L'};
  bad_magic.zeros(40);
  EXPECT_CONTAINS(open_error(bad_magic.b), "not a GGUF file");

  Builder v1;
  v1.header(0, 0, 1);
  EXPECT_CONTAINS(open_error(v1.b), "GGUF version 1");
  Builder v4;
  v4.header(0, 0, 4);
  EXPECT_CONTAINS(open_error(v4.b), "unsupported GGUF version 4");

  Builder big_endian;
  big_endian.b = {'G', 'G', 'U', 'F', 0, 0, 0, 3};
  big_endian.zeros(16);
  EXPECT_CONTAINS(open_error(big_endian.b), "big-endian");

  Builder truncated;
  truncated.header(0, 0);
  truncated.b.resize(20);
  EXPECT_CONTAINS(open_error(truncated.b), "too short for a GGUF header");

  Builder many;
  many.header(0, uint64_t(1) << 60);  // a key count no file could hold: refused before anything is allocated
  EXPECT_CONTAINS(open_error(many.b), "metadata key count");
  Builder many_tensors;
  many_tensors.header(uint64_t(1) << 62, 0);
  EXPECT_CONTAINS(open_error(many_tensors.b), "tensor count");
}

TEST(GgufErrors, Metadata) {
  Builder long_string;
  long_string.header(0, 1);
  long_string.str("general.name");
  long_string.u32(8);
  long_string.u64(uint64_t(1) << 40);  // a 1 TiB string
  long_string.zeros(16);
  std::string e = open_error(long_string.b);
  EXPECT_CONTAINS(e, "key 'general.name'");
  EXPECT_CONTAINS(e, "string length 1099511627776 runs past the end");
  EXPECT_CONTAINS(e, "at byte 48");

  Builder long_key;
  long_key.header(0, 1);
  long_key.u64(1000);
  long_key.zeros(10);
  EXPECT_CONTAINS(open_error(long_key.b), "key length 1000 runs past the end");

  Builder long_array;
  long_array.header(0, 1);
  long_array.str("tokenizer.ggml.tokens");
  long_array.u32(9);
  long_array.u32(8);
  long_array.u64(uint64_t(1) << 50);
  long_array.zeros(64);
  e = open_error(long_array.b);
  EXPECT_CONTAINS(e, "key 'tokenizer.ggml.tokens'");
  EXPECT_CONTAINS(e, "array of 1125899906842624 string");

  Builder unknown_type;
  unknown_type.header(0, 1);
  unknown_type.str("k");
  unknown_type.u32(13);
  unknown_type.zeros(8);
  EXPECT_CONTAINS(open_error(unknown_type.b), "key 'k': unknown value type id 13");

  Builder unknown_elem;
  unknown_elem.header(0, 1);
  unknown_elem.str("k");
  unknown_elem.u32(9);
  unknown_elem.u32(99);
  unknown_elem.u64(1);
  unknown_elem.zeros(8);
  EXPECT_CONTAINS(open_error(unknown_elem.b), "unknown array element type id 99");

  Builder deep;  // arrays of arrays of ... of one element, deeper than the bound
  deep.header(0, 1);
  deep.str("k");
  deep.u32(9);
  for (int i = 0; i < kMaxGgufArrayDepth + 2; ++i) {
    deep.u32(9);
    deep.u64(1);
  }
  deep.zeros(64);
  EXPECT_CONTAINS(open_error(deep.b), "nested deeper than");

  Builder twice;
  twice.header(0, 2);
  twice.kv_u32("a", 1);
  twice.kv_u32("a", 2);
  EXPECT_CONTAINS(open_error(twice.b), "key 'a': appears twice");

  for (uint32_t alignment : {0u, 3u, 48u}) {
    Builder bad_alignment;
    bad_alignment.header(0, 1);
    bad_alignment.kv_u32("general.alignment", alignment);
    EXPECT_CONTAINS(open_error(bad_alignment.b), "is not a power of two");
  }
  Builder alignment_type;
  alignment_type.header(0, 1);
  alignment_type.kv_string("general.alignment", "32");
  EXPECT_CONTAINS(open_error(alignment_type.b), "'general.alignment': expected a uint32, found string");
}

// One F32 tensor of 8 floats at `offset`, plus what the caller adds.
Builder one_tensor(std::vector<uint64_t> dims, uint32_t type, uint64_t offset, size_t data_bytes) {
  Builder f;
  f.header(1, 0);
  f.tensor_info("w", dims, type, offset);
  f.pad();
  f.zeros(data_bytes);
  return f;
}

TEST(GgufErrors, Tensors) {
  {
    auto ok = one_tensor({8}, 0, 0, 32);
    TempDir dir;
    write_bytes(dir.file("ok.gguf"), ok.b);
    auto f = GgufFile::open(dir.file("ok.gguf"));
    ASSERT_EQ(f->tensors().size(), 1u);
    EXPECT_EQ(f->dequantize(f->tensors()[0]), std::vector<float>(8, 0.f));
  }
  std::string e = open_error(one_tensor({8}, 0, 0, 31).b);
  EXPECT_CONTAINS(e, "tensor 'w'");
  EXPECT_CONTAINS(e, "run past the end of the data section");
  EXPECT_CONTAINS(open_error(one_tensor({8}, 0, uint64_t(1) << 62, 32).b), "run past the end");
  EXPECT_CONTAINS(open_error(one_tensor({8}, 0, 4, 64).b), "data offset 4 is not a multiple of the alignment 32");
  EXPECT_CONTAINS(open_error(one_tensor({8}, 77, 0, 32).b), "tensor 'w': unknown tensor type id 77");
  EXPECT_CONTAINS(open_error(one_tensor({8}, 4, 0, 32).b), "unknown tensor type id 4");
  EXPECT_CONTAINS(open_error(one_tensor({8, 8, 8, 8, 8}, 0, 0, 32).b), "5 dimensions (at most 4)");
  EXPECT_CONTAINS(open_error(one_tensor({1ull << 40, 1ull << 40}, 0, 0, 32).b), "overflow");
  EXPECT_CONTAINS(open_error(one_tensor({1ull << 62}, 0, 0, 32).b), "byte size overflows");
  EXPECT_CONTAINS(open_error(one_tensor({48, 2}, 8, 0, 256).b), "row size dims[0] = 48 is not a multiple of Q8_0's block size 32");

  Builder overlap;
  overlap.header(2, 0);
  overlap.tensor_info("a", {16}, 0, 0);
  overlap.tensor_info("b", {8}, 0, 32);  // a is [0, 64)
  overlap.pad();
  overlap.zeros(96);
  e = open_error(overlap.b);
  EXPECT_CONTAINS(e, "tensor 'b'");
  EXPECT_CONTAINS(e, "overlaps tensor 'a'");

  Builder twice;
  twice.header(2, 0);
  twice.tensor_info("a", {8}, 0, 0);
  twice.tensor_info("a", {8}, 0, 32);
  twice.pad();
  twice.zeros(64);
  EXPECT_CONTAINS(open_error(twice.b), "tensor 'a': appears twice");

  // A known type without a dequantiser opens (its bytes are checked), and fails only when dequantised.
  TempDir dir;
  write_bytes(dir.file("iq.gguf"), one_tensor({256}, uint32_t(GgmlType::IQ2_XXS), 0, 66).b);
  auto f = GgufFile::open(dir.file("iq.gguf"));
  e = input_error([&] { f->dequantize(f->tensors()[0]); });
  EXPECT_CONTAINS(e, "unsupported tensor type IQ2_XXS in tensor 'w'");
  EXPECT_CONTAINS(e, dir.file("iq.gguf"));
}

// ------------------------------------------------------------------------------------------------
// Hostile files: truncation everywhere, seeded random mutations
// ------------------------------------------------------------------------------------------------

// Opens `path` and touches everything: every metadata value through its getters, every tensor dequantised.
// Returns normally, or throws InputError; anything else (or a crash, which ASan reports) is a bug.
void open_and_read_all(const std::string& path) {
  auto f = GgufFile::open(path);
  for (const GgufValue& v : f->metadata()) {
    v.describe();
    try {
      if (v.is_array()) {
        for (const GgufValue& e : v.elements()) e.describe();
        if (v.element_type() == GgufValueType::STRING) v.as_strings();
        else if (v.element_type() != GgufValueType::ARRAY && v.element_type() != GgufValueType::BOOL &&
                 v.element_type() != GgufValueType::FLOAT32 && v.element_type() != GgufValueType::FLOAT64)
          v.as_ints();
        else if (v.element_type() == GgufValueType::FLOAT32 || v.element_type() == GgufValueType::FLOAT64)
          v.as_floats();
      } else if (v.type() == GgufValueType::STRING) {
        v.as_string();
      } else if (v.is_float()) {
        v.as_double();
      } else if (v.type() == GgufValueType::BOOL) {
        v.as_bool();
      } else {
        v.as_int();
      }
    } catch (const InputError& e) {
      EXPECT_CONTAINS(e.what(), path);
    }
  }
  for (const GgufTensor& t : f->tensors()) {
    const GgmlTypeInfo* info = ggml_type_info(t.type);
    ASSERT_NE(info, nullptr);
    if (info->dequantizable && t.numel() <= (int64_t(1) << 20)) f->dequantize(t);
  }
}

TEST(GgufHostile, TruncatedAtEveryByte) {
  const std::vector<uint8_t> bytes = read_bytes(source_file("tests/golden/gguf_tiny.gguf"));
  auto whole = GgufFile::open(source_file("tests/golden/gguf_tiny.gguf"));
  size_t data_end = 0;
  for (const GgufTensor& t : whole->tensors())
    data_end = std::max<size_t>(data_end, whole->data_offset() + t.offset + t.nbytes);
  TempDir dir;
  const std::string path = dir.file("cut.gguf");
  for (size_t n = 0; n < bytes.size(); ++n) {
    write_bytes(path, std::vector<uint8_t>(bytes.begin(), bytes.begin() + long(n)));
    if (n < data_end) {
      const std::string e = input_error([&] { GgufFile::open(path); });
      ASSERT_NE(e.find(path), std::string::npos) << "cut at " << n << ": " << e;
    } else {
      open_and_read_all(path);  // only padding after the last tensor was cut
    }
  }
}

TEST(GgufHostile, RandomMutationsLoadOrFailCleanly) {
  const std::vector<uint8_t> original = read_bytes(source_file("tests/golden/gguf_tiny.gguf"));
  auto whole = GgufFile::open(source_file("tests/golden/gguf_tiny.gguf"));
  const size_t header_end = whole->data_offset();  // mutate where the structure is, mostly
  TempDir dir;
  const std::string path = dir.file("mutant.gguf");
  std::mt19937_64 rng(20261204);
  int loaded = 0, refused = 0;
  const uint64_t interesting[] = {0, 1, 7, 8, 9, 12, 13, 31, 32, 33, 64, 255, 256, 0xFFFFFFFFull, 1ull << 32,
                                  1ull << 62, ~0ull, original.size(), original.size() + 1, 1ull << 40};
  for (int iter = 0; iter < 3000; ++iter) {
    std::vector<uint8_t> b = original;
    const int edits = 1 + int(rng() % 4);
    for (int k = 0; k < edits; ++k) {
      const size_t limit = rng() % 8 == 0 ? b.size() : header_end;
      const size_t at = rng() % limit;
      switch (rng() % 4) {
        case 0:  // flip one byte
          b[at] = uint8_t(rng());
          break;
        case 1:  // flip one bit
          b[at] ^= uint8_t(1u << (rng() % 8));
          break;
        case 2: {  // an interesting 64-bit value (a count, a length, a dim, an offset)
          const uint64_t v = interesting[rng() % std::size(interesting)];
          for (size_t i = 0; i < 8 && at + i < b.size(); ++i) b[at + i] = uint8_t(v >> (8 * i));
          break;
        }
        default: {  // an interesting 32-bit value (a type id, a dim count, the alignment)
          const uint32_t v = uint32_t(interesting[rng() % std::size(interesting)]) ^ uint32_t(rng() % 3 == 0 ? rng() % 64 : 0);
          for (size_t i = 0; i < 4 && at + i < b.size(); ++i) b[at + i] = uint8_t(v >> (8 * i));
        }
      }
    }
    write_bytes(path, b);
    try {
      open_and_read_all(path);
      ++loaded;
    } catch (const InputError& e) {
      ++refused;
      ASSERT_NE(std::string(e.what()).find(path), std::string::npos) << "iteration " << iter << ": " << e.what();
    }
  }
  // Both outcomes happen: the mutations reach the checks and also leave loadable files.
  EXPECT_GT(loaded, 100);
  EXPECT_GT(refused, 100);
}

// ------------------------------------------------------------------------------------------------
// Llama metadata, names and the RoPE permutation
// ------------------------------------------------------------------------------------------------

TEST(GgufLlama, TensorNames) {
  EXPECT_EQ(gguf_to_hf_tensor_name("token_embd.weight"), "model.embed_tokens.weight");
  EXPECT_EQ(gguf_to_hf_tensor_name("output.weight"), "lm_head.weight");
  EXPECT_EQ(gguf_to_hf_tensor_name("output_norm.weight"), "model.norm.weight");
  EXPECT_EQ(gguf_to_hf_tensor_name("blk.12.attn_q.weight"), "model.layers.12.self_attn.q_proj.weight");
  EXPECT_EQ(gguf_to_hf_tensor_name("blk.0.attn_output.weight"), "model.layers.0.self_attn.o_proj.weight");
  EXPECT_EQ(gguf_to_hf_tensor_name("blk.3.ffn_norm.weight"), "model.layers.3.post_attention_layernorm.weight");
  EXPECT_EQ(gguf_to_hf_tensor_name("blk.3.attn_norm.weight"), "model.layers.3.input_layernorm.weight");
  EXPECT_EQ(gguf_to_hf_tensor_name("blk.3.ffn_down.weight"), "model.layers.3.mlp.down_proj.weight");
  EXPECT_EQ(gguf_to_hf_tensor_name("blk.03.ffn_up.weight"), "");  // one spelling per layer
  EXPECT_EQ(gguf_to_hf_tensor_name("blk..ffn_up.weight"), "");
  EXPECT_EQ(gguf_to_hf_tensor_name("blk.1.attn_q.bias"), "");
  EXPECT_EQ(gguf_to_hf_tensor_name("rope_freqs.weight"), "");
}

TEST(GgufLlama, UnpermuteInvertsLlamaCppPermute) {
  // llama.cpp's permute, written out: HF row (h, j, i) -> GGUF row (h, i, j), hd = 2 * half.
  const int64_t heads = 3, hd = 8, cols = 2, rows = heads * hd;
  std::vector<float> hf(size_t(rows * cols)), gguf(hf.size()), back(hf.size());
  for (size_t i = 0; i < hf.size(); ++i) hf[i] = float(i);
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t j = 0; j < 2; ++j)
      for (int64_t i = 0; i < hd / 2; ++i)
        for (int64_t c = 0; c < cols; ++c)
          gguf[size_t((h * hd + 2 * i + j) * cols + c)] = hf[size_t((h * hd + j * hd / 2 + i) * cols + c)];
  unpermute_rope_rows(gguf.data(), back.data(), rows, cols, heads);
  EXPECT_EQ(back, hf);
}

// A minimal Llama GGUF: 1 layer, hidden 64, 2 heads, FFN 32, vocab 32 (tokens "t0".."t31"), F32 weights.
Builder tiny_llama(const std::vector<std::pair<std::string, std::string>>& extra_string_keys = {},
                   const std::string& arch = "llama") {
  Builder f;
  const std::vector<std::pair<std::string, std::vector<uint64_t>>> tensors = {
      {"token_embd.weight", {64, 32}},       {"output_norm.weight", {64}},
      {"blk.0.attn_norm.weight", {64}},      {"blk.0.attn_q.weight", {64, 64}},
      {"blk.0.attn_k.weight", {64, 64}},     {"blk.0.attn_v.weight", {64, 64}},
      {"blk.0.attn_output.weight", {64, 64}}, {"blk.0.ffn_norm.weight", {64}},
      {"blk.0.ffn_gate.weight", {64, 32}},   {"blk.0.ffn_up.weight", {64, 32}},
      {"blk.0.ffn_down.weight", {32, 64}},
  };
  f.header(tensors.size(), 10 + extra_string_keys.size());
  f.kv_string("general.architecture", arch);
  f.kv_u32("llama.block_count", 1);
  f.kv_u32("llama.embedding_length", 64);
  f.kv_u32("llama.feed_forward_length", 32);
  f.kv_u32("llama.attention.head_count", 2);
  f.kv_u32("llama.context_length", 128);
  f.str("llama.attention.layer_norm_rms_epsilon");
  f.u32(6);
  const float eps = 1e-5f;
  uint32_t bits;
  std::memcpy(&bits, &eps, 4);
  f.u32(bits);
  f.kv_string("tokenizer.ggml.model", "gpt2");
  f.kv_string("tokenizer.ggml.pre", "smollm");
  f.str("tokenizer.ggml.tokens");
  f.u32(9);
  f.u32(8);
  f.u64(32);
  for (int i = 0; i < 32; ++i) f.str("t" + std::to_string(i));
  for (const auto& [k, v] : extra_string_keys) f.kv_string(k, v);
  uint64_t offset = 0;
  std::vector<uint64_t> sizes;
  for (const auto& [name, dims] : tensors) {
    uint64_t n = 4;
    for (uint64_t d : dims) n *= d;
    f.tensor_info(name, dims, 0, offset);
    offset += (n + 31) / 32 * 32;
  }
  f.pad();
  f.zeros(offset);
  return f;
}

TEST(GgufLlama, ConfigFromHandMadeFile) {
  TempDir dir;
  write_bytes(dir.file("m.gguf"), tiny_llama().b);
  auto f = GgufFile::open(dir.file("m.gguf"));
  const LlamaConfig c = gguf_llama_config(*f);
  EXPECT_EQ(c.num_hidden_layers, 1);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.num_key_value_heads, 2);  // defaults to the head count
  EXPECT_EQ(c.vocab_size, 32);
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.rms_norm_eps, 1e-5);  // the float32 key as the decimal it was written from
  EXPECT_TRUE(c.tie_word_embeddings);
  // The whole conversion of the hand-made model, checked against the project's own checkpoint contract.
  Progress::set_quiet(true);
  const GgufImport r = convert_gguf(dir.file("m.gguf"), dir.file("out"));
  Progress::set_quiet(false);
  EXPECT_EQ(r.tensors, 11u);  // no lm_head: tied
  check_llama_checkpoint(Checkpoint::open(dir.file("out")), LlamaConfig::from_file(dir.file("out/config.json")));
}

TEST(GgufLlama, RefusesWhatTheModelCannotHonour) {
  TempDir dir;
  auto error_for = [&](const Builder& b) {
    write_bytes(dir.file("m.gguf"), b.b);
    auto f = GgufFile::open(dir.file("m.gguf"));
    return input_error([&] { gguf_llama_config(*f); });
  };
  EXPECT_CONTAINS(error_for(tiny_llama({}, "qwen2")), "general.architecture is 'qwen2'");
  std::string e = error_for(tiny_llama({{"llama.rope.scaling.type", "yarn"}}));
  EXPECT_CONTAINS(e, "'llama.rope.scaling.type'");
  EXPECT_CONTAINS(e, "'yarn': RoPE scaling is not supported");
  EXPECT_CONTAINS(error_for(tiny_llama({{"llama.attention.sliding_window", "x"}})),
                  "'llama.attention.sliding_window': is not understood");
}

TEST(GgufLlama, RefusesUnknownPreTokenizer) {
  TempDir dir;
  std::vector<uint8_t> bytes = tiny_llama().b;
  // "smollm" -> "deeps2": same length, so the file stays valid
  const std::string from = "smollm", to = "deeps2";
  auto it = std::search(bytes.begin(), bytes.end(), from.begin(), from.end());
  ASSERT_NE(it, bytes.end());
  std::copy(to.begin(), to.end(), it);
  write_bytes(dir.file("m.gguf"), bytes);
  auto f = GgufFile::open(dir.file("m.gguf"));
  const LlamaConfig c = gguf_llama_config(*f);
  EXPECT_CONTAINS(input_error([&] { gguf_hf_tokenizer(*f, c); }), "'tokenizer.ggml.pre': 'deeps2' is not supported");
}

TEST(GgufLlama, TokenizerMetadataTypesChecked) {
  TempDir dir;
  auto error_for = [&](const Builder& b) {
    write_bytes(dir.file("m.gguf"), b.b);
    auto f = GgufFile::open(dir.file("m.gguf"));
    return input_error([&] { read_gguf_tokenizer(*f); });
  };
  std::string e = error_for(tiny_llama({{"tokenizer.ggml.bos_token_id", "1"}}));
  EXPECT_CONTAINS(e, "'tokenizer.ggml.bos_token_id': expected an integer, found string");
  EXPECT_CONTAINS(error_for(tiny_llama({{"tokenizer.ggml.add_bos_token", "true"}})), "expected a bool, found string");
  EXPECT_CONTAINS(error_for(tiny_llama({{"tokenizer.ggml.scores", "x"}})), "expected an array of float32");
  EXPECT_CONTAINS(error_for(tiny_llama({{"tokenizer.ggml.merges", "a b"}})), "expected an array of string");

  // An eos id one past the 32-token vocabulary: the key is spliced in before the tensor infos (the key count
  // at byte 16 goes from 10 to 11), and zeros appended so the shifted data section still holds every tensor.
  Builder out_of_range = tiny_llama();
  out_of_range.b[16] = 11;
  const std::string first_tensor = "token_embd.weight";
  const long infos = long(std::search(out_of_range.b.begin(), out_of_range.b.end(), first_tensor.begin(),
                                      first_tensor.end()) - out_of_range.b.begin()) - 8;
  Builder key;
  key.kv_u32("tokenizer.ggml.eos_token_id", 32);
  out_of_range.b.insert(out_of_range.b.begin() + infos, key.b.begin(), key.b.end());
  out_of_range.zeros(64);
  EXPECT_CONTAINS(error_for(out_of_range), "'tokenizer.ggml.eos_token_id': token id 32 is outside the vocabulary of 32 tokens");
}

// ------------------------------------------------------------------------------------------------
// The real model: SmolLM2-135M-Instruct, Q4_1
// ------------------------------------------------------------------------------------------------

void expect_rows_match(const std::vector<float>& w, int64_t cols, const json& rows) {
  for (const auto& [row, hex] : rows.items()) {
    const std::vector<float> want = floats_from_hex(hex);
    const int64_t r = std::stoll(row);
    for (size_t i = 0; i < want.size(); ++i)
      EXPECT_NEAR(w[size_t(r * cols) + i], want[i], 1e-6f * std::max(1.0f, std::fabs(want[i]))) << "row " << r << " col " << i;
  }
}

void expect_sums_match(const std::vector<float>& w, const json& g) {
  double sum = 0, sq = 0;
  for (float v : w) {
    sum += v;
    sq += double(v) * v;
  }
  EXPECT_NEAR(sum, g["sum"].get<double>(), 1e-6 * std::max(1.0, g["sum_squares"].get<double>()));
  EXPECT_NEAR(sq, g["sum_squares"].get<double>(), 1e-6 * g["sum_squares"].get<double>());
}

TEST(GgufSmolLM2, ConfigAndTensorsEqualGgufPy) {
  LP_REQUIRE_DATA(path, kSmolLM2);
  const json golden = read_json(source_file("tests/golden/gguf_smollm2.json"));
  auto f = GgufFile::open(path);
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->tensors().size(), golden["tensor_count"].get<size_t>());
  EXPECT_EQ(f->metadata().size(), golden["key_count"].get<size_t>());
  const LlamaConfig c = gguf_llama_config(*f);
  EXPECT_EQ(c.num_hidden_layers, 30);
  EXPECT_EQ(c.hidden_size, 576);
  EXPECT_EQ(c.intermediate_size, 1536);
  EXPECT_EQ(c.num_attention_heads, 9);
  EXPECT_EQ(c.num_key_value_heads, 3);
  EXPECT_EQ(c.vocab_size, 49152);
  EXPECT_EQ(c.rope_theta, 100000.0);
  EXPECT_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_EQ(c.max_position_embeddings, 8192);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_id, 2);
  EXPECT_EQ(f->get_string("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(f->get("tokenizer.ggml.merges").size(), 48900u);
  EXPECT_FALSE(f->get_bool("tokenizer.ggml.add_bos_token"));
  const GgufTokenizerMetadata tok = read_gguf_tokenizer(*f);
  EXPECT_EQ(tok.model, "gpt2");
  EXPECT_EQ(tok.pre, "smollm");
  EXPECT_EQ(tok.tokens.size(), 49152u);
  EXPECT_EQ(tok.tokens[1], "<|im_start|>");
  EXPECT_EQ(tok.token_types.size(), 49152u);
  EXPECT_EQ(tok.token_types[0], 3);  // control
  EXPECT_EQ(tok.merges.size(), 48900u);
  EXPECT_TRUE(tok.scores.empty());
  EXPECT_EQ(tok.bos_token_id, 1);
  EXPECT_EQ(tok.eos_token_id, 2);
  EXPECT_EQ(tok.padding_token_id, 2);
  EXPECT_EQ(tok.add_bos_token, false);
  EXPECT_EQ(tok.add_space_prefix, false);
  EXPECT_EQ(tok.add_eos_token, std::nullopt);
  EXPECT_NE(tok.chat_template.find("<|im_start|>"), std::string::npos);
  int q8 = 0, q41 = 0, f32 = 0;
  for (const GgufTensor& t : f->tensors()) {
    q8 += t.type == uint32_t(GgmlType::Q8_0);
    q41 += t.type == uint32_t(GgmlType::Q4_1);
    f32 += t.type == uint32_t(GgmlType::F32);
  }
  EXPECT_EQ(q8, 1);
  EXPECT_EQ(q41, 210);
  EXPECT_EQ(f32, 61);

  for (const auto& [name, g] : golden["tensors"].items()) {
    SCOPED_TRACE(name);
    const GgufTensor& t = f->tensor(name);
    EXPECT_EQ(t.type_name(), g["type"].get<std::string>());
    EXPECT_EQ(t.shape(), g["shape"].get<std::vector<int64_t>>());
    const std::vector<float> w = gguf_llama_tensor(*f, t, c);
    expect_sums_match(w, g);
    if (g.contains("values_f32le")) {
      EXPECT_EQ(w, floats_from_hex(g["values_f32le"]));
    }
    if (g.contains("rows")) expect_rows_match(w, t.shape()[1], g["rows"]);
  }
}

TEST(GgufSmolLM2, ConvertWritesAHuggingFaceDirectory) {
  LP_REQUIRE_DATA(path, kSmolLM2);
  const json golden = read_json(source_file("tests/golden/gguf_smollm2.json"));
  TempDir dir;
  Progress::set_quiet(true);
  const GgufImport r = convert_gguf(path, dir.file("smollm2"));
  Progress::set_quiet(false);
  EXPECT_EQ(r.tensors, 272u);  // 30 x 9 + embedding + final norm; no lm_head (tied)
  EXPECT_EQ(r.parameters, 134515008);
  const LlamaConfig c = LlamaConfig::from_file(dir.file("smollm2/config.json"));
  EXPECT_EQ(c, r.config);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.torch_dtype, "float32");
  const Checkpoint ckpt = Checkpoint::open(dir.file("smollm2"));
  check_llama_checkpoint(ckpt, c);  // names, shapes, dtypes, nothing missing or extra
  EXPECT_EQ(ckpt.find("lm_head.weight"), nullptr);
  // The written q_proj rows are the un-permuted ones gguf-py + transformers agree on.
  const TensorView& q = ckpt.tensor("model.layers.0.self_attn.q_proj.weight");
  std::vector<float> qw(size_t(q.numel()));
  std::memcpy(qw.data(), q.data, q.nbytes);
  expect_rows_match(qw, 576, golden["tensors"]["blk.0.attn_q.weight"]["rows"]);

  const json tok = read_json(dir.file("smollm2/tokenizer.json"));
  EXPECT_EQ(tok["model"]["type"], "BPE");
  EXPECT_EQ(tok["model"]["vocab"].size(), 49152u);
  EXPECT_EQ(tok["model"]["vocab"]["<|im_start|>"], 1);
  EXPECT_EQ(tok["model"]["merges"].size(), 48900u);
  EXPECT_EQ(tok["model"]["merges"][0], "Ġ t");
  EXPECT_EQ(tok["pre_tokenizer"]["type"], "Sequence");
  EXPECT_EQ(tok["pre_tokenizer"]["pretokenizers"][0]["type"], "Digits");
  EXPECT_EQ(tok["pre_tokenizer"]["pretokenizers"][1]["type"], "ByteLevel");
  EXPECT_EQ(tok["decoder"]["type"], "ByteLevel");
  ASSERT_FALSE(tok["added_tokens"].empty());
  EXPECT_EQ(tok["added_tokens"][0]["content"], "<|endoftext|>");
  EXPECT_EQ(tok["added_tokens"][0]["special"], true);
  const json cfg = read_json(dir.file("smollm2/tokenizer_config.json"));
  EXPECT_EQ(cfg["add_bos_token"], false);
  EXPECT_EQ(cfg["bos_token"], "<|im_start|>");
  EXPECT_EQ(cfg["eos_token"], "<|im_end|>");
  EXPECT_EQ(cfg["model_max_length"], 8192);
}

}  // namespace
}  // namespace layerprune
