// SmolLM2-135M-Instruct, a real trained model (30 layers, GGUF Q4_1), through our whole pipeline against
// independent references (tests/golden/README.md):
//   - smollm2_reference.json (make_smollm2_golden.py): transformers loading the GGUF itself: logits on 3
//     prompts, 24 greedy tokens, and paper Eq. 7 distances on TinyStories from forward hooks;
//   - smollm2_eval.json (make_smollm2_eval_golden.py): lm-evaluation-harness 0.4.13 on our converted
//     directory: per-item log-likelihoods of 5-shot MMLU (2 subjects x 3 questions) and BoolQ (10).
// SmolLM2's tokenizer adds no BOS (its BOS is the chat template's <|im_start|>), so neither side adds one to
// prompts, calibration sequences or evaluation contexts.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>

#include <nlohmann/json.hpp>

#include "common/hashing.h"
#include "common/progress.h"
#include "common/text_file.h"
#include "evaluation/eval_data.h"
#include "evaluation/eval_tasks.h"
#include "evaluation/evaluate.h"
#include "formats/gguf_llama.h"
#include "formats/tokenizer.h"
#include "method/distances.h"
#include "model/generate.h"
#include "model/llama.h"
#include "tests/test_support.h"

namespace layerprune {
namespace {

using testing::TempDir;

constexpr const char* kGguf = "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

nlohmann::json golden(const std::string& name) {
  return nlohmann::json::parse(read_file(testing::source_file("tests/golden/" + name)));
}

// The GGUF converted once per test process by our converter (ctest runs each test in a process of its own;
// running the binary directly converts once for all), loaded once.
class SmolLM2 : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string gguf = testing::data_file(kGguf);
    if (gguf.empty()) return;
    dir_ = new TempDir();
    Progress::set_quiet(true);
    convert_gguf(gguf, dir_->path());
    Progress::set_quiet(false);
    model_ = new LlamaModel(LlamaModel::load(dir_->path()));
    tok_ = new Tokenizer(Tokenizer::load_dir(dir_->path()));
  }
  static void TearDownTestSuite() {
    delete tok_;
    delete model_;
    delete dir_;
    tok_ = nullptr;
    model_ = nullptr;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (!dir_) GTEST_SKIP() << "test data " << kGguf << " not found under " << testing::data_dir()
                            << " (set LAYERPRUNE_DATA to the shared data directory)";
  }
  static const LlamaModel& model() { return *model_; }
  static const Tokenizer& tok() { return *tok_; }

  static inline TempDir* dir_ = nullptr;
  static inline LlamaModel* model_ = nullptr;
  static inline Tokenizer* tok_ = nullptr;
};

// --- transformers on the GGUF: distances, logits, greedy text ---------------------------------------------

// Paper Eq. 7 over the golden file's recipe (8 TinyStories paragraphs, 64 tokens, seed 0, no BOS). Both sides
// take float32 hidden states through 30 layers and the angle in float64; they differ by summation order
// (batched, right-padded GEMMs here, one sequence at a time there). The smallest distance is 0.049, where
// arccos is well conditioned (d(theta)/d(cos) = 1/sin(theta) < 7), so relative hidden-state differences of
// ~1e-6 move d by ~1e-6 at most. Tolerance 1e-5 absolute on d in [0, 1] (measured: 7.4e-8). The closest
// runner-up to any l*(n) in the golden matrix is 8.8e-4 away, so l*(n) must match exactly.
constexpr double kDistanceTolerance = 1e-5;

TEST_F(SmolLM2, DistancesEqualTransformersWithHooks) {
  LP_REQUIRE_DATA(text, "tinystories/tinystories_val.txt");
  const nlohmann::json g = golden("smollm2_reference.json").at("distances");
  ASSERT_EQ(sha256_file(text), g.at("data_sha256").get<std::string>()) << "golden made from another TinyStories file";
  ASSERT_FALSE(tok().add_bos_default()) << "SmolLM2's tokenizer_config.json says add_bos_token false";
  ASSERT_EQ(g.at("add_bos").get<bool>(), tok().add_bos_default());
  CalibrationRecipe recipe;
  recipe.samples = g.at("samples").get<int64_t>();
  recipe.seq_len = g.at("seq_len").get<int64_t>();
  recipe.seed = g.at("seed").get<uint64_t>();
  recipe.add_bos = tok().add_bos_default();
  CalibrationSet set = build_calibration(text, tok(), recipe, model().config().max_position_embeddings);
  EXPECT_EQ(set.documents, g.at("documents").get<int64_t>());
  ASSERT_EQ(set.chosen, g.at("chosen").get<std::vector<int64_t>>()) << "sampling order differs from the reference";
  std::vector<int64_t> lengths;
  for (const auto& s : set.sequences) lengths.push_back(int64_t(s.size()));
  EXPECT_EQ(lengths, g.at("lengths").get<std::vector<int64_t>>()) << "token counts (no BOS) differ";

  DistanceOptions opt;
  opt.batch_size = 3;  // lengths 17..64 in one batch: right padding must not matter
  DistanceTable t = measure_distances(model(), set, opt);
  const int64_t L = model().config().num_hidden_layers;
  ASSERT_EQ(t.layers(), L);
  const auto& d = g.at("distances");
  ASSERT_EQ(int64_t(d.size()), L + 1);
  double worst = 0;
  for (int64_t i = 0; i <= L; ++i)
    for (int64_t j = 0; j <= L; ++j) {
      const double got = t.pair_matrix()[size_t(i * (L + 1) + j)], want = d[size_t(i)][size_t(j)].get<double>();
      EXPECT_NEAR(got, want, kDistanceTolerance) << "d(x^" << i << ", x^" << j << ")";
      worst = std::max(worst, std::abs(got - want));
    }
  std::cout << "largest |d - transformers| " << worst << "\n";
  const auto& best = g.at("best");
  ASSERT_EQ(int64_t(best.size()), L);
  for (const auto& b : best) {
    const int64_t n = b.at("n").get<int64_t>();
    EXPECT_EQ(t.best_start(n), b.at("l_star").get<int64_t>()) << "l*(" << n << ")";
    EXPECT_NEAR(t.at(t.best_start(n), n), b.at("d").get<double>(), kDistanceTolerance) << "n = " << n;
  }
}

// The logits of 3 prompts (7, 12 and 34 tokens) against transformers' float32 forward pass of the GGUF. The
// logits reach ~38 in magnitude; float32 summation-order differences through 30 layers are a few 1e-6
// relative, i.e. a few 1e-5 absolute (measured: 3.1e-5 over all checked logits and log-probabilities).
// Tolerance 2e-4: 6x the measured worst, and 50x below what small configuration errors do to these top
// logits (transformers on the converted directory with rms_norm_eps / 10: 1.1e-2; rms_norm_eps x 10: 0.11;
// rope_theta x 1.1: 0.15). The vocabulary sums are checked relative to the sum of squares.
constexpr double kLogitTolerance = 2e-4;

TEST_F(SmolLM2, PromptLogitsEqualTransformers) {
  const nlohmann::json g = golden("smollm2_reference.json");
  const std::vector<int64_t> fixed = g.at("fixed_ids");
  double worst = 0;
  for (const auto& p : g.at("prompts")) {
    const std::string text = p.at("text");
    SCOPED_TRACE(text);
    const std::vector<int64_t> ids = p.at("ids");
    std::vector<int32_t> ours = tok().encode(text, tok().add_bos_default());
    EXPECT_EQ(std::vector<int64_t>(ours.begin(), ours.end()), ids) << "tokenization differs from `tokenizers`";
    at::Tensor logits = model().forward(at::tensor(ids, at::kLong).unsqueeze(0)).logits[0].to(at::kDouble);
    ASSERT_EQ(logits.size(0), int64_t(ids.size()));
    at::Tensor logp = at::log_softmax(logits, -1);
    for (size_t t = 0; t < ids.size(); ++t) {
      at::Tensor row = logits[int64_t(t)];
      const std::vector<int64_t> top_ids = p.at("top_ids")[t];
      const std::vector<double> top_logits = p.at("top_logits")[t];
      EXPECT_EQ(row.argmax().item<int64_t>(), top_ids[0]) << "position " << t;
      for (size_t k = 0; k < top_ids.size(); ++k) {
        const double got = row[top_ids[k]].item<double>();
        EXPECT_NEAR(got, top_logits[k], kLogitTolerance) << "position " << t << " top " << k;
        worst = std::max(worst, std::abs(got - top_logits[k]));
      }
      const std::vector<double> fixed_logits = p.at("fixed_logits")[t];
      for (size_t k = 0; k < fixed.size(); ++k) {
        const double got = row[fixed[k]].item<double>();
        EXPECT_NEAR(got, fixed_logits[k], kLogitTolerance) << "position " << t << " id " << fixed[k];
        worst = std::max(worst, std::abs(got - fixed_logits[k]));
      }
      if (t + 1 < ids.size()) {
        const double got = logp[int64_t(t)][ids[t + 1]].item<double>(), want = p.at("next_logprob")[t];
        EXPECT_NEAR(got, want, kLogitTolerance) << "position " << t << ": log p(next prompt token)";
        worst = std::max(worst, std::abs(got - want));
      }
    }
    const double sum = p.at("sum"), sum_squares = p.at("sum_squares");
    EXPECT_NEAR(logits.sum().item<double>(), sum, 1e-6 * sum_squares);
    EXPECT_NEAR((logits * logits).sum().item<double>(), sum_squares, 1e-5 * sum_squares);
  }
  std::cout << "largest |logit - transformers| " << worst << "\n";
}

// 24 greedy tokens after "Once upon a time, there was", against transformers' generate (do_sample=False):
// ids, and the text through the converted directory's tokenizer.
TEST_F(SmolLM2, GreedyTokensEqualTransformersGenerate) {
  const nlohmann::json g = golden("smollm2_reference.json").at("greedy");
  const std::vector<int32_t> want_prompt = g.at("prompt_ids"), want = g.at("ids");
  GenerateResult r = generate_greedy(model(), tok(), "Once upon a time, there was", int64_t(want.size()));
  EXPECT_EQ(r.prompt_ids, want_prompt) << "no BOS, then the prompt's tokens";
  EXPECT_EQ(r.new_ids, want);
  EXPECT_EQ(r.stop_reason, "max_new_tokens");
  EXPECT_EQ(tok().decode(r.new_ids), g.at("text").get<std::string>());
  EXPECT_EQ(r.text, "Once upon a time, there was" + g.at("text").get<std::string>());
}

// --- lm-evaluation-harness on the converted directory ------------------------------------------------------

// Item by item against the harness: same context text (sha256), same context token count, same prediction,
// log-likelihoods within 2e-4 nats. Both sides run float32 forward passes of the same weights over prompts
// of up to ~400 tokens, in different summation orders; the harness takes a float32 log-softmax over 49,152
// logits and sums it in float32 (its samples file holds those float32 values), we take the log-softmax in
// float64 of our float32 logits. Measured: 2.2e-5 at most (MMLU 1.9e-5, BoolQ 2.2e-5); 2e-4 leaves 9x margin
// and is still 100x below the smallest gap between an item's top two choices in the golden file (0.027).
// So that a prediction cannot flip by accident, the test requires the golden's top two choices to be more
// than twice the tolerance apart.
constexpr double kLoglikTolerance = 2e-4;

void expect_items_equal(const nlohmann::json& want, const std::vector<EvalItem>& items, const EvalReport& rep,
                        const std::string& label, double& worst) {
  ASSERT_EQ(want.size(), items.size()) << label;
  ASSERT_EQ(rep.items.size(), items.size()) << label;
  for (size_t i = 0; i < items.size(); ++i) {
    const auto& w = want[i];
    const ItemScore& got = rep.items[i];
    SCOPED_TRACE(label + " item " + std::to_string(i) + " " + items[i].subject);
    EXPECT_EQ(w.at("subject").get<std::string>(), items[i].subject);
    EXPECT_EQ(w.at("index").get<int64_t>(), items[i].index);
    EXPECT_EQ(got.prompt_sha256, w.at("prompt_sha256").get<std::string>()) << "the context text differs";
    EXPECT_EQ(got.context_tokens, w.at("context_tokens").get<int64_t>());
    EXPECT_FALSE(got.truncated);
    EXPECT_EQ(items[i].gold, w.at("gold").get<int>());
    const auto ll = w.at("loglikelihoods").get<std::vector<double>>();
    ASSERT_EQ(got.loglik.size(), ll.size());
    std::vector<double> sorted = ll;
    std::sort(sorted.rbegin(), sorted.rend());
    ASSERT_GT(sorted[0] - sorted[1], 2 * kLoglikTolerance) << "the golden's top two choices are too close for a stable prediction";
    EXPECT_EQ(got.pred, w.at("pred").get<int>());
    EXPECT_EQ(got.correct, w.at("correct").get<bool>());
    for (size_t c = 0; c < ll.size(); ++c) {
      EXPECT_NEAR(got.loglik[c], ll[c], kLoglikTolerance) << "choice " << c;
      worst = std::max(worst, std::abs(got.loglik[c] - ll[c]));
    }
  }
}

class SmolLM2Eval : public SmolLM2 {
 protected:
  void SetUp() override {
    SmolLM2::SetUp();
    if (IsSkipped()) return;
    if (testing::data_file("mmlu/hendrycks_format").empty() || testing::data_file("boolq/val.jsonl").empty())
      GTEST_SKIP() << "mmlu/hendrycks_format or boolq/val.jsonl not found under " << testing::data_dir()
                   << " (set LAYERPRUNE_DATA to the shared data directory)";
    g_ = golden("smollm2_eval.json");
    for (const auto& [file, sha] : g_.at("data_sha256").items())
      ASSERT_EQ(sha256_file(testing::data_dir() + "/" + file), sha.get<std::string>())
          << file << " differs from the data the golden file was made from";
    ASSERT_EQ(g_.at("add_bos").get<bool>(), tok().add_bos_default());
  }
  EvalOptions options(bool reuse_prefix) const {
    EvalOptions o;
    o.add_bos = tok().add_bos_default();
    o.reuse_prefix = reuse_prefix;
    o.batch_size = 4;
    o.progress = false;
    return o;
  }
  nlohmann::json g_;
};

TEST_F(SmolLM2Eval, Mmlu5ShotEqualsLmEvaluationHarness) {
  const auto& m = g_.at("mmlu");
  MmluReadOptions ro;
  ro.subjects = m.at("subjects").get<std::vector<std::string>>();
  ro.shots = m.at("shots").get<int64_t>();
  ro.limit = m.at("questions_per_subject").get<int64_t>();
  std::vector<EvalItem> items = mmlu_items(read_mmlu(testing::data_dir() + "/mmlu/hendrycks_format", ro), ro.shots);
  // The k-shot prefix ends in "\n\n", which SmolLM2's pre-tokenizer (GPT-2's regex) encodes as one token
  // alone but as two before the question's first word: the cache holds the tokens prefix and prompts share
  // (evaluation/prefix_eval.cc), and every item is served from it. The second run declares the shared prefix
  // without its trailing "\n\n" (a prefix that ends on a token boundary); the third runs full prompts.
  std::vector<EvalItem> cut = items;
  for (EvalItem& it : cut) {
    ASSERT_EQ(it.context.substr(size_t(it.shared_prefix_bytes) - 2, 2), "\n\n");
    it.shared_prefix_bytes -= 2;
  }
  struct Run {
    std::string label;
    const std::vector<EvalItem>* items;
    bool reuse;
  };
  double worst = 0;
  for (const Run& run : {Run{"prefix reuse on", &items, true}, Run{"prefix reuse on, prefix before its \\n\\n", &cut, true},
                         Run{"prefix reuse off", &items, false}}) {
    EvalReport rep = evaluate(model(), tok(), *run.items, options(run.reuse));
    EXPECT_EQ(rep.prefix_reuse, run.reuse) << run.label;
    if (run.reuse) {
      EXPECT_EQ(rep.prefix_cached_items, int64_t(items.size())) << run.label << ": every item from the cache";
    }
    std::cout << run.label << ": " << rep.prefix_cached_items << " of " << items.size() << " items from the cache\n";
    expect_items_equal(m.at("items"), items, rep, run.label, worst);
    for (const auto& s : ro.subjects)
      EXPECT_DOUBLE_EQ(rep.subjects[s].acc(), m.at("acc").at(s).get<double>()) << run.label << " " << s;
  }
  std::cout << "largest |loglik - lm-eval| " << worst << "\n";
}

TEST_F(SmolLM2Eval, BoolqEqualsLmEvaluationHarness) {
  const auto& b = g_.at("boolq");
  std::vector<EvalItem> items =
      boolq_items(read_boolq(testing::data_dir() + "/boolq/val.jsonl", b.at("questions").get<int64_t>()));
  // BoolQ items share no prefix, so evaluate() takes the plain path whatever reuse_prefix says: one run.
  double worst = 0;
  EvalReport rep = evaluate(model(), tok(), items, options(true));
  EXPECT_FALSE(rep.prefix_reuse) << "BoolQ has no shared few-shot prefix";
  expect_items_equal(b.at("items"), items, rep, "boolq", worst);
  EXPECT_DOUBLE_EQ(rep.overall.acc(), b.at("acc").get<double>());
  std::cout << "largest |loglik - lm-eval| " << worst << "\n";
}

}  // namespace
}  // namespace layerprune
