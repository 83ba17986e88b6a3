#include "cli/experiment_prep.h"

#include <cstdio>
#include <filesystem>
#include <unistd.h>

#include "common/error.h"
#include "formats/gguf_llama.h"
#include "model/llama2c.h"

namespace layerprune::cli {

namespace fs = std::filesystem;

namespace {
std::string where(const Experiment& e, size_t i) {
  auto it = e.locations.find("models[" + std::to_string(i) + "].path");
  return it != e.locations.end() ? it->second + ": " : (e.source.empty() ? "" : e.source + ": ");
}
}  // namespace

void prepare_models(Experiment& e, const std::string& models_dir) {
  for (size_t i = 0; i < e.models.size(); ++i) {
    ModelSpec& m = e.models[i];
    if (m.format == "hf") {
      if (!fs::exists(fs::path(m.path) / "config.json"))
        throw InputError(where(e, i) + "model " + m.name + ": " + m.path + " has no config.json (a Hugging Face model directory)");
      if (!fs::exists(fs::path(m.path) / "tokenizer.model") && !fs::exists(fs::path(m.path) / "tokenizer.json"))
        throw InputError(where(e, i) + "model " + m.name + ": " + m.path +
                         " has neither tokenizer.model (SentencePiece) nor tokenizer.json (a Hugging Face model directory)");
      continue;
    }
    const bool gguf = m.format == "gguf";
    if (!fs::is_regular_file(m.path))
      throw InputError(where(e, i) + "model " + m.name + ": no " + (gguf ? "GGUF file" : "llama2.c checkpoint") + " at " + m.path);
    if (!gguf && !fs::is_regular_file(m.tokenizer))
      throw InputError(where(e, i) + "model " + m.name + ": no tokenizer at " + m.tokenizer);
    const std::string out = fs::absolute(fs::path(models_dir) / m.name).lexically_normal().string();
    if (!fs::exists(out + "/config.json")) {
      // Into a temporary directory, then renamed: a half-written conversion is never mistaken for a model.
      const std::string tmp = out + ".partial-" + std::to_string(getpid());
      fs::remove_all(tmp);
      if (gguf) convert_gguf(m.path, tmp);
      else convert_llama2c(m.path, m.tokenizer, tmp);
      fs::remove_all(out);
      fs::rename(tmp, out);
      std::fprintf(stderr, "converted %s (%s) -> %s\n", m.path.c_str(), gguf ? "GGUF" : "llama2.c", out.c_str());
    }
    m.path = out;
    m.format = "hf";
    m.tokenizer.clear();
  }
}

}  // namespace layerprune::cli
