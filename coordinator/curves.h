// The paper's Figure 2 from results: a metric (MMLU, BoolQ, loss) against the fraction of layers dropped,
// one curve per pruning strategy x healing variant, one panel per (model, metric). Torch-free.
//
// A curve is made of samples; the sample at n = 0 has strategy "none" (the unpruned model) and is the common
// starting point of every strategy's curve with the same healing. Several samples of one point (seeds) are
// averaged. A point without a finite value is missing: the table prints "-", the plot leaves a gap (the line
// is broken there), never a zero.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace layerprune {

struct CurveSample {
  std::string model, strategy, healing, metric;  // strategy "none" for n = 0; healing "off" = no healing
  int64_t n = 0, layers = 0;                     // layers dropped, L
  double value = 0;
};

// One text table per (model, metric), models and metrics in the order they first appear: rows are the
// depths n (with the fraction n / L), columns strategy/healing ("similarity/off", "simple/qlora", ...).
// InputError when one model's samples disagree on L.
std::string curves_table(const std::vector<CurveSample>& samples);

// An SVG with one panel per (model, metric): columns are models, rows metrics. x = fraction of layers
// dropped (0..1), y = the metric; one colour per strategy, solid lines for healed and dashed for unhealed
// curves, a marker per point, one legend for the figure, and for MMLU a dotted line at 0.25 (random guessing
// among four choices). InputError as curves_table.
std::string curves_svg(const std::vector<CurveSample>& samples, const std::string& title = "");

}  // namespace layerprune
