// Small, dependency-free SVG plots for reports (distance heatmaps now, accuracy curves later).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace layerprune {

// A rows x cols grid of values drawn as coloured cells (viridis-like, low = dark purple, high = yellow),
// with a colour bar. NaN cells are left blank. Row r is labelled row_first + r, column c col_first + c;
// row 0 is drawn at the top. marks[r] (if given, >= 0) puts a dot in cell (r, marks[r]).
struct Heatmap {
  std::string title, x_label, y_label, value_label;
  int64_t rows = 0, cols = 0;
  int64_t row_first = 0, col_first = 0;
  std::vector<double> values;   // row-major, rows x cols
  std::vector<int64_t> marks;   // optional: one column per row, -1 for none
};

std::string heatmap_svg(const Heatmap& h);

// Text with &, <, >, " escaped for SVG/XML.
std::string xml_escape(const std::string& s);

}  // namespace layerprune
