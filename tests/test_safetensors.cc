// The safetensors reader and writer: round trips (single file and shards), then hostile files, each of
// which must produce its own InputError (never a crash), and a mutation fuzz loop. Also run under
// ASan + UBSan in the sanitizer build (deploy/sanitize.sh address).
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/text_file.h"
#include "tests/test_support.h"
#include "formats/safetensors.h"

namespace layerprune {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;


using testing::input_error;

std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = char(uint8_t(v >> (8 * i)));
  return s;
}

// A safetensors file byte by byte: header length, header, data.
std::string raw_file(const std::string& header, const std::string& data) { return le64(header.size()) + header + data; }

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

std::string open_error(const TempDir& dir, const std::string& bytes, const std::string& name = "model.safetensors") {
  write_bytes(dir.file(name), bytes);
  return input_error([&] { SafetensorsFile::open(dir.file(name)); });
}

// Tensors with distinct contents, to write and read back.
struct Sample {
  std::vector<float> a{1.5f, -2.f, 3.25f, 0.f, 1e-3f, 7.f};
  std::vector<uint16_t> b{0x3f80, 0x4000, 0xbf80, 0x0000, 0x7f80};  // BF16 bit patterns
  int64_t c = -42;
  std::vector<TensorToWrite> tensors() const {
    return {{"model.a", DType::F32, {2, 3}, a.data(), a.size() * 4},
            {"model.b", DType::BF16, {5}, b.data(), b.size() * 2},
            {"scalar.c", DType::I64, {}, &c, 8},
            {"empty.d", DType::F16, {0, 4}, nullptr, 0}};
  }
};

void expect_same(const TensorView& v, const TensorToWrite& t) {
  EXPECT_EQ(v.name, t.name);
  EXPECT_EQ(v.dtype, t.dtype) << t.name;
  EXPECT_EQ(v.shape, t.shape) << t.name;
  ASSERT_EQ(v.nbytes, t.nbytes) << t.name;
  if (t.nbytes) {
    EXPECT_EQ(std::memcmp(v.data, t.data, t.nbytes), 0) << t.name;
  }
}

// ------------------------------------------------------------------------------------------------
// Round trips
// ------------------------------------------------------------------------------------------------

TEST(Safetensors, WriteThenReadBack) {
  TempDir dir;
  Sample s;
  const std::string path = dir.file("model.safetensors");
  write_safetensors(path, s.tensors(), {{"format", "pt"}, {"source", "test"}});

  const std::string bytes = read_file(path);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | uint8_t(bytes[i]);
  EXPECT_EQ(header_len % 8, 0u) << "header padded to 8 bytes";
  EXPECT_EQ(bytes.size(), 8 + header_len + 24 + 10 + 8);  // contiguous data, no padding between tensors

  auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f->path(), path);
  ASSERT_EQ(f->tensors().size(), 4u);
  for (size_t i = 0; i < 4; ++i) expect_same(f->tensors()[i], s.tensors()[i]);  // header order = written order
  EXPECT_EQ(f->metadata(), (std::map<std::string, std::string>{{"format", "pt"}, {"source", "test"}}));
  ASSERT_NE(f->find("scalar.c"), nullptr);
  EXPECT_EQ(f->find("scalar.c")->numel(), 1);
  EXPECT_EQ(f->find("empty.d")->numel(), 0);
  EXPECT_EQ(f->find("absent"), nullptr);
  EXPECT_EQ(f->tensors()[0].file, path);
}

TEST(Safetensors, NoTensorsAndNoMetadata) {
  TempDir dir;
  write_safetensors(dir.file("x.safetensors"), {});
  auto f = SafetensorsFile::open(dir.file("x.safetensors"));
  EXPECT_TRUE(f->tensors().empty());
  EXPECT_TRUE(f->metadata().empty());
}

TEST(Safetensors, WriterRejectsInconsistentTensors) {
  TempDir dir;
  float x[4] = {};
  EXPECT_THROW(write_safetensors(dir.file("a"), {{"t", DType::F32, {3}, x, 16}}), std::invalid_argument);
  EXPECT_THROW(write_safetensors(dir.file("a"), {{"t", DType::F32, {4}, x, 16}, {"t", DType::F32, {4}, x, 16}}),
               std::invalid_argument);
  EXPECT_THROW(write_safetensors(dir.file("a"), {{"__metadata__", DType::F32, {4}, x, 16}}), std::invalid_argument);
  EXPECT_THROW(write_safetensors(dir.file("a"), {{"t", DType::F32, {-4}, x, 16}}), std::invalid_argument);
  EXPECT_THROW(write_safetensors(dir.file("no/such/dir/a"), {}), InputError);
  EXPECT_FALSE(fs::exists(dir.file("a")));
  // Nothing but the directory's own files: failed writes leave no temporary behind.
  EXPECT_TRUE(fs::is_empty(dir.path()));
}

TEST(Checkpoint, SingleFileByDirectoryOrPath) {
  TempDir dir;
  Sample s;
  write_safetensors(dir.file("model.safetensors"), s.tensors());
  for (const std::string& p : {dir.path(), dir.file("model.safetensors")}) {
    Checkpoint c = Checkpoint::open(p);
    EXPECT_EQ(c.path(), p);
    EXPECT_EQ(c.names(), (std::vector<std::string>{"model.a", "model.b", "scalar.c", "empty.d"}));
    EXPECT_EQ(c.total_bytes(), 24u + 10 + 8);
    expect_same(c.tensor("model.b"), s.tensors()[1]);
    EXPECT_EQ(c.find("nope"), nullptr);
    const std::string err = input_error([&] { c.tensor("model.layers.0.mlp.up_proj.weight"); });
    EXPECT_CONTAINS(err, p);
    EXPECT_CONTAINS(err, "'model.layers.0.mlp.up_proj.weight'");
  }
}

TEST(Checkpoint, KeepaliveOutlivesTheCheckpoint) {
  TempDir dir;
  Sample s;
  write_safetensors(dir.file("model.safetensors"), s.tensors());
  std::shared_ptr<const void> keep;
  const TensorView* view = nullptr;
  {
    Checkpoint c = Checkpoint::open(dir.path());
    Checkpoint copy = c;  // copies share the mappings
    keep = c.keepalive();
    view = &copy.tensor("model.a");
  }
  EXPECT_EQ(std::memcmp(view->data, s.a.data(), 24), 0);
  EXPECT_EQ(view->name, "model.a");
}

TEST(Checkpoint, ShardedRoundTrip) {
  TempDir dir;
  std::vector<std::vector<float>> data;
  std::vector<TensorToWrite> tensors;
  const std::vector<int64_t> sizes = {4, 4, 2, 20, 1};  // 16, 16, 8, 80 (over the limit: its own shard), 4 bytes
  for (size_t i = 0; i < sizes.size(); ++i) data.emplace_back(size_t(sizes[i]), float(i) + 0.5f);
  for (size_t i = 0; i < sizes.size(); ++i)
    tensors.push_back({"t" + std::to_string(i), DType::F32, {sizes[i]}, data[i].data(), size_t(sizes[i]) * 4});
  write_sharded_safetensors(dir.file("out"), tensors, 40, {{"format", "pt"}});

  // Greedy packing: {t0, t1, t2} = 40 bytes, {t3} alone, {t4}.
  const std::string shard1 = "model-00001-of-00003.safetensors", shard2 = "model-00002-of-00003.safetensors",
                    shard3 = "model-00003-of-00003.safetensors";
  for (const auto& s : {shard1, shard2, shard3}) EXPECT_TRUE(fs::exists(dir.file("out/" + s))) << s;
  auto index = nlohmann::json::parse(read_file(dir.file("out/model.safetensors.index.json")));
  EXPECT_EQ(index["metadata"]["total_size"], 124);
  EXPECT_EQ(index["weight_map"]["t0"], shard1);
  EXPECT_EQ(index["weight_map"]["t2"], shard1);
  EXPECT_EQ(index["weight_map"]["t3"], shard2);
  EXPECT_EQ(index["weight_map"]["t4"], shard3);
  EXPECT_EQ(SafetensorsFile::open(dir.file("out/" + shard2))->metadata().at("format"), "pt");

  for (const std::string& p : {dir.file("out"), dir.file("out/model.safetensors.index.json")}) {
    Checkpoint c = Checkpoint::open(p);
    EXPECT_EQ(c.files().size(), 3u);
    EXPECT_EQ(c.names(), (std::vector<std::string>{"t0", "t1", "t2", "t3", "t4"}));
    EXPECT_EQ(c.total_bytes(), 124u);
    for (const auto& t : tensors) expect_same(c.tensor(t.name), t);
    EXPECT_EQ(c.tensor("t3").file, dir.file("out/" + shard2));
  }
}

TEST(Checkpoint, PrefersTheIndexOverASingleFile) {
  TempDir dir;
  float one = 1.f, two = 2.f;
  write_safetensors(dir.file("model.safetensors"), {{"w", DType::F32, {1}, &one, 4}});
  write_sharded_safetensors(dir.path(), {{"w", DType::F32, {1}, &two, 4}}, 1 << 20);
  Checkpoint c = Checkpoint::open(dir.path());
  float got = 0;
  std::memcpy(&got, c.tensor("w").data, 4);
  EXPECT_EQ(got, 2.f);
}

TEST(Checkpoint, DirectoryWithoutSafetensors) {
  TempDir dir;
  std::string err = input_error([&] { Checkpoint::open(dir.path()); });
  EXPECT_CONTAINS(err, dir.path());
  EXPECT_CONTAINS(err, "model.safetensors.index.json");
  EXPECT_CONTAINS(err, "model.safetensors)");

  write_file(dir.file("pytorch_model.bin.index.json"), "{}");
  err = input_error([&] { Checkpoint::open(dir.path()); });
  EXPECT_CONTAINS(err, "PyTorch .bin checkpoints are not supported; convert to safetensors");

  write_safetensors(dir.file("adapter.safetensors"), {});
  err = input_error([&] { Checkpoint::open(dir.path()); });
  EXPECT_CONTAINS(err, "adapter.safetensors");

  err = input_error([&] { Checkpoint::open(dir.file("nothing-here")); });
  EXPECT_CONTAINS(err, "nothing-here: no such file or directory");
}

// ------------------------------------------------------------------------------------------------
// Hostile single files: each has its own message, naming the file and the tensor
// ------------------------------------------------------------------------------------------------

// A one-tensor header for 'w' with the given fields (JSON text).
std::string entry(const std::string& fields) { return "{\"w\":{" + fields + "}}"; }

TEST(SafetensorsHostile, EmptyAndTruncatedFiles) {
  TempDir dir;
  std::string err = open_error(dir, "");
  EXPECT_CONTAINS(err, dir.file("model.safetensors"));
  EXPECT_CONTAINS(err, "the file is empty");
  err = open_error(dir, std::string("\x10\x00\x00", 3));
  EXPECT_CONTAINS(err, "truncated: 3 bytes, shorter than the 8-byte header length");
}

TEST(SafetensorsHostile, HeaderLengthBeyondFileOrHuge) {
  TempDir dir;
  std::string err = open_error(dir, le64(1000) + "{}");
  EXPECT_CONTAINS(err, "header length 1000 runs past the end of the file (10 bytes");
  err = open_error(dir, le64(uint64_t(1) << 62) + "{}");
  EXPECT_CONTAINS(err, "header length 4611686018427387904 exceeds the limit of 100000000 bytes");
  err = open_error(dir, le64(~uint64_t(0)) + "{}");
  EXPECT_CONTAINS(err, "exceeds the limit");
  err = open_error(dir, le64(0));
  EXPECT_CONTAINS(err, "header is not a JSON object");
}

TEST(SafetensorsHostile, HeaderNotJsonOrNotAnObject) {
  TempDir dir;
  std::string err = open_error(dir, raw_file("{\"w\": {\"dtype\": ", ""));
  EXPECT_CONTAINS(err, "header is not valid JSON");
  err = open_error(dir, raw_file("{} trailing", ""));
  EXPECT_CONTAINS(err, "header is not valid JSON");
  err = open_error(dir, raw_file("{\"w\": \"\xff\xfe\"}", ""));  // invalid UTF-8
  EXPECT_CONTAINS(err, "header is not valid JSON");
  err = open_error(dir, raw_file("[1, 2]  ", ""));
  EXPECT_CONTAINS(err, "header is not a JSON object");
  err = open_error(dir, raw_file("\"str\"", ""));
  EXPECT_CONTAINS(err, "header is not a JSON object");
  err = open_error(dir, raw_file("{\"w\": [1]}", ""));
  EXPECT_CONTAINS(err, "tensor 'w': entry must be an object");
  err = open_error(dir, raw_file("{\"w\": 5}", ""));
  EXPECT_CONTAINS(err, "tensor 'w': entry must be an object");
  // Padding with spaces is allowed; padding with NULs is not JSON.
  write_bytes(dir.file("p"), raw_file("{}      ", ""));
  EXPECT_NO_THROW(SafetensorsFile::open(dir.file("p")));
  err = open_error(dir, raw_file(std::string("{}\0\0\0\0\0\0", 8), ""));
  EXPECT_CONTAINS(err, "header is not valid JSON");
}

TEST(SafetensorsHostile, DeepNestingIsRejectedNotRecursed) {
  TempDir dir;
  const std::string deep = "{\"w\":{\"x\":" + std::string(100000, '[') + std::string(100000, ']') + "}}";
  // An unknown field is skipped, however deep, without recursion; then the entry lacks its fields.
  std::string err = open_error(dir, raw_file(deep, ""));
  EXPECT_CONTAINS(err, "tensor 'w': missing field 'dtype'");
  err = open_error(dir, raw_file(entry("\"shape\":[[[[1]]]]"), ""));
  EXPECT_CONTAINS(err, "tensor 'w': field 'shape' must be a list of integers, not nested lists");
}

TEST(SafetensorsHostile, UnknownDtype) {
  TempDir dir;
  std::string err = open_error(dir, raw_file(entry("\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]"), "ab"));
  EXPECT_CONTAINS(err, dir.file("model.safetensors") + ": tensor 'w': unknown dtype 'F8_E4M3'");
  err = open_error(dir, raw_file(entry("\"dtype\":7,\"shape\":[2],\"data_offsets\":[0,2]"), "ab"));
  EXPECT_CONTAINS(err, "tensor 'w': field 'dtype' must be a string");
}

TEST(SafetensorsHostile, BadShapes) {
  TempDir dir;
  std::string err = open_error(dir, raw_file(entry("\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]"), "abcd"));
  EXPECT_CONTAINS(err, "tensor 'w': field 'shape' must hold non-negative 64-bit integers, found the number -1");
  err = open_error(dir, raw_file(entry("\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]"), "abcd"));
  EXPECT_CONTAINS(err, "tensor 'w': field 'shape' must hold non-negative 64-bit integers, found the number 1.5");
  err = open_error(dir, raw_file(entry("\"dtype\":\"F32\",\"shape\":[\"4\"],\"data_offsets\":[0,4]"), "abcd"));
  EXPECT_CONTAINS(err, "found a string");
  // 2^22 * 2^21 * 2^21 = 2^64 elements: the product overflows.
  err = open_error(dir, raw_file(entry("\"dtype\":\"U8\",\"shape\":[4194304,2097152,2097152],\"data_offsets\":[0,4]"), "abcd"));
  EXPECT_CONTAINS(err, "tensor 'w': shape [4194304, 2097152, 2097152] x U8 has more bytes than fit in 64 bits");
  // 2^62 elements fit; 2^62 x 4 bytes does not.
  err = open_error(dir, raw_file(entry("\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,4]"), "abcd"));
  EXPECT_CONTAINS(err, "has more bytes than fit in 64 bits");
  err = open_error(dir, raw_file(entry("\"dtype\":\"F32\",\"shape\":[18446744073709551615],\"data_offsets\":[0,4]"), "abcd"));
  EXPECT_CONTAINS(err, "shape dimension 18446744073709551615 is too large");
  err = open_error(dir, raw_file(entry("\"dtype\":\"F32\",\"shape\":[99999999999999999999999],\"data_offsets\":[0,4]"), "abcd"));
  EXPECT_CONTAINS(err, "found the number 99999999999999999999999");
  // A zero in the shape makes any other dimension harmless.
  write_bytes(dir.file("z"), raw_file(entry("\"dtype\":\"F32\",\"shape\":[0,9223372036854775807],\"data_offsets\":[0,0]"), ""));
  EXPECT_NO_THROW(SafetensorsFile::open(dir.file("z")));
}

TEST(SafetensorsHostile, BadOffsets) {
  TempDir dir;
  std::string err = open_error(dir, raw_file(entry("\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]"), "abcd"));
  EXPECT_CONTAINS(err, "tensor 'w': data_offsets [0, 8] run past the end of the data (4 bytes");
  err = open_error(dir, raw_file(entry("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[18446744073709551615,3]"), "abcd"));
  EXPECT_CONTAINS(err, "tensor 'w': data_offsets [18446744073709551615, 3] begin after end");
  err = open_error(dir, raw_file(entry("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]"), "abcd"));
  EXPECT_CONTAINS(err, "data_offsets [4, 0] begin after end");
  err = open_error(dir, raw_file(entry("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]"), "abcd"));
  EXPECT_CONTAINS(err, "data_offsets must be [begin, end], found 3 numbers");
  err = open_error(dir, raw_file(entry("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":{}"), "abcd"));
  EXPECT_CONTAINS(err, "field 'data_offsets' must be a list of integers, not an object");
  err = open_error(dir, raw_file(entry("\"dtype\":\"F32\",\"shape\":[1]"), "abcd"));
  EXPECT_CONTAINS(err, "tensor 'w': missing field 'data_offsets'");
}

TEST(SafetensorsHostile, SizeMismatch) {
  TempDir dir;
  const std::string header = "{\"model.norm.weight\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,12]}}";
  write_bytes(dir.file("model.safetensors"), raw_file(header, std::string(12, 'x')));
  const std::string err = input_error([&] { SafetensorsFile::open(dir.file("model.safetensors")); });
  EXPECT_CONTAINS(err, "model.safetensors: tensor 'model.norm.weight': data_offsets [0, 12] hold 12 bytes but shape "
                       "[4] x F32 needs 16");
}

TEST(SafetensorsHostile, OverlapGapAndTrailingBytes) {
  TempDir dir;
  std::string err = open_error(
      dir, raw_file("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                    "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]}}",
                    "abcdef"));
  EXPECT_CONTAINS(err, "tensor 'b': data_offsets [2, 6] overlap tensor 'a' (which ends at 4)");
  // The same bytes under two names is an overlap too.
  err = open_error(dir, raw_file("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                                 "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}",
                                 "abcd"));
  EXPECT_CONTAINS(err, "overlap tensor");
  err = open_error(dir, raw_file("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
                                 "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[4,6]}}",
                                 "abcdef"));
  EXPECT_CONTAINS(err, "tensor 'b': data_offsets [4, 6] leave a gap of 2 unused bytes");
  err = open_error(dir, raw_file(entry("\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]"), "abcdef"));
  EXPECT_CONTAINS(err, "4 bytes after the last tensor belong to no tensor");
  // Zero-length tensors may sit anywhere on a boundary.
  write_bytes(dir.file("ok"), raw_file("{\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[2,2]},"
                                       "\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
                                       "\"f\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[2,2]}}",
                                       "ab"));
  auto f = SafetensorsFile::open(dir.file("ok"));
  ASSERT_EQ(f->tensors().size(), 3u);
  EXPECT_EQ(f->tensors()[0].name, "e");  // header order, not offset order
}

TEST(SafetensorsHostile, DuplicateKeysAndBadMetadata) {
  TempDir dir;
  std::string err = open_error(dir, raw_file("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                                             "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
                                             "ab"));
  EXPECT_CONTAINS(err, "header lists tensor 'a' twice");
  err = open_error(dir, raw_file(entry("\"dtype\":\"U8\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,1]"), "a"));
  EXPECT_CONTAINS(err, "tensor 'w': key 'dtype' appears twice");
  err = open_error(dir, raw_file("{\"__metadata__\":{\"format\":1}}", ""));
  EXPECT_CONTAINS(err, "__metadata__: value of 'format' must be a string, not the number 1");
  err = open_error(dir, raw_file("{\"__metadata__\":{\"format\":{\"x\":\"y\"}}}", ""));
  EXPECT_CONTAINS(err, "__metadata__: value of 'format' must be a string, not an object");
  err = open_error(dir, raw_file("{\"__metadata__\":[\"x\"]}", ""));
  EXPECT_CONTAINS(err, "__metadata__ must be an object of strings, not an array");
  // null metadata and unknown per-tensor fields are accepted, as the reference implementation does.
  write_bytes(dir.file("ok"), raw_file("{\"__metadata__\":null,\"w\":{\"dtype\":\"U8\",\"shape\":[1],"
                                       "\"data_offsets\":[0,1],\"note\":{\"deep\":[1,{\"x\":null}]}}}",
                                       "a"));
  EXPECT_EQ(SafetensorsFile::open(dir.file("ok"))->tensors().size(), 1u);
}

TEST(SafetensorsHostile, NotARegularFile) {
  TempDir dir;
  const std::string err = input_error([&] { SafetensorsFile::open(dir.path()); });
  EXPECT_CONTAINS(err, "not a regular file");
  EXPECT_CONTAINS(input_error([&] { SafetensorsFile::open(dir.file("absent")); }), "cannot open");
}

// ------------------------------------------------------------------------------------------------
// Hostile shard sets
// ------------------------------------------------------------------------------------------------

class ShardedHostile : public ::testing::Test {
 protected:
  void SetUp() override {
    write_safetensors(dir.file("s1.safetensors"), {{"a", DType::F32, {1}, &x, 4}, {"b", DType::F32, {1}, &x, 4}});
    write_safetensors(dir.file("s2.safetensors"), {{"c", DType::F32, {1}, &x, 4}});
  }
  std::string open_with_index(const std::string& index) {
    write_file(dir.file("model.safetensors.index.json"), index);
    return input_error([&] { Checkpoint::open(dir.path()); });
  }
  TempDir dir;
  float x = 1.f;
};

TEST_F(ShardedHostile, ValidIndexOpens) {
  write_file(dir.file("model.safetensors.index.json"),
             R"({"metadata": {"total_size": 12}, "weight_map": {"a": "s1.safetensors", "b": "s1.safetensors",
                 "c": "s2.safetensors"}})");
  EXPECT_EQ(Checkpoint::open(dir.path()).names(), (std::vector<std::string>{"a", "b", "c"}));
}

TEST_F(ShardedHostile, MissingShard) {
  std::string err = open_with_index(R"({"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors",
                                          "c": "s3.safetensors"}})");
  EXPECT_CONTAINS(err, "model.safetensors.index.json: shard 's3.safetensors' (listed for 1 tensors, e.g. 'c') is missing");
}

TEST_F(ShardedHostile, TensorInTwoShards) {
  write_safetensors(dir.file("s2.safetensors"), {{"c", DType::F32, {1}, &x, 4}, {"b", DType::F32, {1}, &x, 4}});
  std::string err = open_with_index(R"({"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors",
                                          "c": "s2.safetensors"}})");
  EXPECT_CONTAINS(err, "tensor 'b' appears in two shards: " + dir.file("s1.safetensors") + " and " +
                           dir.file("s2.safetensors"));
}

TEST_F(ShardedHostile, IndexDisagreesWithShards) {
  std::string err = open_with_index(R"({"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors",
                                          "c": "s2.safetensors", "d": "s2.safetensors"}})");
  EXPECT_CONTAINS(err, "weight_map places tensor 'd' in shard 's2.safetensors', but no shard holds it");
  err = open_with_index(R"({"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors", "c": "s2.safetensors"}})");
  EXPECT_CONTAINS(err, "weight_map places tensor 'b' in shard 's2.safetensors', but it is in " + dir.file("s1.safetensors"));
  err = open_with_index(R"({"weight_map": {"a": "s1.safetensors", "c": "s2.safetensors"}})");
  EXPECT_CONTAINS(err, "holds tensor 'b', which the weight_map does not list");
}

TEST_F(ShardedHostile, BadIndexFiles) {
  EXPECT_CONTAINS(open_with_index("{not json"), "model.safetensors.index.json: not valid JSON");
  EXPECT_CONTAINS(open_with_index(R"({"metadata": {}})"), "expected an object with a \"weight_map\" object");
  EXPECT_CONTAINS(open_with_index(R"({"weight_map": {"a": 3}})"), "weight_map entry for tensor 'a' must be a file name");
  EXPECT_CONTAINS(open_with_index(R"({"weight_map": {"a": "../s1.safetensors"}})"), "not a file inside the checkpoint");
  EXPECT_CONTAINS(open_with_index(R"({"weight_map": {"a": "/etc/passwd"}})"), "not a file inside the checkpoint");
  // A broken shard reports the shard's own problem.
  write_bytes(dir.file("s2.safetensors"), "abc");
  EXPECT_CONTAINS(open_with_index(R"({"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors",
                                     "c": "s2.safetensors"}})"),
                  dir.file("s2.safetensors") + ": file is truncated");
}

// ------------------------------------------------------------------------------------------------
// Fuzz: random mutations of a valid file either open (and every tensor's bytes can be read) or throw
// InputError. Anything else, or a crash, is a bug. Deterministic (fixed seed).
// ------------------------------------------------------------------------------------------------

TEST(SafetensorsFuzz, MutationsOpenOrThrowInputError) {
  TempDir dir;
  Sample s;
  write_safetensors(dir.file("base"), s.tensors(), {{"format", "pt"}});
  const std::string base = read_file(dir.file("base"));
  const size_t header_end = 8 + size_t(uint8_t(base[0]) | uint8_t(base[1]) << 8);
  const std::string path = dir.file("mutant.safetensors");
  static const char kAlphabet[] = "{}[]\",:0123456789-.e \\u\0\xff";  // JSON syntax, NUL, invalid UTF-8
  const std::string alphabet(kAlphabet, sizeof kAlphabet - 1);

  std::mt19937_64 rng(12345);
  auto below = [&](size_t n) { return size_t(rng() % n); };
  int opened = 0, rejected = 0;
  for (int iter = 0; iter < 2000; ++iter) {
    std::string m = base;
    const int kind = int(below(5));
    const int edits = 1 + int(below(4));
    for (int e = 0; e < edits; ++e) {
      if (kind == 0) {  // flip a byte, mostly in the header where the structure lives
        size_t at = below(5) ? below(header_end) : below(m.size());
        if (at < m.size()) m[at] = char(rng());
      } else if (kind == 1) {  // overwrite with a JSON-significant character
        size_t at = 8 + below(header_end - 8);
        if (at < m.size()) m[at] = alphabet[below(alphabet.size())];
      } else if (kind == 2) {  // truncate
        m.resize(below(m.size() + 1));
      } else if (kind == 3) {  // change the header length
        uint64_t len = below(3) ? header_end - 8 + below(17) - 8 : rng();
        m.replace(0, 8, le64(len));
      } else {  // insert or delete a header byte (shifts everything after it)
        size_t at = 8 + below(header_end - 8);
        if (below(2) && at <= m.size()) m.insert(m.begin() + long(at), alphabet[below(alphabet.size())]);
        else if (at < m.size()) m.erase(at, 1);
      }
    }
    write_bytes(path, m);
    try {
      auto f = SafetensorsFile::open(path);
      unsigned sum = 0;
      for (const TensorView& t : f->tensors()) {
        ASSERT_EQ(uint64_t(t.numel()) * dtype_size(t.dtype), t.nbytes);
        for (size_t i = 0; i < t.nbytes; ++i) sum += t.data[i];  // must stay inside the mapping
      }
      (void)sum;
      ++opened;
    } catch (const InputError& e) {
      ASSERT_NE(std::string(e.what()).find(path), std::string::npos) << "error does not name the file: " << e.what();
      ++rejected;
    } catch (const std::exception& e) {
      FAIL() << "iteration " << iter << ": not an InputError: " << e.what();
    }
  }
  EXPECT_GT(rejected, 1000);
  EXPECT_GT(opened, 10);  // some mutations (data bytes, metadata text) leave a valid file
}

}  // namespace
}  // namespace layerprune
