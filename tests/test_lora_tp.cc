// Tensor-parallel LoRA training (model/lora.h) equals single-process training. One binary, run by ctest
// under mpirun -np 2 (and -np 1, where every check is trivially the single-process path). Every rank
// trains the same model twice: once as its shard of the group, once whole in-process (the reference), and
// compares losses, gradient norms, adapters (gathered), the merged model's logits and checkpoints.
#include <gtest/gtest.h>
#include <mpi.h>

#include <ATen/core/grad_mode.h>
#include <ATen/ATen.h>

#include <filesystem>
#include <memory>

#include "common/error.h"
#include "common/progress.h"
#include "tests/llama_shapes.h"
#include "tests/mpi_test_main.h"
#include "tests/test_support.h"
#include "model/llama.h"
#include "model/lora.h"
#include "model/make_model.h"
#include "model/tensor_parallel.h"
#include "worker/mpi_comm.h"
#include "healing/trainer.h"

namespace layerprune {
namespace {

using testing::TempDir;

std::shared_ptr<MpiCommunicator> world() {
  static auto comm = std::make_shared<MpiCommunicator>(MPI_COMM_WORLD, /*timeout_seconds=*/120, "test");
  return comm;
}

// Float32 throughout; the group sums partial products in another order than one process does, so values
// agree to rounding: relative 1e-5 on losses after several AdamW steps (measured about 1e-7).
constexpr double kTol = 1e-5;
// The adapters after six AdamW steps: Adam divides each update by its gradient's running RMS, so the float32
// rounding differences of sharded products (MKL picks its kernels by shape) grow in entries whose gradients
// are near zero; measured up to 1.7e-5 at tp 4 with PyPI's LibTorch 2.11 (MKL) on an AMD EPYC.
constexpr double kAdapterTol = 5e-5;

double rel(double a, double b) { return std::abs(a - b) / (std::abs(b) + 1e-12); }
double max_rel(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).abs() / (b.abs().max() + 1e-12)).max().item<double>();
}

// The same random model in one directory (written by rank 0) for every rank: GQA, an FFN whose halves
// are unequal at tp 3, and a vocabulary that splits unevenly.
struct Shared {
  std::unique_ptr<TempDir> dir;
  std::string path;
  explicit Shared(const LlamaConfig& shape = testing::llama_shape(32, 50, 3, 4, 2, 67, 32)) {
    std::string p;
    if (world()->rank() == 0) {
      dir = std::make_unique<TempDir>();
      p = dir->path();
      MakeModelOptions mo;
      mo.init_std = 0.2;
      make_random_model(shape, p + "/m", mo);
    }
    world()->broadcast_string(p, 0);
    path = p;
  }
  ~Shared() { world()->barrier(); }  // rank 0 removes the directory after everyone is done
};

std::vector<int32_t> text() {
  std::vector<int32_t> t;
  for (int i = 0; i < 3000; ++i) t.push_back(int32_t((i * 7 + i / 13) % 64 + 2));
  return t;
}

LoraConfig lora(const std::string& quant = "none") {
  LoraConfig l;
  l.rank = 4;
  l.seed = 5;
  l.dropout = 0.1;  // masks drawn at the full shape and sliced: the group must draw what one process draws
  // Every projection; at tp 4 the 2 KV heads are replicated and their adapters refused (tested below).
  l.targets = world()->size() <= 2 ? std::vector<std::string>{"all-linear"}
                                   : std::vector<std::string>{"q_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  l.base_quant = quant;
  return l;
}

TrainConfig train_config(const std::string& dir, int64_t steps) {
  TrainConfig c;
  c.steps = steps;
  c.global_batch = 4;
  c.micro_batch = 2;
  c.lr = 5e-3;
  c.warmup = 2;
  c.log_every = 0;
  c.checkpoint_dir = dir;
  return c;
}

LlamaModel load(const std::string& dir, bool group) {
  LoadOptions o;
  if (group) o.comm = world();
  return LlamaModel::load(dir, o);
}

TEST(LoraTp, TrainingEqualsOneProcess) {
  Shared s;
  LlamaModel whole = load(s.path + "/m", false), shard = load(s.path + "/m", true);
  const std::vector<int64_t> kept = {0, 2};
  LoraLlama ref(whole, kept, lora()), tp(shard, kept, lora());
  PackedStream d1(text(), 1, 16, 3), d2(text(), 1, 16, 3), held(text(), 1, 16, 99);
  at::Tensor fixed = held.next(8);
  const double before = ref.loss(fixed, false).item<double>();
  TrainResult r1 = train(ref, d1, train_config("", 6)), r2 = train(tp, d2, train_config("", 6));
  ASSERT_EQ(r1.steps.size(), r2.steps.size());
  for (size_t i = 0; i < r1.steps.size(); ++i) {
    EXPECT_LT(rel(r2.steps[i].loss, r1.steps[i].loss), kTol) << "step " << i + 1;
    EXPECT_LT(rel(r2.steps[i].grad_norm, r1.steps[i].grad_norm), kTol) << "step " << i + 1;
  }
  EXPECT_LT(ref.loss(fixed, false).item<double>(), before) << "the run trains";
  for (size_t i = 0; i < ref.adapters().size(); ++i) {
    const LoraAdapter& a = tp.adapters()[i];
    if (world()->size() > 1 && (a.proj == 3 || a.proj == 6)) {
      EXPECT_LT(a.a.size(1), a.full_cols) << a.name << ": A sharded";
    }
    if (world()->size() > 1 && (a.proj == 4 || a.proj == 5)) {
      EXPECT_LT(a.b.size(0), a.full_rows) << a.name << ": B sharded";
    }
    EXPECT_LT(max_rel(tp.gather_full(i, false, a.a), ref.adapters()[i].a), kAdapterTol) << a.name << " A";
    EXPECT_LT(max_rel(tp.gather_full(i, true, a.b), ref.adapters()[i].b), kAdapterTol) << a.name << " B";
  }
  // The merged (healed) model: this rank's shards, run by the inference model with the group.
  at::Tensor tokens = d1.next(2);
  ForwardOptions fo;
  fo.layers = kept;
  at::NoGradGuard no_grad;
  at::Tensor want = ref.merged_model().forward(tokens, fo).logits;
  EXPECT_LT(max_rel(tp.merged_model().forward(tokens, fo).logits, want), kTol);
  EXPECT_LT(max_rel(tp.forward(tokens, false), want), 1e-4) << "adapted forward = merged model";
}

// Qwen2's q/k/v biases under tensor parallelism: each rank holds the bias elements of its weight rows (its
// query heads, its own or replicated KV heads); the group's inference forward equals one process, and LoRA
// training over the biased projections (the biases frozen) equals one process too, merged model included.
// Llama's attention_bias adds o_proj's bias, replicated and added once after the all-reduce.
TEST(LoraTp, AttentionBiasesSplitWithTheirRows) {
  LlamaConfig qwen2 = testing::llama_shape(32, 50, 3, 4, 2, 67, 32);
  qwen2.model_type = "qwen2";
  qwen2.architecture = "Qwen2ForCausalLM";
  LlamaConfig llama = testing::llama_shape(32, 50, 3, 4, 2, 67, 32);
  llama.attention_bias = true;
  for (const LlamaConfig& config : {qwen2, llama}) {
    Shared s(config);
    LlamaModel whole = load(s.path + "/m", false), shard = load(s.path + "/m", true);
    const int64_t hd = config.head_dim();
    const TensorParallelPlan p = plan_tensor_parallel(config, world()->size(), world()->rank());
    for (size_t l = 0; l < 3; ++l) {
      const LlamaLayerWeights &w = whole.weights().layers[l], &r = shard.weights().layers[l];
      ASSERT_TRUE(w.bq.defined() && r.bq.defined());
      EXPECT_TRUE(at::equal(r.bq, w.bq.narrow(0, p.head_begin * hd, p.heads * hd))) << "layer " << l;
      EXPECT_TRUE(at::equal(r.bk, w.bk.narrow(0, p.kv_head_begin * hd, p.kv_heads * hd))) << "layer " << l;
      EXPECT_TRUE(at::equal(r.bv, w.bv.narrow(0, p.kv_head_begin * hd, p.kv_heads * hd))) << "layer " << l;
      EXPECT_EQ(r.bo.defined(), config.o_bias());
      if (config.o_bias()) {
        EXPECT_TRUE(at::equal(r.bo, w.bo)) << "o_proj's bias is replicated";
      }
    }
    PackedStream d1(text(), 1, 16, 3), d2(text(), 1, 16, 3);
    at::Tensor tokens = PackedStream(text(), 1, 16, 7).next(2);
    {
      at::NoGradGuard no_grad;
      EXPECT_LT(max_rel(shard.forward(tokens).logits, whole.forward(tokens).logits), kTol);
    }
    LoraLlama ref(whole, {}, lora()), tp(shard, {}, lora());
    TrainResult r1 = train(ref, d1, train_config("", 4)), r2 = train(tp, d2, train_config("", 4));
    ASSERT_EQ(r1.steps.size(), r2.steps.size());
    for (size_t i = 0; i < r1.steps.size(); ++i) EXPECT_LT(rel(r2.steps[i].loss, r1.steps[i].loss), kTol) << "step " << i + 1;
    at::NoGradGuard no_grad;
    at::Tensor want = ref.merged_model().forward(tokens).logits;
    EXPECT_LT(max_rel(tp.merged_model().forward(tokens).logits, want), kTol);
    EXPECT_LT(max_rel(tp.forward(tokens, false), want), 1e-4) << "adapted forward = merged model";
  }
}

TEST(LoraTp, CheckpointsHoldFullTensorsAndResumeAtAnotherTpSize) {
  Shared s;
  std::string ckpt = s.path + "/ckpt";
  LlamaModel whole = load(s.path + "/m", false), shard = load(s.path + "/m", true);
  // The group trains 3 steps and checkpoints; one process resumes it to step 6 and must match its own
  // uninterrupted 6 steps, and the reverse.
  LoraLlama tp(shard, {}, lora());
  PackedStream d(text(), 1, 16, 3);
  TrainResult first = train(tp, d, train_config(ckpt, 3));
  world()->barrier();  // rank 0 wrote it
  ASSERT_TRUE(std::filesystem::exists(first.last_checkpoint)) << first.last_checkpoint;

  LoraLlama uninterrupted(whole, {}, lora());
  PackedStream d0(text(), 1, 16, 3);
  TrainResult all = train(uninterrupted, d0, train_config("", 6));
  LoraLlama resumed(whole, {}, lora());
  PackedStream d1(text(), 1, 16, 3);
  TrainResult rest = train(resumed, d1, train_config("", 6), first.last_checkpoint);
  ASSERT_EQ(rest.steps.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_LT(rel(rest.steps[i].loss, all.steps[i + 3].loss), kTol) << "step " << i + 4;

  // One process checkpoints (rank 0's file), the group resumes.
  std::string ckpt2 = s.path + "/ckpt2";
  if (world()->rank() == 0) {
    LoraLlama solo(whole, {}, lora());
    PackedStream d2(text(), 1, 16, 3);
    train(solo, d2, train_config(ckpt2, 3));
  }
  world()->barrier();
  LoraLlama group(shard, {}, lora());
  PackedStream d3(text(), 1, 16, 3);
  TrainResult rest2 = train(group, d3, train_config("", 6), ckpt2 + "/step-000003.safetensors");
  ASSERT_EQ(rest2.steps.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_LT(rel(rest2.steps[i].loss, all.steps[i + 3].loss), kTol) << "step " << i + 4;
}

TEST(LoraTp, QloraShardsTrainLikeOneProcess) {
  // Each rank quantises its own shards; with shard widths that are multiples of the 64-weight block the
  // NF4 codes are those of the whole weight, only the absmax double quantisation groups differ (256 per
  // group, over another set of blocks): losses differ by up to 9e-4 relative (measured at tp 2 and 4).
  Shared s(testing::llama_shape(256, 256, 2, 4, 2, 67, 32));  // shards >= 64 wide up to tp 4
  LlamaModel whole = load(s.path + "/m", false), shard = load(s.path + "/m", true);
  LoraLlama ref(whole, {}, lora("nf4")), tp(shard, {}, lora("nf4"));
  PackedStream d1(text(), 1, 16, 3), d2(text(), 1, 16, 3);
  TrainResult r1 = train(ref, d1, train_config("", 4)), r2 = train(tp, d2, train_config("", 4));
  for (size_t i = 0; i < r1.steps.size(); ++i) EXPECT_LT(rel(r2.steps[i].loss, r1.steps[i].loss), 3e-3) << "step " << i + 1;
  EXPECT_LT(tp.base_projection_bytes(), shard.weights().layers[0].wq.nbytes() * 7 * 3 / 4)
      << "each rank holds 4-bit shards";
}

TEST(LoraTp, ReplicatedKvHeadsRefuseKvAdapters) {
  if (world()->size() < 4) GTEST_SKIP() << "needs tp > KV heads (2): run with -np 4";
  Shared s;
  LlamaModel shard = load(s.path + "/m", true);
  LoraConfig all = lora();
  all.targets = {"all-linear"};
  try {
    LoraLlama bad(shard, {}, all);
    FAIL() << "expected an InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("replicated"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(LoraLlama ok(shard, {}, lora()));
}

}  // namespace
}  // namespace layerprune

int main(int argc, char** argv) {
  layerprune::Progress::set_quiet(true);
  return layerprune::testing::run_mpi_tests(argc, argv);
}
