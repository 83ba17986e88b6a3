// Which layers to drop (Gromov et al. 2024, Sec. 3). Torch-free: the distances come from
// method/distances.h and the result is a list of kept layers that LlamaModel::forward runs by skipping.
//
// Notation: L layers; x^(l) is the input of layer l (l = 0..L-1) and x^(L) the last layer's output before the
// final norm. d(l, n) = angular distance between x^(l) and x^(l+n) (paper Eq. 7), defined for n = 1..L and
// l = 0..L-n.
//
//   n from a fraction f:  n = round(f * L), halves rounded up (0.5 * 5 -> 3); the realised fraction is n / L.
//   similarity strategy:  l*(n) = argmin_l d(l, n) (the first on ties); drop layers l* .. l*+n-1.
//   simple strategy:      drop the n layers just before the final one, L-1-n .. L-2 (the final layer stays).
//   block_influence:      BI_l = 1 - mean over tokens of cos(x^(l), x^(l+1)) (ShortGPT, Men et al. 2024,
//                         arXiv 2403.03853, Eq. 2), the mean over every real token of every calibration
//                         sequence (method/distances.h); drop the n layers of lowest BI, contiguous or not
//                         (ties: the lower index first).
// All are defined for n = 0 (nothing dropped) .. L-1 (one layer left).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "formats/layer_ranges.h"

namespace layerprune {

// Mean angular distances over calibration samples: d(l, n) for 1 <= n <= L, 0 <= l <= L-n; and the block
// influence BI_l of each layer, measured in the same pass.
class DistanceTable {
 public:
  DistanceTable() = default;
  // `pair` is the (L+1) x (L+1) row-major matrix of d between hidden states i and j (symmetric);
  // `block_influence` is BI_0 .. BI_{L-1}, or empty (a result stored before it was measured).
  DistanceTable(int64_t layers, std::vector<double> pair, std::vector<double> block_influence = {});
  int64_t layers() const { return layers_; }
  double at(int64_t l, int64_t n) const;  // d(x^(l), x^(l+n))
  // argmin over l of d(l, n), the first on ties.
  int64_t best_start(int64_t n) const;
  const std::vector<double>& pair_matrix() const { return pair_; }
  bool has_block_influence() const { return !block_influence_.empty(); }
  const std::vector<double>& block_influence() const { return block_influence_; }  // [L], or empty

 private:
  int64_t layers_ = 0;
  std::vector<double> pair_;
  std::vector<double> block_influence_;
};

enum class Strategy { kSimilarity, kSimple, kBlockInfluence };
// "similarity" | "simple" | "block_influence"; InputError listing them otherwise.
Strategy parse_strategy(const std::string& name);
const char* strategy_name(Strategy s);
// Whether plan_pruning needs the measured DistanceTable for n > 0 (similarity and block_influence).
bool strategy_needs_distances(Strategy s);

// n = round(f * L), halves up; InputError unless 0 <= f < 1 and n <= L-1.
int64_t layers_to_prune(double fraction, int64_t layers);

struct PrunePlan {
  Strategy strategy = Strategy::kSimilarity;
  int64_t layers = 0;         // L
  int64_t n = 0;              // layers dropped
  // l* (similarity), L-1-n (simple), the lowest dropped layer (block_influence, whose dropped set need not
  // be one block: read `kept` for the layers); 0 when n = 0.
  int64_t first_dropped = 0;
  double distance = 0;        // d(l*, n) for similarity (0 for n = 0, simple and block_influence)
  std::vector<int64_t> kept;  // ascending
  double realised_fraction() const { return layers ? double(n) / double(layers) : 0.0; }
};

// The kept layers for n dropped; `table` is needed for similarity and block_influence (null for simple).
PrunePlan plan_pruning(Strategy strategy, int64_t layers, int64_t n, const DistanceTable* table);

}  // namespace layerprune
