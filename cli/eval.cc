// `layerprune eval`: MMLU or BoolQ accuracy of a model, whole or with layers dropped, scored as
// lm-evaluation-harness v0.4 scores them (evaluation/eval_tasks.h, evaluation/evaluate.h).
#include <chrono>
#include <cstdio>
#include <iostream>
#include <set>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/model_loading.h"
#include "model/device.h"
#include "common/args.h"
#include "common/data_locator.h"
#include "common/error.h"
#include "common/hashing.h"
#include "common/text_file.h"
#include "common/version.h"
#include "evaluation/eval_data.h"
#include "evaluation/eval_tasks.h"
#include "evaluation/evaluate.h"
#include "experiment/pruning.h"

namespace layerprune::cli {

namespace {

using nlohmann::json;


}  // namespace

int eval(int argc, char** argv) {
  ArgParser p("eval", "MMLU (k-shot) or BoolQ (0-shot) accuracy of a model, whole or with layers dropped, scored as\n"
                      "lm-evaluation-harness v0.4 scores them.");
  add_model_flags(p);
  add_bos_flags(p);
  p.option("task", "mmlu | boolq")
      .option("data", "MMLU directory (dev/ and test/ CSVs, either layout) or BoolQ JSONL (default: located, see "
                      "`layerprune locate mmlu|boolq`)", "")
      .option("shots", "MMLU few-shot examples (the first k dev rows); BoolQ is 0-shot", "5")
      .option("split", "MMLU questions asked: test | val", "test")
      .option("subjects", "MMLU subjects, comma-separated (default: every subject found)", "")
      .option("limit", "first N questions (per subject for MMLU; 0: all)", "0")
      .option("layers", "kept layers, comma-separated (default: all)", "")
      .option("drop", "dropped layers, comma-separated (the rest are kept)", "")
      .option("batch", "sequences per forward pass (does not change any answer)", "8")
      .flag("no-prefix-cache", "MMLU: run each question's full prompt, not its subject's shared few-shot prefix once + "
                               "the question on its cached keys/values (same answers)")
      .option("records", "write one JSON line per question (log-likelihoods, prediction, gold) to this file", "")
      .epilog(std::string("Recipe: ") + kEvalRecipe + ".");
  if (!p.parse(argc, argv)) return 0;
  const auto t0 = std::chrono::steady_clock::now();
  const std::string task = p.get("task");
  if (task != "mmlu" && task != "boolq") throw UsageError("eval: --task must be mmlu or boolq, not '" + task + "'");
  const int64_t shots = p.get_int("shots"), limit = p.get_int("limit"), batch = p.get_int("batch");
  if (shots < 0 || limit < 0 || batch < 1) throw UsageError("eval: --shots and --limit must be >= 0, --batch >= 1");
  if (task == "boolq" && p.given("shots") && shots != 0) throw UsageError("eval: BoolQ is evaluated 0-shot (--shots 0)");
  const std::string data = locate_data(p.get("data").empty() ? task : p.get("data"));

  // Data first: a bad file fails before the model loads.
  std::vector<EvalItem> items;
  std::vector<std::string> files;
  if (task == "mmlu") {
    MmluReadOptions ro;
    ro.subjects = split_commas(p.get("subjects"));
    ro.split = p.get("split");
    ro.shots = shots;
    ro.limit = limit;
    std::vector<MmluSubject> subjects = read_mmlu(data, ro);
    for (const MmluSubject& s : subjects) {
      if (!s.dev_file.empty()) files.push_back(s.dev_file);
      files.push_back(s.eval_file);
    }
    items = mmlu_items(subjects, shots);
  } else {
    items = boolq_items(read_boolq(data, limit));
    files.push_back(data);
  }
  json hashes = json::object();
  for (const std::string& f : files) hashes[f] = sha256_file(f);

  LoadedModel m = load_model(p);
  EvalOptions eo;
  eo.batch_size = batch;
  eo.add_bos = add_bos_from_flags(p, m.tokenizer);
  eo.reuse_prefix = !p.flag_set("no-prefix-cache");
  eo.layers = kept_layers_from(p.get("layers"), p.get("drop"), m.model.config().num_hidden_layers);
  std::vector<int64_t> kept = m.model.kept_layers(eo.layers);
  EvalReport rep = evaluate(m.model, m.tokenizer, items, eo);
  if (!p.get("records").empty()) write_file(p.get("records"), eval_records_jsonl(items, rep));
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string truncation = std::to_string(rep.truncated) + " prompts left-truncated to " +
                                 std::to_string(rep.max_length) + " tokens";
  const std::string prefix_cache =
      rep.prefix_reuse ? std::to_string(rep.prefix_cached_items) + " of " + std::to_string(rep.overall.total) +
                             " items used the cached prefix (" + std::to_string(rep.prefixes) + " prefixes); " +
                             std::to_string(rep.tokens_processed) + " tokens processed vs " +
                             std::to_string(rep.full_prompt_tokens) + " for full prompts"
                       : "full prompts: " + std::to_string(rep.tokens_processed) + " tokens processed";

  if (p.flag_set("json")) {
    json subjects = json::object();
    if (task == "mmlu")
      for (const auto& [name, s] : rep.subjects) subjects[name] = {{"acc", s.acc()}, {"correct", s.correct}, {"total", s.total}};
    json out{{"task", task}, {"acc", rep.overall.acc()}, {"correct", rep.overall.correct},
             {"total", rep.overall.total}, {"subjects", subjects}, {"shots", task == "mmlu" ? shots : 0},
             {"add_bos", eo.add_bos}, {"batch_size", batch}, {"truncated", rep.truncated},
             {"truncation", truncation}, {"max_length", rep.max_length}, {"rows", rep.rows},
             {"prefix_cache", {{"enabled", rep.prefix_reuse}, {"cached_items", rep.prefix_cached_items},
                               {"prefixes", rep.prefixes}, {"tokens_processed", rep.tokens_processed},
                               {"full_prompt_tokens", rep.full_prompt_tokens}, {"summary", prefix_cache}}},
             {"data", data}, {"data_sha256", hashes}, {"model", p.get("model")},
             {"layers", kept}, {"num_hidden_layers", m.model.config().num_hidden_layers},
             {"tokenizer_sha256", m.tokenizer.file_sha256()}, {"dtype", p.get("dtype")}, {"device", describe_device(m.model.device())},
             {"records", p.get("records")}, {"code_version", layerprune_version()}, {"wall_seconds", wall},
             {"recipe", kEvalRecipe}};
    if (task == "mmlu") out["split"] = p.get("split");
    std::cout << out.dump() << std::endl;
  } else {
    if (task == "mmlu") {
      std::printf("%-40s %8s %10s\n", "subject", "acc", "correct");
      for (const auto& [name, s] : rep.subjects)
        std::printf("%-40s %8.4f %5lld/%-5lld\n", name.c_str(), s.acc(), (long long)s.correct, (long long)s.total);
    }
    std::printf("%-40s %8.4f %5lld/%-5lld\n", (task == "mmlu" ? "overall (micro-average)" : "boolq"),
                rep.overall.acc(), (long long)rep.overall.correct, (long long)rep.overall.total);
    std::printf("%s; %zu of %lld layers kept; %lld-shot; %.1fs\n", truncation.c_str(), kept.size(),
                (long long)m.model.config().num_hidden_layers, (long long)(task == "mmlu" ? shots : 0), wall);
    std::printf("%s\n", prefix_cache.c_str());
  }
  return 0;
}

}  // namespace layerprune::cli
