#include "experiment/pruning.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>

#include "common/error.h"

namespace layerprune {

namespace {
std::string n_str(int64_t v) { return std::to_string(v); }
}  // namespace

DistanceTable::DistanceTable(int64_t layers, std::vector<double> pair, std::vector<double> block_influence)
    : layers_(layers), pair_(std::move(pair)), block_influence_(std::move(block_influence)) {
  if (layers < 1 || int64_t(pair_.size()) != (layers + 1) * (layers + 1))
    throw std::invalid_argument("DistanceTable: need (L+1)^2 entries");
  if (!block_influence_.empty() && int64_t(block_influence_.size()) != layers)
    throw std::invalid_argument("DistanceTable: need L block influence values (or none)");
}

double DistanceTable::at(int64_t l, int64_t n) const {
  if (n < 1 || n > layers_ || l < 0 || l + n > layers_)
    throw std::out_of_range("DistanceTable::at(" + n_str(l) + ", " + n_str(n) + ") with L = " + n_str(layers_));
  return pair_[size_t(l * (layers_ + 1) + l + n)];
}

int64_t DistanceTable::best_start(int64_t n) const {
  int64_t best = 0;
  for (int64_t l = 1; l + n <= layers_; ++l)
    if (at(l, n) < at(best, n)) best = l;
  return best;
}

Strategy parse_strategy(const std::string& name) {
  if (name == "similarity") return Strategy::kSimilarity;
  if (name == "simple") return Strategy::kSimple;
  if (name == "block_influence") return Strategy::kBlockInfluence;
  throw InputError("unknown pruning strategy \"" + name + "\": expected similarity, simple or block_influence");
}

const char* strategy_name(Strategy s) {
  switch (s) {
    case Strategy::kSimilarity: return "similarity";
    case Strategy::kSimple: return "simple";
    case Strategy::kBlockInfluence: return "block_influence";
  }
  return "?";
}

bool strategy_needs_distances(Strategy s) { return s == Strategy::kSimilarity || s == Strategy::kBlockInfluence; }

int64_t layers_to_prune(double fraction, int64_t layers) {
  if (!(fraction >= 0.0 && fraction < 1.0))
    throw InputError("pruning fraction must be in [0, 1), got " + std::to_string(fraction));
  const int64_t n = int64_t(std::floor(fraction * double(layers) + 0.5));
  if (n > layers - 1) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "pruning fraction %g of %lld layers drops %lld, leaving none (at most %lld)",
                  fraction, (long long)layers, (long long)n, (long long)(layers - 1));
    throw InputError(buf);
  }
  return n;
}

PrunePlan plan_pruning(Strategy strategy, int64_t layers, int64_t n, const DistanceTable* table) {
  if (layers < 1) throw InputError("pruning: the model has no layers");
  if (n < 0 || n > layers - 1)
    throw InputError("pruning " + n_str(n) + " of " + n_str(layers) + " layers: n must be in 0.." +
                     n_str(layers - 1) + " (at least one layer stays)");
  PrunePlan p;
  p.strategy = strategy;
  p.layers = layers;
  p.n = n;
  if (n > 0 && strategy_needs_distances(strategy)) {
    if (!table) throw std::logic_error(std::string(strategy_name(strategy)) + " pruning needs a distance table");
    if (table->layers() != layers)
      throw InputError("distance table is for " + n_str(table->layers()) + " layers, the model has " +
                       n_str(layers));
  }
  if (n > 0 && strategy == Strategy::kBlockInfluence) {
    if (!table->has_block_influence())
      throw InputError("the distance result has no block influence values (stored by an older layerprune): "
                       "measure the distances again");
    // The n lowest BI_l, ties to the lower index (stable sort of indices by BI).
    const std::vector<double>& bi = table->block_influence();
    std::vector<int64_t> order(static_cast<size_t>(layers));
    for (int64_t l = 0; l < layers; ++l) order[size_t(l)] = l;
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return bi[size_t(a)] < bi[size_t(b)]; });
    std::vector<bool> dropped(static_cast<size_t>(layers), false);
    for (int64_t k = 0; k < n; ++k) dropped[size_t(order[size_t(k)])] = true;
    p.first_dropped = *std::min_element(order.begin(), order.begin() + n);
    for (int64_t l = 0; l < layers; ++l)
      if (!dropped[size_t(l)]) p.kept.push_back(l);
    return p;
  }
  if (n > 0) {
    if (strategy == Strategy::kSimilarity) {
      p.first_dropped = table->best_start(n);
      p.distance = table->at(p.first_dropped, n);
    } else {
      p.first_dropped = layers - 1 - n;
    }
  }
  for (int64_t l = 0; l < layers; ++l)
    if (n == 0 || l < p.first_dropped || l >= p.first_dropped + n) p.kept.push_back(l);
  return p;
}

}  // namespace layerprune
