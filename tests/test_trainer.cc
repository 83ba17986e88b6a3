// The healing trainer (healing/trainer.h): schedule, packed data, AdamW steps, and checkpoints that resume
// the identical run (bit for bit), including after a stop request.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <cmath>
#include <limits>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "tests/llama_shapes.h"
#include "tests/test_support.h"
#include "model/llama.h"
#include "model/lora.h"
#include "model/make_model.h"
#include "healing/trainer.h"
#include "formats/safetensors.h"
#include "model/tensor_io.h"

namespace layerprune {
namespace {

using testing::TempDir;

TEST(Trainer, WarmupThenCosine) {
  TrainConfig c;
  c.steps = 110;
  c.warmup = 10;
  c.lr = 1e-3;
  c.min_lr_ratio = 0.1;
  EXPECT_DOUBLE_EQ(learning_rate(c, 0), 1e-4);
  EXPECT_DOUBLE_EQ(learning_rate(c, 9), 1e-3);
  EXPECT_DOUBLE_EQ(learning_rate(c, 10), 1e-3) << "cosine starts at the peak";
  EXPECT_NEAR(learning_rate(c, 59) , 1e-4 + 0.9e-3 * 0.5 * (1 + std::cos(M_PI * 49.0 / 99.0)), 1e-15);
  EXPECT_NEAR(learning_rate(c, 109), 1e-4, 1e-15) << "ends at min_lr_ratio x lr";
}

TEST(Trainer, PackedStreamVisitsEveryWindowOncePerPass) {
  std::vector<int32_t> toks(100);
  for (int i = 0; i < 100; ++i) toks[size_t(i)] = i + 10;
  PackedStream s(toks, 1, 11, 5);  // windows of 10 tokens: 10 windows
  EXPECT_EQ(s.windows(), 10);
  std::set<int64_t> starts;
  at::Tensor b = s.next(10);
  for (int64_t i = 0; i < 10; ++i) {
    EXPECT_EQ(b[i][0].item<int64_t>(), 1) << "BOS first";
    const int64_t first = b[i][1].item<int64_t>();
    for (int64_t t = 2; t < 11; ++t) EXPECT_EQ(b[i][t].item<int64_t>(), first + t - 1) << "consecutive tokens";
    starts.insert(first);
  }
  EXPECT_EQ(starts.size(), 10u);
  at::Tensor second = s.next(10);
  EXPECT_FALSE(at::equal(b, second)) << "a new order on the next pass";
  PackedStream t(toks, 1, 11, 5);
  t.seek(10);
  EXPECT_TRUE(at::equal(t.next(10), second));
  EXPECT_CONTAINS(testing::input_error([&] { PackedStream(std::vector<int32_t>(5), 1, 11, 0); }), "fewer than one");
}

TEST(Trainer, PackedStreamWithoutBosTakesWholeSequencesFromTheStream) {
  // A tokenizer that adds no BOS (SmolLM2): bos = -1, each sequence is 11 consecutive stream tokens.
  std::vector<int32_t> toks(110);
  for (int i = 0; i < 110; ++i) toks[size_t(i)] = i + 10;
  PackedStream s(toks, -1, 11, 5);
  EXPECT_EQ(s.windows(), 10);
  std::set<int64_t> starts;
  at::Tensor b = s.next(10);
  for (int64_t i = 0; i < 10; ++i) {
    const int64_t first = b[i][0].item<int64_t>();
    EXPECT_EQ((first - 10) % 11, 0) << "windows start at multiples of 11 stream tokens";
    for (int64_t t = 1; t < 11; ++t) EXPECT_EQ(b[i][t].item<int64_t>(), first + t) << "consecutive tokens";
    starts.insert(first);
  }
  EXPECT_EQ(starts.size(), 10u);
  EXPECT_CONTAINS(testing::input_error([&] { PackedStream(std::vector<int32_t>(10), -1, 11, 0); }),
                  "fewer than one sequence of 11");
}

constexpr int64_t kSeqLen = 17;

struct Tiny {
  TempDir dir;
  std::unique_ptr<LlamaModel> model;
  std::vector<int32_t> text;
  Tiny() {
    MakeModelOptions mo;
    mo.init_std = 0.2;
    make_random_model(testing::llama_shape(32, 48, 3, 4, 2, 64, 32), dir.path() + "/m", mo);
    model = std::make_unique<LlamaModel>(LlamaModel::load(dir.path() + "/m"));
    for (int i = 0; i < 2000; ++i) text.push_back(int32_t((i * 7 + i / 13) % 60 + 2));  // learnable pattern
  }
  TrainConfig config(const std::string& ckpt) const {
    TrainConfig c;
    c.steps = 8;
    c.global_batch = 4;
    c.micro_batch = 2;
    c.lr = 5e-3;
    c.warmup = 2;
    c.checkpoint_dir = ckpt;
    c.log_every = 0;
    return c;
  }
};

LoraConfig lora_config() {
  LoraConfig l;
  l.rank = 4;
  l.seed = 9;
  l.dropout = 0.1;  // exercises the dropout RNG across the resume
  l.targets = {"all-linear"};
  return l;
}

TEST(Trainer, LossFallsAndResumeRepeatsTheRunBitForBit) {
  Tiny t;
  TrainConfig c = t.config(t.dir.path() + "/a");
  c.checkpoint_every = 3;
  LoraLlama full(*t.model, {0, 2}, lora_config());
  PackedStream d1(t.text, 1, kSeqLen, 3);
  TrainResult r1 = train(full, d1, c);
  ASSERT_EQ(r1.steps.size(), 8u);
  EXPECT_LT(r1.steps.back().loss, r1.steps.front().loss) << "training lowers the loss";
  ASSERT_TRUE(std::filesystem::exists(t.dir.path() + "/a/step-000003.safetensors"));

  LoraLlama resumed(*t.model, {0, 2}, lora_config());
  PackedStream d2(t.text, 1, kSeqLen, 3);
  c.checkpoint_dir = t.dir.path() + "/b";
  TrainResult r2 = train(resumed, d2, c, t.dir.path() + "/a/step-000003.safetensors");
  ASSERT_EQ(r2.steps.size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(r2.steps[i].step, r1.steps[i + 3].step);
    EXPECT_EQ(r2.steps[i].loss, r1.steps[i + 3].loss) << "step " << r2.steps[i].step << ": bit for bit";
  }
  for (size_t i = 0; i < full.adapters().size(); ++i) {
    EXPECT_TRUE(at::equal(full.adapters()[i].a, resumed.adapters()[i].a)) << full.adapters()[i].name;
    EXPECT_TRUE(at::equal(full.adapters()[i].b, resumed.adapters()[i].b)) << full.adapters()[i].name;
  }
}

TEST(Trainer, StopRequestCheckpointsAndResumes) {
  Tiny t;
  TrainConfig c = t.config(t.dir.path() + "/s");
  LoraLlama whole(*t.model, {}, lora_config());
  PackedStream d0(t.text, 1, kSeqLen, 3);
  c.checkpoint_dir.clear();
  TrainResult uninterrupted = train(whole, d0, c);
  c.checkpoint_dir = t.dir.path() + "/s";

  LoraLlama first(*t.model, {}, lora_config());
  PackedStream d1(t.text, 1, kSeqLen, 3);
  TrainResult r1 = train(first, d1, c, "", [](const TrainStep& s) {
    if (s.step == 5) g_stop_training = true;  // as the SIGTERM handler does
  });
  g_stop_training = false;
  EXPECT_TRUE(r1.stopped);
  EXPECT_EQ(r1.final_step, 5);
  ASSERT_FALSE(r1.last_checkpoint.empty());
  LoraLlama second(*t.model, {}, lora_config());
  PackedStream d2(t.text, 1, kSeqLen, 3);
  TrainResult r2 = train(second, d2, c, r1.last_checkpoint);
  EXPECT_EQ(r2.final_step, 8);
  EXPECT_EQ(r2.steps.back().loss, uninterrupted.steps.back().loss);
  // A checkpoint of another adapter set is refused.
  LoraConfig other = lora_config();
  other.rank = 2;
  LoraLlama wrong(*t.model, {}, other);
  PackedStream d3(t.text, 1, kSeqLen, 3);
  EXPECT_CONTAINS(testing::input_error([&] { train(wrong, d3, c, r1.last_checkpoint); }), "another adapter set");
  EXPECT_CONTAINS(testing::input_error([&] { train(wrong, d3, c, t.dir.path() + "/m/model.safetensors"); }),
                  "not a layerprune LoRA checkpoint");
}

// A NaN in the frozen base stops healing at its first step, naming the step, the micro-batch, its training
// sequences and the first layer whose output is non-finite; no checkpoint of NaN adapters is written.
TEST(Trainer, ANonFiniteLossStopsHealingNamingTheLayer) {
  Tiny t;
  LlamaWeights w = t.model->weights();
  w.layers[1].w_up = w.layers[1].w_up.clone();
  w.layers[1].w_up[5][0] = std::numeric_limits<float>::quiet_NaN();
  LlamaModel bad = t.model->with_weights(w);
  LoraLlama lora(bad, {}, lora_config());
  PackedStream d(t.text, 1, kSeqLen, 3);
  TrainConfig c = t.config(t.dir.path() + "/nan");
  const std::string m = testing::input_error([&] { train(lora, d, c); });
  EXPECT_CONTAINS(m, "heal: step 1, micro-batch 1 (training sequences 0-1): non-finite training loss");
  EXPECT_CONTAINS(m, "layer 1's output (model.layers.1)");
  EXPECT_FALSE(std::filesystem::exists(t.dir.path() + "/nan/step-000001.safetensors"));
}

// A damaged checkpoint is refused before anything is copied, naming the file and what is wrong: every
// tensor's dtype, full shape and finiteness, the step and data position, the adapter set, the generator state.
TEST(Trainer, ADamagedCheckpointIsRefusedNamingWhatIsWrong) {
  Tiny t;
  TrainConfig c = t.config(t.dir.path() + "/d");
  c.checkpoint_every = 3;
  {
    LoraLlama first(*t.model, {}, lora_config());
    PackedStream d1(t.text, 1, kSeqLen, 3);
    train(first, d1, c);
  }
  const std::string good = t.dir.path() + "/d/step-000003.safetensors";
  // `good` rewritten: each tensor through `tensor`, the metadata through `meta`.
  auto rewrite = [&](const std::string& name, const std::function<at::Tensor(const std::string&, at::Tensor)>& tensor,
                     const std::function<void(std::map<std::string, std::string>&)>& meta = {}) {
    auto f = SafetensorsFile::open(good);
    std::map<std::string, std::string> m = f->metadata();
    std::vector<at::Tensor> keep;
    std::vector<TensorToWrite> out;
    for (const TensorView& v : f->tensors()) {
      keep.push_back(tensor(v.name, tensor_from_view(v, f).clone()));
      out.push_back(tensor_to_write(v.name, keep.back()));
    }
    if (meta) meta(m);
    const std::string path = t.dir.path() + "/" + name + ".safetensors";
    write_safetensors(path, out, m);
    return path;
  };
  auto same = [](const std::string&, at::Tensor x) { return x; };
  auto resume = [&](const std::string& path) {
    LoraLlama lora(*t.model, {}, lora_config());
    PackedStream d(t.text, 1, kSeqLen, 3);
    TrainConfig rc = c;
    rc.checkpoint_dir.clear();
    return testing::input_error([&] { train(lora, d, rc, path); });
  };
  const std::string adapter = "model.layers.0.mlp.up_proj";
  const std::string nan = rewrite("nan", [&](const std::string& n, at::Tensor x) {
    if (n == adapter + ".lora_B.exp_avg_sq") x.view(-1)[3] = std::numeric_limits<float>::quiet_NaN();
    return x;
  });
  EXPECT_CONTAINS(resume(nan), "tensor " + adapter + ".lora_B.exp_avg_sq holds 1 NaN and 0 Inf values (first at flat index 3)");
  EXPECT_CONTAINS(resume(rewrite("f16", [&](const std::string& n, at::Tensor x) {
                    return n == adapter + ".lora_A.weight" ? x.to(at::kHalf) : x;
                  })),
                  "tensor " + adapter + ".lora_A.weight is F16, expected F32");
  EXPECT_CONTAINS(resume(rewrite("shape", [&](const std::string& n, at::Tensor x) {
                    return n == adapter + ".lora_A.exp_avg" ? x.narrow(1, 0, 2).contiguous() : x;
                  })),
                  "tensor " + adapter + ".lora_A.exp_avg has shape [4, 2], expected [4, ");
  EXPECT_CONTAINS(resume(rewrite("step", same, [](auto& m) { m["step"] = "3x"; })),
                  "checkpoint metadata \"step\" is \"3x\", expected an integer >= 0");
  EXPECT_CONTAINS(resume(rewrite("position", same, [](auto& m) { m["data_position"] = "-1"; })),
                  "\"data_position\" is \"-1\"");
  EXPECT_CONTAINS(resume(rewrite("big", same, [](auto& m) { m["step"] = "99999999999999999999"; })),
                  "expected an integer >= 0");
  EXPECT_CONTAINS(resume(rewrite("lora", same, [](auto& m) { m["lora"] = "{\"rank\": "; })), "metadata \"lora\"");
  EXPECT_CONTAINS(resume(rewrite("array", same, [](auto& m) { m["lora"] = "[1, 2]"; })), "is not a JSON object");
  EXPECT_CONTAINS(resume(rewrite("layers", same, [](auto& m) {
                    auto j = nlohmann::json::parse(m["lora"]);
                    j["kept_layers"] = {0, 1};
                    m["lora"] = j.dump();
                  })),
                  "another adapter set (its kept_layers is [0,1]");
  EXPECT_CONTAINS(resume(rewrite("rng", [](const std::string& n, at::Tensor x) {
                    return n == "rng_state" ? x.narrow(0, 0, 7).contiguous() : x;
                  })),
                  "tensor rng_state is not a cpu generator's state ([7] bytes)");
  // Cut short: the safetensors reader says so.
  const std::string cut = t.dir.path() + "/cut.safetensors";
  std::filesystem::copy_file(good, cut);
  std::filesystem::resize_file(cut, std::filesystem::file_size(good) - 100);
  EXPECT_CONTAINS(resume(cut), "cut.safetensors");
  LoraLlama lora(*t.model, {}, lora_config());  // the undamaged file resumes
  PackedStream d(t.text, 1, kSeqLen, 3);
  TrainConfig rc = c;
  rc.checkpoint_dir.clear();
  EXPECT_EQ(train(lora, d, rc, good).steps.front().step, 4);
}

// Checkpoints are device-independent: host tensors, and the kind of device the dropout generator was. A
// GPU run's checkpoint (rng_device "cuda", a CUDA generator's 16-byte state; made here by rewriting a CPU
// checkpoint's metadata, as no GPU is needed to write that file) resumes on the CPU: the adapters and
// moments are the file's, the generator is reseeded from seed and step, the run finishes, and two such
// resumes agree bit for bit. A CPU checkpoint records rng_device "cpu".
TEST(Trainer, AGpuCheckpointResumesOnTheCpu) {
  Tiny t;
  TrainConfig c = t.config(t.dir.path() + "/g");
  c.checkpoint_every = 3;
  LoraLlama first(*t.model, {0, 2}, lora_config());
  PackedStream d1(t.text, 1, kSeqLen, 3);
  train(first, d1, c);
  const std::string cpu_file = t.dir.path() + "/g/step-000003.safetensors";
  std::vector<at::Tensor> keep;
  std::vector<TensorToWrite> tensors;
  std::map<std::string, std::string> meta;
  {
    auto f = SafetensorsFile::open(cpu_file);
    meta = f->metadata();
    EXPECT_EQ(meta.at("rng_device"), "cpu");
    for (const TensorView& v : f->tensors()) {
      keep.push_back(v.name == "rng_state" ? at::arange(16, at::kByte) : tensor_from_view(v, f).clone());
      tensors.push_back(tensor_to_write(v.name, keep.back()));
    }
  }
  meta["rng_device"] = "cuda";
  const std::string gpu_file = t.dir.path() + "/gpu-step-3.safetensors";
  write_safetensors(gpu_file, tensors, meta);
  std::vector<std::vector<double>> losses;
  for (int k = 0; k < 2; ++k) {
    LoraLlama resumed(*t.model, {0, 2}, lora_config());
    PackedStream d(t.text, 1, kSeqLen, 3);
    TrainConfig rc = c;
    rc.checkpoint_dir = t.dir.path() + "/r" + std::to_string(k);
    TrainResult r = train(resumed, d, rc, gpu_file);
    ASSERT_EQ(r.steps.size(), 5u);
    EXPECT_EQ(r.steps.front().step, 4);
    losses.emplace_back();
    for (const TrainStep& st : r.steps) {
      EXPECT_TRUE(std::isfinite(st.loss));
      losses.back().push_back(st.loss);
    }
  }
  EXPECT_EQ(losses[0], losses[1]) << "a reseeded resume is deterministic";
  // The resumed adapters started from the file's (step 3) values: one resumed step on the CPU from them
  // equals the CPU run's step 4 but for the dropout masks, so compare the restored state directly.
  LoraLlama check(*t.model, {0, 2}, lora_config());
  PackedStream d(t.text, 1, kSeqLen, 3);
  TrainConfig one = c;
  one.checkpoint_dir.clear();
  one.steps = 3;  // resume at step 3 of 3: nothing to run, the state is the file's
  train(check, d, one, gpu_file);
  auto f = SafetensorsFile::open(cpu_file);
  for (const LoraAdapter& a : check.adapters())
    EXPECT_TRUE(at::equal(a.a, tensor_from_view(*f->find(a.name + ".lora_A.weight"), f))) << a.name;
}

}  // namespace
}  // namespace layerprune
