#include "evaluation/evaluate.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <numeric>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/hashing.h"
#include "common/progress.h"
#include "evaluation/prefix_eval.h"

namespace layerprune {

const char* const kEvalRecipe =
    "as lm-evaluation-harness v0.4: MMLU prompts are \"The following are multiple choice questions (with "
    "answers) about {subject}.\\n\\n\" + k dev examples (the first k in file order) \"{question}\\nA. "
    "{a}\\nB. {b}\\nC. {c}\\nD. {d}\\nAnswer: {X}\" each followed by \"\\n\\n\", then the question ending "
    "\"Answer:\", scored on \" A\"..\" D\"; BoolQ prompts are \"{passage}\\nQuestion: {question}?\\nAnswer:\", "
    "scored on \" no\"/\" yes\". Each continuation's log-likelihood is the sum of its tokens' log-softmax given "
    "the context (tokenized as the harness's _encode_pair, no BOS unless --add-bos; inputs longer than the "
    "model's positions are left-truncated); the prediction is the most likely choice (the first on ties); "
    "accuracy per subject and micro-averaged over all questions";

ScorePlan plan_rows(const std::vector<EvalRequest>& requests, int64_t max_length, bool share_single_token) {
  if (max_length < 1) throw InputError("eval: the model's max_position_embeddings must be at least 1");
  ScorePlan plan;
  plan.max_length = max_length;
  plan.truncated.assign(requests.size(), 0);
  const size_t L = size_t(max_length);
  for (size_t r = 0; r < requests.size(); ++r) {
    const EvalRequest& req = requests[r];
    const std::vector<int32_t>& ctx = req.context;
    // Single-token choices: (ctx + [t])[-(L+1):][:-1] is ctx[-L:] for every t, so one row serves them all.
    ScoreRow shared;
    for (size_t c = 0; c < req.continuations.size(); ++c) {
      const std::vector<int32_t>& cont = req.continuations[c];
      if (cont.size() > L)
        throw InputError("eval: item " + std::to_string(r) + " choice " + std::to_string(c) + " has a continuation of " +
                         std::to_string(cont.size()) + " tokens, more than the model's " + std::to_string(L) + " positions");
      if (ctx.size() + cont.size() > L + 1) plan.truncated[r] = 1;
      if (share_single_token && cont.size() == 1) {
        if (shared.tokens.empty()) {
          size_t from = ctx.size() > L ? ctx.size() - L : 0;
          shared.tokens.assign(ctx.begin() + std::ptrdiff_t(from), ctx.end());
          if (shared.tokens.empty())
            throw InputError("eval: item " + std::to_string(r) + " has an empty context (nothing to predict from)");
        }
        shared.reads.push_back({int64_t(r), int64_t(c), int64_t(shared.tokens.size()) - 1, cont});
        continue;
      }
      std::vector<int32_t> all(ctx);
      all.insert(all.end(), cont.begin(), cont.end());
      size_t from = all.size() > L + 1 ? all.size() - (L + 1) : 0;
      ScoreRow row;
      if (all.size() > from + 1) row.tokens.assign(all.begin() + std::ptrdiff_t(from), all.end() - 1);
      if (row.tokens.empty()) {
        if (!cont.empty())
          throw InputError("eval: item " + std::to_string(r) + " choice " + std::to_string(c) +
                           " has an empty context (nothing to predict from)");
        continue;  // an empty continuation has log-likelihood 0 and needs no row
      }
      row.reads.push_back({int64_t(r), int64_t(c), int64_t(row.tokens.size() - cont.size()), cont});
      plan.rows.push_back(std::move(row));
    }
    if (!shared.reads.empty()) plan.rows.push_back(std::move(shared));
  }
  return plan;
}

std::vector<std::vector<int64_t>> batch_rows(const ScorePlan& plan, int64_t batch_size) {
  std::vector<int64_t> order(plan.rows.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return plan.rows[size_t(a)].tokens.size() > plan.rows[size_t(b)].tokens.size();
  });
  const size_t B = size_t(std::max<int64_t>(1, batch_size));
  std::vector<std::vector<int64_t>> batches;
  for (size_t i = 0; i < order.size(); i += B)
    batches.emplace_back(order.begin() + std::ptrdiff_t(i), order.begin() + std::ptrdiff_t(std::min(order.size(), i + B)));
  return batches;
}

at::Tensor batch_tokens(const ScorePlan& plan, const std::vector<int64_t>& rows, int32_t pad) {
  size_t T = 0;
  for (int64_t r : rows) T = std::max(T, plan.rows[size_t(r)].tokens.size());
  at::Tensor t = at::full({int64_t(rows.size()), int64_t(T)}, int64_t(pad), at::kLong);
  auto a = t.accessor<int64_t, 2>();
  for (size_t b = 0; b < rows.size(); ++b) {
    const std::vector<int32_t>& tok = plan.rows[size_t(rows[b])].tokens;
    for (size_t i = 0; i < tok.size(); ++i) a[int64_t(b)][int64_t(i)] = tok[i];
  }
  return t;
}

namespace {

int64_t longest_row(const ScorePlan& plan, const std::vector<int64_t>& rows) {
  size_t T = 0;
  for (int64_t r : rows) T = std::max(T, plan.rows[size_t(r)].tokens.size());
  return int64_t(T);
}

// Each position some read of the batch needs, once, ascending, as flat indices b*T + t.
std::vector<int64_t> read_positions_flat(const ScorePlan& plan, const std::vector<int64_t>& rows, int64_t T) {
  std::vector<int64_t> flat;
  for (size_t b = 0; b < rows.size(); ++b)
    for (const ScoreRead& rd : plan.rows[size_t(rows[b])].reads)
      for (size_t j = 0; j < rd.targets.size(); ++j) flat.push_back(int64_t(b) * T + rd.start + int64_t(j));
  std::sort(flat.begin(), flat.end());
  flat.erase(std::unique(flat.begin(), flat.end()), flat.end());
  return flat;
}

}  // namespace

std::vector<int64_t> row_requests(const ScorePlan& plan, const std::vector<int64_t>& rows) {
  std::vector<int64_t> ids;
  for (int64_t r : rows) ids.push_back(plan.rows[size_t(r)].reads.front().request);
  return ids;
}

std::string describe_items(std::vector<int64_t> items, size_t of) {
  std::sort(items.begin(), items.end());
  items.erase(std::unique(items.begin(), items.end()), items.end());
  std::string out = items.size() == 1 ? "item " : "items ";
  for (size_t i = 0; i < items.size() && i < 8; ++i) out += (i ? ", " : "") + std::to_string(items[i]);
  if (items.size() > 8) out += ", ...";
  return out + " (0-based, of " + std::to_string(of) + ")";
}

at::Tensor read_positions(const ScorePlan& plan, const std::vector<int64_t>& rows) {
  return at::tensor(read_positions_flat(plan, rows, longest_row(plan, rows)), at::kLong);
}

void read_loglikelihoods(const at::Tensor& logits, const ScorePlan& plan, const std::vector<int64_t>& rows,
                         Loglikelihoods& out) {
  const bool full = logits.dim() == 3;
  TORCH_CHECK((full && logits.size(0) == int64_t(rows.size())) || logits.dim() == 2, "read_loglikelihoods: logits ",
              logits.sizes(), " for a batch of ", rows.size(), " rows");
  const int64_t T = full ? logits.size(1) : longest_row(plan, rows), V = logits.size(-1);
  // Only the positions some read needs, each once (a single-token row's choices share one): gather them
  // (or take them as given), then one log-softmax in float64.
  const std::vector<int64_t> flat = read_positions_flat(plan, rows, T);
  TORCH_CHECK(full || logits.size(0) == int64_t(flat.size()), "read_loglikelihoods: logits ", logits.sizes(),
              " for the ", flat.size(), " read positions of a batch of ", rows.size(), " rows");
  if (flat.empty()) return;
  at::Tensor picked = full ? logits.reshape({-1, V}).index_select(0, at::tensor(flat, at::kLong).to(logits.device())) : logits;
  picked = picked.to(at::kCPU);  // from a GPU: only the read rows travel; the same float64 arithmetic below
  at::Tensor logp = at::log_softmax(picked.to(at::kDouble), -1).contiguous();
  const double* p = logp.data_ptr<double>();
  for (size_t b = 0; b < rows.size(); ++b)
    for (const ScoreRead& rd : plan.rows[size_t(rows[b])].reads)
      for (size_t j = 0; j < rd.targets.size(); ++j) {
        const int32_t target = rd.targets[j];
        if (target < 0 || target >= V) throw InputError("eval: token id " + std::to_string(target) + " outside the vocabulary");
        const int64_t k = std::lower_bound(flat.begin(), flat.end(), int64_t(b) * T + rd.start + int64_t(j)) - flat.begin();
        out[size_t(rd.request)][size_t(rd.choice)] += p[k * V + target];
      }
}

std::vector<Loglikelihoods> score_requests_multi(const std::vector<EvalRequest>& requests, int64_t max_length,
                                                 size_t variants, const MultiBatchForward& forward,
                                                 const ScoreOptions& options, ScorePlan* plan_out) {
  ScorePlan plan = plan_rows(requests, max_length, options.share_single_token);
  Loglikelihoods zero(requests.size());
  for (size_t r = 0; r < requests.size(); ++r) zero[r].assign(requests[r].continuations.size(), 0.0);
  std::vector<Loglikelihoods> ll(variants, zero);
  // Progress in items: an item is done when its last row is.
  std::vector<int64_t> rows_left(requests.size(), 0);
  for (const ScoreRow& row : plan.rows) ++rows_left[size_t(row.reads.front().request)];
  int64_t done = 0;
  for (int64_t left : rows_left) done += left == 0;
  std::unique_ptr<Progress> progress;
  if (!options.progress_label.empty()) {
    progress = std::make_unique<Progress>(options.progress_label, int64_t(requests.size()), "items");
    progress->advance(done);
  }
  for (const std::vector<int64_t>& rows : batch_rows(plan, options.batch_size)) {
    try {
      forward(batch_tokens(plan, rows), read_positions(plan, rows), [&](size_t variant, const at::Tensor& logits) {
        if (variant >= variants) throw std::logic_error("score_requests_multi: variant out of range");
        read_loglikelihoods(logits, plan, rows, ll[variant]);
      });
    } catch (const NonFiniteError& e) {
      throw NonFiniteError("eval: " + describe_items(row_requests(plan, rows), requests.size()) + ": " + e.what());
    }
    int64_t finished = 0;
    for (int64_t r : rows) finished += --rows_left[size_t(plan.rows[size_t(r)].reads.front().request)] == 0;
    if (progress) progress->advance(finished);
  }
  if (plan_out) *plan_out = std::move(plan);
  return ll;
}

Loglikelihoods score_requests(const std::vector<EvalRequest>& requests, int64_t max_length,
                              const PositionsForward& forward, const ScoreOptions& options, ScorePlan* plan_out) {
  MultiBatchForward one = [&](const at::Tensor& tokens, const at::Tensor& positions, const EmitLogits& emit) {
    emit(0, forward(tokens, positions));
  };
  return std::move(score_requests_multi(requests, max_length, 1, one, options, plan_out).front());
}

Loglikelihoods score_requests(const std::vector<EvalRequest>& requests, int64_t max_length,
                              const BatchForward& forward, const ScoreOptions& options, ScorePlan* plan_out) {
  PositionsForward everywhere = [&](const at::Tensor& tokens, const at::Tensor&) { return forward(tokens); };
  return score_requests(requests, max_length, everywhere, options, plan_out);
}

EvalReport summarize(const std::vector<EvalItem>& items, const Loglikelihoods& ll, const ScorePlan& plan) {
  EvalReport rep;
  rep.max_length = plan.max_length;
  rep.rows = int64_t(plan.rows.size());
  for (const ScoreRow& row : plan.rows) rep.full_prompt_tokens += int64_t(row.tokens.size());
  rep.tokens_processed = rep.full_prompt_tokens;
  for (size_t i = 0; i < items.size(); ++i) {
    ItemScore s;
    s.loglik = ll[i];
    s.pred = int(std::max_element(s.loglik.begin(), s.loglik.end()) - s.loglik.begin());  // first max
    s.correct = s.pred == items[i].gold;
    s.truncated = plan.truncated[i] != 0;
    s.prompt_sha256 = sha256_hex(items[i].context);
    rep.truncated += s.truncated;
    SubjectScore& sub = rep.subjects[items[i].subject];
    sub.total += 1;
    sub.correct += s.correct;
    rep.overall.total += 1;
    rep.overall.correct += s.correct;
    rep.items.push_back(std::move(s));
  }
  return rep;
}

ScoreOptions score_options(const EvalOptions& options, const std::vector<EvalItem>& items) {
  ScoreOptions so;
  so.batch_size = options.batch_size;
  so.share_single_token = options.share_single_token;
  if (!options.progress) so.progress_label.clear();
  else if (!items.empty()) so.progress_label = items.front().task;
  return so;
}

EvalReport evaluate(const LlamaModel& model, const Tokenizer& tok, const std::vector<EvalItem>& items,
                    const EvalOptions& options) {
  if (options.reuse_prefix && has_shared_prefix(items)) return evaluate_with_prefix_reuse(model, tok, items, options);
  std::vector<EvalRequest> requests;
  requests.reserve(items.size());
  for (const EvalItem& it : items) requests.push_back(build_request(tok, it, options.add_bos));
  ForwardOptions fwd;
  fwd.layers = options.layers;
  model.kept_layers(fwd.layers);  // validate before the first batch
  PositionsForward forward = [&](const at::Tensor& tokens, const at::Tensor& positions) {
    ForwardOptions at_reads = fwd;
    at_reads.logit_positions = positions;
    return model.forward(tokens, at_reads).logits;
  };
  ScoreOptions so = score_options(options, items);
  ScorePlan plan;
  Loglikelihoods ll = score_requests(requests, model.config().max_position_embeddings, forward, so, &plan);
  EvalReport rep = summarize(items, ll, plan);
  for (size_t i = 0; i < items.size(); ++i) rep.items[i].context_tokens = int64_t(requests[i].context.size());
  return rep;
}

std::string eval_records_jsonl(const std::vector<EvalItem>& items, const EvalReport& report) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    const ItemScore& s = report.items[i];
    nlohmann::json j{{"task", items[i].task},         {"subject", items[i].subject},
                     {"index", items[i].index},       {"prompt_sha256", s.prompt_sha256},
                     {"loglikelihoods", s.loglik},    {"pred", s.pred},
                     {"gold", items[i].gold},         {"correct", s.correct},
                     {"truncated", s.truncated},      {"context_tokens", s.context_tokens}};
    out += j.dump() + "\n";
  }
  return out;
}

}  // namespace layerprune
