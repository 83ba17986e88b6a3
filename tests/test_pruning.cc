// Layer distances (paper Eq. 7), the two pruning strategies, resuming a forward pass from a hidden state, and
// exporting a pruned model. Distances are checked against tests/golden/make_distances_golden.py (plain
// PyTorch, each calibration sequence run on its own); strategies by hand.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/hashing.h"
#include "common/svg.h"
#include "common/text_file.h"
#include "tests/model_fixtures.h"
#include "tests/llama_shapes.h"
#include "tests/test_support.h"
#include "method/distances.h"
#include "evaluation/eval_data.h"
#include "evaluation/eval_tasks.h"
#include "evaluation/evaluate.h"
#include "model/llama.h"
#include "model/make_model.h"
#include "formats/prune_export.h"
#include "experiment/pruning.h"
#include "method/sweep.h"
#include "formats/tokenizer.h"

namespace layerprune {
namespace {

namespace fs = std::filesystem;
using testing::Stories260K;
using testing::TempDir;

// A table for L layers whose pair distances are d(i, j) = |i - j| / 10 except where overridden.
DistanceTable table_with(int64_t L, std::vector<std::tuple<int64_t, int64_t, double>> overrides) {
  std::vector<double> pair(size_t((L + 1) * (L + 1)));
  for (int64_t i = 0; i <= L; ++i)
    for (int64_t j = 0; j <= L; ++j) pair[size_t(i * (L + 1) + j)] = std::abs(double(i - j)) / 10.0;
  for (auto [l, n, d] : overrides) pair[size_t(l * (L + 1) + l + n)] = pair[size_t((l + n) * (L + 1) + l)] = d;
  return DistanceTable(L, pair);
}

std::vector<int64_t> kept(Strategy s, int64_t L, int64_t n, const DistanceTable* t = nullptr) {
  return plan_pruning(s, L, n, t).kept;
}

TEST(Pruning, SimpleStrategyByHand) {
  using V = std::vector<int64_t>;
  EXPECT_EQ(kept(Strategy::kSimple, 5, 0), (V{0, 1, 2, 3, 4}));
  EXPECT_EQ(kept(Strategy::kSimple, 5, 1), (V{0, 1, 2, 4})) << "drops L-2 = 3, keeps the final layer";
  EXPECT_EQ(kept(Strategy::kSimple, 5, 2), (V{0, 1, 4}));
  EXPECT_EQ(kept(Strategy::kSimple, 5, 4), (V{4})) << "n = L-1: only the final layer is left";
  EXPECT_EQ(kept(Strategy::kSimple, 1, 0), (V{0}));
  EXPECT_EQ(plan_pruning(Strategy::kSimple, 8, 3, nullptr).first_dropped, 4);  // drops 4, 5, 6
  EXPECT_CONTAINS(testing::input_error([] { plan_pruning(Strategy::kSimple, 5, 5, nullptr); }), "0..4");
  EXPECT_CONTAINS(testing::input_error([] { plan_pruning(Strategy::kSimple, 5, -1, nullptr); }), "0..4");
}

TEST(Pruning, SimilarityStrategyByHand) {
  using V = std::vector<int64_t>;
  // L = 6; for n = 2 the smallest distance starts at l = 3 (0.05 < every other 0.2); for n = 1 two starts tie
  // at 0.01 (l = 2 and l = 4): the first wins.
  DistanceTable t = table_with(6, {{3, 2, 0.05}, {2, 1, 0.01}, {4, 1, 0.01}});
  EXPECT_EQ(t.best_start(2), 3);
  EXPECT_EQ(kept(Strategy::kSimilarity, 6, 2, &t), (V{0, 1, 2, 5}));
  EXPECT_EQ(t.best_start(1), 2) << "ties go to the first l";
  EXPECT_EQ(kept(Strategy::kSimilarity, 6, 1, &t), (V{0, 1, 3, 4, 5}));
  EXPECT_EQ(kept(Strategy::kSimilarity, 6, 0, &t), (V{0, 1, 2, 3, 4, 5}));
  // n = L-1: l in {0, 1}. Make l = 1 the smaller: the first layer stays, as the similarity rule allows.
  DistanceTable u = table_with(6, {{1, 5, 0.1}});
  EXPECT_EQ(kept(Strategy::kSimilarity, 6, 5, &u), (V{0}));
  DistanceTable w = table_with(6, {{0, 5, 0.1}});
  EXPECT_EQ(kept(Strategy::kSimilarity, 6, 5, &w), (V{5}));
  PrunePlan p = plan_pruning(Strategy::kSimilarity, 6, 2, &t);
  EXPECT_EQ(p.first_dropped, 3);
  EXPECT_DOUBLE_EQ(p.distance, 0.05);
  EXPECT_DOUBLE_EQ(p.realised_fraction(), 2.0 / 6.0);
  EXPECT_CONTAINS(testing::input_error([&] { plan_pruning(Strategy::kSimilarity, 7, 2, &t); }), "6 layers");
}

// ShortGPT's block influence: the n lowest BI_l, wherever they are; ties to the lower layer index.
TEST(Pruning, BlockInfluenceDropsTheLowestLayers) {
  using V = std::vector<int64_t>;
  const int64_t L = 6;
  std::vector<double> pair(size_t((L + 1) * (L + 1)), 0.5);
  //                       BI_0  BI_1  BI_2  BI_3  BI_4  BI_5
  DistanceTable t(L, pair, {0.30, 0.05, 0.20, 0.02, 0.05, 0.40});
  EXPECT_EQ(kept(Strategy::kBlockInfluence, L, 0, &t), (V{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(kept(Strategy::kBlockInfluence, L, 1, &t), (V{0, 1, 2, 4, 5}));
  EXPECT_EQ(kept(Strategy::kBlockInfluence, L, 2, &t), (V{0, 2, 4, 5})) << "BI_1 = BI_4: the lower index goes first";
  EXPECT_EQ(kept(Strategy::kBlockInfluence, L, 3, &t), (V{0, 2, 5})) << "not one block";
  EXPECT_EQ(kept(Strategy::kBlockInfluence, L, 5, &t), (V{5}));
  PrunePlan p = plan_pruning(Strategy::kBlockInfluence, L, 3, &t);
  EXPECT_EQ(p.first_dropped, 1) << "the lowest dropped layer";
  EXPECT_EQ(p.n, 3);
  EXPECT_DOUBLE_EQ(p.distance, 0.0);
  EXPECT_EQ(p.strategy, Strategy::kBlockInfluence);
  EXPECT_EQ(parse_strategy("block_influence"), Strategy::kBlockInfluence);
  EXPECT_STREQ(strategy_name(Strategy::kBlockInfluence), "block_influence");
  EXPECT_TRUE(strategy_needs_distances(Strategy::kBlockInfluence));
  EXPECT_TRUE(strategy_needs_distances(Strategy::kSimilarity));
  EXPECT_FALSE(strategy_needs_distances(Strategy::kSimple));
  // A table stored before BI was measured has none: a clear error, not a silent plan.
  DistanceTable old(L, pair);
  EXPECT_CONTAINS(testing::input_error([&] { plan_pruning(Strategy::kBlockInfluence, L, 1, &old); }),
                  "measure the distances again");
  EXPECT_CONTAINS(testing::input_error([&] { plan_pruning(Strategy::kBlockInfluence, 7, 1, &t); }), "6 layers");
  EXPECT_THROW(DistanceTable(L, pair, {0.1, 0.2}), std::invalid_argument);
}

TEST(Pruning, FractionToLayerCount) {
  EXPECT_EQ(layers_to_prune(0.0, 32), 0);
  EXPECT_EQ(layers_to_prune(0.4, 5), 2);
  EXPECT_EQ(layers_to_prune(0.5, 5), 3) << "2.5 rounds half up";
  EXPECT_EQ(layers_to_prune(0.45, 32), 14);  // 14.4
  EXPECT_EQ(layers_to_prune(0.5, 80), 40);
  EXPECT_CONTAINS(testing::input_error([] { layers_to_prune(0.9, 5); }), "leaving none");
  EXPECT_CONTAINS(testing::input_error([] { layers_to_prune(1.0, 5); }), "[0, 1)");
  EXPECT_CONTAINS(testing::input_error([] { layers_to_prune(-0.1, 5); }), "[0, 1)");
  EXPECT_CONTAINS(testing::input_error([] { layers_to_prune(std::nan(""), 5); }), "[0, 1)");
  EXPECT_EQ(parse_strategy("simple"), Strategy::kSimple);
  EXPECT_CONTAINS(testing::input_error([] { parse_strategy("random"); }), "similarity, simple or block_influence");
}

TEST(Pruning, LayerListsParseAndFormat) {
  using V = std::vector<int64_t>;
  EXPECT_EQ(parse_layer_list("0,1,4", "--keep"), (V{0, 1, 4}));
  EXPECT_EQ(parse_layer_list("0-2,5,7-8", "--keep"), (V{0, 1, 2, 5, 7, 8}));
  EXPECT_EQ(format_layer_ranges({0, 1, 2, 5, 7, 8}), "0-2,5,7-8");
  EXPECT_EQ(format_layer_ranges({}), "");
  EXPECT_CONTAINS(testing::input_error([] { parse_layer_list("3,1", "--drop"); }), "increase");
  EXPECT_CONTAINS(testing::input_error([] { parse_layer_list("1,x", "--drop"); }), "\"x\" is not a layer index");
  EXPECT_CONTAINS(testing::input_error([] { parse_layer_list("4-2", "--drop"); }), "backwards");
  EXPECT_CONTAINS(testing::input_error([] { parse_layer_list("", "--drop"); }), "--drop");
}

TEST(Svg, HeatmapIsWellFormed) {
  Heatmap h;
  h.title = "d <&> test";
  h.rows = 2;
  h.cols = 3;
  h.values = {0.1, 0.2, 0.3, 0.4, std::numeric_limits<double>::quiet_NaN(), 0.6};
  h.marks = {0, 2};
  std::string s = heatmap_svg(h);
  EXPECT_EQ(s.rfind("<svg", 0), 0u);
  EXPECT_CONTAINS(s, "</svg>");
  EXPECT_CONTAINS(s, "d &lt;&amp;&gt; test");
  size_t cells = 0;
  for (size_t pos = 0; (pos = s.find("<title>", pos)) != std::string::npos; ++pos) ++cells;
  EXPECT_EQ(cells, 5u) << "one cell per finite value, NaN left blank";
  size_t dots = 0;
  for (size_t pos = 0; (pos = s.find("<circle", pos)) != std::string::npos; ++pos) ++dots;
  EXPECT_EQ(dots, 2u);
}

// --- Against the plain-PyTorch reference ------------------------------------------------------------------

TEST_F(Stories260K, DistancesEqualPyTorchReference) {
  LP_REQUIRE_DATA(text, "tinystories/tinystories_val.txt");
  nlohmann::json g = nlohmann::json::parse(read_file(testing::source_file("tests/golden/stories260k_distances.json")));
  ASSERT_EQ(sha256_file(text), g["data_sha256"].get<std::string>()) << "golden made from another TinyStories file";
  LlamaModel model = LlamaModel::load(model_dir());
  Tokenizer tok = Tokenizer::load(tokenizer_path());
  const int64_t L = g["layers"].get<int64_t>();
  int64_t batch = 4;
  for (const auto& r : g["recipes"]) {
    CalibrationRecipe recipe;
    recipe.samples = r["samples"].get<int64_t>();
    recipe.seq_len = r["seq_len"].get<int64_t>();
    recipe.seed = r["seed"].get<uint64_t>();
    CalibrationSet set = build_calibration(text, tok, recipe, model.config().max_position_embeddings);
    EXPECT_EQ(set.documents, r["documents"].get<int64_t>());
    ASSERT_EQ(set.chosen, r["chosen"].get<std::vector<int64_t>>()) << "sampling order differs from the reference";
    std::vector<int64_t> lengths;
    for (const auto& s : set.sequences) lengths.push_back(int64_t(s.size()));
    EXPECT_EQ(lengths, r["lengths"].get<std::vector<int64_t>>());
    DistanceOptions opt;
    opt.batch_size = batch++;  // 4 and 5: padding inside batches must not matter
    DistanceTable t = measure_distances(model, set, opt);
    ASSERT_EQ(t.layers(), L);
    const auto& d = r["distances"];
    double worst = 0;
    for (int64_t i = 0; i <= L; ++i)
      for (int64_t j = 0; j <= L; ++j)
        worst = std::max(worst, std::abs(t.pair_matrix()[size_t(i * (L + 1) + j)] - d[i][j].get<double>()));
    EXPECT_LT(worst, 1e-5) << "samples " << recipe.samples;
    for (const auto& b : r["best"]) {
      const int64_t n = b["n"].get<int64_t>();
      EXPECT_EQ(t.best_start(n), b["l_star"].get<int64_t>()) << "n = " << n;
      EXPECT_NEAR(t.at(t.best_start(n), n), b["d"].get<double>(), 1e-5);
    }
  }
}

// Block influence on a random model whose layer 2 is the identity (o_proj and down_proj zero: both residual
// branches add exactly 0), checked against a plain computation from each sequence's own forward pass.
TEST(Distances, BlockInfluenceOfAnIdentityLayerIsZeroAndItIsDroppedFirst) {
  TempDir dir;
  MakeModelOptions mo;
  mo.seed = 3;
  mo.init_std = 0.3;
  make_random_model(testing::llama_shape(32, 48, 5, 4, 2, 64, 32), dir.path(), mo);
  const LlamaModel base = LlamaModel::load(dir.path());
  LlamaWeights w = base.weights();
  w.layers[2].wo = at::zeros_like(w.layers[2].wo);
  w.layers[2].w_down = at::zeros_like(w.layers[2].w_down);
  const LlamaModel model = base.with_weights(w);
  const int64_t L = 5;
  CalibrationSet set;
  uint32_t state = 99;
  for (int64_t len : {7, 19, 3, 12, 16}) {  // unequal lengths: right padding in every batch
    std::vector<int32_t> seq{1};           // a BOS-like first token, averaged like every other
    while (int64_t(seq.size()) < len) {
      state = state * 1664525u + 1013904223u;
      seq.push_back(int32_t(2 + (state >> 8) % 60u));
    }
    set.sequences.push_back(seq);
  }
  // Reference: every real token of every sequence, each sequence on its own, in float64.
  std::vector<double> cos_sum(size_t(L), 0.0);
  int64_t tokens = 0;
  ForwardOptions fo;
  fo.return_hidden = true;
  fo.logits = false;
  for (const auto& seq : set.sequences) {
    std::vector<int64_t> ids(seq.begin(), seq.end());
    ForwardResult r = model.forward(at::tensor(ids, at::kLong).view({1, -1}), fo);
    ASSERT_EQ(int64_t(r.hidden.size()), L + 1);
    for (int64_t l = 0; l < L; ++l) {
      at::Tensor a = r.hidden[size_t(l)][0].to(at::kDouble), b = r.hidden[size_t(l + 1)][0].to(at::kDouble);
      for (int64_t t = 0; t < a.size(0); ++t)
        cos_sum[size_t(l)] += (at::dot(a[t], b[t]) / (a[t].norm() * b[t].norm())).item<double>();
    }
    tokens += int64_t(seq.size());
  }
  for (int64_t batch : {1, 2, 5}) {
    DistanceOptions opt;
    opt.batch_size = batch;
    const DistanceTable t = measure_distances(model, set, opt);
    ASSERT_TRUE(t.has_block_influence());
    ASSERT_EQ(int64_t(t.block_influence().size()), L);
    for (int64_t l = 0; l < L; ++l)
      EXPECT_NEAR(t.block_influence()[size_t(l)], 1.0 - cos_sum[size_t(l)] / double(tokens), 1e-6)
          << "BI_" << l << ", batch " << batch;
    EXPECT_NEAR(t.block_influence()[2], 0.0, 1e-12) << "the identity layer";
    for (int64_t l : {0, 1, 3, 4}) EXPECT_GT(t.block_influence()[size_t(l)], 1e-4) << "BI_" << l;
    EXPECT_EQ(plan_pruning(Strategy::kBlockInfluence, L, 1, &t).kept, (std::vector<int64_t>{0, 1, 3, 4}));
    EXPECT_EQ(plan_pruning(Strategy::kBlockInfluence, L, 2, &t).kept.size(), 3u);
    // The result file keeps the values; one from before them loads without, and BI pruning then refuses it.
    DistanceResult res;
    res.key = "k";
    res.table = t;
    const DistanceResult back = DistanceResult::from_json(res.to_json(), "r.json");
    EXPECT_EQ(back.table.block_influence(), t.block_influence());
    nlohmann::json old = nlohmann::json::parse(res.to_json());
    old.erase("block_influence");
    const DistanceResult v1 = DistanceResult::from_json(old.dump(), "old.json");
    EXPECT_FALSE(v1.table.has_block_influence());
    EXPECT_EQ(v1.table.pair_matrix(), t.pair_matrix());
    EXPECT_CONTAINS(testing::input_error([&] { plan_pruning(Strategy::kBlockInfluence, L, 1, &v1.table); }),
                    "measure the distances again");
    old["block_influence"] = {0.1, 0.2};
    EXPECT_CONTAINS(testing::input_error([&] { DistanceResult::from_json(old.dump(), "bad.json"); }),
                    "bad.json: \"block_influence\" must have one entry per layer");
  }
}

TEST_F(Stories260K, CalibrationErrorsAreClear) {
  Tokenizer tok = Tokenizer::load(tokenizer_path());
  TempDir d;
  write_file(d.file("few.txt"), "one\n\ntwo\n\n   \n\nthree\n");
  CalibrationRecipe r;
  r.samples = 4;
  EXPECT_CONTAINS(testing::input_error([&] { build_calibration(d.file("few.txt"), tok, r, 512); }),
                  "3 non-empty documents, fewer than the 4");
  write_file(d.file("bad.jsonl"), "{\"text\": \"a\"}\n{\"text\": 3}\n");
  EXPECT_CONTAINS(testing::input_error([&] { build_calibration(d.file("bad.jsonl"), tok, r, 512); }), "bad.jsonl:2");
  write_file(d.file("empty.jsonl"), "{\"text\": \"\"}\n{\"text\": \"  \"}\n");
  r.samples = 1;
  EXPECT_CONTAINS(testing::input_error([&] { build_calibration(d.file("empty.jsonl"), tok, r, 512); }),
                  "0 non-empty documents");
  // seq_len is cut to the model's context; a longer document is truncated, BOS first.
  write_file(d.file("long.txt"), std::string(3000, 'a') + "\n");
  r.seq_len = 4096;
  CalibrationSet s = build_calibration(d.file("long.txt"), tok, r, 512);
  ASSERT_EQ(s.sequences.size(), 1u);
  EXPECT_EQ(s.sequences[0].size(), 512u);
  EXPECT_EQ(s.sequences[0][0], tok.bos_id());
  // The seed changes the sample.
  write_file(d.file("many.txt"), "a\n\nb\n\nc\n\nd\n\ne\n\nf\n\ng\n\nh\n");
  r.samples = 3;
  r.seed = 0;
  auto a = build_calibration(d.file("many.txt"), tok, r, 512).chosen;
  r.seed = 1;
  EXPECT_NE(a, build_calibration(d.file("many.txt"), tok, r, 512).chosen);
}

TEST_F(Stories260K, ResumingFromAHiddenStateEqualsTheFullPass) {
  LlamaModel model = LlamaModel::load(model_dir());
  at::Tensor tokens = at::randint(0, 512, {3, 40}, at::kLong);
  ForwardOptions prefix;
  prefix.layers = {0, 1};
  prefix.return_hidden = true;
  prefix.logits = false;
  at::Tensor cut = model.forward(tokens, prefix).hidden.back();  // output of layer 1 = input of what comes next
  ForwardOptions rest;
  rest.layers = {3, 4};
  rest.input_hidden = cut;
  ForwardOptions whole;
  whole.layers = {0, 1, 3, 4};
  EXPECT_TRUE(at::equal(model.forward(tokens, rest).logits, model.forward(tokens, whole).logits))
      << "the same operations on the same inputs: bit-identical";
  rest.input_hidden = cut.narrow(1, 0, 39);
  EXPECT_CONTAINS(testing::input_error([&] { model.forward(tokens, rest); }), "input_hidden must be [3, 40, 64]");
}

TEST_F(Stories260K, PrunedExportLoadsBackWithEqualLogits) {
  nlohmann::json g = nlohmann::json::parse(read_file(testing::source_file("tests/golden/stories260k_distances.json")));
  const auto kept_layers = g["pruned"]["kept"].get<std::vector<int64_t>>();
  TempDir d;
  PruneExport e = export_pruned_model(model_dir(), kept_layers, d.file("pruned"));
  EXPECT_EQ(e.kept_layers, 3);
  LlamaModel source = LlamaModel::load(model_dir());
  LlamaModel pruned = LlamaModel::load(d.file("pruned"));
  EXPECT_EQ(pruned.config().num_hidden_layers, 3);
  EXPECT_TRUE(fs::exists(d.file("pruned/tokenizer.model")));
  const auto ids = g["pruned"]["ids"].get<std::vector<int64_t>>();
  at::Tensor tokens = at::tensor(ids, at::kLong).unsqueeze(0);
  ForwardOptions skip;
  skip.layers = kept_layers;
  at::Tensor a = source.forward(tokens, skip).logits, b = pruned.forward(tokens).logits;
  EXPECT_TRUE(at::equal(a, b)) << "the exported model is the source run with skipped layers";
  // And both equal the plain-PyTorch reference run on the pruned weights.
  at::Tensor want = at::tensor(g["pruned"]["last_logits"].get<std::vector<double>>(), at::kFloat);
  at::Tensor last = b[0][int64_t(ids.size()) - 1];
  EXPECT_LT(((last - want).abs() / (want.abs() + 1)).max().item<double>(), 1e-5);
}

TEST(PruneExport, ShardedSourceAndBadRequests) {
  LlamaConfig c = testing::llama_shape(32, 48, 4, 4, 2, 64, 32);
  TempDir d;
  MakeModelOptions mo;
  mo.max_shard_bytes = 20000;  // several shards
  make_random_model(c, d.file("src"), mo);
  // A field layerprune does not model must survive the export untouched.
  nlohmann::ordered_json cfg = nlohmann::ordered_json::parse(read_file(d.file("src/config.json")));
  cfg["custom_field"] = "kept";
  write_file(d.file("src/config.json"), cfg.dump(2));
  PruneExport e = export_pruned_model(d.file("src"), {0, 3}, d.file("out"), 20000);
  EXPECT_TRUE(fs::exists(d.file("out/model.safetensors.index.json")));
  EXPECT_GT(e.files.size(), 3u);
  nlohmann::json out_cfg = nlohmann::json::parse(read_file(d.file("out/config.json")));
  EXPECT_EQ(out_cfg["num_hidden_layers"], 2);
  EXPECT_EQ(out_cfg["custom_field"], "kept");
  LlamaModel src = LlamaModel::load(d.file("src")), out = LlamaModel::load(d.file("out"));
  at::Tensor tokens = at::randint(0, 64, {2, 9}, at::kLong);
  ForwardOptions skip;
  skip.layers = {0, 3};
  EXPECT_TRUE(at::equal(src.forward(tokens, skip).logits, out.forward(tokens).logits));
  // Re-exporting into the same directory with fewer shards leaves no stale shard behind.
  export_pruned_model(d.file("out"), {1}, d.file("out2"));
  export_pruned_model(d.file("src"), {1, 2}, d.file("out"), 1ull << 40);
  EXPECT_EQ(LlamaModel::load(d.file("out")).config().num_hidden_layers, 2);

  EXPECT_CONTAINS(testing::input_error([&] { export_pruned_model(d.file("src"), {0, 4}, d.file("x")); }),
                  "within 0..3");
  EXPECT_CONTAINS(testing::input_error([&] { export_pruned_model(d.file("src"), {2, 1}, d.file("x")); }), "increase");
  EXPECT_CONTAINS(testing::input_error([&] { export_pruned_model(d.file("src"), {}, d.file("x")); }), "no layers");
  EXPECT_CONTAINS(testing::input_error([&] { export_pruned_model(d.file("src"), {0}, d.file("src")); }),
                  "is the source");
}

TEST(Distances, FingerprintAndKey) {
  LlamaConfig c = testing::llama_shape(16, 16, 1, 2, 2, 16, 8);
  TempDir d;
  make_random_model(c, d.file("a"), {});
  fs::copy(d.file("a"), d.file("b"));
  const std::string fa = model_fingerprint(d.file("a"));
  EXPECT_EQ(fa, model_fingerprint(d.file("b")));
  // One changed weight byte (the file is smaller than a sampled block, so every byte is covered).
  {
    std::fstream f(d.file("b/model.safetensors"), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-3, std::ios::end);
    f.put('\x7f');
  }
  EXPECT_NE(fa, model_fingerprint(d.file("b")));
  MakeModelOptions other;
  other.seed = 2;
  make_random_model(c, d.file("c"), other);
  EXPECT_NE(fa, model_fingerprint(d.file("c")));
  CalibrationRecipe r;
  const std::string k = distance_key(fa, "data", r, "float32");
  EXPECT_NE(k, distance_key(fa, "data", r, "bfloat16"));
  EXPECT_NE(k, distance_key(fa, "data2", r, "float32"));
  r.seed = 1;
  EXPECT_NE(k, distance_key(fa, "data", r, "float32"));
}

TEST(Distances, ResultJsonRoundTrips) {
  DistanceResult r;
  r.key = "k";
  r.model_dir = "m";
  r.model_fingerprint = "f";
  r.dtype = "float32";
  r.recipe.samples = 3;
  r.recipe.seq_len = 9;
  r.recipe.seed = 5;
  r.data_path = "x.txt";
  r.data_sha256 = "s";
  r.table = table_with(3, {{1, 1, 0.01}});
  DistanceResult back = DistanceResult::from_json(r.to_json(), "r.json");
  EXPECT_EQ(back.table.pair_matrix(), r.table.pair_matrix());
  EXPECT_EQ(back.recipe.seed, 5u);
  EXPECT_EQ(back.key, "k");
  nlohmann::json j = nlohmann::json::parse(r.to_json());
  EXPECT_EQ(j["best"][0]["l_star"], 1);
  EXPECT_CONTAINS(testing::input_error([] { DistanceResult::from_json("{\"key\": 1}", "bad.json"); }), "bad.json");
  j["distances"].erase(0);
  EXPECT_CONTAINS(testing::input_error([&] { DistanceResult::from_json(j.dump(), "short.json"); }), "short.json");
}


// --- The shared-prefix sweep --------------------------------------------------------------------------------

TEST(Sweep, CutPoints) {
  EXPECT_EQ(sweep_cut({0, 1, 2, 3, 4}), 4) << "the unpruned model resumes for its last layer";
  EXPECT_EQ(sweep_cut({0, 1, 4}), 2);
  EXPECT_EQ(sweep_cut({1, 2, 3, 4}), 0);
  EXPECT_EQ(sweep_cut({0, 1, 2}), 2) << "a pure prefix resumes one layer early";
  EXPECT_EQ(sweep_cut({4}), 0);
}

// Every variant of the sweep equals evaluating that pruned model on its own: same predictions, log-likelihoods
// within the 1e-4 (the operations are the same, so in practice the numbers are identical).
TEST_F(Stories260K, SweepEqualsEvaluatingEachVariant) {
  LP_REQUIRE_DATA(boolq, "boolq/val.jsonl");
  LP_REQUIRE_DATA(mmlu, "mmlu/hendrycks_format");
  LlamaModel model = LlamaModel::load(model_dir());
  Tokenizer tok = Tokenizer::load(tokenizer_path());
  std::vector<EvalItem> items = boolq_items(read_boolq(boolq, 6));
  MmluReadOptions mo;
  mo.subjects = {"abstract_algebra"};
  mo.shots = 0;
  mo.limit = 5;
  for (EvalItem& it : mmlu_items(read_mmlu(mmlu, mo), 0)) items.push_back(std::move(it));
  std::vector<SweepVariant> variants;
  for (int64_t n = 0; n <= 4; ++n)
    variants.push_back({"simple n=" + std::to_string(n), plan_pruning(Strategy::kSimple, 5, n, nullptr).kept});
  for (std::vector<int64_t> kept : std::vector<std::vector<int64_t>>{{0, 1, 4}, {0, 4}, {1, 2, 3, 4}, {0, 1, 2}, {2}})
    variants.push_back({"block " + format_layer_ranges(kept), kept});
  EvalOptions eo;
  eo.batch_size = 4;
  eo.progress = false;
  SweepStats stats;
  std::vector<EvalReport> swept = evaluate_sweep(model, tok, items, variants, eo, &stats);
  ASSERT_EQ(swept.size(), variants.size());
  int64_t naive = 0, shared_per_batch = 0, deepest = 0;
  for (size_t v = 0; v < variants.size(); ++v) {
    eo.layers = variants[v].kept;
    EvalReport alone = evaluate(model, tok, items, eo);
    ASSERT_EQ(alone.items.size(), swept[v].items.size());
    double worst = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      EXPECT_EQ(alone.items[i].pred, swept[v].items[i].pred) << variants[v].name << " item " << i;
      for (size_t c = 0; c < alone.items[i].loglik.size(); ++c)
        worst = std::max(worst, std::abs(alone.items[i].loglik[c] - swept[v].items[i].loglik[c]));
    }
    EXPECT_LE(worst, 1e-4) << variants[v].name;
    EXPECT_EQ(alone.overall.correct, swept[v].overall.correct) << variants[v].name;
    naive += int64_t(variants[v].kept.size());
    const int64_t cut = sweep_cut(variants[v].kept);
    shared_per_batch += int64_t(variants[v].kept.size()) - cut;
    deepest = std::max(deepest, cut);
  }
  // Counted work: per batch the base runs up to the deepest cut once, then each variant its remaining layers.
  ASSERT_GT(stats.batches, 1);
  EXPECT_EQ(stats.layer_evals_naive, naive * stats.batches);
  EXPECT_EQ(stats.layer_evals_shared, (deepest + shared_per_batch) * stats.batches);
  EXPECT_GT(stats.work_ratio(), 1.5);
  EXPECT_CONTAINS(testing::input_error([&] { evaluate_sweep(model, tok, items, {{"bad", {3, 1}}}, eo); }),
                  "strictly increasing");
}

// A non-finite distance is an error naming the calibration samples and the first layer whose output went bad.
TEST(Distances, ANonFiniteHiddenStateIsAnErrorNamingTheLayer) {
  testing::TempDir d;
  make_random_model(testing::llama_shape(32, 48, 3, 4, 2, 64, 32), d.path(), {});
  LlamaModel model = LlamaModel::load(d.path());
  LlamaWeights w = model.weights();
  w.layers[1].wo = w.layers[1].wo.clone();
  w.layers[1].wo[0][0] = std::numeric_limits<float>::quiet_NaN();
  LlamaModel bad = model.with_weights(w);
  CalibrationSet set;
  set.documents = 2;
  set.chosen = {0, 1};
  set.sequences = {{1, 5, 9, 2, 7}, {1, 3, 4}};
  EXPECT_NO_THROW(measure_distances(model, set));
  const std::string m = testing::input_error([&] { measure_distances(bad, set); });
  EXPECT_CONTAINS(m, "distances: calibration samples 0-1: a non-finite angular distance");
  EXPECT_CONTAINS(m, "layer 1's output (model.layers.1)");
}

}  // namespace
}  // namespace layerprune
