// Loading a model directory for the model-level subcommands (cli/model_loading.h).
#include "cli/model_loading.h"

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "common/error.h"
#include "model/device.h"
#include "model/runtime.h"

namespace layerprune::cli {

// Flags every model-level command shares.
void add_model_flags(ArgParser& p) {
  p.option("model", "Hugging Face-layout model directory (config.json, *.safetensors, tokenizer.model or tokenizer.json)")
      .option("threads", "CPU threads (0: $OMP_NUM_THREADS or all cores)", "0")
      .option("dtype", "compute dtype: float32 or bfloat16", "float32")
      .option("device", "where the weights live and the model runs: cpu, cuda (GPU 0) or cuda:N", "cpu")
      .flag("json", "print one JSON document on stdout");
}

LoadedModel load_model(const ArgParser& p) {
  int threads = configure_threads(int(p.get_int("threads")));
  std::string dir = p.get("model");
  if (!std::filesystem::is_directory(dir)) throw InputError(dir + ": not a model directory");
  // The tokenizer first: a directory without one fails before the weights are read.
  Tokenizer tokenizer = Tokenizer::load_dir(dir);
  LoadOptions lo;
  lo.dtype = p.get("dtype");
  lo.device = parse_device(p.get("device"));  // before the weights: a missing GPU is said at once
  auto t0 = std::chrono::steady_clock::now();
  LlamaModel model = LlamaModel::load(dir, lo);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto& c = model.config();
  std::fprintf(stderr, "loaded %s: %lld layers, dim %lld, vocab %lld, %.1f MB mapped + %.1f MB copied in %.2fs, %d threads, on %s\n",
               dir.c_str(), (long long)c.num_hidden_layers, (long long)c.hidden_size, (long long)c.vocab_size,
               model.mapped_bytes() / 1e6, model.copied_bytes() / 1e6, secs, threads, describe_device(lo.device).c_str());
  if (tokenizer.vocab_size() != c.vocab_size)
    throw InputError(tokenizer.path() + ": tokenizer has " + std::to_string(tokenizer.vocab_size()) +
                     " pieces but the model's vocabulary is " + std::to_string(c.vocab_size));
  return {std::move(model), std::move(tokenizer)};
}

void add_bos_flags(ArgParser& p) {
  p.flag("add-bos", "prepend BOS to every context (default: as the model's tokenizer_config.json says)")
      .flag("no-add-bos", "do not prepend BOS (default: as the model's tokenizer_config.json says)");
}

bool add_bos_from_flags(const ArgParser& p, const Tokenizer& tokenizer) {
  if (p.flag_set("add-bos") && p.flag_set("no-add-bos")) throw UsageError("give at most one of --add-bos and --no-add-bos");
  if (p.flag_set("add-bos")) {
    if (tokenizer.bos_id() < 0) throw InputError(tokenizer.path() + ": --add-bos, but the tokenizer has no BOS token");
    return true;
  }
  return p.flag_set("no-add-bos") ? false : tokenizer.add_bos_default();
}

}  // namespace layerprune::cli
