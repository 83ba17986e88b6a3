// The device-generic forward pass (model/device.h, LlamaModel on any device), checked on a machine without
// a GPU:
// - the attention path every GPU takes (at::scaled_dot_product_attention with GQA, the causal, windowed and
//   cached masks) runs here on the CPU tensors and must give transformers' logits on every family, and
//   the CPU path's numbers on padded batches, the KV cache and bfloat16;
// - device names and their errors.
// (PyTorch's meta device cannot stand in for a GPU here: SDPA's math version calls at::where, which has no
// meta kernel in C++, and neither have index_select and logical_and.)
// The same computations on a real GPU against the CPU are in tests/test_gpu.cc (skipped without one).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "common/error.h"
#include "formats/safetensors.h"
#include "model/device.h"
#include "worker/experiment_tasks.h"
#include "model/llama.h"
#include "model/make_model.h"
#include "model/tensor_io.h"
#include "tests/llama_shapes.h"
#include "tests/model_fixtures.h"
#include "tests/test_support.h"

namespace layerprune {
namespace {

using testing::llama_shape;
using testing::Stories260K;
using testing::TempDir;

const char* const kFamilies[] = {"family_llama3", "family_linear", "family_mistral", "family_qwen2"};

std::string golden_dir(const std::string& name) { return testing::source_file("tests/golden/" + name); }

ForwardOptions sdpa() {
  ForwardOptions o;
  o.sdpa_attention = true;
  return o;
}

// transformers' logits of each family (tests/golden/family_*, right-padded batches) through the device
// attention path: the float32 tolerance of test_families.
TEST(Device, SdpaAttentionEqualsTransformersOnEveryFamily) {
  for (const char* name : kFamilies) {
    LlamaModel m = LlamaModel::load(golden_dir(name));
    auto f = SafetensorsFile::open(golden_dir(name) + "/golden.safetensors");
    at::Tensor tokens = tensor_from_view(*f->find("tokens"), f).clone();
    at::Tensor lengths = tensor_from_view(*f->find("lengths"), f).clone();
    at::Tensor want = tensor_from_view(*f->find("logits"), f).clone();
    at::Tensor got = m.forward(tokens, sdpa()).logits;
    double worst = 0;
    for (int64_t b = 0; b < tokens.size(0); ++b) {
      const int64_t n = lengths[b].item<int64_t>();
      worst = std::max(worst, (got[b].narrow(0, 0, n) - want[b].narrow(0, 0, n)).abs().max().item<double>());
    }
    EXPECT_LT(worst, 1e-4) << name;
  }
}

// Mistral's window with the KV cache, one token at a time and in uneven chunks past the window: the
// boolean masks of the device path equal the CPU path's loop.
TEST(Device, SdpaSlidingWindowWithTheKVCacheEqualsTheCpuPath) {
  LlamaModel m = LlamaModel::load(golden_dir("family_mistral"));
  const int64_t n = 3 * m.config().sliding_window + 5;
  at::Tensor seq = at::arange(1, n + 1, at::kLong).remainder(m.config().vocab_size).unsqueeze(0);
  at::Tensor want = m.forward(seq).logits[0];
  for (std::vector<int64_t> chunks : {std::vector<int64_t>(size_t(n), 1), std::vector<int64_t>{3, 1, 6, n - 10}}) {
    KVCache cache;
    int64_t at = 0;
    for (int64_t len : chunks) {
      at::Tensor logits = m.forward(seq.narrow(1, at, len), sdpa(), &cache).logits[0];
      EXPECT_LT((logits - want.narrow(0, at, len)).abs().max().item<double>(), 1e-5)
          << "positions " << at << ".." << at + len - 1;
      at += len;
    }
  }
}

// GQA (8 query heads on 2 KV heads) with a padded batch, hidden states and the cache: both paths agree in
// float32 to rounding, and in bfloat16 to bfloat16's rounding of the activations.
TEST(Device, SdpaEqualsTheCpuPathInFloat32AndBfloat16) {
  TempDir d;
  make_random_model(llama_shape(64, 96, 3, 8, 2, 50, 64), d.path(), MakeModelOptions{});
  at::Tensor tokens = at::randint(0, 50, {3, 21}, at::TensorOptions().dtype(at::kLong));
  for (const char* dtype : {"float32", "bfloat16"}) {
    LoadOptions lo;
    lo.dtype = dtype;
    LlamaModel m = LlamaModel::load(d.path(), lo);
    ForwardOptions cpu;
    cpu.return_hidden = true;
    ForwardOptions dev = cpu;
    dev.sdpa_attention = true;
    ForwardResult a = m.forward(tokens, cpu), b = m.forward(tokens, dev);
    const double tol = std::string(dtype) == "float32" ? 1e-5 : 3e-2;
    EXPECT_LT((a.logits - b.logits).abs().max().item<double>(), tol) << dtype;
    ASSERT_EQ(a.hidden.size(), b.hidden.size());
    for (size_t i = 0; i < a.hidden.size(); ++i)
      EXPECT_LT((a.hidden[i] - b.hidden[i]).abs().max().item<double>(), tol) << dtype << " hidden " << i;
    // The cache: a prefix, then one token, then a chunk.
    KVCache cache;
    std::vector<at::Tensor> parts;
    for (auto [from, len] : {std::pair<int64_t, int64_t>{0, 9}, {9, 1}, {10, 11}})
      parts.push_back(m.forward(tokens.narrow(1, from, len), sdpa(), &cache).logits);
    EXPECT_LT((at::cat(parts, 1) - a.logits).abs().max().item<double>(), tol) << dtype << " with the cache";
  }
}

TEST(Device, NamesAndErrors) {
  EXPECT_TRUE(parse_device("cpu").is_cpu());
  EXPECT_NO_THROW(check_device_name("cuda"));
  EXPECT_NO_THROW(check_device_name("cuda:3"));
  for (const char* bad : {"gpu", "cuda:", "cuda:x", "CUDA", "cpu:0", ""}) {
    EXPECT_THROW(check_device_name(bad), InputError) << bad;
    EXPECT_THROW(parse_device(bad), InputError) << bad;
  }
  EXPECT_EQ(describe_device(parse_device("cpu")), "cpu");
  EXPECT_EQ(device_memory(parse_device("cpu")).peak_allocated, 0u);
  if (cuda_device_count() == 0) {
    try {
      parse_device("cuda");
      ADD_FAILURE() << "cuda accepted without a GPU";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("no CUDA GPU is visible"), std::string::npos) << e.what();
    }
  } else {
    EXPECT_TRUE(parse_device("cuda").is_cuda());
    EXPECT_EQ(parse_device("cuda", cuda_device_count() + 1).index(), 1 % cuda_device_count());
    EXPECT_THROW(parse_device("cuda:" + std::to_string(cuda_device_count())), InputError);
  }
}

// The worker's model cache loads on the spec's device; on a machine without a GPU, device cuda is refused
// with the reason before any weight is read (the task then fails with that message).
TEST_F(Stories260K, TheWorkersModelCacheLoadsOnTheSpecsDevice) {
  ModelSpec spec;
  spec.name = "stories260k";
  spec.path = model_dir();
  spec.dtype = "float32";
  ModelCache cpu;
  EXPECT_EQ(cpu.model(spec).device(), at::Device(at::kCPU));
  spec.device = "cuda";
  if (cuda_device_count() > 0) {
    ModelCache gpu;
    EXPECT_TRUE(gpu.model(spec).device().is_cuda());
  } else {
    ModelCache gpu;
    EXPECT_CONTAINS(testing::input_error([&] { gpu.model(spec); }), "no CUDA GPU is visible");
  }
}

}  // namespace
}  // namespace layerprune
