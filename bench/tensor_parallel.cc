// Forward throughput of tensor parallelism on one host: layerprune-worker at TP 1 and TP 2 on the same
// cores (the worker divides the host's cores among its ranks), with the all-reduce count, volume and the
// time spent in collectives, all measured in this run. On a 2-core machine TP 2 cannot be faster than TP 1
// with 2 threads: it shows the cost of the communication and of the smaller per-rank GEMMs, which is what
// a multi-GPU group pays too (there the gain comes from memory and devices, not from these cores).
//
// Default model: the random ~110M Llama (dim 768, 12 layers, 12 heads, FFN 2048, vocab 32000), batch 4 x 256.
// Usage: bench_tensor_parallel [--model DIR] [--batch B] [--seq T] [--reps R] [--tp 2]
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>

#include <nlohmann/json.hpp>

#include "common/args.h"
#include "common/text_file.h"
#include "model/make_model.h"

using namespace layerprune;

namespace {

nlohmann::json run_worker(int tp, const std::string& tasks, const std::string& out) {
  std::string cmd = std::string(LAYERPRUNE_MPIEXEC) + " --oversubscribe -np " + std::to_string(tp) + " " +
                    LAYERPRUNE_WORKER + " --tp " + std::to_string(tp) + " --tasks " + tasks + " --out " + out;
  int st = std::system(cmd.c_str());
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) throw std::runtime_error("worker failed: " + cmd);
  return nlohmann::json::parse(read_file(out + "/bench.json"));
}

}  // namespace

int main(int argc, char** argv) {
  ArgParser p("bench_tensor_parallel", "Forward throughput, TP 1 vs TP N, with communication count and time.");
  p.option("model", "model directory (default: a random 110M Llama written to a temp dir)", "")
      .option("batch", "sequences per forward pass", "4")
      .option("seq", "tokens per sequence", "256")
      .option("reps", "forward passes per run (the fastest counts)", "3")
      .option("tp", "the tensor-parallel size to compare with TP 1", "2");
  if (!p.parse(argc, argv)) return 0;
  setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
  setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
  std::string tmp = (std::filesystem::temp_directory_path() / ("bench_tp_" + std::to_string(getpid()))).string();
  std::filesystem::create_directories(tmp);
  std::string model = p.get("model");
  if (model.empty()) {
    LlamaConfig c;
    c.hidden_size = 768;
    c.num_hidden_layers = 12;
    c.num_attention_heads = c.num_key_value_heads = 12;
    c.intermediate_size = 2048;
    c.vocab_size = 32000;
    c.max_position_embeddings = 2048;
    model = tmp + "/model";
    make_random_model(c, model, MakeModelOptions{});
  }
  const int64_t B = p.get_int("batch"), T = p.get_int("seq");
  std::mt19937 rng(0);
  std::vector<std::vector<int64_t>> tokens(B, std::vector<int64_t>(T));
  for (auto& s : tokens)
    for (auto& t : s) t = 1 + int64_t(rng() % 31999);
  nlohmann::json task = {{"id", "bench"}, {"model", model}, {"tokens", tokens}, {"repeat", p.get_int("reps")}};
  write_file(tmp + "/tasks.jsonl", task.dump() + "\n");

  const int tp = int(p.get_int("tp"));
  nlohmann::json one = run_worker(1, tmp + "/tasks.jsonl", tmp + "/tp1");
  nlohmann::json many = run_worker(tp, tmp + "/tasks.jsonl", tmp + "/tp" + std::to_string(tp));
  const double tokens_per_pass = double(B * T);
  auto report = [&](const nlohmann::json& d) {
    double s = d["forward_seconds"], comm = d["comm"]["seconds"];
    std::printf("TP %d (%d thread(s) per rank): %8.1f tokens/s   all-reduces %3llu (%6.1f MB)  all-gathers %llu (%6.1f MB)  "
                "in collectives %5.1f%% of the pass\n",
                int(d["tp"]), int(d["threads_per_rank"]), tokens_per_pass / s,
                (unsigned long long)d["comm"]["all_reduce"], double(d["comm"]["all_reduce_bytes"]) / 1e6,
                (unsigned long long)d["comm"]["all_gather"], double(d["comm"]["all_gather_bytes"]) / 1e6,
                100 * comm / s);
  };
  std::printf("forward pass, batch %lld x %lld tokens, logits at every position, best of %lld\n", (long long)B,
              (long long)T, (long long)p.get_int("reps"));
  report(one);
  report(many);
  std::printf("TP %d / TP 1 throughput: %.2f\n", tp, double(one["forward_seconds"]) / double(many["forward_seconds"]));
  std::filesystem::remove_all(tmp);
  return 0;
}
