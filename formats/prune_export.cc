#include "formats/prune_export.h"

#include <filesystem>
#include <map>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/text_file.h"
#include "formats/llama_config.h"
#include "formats/layer_ranges.h"
#include "formats/safetensors.h"

namespace layerprune {

namespace fs = std::filesystem;

namespace {
// "model.layers.12.mlp.up_proj.weight" -> 12 and the rest ("mlp.up_proj.weight"); -1 for non-layer tensors.
int64_t layer_of(const std::string& name, std::string* rest) {
  static const std::string prefix = "model.layers.";
  if (name.compare(0, prefix.size(), prefix) != 0) return -1;
  size_t dot = name.find('.', prefix.size());
  if (dot == std::string::npos) return -1;
  const std::string num = name.substr(prefix.size(), dot - prefix.size());
  if (num.empty() || num.find_first_not_of("0123456789") != std::string::npos) return -1;
  *rest = name.substr(dot + 1);
  return std::stoll(num);
}
}  // namespace

PruneExport export_pruned_model(const std::string& source_dir, const std::vector<int64_t>& kept,
                                const std::string& out_dir, uint64_t max_shard_bytes,
                                const std::map<std::string, TensorToWrite>& replace) {
  std::error_code ec;
  if (fs::exists(out_dir, ec) && fs::equivalent(source_dir, out_dir, ec))
    throw InputError(out_dir + ": the output directory is the source model");
  const std::string config_path = source_dir + "/config.json";
  LlamaConfig config = LlamaConfig::from_file(config_path);
  const int64_t L = config.num_hidden_layers;
  if (kept.empty()) throw InputError("prune: no layers kept");
  for (size_t i = 0; i < kept.size(); ++i)
    if (kept[i] < 0 || kept[i] >= L || (i > 0 && kept[i] <= kept[i - 1]))
      throw InputError("prune: kept layers " + format_layer_ranges(kept) + " must increase within 0.." +
                       std::to_string(L - 1));
  std::map<int64_t, int64_t> renumber;
  for (size_t i = 0; i < kept.size(); ++i) renumber[kept[i]] = int64_t(i);

  Checkpoint ckpt = Checkpoint::open(source_dir);
  std::vector<TensorToWrite> writes;
  const std::vector<std::string> all = ckpt.names();
  PruneExport result;
  result.source_layers = L;
  result.kept_layers = int64_t(kept.size());
  for (const std::string& name : all) {
    std::string rest;
    const int64_t l = layer_of(name, &rest);
    std::string out_name = name;
    if (l >= 0) {
      if (l >= L) throw InputError(ckpt.path() + ": tensor " + name + " is beyond the config's " + std::to_string(L) + " layers");
      auto it = renumber.find(l);
      if (it == renumber.end()) continue;  // a dropped layer
      out_name = "model.layers." + std::to_string(it->second) + "." + rest;
    }
    const TensorView& t = ckpt.tensor(name);
    if (auto r = replace.find(name); r != replace.end()) {
      if (r->second.dtype != t.dtype || r->second.shape != t.shape)
        throw std::invalid_argument("export: replacement for " + name + " has another dtype or shape");
      writes.push_back(TensorToWrite{out_name, t.dtype, t.shape, r->second.data, r->second.nbytes});
    } else {
      writes.push_back(TensorToWrite{out_name, t.dtype, t.shape, t.data, t.nbytes});
    }
    result.bytes_written += t.nbytes;
  }
  fs::create_directories(out_dir, ec);
  if (ec) throw InputError(out_dir + ": cannot create directory (" + ec.message() + ")");
  const std::map<std::string, std::string> meta = {
      {"format", "pt"}, {"layerprune_pruned_from", fs::absolute(source_dir).string()},
      {"layerprune_kept_layers", format_layer_ranges(kept)}, {"layerprune_source_layers", std::to_string(L)}};
  const bool sharded = ckpt.files().size() > 1 || fs::exists(source_dir + "/model.safetensors.index.json");
  // Remove the other layout's files so the loader cannot pick up a stale checkpoint.
  std::vector<fs::path> stale;
  for (const auto& entry : fs::directory_iterator(out_dir))
    if (entry.path().extension() == ".safetensors" || entry.path().filename() == "model.safetensors.index.json")
      stale.push_back(entry.path());
  for (const auto& f : stale) fs::remove(f);
  if (sharded) {
    write_sharded_safetensors(out_dir, writes, max_shard_bytes, meta);
  } else {
    write_safetensors(out_dir + "/model.safetensors", writes, meta);
  }
  for (const auto& entry : fs::directory_iterator(out_dir)) {
    const std::string f = entry.path().filename().string();
    if (entry.path().extension() == ".safetensors" || f == "model.safetensors.index.json") result.files.push_back(f);
  }

  // config.json: the source's fields as they were, with the new layer count.
  nlohmann::ordered_json cfg = nlohmann::ordered_json::parse(read_file(config_path));
  cfg["num_hidden_layers"] = int64_t(kept.size());
  // transformers 5.x lists each layer's attention kind (Qwen2, Mistral's relatives) and checks the list's
  // length against num_hidden_layers: keep the kept layers' entries.
  if (cfg.contains("layer_types") && cfg["layer_types"].is_array()) {
    if (int64_t(cfg["layer_types"].size()) != L)
      throw InputError(config_path + ": layer_types lists " + std::to_string(cfg["layer_types"].size()) +
                       " layers, num_hidden_layers is " + std::to_string(L));
    nlohmann::ordered_json types = nlohmann::ordered_json::array();
    for (int64_t l : kept) types.push_back(cfg["layer_types"][size_t(l)]);
    cfg["layer_types"] = types;
  }
  write_file(out_dir + "/config.json", cfg.dump(2) + "\n");
  result.files.push_back("config.json");
  for (const char* f : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                        "generation_config.json"}) {
    const fs::path src = fs::path(source_dir) / f;
    if (!fs::exists(src)) continue;
    fs::copy_file(src, fs::path(out_dir) / f, fs::copy_options::overwrite_existing);
    result.files.push_back(f);
  }
  return result;
}

}  // namespace layerprune
