// The experiment YAML (experiment/experiment.h): the shipped experiments/*.yaml, the grid and its tasks
// counted by hand, schema errors with their exact file:line:column, the JSON round trip; and the paper's
// Figure 2 from results (coordinator/curves.h): table, SVG structure, gaps.
#include <gtest/gtest.h>

#include <chrono>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>

#include "common/data_locator.h"
#include "common/text_file.h"
#include "coordinator/curves.h"
#include "experiment/experiment.h"
#include "tests/test_support.h"

namespace layerprune {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::input_error;
using testing::TempDir;

// Sets an environment variable for one test and restores it afterwards.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) had_ = true, old_ = old;
    if (value) setenv(name, value, 1);
    else unsetenv(name);
  }
  ~ScopedEnv() {
    if (had_) setenv(name_.c_str(), old_.c_str(), 1);
    else unsetenv(name_.c_str());
  }

 private:
  std::string name_, old_;
  bool had_ = false;
};

LayerResolver fixed_layers(int64_t layers) {
  return [layers](const ModelSpec&) { return layers; };
}

std::vector<std::string> point_keys(const ExperimentPlan& plan) {
  std::vector<std::string> keys;
  for (const GridPoint& p : plan.points) keys.push_back(p.key);
  return keys;
}

const TaskSpec* find_task(const ExperimentPlan& plan, const std::string& key) {
  for (const TaskSpec& t : plan.tasks)
    if (t.key == key) return &t;
  return nullptr;
}

// Every task's dependencies exist and come before it; every point is reported by exactly one task.
void expect_consistent(const ExperimentPlan& plan) {
  std::set<std::string> seen_tasks, reported;
  for (const TaskSpec& t : plan.tasks) {
    for (const std::string& d : t.depends_on) EXPECT_TRUE(seen_tasks.count(d)) << t.key << " depends on " << d;
    EXPECT_TRUE(seen_tasks.insert(t.key).second) << "duplicate task " << t.key;
    for (const std::string& p : t.points) EXPECT_TRUE(reported.insert(p).second) << p << " reported twice";
  }
  std::set<std::string> keys;
  for (const GridPoint& p : plan.points) EXPECT_TRUE(keys.insert(p.key).second) << "duplicate point " << p.key;
  EXPECT_EQ(reported, keys);
}

// ------------------------------------------------------------------------------------------------
// The shipped experiments
// ------------------------------------------------------------------------------------------------

TEST(Experiment, Stories260kWithTheDefaultResolverOnRealData) {
  LP_REQUIRE_DATA(bin, "stories260K/stories260K.bin");
  const std::string data = testing::data_dir();
  ScopedEnv env("LAYERPRUNE_DATA", data.c_str());
  const Experiment e = parse_experiment_file(testing::source_file("experiments/stories260k.yaml"));
  ASSERT_EQ(e.models.size(), 1u);
  EXPECT_EQ(e.name, "stories260k");
  EXPECT_EQ(e.models[0].path, fs::path(data + "/stories260K/stories260K.bin").lexically_normal().string());
  EXPECT_EQ(e.models[0].tokenizer, fs::path(data + "/stories260K/tok512.model").lexically_normal().string());
  EXPECT_EQ(e.models[0].format, "llama2c");
  EXPECT_EQ(e.models[0].dtype, "float32");
  EXPECT_EQ(e.layer_counts, (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(e.calibration.samples, 64);
  EXPECT_EQ(e.calibration.seq_len, 256);
  ASSERT_EQ(e.healing.size(), 2u);
  EXPECT_EQ(e.healing[0].name, "off");
  EXPECT_FALSE(e.healing[0].enabled);
  EXPECT_EQ(e.healing[1].name, "qlora");
  EXPECT_TRUE(e.healing[1].enabled);
  EXPECT_EQ(e.healing[1].quant, "nf4");
  EXPECT_EQ(e.healing[1].steps, 60);
  EXPECT_EQ(e.healing[1].global_batch, 8);
  EXPECT_EQ(e.healing[1].micro_batch, 4);
  EXPECT_EQ(e.healing[1].seq_len, 128);
  // Healing trains on the first 90% of the TinyStories tokens, the loss is measured on the other 10%.
  EXPECT_EQ(e.healing[1].train_begin, 0.0);
  EXPECT_EQ(e.healing[1].train_end, 0.9);
  EXPECT_EQ(e.evaluation.loss_begin, 0.9);
  EXPECT_EQ(e.evaluation.loss_end, 1.0);
  EXPECT_EQ(e.evaluation.mmlu_subjects.size(), 4u);
  EXPECT_TRUE(e.evaluation.mmlu && e.evaluation.boolq && e.evaluation.loss);
  // The data the experiment names is there (the parser itself does not ask).
  for (const std::string& f : {e.models[0].tokenizer, e.calibration.data, e.healing[1].train_data,
                               e.evaluation.mmlu_data + "/dev", e.evaluation.boolq_data, e.evaluation.loss_data})
    EXPECT_TRUE(fs::exists(f)) << f;
  for (const std::string& s : e.evaluation.mmlu_subjects)
    EXPECT_TRUE(fs::exists(e.evaluation.mmlu_data + "/test/" + s + "_test.csv")) << s;

  const ExperimentPlan plan = plan_experiment(e);  // the default resolver reads the llama2.c header
  EXPECT_EQ(plan.experiment.models[0].layers, 5);
  // By hand: per healing variant, n = 0 once ("none") + n = 1..4 x 2 strategies = 9; two variants: 18.
  const std::vector<std::string> expected = {
      "stories260k/n=0/none/off/seed=0",       "stories260k/n=0/none/qlora/seed=0",
      "stories260k/n=1/similarity/off/seed=0", "stories260k/n=1/similarity/qlora/seed=0",
      "stories260k/n=1/simple/off/seed=0",     "stories260k/n=1/simple/qlora/seed=0",
      "stories260k/n=2/similarity/off/seed=0", "stories260k/n=2/similarity/qlora/seed=0",
      "stories260k/n=2/simple/off/seed=0",     "stories260k/n=2/simple/qlora/seed=0",
      "stories260k/n=3/similarity/off/seed=0", "stories260k/n=3/similarity/qlora/seed=0",
      "stories260k/n=3/simple/off/seed=0",     "stories260k/n=3/simple/qlora/seed=0",
      "stories260k/n=4/similarity/off/seed=0", "stories260k/n=4/similarity/qlora/seed=0",
      "stories260k/n=4/simple/off/seed=0",     "stories260k/n=4/simple/qlora/seed=0"};
  EXPECT_EQ(point_keys(plan), expected);
  // Tasks: 1 distances + 1 evaluate (the 9 "off" points) + 9 heal = 11.
  ASSERT_EQ(plan.tasks.size(), 11u);
  EXPECT_EQ(plan.tasks[0].key, "distances/stories260k");
  EXPECT_EQ(plan.tasks[1].key, "evaluate/stories260k/seed=0");
  EXPECT_EQ(plan.tasks[1].points.size(), 9u);
  EXPECT_EQ(plan.tasks[1].depends_on, std::vector<std::string>{"distances/stories260k"});
  EXPECT_EQ(plan.tasks[2].key, "heal/stories260k/n=0/none/qlora/seed=0");
  EXPECT_TRUE(plan.tasks[2].depends_on.empty());
  const TaskSpec* sim = find_task(plan, "heal/stories260k/n=3/similarity/qlora/seed=0");
  const TaskSpec* simple = find_task(plan, "heal/stories260k/n=3/simple/qlora/seed=0");
  ASSERT_TRUE(sim && simple);
  EXPECT_EQ(sim->depends_on, std::vector<std::string>{"distances/stories260k"});
  EXPECT_TRUE(simple->depends_on.empty());
  expect_consistent(plan);
}

// The Llama-2 configs of the shared data (70B: the chat model's config, the same architecture as the base),
// and Mistral-7B's published config (tests/golden/configs).
int64_t llama2_layers(const ModelSpec& m) {
  ModelSpec real = m;
  if (m.name == "mistral-7b") {
    testing::TempDir d;
    std::filesystem::copy_file(testing::source_file("tests/golden/configs/Mistral-7B-v0.1.json"), d.file("config.json"));
    real.path = d.path();
    return default_layer_resolver(real);
  }
  const std::string dir = m.name == "llama2-7b"    ? "Llama-2-7b-hf"
                          : m.name == "llama2-13b" ? "Llama-2-13b-hf"
                                                   : "Llama-2-70b-chat-hf";
  real.path = testing::data_dir() + "/llama2/" + dir;
  return default_layer_resolver(real);
}

struct PaperGrid {
  const char* file;
  const char* model;
  int64_t layers, tp;
  std::vector<int64_t> depths;  // round(f x L), halves up, for f = 0, 0.05, ..., 0.9
  int64_t rank, seq_len;        // the paper's App. A.1 healing recipe for this model
  double lr;
};

TEST(Experiment, Llama2PaperGridsWithTheRealConfigs) {
  for (const char* dir : {"Llama-2-7b-hf", "Llama-2-13b-hf", "Llama-2-70b-chat-hf"})
    if (testing::data_file(std::string("llama2/") + dir + "/config.json").empty())
      GTEST_SKIP() << "llama2/" << dir << "/config.json not found under " << testing::data_dir()
                   << " (set LAYERPRUNE_DATA to the shared data directory)";
  ScopedEnv models("MODELS", "/cluster/models");
  const std::vector<PaperGrid> grids = {
      // 32 x 0.05 = 1.6: n = 0, 2 (1.6), 3 (3.2), 5 (4.8), 6 (6.4), 8, 10 (9.6), 11 (11.2), 13 (12.8), ...
      {"llama2-7b.yaml", "llama2-7b", 32, 1, {0, 2, 3, 5, 6, 8, 10, 11, 13, 14, 16, 18, 19, 21, 22, 24, 26, 27, 29},
       2, 2048, 3e-4},
      // 40 x 0.05 = 2 and 80 x 0.05 = 4: every step is a whole number of layers.
      {"llama2-13b.yaml", "llama2-13b", 40, 2, {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34, 36},
       64, 4096, 3e-4},
      {"llama2-70b-paper.yaml", "llama2-70b", 80, 8,
       {0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60, 64, 68, 72}, 8, 4096, 3e-5},
      // Mistral-7B: 32 layers like Llama-2-7B; the paper heals it with rank 4 and LR 3e-6.
      {"mistral-7b-paper.yaml", "mistral-7b", 32, 1, {0, 2, 3, 5, 6, 8, 10, 11, 13, 14, 16, 18, 19, 21, 22, 24, 26, 27, 29},
       4, 2048, 3e-6},
  };
  for (const PaperGrid& g : grids) {
    SCOPED_TRACE(g.file);
    const Experiment e = parse_experiment_file(testing::source_file(std::string("experiments/") + g.file));
    ASSERT_EQ(e.models.size(), 1u);
    EXPECT_EQ(e.models[0].name, g.model);
    EXPECT_EQ(e.models[0].tp, g.tp);
    EXPECT_EQ(e.models[0].dtype, "bfloat16");
    EXPECT_EQ(e.models[0].path.rfind("/cluster/models/", 0), 0u) << e.models[0].path;
    EXPECT_EQ(e.fractions.size(), 19u);
    EXPECT_EQ(e.strategies, (std::vector<std::string>{"similarity", "simple"}));
    // The paper's healing (App. A.1): the HealingSpec defaults, with the rank, LR and sequence length the
    // paper gives for this model.
    ASSERT_EQ(e.healing.size(), 2u);
    const HealingSpec& h = e.healing[1];
    EXPECT_EQ(h.name, "qlora");
    EXPECT_EQ(h.quant, "nf4");
    EXPECT_EQ(h.rank, g.rank);
    EXPECT_EQ(h.seq_len, g.seq_len);
    EXPECT_EQ(h.alpha, 0.0);
    EXPECT_EQ(h.dropout, 0.05);
    EXPECT_EQ(h.targets, (std::vector<std::string>{"gate_proj", "up_proj", "down_proj"}));
    EXPECT_EQ(h.steps, 5000);
    EXPECT_EQ(h.global_batch, 16);
    EXPECT_EQ(h.warmup, 100);
    EXPECT_EQ(h.lr, g.lr);
    EXPECT_TRUE(e.evaluation.mmlu && e.evaluation.boolq && e.evaluation.loss);
    EXPECT_EQ(e.evaluation.mmlu_shots, 5);
    EXPECT_TRUE(e.evaluation.mmlu_subjects.empty());  // all subjects
    EXPECT_EQ(e.evaluation.mmlu_limit, 0);

    const ExperimentPlan plan = plan_experiment(e, llama2_layers);
    EXPECT_EQ(plan.experiment.models[0].layers, g.layers);
    std::vector<int64_t> depths;
    for (const GridPoint& p : plan.points)
      if (depths.empty() || depths.back() != p.n) depths.push_back(p.n);
    EXPECT_EQ(depths, g.depths);
    // (1 + 18 x 2) points without healing, 18 x 2 healed (heal_unpruned: false: the unpruned model is not
    // healed); tasks: distances + evaluate + one heal per healed point.
    EXPECT_FALSE(e.healing[1].heal_unpruned);
    EXPECT_EQ(plan.points.size(), 73u);
    EXPECT_EQ(plan.tasks.size(), 2u + 36u);
    expect_consistent(plan);
  }
}

// ------------------------------------------------------------------------------------------------
// The grid
// ------------------------------------------------------------------------------------------------

// A valid experiment; tests change one line. Line numbers matter to the error tests below.
std::string base_yaml(const std::string& pruning = "  layers: [0, 1, 2]", const std::string& path = "/models/m",
                      const std::string& extra = "") {
  return "name: t\n"                              // 1
         "models:\n"                              // 2
         "  - name: m\n"                          // 3
         "    path: " + path + "\n"               // 4
         "pruning:\n" +                           // 5
         pruning + "\n"                           // 6
         "  strategies: [similarity, simple]\n"   // 7
         "calibration:\n"                         // 8
         "  data: /data/c4.jsonl\n"               // 9
         "evaluation:\n"                          // 10
         "  loss:\n"                              // 11
         "    data: /data/val.txt\n" + extra;     // 12
}

TEST(Experiment, FractionsRoundHalvesUpAndMerge) {
  // L = 5: 0.5 -> 2.5 -> 3; 0.3 -> 1.5 -> 2; 0.1 -> 0.5 -> 1, 0.15 -> 0.75 -> 1, 0.2 -> 1.0 -> 1 (one n);
  // 0.05 -> 0.25 -> 0 (the unpruned model, merged with 0.0).
  const Experiment e = parse_experiment(base_yaml("  fractions: [0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5]"), "f.yaml");
  EXPECT_EQ(e.fractions.size(), 7u);
  const ExperimentPlan plan = plan_experiment(e, fixed_layers(5));
  std::vector<std::string> expected = {"m/n=0/none/off/seed=0",       "m/n=1/similarity/off/seed=0",
                                       "m/n=1/simple/off/seed=0",     "m/n=2/similarity/off/seed=0",
                                       "m/n=2/simple/off/seed=0",     "m/n=3/similarity/off/seed=0",
                                       "m/n=3/simple/off/seed=0"};
  EXPECT_EQ(point_keys(plan), expected);
  EXPECT_DOUBLE_EQ(plan.points.back().fraction(), 0.6);  // realised n / L
  EXPECT_EQ(plan.points.back().layers, 5);
}

TEST(Experiment, UnprunedPointIsOnePerModelHealingAndSeed) {
  const std::string yaml = base_yaml("  layers: [2, 0, 0]", "/models/m",
                                     "healing:\n  - off\n  - {name: q, train_data: /data/train.txt}\nseeds: [3, 1]\n");
  const ExperimentPlan plan = plan_experiment(parse_experiment(yaml, "s.yaml"), fixed_layers(4));
  // n = 0: 2 healing x 2 seeds = 4 points ("none"); n = 2: 2 strategies x 2 healing x 2 seeds = 8. Seeds in
  // the file's order; n ascending whatever the file's order.
  const std::vector<std::string> expected = {
      "m/n=0/none/off/seed=3",       "m/n=0/none/off/seed=1",       "m/n=0/none/q/seed=3",
      "m/n=0/none/q/seed=1",         "m/n=2/similarity/off/seed=3", "m/n=2/similarity/off/seed=1",
      "m/n=2/similarity/q/seed=3",   "m/n=2/similarity/q/seed=1",   "m/n=2/simple/off/seed=3",
      "m/n=2/simple/off/seed=1",     "m/n=2/simple/q/seed=3",       "m/n=2/simple/q/seed=1"};
  EXPECT_EQ(point_keys(plan), expected);
  // One evaluate task per seed, each with its 3 "off" points; 6 heal tasks.
  std::vector<std::string> task_keys;
  for (const TaskSpec& t : plan.tasks) task_keys.push_back(t.key);
  EXPECT_EQ(task_keys, (std::vector<std::string>{
                           "distances/m", "evaluate/m/seed=3", "evaluate/m/seed=1", "heal/m/n=0/none/q/seed=3",
                           "heal/m/n=0/none/q/seed=1", "heal/m/n=2/similarity/q/seed=3", "heal/m/n=2/similarity/q/seed=1",
                           "heal/m/n=2/simple/q/seed=3", "heal/m/n=2/simple/q/seed=1"}));
  EXPECT_EQ(find_task(plan, "evaluate/m/seed=1")->points,
            (std::vector<std::string>{"m/n=0/none/off/seed=1", "m/n=2/similarity/off/seed=1", "m/n=2/simple/off/seed=1"}));
  expect_consistent(plan);
}

TEST(Experiment, HealUnprunedFalseSkipsHealingTheUnprunedModel) {
  const std::string yaml = base_yaml("  layers: [0, 2]", "/models/m",
                                     "healing:\n  - off\n  - train_data: /t.txt\n    heal_unpruned: false\n");
  const ExperimentPlan plan = plan_experiment(parse_experiment(yaml, "s.yaml"), fixed_layers(4));
  EXPECT_EQ(point_keys(plan), (std::vector<std::string>{"m/n=0/none/off/seed=0", "m/n=2/similarity/off/seed=0",
                                                         "m/n=2/similarity/qlora/seed=0", "m/n=2/simple/off/seed=0",
                                                         "m/n=2/simple/qlora/seed=0"}));
  expect_consistent(plan);
  EXPECT_CONTAINS(input_error([] {
                    parse_experiment(base_yaml("  layers: [1]", "/m", "healing:\n  - train_data: /t\n    heal_unpruned: \"no\"\n"),
                                     "e.yaml");
                  }),
                  "healing[0].heal_unpruned: expected true or false");
}

TEST(Experiment, HealingAtChosenDepthsOnly) {
  // L = 10: pruning at n = 0, 2, 4, 6; healing only at fractions 0.2 and 0.6 (n = 2, 6): no healed n = 0 or 4.
  const std::string yaml = base_yaml("  fractions: [0.0, 0.2, 0.4, 0.6]", "/models/m",
                                     "healing:\n  - off\n  - train_data: /t.txt\n    fractions: [0.2, 0.6]\n");
  const ExperimentPlan plan = plan_experiment(parse_experiment(yaml, "s.yaml"), fixed_layers(10));
  std::vector<std::string> healed;
  for (const std::string& k : point_keys(plan))
    if (k.find("/qlora/") != std::string::npos) healed.push_back(k);
  EXPECT_EQ(healed, (std::vector<std::string>{"m/n=2/similarity/qlora/seed=0", "m/n=2/simple/qlora/seed=0",
                                               "m/n=6/similarity/qlora/seed=0", "m/n=6/simple/qlora/seed=0"}));
  EXPECT_EQ(point_keys(plan).size(), 7u + 4u);
  expect_consistent(plan);
  // The same by n; the parsed experiment keeps the list (it is part of the experiment's identity).
  const Experiment by_n = parse_experiment(base_yaml("  layers: [0, 2, 4]", "/m", "healing:\n  - train_data: /t\n    layers: [4]\n"), "n.yaml");
  EXPECT_EQ(by_n.healing[0].layer_counts, (std::vector<int64_t>{4}));
  EXPECT_EQ(point_keys(plan_experiment(by_n, fixed_layers(10))),
            (std::vector<std::string>{"m/n=4/similarity/qlora/seed=0", "m/n=4/simple/qlora/seed=0"}));
  // A depth that pruning does not have, named with its line; both lists at once.
  EXPECT_CONTAINS(input_error([] {
                    plan_experiment(parse_experiment(base_yaml("  layers: [0, 2]", "/m",
                                                               "healing:\n  - train_data: /t\n    layers: [2, 3]\n"),
                                                     "e.yaml"),
                                    fixed_layers(10));
                  }),
                  "e.yaml:15:");
  EXPECT_CONTAINS(input_error([] {
                    plan_experiment(parse_experiment(base_yaml("  layers: [0, 2]", "/m",
                                                               "healing:\n  - train_data: /t\n    layers: [2, 3]\n"),
                                                     "e.yaml"),
                                    fixed_layers(10));
                  }),
                  "healing[0].layers[1]: depth 3 is n = 3 for model 'm', which is not one of the pruning depths");
  EXPECT_CONTAINS(input_error([] {
                    parse_experiment(base_yaml("  layers: [0, 2]", "/m",
                                               "healing:\n  - train_data: /t\n    layers: [2]\n    fractions: [0.2]\n"),
                                     "e.yaml");
                  }),
                  "give either 'fractions' or 'layers', not both");
}

TEST(Experiment, TasksAndPayloads) {
  const std::string yaml =
      "models:\n"
      "  - {name: a, path: /models/a, tp: 2}\n"
      "  - {name: b, path: /models/b}\n"
      "pruning: {layers: [0, 1], strategies: [simple, similarity]}\n"
      "healing: [off, {name: q, quant: none, rank: 4, train_data: /data/t.txt}]\n"
      "calibration: {data: /data/c.txt, samples: 8}\n"
      "evaluation: {boolq: {data: /data/b.jsonl, limit: 10}, batch_size: 2}\n";
  const ExperimentPlan plan = plan_experiment(parse_experiment(yaml, "p.yaml"), [](const ModelSpec& m) {
    return m.name == "a" ? int64_t(3) : int64_t(6);
  });
  std::vector<std::string> task_keys;
  for (const TaskSpec& t : plan.tasks) task_keys.push_back(t.key);
  // Strategies in the file's order (simple first). Per model: 1 distances, 1 evaluate, 3 heal.
  EXPECT_EQ(task_keys, (std::vector<std::string>{"distances/a", "distances/b", "evaluate/a/seed=0", "evaluate/b/seed=0",
                                                 "heal/a/n=0/none/q/seed=0", "heal/a/n=1/simple/q/seed=0",
                                                 "heal/a/n=1/similarity/q/seed=0", "heal/b/n=0/none/q/seed=0",
                                                 "heal/b/n=1/simple/q/seed=0", "heal/b/n=1/similarity/q/seed=0"}));
  const TaskSpec& d = *find_task(plan, "distances/b");
  EXPECT_EQ(d.kind, "distances");
  EXPECT_EQ(d.model, "b");
  EXPECT_TRUE(d.points.empty());
  EXPECT_EQ(d.payload.at("model").at("layers"), 6);
  EXPECT_EQ(d.payload.at("calibration").at("samples"), 8);
  EXPECT_EQ(d.payload.at("calibration").at("data"), "/data/c.txt");

  const TaskSpec& ev = *find_task(plan, "evaluate/a/seed=0");
  EXPECT_EQ(ev.kind, "evaluate");
  EXPECT_EQ(ev.depends_on, std::vector<std::string>{"distances/a"});
  EXPECT_EQ(ev.payload.at("model").at("tp"), 2);
  EXPECT_EQ(ev.payload.at("model").at("layers"), 3);
  EXPECT_EQ(ev.payload.at("evaluation").at("boolq_limit"), 10);
  EXPECT_EQ(ev.payload.at("evaluation").at("batch_size"), 2);
  ASSERT_EQ(ev.payload.at("points").size(), 3u);
  EXPECT_EQ(ev.payload.at("points")[1].at("key"), "a/n=1/simple/off/seed=0");
  EXPECT_EQ(ev.payload.at("points")[1].at("strategy"), "simple");
  EXPECT_EQ(ev.payload.at("points")[1].at("layers"), 3);
  std::vector<std::string> payload_keys;
  for (const json& p : ev.payload.at("points")) payload_keys.push_back(p.at("key"));
  EXPECT_EQ(payload_keys, ev.points);

  const TaskSpec& h = *find_task(plan, "heal/b/n=1/similarity/q/seed=0");
  EXPECT_EQ(h.kind, "heal");
  EXPECT_EQ(h.depends_on, std::vector<std::string>{"distances/b"});
  EXPECT_EQ(h.points, std::vector<std::string>{"b/n=1/similarity/q/seed=0"});
  EXPECT_EQ(h.payload.at("healing").at("rank"), 4);
  EXPECT_EQ(h.payload.at("healing").at("quant"), "none");
  EXPECT_EQ(h.payload.at("healing").at("name"), "q");
  EXPECT_TRUE(h.payload.at("evaluation").at("boolq"));  // heal tasks evaluate after healing
  EXPECT_EQ(h.payload.at("points")[0].at("n"), 1);
  EXPECT_TRUE(find_task(plan, "heal/b/n=1/simple/q/seed=0")->depends_on.empty());
  expect_consistent(plan);
}

TEST(Experiment, WithoutSimilarityOrWithoutOffThereAreFewerTasks) {
  // Only the simple strategy: nothing to measure, so no distances task and no dependency.
  const std::string simple = "models: [{name: m, path: /m}]\npruning: {layers: [0, 1], strategies: [simple]}\n"
                             "evaluation: {loss: {data: /v.txt}}\n";
  const ExperimentPlan a = plan_experiment(parse_experiment(simple), fixed_layers(3));
  ASSERT_EQ(a.tasks.size(), 1u);
  EXPECT_EQ(a.tasks[0].key, "evaluate/m/seed=0");
  EXPECT_TRUE(a.tasks[0].depends_on.empty());
  // Only healed variants: no evaluate task.
  const std::string healed_only = simple + "healing: [{train_data: /t.txt}]\n";
  const ExperimentPlan b = plan_experiment(parse_experiment(healed_only), fixed_layers(3));
  std::vector<std::string> keys;
  for (const TaskSpec& t : b.tasks) keys.push_back(t.key);
  EXPECT_EQ(keys, (std::vector<std::string>{"heal/m/n=0/none/qlora/seed=0", "heal/m/n=1/simple/qlora/seed=0"}));
  // Similarity with only n = 0: no distance is ever read.
  const std::string unpruned = "models: [{name: m, path: /m}]\npruning: {layers: [0]}\n"
                               "calibration: {data: /c.txt}\nevaluation: {loss: {data: /v.txt}}\n";
  const ExperimentPlan c = plan_experiment(parse_experiment(unpruned), fixed_layers(3));
  ASSERT_EQ(c.tasks.size(), 1u);
  EXPECT_EQ(c.tasks[0].kind, "evaluate");
}

TEST(Experiment, HealingDefaultsAreThePapersRecipe) {
  const Experiment e = parse_experiment(base_yaml("  layers: [1]", "/m", "healing:\n  - train_data: /t.txt\n"));
  ASSERT_EQ(e.healing.size(), 1u);
  const HealingSpec& h = e.healing[0];
  EXPECT_EQ(h.name, "qlora");
  EXPECT_TRUE(h.enabled);
  EXPECT_EQ(h.quant, "nf4");
  EXPECT_EQ(h.targets, (std::vector<std::string>{"gate_proj", "up_proj", "down_proj"}));
  EXPECT_EQ(h.dropout, 0.05);
  EXPECT_EQ(h.alpha, 0.0);  // alpha = rank
  EXPECT_EQ(h.rank, 64);    // the paper's default rank and peak LR (App. A.1)
  EXPECT_EQ(h.lr, 3e-4);
  EXPECT_EQ(h.steps, 5000);
  EXPECT_EQ(h.global_batch, 16);
  EXPECT_EQ(h.warmup, 100);
  // Without a healing section: one "off" entry. A plain LoRA entry is named "lora" unless named.
  EXPECT_EQ(parse_experiment(base_yaml()).healing.size(), 1u);
  EXPECT_EQ(parse_experiment(base_yaml()).healing[0].name, "off");
  EXPECT_EQ(parse_experiment(base_yaml("  layers: [1]", "/m", "healing: [{quant: none, train_data: /t}]\n"))
                .healing[0].name, "lora");
}

// ------------------------------------------------------------------------------------------------
// Paths
// ------------------------------------------------------------------------------------------------

TEST(Experiment, PathsExpandVariablesAndResolveAgainstTheFile) {
  TempDir dir;
  fs::create_directories(dir.path() + "/sub");
  ScopedEnv models("LP_TEST_MODELS", "/cluster/models");
  write_file(dir.file("sub/e.yaml"), base_yaml("  layers: [0]", "${LP_TEST_MODELS}/llama/../m2",
                                               "  mmlu: {data: ../mmlu, subjects: [anatomy]}\n"));
  const Experiment e = parse_experiment_file(dir.file("sub/e.yaml"));
  EXPECT_EQ(e.models[0].path, "/cluster/models/m2");
  EXPECT_EQ(e.evaluation.mmlu_data, fs::path(dir.path() + "/mmlu").lexically_normal().string());
  EXPECT_EQ(e.source, dir.file("sub/e.yaml"));
  EXPECT_EQ(e.name, "t");

  // ${LAYERPRUNE_DATA} unset: the data locator's first root.
  {
    ScopedEnv home("HOME", "/home/someone");
    ScopedEnv xdg("XDG_CACHE_HOME", nullptr);
    ScopedEnv data("LAYERPRUNE_DATA", nullptr);
    ASSERT_EQ(data_roots().front(), "/home/someone/.cache/layerprune");
    EXPECT_EQ(parse_experiment(base_yaml("  layers: [0]", "${LAYERPRUNE_DATA}/m")).models[0].path,
              "/home/someone/.cache/layerprune/m");
  }
  ScopedEnv data("LAYERPRUNE_DATA", "/mirror");
  EXPECT_EQ(parse_experiment(base_yaml("  layers: [0]", "${LAYERPRUNE_DATA}/m")).models[0].path, "/mirror/m");
  // The default model name: the path's last component without extension.
  const Experiment unnamed = parse_experiment("models: [{path: /x/stories260K.bin, format: llama2c, tokenizer: /t}]\n"
                                              "pruning: {layers: [0]}\nevaluation: {loss: {data: /v}}\n"
                                              "calibration: {data: /c}\n");
  EXPECT_EQ(unnamed.models[0].name, "stories260K");
  EXPECT_EQ(unnamed.name, "experiment");
}

TEST(Experiment, DefaultLayerResolver) {
  LP_REQUIRE_DATA(bin, "stories260K/stories260K.bin");
  LP_REQUIRE_DATA(config7, "llama2/Llama-2-7b-hf/config.json");
  ModelSpec m;
  m.name = "s";
  m.format = "llama2c";
  m.path = bin;
  EXPECT_EQ(default_layer_resolver(m), 5);  // header (64, 172, 5, 8, 4, 512, 512)
  m.format = "hf";
  m.path = fs::path(config7).parent_path().string();
  EXPECT_EQ(default_layer_resolver(m), 32);

  TempDir dir;
  m.path = dir.path();  // a directory without config.json
  EXPECT_CONTAINS(input_error([&] { default_layer_resolver(m); }), "model 's': " + dir.path() + " has no config.json");
  m.path = dir.file("missing");
  EXPECT_CONTAINS(input_error([&] { default_layer_resolver(m); }), "not found (expected a Hugging Face model directory");
  m.format = "llama2c";
  write_file(dir.file("short.bin"), "abc");
  m.path = dir.file("short.bin");
  EXPECT_CONTAINS(input_error([&] { default_layer_resolver(m); }), "too short for a llama2.c checkpoint");
  const int32_t bad[7] = {64, 172, -3, 8, 4, 512, 512};
  write_file(dir.file("bad.bin"), std::string(reinterpret_cast<const char*>(bad), sizeof bad));
  m.path = dir.file("bad.bin");
  EXPECT_CONTAINS(input_error([&] { default_layer_resolver(m); }), "n_layers -3");
}

// ------------------------------------------------------------------------------------------------
// Errors: each names the file, line and column of what to edit
// ------------------------------------------------------------------------------------------------

std::string parse_error(const std::string& yaml) {
  return input_error([&] { parse_experiment(yaml, "exp.yaml"); });
}

// The full message must start with `where` and contain `what`.
#define EXPECT_ERROR_AT(message, where, what)                                              \
  do {                                                                                     \
    const std::string m_ = (message);                                                      \
    EXPECT_EQ(m_.rfind(std::string(where) + ": ", 0), 0u) << "expected at " << (where) << ": " << m_; \
    EXPECT_CONTAINS(m_, what);                                                             \
  } while (0)

std::string replace_line(std::string text, int line, const std::string& with) {
  size_t begin = 0;
  for (int i = 1; i < line; ++i) begin = text.find('\n', begin) + 1;
  const size_t end = text.find('\n', begin);
  return text.replace(begin, end - begin, with);
}

// `device:` per model: cpu (the default, left out of the model's JSON so older configurations keep their
// hash), cuda or cuda:N, carried into every task's payload; a bad name is an error at its line and
// column; cuda:N with tp > 1 (every rank on one GPU) is refused. Whether the GPU exists is the worker's
// business (no GPU is needed to plan an experiment).
TEST(Experiment, DevicePerModel) {
  const Experiment plain = parse_experiment(base_yaml());
  EXPECT_EQ(plain.models[0].device, "cpu");
  EXPECT_FALSE(nlohmann::json(plain.models[0]).contains("device"));
  for (const std::string d : {"cuda", "cuda:3", "cpu"}) {
    const Experiment e = parse_experiment(replace_line(base_yaml(), 4, "    path: /models/m\n    device: " + d), "d.yaml");
    EXPECT_EQ(e.models[0].device, d);
    const ModelSpec back = nlohmann::json(e.models[0]).get<ModelSpec>();
    EXPECT_EQ(back.device, d);
  }
  const ExperimentPlan plan = plan_experiment(
      parse_experiment(replace_line(base_yaml(), 4, "    path: /models/m\n    device: cuda\n    tp: 2"), "d.yaml"),
      fixed_layers(4));
  ASSERT_FALSE(plan.tasks.empty());
  for (const auto& t : plan.tasks) EXPECT_EQ(t.payload.at("model").at("device"), "cuda") << t.key;
  EXPECT_ERROR_AT(parse_error(replace_line(base_yaml(), 4, "    path: /models/m\n    device: gpu0")), "exp.yaml:5:13",
                  "unknown device 'gpu0' (use cpu, cuda or cuda:N)");
  EXPECT_ERROR_AT(parse_error(replace_line(base_yaml(), 4, "    path: /models/m\n    device: cuda:1\n    tp: 2")),
                  "exp.yaml:3:5", "would put every rank on one GPU");
}

// A grid too large to be sensible is refused with its count by the planner, before any point exists (and so
// before anything is submitted or written).
TEST(Experiment, AGridTooLargeIsRefusedWithItsCount) {
  std::string seeds = "seeds: [";
  for (int i = 0; i < 10000; ++i) seeds += (i ? ", " : "") + std::to_string(i);
  seeds += "]\n";
  std::string layers = "  layers: [";
  for (int n = 1; n < 100; ++n) layers += (n > 1 ? ", " : "") + std::to_string(n);
  layers += "]";
  const Experiment e = parse_experiment(base_yaml(layers, "/m", seeds + "healing:\n  - off\n  - train_data: /t\n"), "big.yaml");
  const auto t0 = std::chrono::steady_clock::now();
  const std::string m = input_error([&] { plan_experiment(e, fixed_layers(100)); });
  EXPECT_CONTAINS(m, "big.yaml: the grid has about 3960000 points (1 model(s) x their depths x 2 strategies x 2 healing x "
                     "10000 seeds), more than the 1000000 one experiment may have");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2)) << "refused before it is built";
}

TEST(ExperimentErrors, YamlSyntax) {
  // Bad indentation: "path" at column 4 is neither in the model's map (column 5) nor a new list item.
  EXPECT_ERROR_AT(parse_error(replace_line(base_yaml(), 4, "   path: /models/m")), "exp.yaml:4:4",
                  "YAML syntax error: end of sequence not found");
  // An unclosed '[': yaml-cpp notices at the ':' after "strategies" on the next line.
  EXPECT_ERROR_AT(parse_error(base_yaml("  layers: [0, 1, 2")), "exp.yaml:7:13",
                  "YAML syntax error: end of sequence flow not found");
  EXPECT_ERROR_AT(parse_error(""), "exp.yaml:1:1", "the experiment is empty");
  EXPECT_ERROR_AT(parse_error("- a\n- b\n"), "exp.yaml:1:1", "expected a map with keys name, models, pruning");
  // Without a source the messages say <yaml>.
  const std::string unnamed = input_error([] { parse_experiment("a: [1"); });
  EXPECT_EQ(unnamed.rfind("<yaml>:", 0), 0u) << unnamed;
  EXPECT_CONTAINS(unnamed, "YAML syntax error");
  EXPECT_CONTAINS(input_error([] { parse_experiment_file("/nonexistent/e.yaml"); }),
                  "/nonexistent/e.yaml: experiment file not found");
}

// ShortGPT's block influence (arXiv 2403.03853) reads the distances task's BI values: its points depend on
// that task just as similarity points do, and without a calibration section the file is refused.
TEST(Experiment, BlockInfluenceNeedsTheDistancesTask) {
  const std::string yaml = "models: [{name: m, path: /m}]\npruning: {layers: [0, 2], strategies: [simple, block_influence]}\n"
                           "healing: [off, {name: q, train_data: /t.txt}]\n"
                           "calibration: {data: /c.txt}\nevaluation: {loss: {data: /v.txt}}\n";
  const ExperimentPlan plan = plan_experiment(parse_experiment(yaml), fixed_layers(4));
  std::vector<std::string> keys;
  for (const TaskSpec& t : plan.tasks) keys.push_back(t.key);
  EXPECT_EQ(keys, (std::vector<std::string>{"distances/m", "evaluate/m/seed=0", "heal/m/n=0/none/q/seed=0",
                                            "heal/m/n=2/simple/q/seed=0", "heal/m/n=2/block_influence/q/seed=0"}));
  EXPECT_EQ(find_task(plan, "evaluate/m/seed=0")->depends_on, std::vector<std::string>{"distances/m"});
  EXPECT_EQ(find_task(plan, "heal/m/n=2/block_influence/q/seed=0")->depends_on, std::vector<std::string>{"distances/m"});
  EXPECT_TRUE(find_task(plan, "heal/m/n=2/simple/q/seed=0")->depends_on.empty());
  expect_consistent(plan);
  const std::string no_calibration = "models: [{name: m, path: /m}]\npruning: {layers: [1], strategies: [block_influence]}\n"
                                     "evaluation: {loss: {data: /v.txt}}\n";
  EXPECT_CONTAINS(input_error([&] { parse_experiment(no_calibration); }),
                  "missing 'calibration' (its data is needed to measure the distances of the block_influence strategy)");
  Experiment e = parse_experiment(yaml);
  e.strategies = {"shortgpt"};
  EXPECT_CONTAINS(input_error([&] { plan_experiment(e, fixed_layers(4)); }),
                  "unknown strategy 'shortgpt' (similarity, simple, block_influence)");
}

TEST(ExperimentErrors, Schema) {
  const std::string base = base_yaml();
  // Unknown key, with the known ones and a suggestion.
  EXPECT_ERROR_AT(parse_error(replace_line(base, 4, "    pth: /models/m")), "exp.yaml:4:5",
                  "models[0]: unknown key 'pth' (did you mean 'path'?); known keys: name, path, format, tokenizer, "
                  "dtype, tp, device");
  EXPECT_ERROR_AT(parse_error(replace_line(base, 1, "nme: t")), "exp.yaml:1:1",
                  "unknown key 'nme' (did you mean 'name'?); known keys: name, models, pruning, healing, calibration, "
                  "evaluation, seeds");
  // Wrong types.
  EXPECT_ERROR_AT(parse_error(base + "    tp: 2\n"), "exp.yaml:13:5", "evaluation.loss: unknown key 'tp'");
  EXPECT_ERROR_AT(parse_error(replace_line(base, 4, "    path: /m\n    tp: two")), "exp.yaml:5:9",
                  "models[0].tp: expected an integer >= 1, found 'two'");
  EXPECT_ERROR_AT(parse_error(replace_line(base, 4, "    path: /m\n    tp: 0")), "exp.yaml:5:9",
                  "models[0].tp: expected an integer >= 1, found 0");
  EXPECT_ERROR_AT(parse_error(replace_line(base, 4, "    path: /m\n    tp: \"2\"")), "exp.yaml:5:9",
                  "models[0].tp: expected an integer >= 1, found the string \"2\"");
  EXPECT_ERROR_AT(parse_error(replace_line(base, 4, "    path: [a, b]")), "exp.yaml:4:11",
                  "models[0].path: expected a path, found a list");
  EXPECT_ERROR_AT(parse_error(replace_line(base, 4, "    path:")), "exp.yaml:4:5",
                  "models[0].path: expected a path, found nothing");
  EXPECT_ERROR_AT(parse_error("models: {name: m}\n"), "exp.yaml:1:1",
                  "models: expected a list of models");
  EXPECT_ERROR_AT(parse_error(replace_line(base, 4, "    path: /m\n    dtype: float16")), "exp.yaml:5:12",
                  "models[0].dtype: expected one of float32, bfloat16, found 'float16'");
  // Fractions outside [0, 1), unknown strategies, empty lists.
  EXPECT_ERROR_AT(parse_error(base_yaml("  fractions: [0.5, 1.5]")), "exp.yaml:6:20",
                  "pruning.fractions[1]: expected a number in [0, 1), found 1.5");
  EXPECT_ERROR_AT(parse_error(base_yaml("  fractions: [0.5, half]")), "exp.yaml:6:20",
                  "pruning.fractions[1]: expected a number in [0, 1), found 'half'");
  EXPECT_ERROR_AT(parse_error(replace_line(base, 7, "  strategies: [similarity, random]")), "exp.yaml:7:28",
                  "pruning.strategies[1]: expected one of similarity, simple, block_influence, found 'random'");
  EXPECT_ERROR_AT(parse_error(base_yaml("  layers: []")), "exp.yaml:6:11",
                  "pruning.layers: expected a non-empty list of numbers of layers to drop");
  EXPECT_ERROR_AT(parse_error(base_yaml("  layers: [0, -1]")), "exp.yaml:6:15",
                  "pruning.layers[1]: expected an integer >= 0, found -1");
  EXPECT_ERROR_AT(parse_error(base_yaml("  layers: [0]\n  fractions: [0.5]")), "exp.yaml:5:1",
                  "pruning: give either 'fractions' or 'layers', not both");
  EXPECT_ERROR_AT(parse_error(base + "  mmlu: {data: /m, shots: 5, shots: 3}\n"), "exp.yaml:13:30",
                  "evaluation.mmlu: key 'shots' appears twice");
  // Healing entries.
  EXPECT_ERROR_AT(parse_error(base + "healing: [off, maybe]\n"), "exp.yaml:13:16",
                  "healing[1]: expected 'off' or a map of QLoRA settings (quant, rank, steps, ...), found 'maybe'");
  EXPECT_ERROR_AT(parse_error(base + "healing:\n  - off\n  - train_data: /t\n    quant: int8\n"), "exp.yaml:16:12",
                  "healing[1].quant: expected one of none, nf4, found 'int8'");
  EXPECT_ERROR_AT(parse_error(base + "healing:\n  - global_batch: 16\n    micro_batch: 5\n    train_data: /t\n"),
                  "exp.yaml:15:18", "micro_batch 5 must divide global_batch 16");
  EXPECT_ERROR_AT(parse_error(base + "healing:\n  - rank: 8\n"), "exp.yaml:14:5",
                  "healing[0]: missing 'train_data'");
  EXPECT_ERROR_AT(parse_error(base + "healing: [off, off]\n"), "exp.yaml:13:16", "healing 'off' appears twice");
  EXPECT_ERROR_AT(parse_error(base + "healing:\n  - train_data: /t\n    train_range: [0.9, 0.5]\n"), "exp.yaml:15:18",
                  "healing[0].train_range: expected begin < end, found [0.9, 0.5]");
  EXPECT_ERROR_AT(parse_error(base + "healing:\n  - train_data: /t\n    train_range: [0.5]\n"), "exp.yaml:15:18",
                  "expected [begin, end] (two fractions), found 1 numbers");
  EXPECT_ERROR_AT(parse_error(base + "healing: []\n"), "exp.yaml:13:10", "healing: expected a non-empty list");
  EXPECT_ERROR_AT(parse_error(base + "seeds: [1, 1]\n"), "exp.yaml:13:12", "seeds[1]: seed 1 is listed twice");
  // Missing sections and fields.
  EXPECT_ERROR_AT(parse_error(replace_line(base, 9, "  samples: 8")), "exp.yaml:8:1",
                  "calibration: missing 'data'");
  EXPECT_ERROR_AT(parse_error("models: [{name: m, path: /m}]\npruning: {layers: [0]}\ncalibration: {data: /c}\n"),
                  "exp.yaml:1:1", "missing 'evaluation'");
  EXPECT_ERROR_AT(parse_error(replace_line(base, 3, "  - name: m/1")), "exp.yaml:3:11",
                  "models[0].name: a model name may hold letters, digits");
  EXPECT_ERROR_AT(parse_error(replace_line(base, 4, "    path: /m\n  - name: m\n    path: /n")), "exp.yaml:5:5",
                  "models[1]: model name 'm' is used twice");
  EXPECT_ERROR_AT(parse_error(replace_line(base, 4, "    path: /m\n    format: llama2c")), "exp.yaml:3:5",
                  "models[0]: format llama2c needs 'tokenizer'");
}

TEST(ExperimentErrors, UnsetVariable) {
  ScopedEnv unset("LP_TEST_UNSET_VARIABLE", nullptr);
  EXPECT_ERROR_AT(parse_error(base_yaml("  layers: [0]", "${LP_TEST_UNSET_VARIABLE}/m")), "exp.yaml:4:11",
                  "models[0].path: environment variable ${LP_TEST_UNSET_VARIABLE} is not set");
  EXPECT_ERROR_AT(parse_error(base_yaml("  layers: [0]", "${LP_TEST_UNSET_VARIABLE/m")), "exp.yaml:4:11",
                  "unterminated '${'");
}

TEST(ExperimentErrors, FoundWhilePlanning) {
  // n >= L points at the list entry.
  const Experiment e = parse_experiment(base_yaml("  layers: [0, 1, 5]"), "exp.yaml");
  EXPECT_ERROR_AT(input_error([&] { plan_experiment(e, fixed_layers(5)); }), "exp.yaml:6:18",
                  "pruning.layers[2]: cannot drop n = 5 layers of model 'm' (5 layers); n must be in 0..4");
  // A fraction that rounds to L: 0.95 x 5 = 4.75 -> 5.
  const Experiment f = parse_experiment(base_yaml("  fractions: [0.0, 0.95]"), "exp.yaml");
  EXPECT_ERROR_AT(input_error([&] { plan_experiment(f, fixed_layers(5)); }), "exp.yaml:6:20",
                  "pruning.fractions[1]: fraction 0.95 of model 'm' (5 layers) drops n = 5; at most 4");
  EXPECT_NO_THROW(plan_experiment(f, fixed_layers(20)));  // 19 of 20
  // A missing model with the default resolver points at its path.
  const Experiment g = parse_experiment(base_yaml("  layers: [0]", "/nonexistent/llama"), "exp.yaml");
  EXPECT_ERROR_AT(input_error([&] { plan_experiment(g); }), "exp.yaml:4:11",
                  "model 'm': /nonexistent/llama not found (expected a Hugging Face model directory with config.json)");
  // From JSON (no positions): the source file name alone.
  Experiment h = Experiment::from_json(e.to_json());
  EXPECT_ERROR_AT(input_error([&] { plan_experiment(h, fixed_layers(5)); }), "exp.yaml",
                  "cannot drop n = 5 layers");
  h.models.push_back(h.models[0]);
  EXPECT_CONTAINS(input_error([&] { plan_experiment(h, fixed_layers(9)); }), "model name 'm' is used twice");
}

// ------------------------------------------------------------------------------------------------
// JSON
// ------------------------------------------------------------------------------------------------

TEST(Experiment, JsonRoundTrip) {
  const std::string yaml = base_yaml("  fractions: [0.25, 0.5]", "/models/m",
                                     "  mmlu: {data: /mmlu, shots: 3, limit: 7, subjects: [anatomy, virology]}\n"
                                     "  boolq: {data: /b.jsonl, limit: 9}\n"
                                     "  batch_size: 3\n"
                                     "healing:\n  - off\n  - {name: q2, quant: none, rank: 2, alpha: 4, dropout: 0.1,"
                                     " targets: [q_proj, all-linear], train_data: /t, steps: 7, global_batch: 6,"
                                     " micro_batch: 3, seq_len: 64, warmup: 1, lr: 0.5, min_lr_ratio: 0.1,"
                                     " checkpoint_every: 2}\n"
                                     "seeds: [4, 2]\n");
  const Experiment e = parse_experiment(yaml, "rt.yaml");
  const json j = e.to_json();
  const Experiment back = Experiment::from_json(j);
  EXPECT_EQ(back.to_json(), j);
  EXPECT_EQ(back.fractions, (std::vector<double>{0.25, 0.5}));
  EXPECT_EQ(back.seeds, (std::vector<uint64_t>{4, 2}));
  EXPECT_EQ(back.source, "rt.yaml");
  ASSERT_EQ(back.healing.size(), 2u);
  EXPECT_EQ(back.healing[1].name, "q2");
  EXPECT_EQ(back.healing[1].targets, (std::vector<std::string>{"q_proj", "all-linear"}));
  EXPECT_EQ(back.healing[1].min_lr_ratio, 0.1);
  EXPECT_EQ(back.healing[1].alpha, 4.0);
  EXPECT_EQ(back.evaluation.mmlu_subjects, (std::vector<std::string>{"anatomy", "virology"}));
  EXPECT_EQ(back.evaluation.mmlu_limit, 7);
  EXPECT_EQ(back.evaluation.boolq_limit, 9);
  EXPECT_EQ(back.evaluation.batch_size, 3);
  EXPECT_EQ(j.at("healing")[1].at("checkpoint_every"), 2);
  // The same plan from the parsed and the round-tripped experiment.
  const ExperimentPlan p1 = plan_experiment(e, fixed_layers(8)), p2 = plan_experiment(back, fixed_layers(8));
  EXPECT_EQ(point_keys(p1), point_keys(p2));
  ASSERT_EQ(p1.tasks.size(), p2.tasks.size());
  for (size_t i = 0; i < p1.tasks.size(); ++i) EXPECT_EQ(p1.tasks[i].payload, p2.tasks[i].payload);
  // Payload pieces read back into the structs.
  const ModelSpec m = p1.tasks[0].payload.at("model").get<ModelSpec>();
  EXPECT_EQ(m.layers, 8);
  EXPECT_EQ(m.path, "/models/m");
  const GridPoint gp = p1.tasks.back().payload.at("points")[0].get<GridPoint>();
  EXPECT_EQ(gp.key, p1.points.back().key);
  EXPECT_EQ(gp.to_json(), p1.points.back().to_json());
  // Wrong types name the field.
  json broken = j;
  broken["models"][0]["tp"] = "two";
  EXPECT_CONTAINS(input_error([&] { Experiment::from_json(broken); }), "model JSON: field 'tp'");
}

// ------------------------------------------------------------------------------------------------
// Curves (the paper's Figure 2)
// ------------------------------------------------------------------------------------------------

const double kNaN = std::numeric_limits<double>::quiet_NaN();

// stories-like model with L = 4: n = 0 shared; similarity/simple x off/qlora; simple/off has no n = 2 (a
// gap) and similarity/qlora's n = 3 is NaN (also a gap, at the end); two seeds of one point are averaged.
std::vector<CurveSample> hand_samples() {
  return {
      {"m", "none", "off", "mmlu", 0, 4, 0.50},
      {"m", "similarity", "off", "mmlu", 1, 4, 0.45},
      {"m", "similarity", "off", "mmlu", 2, 4, 0.40},
      {"m", "similarity", "off", "mmlu", 3, 4, 0.30},
      {"m", "simple", "off", "mmlu", 1, 4, 0.35},
      {"m", "simple", "off", "mmlu", 3, 4, 0.25},
      {"m", "none", "qlora", "mmlu", 0, 4, 0.52},
      {"m", "similarity", "qlora", "mmlu", 1, 4, 0.48},
      {"m", "similarity", "qlora", "mmlu", 1, 4, 0.46},  // a second seed: the point shows 0.47
      {"m", "similarity", "qlora", "mmlu", 2, 4, 0.44},
      {"m", "similarity", "qlora", "mmlu", 3, 4, kNaN},
      {"m", "simple", "qlora", "mmlu", 1, 4, 0.42},
      {"m", "simple", "qlora", "mmlu", 2, 4, 0.38},
      {"m", "simple", "qlora", "mmlu", 3, 4, 0.31},
      {"m", "none", "off", "loss", 0, 4, 1.5},
      {"m", "similarity", "off", "loss", 2, 4, 2.5},
  };
}

TEST(Curves, TablePerModelAndMetric) {
  const std::string expected =
      "m (L = 4), mmlu\n"
      "fraction         n  similarity/off  similarity/qlora  simple/off  simple/qlora\n"
      "   0.000         0          0.5000            0.5200      0.5000        0.5200\n"
      "   0.250         1          0.4500            0.4700      0.3500        0.4200\n"
      "   0.500         2          0.4000            0.4400           -        0.3800\n"
      "   0.750         3          0.3000                 -      0.2500        0.3100\n"
      "\n"
      "m (L = 4), loss\n"
      "fraction         n  similarity/off\n"
      "   0.000         0          1.5000\n"
      "   0.500         2          2.5000\n";
  EXPECT_EQ(curves_table(hand_samples()), expected);
  std::vector<CurveSample> inconsistent = hand_samples();
  inconsistent.push_back({"m", "simple", "off", "boolq", 1, 5, 0.5});
  EXPECT_CONTAINS(input_error([&] { curves_table(inconsistent); }), "model 'm' has samples with 4 and 5 layers");
}

TEST(Curves, AHealedCurveWithoutAHealedUnprunedPointStartsFromTheUnprunedModel) {
  // heal_unpruned: false: no (n = 0, qlora) sample; the healed column takes the unpruned model's value.
  const std::vector<CurveSample> samples = {{"m", "none", "off", "loss", 0, 4, 1.5},
                                            {"m", "simple", "off", "loss", 2, 4, 3.0},
                                            {"m", "simple", "qlora", "loss", 2, 4, 2.0}};
  EXPECT_EQ(curves_table(samples),
            "m (L = 4), loss\n"
            "fraction         n  simple/off  simple/qlora\n"
            "   0.000         0      1.5000        1.5000\n"
            "   0.500         2      3.0000        2.0000\n");
}

// Minimal XML well-formedness: balanced tags, quoted attributes, escaped text. Returns the element names in
// document order ("" and a failure on an error).
std::vector<std::string> xml_elements(const std::string& xml) {
  std::vector<std::string> names, stack;
  size_t i = 0;
  while (i < xml.size()) {
    if (xml[i] != '<') {
      const size_t next = xml.find('<', i);
      const std::string text = xml.substr(i, next == std::string::npos ? std::string::npos : next - i);
      for (size_t a = text.find('&'); a != std::string::npos; a = text.find('&', a + 1)) {
        const std::string ent = text.substr(a, text.find(';', a) - a + 1);
        if (ent != "&amp;" && ent != "&lt;" && ent != "&gt;" && ent != "&quot;") {
          ADD_FAILURE() << "bad entity " << ent;
          return {};
        }
      }
      if (next == std::string::npos) break;
      i = next;
      continue;
    }
    const size_t close = xml.find('>', i);
    if (close == std::string::npos) return ADD_FAILURE() << "unclosed tag", std::vector<std::string>{};
    std::string tag = xml.substr(i + 1, close - i - 1);
    i = close + 1;
    if (tag[0] == '/') {
      if (stack.empty() || stack.back() != tag.substr(1)) {
        ADD_FAILURE() << "mismatched </" << tag.substr(1) << ">";
        return {};
      }
      stack.pop_back();
      continue;
    }
    const bool self_closing = tag.back() == '/';
    if (self_closing) tag.pop_back();
    const std::string name = tag.substr(0, tag.find_first_of(" \n"));
    // Attributes: name="value" pairs only.
    size_t quotes = 0;
    for (char c : tag) quotes += c == '"';
    if (quotes % 2 != 0 || tag.find('<') != std::string::npos) {
      ADD_FAILURE() << "bad attributes in <" << tag << ">";
      return {};
    }
    names.push_back(name);
    if (!self_closing) stack.push_back(name);
  }
  if (!stack.empty()) {
    ADD_FAILURE() << "unclosed <" << stack.back() << ">";
    return {};
  }
  return names;
}

size_t count(const std::string& text, const std::string& part) {
  size_t n = 0;
  for (size_t p = text.find(part); p != std::string::npos; p = text.find(part, p + 1)) ++n;
  return n;
}

TEST(Curves, SvgStructureGapsAndLegend) {
  const std::string svg = curves_svg(hand_samples(), "stories <test> & figure");
  const std::vector<std::string> elements = xml_elements(svg);
  ASSERT_FALSE(elements.empty());
  EXPECT_EQ(elements.front(), "svg");
  EXPECT_CONTAINS(svg, "stories &lt;test&gt; &amp; figure");
  // Polylines (lines between neighbouring depths with values), panel mmlu, depths 0..3:
  //   similarity/off   0 1 2 3 -> one line
  //   similarity/qlora 0 1 2 - -> one line (n = 3 is NaN)
  //   simple/off       0 1 - 3 -> one line (0-1); n = 3 alone is a marker only
  //   simple/qlora     0 1 2 3 -> one line
  // panel loss, depths 0, 2: similarity/off 0 2 -> one line. Five in all.
  EXPECT_EQ(count(svg, "<polyline"), 5u);
  EXPECT_EQ(count(svg, "class=\"curve\""), 5u);
  // Points per line, in drawing order: a line never bridges the missing n = 2 of simple/off.
  std::vector<size_t> line_points;
  for (size_t p = svg.find("<polyline"); p != std::string::npos; p = svg.find("<polyline", p + 1)) {
    const size_t begin = svg.find("points=\"", p) + 8;
    line_points.push_back(count(svg.substr(begin, svg.find('"', begin) - begin), ","));
  }
  EXPECT_EQ(line_points, (std::vector<size_t>{4, 3, 2, 4, 2}));
  // Dashed = no healing: the similarity/off lines of both panels and simple/off's line, plus 2 legend samples.
  size_t dashed_curves = 0;
  for (size_t p = svg.find("<polyline"); p != std::string::npos; p = svg.find("<polyline", p + 1))
    dashed_curves += svg.substr(p, svg.find('>', p) - p).find("stroke-dasharray") != std::string::npos;
  EXPECT_EQ(dashed_curves, 3u);
  // One legend entry per strategy x healing in the figure.
  EXPECT_EQ(count(svg, "class=\"legend-entry\""), 4u);
  EXPECT_CONTAINS(svg, ">similarity, no healing</text>");
  EXPECT_CONTAINS(svg, ">simple, healed (qlora)</text>");
  // Markers: every finite point has a tooltip: 4 + 3 + 3 + 4 in the MMLU panel, 2 for loss (the NaN has none).
  EXPECT_EQ(count(svg, "<title>"), 16u);
  EXPECT_CONTAINS(svg, "<title>similarity/qlora n=1 (0.250): 0.4700</title>");
  EXPECT_EQ(count(svg, "similarity/qlora n=3"), 0u);
  // Random guessing on the MMLU panel only; no NaN anywhere; two panels with axis labels.
  EXPECT_EQ(count(svg, "class=\"random-guess\""), 1u);
  EXPECT_EQ(count(svg, "nan"), 0u);
  EXPECT_EQ(count(svg, "inf"), 0u);
  EXPECT_EQ(count(svg, "class=\"panel\""), 2u);
  EXPECT_EQ(count(svg, ">fraction of layers dropped</text>"), 2u);
  EXPECT_CONTAINS(svg, ">MMLU accuracy (5-shot)</text>");

  // A panel whose values are all missing says so and draws no line.
  const std::string empty = curves_svg({{"x", "none", "off", "boolq", 0, 2, kNaN}, {"x", "simple", "off", "boolq", 1, 2, kNaN}});
  EXPECT_FALSE(xml_elements(empty).empty());
  EXPECT_EQ(count(empty, "<polyline"), 0u);
  EXPECT_CONTAINS(empty, ">no data</text>");
  EXPECT_EQ(count(empty, "nan"), 0u);
}

TEST(Curves, SvgRendersWithRsvg) {
  if (std::system("command -v rsvg-convert > /dev/null 2>&1") != 0)
    GTEST_SKIP() << "rsvg-convert not installed (apt-get install librsvg2-bin)";
  TempDir dir;
  write_file(dir.file("curves.svg"), curves_svg(hand_samples(), "hand-made samples"));
  const std::string cmd = "rsvg-convert -o " + dir.file("curves.png") + " " + dir.file("curves.svg") + " 2> " +
                          dir.file("err.txt");
  EXPECT_EQ(std::system(cmd.c_str()), 0) << read_file(dir.file("err.txt"));
  EXPECT_GT(fs::file_size(dir.file("curves.png")), 1000u);
}

}  // namespace
}  // namespace layerprune
