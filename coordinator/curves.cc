#include "coordinator/curves.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

#include "common/error.h"
#include "common/svg.h"

namespace layerprune {

namespace {

// ---------------------------------------------------------------------------------------------------------
// Samples -> panels of curves.

struct Curve {
  std::string strategy, healing;
  std::map<int64_t, double> values;  // n -> mean of the finite samples
};

struct Panel {
  std::string model, metric;
  int64_t layers = 0;
  std::vector<int64_t> depths;  // every n any curve of the panel has a sample for (finite or not), ascending
  std::vector<Curve> curves;
};

template <typename T>
void add_unique(std::vector<T>& v, const T& x) {
  if (std::find(v.begin(), v.end(), x) == v.end()) v.push_back(x);
}

// The paper's two strategies first, other names after them alphabetically, "none" last.
std::vector<std::string> strategy_order(std::vector<std::string> names) {
  auto rank = [](const std::string& s) { return s == "similarity" ? 0 : s == "simple" ? 1 : s == "none" ? 3 : 2; };
  std::stable_sort(names.begin(), names.end(), [&](const std::string& a, const std::string& b) {
    return rank(a) != rank(b) ? rank(a) < rank(b) : (rank(a) == 2 && a < b);
  });
  return names;
}

// "off" first, then healing variants in the order they appear.
std::vector<std::string> healing_order(std::vector<std::string> names) {
  std::stable_partition(names.begin(), names.end(), [](const std::string& h) { return h == "off"; });
  return names;
}

std::vector<Panel> build_panels(const std::vector<CurveSample>& samples) {
  std::vector<std::string> models, metrics;
  std::map<std::string, int64_t> layers;
  for (const CurveSample& s : samples) {
    add_unique(models, s.model);
    add_unique(metrics, s.metric);
    auto [it, fresh] = layers.emplace(s.model, s.layers);
    if (!fresh && it->second != s.layers)
      throw InputError("curves: model '" + s.model + "' has samples with " + std::to_string(it->second) + " and " +
                       std::to_string(s.layers) + " layers");
    if (s.n < 0 || s.n >= s.layers)
      throw InputError("curves: model '" + s.model + "': n = " + std::to_string(s.n) + " is outside 0.." +
                       std::to_string(s.layers - 1));
  }
  std::vector<Panel> panels;
  for (const std::string& model : models)
    for (const std::string& metric : metrics) {
      std::vector<const CurveSample*> mine;
      for (const CurveSample& s : samples)
        if (s.model == model && s.metric == metric) mine.push_back(&s);
      if (mine.empty()) continue;
      Panel p{model, metric, layers[model], {}, {}};
      // Curves: every (strategy, healing) with a pruned sample; a healing seen only unpruned gets a "none" curve.
      std::vector<std::string> strategies, healings;
      for (const CurveSample* s : mine) {
        add_unique(p.depths, s->n);
        add_unique(healings, s->healing);
        if (s->strategy != "none") add_unique(strategies, s->strategy);
      }
      std::sort(p.depths.begin(), p.depths.end());
      strategies = strategy_order(strategies);
      healings = healing_order(healings);
      for (const std::string& h : healings) {
        bool any = false;
        for (const std::string& st : strategies) {
          bool has = false;
          for (const CurveSample* s : mine) has = has || (s->strategy == st && s->healing == h);
          if (has) p.curves.push_back({st, h, {}}), any = true;
        }
        if (!any) p.curves.push_back({"none", h, {}});
      }
      // Put curves in strategy-major order (colour groups), healing "off" first within a strategy.
      std::stable_sort(p.curves.begin(), p.curves.end(), [&](const Curve& a, const Curve& b) {
        auto pos = [](const std::vector<std::string>& v, const std::string& x) {
          return std::find(v.begin(), v.end(), x) - v.begin();
        };
        std::vector<std::string> all = strategy_order(strategies);
        all.push_back("none");
        return pos(all, a.strategy) < pos(all, b.strategy);
      });
      for (Curve& c : p.curves) {
        std::map<int64_t, std::pair<double, int>> sum;
        for (const CurveSample* s : mine) {
          const bool mine_curve = s->healing == c.healing && (s->strategy == c.strategy || s->strategy == "none");
          if (!mine_curve || !std::isfinite(s->value)) continue;
          sum[s->n].first += s->value;
          sum[s->n].second += 1;
        }
        for (const auto& [n, acc] : sum) c.values[n] = acc.first / acc.second;
        // A healed curve whose unpruned model was not healed (heal_unpruned: false) starts where the model
        // is before any pruning or healing: the unhealed n = 0 point.
        if (!c.values.count(0)) {
          double total = 0;
          int count = 0;
          for (const CurveSample* s : mine)
            if (s->n == 0 && s->healing == "off" && std::isfinite(s->value)) total += s->value, count += 1;
          if (count) c.values[0] = total / count;
        }
      }
      panels.push_back(std::move(p));
    }
  return panels;
}

std::string curve_name(const Curve& c) { return c.strategy + "/" + c.healing; }

std::string metric_label(const std::string& metric) {
  if (metric == "mmlu") return "MMLU accuracy (5-shot)";
  if (metric == "boolq") return "BoolQ accuracy (0-shot)";
  if (metric == "loss") return "validation loss (nats/token)";
  return metric;
}

std::string fmt(const char* f, double v) {
  char buf[48];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string pad_left(const std::string& s, size_t width) {
  return s.size() >= width ? s : std::string(width - s.size(), ' ') + s;
}

// ---------------------------------------------------------------------------------------------------------
// SVG pieces.

std::string xy(double v) { return fmt("%.2f", v); }

// Strategy colours (the paper's figures: one colour per method), matplotlib's first colours.
std::string colour_of(const std::string& strategy, const std::vector<std::string>& strategies) {
  static const char* palette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"};
  if (strategy == "none") return "#555555";
  const size_t i = size_t(std::find(strategies.begin(), strategies.end(), strategy) - strategies.begin());
  return palette[i % 6];
}

// A marker: circles for the first healing variant and no healing, then squares, triangles, diamonds.
std::string marker(double x, double y, size_t shape, const std::string& colour, bool filled, const std::string& tip) {
  const std::string fill = filled ? colour : "white";
  const std::string style = "fill=\"" + fill + "\" stroke=\"" + colour + "\" stroke-width=\"1.5\"";
  std::string body;
  switch (shape % 4) {
    case 0: body = "<circle cx=\"" + xy(x) + "\" cy=\"" + xy(y) + "\" r=\"3.5\" " + style; break;
    case 1: body = "<rect x=\"" + xy(x - 3.2) + "\" y=\"" + xy(y - 3.2) + "\" width=\"6.4\" height=\"6.4\" " + style; break;
    case 2:
      body = "<polygon points=\"" + xy(x) + "," + xy(y - 4) + " " + xy(x - 4) + "," + xy(y + 3) + " " + xy(x + 4) +
             "," + xy(y + 3) + "\" " + style;
      break;
    default:
      body = "<polygon points=\"" + xy(x) + "," + xy(y - 4.5) + " " + xy(x + 4.5) + "," + xy(y) + " " + xy(x) + "," +
             xy(y + 4.5) + " " + xy(x - 4.5) + "," + xy(y) + "\" " + style;
  }
  return body + ">" + (tip.empty() ? "" : "<title>" + xml_escape(tip) + "</title>") + "</" +
         (shape % 4 == 0 ? "circle" : shape % 4 == 1 ? "rect" : "polygon") + ">\n";
}

// Round axis limits and ticks: a step of 1, 2 or 5 x 10^k giving about five intervals.
struct Axis {
  double lo = 0, hi = 1, step = 0.2;
};
Axis nice_axis(double lo, double hi) {
  if (!(hi > lo)) {
    const double pad = std::abs(lo) > 0 ? std::abs(lo) * 0.1 : 0.5;
    lo -= pad, hi += pad;
  }
  const double raw = (hi - lo) / 5.0, mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (raw <= m * mag * 1.0000001) {
      step = m * mag;
      break;
    }
  Axis a;
  a.step = step;
  a.lo = std::floor(lo / step + 1e-9) * step;
  a.hi = std::ceil(hi / step - 1e-9) * step;
  return a;
}

std::string tick_label(double v, double step) {
  if (std::abs(v) < step * 1e-6) v = 0;  // no "-0"
  const int decimals = std::max(0, int(std::ceil(-std::log10(step) - 1e-9)));
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

}  // namespace

std::string curves_table(const std::vector<CurveSample>& samples) {
  std::string out;
  for (const Panel& p : build_panels(samples)) {
    if (!out.empty()) out += "\n";
    out += p.model + " (L = " + std::to_string(p.layers) + "), " + p.metric + "\n";
    std::vector<std::string> header = {"fraction", "n"};
    for (const Curve& c : p.curves) header.push_back(curve_name(c));
    std::vector<size_t> width;
    for (const std::string& h : header) width.push_back(std::max<size_t>(h.size(), 8));
    for (size_t i = 0; i < header.size(); ++i) out += (i ? "  " : "") + pad_left(header[i], width[i]);
    out += "\n";
    for (int64_t n : p.depths) {
      std::vector<std::string> cells = {fmt("%.3f", double(n) / double(p.layers)), std::to_string(n)};
      for (const Curve& c : p.curves) {
        auto it = c.values.find(n);
        cells.push_back(it == c.values.end() ? "-" : fmt("%.4f", it->second));
      }
      for (size_t i = 0; i < cells.size(); ++i) out += (i ? "  " : "") + pad_left(cells[i], width[i]);
      out += "\n";
    }
  }
  return out;
}

std::string curves_svg(const std::vector<CurveSample>& samples, const std::string& title) {
  const std::vector<Panel> panels = build_panels(samples);
  std::vector<std::string> models, metrics, strategies, healed;
  std::vector<std::pair<std::string, std::string>> legend;  // (strategy, healing) over every panel
  for (const Panel& p : panels) {
    add_unique(models, p.model);
    add_unique(metrics, p.metric);
    for (const Curve& c : p.curves) {
      add_unique(strategies, c.strategy);
      if (c.healing != "off") add_unique(healed, c.healing);
      add_unique(legend, {c.strategy, c.healing});
    }
  }
  strategies = strategy_order(strategies);
  std::stable_sort(legend.begin(), legend.end(), [&](const auto& a, const auto& b) {
    auto pos = [&](const std::string& s) { return std::find(strategies.begin(), strategies.end(), s) - strategies.begin(); };
    return pos(a.first) < pos(b.first);
  });
  auto shape_of = [&](const std::string& healing) {
    return healing == "off" ? size_t(0) : size_t(std::find(healed.begin(), healed.end(), healing) - healed.begin());
  };

  // Layout: panels on a grid (columns = models, rows = metrics) under a title and a legend.
  const double pw = 360, ph = 250, ml = 62, mr = 16, mt = 30, mb = 46;  // panel size and its plot margins
  const double legend_h = 22.0 * double((legend.size() + 2) / 3) + 10, top = (title.empty() ? 10 : 40) + legend_h;
  const double width = std::max(pw * double(std::max<size_t>(models.size(), 1)), 3 * 230.0 + 20);
  const double height = top + ph * double(std::max<size_t>(metrics.size(), 1)) + 10;
  std::string s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + xy(width) + "\" height=\"" + xy(height) +
                  "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  if (!title.empty())
    s += "<text x=\"" + xy(width / 2) + "\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">" + xml_escape(title) +
         "</text>\n";

  // Legend: a line sample with its marker and "strategy, healing" per curve.
  for (size_t i = 0; i < legend.size(); ++i) {
    const auto& [strategy, healing] = legend[i];
    const double x = 20 + 230.0 * double(i % 3), y = (title.empty() ? 10 : 40) + 22.0 * double(i / 3) + 12;
    const std::string colour = colour_of(strategy, strategies);
    const bool off = healing == "off";
    s += "<g class=\"legend-entry\">";
    s += "<line x1=\"" + xy(x) + "\" y1=\"" + xy(y) + "\" x2=\"" + xy(x + 36) + "\" y2=\"" + xy(y) + "\" stroke=\"" +
         colour + "\" stroke-width=\"2\"" + (off ? " stroke-dasharray=\"6,4\"" : "") + "/>";
    s += marker(x + 18, y, shape_of(healing), colour, !off, "");
    s += "<text x=\"" + xy(x + 44) + "\" y=\"" + xy(y + 4) + "\">" +
         xml_escape(strategy + (off ? ", no healing" : ", healed (" + healing + ")")) + "</text></g>\n";
  }

  for (const Panel& p : panels) {
    const double px = pw * double(std::find(models.begin(), models.end(), p.model) - models.begin());
    const double py = top + ph * double(std::find(metrics.begin(), metrics.end(), p.metric) - metrics.begin());
    const double x0 = px + ml, x1 = px + pw - mr, y0 = py + ph - mb, y1 = py + mt;  // plot area (y0 bottom)
    const bool mmlu = p.metric == "mmlu";
    double lo = INFINITY, hi = -INFINITY;
    for (const Curve& c : p.curves)
      for (const auto& [n, v] : c.values) lo = std::min(lo, v), hi = std::max(hi, v);
    if (mmlu) lo = std::min(lo, 0.25), hi = std::max(hi, 0.25);
    const bool empty = !std::isfinite(lo);
    const Axis ya = empty ? Axis{} : nice_axis(lo, hi);
    auto X = [&](double f) { return x0 + (x1 - x0) * f; };
    auto Y = [&](double v) { return y0 - (y0 - y1) * (v - ya.lo) / (ya.hi - ya.lo); };

    s += "<g class=\"panel\">\n";
    s += "<text x=\"" + xy((x0 + x1) / 2) + "\" y=\"" + xy(py + 18) + "\" text-anchor=\"middle\" font-size=\"13\">" +
         xml_escape(p.model + " (" + std::to_string(p.layers) + " layers)") + "</text>\n";
    s += "<rect x=\"" + xy(x0) + "\" y=\"" + xy(y1) + "\" width=\"" + xy(x1 - x0) + "\" height=\"" + xy(y0 - y1) +
         "\" fill=\"none\" stroke=\"black\"/>\n";
    for (int i = 0; i <= 5; ++i) {  // x: fraction of layers dropped, 0..1
      const double f = i / 5.0;
      s += "<line x1=\"" + xy(X(f)) + "\" y1=\"" + xy(y0) + "\" x2=\"" + xy(X(f)) + "\" y2=\"" + xy(y0 + 4) +
           "\" stroke=\"black\"/><text x=\"" + xy(X(f)) + "\" y=\"" + xy(y0 + 16) + "\" text-anchor=\"middle\">" +
           tick_label(f, 0.2) + "</text>\n";
    }
    s += "<text x=\"" + xy((x0 + x1) / 2) + "\" y=\"" + xy(y0 + 34) + "\" text-anchor=\"middle\">fraction of layers dropped</text>\n";
    const double ymid = (y0 + y1) / 2;
    s += "<text x=\"" + xy(px + 16) + "\" y=\"" + xy(ymid) + "\" text-anchor=\"middle\" transform=\"rotate(-90 " +
         xy(px + 16) + " " + xy(ymid) + ")\">" + xml_escape(metric_label(p.metric)) + "</text>\n";
    if (empty) {
      s += "<text x=\"" + xy((x0 + x1) / 2) + "\" y=\"" + xy(ymid) + "\" text-anchor=\"middle\" fill=\"#888\">no data</text>\n";
      s += "</g>\n";
      continue;
    }
    const int ticks = int(std::lround((ya.hi - ya.lo) / ya.step));
    for (int i = 0; i <= ticks; ++i) {
      const double v = ya.lo + ya.step * i;
      s += "<line x1=\"" + xy(x0 - 4) + "\" y1=\"" + xy(Y(v)) + "\" x2=\"" + xy(x0) + "\" y2=\"" + xy(Y(v)) +
           "\" stroke=\"black\"/><line x1=\"" + xy(x0) + "\" y1=\"" + xy(Y(v)) + "\" x2=\"" + xy(x1) + "\" y2=\"" +
           xy(Y(v)) + "\" stroke=\"#e5e5e5\"/><text x=\"" + xy(x0 - 7) + "\" y=\"" + xy(Y(v) + 4) +
           "\" text-anchor=\"end\">" + tick_label(v, ya.step) + "</text>\n";
    }
    if (mmlu)  // random guessing among four choices; labelled at the left, where the curves are still high
      s += "<line class=\"random-guess\" x1=\"" + xy(x0) + "\" y1=\"" + xy(Y(0.25)) + "\" x2=\"" + xy(x1) +
           "\" y2=\"" + xy(Y(0.25)) + "\" stroke=\"black\" stroke-width=\"1.2\" stroke-dasharray=\"1.5,3\"/>" +
           "<text x=\"" + xy(x0 + 4) + "\" y=\"" + xy(Y(0.25) - 4) + "\" font-size=\"10\">random guessing</text>\n";

    for (const Curve& c : p.curves) {
      const std::string colour = colour_of(c.strategy, strategies);
      const bool off = c.healing == "off";
      // Lines join neighbouring depths of the panel only: a depth with no value breaks the curve.
      std::vector<std::vector<int64_t>> runs(1);
      for (int64_t n : p.depths) {
        if (c.values.count(n)) runs.back().push_back(n);
        else if (!runs.back().empty()) runs.emplace_back();
      }
      for (const std::vector<int64_t>& run : runs) {
        if (run.size() < 2) continue;
        std::string pts;
        for (int64_t n : run)
          pts += (pts.empty() ? "" : " ") + xy(X(double(n) / double(p.layers))) + "," + xy(Y(c.values.at(n)));
        s += "<polyline class=\"curve\" points=\"" + pts + "\" fill=\"none\" stroke=\"" + colour +
             "\" stroke-width=\"2\"" + (off ? " stroke-dasharray=\"6,4\"" : "") + "/>\n";
      }
      for (const auto& [n, v] : c.values)
        s += marker(X(double(n) / double(p.layers)), Y(v), shape_of(c.healing), colour, !off,
                    curve_name(c) + " n=" + std::to_string(n) + " (" + fmt("%.3f", double(n) / double(p.layers)) +
                        "): " + fmt("%.4f", v));
    }
    s += "</g>\n";
  }
  s += "</svg>\n";
  return s;
}

}  // namespace layerprune
