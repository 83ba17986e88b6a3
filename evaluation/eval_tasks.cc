#include "evaluation/eval_tasks.h"

#include "common/error.h"

namespace layerprune {

namespace {

// Python's str.isspace for one code point.
bool is_python_space(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Decodes the UTF-8 sequence at s[i] (a malformed byte is one non-space "character").
uint32_t decode_at(const std::string& s, size_t i, size_t* len) {
  unsigned char b = static_cast<unsigned char>(s[i]);
  int n = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
  if (n == 0 || i + n > s.size()) {
    *len = 1;
    return 0xFFFD;
  }
  uint32_t c = n == 1 ? b : b & (0x7F >> n);
  for (int k = 1; k < n; ++k) {
    unsigned char t = static_cast<unsigned char>(s[i + k]);
    if ((t >> 6) != 2) {
      *len = 1;
      return 0xFFFD;
    }
    c = (c << 6) | (t & 0x3F);
  }
  *len = size_t(n);
  return c;
}

// Byte offsets [begin, end) of s without leading (if `left`) and trailing whitespace.
std::pair<size_t, size_t> strip_range(const std::string& s, bool left) {
  size_t begin = s.size(), end = 0, i = 0;
  bool seen = false;
  while (i < s.size()) {
    size_t len;
    uint32_t c = decode_at(s, i, &len);
    if (!is_python_space(c)) {
      if (!seen) begin = i;
      seen = true;
      end = i + len;
    }
    i += len;
  }
  if (!seen) return {0, 0};
  return {left ? begin : 0, end};
}

const char* const kLetters[4] = {"A", "B", "C", "D"};

}  // namespace

std::string python_strip(const std::string& s) {
  auto [b, e] = strip_range(s, true);
  return s.substr(b, e - b);
}

std::string python_rstrip(const std::string& s) {
  auto [b, e] = strip_range(s, false);
  return s.substr(0, e);
}

std::string mmlu_question_text(const MmluQuestion& q, bool with_answer) {
  std::string t = python_strip(q.question);
  for (int c = 0; c < 4; ++c) t += std::string("\n") + kLetters[c] + ". " + q.choices[c];
  t += "\nAnswer:";
  if (with_answer) t += std::string(" ") + kLetters[q.answer];
  return t;
}

std::string mmlu_prompt(const std::string& subject, const std::vector<MmluQuestion>& dev, int64_t shots,
                        const MmluQuestion& q) {
  if (shots > int64_t(dev.size()))
    throw InputError("mmlu: subject '" + subject + "' has " + std::to_string(dev.size()) +
                     " dev questions, fewer than the " + std::to_string(shots) + " shots asked for");
  std::string readable = subject;
  for (char& ch : readable)
    if (ch == '_') ch = ' ';
  std::string p = "The following are multiple choice questions (with answers) about " + readable + ".\n\n";
  for (int64_t s = 0; s < shots; ++s) p += mmlu_question_text(dev[size_t(s)], true) + "\n\n";
  return p + mmlu_question_text(q, false);
}

std::vector<EvalItem> mmlu_items(const std::vector<MmluSubject>& subjects, int64_t shots) {
  std::vector<EvalItem> items;
  for (const MmluSubject& s : subjects) {
    for (size_t i = 0; i < s.eval.size(); ++i) {
      EvalItem it;
      it.task = "mmlu";
      it.subject = s.name;
      it.index = int64_t(i);
      it.context = mmlu_prompt(s.name, s.dev, shots, s.eval[i]);
      // Everything before the question: the prompt minus the question's own text.
      it.shared_prefix_bytes = int64_t(it.context.size() - mmlu_question_text(s.eval[i], false).size());
      it.choices = {" A", " B", " C", " D"};
      it.gold = s.eval[i].answer;
      items.push_back(std::move(it));
    }
  }
  return items;
}

std::vector<EvalItem> boolq_items(const std::vector<BoolqQuestion>& questions) {
  std::vector<EvalItem> items;
  for (size_t i = 0; i < questions.size(); ++i) {
    EvalItem it;
    it.task = "boolq";
    it.index = int64_t(i);
    it.context = questions[i].passage + "\nQuestion: " + questions[i].question + "?\nAnswer:";
    it.choices = {" no", " yes"};
    it.gold = questions[i].answer ? 1 : 0;
    items.push_back(std::move(it));
  }
  return items;
}

EncodedPair encode_pair(const Tokenizer& tok, const std::string& context, const std::string& continuation,
                        bool add_bos) {
  EncodedPair e;
  if (context.empty()) {  // the harness scores against its prefix token
    if (tok.bos_id() < 0) throw InputError(tok.path() + ": an empty context needs a BOS token, and the tokenizer has none");
    e.context = {tok.bos_id()};
    e.continuation = tok.encode(continuation, false);
    return e;
  }
  std::string ctx = python_rstrip(context);
  std::string cont = context.substr(ctx.size()) + continuation;
  std::vector<int32_t> whole = tok.encode(ctx + cont, add_bos);
  e.context = tok.encode(ctx, add_bos);
  size_t n = std::min(e.context.size(), whole.size());
  e.continuation.assign(whole.begin() + std::ptrdiff_t(n), whole.end());
  return e;
}

EvalRequest build_request(const Tokenizer& tok, const EvalItem& item, bool add_bos) {
  EvalRequest r;
  for (size_t c = 0; c < item.choices.size(); ++c) {
    EncodedPair e = encode_pair(tok, item.context, item.choices[c], add_bos);
    if (c == 0) r.context = std::move(e.context);
    r.continuations.push_back(std::move(e.continuation));
  }
  return r;
}

}  // namespace layerprune
