// safetensors reading and writing, the Llama tensor contract, and config.json. The hostile-file cases also
// run under AddressSanitizer + UBSan (test_safetensors_asan, see tests/CMakeLists.txt).
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <random>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/text_file.h"
#include "tests/test_support.h"
#include "worker/llama_config.h"
#include "worker/llama_tensors.h"
#include "worker/safetensors.h"

namespace layerprune {
namespace {

using testing::TempDir;

// A file made of a hand-written header and `data_bytes` bytes of data.
std::string raw_file(const std::string& header, size_t data_bytes) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = char(n >> (8 * i));
  return out + header + std::string(data_bytes, '\x01');
}

// Expects SafetensorsFile::open to throw an InputError whose message contains `needle`.
void expect_error(const std::string& path, const std::string& needle) {
  try {
    SafetensorsFile::open(path);
    FAIL() << "expected an error containing '" << needle << "'";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << "the message names the file: " << e.what();
  }
}

TEST(Safetensors, WriteReadRoundTrip) {
  TempDir d;
  std::vector<float> a = {1.f, 2.f, 3.f, 4.f, 5.f, 6.f};
  std::vector<uint16_t> b = {0x3f80, 0x4000, 0x4040};  // bf16 1, 2, 3
  std::vector<float> empty;
  write_safetensors(d.file("m.safetensors"),
                    {{"a", DType::F32, {2, 3}, a.data(), a.size() * 4},
                     {"b", DType::BF16, {3}, b.data(), b.size() * 2},
                     {"empty", DType::F32, {0, 4}, empty.data(), 0}},
                    {{"format", "pt"}});
  auto f = SafetensorsFile::open(d.file("m.safetensors"));
  ASSERT_EQ(f->tensors().size(), 3u);
  const TensorView* va = f->find("a");
  ASSERT_NE(va, nullptr);
  EXPECT_EQ(va->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(va->numel(), 6);
  EXPECT_EQ(std::memcmp(va->data, a.data(), 24), 0);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(va->data) % 8, 0u) << "the header is padded so data stays aligned";
  EXPECT_EQ(f->find("b")->dtype, DType::BF16);
  EXPECT_EQ(std::memcmp(f->find("b")->data, b.data(), 6), 0);
  EXPECT_EQ(f->find("empty")->nbytes, 0u);
  EXPECT_EQ(f->metadata().at("format"), "pt");
  EXPECT_EQ(f->find("missing"), nullptr);
  Checkpoint c = Checkpoint::open(d.file("m.safetensors"));
  EXPECT_EQ(c.total_bytes(), 30u);
  EXPECT_THROW(c.tensor("missing"), InputError);
}

TEST(Safetensors, ShardedRoundTripAndIndexErrors) {
  TempDir d;
  std::vector<std::vector<float>> data(5, std::vector<float>(100));
  std::vector<TensorToWrite> ts;
  for (int i = 0; i < 5; ++i) {
    for (int j = 0; j < 100; ++j) data[i][j] = float(i * 1000 + j);
    ts.push_back({"t" + std::to_string(i), DType::F32, {10, 10}, data[i].data(), 400});
  }
  write_sharded_safetensors(d.path() + "/ck", ts, 900);  // two tensors per shard -> 3 shards
  EXPECT_TRUE(std::filesystem::exists(d.path() + "/ck/model-00003-of-00003.safetensors"));
  Checkpoint c = Checkpoint::open(d.path() + "/ck");
  EXPECT_EQ(c.names().size(), 5u);
  for (int i = 0; i < 5; ++i) {
    const TensorView& v = c.tensor("t" + std::to_string(i));
    EXPECT_EQ(reinterpret_cast<const float*>(v.data)[7], float(i * 1000 + 7));
  }
  // The index names a shard that is not there.
  std::filesystem::remove(d.path() + "/ck/model-00002-of-00003.safetensors");
  try {
    Checkpoint::open(d.path() + "/ck");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("model-00002-of-00003.safetensors' (for tensor"), std::string::npos) << e.what();
  }
  // A tensor in two shards.
  TempDir d2;
  write_safetensors(d2.file("s1.safetensors"), {ts[0], ts[1]});
  write_safetensors(d2.file("s2.safetensors"), {ts[1]});
  write_file(d2.file("model.safetensors.index.json"),
             R"({"weight_map": {"t0": "s1.safetensors", "t1": "s2.safetensors"}})");
  try {
    Checkpoint::open(d2.path());
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("appears in two shards"), std::string::npos) << e.what();
  }
  write_file(d2.file("model.safetensors.index.json"), R"({"weight_map": {"t0": "../s1.safetensors"}})");
  EXPECT_THROW(Checkpoint::open(d2.path()), InputError);
  write_file(d2.file("model.safetensors.index.json"), R"({"weights": {}})");
  EXPECT_THROW(Checkpoint::open(d2.path()), InputError);
}

TEST(Safetensors, DirectoryWithoutSafetensorsNamesWhatItFound) {
  TempDir d;
  write_file(d.file("pytorch_model.bin"), "x");
  try {
    Checkpoint::open(d.path());
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("PyTorch .bin checkpoints are not supported"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Checkpoint::open(d.file("nothing-here")), InputError);
}

// Each kind of hostile file gets its own message.
TEST(Safetensors, HostileFiles) {
  TempDir d;
  auto put = [&](const std::string& name, const std::string& bytes) {
    write_file(d.file(name), bytes);
    return d.file(name);
  };
  const std::string ok = R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";
  ASSERT_NO_THROW(SafetensorsFile::open(put("ok.safetensors", raw_file(ok, 16))));
  expect_error(put("empty.safetensors", ""), "empty file");
  expect_error(put("short.safetensors", "abc"), "shorter than the 8-byte");
  std::string huge(8, '\0');
  huge[7] = 0x40;  // 2^62
  expect_error(put("huge.safetensors", huge + "{}"), "exceeds the 100 MB limit");
  std::string past = raw_file(ok, 16);
  past[0] = char(200);  // header length 200 > file
  expect_error(put("past.safetensors", past.substr(0, 100)), "runs past the end");
  expect_error(put("json.safetensors", raw_file("{not json", 0)), "not valid JSON");
  expect_error(put("array.safetensors", raw_file("[1,2]", 0)), "not a JSON object");
  expect_error(put("dtype.safetensors", raw_file(R"({"w":{"dtype":"F8","shape":[1],"data_offsets":[0,1]}})", 1)),
               "unknown dtype \"F8\"");
  expect_error(put("neg.safetensors", raw_file(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4)),
               "negative dimension");
  expect_error(put("overflow.safetensors",
                   raw_file(R"({"w":{"dtype":"F32","shape":[4611686018427387904,4611686018427387904,16],"data_offsets":[0,0]}})", 0)),
               "2^64 or more");
  expect_error(put("outside.safetensors", raw_file(ok, 8)), "reach beyond the 8 bytes of data (truncated file?)");
  expect_error(put("order.safetensors", raw_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", 8)),
               "begin is after end");
  expect_error(put("size.safetensors", raw_file(R"({"model.norm.weight":{"dtype":"F32","shape":[4],"data_offsets":[0,12]}})", 16)),
               "tensor 'model.norm.weight': data_offsets [0,12] hold 12 bytes but shape [4] x F32 needs 16");
  expect_error(put("overlap.safetensors",
                   raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12)),
               "tensors 'a' and 'b' overlap");
  expect_error(put("fields.safetensors", raw_file(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", 4)), "missing string field \"dtype\"");
  expect_error(put("meta.safetensors", raw_file(R"({"__metadata__":{"k":1}})", 0)), "__metadata__ value for 'k'");
  expect_error(put("offsets.safetensors", raw_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", 4)),
               "must be non-negative integers");
}

// Random corruption of a valid file: every variant either opens or throws InputError; nothing crashes
// (the ASan build turns any out-of-bounds read into a failure).
TEST(Safetensors, MutationFuzzNeverCrashes) {
  TempDir d;
  std::vector<float> a(12, 1.5f), b(5, 2.5f);
  write_safetensors(d.file("base.safetensors"),
                    {{"a", DType::F32, {3, 4}, a.data(), 48}, {"b", DType::F32, {5}, b.data(), 20}}, {{"k", "v"}});
  const std::string base = read_file(d.file("base.safetensors"));
  std::mt19937 rng(42);
  int opened = 0, rejected = 0;
  for (int i = 0; i < 2000; ++i) {
    std::string s = base;
    switch (rng() % 3) {
      case 0: s.resize(rng() % s.size()); break;                                   // truncate
      case 1: for (int k = 0; k < 3; ++k) s[rng() % s.size()] = char(rng()); break;  // flip bytes
      default: s[rng() % std::min<size_t>(s.size(), 8 + 120)] = "0123456789[]{},:\"-"[rng() % 18];  // header digits
    }
    write_file(d.file("fuzz.safetensors"), s);
    try {
      auto f = SafetensorsFile::open(d.file("fuzz.safetensors"));
      for (const auto& t : f->tensors()) {  // every view must lie inside the mapping
        volatile uint8_t sink = 0;
        for (size_t k = 0; k < t.nbytes; ++k) sink ^= t.data[k];
        (void)sink;
      }
      ++opened;
    } catch (const InputError&) {
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 1000);
  EXPECT_GT(opened, 0);
}

LlamaConfig small_config() {
  LlamaConfig c;
  c.hidden_size = 8; c.intermediate_size = 12; c.num_hidden_layers = 2; c.num_attention_heads = 2;
  c.num_key_value_heads = 1; c.vocab_size = 10; c.max_position_embeddings = 16;
  return c;
}

void write_model(const std::string& path, const LlamaConfig& c, const std::string& skip = "",
                 const std::string& reshape = "", DType dtype = DType::F32, const std::string& extra = "") {
  std::vector<std::vector<uint8_t>> bufs;
  std::vector<TensorToWrite> ts;
  for (auto e : llama_tensor_layout(c)) {
    if (e.name == skip) continue;
    if (e.name == reshape) e.shape.back() += 1;
    int64_t n = 1;
    for (int64_t s : e.shape) n *= s;
    bufs.emplace_back(size_t(n) * dtype_size(dtype));
    ts.push_back({e.name, dtype, e.shape, bufs.back().data(), bufs.back().size()});
  }
  if (!extra.empty()) {
    bufs.emplace_back(4);
    ts.push_back({extra, DType::F32, {1}, bufs.back().data(), 4});
  }
  write_safetensors(path, ts);
}

TEST(LlamaTensors, LayoutAndCheckpointContract) {
  LlamaConfig c = small_config();
  auto layout = llama_tensor_layout(c);
  EXPECT_EQ(layout.size(), 1u + 2 * 9 + 1 + 1);
  EXPECT_EQ(layout[2].name, "model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(layout[3].shape, (std::vector<int64_t>{4, 8})) << "k_proj: 1 kv head x head_dim 4";
  TempDir d;
  write_model(d.file("good.safetensors"), c);
  EXPECT_NO_THROW(check_llama_checkpoint(Checkpoint::open(d.file("good.safetensors")), c));
  write_model(d.file("inv.safetensors"), c, "", "", DType::F32, "model.layers.0.self_attn.rotary_emb.inv_freq");
  EXPECT_NO_THROW(check_llama_checkpoint(Checkpoint::open(d.file("inv.safetensors")), c)) << "inv_freq buffers are ignored";
  auto expect = [&](const std::string& file, const std::string& needle) {
    try {
      check_llama_checkpoint(Checkpoint::open(d.file(file)), c);
      FAIL() << file;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  write_model(d.file("missing.safetensors"), c, "model.layers.1.mlp.up_proj.weight");
  expect("missing.safetensors", "missing tensor 'model.layers.1.mlp.up_proj.weight' [12, 8]");
  write_model(d.file("shape.safetensors"), c, "", "model.norm.weight");
  expect("shape.safetensors", "tensor 'model.norm.weight' has shape [9], config.json implies [8]");
  write_model(d.file("extra.safetensors"), c, "", "", DType::F32, "model.layers.2.mlp.up_proj.weight");
  expect("extra.safetensors", "unexpected tensor 'model.layers.2.mlp.up_proj.weight'");
  write_model(d.file("int.safetensors"), c, "", "", DType::I32);
  expect("int.safetensors", "has dtype I32");
}

TEST(LlamaConfig, Llama2ConfigsParse) {
  struct Want {
    const char* dir;
    int64_t hidden, ffn, layers, heads, kv;
  };
  for (const Want& w : {Want{"Llama-2-7b-hf", 4096, 11008, 32, 32, 32}, Want{"Llama-2-13b-hf", 5120, 13824, 40, 40, 40},
                        Want{"Llama-2-70b-chat-hf", 8192, 28672, 80, 64, 8}}) {
    LP_REQUIRE_DATA(path, std::string("llama2/") + w.dir + "/config.json");
    LlamaConfig c = LlamaConfig::from_file(path);
    EXPECT_EQ(c.hidden_size, w.hidden) << w.dir;
    EXPECT_EQ(c.intermediate_size, w.ffn);
    EXPECT_EQ(c.num_hidden_layers, w.layers);
    EXPECT_EQ(c.num_attention_heads, w.heads);
    EXPECT_EQ(c.num_key_value_heads, w.kv);
    EXPECT_EQ(c.vocab_size, 32000);
    EXPECT_EQ(c.max_position_embeddings, 4096);
    EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
    EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
    EXPECT_FALSE(c.tie_word_embeddings);
    EXPECT_EQ(LlamaConfig::from_json(c.to_json(), "roundtrip"), c);
  }
}

TEST(LlamaConfig, DefaultsAndErrors) {
  auto base = nlohmann::json{{"model_type", "llama"}, {"hidden_size", 64}, {"intermediate_size", 128},
                             {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"vocab_size", 100}};
  LlamaConfig c = LlamaConfig::from_json(base.dump(), "cfg");
  EXPECT_EQ(c.num_key_value_heads, 4) << "defaults to the number of heads";
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_FALSE(c.tie_word_embeddings);
  auto expect = [&](nlohmann::json j, const std::string& needle) {
    try {
      LlamaConfig::from_json(j.dump(), "cfg.json");
      FAIL() << j.dump();
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).rfind("cfg.json", 0), 0u);
    }
  };
  auto j = base;
  j["model_type"] = "gpt2";
  j["architectures"] = {"GPT2LMHeadModel"};
  expect(j, "unsupported architecture (model_type \"gpt2\"");
  j = base;
  j.erase("hidden_size");
  expect(j, "missing required field \"hidden_size\"");
  j = base;
  j["hidden_size"] = "64";
  expect(j, "field \"hidden_size\" must be an integer");
  j = base;
  j["num_key_value_heads"] = 3;
  expect(j, "not divisible by num_key_value_heads 3");
  j = base;
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  expect(j, "rope_scaling");
  j = base;
  j["num_hidden_layers"] = 0;
  expect(j, "num_hidden_layers must be positive");
  EXPECT_THROW(LlamaConfig::from_json("{oops", "cfg.json"), InputError);
}

}  // namespace
}  // namespace layerprune
