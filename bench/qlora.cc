// QLoRA (NF4 base) training step against LoRA on the full-precision base, measured in one run on the random
// ~110M Llama (dim 768, 12 layers, FFN 2048, vocab 32000): step time (the target: NF4 at most 1.5x
// slower) and memory: the bytes of the frozen projections each holds, and each one's peak resident set.
// Each variant runs in a child process (this program re-executed with --variant), so that its peak RSS
// (getrusage of the child: heap + the checkpoint pages it touched) is its own.
//
// Usage: bench_qlora [--steps N] [--batch B] [--seq T] [--rank R] [--threads N]
#include <ATen/ATen.h>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>

#include "common/args.h"
#include "common/progress.h"
#include "model/lora.h"
#include "model/make_model.h"
#include "model/runtime.h"
#include "healing/trainer.h"

using namespace layerprune;

int main(int argc, char** argv) {
  ensure_passive_openmp(argv);
  ArgParser p("bench_qlora", "QLoRA step vs LoRA step on the random 110M Llama.");
  p.option("steps", "timed steps of each (after one warm-up step)", "3")
      .option("batch", "sequences per step", "4")
      .option("seq", "tokens per sequence", "256")
      .option("rank", "LoRA rank", "8")
      .option("threads", "CPU threads (0: all cores)", "0")
      .option("variant", "internal: run one variant (none | nf4) and print its numbers", "");
  try {
    if (!p.parse(argc, argv)) return 0;
    const int threads = configure_threads(int(p.get_int("threads")));
    LlamaConfig c;
    c.hidden_size = 768;
    c.intermediate_size = 2048;
    c.num_hidden_layers = 12;
    c.num_attention_heads = 12;
    c.num_key_value_heads = 12;
    c.vocab_size = 32000;
    c.max_position_embeddings = 1024;
    const std::string dir = (std::filesystem::temp_directory_path() / "layerprune-bench-qlora-110m").string();
    if (!std::filesystem::exists(dir + "/config.json")) make_random_model(c, dir, {});
    LlamaModel model = LlamaModel::load(dir);
    const int64_t steps = p.get_int("steps"), B = p.get_int("batch"), T = p.get_int("seq");
    std::vector<int32_t> text(size_t(B * T * (steps + 2) + 1));
    for (size_t i = 0; i < text.size(); ++i) text[i] = int32_t((i * 7919) % 31990 + 3);

    struct Run {
      double step_seconds = 0;
      int64_t projection_bytes = 0;
      double final_loss = 0;
    };
    auto run = [&](const std::string& quant) {
      Run r;
      LoraConfig lc;
      lc.rank = p.get_int("rank");
      lc.base_quant = quant;
      LoraLlama lora(model, {}, lc);
      r.projection_bytes = lora.base_projection_bytes();
      TrainConfig tc;
      tc.steps = steps + 1;
      tc.global_batch = B;
      tc.micro_batch = B;
      tc.warmup = 1;
      tc.log_every = 0;
      PackedStream data(text, 1, T, 0);
      std::vector<std::chrono::steady_clock::time_point> at_step;
      TrainResult tr = train(lora, data, tc, "", [&](const TrainStep&) { at_step.push_back(std::chrono::steady_clock::now()); });
      r.step_seconds = std::chrono::duration<double>(at_step.back() - at_step.front()).count() / double(steps);
      r.final_loss = tr.steps.back().loss;
      return r;
    };
    Progress::set_quiet(true);
    if (!p.get("variant").empty()) {  // child: one variant, numbers on stdout
      Run r = run(p.get("variant"));
      std::printf("%.17g %lld %.17g\n", r.step_seconds, (long long)r.projection_bytes, r.final_loss);
      return 0;
    }
    auto child = [&](const std::string& variant, double* peak_mb) {
      int fds[2];
      if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
      pid_t pid = fork();
      if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
        std::vector<std::string> args = {self, "--variant", variant, "--steps", p.get("steps"), "--batch", p.get("batch"),
                                         "--seq", p.get("seq"), "--rank", p.get("rank"), "--threads", p.get("threads")};
        std::vector<char*> av;
        for (auto& a : args) av.push_back(a.data());
        av.push_back(nullptr);
        execv(self.c_str(), av.data());
        _exit(127);
      }
      close(fds[1]);
      std::string out;
      char buf[256];
      ssize_t n;
      while ((n = read(fds[0], buf, sizeof buf)) > 0) out.append(buf, size_t(n));
      close(fds[0]);
      int status = 0;
      struct rusage ru {};
      wait4(pid, &status, 0, &ru);
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) throw std::runtime_error(variant + " run failed");
      *peak_mb = double(ru.ru_maxrss) / 1024.0;  // kilobytes on Linux
      Run r;
      long long bytes = 0;
      std::sscanf(out.c_str(), "%lf %lld %lf", &r.step_seconds, &bytes, &r.final_loss);
      r.projection_bytes = bytes;
      return r;
    };
    double peak_full = 0, peak_q = 0;
    Run full = child("none", &peak_full), q = child("nf4", &peak_q);
    std::printf("random Llama 110M (dim 768, 12 layers, FFN 2048, vocab 32000); LoRA rank %lld on gate/up/down; "
                "batch %lld x %lld tokens; %d threads\n",
                (long long)p.get_int("rank"), (long long)B, (long long)T, threads);
    std::printf("LoRA  (float32 base): %.2f s/step; frozen projections %.1f MB (mapped from the checkpoint); "
                "peak RSS %.0f MB\n", full.step_seconds, full.projection_bytes / 1e6, peak_full);
    std::printf("QLoRA (NF4 base):     %.2f s/step; frozen projections %.1f MB (NF4, in memory); peak RSS %.0f MB\n",
                q.step_seconds, q.projection_bytes / 1e6, peak_q);
    std::printf("QLoRA / LoRA step time = %.2f (target <= 1.5); projection memory %.2fx smaller\n",
                q.step_seconds / full.step_seconds, double(full.projection_bytes) / double(q.projection_bytes));
    std::printf("(losses after %lld steps: LoRA %.4f, QLoRA %.4f)\n", (long long)steps + 1, full.final_loss, q.final_loss);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_qlora: %s\n", e.what());
    return 2;
  }
}
