// Where models and datasets live. Users with internet download them once (deploy/download_data.sh) into
// the cache; machines without (CI, air-gapped clusters) point LAYERPRUNE_DATA at a local mirror with the
// same layout. Loading code is the same either way: it only ever sees a resolved local path.
#pragma once
#include <string>
#include <vector>

namespace layerprune {

struct DataAsset {
  std::string name;        // what users write: "stories260K", "mmlu", "boolq", ...
  std::string relative;    // path inside a data root
  std::string description;
};

const std::vector<DataAsset>& known_assets();

// Data roots searched in order: $LAYERPRUNE_DATA (a mirror), then $XDG_CACHE_HOME/layerprune or
// ~/.cache/layerprune (where deploy/download_data.sh writes).
std::vector<std::string> data_roots();

// Where layerprune keeps what it computes once and reuses (distance tables): $XDG_CACHE_HOME/layerprune or
// ~/.cache/layerprune ("" when neither HOME nor XDG_CACHE_HOME is set).
std::string cache_dir();

// An existing path is returned as is; a known asset name (optionally followed by /sub/path) resolves to
// the first root that has it. Otherwise InputError saying where it looked and how to get it.
std::string locate_data(const std::string& name_or_path);

}  // namespace layerprune
