// Prefill throughput of the Llama forward pass as a fraction of this machine's sgemm roofline, both
// measured in this run (issue: "correct, fast Llama forward pass on CPU").
//
//   roofline tokens/s = (sgemm FLOP/s at the same thread count) / (FLOPs per token)
//   (the sgemm is LibTorch's at::mm: MKL inside PyPI's wheel, the best BLAS this build has)
//   FLOPs per token   = 2 x (layer weights + LM head)   [every weight is one multiply-add per token]
//                     + 2 x layers x context x dim      [attention scores and values, Kaplan et al. 2020]
//
// Default model: the random ~110M Llama of the issue (dim 768, 12 layers, 12 heads, FFN 2048, vocab 32000),
// batch 4 x 512, logits at every position. Usage: bench_prefill [--threads N] [--batch B] [--seq T] [--reps R]
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>

#include "common/args.h"
#include "model/llama.h"
#include "model/runtime.h"

using namespace layerprune;

namespace {

double seconds_of(const std::function<void()>& f, int reps) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

LlamaModel random_model(const LlamaConfig& c, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto w = [&](int64_t r, int64_t k) { return at::normal(0.0, 0.02, {r, k}, gen, at::TensorOptions(at::kFloat)); };
  const int64_t D = c.hidden_size, F = c.intermediate_size, hd = c.head_dim();
  LlamaWeights lw;
  lw.embed = w(c.vocab_size, D);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    LlamaLayerWeights l;
    l.attn_norm = at::ones({D});
    l.ffn_norm = at::ones({D});
    l.wq = w(c.num_attention_heads * hd, D);
    l.wk = w(c.num_key_value_heads * hd, D);
    l.wv = w(c.num_key_value_heads * hd, D);
    l.wo = w(D, c.num_attention_heads * hd);
    l.w_gate = w(F, D);
    l.w_up = w(F, D);
    l.w_down = w(D, F);
    lw.layers.push_back(l);
  }
  lw.final_norm = at::ones({D});
  lw.lm_head = w(c.vocab_size, D);
  return LlamaModel(c, lw);
}

}  // namespace

int main(int argc, char** argv) {
  ensure_passive_openmp(argv);
  ArgParser p("bench_prefill", "Prefill throughput vs the sgemm roofline (see the comment at the top of bench/prefill.cc).");
  p.option("threads", "thread counts to measure, comma-separated", "1,2")
      .option("batch", "sequences per forward", "4")
      .option("seq", "tokens per sequence", "512")
      .option("reps", "timed repetitions (best is kept)", "3")
      .option("gemm", "sgemm size for the roofline", "2048");
  if (!p.parse(argc, argv)) return 0;
  LlamaConfig c;
  c.hidden_size = 768; c.num_hidden_layers = 12; c.num_attention_heads = 12; c.num_key_value_heads = 12;
  c.intermediate_size = 2048; c.vocab_size = 32000; c.max_position_embeddings = 1024;
  const int64_t B = p.get_int("batch"), T = p.get_int("seq");
  const int reps = int(p.get_int("reps"));
  LlamaModel model = random_model(c, 0);
  const int64_t D = c.hidden_size, F = c.intermediate_size, L = c.num_hidden_layers;
  const double layer_params = double(L) * (4.0 * D * D + 3.0 * D * F);
  const double head_params = double(c.vocab_size) * D;
  const double flops_per_token = 2.0 * (layer_params + head_params) + 2.0 * L * T * D;
  std::printf("model: dim %lld, %lld layers, FFN %lld, vocab %lld: %.1fM layer + %.1fM LM-head parameters\n",
              (long long)D, (long long)L, (long long)F, (long long)c.vocab_size, layer_params / 1e6, head_params / 1e6);
  std::printf("FLOPs per token: %.1f M (weights %.1f M + attention %.1f M); batch %lld x %lld\n",
              flops_per_token / 1e6, 2.0 * (layer_params + head_params) / 1e6, 2.0 * L * T * D / 1e6,
              (long long)B, (long long)T);
  at::Tensor tokens = at::randint(1, c.vocab_size, {B, T}, at::kLong);
  std::string list = p.get("threads");
  double tps_one = 0;
  for (size_t pos = 0; pos < list.size();) {
    size_t comma = list.find(',', pos);
    int threads = std::stoi(list.substr(pos, comma - pos));
    pos = comma == std::string::npos ? list.size() : comma + 1;
    configure_threads(threads);
    // Rounds alternate the roofline GEMM and the forward so that both see the same machine state (the
    // VM's clock and neighbours drift); the best of each is kept.
    const int64_t n = p.get_int("gemm");
    at::Tensor a = at::randn({n, n}), bm = at::randn({n, n}), prod = at::empty({n, n});
    at::mm_out(prod, a, bm);
    model.forward(tokens);  // warm-up
    double gemm_s = 1e30, s = 1e30;
    for (int r = 0; r < reps; ++r) {
      gemm_s = std::min(gemm_s, seconds_of([&] { at::mm_out(prod, a, bm); }, 2));
      s = std::min(s, seconds_of([&] { model.forward(tokens); }, 1));
    }
    double gemm = 2.0 * n * n * n / gemm_s;
    double tps = double(B * T) / s;
    double roof = gemm / flops_per_token;
    if (threads == 1) tps_one = tps;
    std::printf("threads %d: sgemm %.1f GFLOP/s -> roofline %.0f tokens/s; prefill %.0f tokens/s (%.3f s/batch) = %.2f of roofline%s\n",
                threads, gemm / 1e9, roof, tps, s, tps / roof,
                (threads > 1 && tps_one > 0) ? (tps >= tps_one ? "" : "  [SLOWER THAN 1 THREAD]") : "");
  }
  return 0;
}
