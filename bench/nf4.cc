// NF4 kernels (kernels/nf4.h), measured against this machine's own yardsticks in the same run:
//   dequantise throughput / memory-copy bandwidth   (issue target: >= 0.5)
//     both write the same number of float32 bytes: dequantise reads 0.52 byte per weight and writes 4;
//     the copy (at::Tensor::copy_, as parallel as the dequantiser) reads and writes 4.
//   nf4_linear and nf4_linear_input_grad vs float32 at::linear / at::mm with the dequantised weight.
// Rounds alternate the measured kernel and its yardstick so both see the same machine state; the best is kept.
// Usage: bench_nf4 [--shapes 8192x8192,2048x768] [--threads 1,2] [--tokens 1,512] [--reps 3]
#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "common/args.h"
#include "kernels/nf4.h"
#include "model/runtime.h"

using namespace layerprune;

namespace {

double seconds_of(const std::function<void()>& f) {
  auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Best of `reps` rounds of (a, b), alternated.
std::pair<double, double> best_pair(const std::function<void()>& a, const std::function<void()>& b, int reps) {
  double sa = 1e30, sb = 1e30;
  a();  // warm-up (page faults, tables)
  b();
  for (int r = 0; r < reps; ++r) {
    sa = std::min(sa, seconds_of(a));
    sb = std::min(sb, seconds_of(b));
  }
  return {sa, sb};
}

std::vector<int64_t> int_list(const std::string& s, char sep) {
  std::vector<int64_t> out;
  for (size_t pos = 0; pos < s.size();) {
    size_t next = s.find(sep, pos);
    out.push_back(std::stoll(s.substr(pos, next - pos)));
    pos = next == std::string::npos ? s.size() : next + 1;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  ensure_passive_openmp(argv);
  ArgParser p("bench_nf4", "NF4 dequantise throughput vs memory copy, and the fused NF4 linear vs float32 (see bench/nf4.cc).");
  p.option("shapes", "weights rows x cols, comma-separated", "8192x8192,2048x768")
      .option("threads", "thread counts to measure, comma-separated", "1,2")
      .option("tokens", "token counts for the linear, comma-separated", "1,512")
      .option("reps", "timed repetitions (best is kept)", "3");
  if (!p.parse(argc, argv)) return 0;
  const int reps = int(p.get_int("reps"));
  for (const std::string& shape : [&] {
         std::vector<std::string> v;
         std::string s = p.get("shapes");
         for (size_t pos = 0; pos < s.size();) {
           size_t next = s.find(',', pos);
           v.push_back(s.substr(pos, next - pos));
           pos = next == std::string::npos ? s.size() : next + 1;
         }
         return v;
       }()) {
    const std::vector<int64_t> rc = int_list(shape, 'x');
    const int64_t rows = rc.at(0), cols = rc.at(1), n = rows * cols;
    at::Tensor w = at::randn({rows, cols}) * 0.02;
    configure_threads(0);
    const double quant_s = seconds_of([&] { kernels::nf4_quantize(w); });
    kernels::Nf4Weight q = kernels::nf4_quantize(w);
    std::printf("W %lld x %lld (%.1fM weights): NF4 %.2f MB = %.4f bits/weight (float32 %.1f MB); quantise %.3f s\n",
                (long long)rows, (long long)cols, n / 1e6, q.storage_bytes() / 1e6, q.bits_per_weight(), 4.0 * n / 1e6,
                quant_s);
    at::Tensor out = at::empty({rows, cols}), src = at::randn({rows, cols}), dst = at::empty({rows, cols});
    at::Tensor wd = kernels::nf4_dequantize(q);
    for (int64_t threads : int_list(p.get("threads"), ',')) {
      configure_threads(int(threads));
      auto [deq_s, copy_s] = best_pair([&] { kernels::nf4_dequantize_out(q, out); }, [&] { dst.copy_(src); }, reps);
      const double deq_gbs = 4.0 * n / deq_s / 1e9, copy_gbs = 4.0 * n / copy_s / 1e9;
      std::printf("  threads %lld: dequantise %.2f GB/s of float32 out (%.2f G weights/s); copy %.2f GB/s; ratio %.2f%s\n",
                  (long long)threads, deq_gbs, n / deq_s / 1e9, copy_gbs, deq_gbs / copy_gbs,
                  deq_gbs / copy_gbs >= 0.5 ? "" : "  [BELOW the 0.5 target]");
      for (int64_t T : int_list(p.get("tokens"), ',')) {
        at::Tensor x = at::randn({T, cols}), g = at::randn({T, rows});
        auto [lin_s, ref_s] = best_pair([&] { kernels::nf4_linear(x, q); }, [&] { at::linear(x, wd); }, reps);
        auto [grad_s, gref_s] = best_pair([&] { kernels::nf4_linear_input_grad(g, q); }, [&] { at::mm(g, wd); }, reps);
        std::printf("    %4lld tokens: nf4_linear %.2f ms vs float32 linear %.2f ms (x%.2f); input grad %.2f ms vs %.2f ms (x%.2f)\n",
                    (long long)T, lin_s * 1e3, ref_s * 1e3, lin_s / ref_s, grad_s * 1e3, gref_s * 1e3, grad_s / gref_s);
      }
    }
  }
  return 0;
}
