// The GPU against the CPU on a real GPU (deploy/gpu_check.sh runs it; every test skips, saying so, where no
// CUDA GPU is visible). tests/test_device.cc checks the same device code paths on the CPU.
//   - logits of two trained models, stories260K (llama2.c) and SmolLM2-135M (GGUF), on the GPU against the
//     CPU in float32 (within 1e-4 absolute) and bfloat16 (bfloat16 on the GPU against float32 on the CPU:
//     the largest logit difference within 0.15 of the largest logit's magnitude), on a
//     right-padded batch of real text (real positions compared);
//   - the KV cache on the GPU (two chunks = one forward) and ForwardOptions::logit_positions;
//   - a QLoRA step: a random model's NF4 base on the GPU and on the CPU, the same adapters trained a few
//     steps (dropout 0: the GPU draws its masks from its own generator), losses and adapters compared; the
//     GPU run's checkpoint resumed on the CPU equals the CPU's uninterrupted run.
// Each test adds one line to the GPU check's report ($LAYERPRUNE_GPU_REPORT): PASS/FAIL/SKIP with what it
// measured.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "formats/tokenizer.h"
#include "healing/trainer.h"
#include "model/device.h"
#include "model/llama.h"
#include "model/lora.h"
#include "model/make_model.h"
#include "tests/gpu_check_support.h"
#include "tests/llama_shapes.h"
#include "tests/test_support.h"

namespace layerprune {
namespace {

// ---- the report --------------------------------------------------------------------------------------------

std::string& notes() {
  static std::string s;
  return s;
}

// Appends to the current test's report line (printf-style).
void note(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void note(const char* fmt, ...) {
  char buf[512];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, args);
  va_end(args);
  if (!notes().empty()) notes() += "; ";
  notes() += buf;
}

class ReportListener : public ::testing::EmptyTestEventListener {
  void OnTestStart(const ::testing::TestInfo&) override { notes().clear(); }
  void OnTestEnd(const ::testing::TestInfo& info) override {
    const ::testing::TestResult& r = *info.result();
    std::string status = r.Skipped() ? "SKIP" : r.Failed() ? "FAIL" : "PASS", text = notes();
    if (r.Skipped())
      for (int i = 0; i < r.total_part_count(); ++i)
        if (r.GetTestPartResult(i).skipped()) text = r.GetTestPartResult(i).message();
    gpu_check::report_line(status + "  " + info.test_suite_name() + "." + info.name() + (text.empty() ? "" : ": " + text));
  }
};

// ---- helpers -----------------------------------------------------------------------------------------------

bool gpu_visible() { return cuda_device_count() > 0; }

#define LP_REQUIRE_GPU() \
  if (!gpu_visible()) GTEST_SKIP() << "no CUDA GPU visible (cuda_device_count() = 0)"

#define LP_REQUIRE_MODEL(var, dir_fn, what)                                                               \
  const std::string var = dir_fn();                                                                       \
  if (var.empty())                                                                                        \
    GTEST_SKIP() << what << " not found under " << gpu_check::data_dir() << " (set LAYERPRUNE_DATA)"

// float32 on the GPU: the CPU's numbers up to summation order (cuBLAS without TF32, LibTorch's default).
constexpr double kFloat32Tolerance = 1e-4;
// (The CPU's two attention paths, blocked and at::scaled_dot_product_attention, differ by 4.5e-5 on SmolLM2's
// logits, 1.5e-5 on stories260K's: float32 summation order through 30 layers.)
// bfloat16 on the GPU against float32 on the CPU: bfloat16 keeps 8 significant bits (a relative rounding of
// 2^-9 per weight and activation), and through the layers that adds up. The statistic is the largest
// |logit difference| over all compared logits / the largest |logit| of the CPU's float32. Measured with the
// CPU's own bfloat16 forward pass on these batches: 1.4e-2 (stories260K, 5 layers), 5.0e-2 (SmolLM2, 30
// layers; 2.5e-2 as ||dlogits|| / ||logits||, top-1 agreement 97.6%). The bound is 3x the larger; a wrong cast
// or a lost scale moves logits by their whole scale (about 1). It cannot see small configuration errors
// (rope_theta x 1.1 moves SmolLM2's top logits by 4e-3 of their scale): float32's 1e-4 does.
constexpr double kBf16Tolerance = 0.15;

LlamaModel load(const std::string& dir, const std::string& device, const std::string& dtype) {
  LoadOptions o;
  o.device = parse_device(device);
  o.dtype = dtype;
  return LlamaModel::load(dir, o);
}

const char* const kText =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her "
    "friends. One day, she saw a big red ball under a tree. She ran to get it, but a small dog got there "
    "first. The dog wagged its tail and looked at Lily. Lily smiled and said, \"Do you want to play with me?\" "
    "The dog barked happily, and they played with the ball all afternoon until the sun went down. ";

struct Batch {
  at::Tensor tokens;             // [B, T] int64, right-padded
  std::vector<int64_t> lengths;  // real tokens per row
};

// Rows of real text, the last one shorter and right-padded (the padding positions are never compared).
Batch text_batch(const std::string& dir, int64_t T) {
  const Tokenizer tok = Tokenizer::load_dir(dir);
  std::string text;
  std::vector<int32_t> ids;
  while (int64_t(ids.size()) < T + 40) {
    text += kText;
    ids = tok.encode(text, tok.add_bos_default());
  }
  Batch b;
  b.lengths = {T, T, T * 5 / 8};
  b.tokens = at::zeros({int64_t(b.lengths.size()), T}, at::kLong);
  for (size_t r = 0; r < b.lengths.size(); ++r)
    for (int64_t t = 0; t < b.lengths[r]; ++t) b.tokens[int64_t(r)][t] = int64_t(ids[size_t(t) + 17 * r]);
  return b;
}

struct Diff {
  double max_abs = 0, scale = 0;     // largest |got - want|, largest |want|
  double sq_diff = 0, sq_want = 0;   // sums of squares of got - want and of want
  double relative() const { return scale > 0 ? max_abs / scale : 0; }
  double rms_relative() const { return sq_want > 0 ? std::sqrt(sq_diff / sq_want) : 0; }  // ||got - want|| / ||want||
  void add(const at::Tensor& g, const at::Tensor& w) {
    max_abs = std::max(max_abs, (g - w).abs().max().item<double>());
    scale = std::max(scale, w.abs().max().item<double>());
    sq_diff += (g - w).pow(2).sum().item<double>();
    sq_want += w.pow(2).sum().item<double>();
  }
};

// Over the real positions of each row of [B, T, V] logits.
Diff logit_diff(const at::Tensor& got, const at::Tensor& want, const std::vector<int64_t>& lengths) {
  Diff d;
  for (size_t r = 0; r < lengths.size(); ++r) {
    at::Tensor g = got[int64_t(r)].narrow(0, 0, lengths[r]).to(at::kCPU, at::kDouble);
    at::Tensor w = want[int64_t(r)].narrow(0, 0, lengths[r]).to(at::kCPU, at::kDouble);
    d.add(g, w);
  }
  return d;
}

Diff tensor_diff(const at::Tensor& got, const at::Tensor& want) {
  Diff d;
  d.add(got.to(at::kCPU, at::kDouble), want.to(at::kCPU, at::kDouble));
  return d;
}

// Share of real positions whose top token agrees.
double argmax_agreement(const at::Tensor& got, const at::Tensor& want, const std::vector<int64_t>& lengths) {
  int64_t same = 0, total = 0;
  for (size_t r = 0; r < lengths.size(); ++r) {
    at::Tensor g = got[int64_t(r)].narrow(0, 0, lengths[r]).argmax(-1).cpu();
    at::Tensor w = want[int64_t(r)].narrow(0, 0, lengths[r]).argmax(-1).cpu();
    same += g.eq(w).sum().item<int64_t>();
    total += lengths[r];
  }
  return total ? double(same) / double(total) : 0;
}

// ---- logits: GPU against CPU -------------------------------------------------------------------------------

void check_logits(const std::string& dir, const std::string& dtype) {
  const Batch b = text_batch(dir, 64);
  const LlamaModel cpu = load(dir, "cpu", "float32");
  const LlamaModel gpu = load(dir, "cuda", dtype);
  ASSERT_TRUE(gpu.device().is_cuda());
  const at::Tensor want = cpu.forward(b.tokens).logits;
  const at::Tensor got = gpu.forward(b.tokens).logits;
  ASSERT_TRUE(got.is_cuda());
  ASSERT_EQ(got.sizes(), want.sizes());
  const Diff d = logit_diff(got, want, b.lengths);
  const double agree = argmax_agreement(got, want, b.lengths);
  if (dtype == "float32") {
    note("float32 on %s vs float32 on the CPU: max|dlogit| = %.2e (bound %.0e; max|logit| %.1f; top-1 agreement %.1f%%)",
         describe_device(gpu.device()).c_str(), d.max_abs, kFloat32Tolerance, d.scale, 100 * agree);
    EXPECT_LT(d.max_abs, kFloat32Tolerance);
  } else {
    note("bfloat16 on the GPU vs float32 on the CPU: max|dlogit| / max|logit| = %.2e (bound %.2g; max|dlogit| %.3f, "
         "max|logit| %.1f; ||dlogits|| / ||logits|| %.2e; top-1 agreement %.1f%%)",
         d.relative(), kBf16Tolerance, d.max_abs, d.scale, d.rms_relative(), 100 * agree);
    EXPECT_LT(d.relative(), kBf16Tolerance);
  }
}

TEST(GpuLogits, Stories260KFloat32) {
  LP_REQUIRE_GPU();
  LP_REQUIRE_MODEL(dir, gpu_check::stories260k_dir, "stories260K");
  check_logits(dir, "float32");
}

TEST(GpuLogits, Stories260KBfloat16) {
  LP_REQUIRE_GPU();
  LP_REQUIRE_MODEL(dir, gpu_check::stories260k_dir, "stories260K");
  check_logits(dir, "bfloat16");
}

TEST(GpuLogits, SmolLM2Float32) {
  LP_REQUIRE_GPU();
  LP_REQUIRE_MODEL(dir, gpu_check::smollm2_dir, gpu_check::kSmolLM2Gguf);
  check_logits(dir, "float32");
}

TEST(GpuLogits, SmolLM2Bfloat16) {
  LP_REQUIRE_GPU();
  LP_REQUIRE_MODEL(dir, gpu_check::smollm2_dir, gpu_check::kSmolLM2Gguf);
  check_logits(dir, "bfloat16");
}

// ---- the KV cache and logit_positions on the GPU -----------------------------------------------------------

std::string model_name(const std::string& dir) { return std::filesystem::path(dir).filename().string(); }

// SmolLM2 when its data is there (30 layers, GQA), else stories260K.
std::string cache_model_dir() {
  const std::string smol = gpu_check::smollm2_dir();
  return smol.empty() ? gpu_check::stories260k_dir() : smol;
}

TEST(GpuForward, KVCacheInTwoChunksEqualsOneForward) {
  LP_REQUIRE_GPU();
  LP_REQUIRE_MODEL(dir, cache_model_dir, "stories260K and SmolLM2");
  const int64_t T = 64, first = 23;
  at::Tensor tokens = text_batch(dir, T).tokens.narrow(0, 0, 2);  // full rows (a cache continues every row alike)
  const LlamaModel gpu = load(dir, "cuda", "float32"), cpu = load(dir, "cpu", "float32");
  const at::Tensor whole = gpu.forward(tokens).logits;
  KVCache cache;
  const at::Tensor a = gpu.forward(tokens.narrow(1, 0, first), {}, &cache).logits;
  ASSERT_EQ(cache.length, first);
  ASSERT_TRUE(cache.k.at(0).is_cuda());
  const at::Tensor b = gpu.forward(tokens.narrow(1, first, T - first), {}, &cache).logits;
  ASSERT_EQ(cache.length, T);
  const at::Tensor chunked = at::cat({a, b}, 1);
  const Diff d = tensor_diff(chunked, whole), dc = tensor_diff(chunked, cpu.forward(tokens).logits);
  note("%s float32, %lld + %lld tokens: max|dlogit| chunked vs one forward %.2e, vs the CPU %.2e (bound %.0e)",
       model_name(dir).c_str(), (long long)first, (long long)(T - first), d.max_abs, dc.max_abs,
       kFloat32Tolerance);
  EXPECT_LT(d.max_abs, kFloat32Tolerance);
  EXPECT_LT(dc.max_abs, kFloat32Tolerance);
}

TEST(GpuForward, LogitPositionsEqualTheFullLogits) {
  LP_REQUIRE_GPU();
  LP_REQUIRE_MODEL(dir, cache_model_dir, "stories260K and SmolLM2");
  const int64_t T = 64;
  const Batch batch = text_batch(dir, T);
  // Any order, repeats allowed: flat indices b*T + t.
  const std::vector<int64_t> flat = {T - 1, 0, 2 * T + batch.lengths[2] - 1, T - 1, T + 17, 2 * T + 3};
  ForwardOptions o;
  o.logit_positions = at::tensor(flat, at::kLong);
  for (const char* dtype : {"float32", "bfloat16"}) {
    const LlamaModel gpu = load(dir, "cuda", dtype);
    const at::Tensor full = gpu.forward(batch.tokens).logits;
    const at::Tensor chosen = gpu.forward(batch.tokens, o).logits;
    ASSERT_EQ(chosen.dim(), 2);
    ASSERT_EQ(chosen.size(0), int64_t(flat.size()));
    const at::Tensor want = full.reshape({-1, full.size(-1)}).index_select(0, o.logit_positions.to(full.device()));
    const Diff d = tensor_diff(chosen, want);
    if (std::string(dtype) == "float32") {
      const LlamaModel cpu = load(dir, "cpu", "float32");
      const Diff dc = tensor_diff(chosen, cpu.forward(batch.tokens, o).logits);
      note("%s float32: max|dlogit| vs the full logits %.2e, vs the CPU %.2e (bound %.0e)", model_name(dir).c_str(),
           d.max_abs, dc.max_abs, kFloat32Tolerance);
      EXPECT_LT(d.max_abs, kFloat32Tolerance);
      EXPECT_LT(dc.max_abs, kFloat32Tolerance);
    } else {
      note("bfloat16: max|dlogit| / max|logit| vs the full logits %.2e (bound %.2g)", d.relative(), kBf16Tolerance);
      EXPECT_LT(d.relative(), kBf16Tolerance);
    }
  }
}

// ---- QLoRA: GPU against CPU, and a GPU checkpoint resumed on the CPU ----------------------------------------

constexpr int64_t kSteps = 5, kStopAt = 3;
// Losses: float32 on both sides, summation order apart. Adapters: AdamW's first steps move every element
// by about lr x g / (|g| + eps), so an element whose gradient is near eps (1e-8) moves by what float32
// noise makes of it: single elements can differ by a good share of their change (measured with the GPU's
// arithmetic on the CPU, LoraConfig::device_kernels: 1.4e-2 of the largest change). The bound is therefore
// on the norm: ||adapters_gpu - adapters_cpu|| / ||adapters_cpu - initial|| over all adapter tensors
// (measured that way: 1.3e-4; losses 8.6e-8 relative); the largest single element is reported.
constexpr double kLossTolerance = 1e-4;     // relative
constexpr double kAdapterTolerance = 1e-2;  // relative, in norm

struct QloraRun {
  std::vector<double> losses;                  // per step run
  std::vector<int64_t> steps;                  // their 1-based numbers
  std::vector<at::Tensor> at_stop, at_end;     // parameters (host copies) after step kStopAt and at the end
  std::string checkpoint;
};

std::vector<at::Tensor> host_copies(const std::vector<at::Tensor>& params) {
  std::vector<at::Tensor> out;
  for (const at::Tensor& p : params) out.push_back(p.detach().to(at::kCPU).clone());
  return out;
}

struct Qlora {
  testing::TempDir dir;
  std::vector<at::Tensor> initial;  // the adapters before training (host)
  QloraRun cpu, gpu, resumed;
};

LoraConfig qlora_config(bool device_kernels = false) {
  LoraConfig c;
  c.device_kernels = device_kernels;  // (the GPU takes the device path anyway)
  c.rank = 8;
  c.dropout = 0;  // the GPU draws dropout masks from its own generator: only dropout 0 is comparable
  c.base_quant = "nf4";
  c.targets = {"all-linear"};
  c.seed = 11;
  return c;
}

TrainConfig qlora_train_config(const std::string& checkpoint_dir) {
  TrainConfig t;
  t.steps = kSteps;
  t.global_batch = 4;
  t.micro_batch = 2;
  t.lr = 2e-3;
  t.warmup = 2;
  t.log_every = 0;
  t.checkpoint_dir = checkpoint_dir;
  return t;
}

PackedStream qlora_data(int64_t vocab) {
  std::vector<int32_t> tokens(6000);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = int32_t((i * 7 + i / 13) % size_t(vocab - 2)) + 2;
  return PackedStream(tokens, /*bos=*/1, /*seq_len=*/48, /*seed=*/5);
}

QloraRun train_run(const LlamaModel& base, const std::string& checkpoint_dir, const std::string& resume, bool stop_early,
                   bool device_kernels = false) {
  LoraLlama m(base, {}, qlora_config(device_kernels));
  PackedStream data = qlora_data(base.config().vocab_size);
  std::atomic<bool> stop{false};
  TrainConfig tc = qlora_train_config(checkpoint_dir);
  tc.stop = &stop;
  QloraRun r;
  TrainResult res = train(m, data, tc, resume, [&](const TrainStep& s) {
    r.losses.push_back(s.loss);
    r.steps.push_back(s.step);
    if (s.step == kStopAt) {
      r.at_stop = host_copies(m.parameters());
      if (stop_early) stop = true;
    }
  });
  r.at_end = host_copies(m.parameters());
  r.checkpoint = res.last_checkpoint;
  return r;
}

// The three runs: the CPU's uninterrupted kSteps, the `device` run stopped after kStopAt (checkpointed), and
// the CPU resuming that checkpoint. (`device` cpu with device_kernels: the GPU's arithmetic on the CPU.)
std::unique_ptr<Qlora> qlora_runs(const std::string& device, bool device_kernels) {
  auto q = std::make_unique<Qlora>();
  LlamaConfig c = testing::llama_shape(/*dim=*/128, /*ffn=*/384, /*layers=*/2, /*heads=*/4, /*kv_heads=*/2,
                                       /*vocab=*/256, /*context=*/64);
  MakeModelOptions mo;
  mo.seed = 7;
  make_random_model(c, q->dir.file("model"), mo);
  const LlamaModel cpu = load(q->dir.file("model"), "cpu", "float32");
  const LlamaModel gpu = load(q->dir.file("model"), device, "float32");
  q->initial = host_copies(LoraLlama(cpu, {}, qlora_config()).parameters());
  q->cpu = train_run(cpu, "", "", false);
  q->gpu = train_run(gpu, q->dir.file("gpu-checkpoints"), "", true, device_kernels);
  q->resumed = train_run(cpu, "", q->gpu.checkpoint, false);
  return q;
}

// Once per process: both tests read them.
const Qlora& qlora() {
  static const std::unique_ptr<Qlora> q = qlora_runs("cuda", false);
  return *q;
}

struct AdapterDiff {
  double max_abs = 0, change = 0;  // largest |a - b| over all adapter elements; largest |cpu - initial|
  double sq_diff = 0, sq_change = 0;
  double relative() const { return change > 0 ? max_abs / change : 0; }
  double norm_relative() const { return sq_change > 0 ? std::sqrt(sq_diff / sq_change) : 0; }
};

AdapterDiff adapter_diff(const std::vector<at::Tensor>& got, const std::vector<at::Tensor>& want,
                         const std::vector<at::Tensor>& initial) {
  AdapterDiff d;
  EXPECT_EQ(got.size(), want.size());
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    d.max_abs = std::max(d.max_abs, (got[i] - want[i]).abs().max().item<double>());
    d.change = std::max(d.change, (want[i] - initial[i]).abs().max().item<double>());
    d.sq_diff += (got[i] - want[i]).to(at::kDouble).pow(2).sum().item<double>();
    d.sq_change += (want[i] - initial[i]).to(at::kDouble).pow(2).sum().item<double>();
  }
  return d;
}

double loss_diff(const std::vector<double>& got, const std::vector<double>& want, size_t want_offset) {
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::abs(got[i] - want[i + want_offset]) / std::abs(want[i + want_offset]));
  return worst;
}

TEST(GpuQlora, StepsOnTheGpuEqualTheCpu) {
  LP_REQUIRE_GPU();
  const Qlora& q = qlora();
  ASSERT_EQ(q.gpu.losses.size(), size_t(kStopAt)) << "the GPU run stops after step " << kStopAt;
  ASSERT_EQ(q.cpu.losses.size(), size_t(kSteps));
  ASSERT_FALSE(q.gpu.at_stop.empty());
  const double dl = loss_diff(q.gpu.losses, q.cpu.losses, 0);
  const AdapterDiff da = adapter_diff(q.gpu.at_stop, q.cpu.at_stop, q.initial);
  note("NF4 base, %zu adapters (rank 8, all-linear), %lld steps: max rel |dloss| %.2e (bound %.0e), "
       "||dadapters|| / ||adapter change|| %.2e (bound %.0e), largest element %.2e of the largest change %.2e; "
       "losses GPU %.5f..%.5f, CPU %.5f..%.5f",
       q.initial.size() / 2, (long long)kStopAt, dl, kLossTolerance, da.norm_relative(), kAdapterTolerance,
       da.relative(), da.change, q.gpu.losses.front(), q.gpu.losses.back(), q.cpu.losses.front(),
       q.cpu.losses[kStopAt - 1]);
  EXPECT_LT(dl, kLossTolerance);
  EXPECT_LT(da.norm_relative(), kAdapterTolerance);
  EXPECT_GT(da.change, 0) << "the adapters trained";
}

TEST(GpuQlora, GpuCheckpointResumesOnTheCpu) {
  LP_REQUIRE_GPU();
  const Qlora& q = qlora();
  ASSERT_FALSE(q.gpu.checkpoint.empty()) << "the stopped GPU run wrote a checkpoint";
  ASSERT_EQ(q.resumed.steps, (std::vector<int64_t>{kStopAt + 1, kSteps})) << "resumed after step " << kStopAt;
  const double dl = loss_diff(q.resumed.losses, q.cpu.losses, size_t(kStopAt));
  const AdapterDiff da = adapter_diff(q.resumed.at_end, q.cpu.at_end, q.initial);
  note("GPU checkpoint at step %lld resumed on the CPU to step %lld: max rel |dloss| vs the CPU's uninterrupted run %.2e "
       "(bound %.0e), ||dadapters|| / ||adapter change|| %.2e (bound %.0e)",
       (long long)kStopAt, (long long)kSteps, dl, kLossTolerance, da.norm_relative(), kAdapterTolerance);
  EXPECT_LT(dl, kLossTolerance);
  EXPECT_LT(da.norm_relative(), kAdapterTolerance);
}

}  // namespace
}  // namespace layerprune

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (argc > 1 && std::string(argv[1]) == "--cuda-device-count") {  // for deploy/gpu_check.sh
    std::printf("%d\n", layerprune::cuda_device_count());
    return 0;
  }
  ::testing::UnitTest::GetInstance()->listeners().Append(new layerprune::ReportListener);
  return RUN_ALL_TESTS();
}
