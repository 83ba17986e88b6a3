// The GPU check's benchmarks (deploy/gpu_check.sh runs them after the tests; a CUDA GPU only, otherwise one
// line says so and the program exits 0). Each result is one "BENCH" line in the report ($LAYERPRUNE_GPU_REPORT).
//   1. the GPU's dense bfloat16 GEMM rate: at::mm of two N x N bfloat16 matrices (N = 8192), back to back
//      between synchronisations, best of several rounds: the roofline the prefill is measured against;
//   2. prefill of a Llama-2-7B-shaped slice: a few layers at Llama-2-7B's real dimensions (hidden 4096, 32
//      heads, FFN 11008, vocabulary 32000), random bfloat16 weights made on the GPU, a batch of 8 x 2048
//      tokens, logits at each row's last position only (ForwardOptions::logit_positions), as an evaluation or
//      a distance pass runs it: tokens/s, and its FLOP/s as a fraction of (1). FLOPs counted per token and
//      layer: 2 x (4 D^2 + 3 D F) for the projections, 2 D (T + 1) for causal attention (QK^T and PV over the
//      keys a query sees, on average (T + 1) / 2), plus the LM head at the B positions;
//   3. the SmolLM2-135M no-healing sweep as `layerprune sweep` and the worker's evaluate task run it
//      (experiments/smollm2-135m.yaml's settings: fractions 0, 0.1, .., 0.9, both strategies, distances on 32 C4
//      samples of 128 tokens, MMLU 5-shot on 3 subjects x 2 questions, BoolQ 30, loss on 8 windows of 256 C4
//      tokens held out), with the same library calls (worker/stages.h) on the GPU: wall time, in float32 (the
//      experiment's dtype) and bfloat16. Skipped where the data is absent.
#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/headeronly/version.h>

#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <string>
#include <vector>

#include "common/args.h"
#include "common/error.h"
#include "experiment/pruning.h"
#include "model/device.h"
#include "model/llama.h"
#include "tests/gpu_check_support.h"
#include "worker/stages.h"

namespace layerprune {
namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* fmt, ...) {
  char buf[1024];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, args);
  va_end(args);
  return buf;
}

// FLOP/s of at::mm on n x n bfloat16 matrices: `per_round` products between synchronisations, best round.
double gemm_rate(c10::Device device, int64_t n, int rounds, int per_round) {
  const auto opts = at::TensorOptions().dtype(at::kBFloat16).device(device);
  at::Tensor a = at::randn({n, n}, opts), b = at::randn({n, n}, opts), c = at::empty({n, n}, opts);
  for (int i = 0; i < 3; ++i) at::mm_out(c, a, b);  // cuBLAS's handle, workspace and heuristics
  synchronize_device(device);
  double best = 1e30;
  for (int r = 0; r < rounds; ++r) {
    const auto t0 = clock_type::now();
    for (int i = 0; i < per_round; ++i) at::mm_out(c, a, b);
    synchronize_device(device);
    best = std::min(best, seconds_since(t0) / per_round);
  }
  return 2.0 * double(n) * double(n) * double(n) / best;
}

LlamaConfig llama2_7b_slice(int64_t layers) {
  LlamaConfig c;
  c.hidden_size = 4096;
  c.intermediate_size = 11008;
  c.num_hidden_layers = layers;
  c.num_attention_heads = 32;
  c.num_key_value_heads = 32;
  c.vocab_size = 32000;
  c.max_position_embeddings = 4096;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  c.torch_dtype = "bfloat16";
  c.tie_word_embeddings = false;
  return c;
}

// Random weights on the device (N(0, 0.02^2), norms 1), never on the host.
LlamaModel random_model(const LlamaConfig& c, c10::Device device) {
  const auto opts = at::TensorOptions().dtype(at::kBFloat16).device(device);
  const int64_t D = c.hidden_size, F = c.intermediate_size, V = c.vocab_size, KV = c.kv_dim();
  auto w = [&](int64_t rows, int64_t cols) { return at::randn({rows, cols}, opts).mul_(0.02); };
  LlamaWeights weights;
  weights.embed = w(V, D);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    LlamaLayerWeights L;
    L.attn_norm = at::ones({D}, opts);
    L.wq = w(D, D);
    L.wk = w(KV, D);
    L.wv = w(KV, D);
    L.wo = w(D, D);
    L.ffn_norm = at::ones({D}, opts);
    L.w_gate = w(F, D);
    L.w_up = w(F, D);
    L.w_down = w(D, F);
    weights.layers.push_back(std::move(L));
  }
  weights.final_norm = at::ones({D}, opts);
  weights.lm_head = w(V, D);
  return LlamaModel(c, std::move(weights));
}

void bench_prefill(c10::Device device, int64_t layers, int64_t batch, int64_t seq, int reps, double gemm_flops) {
  const LlamaConfig c = llama2_7b_slice(layers);
  LlamaModel m = random_model(c, device);
  const double D = double(c.hidden_size), F = double(c.intermediate_size), V = double(c.vocab_size);
  const double per_token_layer = 2 * (4 * D * D + 3 * D * F) + 2 * D * double(seq + 1);
  const double flops = double(batch * seq) * double(layers) * per_token_layer + double(batch) * 2 * V * D;
  at::Tensor tokens = at::randint(0, c.vocab_size, {batch, seq}, at::TensorOptions().dtype(at::kLong));
  std::vector<int64_t> last;
  for (int64_t b = 0; b < batch; ++b) last.push_back(b * seq + seq - 1);
  ForwardOptions o;
  o.logit_positions = at::tensor(last, at::kLong);
  reset_peak_device_memory(device);
  for (int i = 0; i < 2; ++i) m.forward(tokens, o);  // warm-up: kernels, allocator
  synchronize_device(device);
  std::vector<double> times;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = clock_type::now();
    at::Tensor logits = m.forward(tokens, o).logits;
    synchronize_device(device);
    times.push_back(seconds_since(t0));
    if (r == 0 && (logits.size(0) != batch || !logits.isfinite().all().item<bool>()))
      throw std::runtime_error("prefill: wrong or non-finite logits");
  }
  std::sort(times.begin(), times.end());
  const double best = times.front(), median = times[times.size() / 2];
  const DeviceMemory mem = device_memory(device);
  gpu_check::report_line(format(
      "BENCH prefill, Llama-2-7B-shaped slice (%lld layers of D 4096, 32 heads, FFN 11008, V 32000; random bf16), "
      "batch %lld x %lld, logits at the last positions: %.0f tokens/s (best of %d, median %.0f), %.1f TFLOP/s = "
      "%.1f%% of the measured bf16 GEMM rate; %.2f GFLOP/token; peak allocated %.2f GiB",
      (long long)layers, (long long)batch, (long long)seq, double(batch * seq) / best, reps,
      double(batch * seq) / median, flops / best / 1e12, 100 * flops / best / gemm_flops,
      flops / double(batch * seq) / 1e9, double(mem.peak_allocated) / double(1ull << 30)));
}

// The SmolLM2 sweep (experiments/smollm2-135m.yaml's settings) on `device` in `dtype` (a SKIP line where data is missing).
void bench_sweep(c10::Device device, const std::string& dtype) {
  const std::string dir = gpu_check::smollm2_dir();
  const std::string mmlu = gpu_check::data_file("mmlu/hendrycks_format"), boolq = gpu_check::data_file("boolq/val.jsonl"),
                    c4 = gpu_check::data_file("c4/c4_en_train_first1000.jsonl");
  if (dir.empty() || mmlu.empty() || boolq.empty() || c4.empty()) {
    gpu_check::report_line("SKIP  sweep: SmolLM2, mmlu/hendrycks_format, boolq/val.jsonl or c4/c4_en_train_first1000.jsonl "
                           "not found under " + gpu_check::data_dir() + " (set LAYERPRUNE_DATA)");
    return;
  }
  const auto t0 = clock_type::now();
  const Tokenizer tok = Tokenizer::load_dir(dir);
  EvaluationSpec spec;
  spec.mmlu = true;
  spec.mmlu_data = mmlu;
  spec.mmlu_shots = 5;
  spec.mmlu_subjects = {"high_school_geography", "marketing", "world_religions"};
  spec.mmlu_limit = 2;
  spec.boolq = true;
  spec.boolq_data = boolq;
  spec.boolq_limit = 30;
  spec.loss = true;
  spec.loss_data = c4;
  spec.loss_begin = 0.9;
  spec.loss_end = 1.0;
  spec.loss_seq_len = 256;
  spec.loss_windows = 8;
  spec.batch_size = 8;
  const EvalData data = load_eval_data(spec, tok);
  LoadOptions lo;
  lo.device = device;
  lo.dtype = dtype;
  const LlamaModel model = LlamaModel::load(dir, lo);
  synchronize_device(device);
  const double load_s = seconds_since(t0);
  const auto t1 = clock_type::now();
  CalibrationSpec cal;
  cal.data = c4;
  cal.samples = 32;
  cal.seq_len = 128;
  const DistanceResult dist = run_distances(model, tok, dir, dtype, cal);
  synchronize_device(device);
  const double distances_s = seconds_since(t1);
  const auto t2 = clock_type::now();
  const int64_t L = model.config().num_hidden_layers;
  std::vector<PointSpec> points;
  std::vector<int64_t> ns;
  for (int f = 0; f <= 9; ++f) ns.push_back(layers_to_prune(0.1 * f, L));
  std::sort(ns.begin(), ns.end());
  ns.erase(std::unique(ns.begin(), ns.end()), ns.end());
  for (int64_t n : ns)
    for (const char* s : {"similarity", "simple"}) points.push_back({"", s, n});
  EvalOptions eo;
  eo.batch_size = spec.batch_size;
  eo.add_bos = tok.add_bos_default();
  eo.progress = false;
  EvaluateStats stats;
  const std::vector<PointResult> results = evaluate_points(model, tok, data, points, &dist.table, eo, &stats);
  synchronize_device(device);
  const double sweep_s = seconds_since(t2), total_s = seconds_since(t0);
  std::string losses;
  for (size_t i = 0; i < points.size(); ++i) {
    const int64_t n = points[i].n;
    if (n != 0 && n != 9 && n != 15) continue;
    if (n == 0 && points[i].strategy != "similarity") continue;
    auto it = results[i].metrics.find("loss");
    if (it != results[i].metrics.end())
      losses += format("%s%s n=%lld %.3f", losses.empty() ? "" : ", ", n == 0 ? "whole" : points[i].strategy.c_str(),
                       (long long)n, it->second);
  }
  gpu_check::report_line(format(
      "BENCH SmolLM2-135M no-healing sweep on %s, %s: %.1f s wall (data + model load %.1f s, distances %.1f s, "
      "%zu grid points = %zu models on %zu items + loss: %.1f s); loss %s",
      device.str().c_str(), dtype.c_str(), total_s, load_s, distances_s, points.size(), stats.variants,
      data.items.size(), sweep_s, losses.c_str()));
}

int run(int argc, char** argv) {
  ArgParser p("bench_gpu", "The GPU check's benchmarks: bf16 GEMM rate, Llama-2-7B-slice prefill, SmolLM2 sweep.");
  p.option("layers", "layers of the Llama-2-7B-shaped slice", "4")
      .option("batch", "prefill batch", "8")
      .option("seq", "prefill sequence length", "2048")
      .option("reps", "timed prefill passes", "5")
      .option("gemm", "GEMM size N (N x N x N)", "8192")
      .option("device", "where to run (cpu: a dry run of the code paths with small --gemm/--layers/--seq)", "cuda")
      .option("sweep-dtypes", "compute dtypes of the SmolLM2 sweep, comma-separated (\"\": no sweep)", "float32,bfloat16");
  if (!p.parse(argc, argv)) return 0;
  gpu_check::report_line(format("INFO  LibTorch %d.%d.%d", TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR, TORCH_VERSION_PATCH));
  if (p.get("device") != "cpu" && cuda_device_count() == 0) {
    gpu_check::report_line("SKIP  benchmarks: no CUDA GPU visible (cuda_device_count() = 0)");
    return 0;
  }
  at::NoGradGuard no_grad;
  const c10::Device device = parse_device(p.get("device"));
  gpu_check::report_line("INFO  device " + describe_device(device));
  const int64_t n = p.get_int("gemm");
  const double gemm = gemm_rate(device, n, 5, 10);
  gpu_check::report_line(format("BENCH bf16 GEMM (at::mm %lld^3, 10 back to back, best of 5 rounds): %.1f TFLOP/s",
                                (long long)n, gemm / 1e12));
  bench_prefill(device, p.get_int("layers"), p.get_int("batch"), p.get_int("seq"), int(p.get_int("reps")), gemm);
  std::string dtypes = p.get("sweep-dtypes");
  for (size_t b = 0; b < dtypes.size();) {
    const size_t e = std::min(dtypes.find(',', b), dtypes.size());
    if (e > b) bench_sweep(device, dtypes.substr(b, e - b));
    b = e + 1;
  }
  return 0;
}

}  // namespace
}  // namespace layerprune

int main(int argc, char** argv) {
  try {
    return layerprune::run(argc, argv);
  } catch (const std::exception& e) {
    layerprune::gpu_check::report_line(std::string("FAIL  benchmarks: ") + e.what());
    return 1;
  }
}
