// Layer lists as people write them ("0-3,6,9-11"): for flags, logs, tables and the pruned export's
// config. Torch-free.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace layerprune {

// "0-3,6,9-11": kept or dropped layer lists, compact, for logs and tables.
std::string format_layer_ranges(const std::vector<int64_t>& layers);
// Parses "0,1,4" or "0-2,4" (the inverse); InputError naming `what` on anything else.
std::vector<int64_t> parse_layer_list(const std::string& text, const std::string& what);

// The kept layers of an L-layer model from a --keep / --drop pair of flags (at most one non-empty; both
// empty: all layers). InputError for an index outside 0..L-1 or when nothing would be kept.
std::vector<int64_t> kept_layers_from(const std::string& keep, const std::string& drop, int64_t layers);

}  // namespace layerprune
