// MMLU and BoolQ as lm-evaluation-harness v0.4 poses them to a causal LM, so numbers compare with the
// paper's (Gromov et al. 2024 used the harness). A task is data: a prompt per question, the continuations
// it is scored on, the gold index.
//
//   MMLU (default 5-shot; few-shot examples = the first k dev rows in file order):
//     "The following are multiple choice questions (with answers) about {subject, _ -> space}.\n\n"
//     then per shot "{question.strip()}\nA. {a}\nB. {b}\nC. {c}\nD. {d}\nAnswer: {letter}" + "\n\n",
//     then the question the same way ending "Answer:"; continuations " A", " B", " C", " D".
//   BoolQ (0-shot): "{passage}\nQuestion: {question}?\nAnswer:"; continuations " no", " yes" (gold yes = true).
//
// Tokens as the harness's _encode_pair: trailing whitespace of the context moves onto the continuation;
// whole = encode(context + continuation), ctx = encode(context), continuation = whole[len(ctx):]. No BOS
// unless add_bos (the harness's default for causal HF models); an empty context becomes [BOS].
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "evaluation/eval_data.h"
#include "formats/tokenizer.h"

namespace layerprune {

struct EvalItem {
  std::string task;                  // "mmlu" | "boolq"
  std::string subject;               // MMLU subject ("" for BoolQ)
  int64_t index = 0;                 // position in its subject's questions (MMLU) or in the file (BoolQ)
  std::string context;               // the whole prompt
  // The first shared_prefix_bytes of context are the same for every item of its group (MMLU: the
  // description + the k shots of the subject), so their keys/values can be computed once
  // (evaluation/prefix_eval.h). 0: nothing shared (BoolQ).
  int64_t shared_prefix_bytes = 0;
  std::vector<std::string> choices;  // continuations, with the leading space
  int gold = 0;
};

// Python's str.strip() / str.rstrip() on UTF-8: Unicode whitespace (str.isspace), not just ASCII.
std::string python_strip(const std::string& s);
std::string python_rstrip(const std::string& s);

// "{question.strip()}\nA. ...\nD. {d}\nAnswer:" (+ " {letter}" when with_answer).
std::string mmlu_question_text(const MmluQuestion& q, bool with_answer);
// Description + `shots` dev examples + the question.
std::string mmlu_prompt(const std::string& subject, const std::vector<MmluQuestion>& dev, int64_t shots,
                        const MmluQuestion& q);
std::vector<EvalItem> mmlu_items(const std::vector<MmluSubject>& subjects, int64_t shots);
std::vector<EvalItem> boolq_items(const std::vector<BoolqQuestion>& questions);

// Token ids of one (context, continuation) pair, as the harness builds them.
struct EncodedPair {
  std::vector<int32_t> context, continuation;
};
EncodedPair encode_pair(const Tokenizer& tok, const std::string& context, const std::string& continuation,
                        bool add_bos);

// (a) of scoring (evaluation/evaluate.h): one request per item, token ids per (item, choice). The context ids
// are shared by the choices (they depend only on the context string).
struct EvalRequest {
  std::vector<int32_t> context;
  std::vector<std::vector<int32_t>> continuations;
};
EvalRequest build_request(const Tokenizer& tok, const EvalItem& item, bool add_bos);

}  // namespace layerprune
