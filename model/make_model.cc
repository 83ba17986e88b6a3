#include "model/make_model.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <filesystem>

#include "common/error.h"
#include "common/progress.h"
#include "common/text_file.h"
#include "model/llama.h"
#include "formats/llama_tensors.h"
#include "formats/safetensors.h"
#include "model/tensor_io.h"
#include "formats/tokenizer.h"

namespace layerprune {

void make_random_model(const LlamaConfig& config_in, const std::string& out_dir, const MakeModelOptions& options) {
  LlamaConfig config = config_in;
  config.validate("make-model");
  at::ScalarType dtype = parse_compute_dtype(options.dtype);
  config.torch_dtype = dtype == at::kBFloat16 ? "bfloat16" : "float32";
  if (!options.tokenizer_model.empty()) {
    Tokenizer tok = Tokenizer::load(options.tokenizer_model);
    if (tok.vocab_size() != config.vocab_size)
      throw InputError(options.tokenizer_model + ": tokenizer has " + std::to_string(tok.vocab_size()) +
                       " pieces but --vocab is " + std::to_string(config.vocab_size));
  }
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  std::vector<ExpectedTensor> layout = llama_tensor_layout(config);
  std::vector<at::Tensor> tensors;
  std::vector<TensorToWrite> writes;
  Progress progress("make-model", int64_t(layout.size()), "tensors");
  for (const auto& e : layout) {
    // Norm weights 1, as HF initialises them; everything else (Qwen2's biases too, which HF zeroes, so that
    // a bias left out of a computation shows) ~ N(0, std^2).
    const std::string suffix = "norm.weight";
    bool is_norm = e.name.size() >= suffix.size() && e.name.compare(e.name.size() - suffix.size(), suffix.size(), suffix) == 0;
    at::Tensor t = is_norm ? at::ones(e.shape, at::kFloat)
                           : at::normal(0.0, options.init_std, e.shape, gen, at::TensorOptions(at::kFloat));
    tensors.push_back(t.to(dtype).contiguous());
    writes.push_back(tensor_to_write(e.name, tensors.back()));
    progress.advance();
  }
  progress.finish();
  std::filesystem::create_directories(out_dir);
  std::map<std::string, std::string> meta = {{"format", "pt"},
                                             {"layerprune_random_seed", std::to_string(options.seed)}};
  if (options.max_shard_bytes > 0) write_sharded_safetensors(out_dir, writes, options.max_shard_bytes, meta);
  else write_safetensors(out_dir + "/model.safetensors", writes, meta);
  write_file(out_dir + "/config.json", config.to_json());
  if (!options.tokenizer_model.empty())
    std::filesystem::copy_file(options.tokenizer_model, out_dir + "/tokenizer.model",
                               std::filesystem::copy_options::overwrite_existing);
}

}  // namespace layerprune
