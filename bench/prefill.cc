// Prefill throughput of the Llama forward pass as a fraction of this machine's sgemm roofline, both
// measured in this run (issue: "correct, fast Llama forward pass on CPU").
//
//   roofline tokens/s = (sgemm FLOP/s at the same thread count) / (FLOPs per token)
//   (the sgemm is LibTorch's at::mm: MKL inside PyPI's wheel, the best BLAS this build has)
//   FLOPs per token   = 2 x (layer weights + LM head)   [every weight is one multiply-add per token]
//                     + 2 x layers x context x dim      [attention scores and values, Kaplan et al. 2020]
//
// Two forwards per thread count: logits at every position (the roofline's FLOPs above), and logits at each
// sequence's last position only (ForwardOptions::logit_positions, what the scorer asks for; its roofline
// counts the LM head once per sequence instead of once per token). A small model's head is a large share of
// its work (SmolLM2-135M: 49152 x 576, 57 of 287 MFLOP per token at 512 positions), so the second is the faster.
//
// Default model: the random ~110M Llama of the issue (dim 768, 12 layers, 12 heads, FFN 2048, vocab 32000);
// --model DIR runs a Hugging Face directory instead (e.g. SmolLM2-135M converted by `layerprune convert
// --gguf`). Batch 4 x 512. Usage: bench_prefill [--model DIR] [--threads N] [--batch B] [--seq T] [--reps R]
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

LlamaConfig issue_110m() {
  LlamaConfig c;
  c.hidden_size = 768; c.num_hidden_layers = 12; c.num_attention_heads = 12; c.num_key_value_heads = 12;
  c.intermediate_size = 2048; c.vocab_size = 32000; c.max_position_embeddings = 1024;
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  ensure_passive_openmp(argv);
  ArgParser p("bench_prefill", "Prefill throughput vs the sgemm roofline (see the comment at the top of bench/prefill.cc).");
  p.option("model", "a Hugging Face-layout model directory (default: the random 110M Llama)", "")
      .option("threads", "thread counts to measure, comma-separated", "1,2")
      .option("batch", "sequences per forward", "4")
      .option("seq", "tokens per sequence", "512")
      .option("reps", "timed repetitions (best is kept)", "3")
      .option("gemm", "sgemm size for the roofline", "2048");
  if (!p.parse(argc, argv)) return 0;
  const std::string dir = p.get("model");
  LlamaModel model = dir.empty() ? random_model(issue_110m(), 0) : LlamaModel::load(dir);
  const LlamaConfig& c = model.config();
  const int64_t B = p.get_int("batch"), T = p.get_int("seq");
  const int reps = int(p.get_int("reps"));
  const int64_t D = c.hidden_size, F = c.intermediate_size, L = c.num_hidden_layers, kv = c.kv_dim();
  // q and o are D x D, k and v D x kv (kv = D without grouped-query attention), the MLP 3 x D x F.
  const double layer_params = double(L) * (2.0 * D * D + 2.0 * D * kv + 3.0 * D * F);
  const double head_params = double(c.vocab_size) * D;
  const double attention = 2.0 * L * T * D;
  const double flops_per_token = 2.0 * (layer_params + head_params) + attention;
  const double flops_per_token_last = 2.0 * layer_params + 2.0 * head_params / double(T) + attention;
  std::printf("model: %s: dim %lld, %lld layers, FFN %lld, vocab %lld: %.1fM layer + %.1fM LM-head parameters\n",
              dir.empty() ? "random 110M" : dir.c_str(), (long long)D, (long long)L, (long long)F,
              (long long)c.vocab_size, layer_params / 1e6, head_params / 1e6);
  std::printf("FLOPs per token: %.1f M (weights %.1f M + attention %.1f M); logits at the last position only: "
              "%.1f M; batch %lld x %lld\n",
              flops_per_token / 1e6, 2.0 * (layer_params + head_params) / 1e6, attention / 1e6,
              flops_per_token_last / 1e6, (long long)B, (long long)T);
  at::Tensor tokens = at::randint(1, c.vocab_size, {B, T}, at::kLong);
  ForwardOptions last;
  last.logit_positions = at::arange(B, at::kLong) * T + (T - 1);  // flat index of each row's last token
  std::string list = p.get("threads");
  double tps_one = 0;
  for (size_t pos = 0; pos < list.size();) {
    size_t comma = list.find(',', pos);
    int threads = std::stoi(list.substr(pos, comma - pos));
    pos = comma == std::string::npos ? list.size() : comma + 1;
    configure_threads(threads);
    // Rounds alternate the roofline GEMM and the forwards so that all see the same machine state (the
    // VM's clock and neighbours drift); the best of each is kept.
    const int64_t n = p.get_int("gemm");
    at::Tensor a = at::randn({n, n}), bm = at::randn({n, n}), prod = at::empty({n, n});
    at::mm_out(prod, a, bm);
    model.forward(tokens);  // warm-up
    model.forward(tokens, last);
    double gemm_s = 1e30, s = 1e30, s_last = 1e30;
    for (int r = 0; r < reps; ++r) {
      gemm_s = std::min(gemm_s, seconds_of([&] { at::mm_out(prod, a, bm); }, 2));
      s = std::min(s, seconds_of([&] { model.forward(tokens); }, 1));
      s_last = std::min(s_last, seconds_of([&] { model.forward(tokens, last); }, 1));
    }
    double gemm = 2.0 * n * n * n / gemm_s;
    double tps = double(B * T) / s, tps_last = double(B * T) / s_last;
    double roof = gemm / flops_per_token, roof_last = gemm / flops_per_token_last;
    if (threads == 1) tps_one = tps;
    std::printf("threads %d: sgemm %.1f GFLOP/s -> roofline %.0f tokens/s; prefill %.0f tokens/s (%.3f s/batch) = %.2f of roofline%s\n",
                threads, gemm / 1e9, roof, tps, s, tps / roof,
                (threads > 1 && tps_one > 0) ? (tps >= tps_one ? "" : "  [SLOWER THAN 1 THREAD]") : "");
    std::printf("threads %d: logits at the last position only: roofline %.0f tokens/s; prefill %.0f tokens/s "
                "(%.3f s/batch) = %.2f of roofline; %.2fx the tokens/s of logits everywhere\n",
                threads, roof_last, tps_last, s_last, tps_last / roof_last, tps_last / tps);
  }
  return 0;
}
