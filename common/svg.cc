#include "common/svg.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <stdexcept>

namespace layerprune {

namespace {

// Viridis at 5 anchors, linearly interpolated: enough to read a heatmap, and monotone in lightness.
std::string colour(double t) {
  static const double anchors[5][3] = {
      {68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};
  t = std::clamp(t, 0.0, 1.0) * 4.0;
  const int i = std::min(3, int(t));
  const double f = t - i;
  char buf[16];
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x", int(std::lround(anchors[i][0] + f * (anchors[i + 1][0] - anchors[i][0]))),
                int(std::lround(anchors[i][1] + f * (anchors[i + 1][1] - anchors[i][1]))),
                int(std::lround(anchors[i][2] + f * (anchors[i + 1][2] - anchors[i][2]))));
  return buf;
}

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

}  // namespace

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string heatmap_svg(const Heatmap& h) {
  if (h.rows < 1 || h.cols < 1 || int64_t(h.values.size()) != h.rows * h.cols)
    throw std::invalid_argument("heatmap_svg: values must hold rows x cols entries");
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (double v : h.values)
    if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
  if (!std::isfinite(lo)) lo = 0, hi = 1;
  const double span = hi > lo ? hi - lo : 1.0;
  const double cell = std::clamp(480.0 / double(std::max(h.rows, h.cols)), 4.0, 40.0);
  const double left = 70, top = 50, W = cell * double(h.cols), H = cell * double(h.rows);
  const double bar_x = left + W + 30, width = bar_x + 90, height = top + H + 60;
  std::string s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + num(width) + "\" height=\"" +
                  num(height) + "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s += "<text x=\"" + num(left + W / 2) + "\" y=\"25\" text-anchor=\"middle\" font-size=\"14\">" +
       xml_escape(h.title) + "</text>\n";
  for (int64_t r = 0; r < h.rows; ++r)
    for (int64_t c = 0; c < h.cols; ++c) {
      const double v = h.values[size_t(r * h.cols + c)];
      if (!std::isfinite(v)) continue;
      s += "<rect x=\"" + num(left + cell * double(c)) + "\" y=\"" + num(top + cell * double(r)) + "\" width=\"" +
           num(cell) + "\" height=\"" + num(cell) + "\" fill=\"" + colour((v - lo) / span) + "\"><title>" +
           xml_escape(h.y_label) + " " + std::to_string(h.row_first + r) + ", " + xml_escape(h.x_label) + " " +
           std::to_string(h.col_first + c) + ": " + num(v) + "</title></rect>\n";
    }
  for (size_t r = 0; r < h.marks.size() && int64_t(r) < h.rows; ++r) {
    if (h.marks[r] < 0 || h.marks[r] >= h.cols) continue;
    s += "<circle cx=\"" + num(left + cell * (double(h.marks[r]) + 0.5)) + "\" cy=\"" +
         num(top + cell * (double(r) + 0.5)) + "\" r=\"" + num(std::max(1.5, cell * 0.12)) + "\" fill=\"red\"/>\n";
  }
  // Axis ticks: at most ~16 labels per axis.
  const int64_t xstep = std::max<int64_t>(1, (h.cols + 15) / 16), ystep = std::max<int64_t>(1, (h.rows + 15) / 16);
  for (int64_t c = 0; c < h.cols; c += xstep)
    s += "<text x=\"" + num(left + cell * (double(c) + 0.5)) + "\" y=\"" + num(top + H + 15) +
         "\" text-anchor=\"middle\">" + std::to_string(h.col_first + c) + "</text>\n";
  for (int64_t r = 0; r < h.rows; r += ystep)
    s += "<text x=\"" + num(left - 6) + "\" y=\"" + num(top + cell * (double(r) + 0.5) + 4) +
         "\" text-anchor=\"end\">" + std::to_string(h.row_first + r) + "</text>\n";
  s += "<text x=\"" + num(left + W / 2) + "\" y=\"" + num(top + H + 35) + "\" text-anchor=\"middle\">" +
       xml_escape(h.x_label) + "</text>\n";
  s += "<text x=\"20\" y=\"" + num(top + H / 2) + "\" text-anchor=\"middle\" transform=\"rotate(-90 20 " +
       num(top + H / 2) + ")\">" + xml_escape(h.y_label) + "</text>\n";
  // Colour bar: 20 steps from lo (bottom) to hi (top).
  for (int i = 0; i < 20; ++i)
    s += "<rect x=\"" + num(bar_x) + "\" y=\"" + num(top + H * (19 - i) / 20.0) + "\" width=\"16\" height=\"" +
         num(H / 20.0 + 0.5) + "\" fill=\"" + colour((i + 0.5) / 20.0) + "\"/>\n";
  s += "<text x=\"" + num(bar_x + 20) + "\" y=\"" + num(top + 10) + "\">" + num(hi) + "</text>\n";
  s += "<text x=\"" + num(bar_x + 20) + "\" y=\"" + num(top + H) + "\">" + num(lo) + "</text>\n";
  s += "<text x=\"" + num(bar_x) + "\" y=\"" + num(top - 8) + "\">" + xml_escape(h.value_label) + "</text>\n";
  s += "</svg>\n";
  return s;
}

}  // namespace layerprune
