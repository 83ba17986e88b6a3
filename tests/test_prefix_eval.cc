// Few-shot prefix reuse (evaluation/prefix_eval.h): the same answers as the plain scorer, item by item, on real
// MMLU 5-shot prompts with the real Llama-2 tokenizer; items whose tokens do not split at the prefix (a
// SentencePiece merge across the boundary, left truncation) are detected and fall back to full rows.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>

#include "tests/model_fixtures.h"
#include "tests/llama_shapes.h"
#include "tests/test_support.h"
#include "evaluation/eval_data.h"
#include "evaluation/eval_tasks.h"
#include "evaluation/evaluate.h"
#include "model/llama.h"
#include "model/make_model.h"
#include "evaluation/prefix_eval.h"
#include "formats/tokenizer.h"

namespace layerprune {
namespace {

using testing::TempDir;

// Both sides run the same float32 math on the same tokens; only the summation order differs (the prefix's
// keys/values come from a batch-1 pass instead of the row's own, attention is blocked from another start,
// GEMM shapes differ), which moves a log-softmax by ~1e-6 here. 1e-4 leaves margin and is far below the
// gaps between choices that decide a prediction (also checked: predictions identical).
constexpr double kTolerance = 1e-4;

void expect_same_answers(const EvalReport& a, const EvalReport& b, double tol, const std::string& what) {
  ASSERT_EQ(a.items.size(), b.items.size());
  for (size_t i = 0; i < a.items.size(); ++i) {
    EXPECT_EQ(a.items[i].pred, b.items[i].pred) << what << " item " << i;
    EXPECT_EQ(a.items[i].truncated, b.items[i].truncated) << what << " item " << i;
    EXPECT_EQ(a.items[i].context_tokens, b.items[i].context_tokens) << what << " item " << i;
    ASSERT_EQ(a.items[i].loglik.size(), b.items[i].loglik.size());
    for (size_t c = 0; c < a.items[i].loglik.size(); ++c)
      EXPECT_NEAR(a.items[i].loglik[c], b.items[i].loglik[c], tol) << what << " item " << i << " choice " << c;
  }
  EXPECT_EQ(a.overall.correct, b.overall.correct) << what;
}

EvalReport run(const LlamaModel& m, const Tokenizer& tok, const std::vector<EvalItem>& items, bool reuse,
               int64_t batch, const std::vector<int64_t>& layers = {}) {
  EvalOptions o;
  o.reuse_prefix = reuse;
  o.batch_size = batch;
  o.layers = layers;
  o.progress = false;
  return evaluate(m, tok, items, o);
}

// A small random Llama with the real Llama-2 tokenizer and 2048 positions, so that 5-shot MMLU prompts fit
// untruncated. init_std 0.1 spreads the logits (std ~1) so that choices are not near-ties.
class PrefixEval : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string tok = testing::data_file("llama2/tokenizer/tokenizer.model");
    std::string mmlu = testing::data_file("mmlu/hendrycks_format");
    if (tok.empty() || mmlu.empty()) return;
    dir_ = new TempDir();
    LlamaConfig c = testing::llama_shape(64, 128, 2, 4, 2, 32000, 2048);
    MakeModelOptions o;
    o.seed = 11;
    o.init_std = 0.1;
    o.tokenizer_model = tok;
    make_random_model(c, dir_->path(), o);
    model_ = new LlamaModel(LlamaModel::load(dir_->path()));
    tok_ = new Tokenizer(Tokenizer::load(tok));
    mmlu_root_ = mmlu;
  }
  static void TearDownTestSuite() {
    delete model_;
    delete tok_;
    delete dir_;
    model_ = nullptr;
    tok_ = nullptr;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (!dir_)
      GTEST_SKIP() << "llama2/tokenizer/tokenizer.model or mmlu/hendrycks_format not found under "
                   << testing::data_dir() << " (set LAYERPRUNE_DATA to the shared data directory)";
  }
  // 3 subjects x 4 test questions, 5-shot (subjects whose 5-shot prompts fit 2048 tokens).
  static std::vector<EvalItem> mmlu(int64_t shots = 5) {
    MmluReadOptions o;
    o.subjects = {"abstract_algebra", "astronomy", "marketing"};
    o.shots = shots;
    o.limit = 4;
    return mmlu_items(read_mmlu(mmlu_root_, o), shots);
  }
  static inline TempDir* dir_ = nullptr;
  static inline LlamaModel* model_ = nullptr;
  static inline Tokenizer* tok_ = nullptr;
  static inline std::string mmlu_root_;
};

TEST_F(PrefixEval, SharedPrefixIsEverythingBeforeTheQuestion) {
  std::vector<EvalItem> items = mmlu();
  ASSERT_EQ(items.size(), 12u);
  for (const EvalItem& it : items) {
    ASSERT_GT(it.shared_prefix_bytes, 0);
    std::string prefix = it.context.substr(0, size_t(it.shared_prefix_bytes));
    EXPECT_EQ(prefix.rfind("The following are multiple choice questions", 0), 0u);
    EXPECT_EQ(prefix.substr(prefix.size() - 2), "\n\n") << "the prefix ends after the last shot";
    EXPECT_GE(std::count(prefix.begin(), prefix.end(), '\n'), 2 * 5) << "description + 5 shots";
    EXPECT_EQ(it.context.find("Answer:", size_t(it.shared_prefix_bytes)), it.context.size() - 7)
        << "only the question's own \"Answer:\" is after the prefix";
  }
  EXPECT_EQ(items[0].context.substr(0, size_t(items[0].shared_prefix_bytes)),
            items[3].context.substr(0, size_t(items[3].shared_prefix_bytes)))
      << "one subject, one prefix";
  for (const EvalItem& it : boolq_items({BoolqQuestion{"q", "p", true, 1}})) EXPECT_EQ(it.shared_prefix_bytes, 0);
}

TEST_F(PrefixEval, MatchesThePlainScorerAllLayersAndPruned) {
  std::vector<EvalItem> items = mmlu();
  for (const std::vector<int64_t>& layers : {std::vector<int64_t>{}, std::vector<int64_t>{1}}) {
    const std::string what = layers.empty() ? "all layers" : "layer 0 dropped";
    EvalReport plain = run(*model_, *tok_, items, false, 2, layers);
    EvalReport cached = run(*model_, *tok_, items, true, 5, layers);
    EXPECT_FALSE(plain.prefix_reuse);
    EXPECT_TRUE(cached.prefix_reuse);
    EXPECT_EQ(plain.truncated, 0) << "the prompts must fit 2048 positions for this test to mean anything";
    EXPECT_EQ(cached.prefix_cached_items, int64_t(items.size())) << what << ": every prompt splits at its prefix";
    EXPECT_EQ(cached.prefixes, 3) << "one prefix per subject";
    expect_same_answers(plain, cached, kTolerance, what);
    EXPECT_EQ(cached.full_prompt_tokens, plain.tokens_processed);
    EXPECT_LT(cached.tokens_processed * 2, plain.tokens_processed) << "the prefix runs once per subject";
    // Batch size changes nothing on the cached path either (the cache is broadcast to the batch).
    EvalReport one = run(*model_, *tok_, items, true, 1, layers);
    expect_same_answers(one, cached, 1e-5, what + ", batch 1 vs 5");
  }
}

TEST_F(PrefixEval, ZeroShotPrefixIsTheDescription) {
  std::vector<EvalItem> items = mmlu(0);
  EvalReport plain = run(*model_, *tok_, items, false, 4);
  EvalReport cached = run(*model_, *tok_, items, true, 4);
  EXPECT_EQ(cached.prefix_cached_items, int64_t(items.size()));
  expect_same_answers(plain, cached, kTolerance, "0-shot");
}

// "The sky is" alone ends in the token "▁is"; in "The sky isn't" SentencePiece takes "▁isn" instead, so the
// prefix's tokens are not a prefix of the prompt's: that item must be found and run on its full rows.
TEST_F(PrefixEval, MergeAcrossTheBoundaryFallsBack) {
  const std::string prefix = "Colours of things, true or false.\n\nThe sky is";
  auto item = [&](const std::string& rest, int gold) {
    EvalItem it;
    it.task = "mmlu";
    it.subject = "hand_made";
    it.context = prefix + rest + "\nAnswer:";
    it.shared_prefix_bytes = int64_t(prefix.size());
    it.choices = {" A", " B"};
    it.gold = gold;
    return it;
  };
  std::vector<EvalItem> items = {item(" blue.", 0), item("n't green.", 1), item(" grey at night.", 0)};
  std::vector<int32_t> p = tok_->encode(prefix, false);
  std::vector<int32_t> clean = build_request(*tok_, items[0], false).context;
  std::vector<int32_t> merged = build_request(*tok_, items[1], false).context;
  ASSERT_TRUE(std::equal(p.begin(), p.end(), clean.begin())) << "precondition: \" blue\" starts a new token";
  ASSERT_FALSE(std::equal(p.begin(), p.end(), merged.begin())) << "precondition: \"isn't\" merges across the boundary";

  // The group caches the tokens every prompt starts with: the prefix's, less the last one(s) the merge took.
  const size_t common = size_t(std::mismatch(p.begin(), p.end(), merged.begin()).first - p.begin());
  ASSERT_GT(common, 0u);
  ASSERT_LT(common, p.size());
  std::vector<EvalRequest> requests;
  for (const EvalItem& it : items) requests.push_back(build_request(*tok_, it, false));
  PrefixSplit split = split_shared_prefix(*tok_, items, requests, false, 2048);
  ASSERT_EQ(split.groups.size(), 1u);
  EXPECT_EQ(split.groups[0].prefix, std::vector<int32_t>(p.begin(), p.begin() + std::ptrdiff_t(common)));
  EXPECT_EQ(split.groups[0].items, (std::vector<int64_t>{0, 1, 2}));
  EXPECT_TRUE(split.fallback.empty());
  EXPECT_EQ(split.groups[0].suffixes[0].context,
            std::vector<int32_t>(clean.begin() + std::ptrdiff_t(common), clean.end()))
      << "the suffix is the plain tokens after the shared ones, unchanged";

  EvalReport plain = run(*model_, *tok_, items, false, 3);
  EvalReport cached = run(*model_, *tok_, items, true, 3);
  EXPECT_EQ(cached.prefix_cached_items, 3);
  expect_same_answers(plain, cached, kTolerance, "hand-made");

  // A prompt whose tokens part from the prefix's long before its end (not a boundary effect) is scored on its
  // full row, and does not shorten the others' cache.
  std::vector<EvalRequest> odd = requests;
  odd[1].context[0] = odd[1].context[0] == 5 ? 6 : 5;
  PrefixSplit apart = split_shared_prefix(*tok_, items, odd, false, 2048);
  ASSERT_EQ(apart.fallback, (std::vector<int64_t>{1}));
  EXPECT_CONTAINS(apart.fallback_reason[0], "share only 0 of the prefix's");
  ASSERT_EQ(apart.groups.size(), 1u);
  EXPECT_EQ(apart.groups[0].prefix, p) << "items 0 and 2 start with all of the prefix's tokens";

  // A row that would be left-truncated loses the prefix's start: it falls back too.
  PrefixSplit tight = split_shared_prefix(*tok_, items, requests, false, int64_t(clean.size()) - 1);
  EXPECT_TRUE(std::find(tight.fallback.begin(), tight.fallback.end(), 0) != tight.fallback.end());
  EXPECT_CONTAINS(tight.fallback_reason[0], "left-truncated");
}

// stories260K has 512 positions: every 5-shot prompt is left-truncated, so every item falls back and the
// answers are exactly the plain scorer's (the same rows in the same batches).
class PrefixEvalStories : public testing::Stories260K {
 protected:
  void SetUp() override {
    Stories260K::SetUp();
    if (IsSkipped()) return;
    if (testing::data_file("mmlu/hendrycks_format").empty())
      GTEST_SKIP() << "mmlu/hendrycks_format not found under " << testing::data_dir()
                   << " (set LAYERPRUNE_DATA to the shared data directory)";
  }
};

TEST_F(PrefixEvalStories, TruncatedPromptsAllFallBack) {
  LlamaModel model = LlamaModel::load(model_dir());
  Tokenizer tok = Tokenizer::load(tokenizer_path());
  MmluReadOptions o;
  o.subjects = {"abstract_algebra", "marketing"};
  o.limit = 3;
  std::vector<EvalItem> items = mmlu_items(read_mmlu(testing::data_file("mmlu/hendrycks_format"), o), 5);
  EvalReport plain = run(model, tok, items, false, 4);
  EvalReport cached = run(model, tok, items, true, 4);
  EXPECT_EQ(plain.truncated, int64_t(items.size()));
  EXPECT_EQ(cached.prefix_cached_items, 0);
  EXPECT_EQ(cached.prefixes, 0);
  EXPECT_EQ(cached.tokens_processed, plain.tokens_processed);
  expect_same_answers(plain, cached, 0.0, "stories260K fallback");
}

}  // namespace
}  // namespace layerprune
