#include "method/sweep.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <map>

#include "common/error.h"

namespace layerprune {

int64_t sweep_cut(const std::vector<int64_t>& kept) {
  int64_t c = 0;
  while (c < int64_t(kept.size()) && kept[size_t(c)] == c) ++c;
  return std::min<int64_t>(c, int64_t(kept.size()) - 1);
}

std::vector<EvalReport> evaluate_sweep(const LlamaModel& model, const Tokenizer& tok, const std::vector<EvalItem>& items,
                                       const std::vector<SweepVariant>& variants, const EvalOptions& options,
                                       SweepStats* stats) {
  if (variants.empty()) throw InputError("sweep: no variants");
  std::vector<int64_t> cuts;  // per variant
  std::vector<std::vector<int64_t>> rest;
  for (const SweepVariant& v : variants) {
    if (v.kept.empty()) throw InputError("sweep: variant " + v.name + " keeps no layers");
    model.kept_layers(v.kept);  // validates: increasing, in range
    const int64_t c = sweep_cut(v.kept);
    cuts.push_back(c);
    rest.emplace_back(v.kept.begin() + c, v.kept.end());
  }
  // Distinct cut points, ascending; the base runs segments [0, c1), [c1, c2), ... up to the largest.
  std::vector<int64_t> points(cuts.begin(), cuts.end());
  std::sort(points.begin(), points.end());
  points.erase(std::unique(points.begin(), points.end()), points.end());

  std::vector<EvalRequest> requests;
  requests.reserve(items.size());
  for (const EvalItem& it : items) requests.push_back(build_request(tok, it, options.add_bos));
  SweepStats local;
  MultiBatchForward forward = [&](const at::Tensor& tokens, const at::Tensor& positions, const EmitLogits& emit) {
    std::map<int64_t, at::Tensor> at_cut;  // hidden state entering layer c
    at::Tensor x;                          // undefined: start from the embedding
    int64_t done = 0;
    for (int64_t c : points) {
      if (c > done) {
        ForwardOptions seg;
        for (int64_t l = done; l < c; ++l) seg.layers.push_back(l);
        seg.input_hidden = x;
        seg.return_hidden = true;
        seg.logits = false;
        x = model.forward(tokens, seg).hidden.back();
        local.layer_evals_shared += c - done;
        done = c;
      }
      at_cut[c] = x;
    }
    for (size_t v = 0; v < variants.size(); ++v) {
      ForwardOptions fo;
      fo.layers = rest[v];
      fo.input_hidden = at_cut[cuts[v]];  // undefined at cut 0: the embedding
      fo.logit_positions = positions;     // the LM head on the read positions only
      emit(v, model.forward(tokens, fo).logits);
      local.layer_evals_shared += int64_t(rest[v].size());
      local.layer_evals_naive += int64_t(variants[v].kept.size());
    }
    ++local.batches;
  };
  ScoreOptions so = score_options(options, items);
  if (!so.progress_label.empty()) so.progress_label = "sweep (" + std::to_string(variants.size()) + " variants)";
  ScorePlan plan;
  std::vector<Loglikelihoods> ll =
      score_requests_multi(requests, model.config().max_position_embeddings, variants.size(), forward, so, &plan);
  std::vector<EvalReport> reports;
  for (size_t v = 0; v < variants.size(); ++v) {
    reports.push_back(summarize(items, ll[v], plan));
    for (size_t i = 0; i < items.size(); ++i) reports.back().items[i].context_tokens = int64_t(requests[i].context.size());
  }
  if (stats) *stats = local;
  return reports;
}

}  // namespace layerprune
