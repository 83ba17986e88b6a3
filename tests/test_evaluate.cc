// Evaluation (issue 4): the CSV parser and the MMLU/BoolQ readers, the harness's prompts and _encode_pair,
// the truncation rule, batching and the single-token shortcut, and stories260K's MMLU/BoolQ scores against
// an independent plain-PyTorch reference (tests/golden/make_eval_golden.py).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <set>

#include <nlohmann/json.hpp>

#include "common/csv.h"
#include "common/hashing.h"
#include "common/text_file.h"
#include "tests/model_fixtures.h"
#include "tests/llama_shapes.h"
#include "tests/test_support.h"
#include "evaluation/eval_data.h"
#include "evaluation/eval_tasks.h"
#include "evaluation/evaluate.h"
#include "model/llama.h"
#include "model/llama2c.h"
#include "model/make_model.h"
#include "formats/tokenizer.h"

namespace layerprune {
namespace {

using testing::input_error;
using testing::TempDir;

// --- CSV ---------------------------------------------------------------------------------------------------

TEST(Csv, QuotedCommasDoubledQuotesNewlinesAndCrlf) {
  std::string text =
      "\xEF\xBB\xBF" "plain,\"with, comma\",\"say \"\"hi\"\"\"\r\n"
      "\"two\r\nlines\",5\" screen,\r\n"
      "\n"
      "\"\",last\rcr,only";
  auto rows = parse_csv(text, "t.csv");
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[0].fields, (std::vector<std::string>{"plain", "with, comma", "say \"hi\""}));
  EXPECT_EQ(rows[0].line, 1);
  EXPECT_EQ(rows[1].fields, (std::vector<std::string>{"two\r\nlines", "5\" screen", ""}));
  EXPECT_EQ(rows[1].line, 2);
  EXPECT_EQ(rows[2].fields, (std::vector<std::string>{"", "last"}));
  EXPECT_EQ(rows[2].line, 5) << "record 2 spans lines 2-3, then a blank line";
  EXPECT_EQ(rows[3].fields, (std::vector<std::string>{"cr", "only"}));
  EXPECT_EQ(rows[3].line, 6) << "a lone \\r ends a line too";
  EXPECT_TRUE(parse_csv("", "e.csv").empty());
  EXPECT_EQ(parse_csv("a,b\n", "n.csv").size(), 1u) << "a final line break adds no record";
}

TEST(Csv, BrokenQuotesNameTheRecordStart) {
  std::string e = input_error([] { parse_csv("ok,1\n\"open,2\nmore\n", "q.csv"); });
  EXPECT_CONTAINS(e, "q.csv:2: unterminated quoted field");
  e = input_error([] { parse_csv("a,b\n\"x\"y,z\n", "r.csv"); });
  EXPECT_CONTAINS(e, "r.csv:2: unexpected 'y' after the closing quote");
}

// --- MMLU / BoolQ readers ----------------------------------------------------------------------------------

void write(const std::string& path, const std::string& text) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  write_file(path, text);
}

TEST(MmluReader, BothLayoutsGiveIdenticalQuestions) {
  TempDir d;
  write(d.file("h/test/x_test.csv"), "\"Q1, with comma\",a,b,c,d,C\n\"Multi\nline\",\"\"\"q\"\"\",2,3,4,A\n");
  write(d.file("c/test/x_test.csv"),
        "question,choice0,choice1,choice2,choice3,answer\r\n\"Q1, with comma\",a,b,c,d,2\r\n\"Multi\nline\",\"\"\"q\"\"\",2,3,4,0\r\n");
  auto h = read_mmlu_csv(d.file("h/test/x_test.csv"));
  auto c = read_mmlu_csv(d.file("c/test/x_test.csv"));
  ASSERT_EQ(h.size(), 2u);
  ASSERT_EQ(c.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(h[i].question, c[i].question);
    EXPECT_EQ(h[i].choices, c[i].choices);
    EXPECT_EQ(h[i].answer, c[i].answer);
  }
  EXPECT_EQ(h[0].answer, 2);
  EXPECT_EQ(h[1].choices[0], "\"q\"");
  EXPECT_EQ(c[1].line, 3);
}

TEST(MmluReader, SharedDataLayoutsAgree) {
  LP_REQUIRE_DATA(hendrycks, "mmlu/hendrycks_format");
  LP_REQUIRE_DATA(cais, "mmlu/cais_export");
  MmluReadOptions o;
  o.subjects = {"abstract_algebra", "high_school_european_history", "world_religions"};
  auto a = mmlu_items(read_mmlu(hendrycks, o), 5);
  auto b = mmlu_items(read_mmlu(cais, o), 5);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(a.size(), 100u + 165u + 171u);
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].context, b[i].context) << i;
    ASSERT_EQ(a[i].gold, b[i].gold) << i;
  }
  EXPECT_EQ(read_mmlu(hendrycks, MmluReadOptions{}).size(), 57u) << "every subject found";
}

TEST(MmluReader, BadRowsNameFileAndLine) {
  TempDir d;
  write(d.file("five.csv"), "q,a,b,c,d,A\n\"q\nspans\",a,b,c,D\n");
  EXPECT_CONTAINS(input_error([&] { read_mmlu_csv(d.file("five.csv")); }),
                  "five.csv:2: expected 6 fields (question, A, B, C, D, answer), found 5");
  write(d.file("e.csv"), "q,a,b,c,d,A\nq2,a,b,c,d,B\nq3,a,b,c,d,E\n");
  EXPECT_CONTAINS(input_error([&] { read_mmlu_csv(d.file("e.csv")); }), "e.csv:3: answer 'E' is not one of A, B, C, D");
  write(d.file("e1.csv"), "q,a,b,c,d,E\n");
  EXPECT_CONTAINS(input_error([&] { read_mmlu_csv(d.file("e1.csv")); }), "e1.csv:1: answer 'E'")
      << "a one-letter last field is a bad answer, not a header";
  write(d.file("quote.csv"), "q,a,b,c,d,A\nq2,a,b,c,d,B\n\"q3,a,b,c,d,C\nq4,a,b,c,d,D\n");
  EXPECT_CONTAINS(input_error([&] { read_mmlu_csv(d.file("quote.csv")); }), "quote.csv:3: unterminated quoted field");
}

TEST(MmluReader, SubjectsAreReportedNotSkipped) {
  TempDir d;
  std::string row = "q,a,b,c,d,A\n";
  write(d.file("test/alpha_test.csv"), row + row + row);
  write(d.file("dev/alpha_dev.csv"), row + row);
  write(d.file("test/empty_test.csv"), "");
  write(d.file("dev/empty_dev.csv"), row);
  MmluReadOptions o;
  o.shots = 2;
  o.subjects = {"alpha", "alpha"};
  EXPECT_CONTAINS(input_error([&] { read_mmlu(d.path(), o); }), "subject 'alpha' is asked for twice");
  o.subjects = {"alpha", "nope"};
  EXPECT_CONTAINS(input_error([&] { read_mmlu(d.path(), o); }), "subject 'nope' has no test file");
  o.subjects = {"empty"};
  EXPECT_CONTAINS(input_error([&] { read_mmlu(d.path(), o); }), "no questions for subject 'empty'");
  o.subjects = {"alpha"};
  o.shots = 3;
  std::string e = input_error([&] { read_mmlu(d.path(), o); });
  EXPECT_CONTAINS(e, "subject 'alpha' has 2 dev questions");
  EXPECT_CONTAINS(e, "fewer than the 3 shots");
  o.shots = 2;
  o.limit = 2;
  auto s = read_mmlu(d.path(), o);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].eval.size(), 2u);
  EXPECT_EQ(s[0].dev.size(), 2u);
  o.subjects.clear();  // all subjects found: the empty one is an error, not dropped
  EXPECT_CONTAINS(input_error([&] { read_mmlu(d.path(), o); }), "subject 'empty'");
  EXPECT_CONTAINS(input_error([&] { read_mmlu(d.file("missing"), o); }), "not an MMLU directory");
}

TEST(BoolqReader, GoogleAndSuperGlueLayouts) {
  TempDir d;
  write(d.file("g.jsonl"), "{\"question\": \"is it\", \"passage\": \"P\", \"answer\": true, \"title\": \"T\"}\n"
                           "\n{\"question\": \"is not\", \"passage\": \"Q\", \"answer\": false}\n");
  write(d.file("s.jsonl"), "{\"question\": \"is it\", \"passage\": \"P\", \"idx\": 0, \"label\": \"true\"}\r\n"
                           "{\"question\": \"is not\", \"passage\": \"Q\", \"idx\": 1, \"label\": 0}\n"
                           "{\"question\": \"third\", \"passage\": \"R\", \"idx\": 2, \"label\": true}\n");
  auto g = read_boolq(d.file("g.jsonl"));
  auto s = read_boolq(d.file("s.jsonl"));
  ASSERT_EQ(g.size(), 2u);
  ASSERT_EQ(s.size(), 3u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(g[i].question, s[i].question);
    EXPECT_EQ(g[i].passage, s[i].passage);
    EXPECT_EQ(g[i].answer, s[i].answer);
  }
  EXPECT_TRUE(g[0].answer);
  EXPECT_FALSE(g[1].answer);
  EXPECT_EQ(g[1].line, 3);
  EXPECT_TRUE(s[2].answer);
  EXPECT_EQ(read_boolq(d.file("s.jsonl"), 2).size(), 2u);
}

TEST(BoolqReader, BadRowsNameFileAndLine) {
  TempDir d;
  write(d.file("l.jsonl"), "{\"question\": \"q\", \"passage\": \"p\", \"label\": \"true\"}\n"
                           "{\"question\": \"q\", \"passage\": \"p\", \"label\": \"yes\"}\n");
  EXPECT_CONTAINS(input_error([&] { read_boolq(d.file("l.jsonl")); }), "l.jsonl:2: \"label\" is \"yes\"; expected true/false");
  write(d.file("n.jsonl"), "{\"question\": \"q\", \"passage\": \"p\", \"label\": 2}\n");
  EXPECT_CONTAINS(input_error([&] { read_boolq(d.file("n.jsonl")); }), "n.jsonl:1: \"label\" is 2");
  write(d.file("m.jsonl"), "{\"question\": \"q\", \"label\": true}\n");
  EXPECT_CONTAINS(input_error([&] { read_boolq(d.file("m.jsonl")); }), "m.jsonl:1: expected a string field \"passage\"");
  write(d.file("t.jsonl"), "{\"question\": 3, \"passage\": \"p\", \"label\": true}\n");
  EXPECT_CONTAINS(input_error([&] { read_boolq(d.file("t.jsonl")); }), "t.jsonl:1: expected a string field \"question\"");
  write(d.file("x.jsonl"), "{\"question\": \"q\", \"passage\": \"p\"}\n");
  EXPECT_CONTAINS(input_error([&] { read_boolq(d.file("x.jsonl")); }), "x.jsonl:1: no \"answer\"");
  write(d.file("j.jsonl"), "{\"question\": \"q\", \"passage\": \"p\", \"label\": true}\n{oops\n");
  EXPECT_CONTAINS(input_error([&] { read_boolq(d.file("j.jsonl")); }), "j.jsonl:2: invalid JSON");
  write(d.file("e.jsonl"), "\n");
  EXPECT_CONTAINS(input_error([&] { read_boolq(d.file("e.jsonl")); }), "no BoolQ questions");
}

// --- Prompts and tokens ------------------------------------------------------------------------------------

TEST(Prompts, MmluTwoShotIsTheHarnessTemplate) {
  MmluSubject s;
  s.name = "high_school_physics";
  s.dev = {{"What is 1+1?", {"1", "2", "3", "4"}, 1, 1}, {"  Pick C.\n", {"x", "y", "z", "w"}, 2, 2}};
  s.eval = {{"\tWhich is heavier?  ", {"lead", "air", "a feather", " none"}, 0, 3}};
  auto items = mmlu_items({s}, 2);
  ASSERT_EQ(items.size(), 1u);
  EXPECT_EQ(items[0].context,
            "The following are multiple choice questions (with answers) about high school physics.\n\n"
            "What is 1+1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: B\n\n"
            "Pick C.\nA. x\nB. y\nC. z\nD. w\nAnswer: C\n\n"
            "Which is heavier?\nA. lead\nB. air\nC. a feather\nD.  none\nAnswer:");
  EXPECT_EQ(items[0].choices, (std::vector<std::string>{" A", " B", " C", " D"}));
  EXPECT_EQ(items[0].gold, 0);
  EXPECT_EQ(items[0].subject, "high_school_physics");
  EXPECT_EQ(mmlu_items({s}, 0)[0].context,
            "The following are multiple choice questions (with answers) about high school physics.\n\n"
            "Which is heavier?\nA. lead\nB. air\nC. a feather\nD.  none\nAnswer:");
}

TEST(Prompts, BoolqIsTheHarnessTemplate) {
  auto items = boolq_items({{"is the sky blue", "Sky -- The sky is blue.", true, 1}});
  EXPECT_EQ(items[0].context, "Sky -- The sky is blue.\nQuestion: is the sky blue?\nAnswer:");
  EXPECT_EQ(items[0].choices, (std::vector<std::string>{" no", " yes"}));
  EXPECT_EQ(items[0].gold, 1);
}

TEST(Prompts, PythonStripIsUnicodeAware) {
  EXPECT_EQ(python_strip(" \t\n\v\f\rq\r\n"), "q");
  EXPECT_EQ(python_strip("\xC2\xA0" "q\xE3\x80\x80"), "q") << "NBSP and ideographic space are str.isspace";
  EXPECT_EQ(python_strip("\xE2\x80\x8Bq"), "\xE2\x80\x8Bq") << "zero-width space is not";
  EXPECT_EQ(python_rstrip("  a b \n"), "  a b");
  EXPECT_EQ(python_strip("   "), "");
}

TEST(EncodePair, TrailingSpaceMovesToTheContinuation) {
  LP_REQUIRE_DATA(tok_path, "stories260K/tok512.model");
  Tokenizer tok = Tokenizer::load(tok_path);
  EncodedPair a = encode_pair(tok, "Answer:", " A", false);
  EXPECT_EQ(a.context, tok.encode("Answer:", false));
  std::vector<int32_t> whole = tok.encode("Answer: A", false);
  EXPECT_EQ(a.continuation, std::vector<int32_t>(whole.begin() + std::ptrdiff_t(a.context.size()), whole.end()));
  EXPECT_EQ(a.continuation, (std::vector<int32_t>{410, 447})) << "tok512 spells ' A' as '▁' 'A' (Python sentencepiece)";
  EncodedPair b = encode_pair(tok, "Answer: ", "A", false);  // the space belongs to the continuation
  EXPECT_EQ(b.context, a.context);
  EXPECT_EQ(b.continuation, a.continuation);
  EncodedPair c = encode_pair(tok, "Answer: \n", "A", false);  // any trailing whitespace (str.rstrip)
  EXPECT_EQ(c.context, a.context);
  EXPECT_EQ(c.continuation.size() + c.context.size(), tok.encode("Answer: \nA", false).size());
  EncodedPair bos = encode_pair(tok, "Answer:", " A", true);
  EXPECT_EQ(bos.context.front(), tok.bos_id());
  EXPECT_EQ(bos.context.size(), a.context.size() + 1);
  EXPECT_EQ(bos.continuation, a.continuation);
  EncodedPair empty = encode_pair(tok, "", " yes", false);  // the harness's prefix token
  EXPECT_EQ(empty.context, (std::vector<int32_t>{tok.bos_id()}));
  EXPECT_EQ(empty.continuation, tok.encode(" yes", false));
}

// --- Rows, truncation, batching ----------------------------------------------------------------------------

std::vector<int32_t> iota_ids(int32_t from, int32_t to) {
  std::vector<int32_t> v;
  for (int32_t i = from; i <= to; ++i) v.push_back(i);
  return v;
}

TEST(ScorePlan, HarnessTruncationRule) {
  EvalRequest r{iota_ids(1, 10), {{20}, {21, 22}, {23}}};
  // max_length 8: input = (ctx + cont)[-(8+1):][:-1].
  ScorePlan p = plan_rows({r}, 8);
  ASSERT_EQ(p.rows.size(), 2u);
  EXPECT_TRUE(p.truncated[0]);
  const ScoreRow& multi = p.rows[0];
  EXPECT_EQ(multi.tokens, (std::vector<int32_t>{4, 5, 6, 7, 8, 9, 10, 21}));
  ASSERT_EQ(multi.reads.size(), 1u);
  EXPECT_EQ(multi.reads[0].choice, 1);
  EXPECT_EQ(multi.reads[0].start, 6) << "positions 6, 7 predict 21, 22";
  const ScoreRow& shared = p.rows[1];
  EXPECT_EQ(shared.tokens, iota_ids(3, 10)) << "single-token choices: the last 8 context tokens";
  ASSERT_EQ(shared.reads.size(), 2u);
  EXPECT_EQ(shared.reads[0].choice, 0);
  EXPECT_EQ(shared.reads[1].choice, 2);
  EXPECT_EQ(shared.reads[1].start, 7);
  EXPECT_EQ(shared.reads[1].targets, (std::vector<int32_t>{23}));

  ScorePlan per_choice = plan_rows({r}, 8, /*share_single_token=*/false);
  ASSERT_EQ(per_choice.rows.size(), 3u);
  EXPECT_EQ(per_choice.rows[0].tokens, iota_ids(3, 10)) << "(ctx + [20])[-9:][:-1]";

  ScorePlan fits = plan_rows({r}, 11);  // 12 tokens fit 11 positions + the one predicted
  EXPECT_FALSE(fits.truncated[0]);
  EXPECT_EQ(fits.rows[0].tokens, (std::vector<int32_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 21}));
  EXPECT_EQ(fits.rows[0].reads[0].start, 9);
  EXPECT_TRUE(plan_rows({r}, 10).truncated[0]);
  EXPECT_CONTAINS(input_error([&] { plan_rows({EvalRequest{{1}, {iota_ids(1, 5)}}}, 4); }),
                  "continuation of 5 tokens, more than the model's 4 positions");
}

TEST(ScorePlan, BatchesAreRightPaddedLongestFirst) {
  ScorePlan p = plan_rows({EvalRequest{{1, 2}, {{3}}}, EvalRequest{{1, 2, 3, 4}, {{5}}}, EvalRequest{{7}, {{8}}}}, 16);
  auto batches = batch_rows(p, 2);
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[0], (std::vector<int64_t>{1, 0}));
  at::Tensor t = batch_tokens(p, batches[0], 0);
  EXPECT_TRUE(at::equal(t, at::tensor({1, 2, 3, 4, 1, 2, 0, 0}, at::kLong).view({2, 4})));
}

// A random model with spread-out logits (std 0.5) and requests of mixed lengths, some truncated.
struct RandomSetup {
  TempDir dir;
  std::unique_ptr<LlamaModel> model;
  std::vector<EvalRequest> requests;
  RandomSetup() {
    LlamaConfig c = testing::llama_shape(32, 48, 3, 4, 2, 64, 24);
    MakeModelOptions o;
    o.seed = 7;
    o.init_std = 0.5;
    make_random_model(c, dir.path(), o);
    model = std::make_unique<LlamaModel>(LlamaModel::load(dir.path()));
    uint32_t state = 12345;
    auto rnd = [&](int n) { state = state * 1664525u + 1013904223u; return int32_t((state >> 8) % uint32_t(n)); };
    for (int i = 0; i < 11; ++i) {
      EvalRequest r;
      int n = 1 + rnd(30);  // up to 30 > 24 positions: some truncated
      for (int k = 0; k < n; ++k) r.context.push_back(3 + rnd(60));
      int choices = 2 + rnd(3);
      for (int ch = 0; ch < choices; ++ch) {
        std::vector<int32_t> cont;
        int len = (i % 3 == 0) ? 1 + rnd(3) : 1;  // every third item mixes multi-token choices in
        for (int k = 0; k < len; ++k) cont.push_back(3 + rnd(60));
        r.continuations.push_back(cont);
      }
      requests.push_back(std::move(r));
    }
  }
  Loglikelihoods score(int64_t batch, bool share, const std::vector<int64_t>& layers = {}, ScorePlan* plan = nullptr) {
    ForwardOptions fo;
    fo.layers = layers;
    BatchForward f = [&](const at::Tensor& t) { return model->forward(t, fo).logits; };
    ScoreOptions so;
    so.batch_size = batch;
    so.share_single_token = share;
    so.progress_label = "";
    return score_requests(requests, model->config().max_position_embeddings, f, so, plan);
  }
};

int argmax(const std::vector<double>& v) { return int(std::max_element(v.begin(), v.end()) - v.begin()); }

void expect_same(const Loglikelihoods& a, const Loglikelihoods& b, double tol, const std::string& what) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].size(), b[i].size());
    EXPECT_EQ(argmax(a[i]), argmax(b[i])) << what << " item " << i;
    for (size_t c = 0; c < a[i].size(); ++c) EXPECT_NEAR(a[i][c], b[i][c], tol) << what << " item " << i << " choice " << c;
  }
}

TEST(Scoring, BatchSizeChangesNoAnswer) {
  RandomSetup s;
  ScorePlan plan;
  Loglikelihoods one = s.score(1, true, {}, &plan);
  Loglikelihoods seven = s.score(7, true);
  expect_same(one, seven, 1e-5, "batch 1 vs 7");
  int truncated = 0;
  for (char t : plan.truncated) truncated += t;
  EXPECT_GT(truncated, 0) << "the setup should truncate some items";
  EXPECT_LT(truncated, int(plan.truncated.size()));
  expect_same(s.score(1, true, {0, 2}), s.score(5, true, {0, 2}), 1e-5, "pruned, batch 1 vs 5");
}

TEST(Scoring, SingleTokenRowEqualsOneRowPerChoice) {
  RandomSetup s;
  ScorePlan shared_plan, per_choice_plan;
  Loglikelihoods shared = s.score(4, true, {}, &shared_plan);
  Loglikelihoods per_choice = s.score(4, false, {}, &per_choice_plan);
  expect_same(shared, per_choice, 1e-5, "shared vs per-choice rows");
  size_t want_rows = 0, choices = 0;  // one row per multi-token choice + one per item with single-token ones
  for (const EvalRequest& r : s.requests) {
    bool single = false;
    for (const auto& cont : r.continuations) {
      ++choices;
      if (cont.size() == 1) single = true;
      else ++want_rows;
    }
    want_rows += single;
  }
  EXPECT_EQ(shared_plan.rows.size(), want_rows);
  EXPECT_EQ(per_choice_plan.rows.size(), choices);
  EXPECT_LT(want_rows, choices);
  EXPECT_EQ(shared_plan.truncated, per_choice_plan.truncated);
}

// The scorer asks the forward for logits at the positions its reads need only (issue 15): each distinct
// read position once (a shared single-token row's choices are all read from its last position), as flat
// indices into the padded batch, and the answers are those read from the full logits.
TEST(Scoring, AsksForTheReadPositionsOnly) {
  RandomSetup s;
  ScoreOptions so;
  so.batch_size = 4;
  so.progress_label = "";
  int64_t asked = 0, tokens = 0;
  PositionsForward at_reads = [&](const at::Tensor& t, const at::Tensor& positions) {
    asked += positions.numel();
    tokens += t.numel();
    ForwardOptions fo;
    fo.logit_positions = positions;
    return s.model->forward(t, fo).logits;
  };
  ScorePlan plan;
  Loglikelihoods got = score_requests(s.requests, s.model->config().max_position_embeddings, at_reads, so, &plan);
  expect_same(got, s.score(4, true), 1e-5, "logits at the read positions vs everywhere");
  int64_t distinct = 0;
  for (const ScoreRow& row : plan.rows) {
    std::set<int64_t> p;
    for (const ScoreRead& rd : row.reads)
      for (size_t j = 0; j < rd.targets.size(); ++j) p.insert(rd.start + int64_t(j));
    distinct += int64_t(p.size());
  }
  EXPECT_EQ(asked, distinct);
  EXPECT_LT(asked * 3, tokens) << "most positions need no logits";

  // read_loglikelihoods takes [B, T, V] or the [N, V] rows at read_positions(), with the same numbers.
  const std::vector<int64_t> rows = batch_rows(plan, 4).front();
  at::Tensor logits = s.model->forward(batch_tokens(plan, rows)).logits;
  at::Tensor positions = read_positions(plan, rows);
  at::Tensor picked = logits.reshape({-1, logits.size(2)}).index_select(0, positions);
  Loglikelihoods a(s.requests.size()), b;
  for (size_t r = 0; r < s.requests.size(); ++r) a[r].assign(s.requests[r].continuations.size(), 0.0);
  b = a;
  read_loglikelihoods(logits, plan, rows, a);
  read_loglikelihoods(picked, plan, rows, b);
  EXPECT_EQ(a, b);
  EXPECT_THROW(read_loglikelihoods(picked.narrow(0, 0, picked.size(0) - 1), plan, rows, b), std::exception);
}

TEST(Scoring, LoglikelihoodIsTheSumOfLogSoftmax) {
  // One request scored by hand from a single forward of context + continuation.
  RandomSetup s;
  EvalRequest r{{5, 9, 13, 2}, {{7, 8, 9}, {11}}};
  ForwardOptions fo;
  BatchForward f = [&](const at::Tensor& t) { return s.model->forward(t, fo).logits; };
  ScoreOptions so;
  so.progress_label = "";
  Loglikelihoods ll = score_requests({r}, 24, f, so);
  at::Tensor logp = at::log_softmax(s.model->forward(at::tensor({5, 9, 13, 2, 7, 8}, at::kLong).view({1, 6})).logits[0].to(at::kDouble), -1);
  double want = logp[3][7].item<double>() + logp[4][8].item<double>() + logp[5][9].item<double>();
  // The scorer's forward runs another batch shape than this one (MKL picks its kernels by shape), so the
  // float32 logits agree to rounding, not bit for bit: 1e-5 nats on a sum of -27 (a wrong token is ~1 nat).
  EXPECT_NEAR(ll[0][0], want, 1e-5);
  EXPECT_NEAR(ll[0][1], logp[3][11].item<double>(), 1e-5);
}

TEST(Scoring, SummaryTakesTheFirstMaxAndMicroAverages) {
  std::vector<EvalItem> items(3);
  items[0].subject = "a"; items[0].gold = 1;
  items[1].subject = "a"; items[1].gold = 0;
  items[2].subject = "b"; items[2].gold = 0;
  ScorePlan plan;
  plan.truncated = {0, 1, 0};
  plan.max_length = 8;
  EvalReport r = summarize(items, {{-1, -2, -3}, {-0.5, -0.5}, {-3, -1}}, plan);
  EXPECT_EQ(r.items[0].pred, 0);
  EXPECT_EQ(r.items[1].pred, 0) << "ties go to the first choice";
  EXPECT_TRUE(r.items[1].correct);
  EXPECT_EQ(r.subjects["a"].correct, 1);
  EXPECT_EQ(r.subjects["b"].correct, 0);
  EXPECT_DOUBLE_EQ(r.overall.acc(), 1.0 / 3.0) << "micro-average over questions";
  EXPECT_EQ(r.truncated, 1);
}

// --- stories260K against the plain-PyTorch reference -------------------------------------------------------

// stories260K (shared fixture) plus the MMLU and BoolQ files.
class EvalGolden : public testing::Stories260K {
 protected:
  void SetUp() override {
    Stories260K::SetUp();
    if (IsSkipped()) return;
    if (testing::data_file("mmlu/hendrycks_format").empty() || testing::data_file("boolq/val.jsonl").empty())
      GTEST_SKIP() << "mmlu/hendrycks_format or boolq/val.jsonl not found under " << testing::data_dir()
                   << " (set LAYERPRUNE_DATA to the shared data directory)";
  }
};

// Predictions must match item by item and log-likelihoods within 1e-4: both sides compute float32 logits
// over up to 512 positions with different summation orders (batched GEMMs and blocked attention here, one
// sequence at a time in PyTorch), which moves a log-softmax by a few 1e-6 (measured max 6e-6); 1e-4 leaves
// margin and is still far below the gaps that decide a prediction.
TEST_F(EvalGolden, Stories260KMatchesPyTorchReference) {
  auto golden = nlohmann::json::parse(read_file(testing::source_file("tests/golden/stories260k_eval.json")));
  LlamaModel model = LlamaModel::load(model_dir());
  Tokenizer tok = Tokenizer::load(model_dir() + "/tokenizer.model");
  ASSERT_EQ(golden.at("max_length"), model.config().max_position_embeddings);
  const std::string data = testing::data_dir();
  for (const auto& [key, set] : golden.at("sets").items()) {
    for (const auto& [file, sha] : set.at("data_sha256").items())
      ASSERT_EQ(sha256_file(data + "/" + file), sha.get<std::string>()) << file << " differs from the data the golden file was made from";
    std::vector<EvalItem> items;
    if (set.at("task") == "mmlu") {
      MmluReadOptions o;
      o.subjects = golden.at("mmlu_subjects").get<std::vector<std::string>>();
      if (set.at("shots") == 0) o.subjects.resize(1);
      o.shots = set.at("shots");
      o.limit = golden.at("mmlu_questions_per_subject");
      items = mmlu_items(read_mmlu(data + "/mmlu/hendrycks_format", o), o.shots);
    } else {
      items = boolq_items(read_boolq(data + "/boolq/val.jsonl", golden.at("boolq_questions")));
    }
    EvalOptions eo;
    eo.batch_size = 5;
    eo.progress = false;
    if (!set.at("layers").is_null()) eo.layers = set.at("layers").get<std::vector<int64_t>>();
    EvalReport rep = evaluate(model, tok, items, eo);
    const auto& want = set.at("items");
    ASSERT_EQ(want.size(), items.size()) << key;
    for (size_t i = 0; i < items.size(); ++i) {
      const auto& w = want[i];
      const ItemScore& got = rep.items[i];
      SCOPED_TRACE(key + " item " + std::to_string(i) + " " + items[i].subject);
      EXPECT_EQ(w.at("subject").get<std::string>(), items[i].subject);
      EXPECT_EQ(got.prompt_sha256, w.at("prompt_sha256").get<std::string>());
      EXPECT_EQ(got.context_tokens, w.at("context_tokens").get<int64_t>());
      EXPECT_EQ(got.truncated, w.at("truncated").get<bool>());
      EXPECT_EQ(items[i].gold, w.at("gold").get<int>());
      EXPECT_EQ(got.pred, w.at("pred").get<int>());
      auto ll = w.at("loglikelihoods").get<std::vector<double>>();
      ASSERT_EQ(got.loglik.size(), ll.size());
      for (size_t c = 0; c < ll.size(); ++c) EXPECT_NEAR(got.loglik[c], ll[c], 1e-4) << "choice " << c;
    }
    EXPECT_DOUBLE_EQ(rep.overall.acc(), set.at("acc").get<double>()) << key;
    EXPECT_EQ(rep.truncated, set.at("truncated").get<int64_t>()) << key;
  }
}

}  // namespace
}  // namespace layerprune
