// The shared-prefix sweep (method/sweep.h) against evaluating every pruned variant on its own, measured in
// one run on a random 32-layer Llama: both strategies x 10 fractions (0.05 .. 0.5) on the same BoolQ items.
//
// Printed: layer evaluations of each (counted work), wall time of each, and how much of the counted saving
// the wall clock realises: (naive time / sweep time) / (naive work / sweep work). The target is at
// least 0.8 (the bookkeeping must be cheap). Answers must be identical; the program exits 1 if not.
//
// Usage: bench_sweep [--items N] [--dim D] [--layers L] [--batch B] [--threads T]
// Needs $LAYERPRUNE_DATA (or ../shared/data) for the stories260K tokenizer, BoolQ and TinyStories text.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>

#include "common/args.h"
#include "common/data_locator.h"
#include "common/error.h"
#include "method/distances.h"
#include "evaluation/eval_data.h"
#include "evaluation/eval_tasks.h"
#include "evaluation/evaluate.h"
#include "model/make_model.h"
#include "experiment/pruning.h"
#include "model/runtime.h"
#include "method/sweep.h"

using namespace layerprune;

namespace {
double seconds(const std::function<void()>& f) {
  auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

int main(int argc, char** argv) {
  ensure_passive_openmp(argv);
  ArgParser p("bench_sweep", "Shared-prefix sweep vs evaluating each pruned variant on its own.");
  p.option("items", "BoolQ items", "12")
      .option("dim", "hidden size of the random model", "128")
      .option("layers", "layers of the random model", "32")
      .option("batch", "rows per forward pass", "4")
      .option("threads", "CPU threads (0: all cores)", "0");
  try {
    if (!p.parse(argc, argv)) return 0;
    const int threads = configure_threads(int(p.get_int("threads")));
    const std::string tok_path = locate_data("stories260K/tok512.model");
    const std::string boolq = locate_data("boolq");
    const std::string text = locate_data("tinystories");
    const int64_t D = p.get_int("dim"), L = p.get_int("layers");
    LlamaConfig c;
    c.hidden_size = D;
    c.intermediate_size = D * 8 / 3 / 8 * 8;
    c.num_hidden_layers = L;
    c.num_attention_heads = D / 32;
    c.num_key_value_heads = D / 32;
    c.vocab_size = 512;
    c.max_position_embeddings = 512;
    const std::string dir = (std::filesystem::temp_directory_path() / "layerprune-bench-sweep").string();
    MakeModelOptions mo;
    mo.tokenizer_model = tok_path;
    make_random_model(c, dir, mo);
    LlamaModel model = LlamaModel::load(dir);
    Tokenizer tok = Tokenizer::load(tok_path);
    std::vector<EvalItem> items = boolq_items(read_boolq(boolq, p.get_int("items")));

    CalibrationRecipe recipe;
    recipe.samples = 8;
    recipe.seq_len = 128;
    DistanceTable table = measure_distances(model, build_calibration(text, tok, recipe, 512));
    std::vector<SweepVariant> variants;
    for (Strategy s : {Strategy::kSimilarity, Strategy::kSimple})
      for (int k = 1; k <= 10; ++k) {
        const int64_t n = layers_to_prune(0.05 * k, L);
        PrunePlan plan = plan_pruning(s, L, n, &table);
        variants.push_back({std::string(strategy_name(s)) + " n=" + std::to_string(n), plan.kept});
      }
    EvalOptions eo;
    eo.batch_size = p.get_int("batch");
    eo.progress = false;

    SweepStats stats;
    std::vector<EvalReport> swept;
    const double t_sweep = seconds([&] { swept = evaluate_sweep(model, tok, items, variants, eo, &stats); });
    std::vector<EvalReport> alone;
    const double t_naive = seconds([&] {
      for (const SweepVariant& v : variants) {
        eo.layers = v.kept;
        alone.push_back(evaluate(model, tok, items, eo));
      }
    });
    int64_t differing = 0;
    double worst = 0;
    for (size_t v = 0; v < variants.size(); ++v)
      for (size_t i = 0; i < items.size(); ++i) {
        differing += alone[v].items[i].pred != swept[v].items[i].pred;
        for (size_t ch = 0; ch < alone[v].items[i].loglik.size(); ++ch)
          worst = std::max(worst, std::abs(alone[v].items[i].loglik[ch] - swept[v].items[i].loglik[ch]));
      }
    const double work = stats.work_ratio(), wall = t_naive / t_sweep;
    std::printf("random Llama: %lld layers, dim %lld, FFN %lld, vocab 512; %zu BoolQ items, batch %lld, %d threads\n",
                (long long)L, (long long)D, (long long)c.intermediate_size, items.size(),
                (long long)eo.batch_size, threads);
    std::printf("%zu variants (similarity and simple, fractions 0.05..0.50), %lld batches\n", variants.size(),
                (long long)stats.batches);
    std::printf("layer evaluations: sweep %lld, each variant alone %lld -> counted ratio %.2f\n",
                (long long)stats.layer_evals_shared, (long long)stats.layer_evals_naive, work);
    std::printf("wall time:         sweep %.2fs, each variant alone %.2fs -> wall ratio %.2f\n", t_sweep, t_naive, wall);
    std::printf("wall ratio / counted ratio = %.2f (target >= 0.8)\n", wall / work);
    std::printf("answers: %lld of %zu predictions differ; max |log-lik difference| %.3g\n", (long long)differing,
                variants.size() * items.size(), worst);
    return differing == 0 && worst <= 1e-4 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_sweep: %s\n", e.what());
    return 2;
  }
}
