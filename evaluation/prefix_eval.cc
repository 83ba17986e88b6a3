#include "evaluation/prefix_eval.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <map>
#include <memory>
#include <stdexcept>

#include "common/error.h"
#include "common/progress.h"

namespace layerprune {

bool has_shared_prefix(const std::vector<EvalItem>& items) {
  return std::any_of(items.begin(), items.end(), [](const EvalItem& it) { return it.shared_prefix_bytes > 0; });
}

PrefixSplit split_shared_prefix(const Tokenizer& tok, const std::vector<EvalItem>& items,
                                const std::vector<EvalRequest>& requests, bool add_bos, int64_t max_length) {
  if (requests.size() != items.size()) throw std::logic_error("split_shared_prefix: one request per item expected");
  std::vector<std::pair<int64_t, std::string>> fallback;  // (item, why), sorted by item at the end
  auto fall_back = [&](size_t i, std::string why) { fallback.emplace_back(int64_t(i), std::move(why)); };
  // Pass 1: items by their prefix text, each checked on its own (declared prefix, truncation).
  std::map<std::string, size_t> group_of;  // prefix text -> group
  std::vector<std::string> texts;
  std::vector<std::vector<size_t>> candidates;
  const size_t L = size_t(std::max<int64_t>(0, max_length));
  for (size_t i = 0; i < items.size(); ++i) {
    const EvalItem& it = items[i];
    if (it.shared_prefix_bytes <= 0) {
      fall_back(i, "no shared prefix");
      continue;
    }
    if (size_t(it.shared_prefix_bytes) > it.context.size())
      throw InputError("eval: item " + std::to_string(i) + " (" + it.task + " " + it.subject + " #" +
                       std::to_string(it.index) + ") declares a shared prefix of " +
                       std::to_string(it.shared_prefix_bytes) + " bytes, longer than its prompt of " +
                       std::to_string(it.context.size()) + " bytes");
    bool truncated = false;  // plan_rows's rule: the row would be left-truncated, losing the prefix's start
    for (const std::vector<int32_t>& cont : requests[i].continuations)
      truncated |= requests[i].context.size() + cont.size() > L + 1;
    if (truncated) {
      fall_back(i, "left-truncated to " + std::to_string(L) + " tokens");
      continue;
    }
    std::string text = it.context.substr(0, size_t(it.shared_prefix_bytes));
    auto [pos, fresh] = group_of.try_emplace(text, texts.size());
    if (fresh) {
      texts.push_back(std::move(text));
      candidates.emplace_back();
    }
    candidates[pos->second].push_back(i);
  }
  // Pass 2: a group's cached tokens are the ones its prompts really start with. The prefix text encoded alone
  // can end differently from the same text inside a prompt: SentencePiece may merge characters across the
  // boundary, and a byte-level BPE's pre-tokenizer splits the prefix's closing "\n\n" by what follows
  // (GPT-2's \s+(?!\S) gives "\n\n" at the end of the text but "\n", "\n" before "Find"). So the group keeps
  // the tokens that the prefix and every one of its prompts share, as long as that loses at most the
  // prefix's last kBoundaryTokens tokens; a prompt that shares fewer is scored on its full row.
  constexpr size_t kBoundaryTokens = 4;
  PrefixSplit out;
  for (size_t g = 0; g < texts.size(); ++g) {
    std::vector<int32_t> prefix = tok.encode(texts[g], add_bos);
    if (prefix.empty()) {
      for (size_t i : candidates[g]) fall_back(i, "the shared prefix has no tokens");
      continue;
    }
    size_t shared = prefix.size();
    std::vector<size_t> members;
    for (size_t i : candidates[g]) {
      const std::vector<int32_t>& ctx = requests[i].context;
      const size_t n = std::min(prefix.size(), ctx.size());
      const size_t common = size_t(std::mismatch(prefix.begin(), prefix.begin() + std::ptrdiff_t(n), ctx.begin()).first - prefix.begin());
      if (common + kBoundaryTokens < prefix.size() || common == 0) {
        fall_back(i, "its context tokens share only " + std::to_string(common) + " of the prefix's " +
                         std::to_string(prefix.size()) + " tokens (a merge across the boundary)");
        continue;
      }
      shared = std::min(shared, common);
      members.push_back(i);
    }
    prefix.resize(shared);
    PrefixGroup group{prefix, {}, {}};
    for (size_t i : members) {
      const std::vector<int32_t>& ctx = requests[i].context;
      if (ctx.size() <= shared) {
        fall_back(i, "no context tokens after the prefix's " + std::to_string(shared));
        continue;
      }
      group.items.push_back(int64_t(i));
      EvalRequest suffix;
      suffix.context.assign(ctx.begin() + std::ptrdiff_t(shared), ctx.end());
      suffix.continuations = requests[i].continuations;
      group.suffixes.push_back(std::move(suffix));
    }
    if (!group.items.empty()) out.groups.push_back(std::move(group));
  }
  std::sort(fallback.begin(), fallback.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [i, why] : fallback) {
    out.fallback.push_back(i);
    out.fallback_reason.push_back(std::move(why));
  }
  return out;
}

namespace {

int64_t row_tokens(const ScorePlan& plan) {
  int64_t n = 0;
  for (const ScoreRow& row : plan.rows) n += int64_t(row.tokens.size());
  return n;
}

// The prefix's cache seen by a batch of B rows: broadcast views, no copy (the forward concatenates the
// batch's own keys/values onto them into new tensors, so `prefix` itself stays as it is for the next batch).
KVCache broadcast_cache(const KVCache& prefix, int64_t B) {
  KVCache c;
  c.length = prefix.length;
  for (size_t l = 0; l < prefix.k.size(); ++l) {
    c.k.push_back(prefix.k[l].expand({B, -1, -1, -1}));
    c.v.push_back(prefix.v[l].expand({B, -1, -1, -1}));
  }
  return c;
}

}  // namespace

Loglikelihoods score_with_prefix_reuse(const LlamaModel& model, const std::vector<int64_t>& layers,
                                       const std::vector<EvalRequest>& requests, const PrefixSplit& split,
                                       const ScoreOptions& options, PrefixScoreStats* stats) {
  const int64_t L = model.config().max_position_embeddings;
  ForwardOptions fwd;
  fwd.layers = layers;
  model.kept_layers(fwd.layers);  // validate before the first pass
  ForwardOptions prefix_fwd = fwd;
  prefix_fwd.logits = false;  // nothing is read from the prefix's own positions
  Loglikelihoods ll(requests.size());
  for (size_t r = 0; r < requests.size(); ++r) ll[r].assign(requests[r].continuations.size(), 0.0);
  PrefixScoreStats st;
  std::unique_ptr<Progress> progress;
  if (!options.progress_label.empty())
    progress = std::make_unique<Progress>(options.progress_label, int64_t(requests.size()), "items");

  for (const PrefixGroup& g : split.groups) {
    if (g.items.empty()) continue;
    const int64_t P = int64_t(g.prefix.size());
    KVCache prefix;
    model.forward(at::tensor(std::vector<int64_t>(g.prefix.begin(), g.prefix.end()), at::kLong).view({1, P}),
                  prefix_fwd, &prefix);
    st.prefixes += 1;
    st.prefix_tokens += P;
    st.rows += 1;
    // The suffixes' rows are the full rows minus their first P tokens: nothing was truncated (split checked),
    // so they fit in the L - P positions left, and read positions are relative to the suffix, as the logits.
    ScorePlan plan = plan_rows(g.suffixes, L - P, options.share_single_token);
    Loglikelihoods local(g.suffixes.size());
    for (size_t j = 0; j < g.suffixes.size(); ++j) local[j].assign(g.suffixes[j].continuations.size(), 0.0);
    for (const std::vector<int64_t>& rows : batch_rows(plan, options.batch_size)) {
      at::Tensor tokens = batch_tokens(plan, rows);
      KVCache cache = broadcast_cache(prefix, tokens.size(0));
      ForwardOptions at_reads = fwd;
      at_reads.logit_positions = read_positions(plan, rows);  // indices into the suffix rows, as the reads
      try {
        read_loglikelihoods(model.forward(tokens, at_reads, &cache).logits, plan, rows, local);
      } catch (const NonFiniteError& e) {  // the rows' items in the request list, not the group's
        std::vector<int64_t> items;
        for (int64_t j : row_requests(plan, rows)) items.push_back(g.items[size_t(j)]);
        throw NonFiniteError("eval: " + describe_items(items, requests.size()) + " after their shared few-shot prefix: " +
                             e.what());
      }
    }
    st.suffix_tokens += row_tokens(plan);
    st.rows += int64_t(plan.rows.size());
    for (size_t j = 0; j < g.items.size(); ++j) ll[size_t(g.items[j])] = local[j];
    st.cached_items += int64_t(g.items.size());
    if (progress) progress->advance(int64_t(g.items.size()));
  }

  if (!split.fallback.empty()) {
    std::vector<EvalRequest> rest;
    for (int64_t i : split.fallback) rest.push_back(requests[size_t(i)]);
    PositionsForward forward = [&](const at::Tensor& tokens, const at::Tensor& positions) {
      ForwardOptions at_reads = fwd;
      at_reads.logit_positions = positions;
      return model.forward(tokens, at_reads).logits;
    };
    ScoreOptions so = options;
    so.progress_label.clear();
    ScorePlan plan;
    Loglikelihoods got = score_requests(rest, L, forward, so, &plan);
    for (size_t j = 0; j < rest.size(); ++j) ll[size_t(split.fallback[j])] = got[j];
    st.fallback_items = int64_t(rest.size());
    st.fallback_tokens = row_tokens(plan);
    st.rows += int64_t(plan.rows.size());
    if (progress) progress->advance(int64_t(rest.size()));
  }
  if (stats) *stats = st;
  return ll;
}

EvalReport evaluate_with_prefix_reuse(const LlamaModel& model, const Tokenizer& tok, const std::vector<EvalItem>& items,
                                      const EvalOptions& options) {
  std::vector<EvalRequest> requests;
  requests.reserve(items.size());
  for (const EvalItem& it : items) requests.push_back(build_request(tok, it, options.add_bos));
  const int64_t L = model.config().max_position_embeddings;
  model.kept_layers(options.layers);
  // The plain plan: truncation flags and what full prompts would run; also fails, before any forward, on
  // what the plain path refuses (a continuation longer than the model's positions, an empty context).
  ScorePlan full = plan_rows(requests, L, options.share_single_token);
  PrefixSplit split = split_shared_prefix(tok, items, requests, options.add_bos, L);
  ScoreOptions so = score_options(options, items);
  PrefixScoreStats st;
  Loglikelihoods ll = score_with_prefix_reuse(model, options.layers, requests, split, so, &st);
  EvalReport rep = summarize(items, ll, full);
  for (size_t i = 0; i < items.size(); ++i) rep.items[i].context_tokens = int64_t(requests[i].context.size());
  rep.rows = st.rows;
  rep.tokens_processed = st.tokens();
  rep.prefix_reuse = true;
  rep.prefixes = st.prefixes;
  rep.prefix_cached_items = st.cached_items;
  return rep;
}

}  // namespace layerprune
