// Pruning subcommands: distances (paper Eq. 7 table, l*(n), heatmap) and prune (export a pruned model).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <limits>
#include <map>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/model_loading.h"
#include "model/device.h"
#include "common/data_locator.h"
#include "common/error.h"
#include "common/hashing.h"
#include "common/svg.h"
#include "common/text_file.h"
#include "common/version.h"
#include "method/distances.h"
#include "formats/prune_export.h"
#include "experiment/pruning.h"
#include "evaluation/eval_data.h"
#include "evaluation/eval_tasks.h"
#include "evaluation/evaluate.h"
#include "model/loss.h"
#include "worker/stages.h"
#include "method/sweep.h"

namespace layerprune::cli {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const char* const kCalibrationHelp =
    "Calibration recipe: the documents of --data (JSONL with a \"text\" field per line, or plain text split\n"
    "into paragraphs on blank lines; whitespace-only documents dropped) are ordered by sha256(\"<seed>:<index>\")\n"
    "and the first --samples taken; each is BOS + its tokens, cut to --seq-len (at most the model's context).\n"
    "d(l, n) = arccos(cos(x_l, x_{l+n})) / pi at each sequence's last token, averaged over the samples, where\n"
    "x_l is the input of layer l and x_L the last layer's output before the final norm (Gromov et al., Eq. 7).\n"
    "Results are cached under --cache by (model fingerprint, data sha256, recipe, dtype).";

void add_calibration_flags(ArgParser& p) {
  p.option("data", "calibration text: .jsonl (field \"text\") or plain text (a name from `layerprune locate` works)", "")
      .option("samples", "calibration sequences", "64")
      .option("seq-len", "tokens per sequence including BOS (cut to the model's context)", "512")
      .option("seed", "sampling seed", "0")
      .option("batch", "sequences per forward pass", "4")
      .option("cache", "distance cache directory (\"\": ~/.cache/layerprune/distances)", "")
      .flag("no-cache", "measure even when a cached table exists (and do not store it)");
}

// The table for (model, calibration), from the cache when it holds it, else measured (and stored).
DistanceResult distances_for(const ArgParser& p, const LoadedModel& m) {
  CalibrationRecipe recipe;
  recipe.samples = p.get_int("samples");
  recipe.seq_len = p.get_int("seq-len");
  const int64_t seed = p.get_int("seed");
  if (seed < 0) throw UsageError("--seed must be >= 0");
  recipe.seed = uint64_t(seed);
  recipe.add_bos = m.tokenizer.add_bos_default();
  if (p.get("data").empty()) throw UsageError("--data (calibration text) is needed to measure distances");
  const std::string data = locate_data(p.get("data"));
  const std::string dir = p.get("model");
  DistanceResult r;
  r.model_dir = dir;
  r.model_fingerprint = model_fingerprint(dir);
  r.dtype = p.get("dtype");
  r.recipe = recipe;
  r.data_path = data;
  r.data_sha256 = sha256_file(data);
  r.key = distance_key(r.model_fingerprint, r.data_sha256, recipe, r.dtype);
  std::string cache = p.get("cache");
  if (cache.empty() && !cache_dir().empty()) cache = cache_dir() + "/distances";
  const std::string cached = cache.empty() ? "" : cache + "/" + r.key + ".json";
  if (!p.flag_set("no-cache") && !cached.empty() && fs::exists(cached)) {
    DistanceResult c = DistanceResult::from_json(read_file(cached), cached);
    if (c.key == r.key && c.table.layers() == m.model.config().num_hidden_layers) {
      std::fprintf(stderr, "distances: cached %s (measured in %.1fs by %s)\n", cached.c_str(), c.seconds,
                   c.code_version.c_str());
      return c;
    }
    std::fprintf(stderr, "distances: ignoring %s (another key or layer count)\n", cached.c_str());
  }
  auto t0 = std::chrono::steady_clock::now();
  CalibrationSet set = build_calibration(data, m.tokenizer, recipe, m.model.config().max_position_embeddings);
  std::fprintf(stderr, "distances: %lld samples (%lld tokens) of %lld documents in %s, seed %llu\n",
               (long long)set.sequences.size(), (long long)set.tokens(), (long long)set.documents, data.c_str(),
               (unsigned long long)recipe.seed);
  DistanceOptions opt;
  opt.batch_size = p.get_int("batch");
  r.table = measure_distances(m.model, set, opt);
  r.documents = set.documents;
  r.tokens = set.tokens();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.code_version = layerprune_version();
  if (!p.flag_set("no-cache") && !cached.empty()) {
    std::error_code ec;
    fs::create_directories(cache, ec);
    if (ec) throw InputError(cache + ": cannot create the distance cache (" + ec.message() + ")");
    write_file(cached, r.to_json());
  }
  return r;
}

void print_table(const DistanceResult& r) {
  const DistanceTable& t = r.table;
  const int64_t L = t.layers();
  std::printf("angular distances d(l, n), %s, %lld layers; calibration %s (%lld samples, seq %lld, seed %llu), %s\n",
              r.model_dir.c_str(), (long long)L, r.data_path.c_str(), (long long)r.recipe.samples,
              (long long)r.recipe.seq_len, (unsigned long long)r.recipe.seed, r.dtype.c_str());
  std::printf("%4s %6s %10s  %s\n", "n", "l*(n)", "d(l*, n)", "drop");
  for (int64_t n = 1; n <= L; ++n) {
    const int64_t l = t.best_start(n);
    std::printf("%4lld %6lld %10.6f  %lld-%lld\n", (long long)n, (long long)l, t.at(l, n), (long long)l,
                (long long)(l + n - 1));
  }
  if (t.has_block_influence()) {  // ShortGPT's BI_l = 1 - mean cos(x_l, x_l+1), the block_influence strategy's input
    std::printf("\nblock influence BI_l, l = 0..%lld (block_influence drops the lowest):", (long long)(L - 1));
    for (int64_t l = 0; l < L; ++l)
      std::printf("%s%.6f", l % 10 == 0 ? "\n  " : " ", t.block_influence()[size_t(l)]);
    std::printf("\n");
  }
  if (L > 40) {
    std::printf("(full table of %lld x %lld entries: --json or the SVG)\n", (long long)L, (long long)L);
    return;
  }
  std::printf("\nd(l, n): rows n, columns l\n%4s", "n\\l");
  for (int64_t l = 0; l < L; ++l) std::printf(" %6lld", (long long)l);
  std::printf("\n");
  for (int64_t n = 1; n <= L; ++n) {
    std::printf("%4lld", (long long)n);
    for (int64_t l = 0; l + n <= L; ++l) std::printf(" %6.4f", t.at(l, n));
    std::printf("\n");
  }
}

}  // namespace

// The paper's Figure 1c: d(l, n) over start layer l (x) and block size n (y), l*(n) marked.
std::string distance_heatmap_svg(const DistanceTable& t, const std::string& model) {
  const int64_t L = t.layers();
  Heatmap h;
  h.title = "angular distance d(x_l, x_l+n): " + model;
  h.x_label = "layer l";
  h.y_label = "block size n";
  h.value_label = "d";
  h.rows = L;
  h.cols = L;
  h.row_first = 1;
  h.values.assign(size_t(L * L), std::numeric_limits<double>::quiet_NaN());
  for (int64_t n = 1; n <= L; ++n) {
    for (int64_t l = 0; l + n <= L; ++l) h.values[size_t((n - 1) * L + l)] = t.at(l, n);
    h.marks.push_back(t.best_start(n));
  }
  return heatmap_svg(h);
}


int distances(int argc, char** argv) {
  ArgParser p("distances", "Angular distance between the inputs of layers l and l+n for every block size n (paper\n"
                           "Eq. 7), the block l*(n) the similarity strategy would drop, and each layer's block influence\n"
                           "BI_l = 1 - mean cos(x_l, x_l+1) over calibration tokens (ShortGPT; block_influence).");
  add_model_flags(p);
  add_calibration_flags(p);
  p.option("svg", "write the heatmap of d over (l, n) here (the paper's Figure 1c)", "")
      .option("out", "write the result JSON here", "")
      .epilog(kCalibrationHelp);
  if (!p.parse(argc, argv)) return 0;
  LoadedModel m = load_model(p);
  DistanceResult r = distances_for(p, m);
  if (!p.get("svg").empty()) write_file(p.get("svg"), distance_heatmap_svg(r.table, fs::path(r.model_dir).filename().string()));
  if (!p.get("out").empty()) write_file(p.get("out"), r.to_json());
  if (p.flag_set("json")) std::cout << r.to_json() << std::endl;
  else print_table(r);
  return 0;
}

int prune(int argc, char** argv) {
  ArgParser p("prune", "Drop a block of layers and write the pruned model as a Hugging Face directory (layers\n"
                       "renumbered, num_hidden_layers updated). Say what to drop with one of --fraction, --n,\n"
                       "--drop or --keep.");
  add_model_flags(p);
  add_calibration_flags(p);
  p.option("out", "output directory")
      .option("strategy", "similarity (the block with the smallest distance), simple (the n layers before the "
                          "last) or block_influence (the n layers of lowest BI)",
              "similarity")
      .option("fraction", "drop n = round(fraction x L) layers (halves up)", "")
      .option("n", "drop this many layers", "")
      .option("drop", "drop exactly these layers (e.g. 2-3)", "")
      .option("keep", "keep exactly these layers (e.g. 0,1,4)", "")
      .epilog(std::string("Strategies: similarity drops l*(n)..l*(n)+n-1 with l*(n) = argmin_l d(l, n); simple drops\n"
                          "L-1-n..L-2 (the final layer is kept); block_influence drops the n layers with the lowest\n"
                          "BI_l = 1 - mean cos(x_l, x_l+1) over calibration tokens (ShortGPT), contiguous or not.\n"
                          "--data is needed for similarity and block_influence.\n") +
              kCalibrationHelp);
  if (!p.parse(argc, argv)) return 0;
  int given = 0;
  for (const char* f : {"fraction", "n", "drop", "keep"}) given += p.given(f) ? 1 : 0;
  if (given != 1) throw UsageError("prune: give exactly one of --fraction, --n, --drop, --keep");
  // Before loading (minutes for a large model): similarity and block_influence pruning need calibration data.
  const Strategy strategy = parse_strategy(p.get("strategy"));
  const bool drops = p.given("n") ? p.get_int("n") > 0 : p.given("fraction") && p.get_double("fraction") > 0;
  if (drops && strategy_needs_distances(strategy) && p.get("data").empty())
    throw UsageError(std::string("prune: the ") + strategy_name(strategy) +
                     " strategy needs --data (calibration text) to measure distances");
  LoadedModel m = load_model(p);
  const int64_t L = m.model.config().num_hidden_layers;
  PrunePlan plan;
  json how;
  if (p.given("drop") || p.given("keep")) {
    const bool keep = p.given("keep");
    std::vector<int64_t> list = parse_layer_list(p.get(keep ? "keep" : "drop"), keep ? "--keep" : "--drop");
    plan.layers = L;
    plan.kept = kept_layers_from(p.get("keep"), p.get("drop"), L);
    plan.n = L - int64_t(plan.kept.size());
    how = {{"rule", keep ? "keep" : "drop"}, {"layers", list}};
  } else {
    const int64_t n = p.given("n") ? p.get_int("n") : layers_to_prune(p.get_double("fraction"), L);
    DistanceResult r;
    const bool measured = strategy_needs_distances(strategy) && n > 0;
    if (measured) r = distances_for(p, m);
    plan = plan_pruning(strategy, L, n, measured ? &r.table : nullptr);
    // first_dropped: for block_influence the lowest dropped layer (the dropped set need not be one block).
    how = {{"rule", strategy_name(strategy)}, {"n", n}, {"first_dropped", plan.first_dropped},
           {"distance", plan.distance}};
    if (p.given("fraction")) how["fraction"] = p.get_double("fraction");
    if (measured) how["distance_key"] = r.key;
    if (measured && strategy == Strategy::kBlockInfluence) how["block_influence"] = r.table.block_influence();
  }
  if (plan.kept.empty()) throw InputError("prune: every layer would be dropped; at least one must stay");
  PruneExport e = export_pruned_model(p.get("model"), plan.kept, p.get("out"));
  std::vector<int64_t> dropped;
  for (int64_t l = 0; l < L; ++l)
    if (std::find(plan.kept.begin(), plan.kept.end(), l) == plan.kept.end()) dropped.push_back(l);
  if (p.flag_set("json")) {
    std::cout << json{{"out", p.get("out")}, {"layers", L}, {"kept", plan.kept}, {"dropped", dropped},
                      {"realised_fraction", double(dropped.size()) / double(L)}, {"how", how},
                      {"bytes_written", e.bytes_written}, {"files", e.files}}
                     .dump()
              << std::endl;
  } else {
    std::printf("%s: dropped %zu of %lld layers (%s; realised fraction %.3f), kept %s -> %s (%lld layers, %.1f MB)\n",
                p.get("model").c_str(), dropped.size(), (long long)L,
                dropped.empty() ? "none" : format_layer_ranges(dropped).c_str(), double(dropped.size()) / double(L),
                format_layer_ranges(plan.kept).c_str(), p.get("out").c_str(), (long long)e.kept_layers,
                double(e.bytes_written) / 1e6);
  }
  return 0;
}

int sweep(int argc, char** argv) {
  ArgParser p("sweep", "Accuracy and loss against the fraction of layers pruned, for each strategy, without healing:\n"
                       "the paper's curves for one model. Every variant is evaluated on the same items by the\n"
                       "shared-prefix sweep (the base model runs once per batch; each variant resumes from its\n"
                       "first dropped layer), which gives the same numbers as evaluating each pruned model alone.");
  add_model_flags(p);
  add_bos_flags(p);
  add_calibration_flags(p);
  p.option("strategies", "comma-separated: similarity, simple, block_influence", "similarity,simple")
      .option("fractions", "comma-separated pruning fractions (default: every n = 0..L-1)", "")
      .option("tasks", "comma-separated: mmlu, boolq", "mmlu,boolq")
      .option("mmlu-data", "MMLU directory (dev/, test/)", "mmlu")
      .option("shots", "MMLU few-shot examples", "5")
      .option("subjects", "MMLU subjects, comma-separated (default: all)", "")
      .option("limit", "MMLU questions per subject (0: all)", "0")
      .option("boolq-data", "BoolQ JSONL", "boolq")
      .option("boolq-limit", "BoolQ questions (0: all)", "0")
      .option("loss-data", "held-out text for the loss of each variant (\"\": no loss)", "")
      .option("loss-windows", "loss windows per variant (0: all)", "0")
      .option("batch", "rows per forward pass", "8")
      .epilog(std::string(kEvalRecipe) + "\n" + kCalibrationHelp);
  if (!p.parse(argc, argv)) return 0;
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<Strategy> strategies;
  for (const std::string& s : split_commas(p.get("strategies"))) strategies.push_back(parse_strategy(s));
  if (strategies.empty()) throw UsageError("sweep: --strategies is empty");
  const auto measuring = std::find_if(strategies.begin(), strategies.end(), strategy_needs_distances);
  const bool needs_table = measuring != strategies.end();  // similarity or block_influence: distances needed
  if (needs_table && p.get("data").empty())
    throw UsageError(std::string("sweep: the ") + strategy_name(*measuring) +
                     " strategy needs --data (calibration text) to measure distances");
  // Data first (with the model's tokenizer, which loads in a moment): bad data fails before the model loads.
  EvaluationSpec spec;
  std::vector<std::string> tasks = split_commas(p.get("tasks"));
  for (const std::string& t : tasks) {
    if (t == "mmlu") {
      spec.mmlu = true;
      spec.mmlu_data = locate_data(p.get("mmlu-data"));
      spec.mmlu_subjects = split_commas(p.get("subjects"));
      spec.mmlu_shots = p.get_int("shots");
      spec.mmlu_limit = p.get_int("limit");
    } else if (t == "boolq") {
      spec.boolq = true;
      spec.boolq_data = locate_data(p.get("boolq-data"));
      spec.boolq_limit = p.get_int("boolq-limit");
    } else {
      throw UsageError("sweep: unknown task '" + t + "' (mmlu, boolq)");
    }
  }
  if (!p.get("loss-data").empty()) {
    spec.loss = true;
    spec.loss_data = locate_data(p.get("loss-data"));
    spec.loss_seq_len = 0;  // the model's context
    spec.loss_windows = p.get_int("loss-windows");
  }
  const EvalData data = load_eval_data(spec, Tokenizer::load_dir(p.get("model")));
  LoadedModel m = load_model(p);
  const int64_t L = m.model.config().num_hidden_layers;
  std::vector<int64_t> ns;
  if (p.get("fractions").empty()) {
    for (int64_t n = 0; n < L; ++n) ns.push_back(n);
  } else {
    for (const std::string& f : split_commas(p.get("fractions"))) {
      char* end = nullptr;
      const double v = std::strtod(f.c_str(), &end);
      if (*end != '\0') throw UsageError("sweep: --fractions: '" + f + "' is not a number");
      ns.push_back(layers_to_prune(v, L));
    }
  }
  std::sort(ns.begin(), ns.end());
  ns.erase(std::unique(ns.begin(), ns.end()), ns.end());
  DistanceResult dist;
  const bool need_distances = needs_table && ns.back() > 0;
  if (need_distances) dist = distances_for(p, m);

  std::vector<PointSpec> points;
  for (int64_t n : ns)
    for (Strategy s : strategies) points.push_back({"", strategy_name(s), n});
  EvalOptions eo;
  eo.batch_size = p.get_int("batch");
  eo.add_bos = add_bos_from_flags(p, m.tokenizer);
  EvaluateStats stats;
  const std::vector<PointResult> results =
      evaluate_points(m.model, m.tokenizer, data, points, need_distances ? &dist.table : nullptr, eo, &stats);
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const int64_t truncated = stats.truncated;  // the same rows for every variant
  json rows = json::array();
  for (size_t i = 0; i < points.size(); ++i) {
    const PointResult& pr = results[i];
    json r{{"strategy", points[i].strategy}, {"n", points[i].n}, {"fraction", double(points[i].n) / double(L)},
           {"kept", pr.kept}, {"dropped", pr.dropped}};
    for (const std::string& t : tasks) r[t] = pr.metrics.at(t);
    if (pr.metrics.count("loss")) r["loss"] = pr.metrics.at("loss");
    rows.push_back(r);
  }
  if (p.flag_set("json")) {
    json out{{"model", p.get("model")}, {"layers", L}, {"points", rows}, {"items", data.items.size()},
             {"variants", stats.variants}, {"truncated", truncated}, {"layer_evals_shared", stats.sweep.layer_evals_shared},
             {"layer_evals_naive", stats.sweep.layer_evals_naive}, {"data_sha256", data.data_sha256},
             {"shots", p.get_int("shots")}, {"add_bos", eo.add_bos}, {"dtype", p.get("dtype")}, {"device", describe_device(m.model.device())},
             {"code_version", layerprune_version()}, {"wall_seconds", wall}};
    if (need_distances) out["distance_key"] = dist.key;
    std::cout << out.dump() << std::endl;
    return 0;
  }
  std::printf("%s: %lld layers; %zu grid points, %zu distinct models, %zu items\n", p.get("model").c_str(),
              (long long)L, points.size(), stats.variants, data.items.size());
  std::printf("%-10s %3s %8s  %-12s", "strategy", "n", "fraction", "dropped");
  for (const std::string& t : tasks) std::printf(" %7s", t.c_str());
  if (!p.get("loss-data").empty()) std::printf(" %8s", "loss");
  std::printf("\n");
  for (const json& r : rows) {
    std::string dropped = format_layer_ranges(r["dropped"].get<std::vector<int64_t>>());
    std::printf("%-10s %3lld %8.3f  %-12s", r["strategy"].get<std::string>().c_str(), (long long)r["n"].get<int64_t>(),
                r["fraction"].get<double>(), dropped.empty() ? "-" : dropped.c_str());
    for (const std::string& t : tasks) std::printf(" %7.4f", r[t].get<double>());
    if (r.contains("loss")) std::printf(" %8.4f", r["loss"].get<double>());
    std::printf("\n");
  }
  if (truncated > 0)
    std::printf("%lld of %zu prompts left-truncated to the model's %lld positions (as lm-evaluation-harness does)\n",
                (long long)truncated, data.items.size(), (long long)m.model.config().max_position_embeddings);
  std::printf("shared-prefix sweep: %lld layer evaluations instead of %lld (%.2fx less work); %.1fs\n",
              (long long)stats.sweep.layer_evals_shared, (long long)stats.sweep.layer_evals_naive,
              stats.sweep.work_ratio(), wall);
  return 0;
}

}  // namespace layerprune::cli
