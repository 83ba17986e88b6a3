#include "formats/layer_ranges.h"

#include <algorithm>
#include <string>

#include "common/error.h"

namespace layerprune {

namespace {
std::string n_str(int64_t v) { return std::to_string(v); }
}  // namespace

std::string format_layer_ranges(const std::vector<int64_t>& layers) {
  std::string out;
  for (size_t i = 0; i < layers.size();) {
    size_t j = i;
    while (j + 1 < layers.size() && layers[j + 1] == layers[j] + 1) ++j;
    if (!out.empty()) out += ",";
    out += n_str(layers[i]);
    if (j > i) out += "-" + n_str(layers[j]);
    i = j + 1;
  }
  return out;
}

std::vector<int64_t> parse_layer_list(const std::string& text, const std::string& what) {
  std::vector<int64_t> out;
  auto bad = [&](const std::string& why) -> InputError {
    return InputError(what + " \"" + text + "\": " + why + " (expected layer indices like 0,1,4 or 0-2,4)");
  };
  auto number = [&](const std::string& s) -> int64_t {
    if (s.empty() || s.size() > 9 || s.find_first_not_of("0123456789") != std::string::npos)
      throw bad("\"" + s + "\" is not a layer index");
    return std::stoll(s);
  };
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t comma = text.find(',', pos);
    std::string item = text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    size_t dash = item.find('-');
    int64_t a = number(dash == std::string::npos ? item : item.substr(0, dash));
    int64_t b = dash == std::string::npos ? a : number(item.substr(dash + 1));
    if (b < a) throw bad("range " + item + " runs backwards");
    for (int64_t l = a; l <= b; ++l) {
      if (!out.empty() && l <= out.back()) throw bad("indices must increase");
      out.push_back(l);
    }
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

std::vector<int64_t> kept_layers_from(const std::string& keep, const std::string& drop, int64_t layers) {
  if (!keep.empty() && !drop.empty()) throw InputError("give the kept layers or the dropped layers, not both");
  std::vector<int64_t> all(size_t(std::max<int64_t>(layers, 0)));
  for (int64_t l = 0; l < layers; ++l) all[size_t(l)] = l;
  if (keep.empty() && drop.empty()) return all;
  const std::vector<int64_t> list = parse_layer_list(keep.empty() ? drop : keep, keep.empty() ? "dropped layers" : "kept layers");
  if (list.back() >= layers)
    throw InputError("layer " + n_str(list.back()) + " does not exist: the model has " + n_str(layers) + " layers (0.." +
                     n_str(layers - 1) + ")");
  if (!keep.empty()) return list;
  std::vector<int64_t> kept;
  for (int64_t l : all)
    if (!std::binary_search(list.begin(), list.end(), l)) kept.push_back(l);
  if (kept.empty()) throw InputError("dropping layers " + format_layer_ranges(list) + " leaves none");
  return kept;
}

}  // namespace layerprune
