// Model-level subcommands: convert, generate, loss, make-model.
#include <ATen/ATen.h>

#include <filesystem>
#include <iostream>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/model_loading.h"
#include "common/args.h"
#include "common/data_locator.h"
#include "common/error.h"
#include "common/hashing.h"
#include "common/progress.h"
#include "common/text_file.h"
#include "common/version.h"
#include "model/generate.h"
#include "model/llama.h"
#include "model/llama2c.h"
#include "model/loss.h"
#include "model/make_model.h"
#include "experiment/pruning.h"
#include "model/runtime.h"
#include "formats/gguf_llama.h"
#include "formats/llama_tensors.h"
#include "formats/tensor_scan.h"
#include "formats/tokenizer.h"

namespace layerprune::cli {

using nlohmann::json;

int convert(int argc, char** argv) {
  ArgParser p("convert", "Convert a checkpoint into a Hugging Face-layout directory, one of:\n"
                         "  --llama2c F.bin --tokenizer T.model: a llama2.c checkpoint (legacy version-0 format) and\n"
                         "    its SentencePiece tokenizer -> config.json, model.safetensors (HF tensor names, q/k rows\n"
                         "    permuted for rotate-half RoPE), tokenizer.model;\n"
                         "  --gguf F.gguf: a llama.cpp GGUF Llama (v2/v3; F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,\n"
                         "    Q4_K, Q5_K, Q6_K) -> config.json, model.safetensors (dequantised to float32, q/k rows\n"
                         "    un-permuted), tokenizer.json and tokenizer_config.json from its byte-level BPE vocabulary.");
  p.option("llama2c", "llama2.c checkpoint (.bin)", "")
      .option("tokenizer", "SentencePiece tokenizer.model the llama2.c checkpoint was trained with", "")
      .option("gguf", "llama.cpp GGUF file of a Llama model (or a `layerprune locate` name: smollm2-135m)", "")
      .option("out", "output directory")
      .flag("json", "print one JSON document on stdout");
  if (!p.parse(argc, argv)) return 0;
  const bool gguf = !p.get("gguf").empty(), llama2c = !p.get("llama2c").empty();
  if (gguf == llama2c) throw UsageError("convert: give exactly one of --llama2c and --gguf");
  if (gguf && !p.get("tokenizer").empty())
    throw UsageError("convert: --tokenizer goes with --llama2c (a GGUF file carries its own tokenizer)");
  if (llama2c && p.get("tokenizer").empty()) throw UsageError("convert: --llama2c needs --tokenizer T.model");

  LlamaConfig c;
  int64_t parameters = 0;
  bool shared_classifier = false;
  if (gguf) {
    const GgufImport r = convert_gguf(locate_data(p.get("gguf")), p.get("out"));
    c = r.config;
    parameters = r.parameters;
    shared_classifier = c.tie_word_embeddings;
  } else {
    const Llama2cImport r = convert_llama2c(p.get("llama2c"), p.get("tokenizer"), p.get("out"));
    c = r.config;
    parameters = r.parameters;
    shared_classifier = r.shared_classifier;
  }
  if (p.flag_set("json")) {
    std::cout << json{{"out", p.get("out")}, {"parameters", parameters}, {"layers", c.num_hidden_layers},
                      {"hidden_size", c.hidden_size}, {"vocab_size", c.vocab_size},
                      {"shared_classifier", shared_classifier}}.dump()
              << std::endl;
  } else {
    std::printf("wrote %s: %lld parameters, %lld layers, dim %lld, %lld heads (%lld kv), vocab %lld, context %lld, %s classifier\n",
                p.get("out").c_str(), (long long)parameters, (long long)c.num_hidden_layers, (long long)c.hidden_size,
                (long long)c.num_attention_heads, (long long)c.num_key_value_heads, (long long)c.vocab_size,
                (long long)c.max_position_embeddings, shared_classifier ? "shared" : "separate");
  }
  return 0;
}

int generate(int argc, char** argv) {
  ArgParser p("generate", "Greedy generation: the prompt ([BOS] + its tokens) then the most likely token at each step,\n"
                          "until --max-new-tokens, the end of the context, or BOS/EOS. The text is printed as\n"
                          "llama2.c's run.c prints it, so the two can be compared on the same checkpoint.");
  add_model_flags(p);
  p.option("prompt", "prompt text", "").option("max-new-tokens", "tokens to generate after the prompt", "128");
  if (!p.parse(argc, argv)) return 0;
  LoadedModel m = load_model(p);
  const bool as_json = p.flag_set("json");
  GenerateResult r = generate_greedy(m.model, m.tokenizer, p.get("prompt"), p.get_int("max-new-tokens"),
                                     [&](const std::string& s) {
                                       if (!as_json) {
                                         std::fwrite(s.data(), 1, s.size(), stdout);
                                         std::fflush(stdout);
                                       }
                                     });
  if (as_json) {
    std::cout << json{{"text", r.text}, {"prompt_ids", r.prompt_ids}, {"new_ids", r.new_ids},
                      {"stop_reason", r.stop_reason}, {"tokens_per_second", r.tokens_per_second}}.dump()
              << std::endl;
  } else {
    std::printf("\n");
    std::fflush(stdout);
    std::fprintf(stderr, "%zu tokens, %.1f tokens/s (stopped: %s)\n", r.new_ids.size(), r.tokens_per_second,
                 r.stop_reason.c_str());
  }
  return 0;
}

int loss(int argc, char** argv) {
  std::string recipe = std::string("Recipe: ") + kLossRecipe +
                       ".\nInput: plain text (used verbatim) or JSONL with a \"text\" field per line (documents "
                       "joined with blank lines).";
  ArgParser p("loss", "Mean next-token negative log-likelihood of a model on a text corpus.");
  add_model_flags(p);
  p.option("data", "text (.txt) or JSONL (.jsonl, field \"text\") file")
      .option("context", "window length including BOS (0: the model's max_position_embeddings)", "0")
      .option("batch-size", "windows per forward pass", "4")
      .option("max-windows", "evaluate at most this many windows (0: all)", "0")
      .option("layers", "kept layers, e.g. 0,1,4 (default: all)", "")
      .option("drop", "dropped layers, e.g. 2-3 (the rest are kept)", "")
      .epilog(recipe);
  if (!p.parse(argc, argv)) return 0;
  LoadedModel m = load_model(p);
  std::string text = read_text_stream(p.get("data"));
  std::vector<int32_t> ids = m.tokenizer.encode(text, /*add_bos=*/false);
  LossOptions lo;
  lo.context = p.get_int("context");
  lo.batch_size = p.get_int("batch-size");
  lo.max_windows = p.get_int("max-windows");
  lo.layers = kept_layers_from(p.get("layers"), p.get("drop"), m.model.config().num_hidden_layers);
  LossResult r = stream_loss(m.model, ids, m.tokenizer.sequence_bos(), lo);
  if (p.flag_set("json")) {
    std::cout << json{{"mean_nll", r.mean_nll}, {"mean_nll_over_ln_vocab", r.normalized},
                      {"stream_tokens", r.stream_tokens}, {"windows", r.windows},
                      {"predicted_tokens", r.predicted_tokens}, {"context", r.context},
                      {"add_bos", m.tokenizer.add_bos_default()},
                      {"data", p.get("data")}, {"data_sha256", sha256_hex(text)}, {"recipe", kLossRecipe},
                      {"model", p.get("model")}, {"layers", m.model.kept_layers(lo.layers)},
                      {"tokenizer_sha256", m.tokenizer.file_sha256()}, {"code_version", layerprune_version()}}.dump()
              << std::endl;
  } else {
    std::printf("loss %.6f nats/token (%.6f of ln(vocab)) over %lld predicted tokens in %lld windows of %lld\n",
                r.mean_nll, r.normalized, (long long)r.predicted_tokens, (long long)r.windows, (long long)r.context);
  }
  return 0;
}

int check(int argc, char** argv) {
  ArgParser p("check", "Read every tensor of a model directory once (streaming from the memory map, with progress) and\n"
                       "report by tensor name: NaN and Inf values, and missing, unexpected, misshapen or wrongly typed\n"
                       "tensors against its config.json. Exit status 0 when the checkpoint is clean, 2 when anything is wrong.");
  p.option("model", "Hugging Face-layout model directory (config.json, *.safetensors)")
      .flag("json", "print one JSON document on stdout");
  if (!p.parse(argc, argv)) return 0;
  const std::string dir = p.get("model");
  if (!std::filesystem::is_directory(dir)) throw InputError(dir + ": not a model directory");
  const LlamaConfig config = LlamaConfig::from_file(dir + "/config.json");
  const Checkpoint ckpt = Checkpoint::open(dir);
  std::vector<std::string> layout;  // check_llama_checkpoint's problems, one per line
  try {
    check_llama_checkpoint(ckpt, config);
  } catch (const InputError& e) {
    std::string all = e.what();
    for (size_t a = 0, b; a < all.size(); a = b + 1) {
      b = all.find('\n', a);
      if (b == std::string::npos) b = all.size();
      if (b > a) layout.push_back(all.substr(a, b - a));
    }
  }
  json bad = json::array();
  int64_t values = 0;
  const std::vector<std::string> names = ckpt.names();
  {
    Progress progress("check", int64_t(ckpt.total_bytes() >> 20), "MiB");
    uint64_t read = 0;
    for (const std::string& name : names) {
      const TensorView& v = ckpt.tensor(name);
      const TensorScan s = scan_tensor(v);
      values += s.values;
      if (!s.finite())
        bad.push_back({{"tensor", name}, {"dtype", dtype_name(v.dtype)}, {"shape", v.shape}, {"nan", s.nan},
                       {"inf", s.inf}, {"first_index", s.first_bad}, {"file", v.file}});
      const uint64_t before = read >> 20;
      read += v.nbytes;
      progress.advance(int64_t((read >> 20) - before));
    }
  }
  const bool ok = bad.empty() && layout.empty();
  if (p.flag_set("json")) {
    std::cout << json{{"model", dir},          {"ok", ok},           {"tensors", names.size()},
                      {"values", values},      {"bytes", ckpt.total_bytes()}, {"non_finite", bad},
                      {"layout_problems", layout}, {"code_version", layerprune_version()}}.dump()
              << std::endl;
  } else {
    for (const json& b : bad)
      std::printf("%s: %s %s: %lld NaN, %lld Inf (first at flat index %lld)\n", b["tensor"].get<std::string>().c_str(),
                  b["dtype"].get<std::string>().c_str(), b["shape"].dump().c_str(), (long long)b["nan"].get<int64_t>(),
                  (long long)b["inf"].get<int64_t>(), (long long)b["first_index"].get<int64_t>());
    for (const std::string& l : layout) std::printf("%s\n", l.c_str());
    std::printf("check %s: %zu tensors, %lld values, %.1f MB: %s\n", dir.c_str(), names.size(), (long long)values,
                double(ckpt.total_bytes()) / 1e6,
                ok ? "clean" : (std::to_string(bad.size()) + " tensor(s) with non-finite values, " +
                                std::to_string(layout.size()) + " layout problem(s)").c_str());
  }
  return ok ? 0 : 2;
}

int make_model(int argc, char** argv) {
  ArgParser p("make-model", "Write a random-initialised Llama (weights ~ N(0, 0.02^2), norms 1) as a Hugging Face-layout\n"
                            "directory. --preset 110m is the benchmark model (dim 768, 12 layers, 12 heads, FFN 2048,\n"
                            "vocab 32000); explicit flags override the preset.");
  p.option("out", "output directory")
      .option("preset", "start from a named shape: tiny | 110m", "tiny")
      .option("dim", "hidden size", "")
      .option("layers", "number of layers", "")
      .option("heads", "attention heads", "")
      .option("kv-heads", "key/value heads (GQA); default = heads", "")
      .option("ffn", "intermediate (FFN) size", "")
      .option("vocab", "vocabulary size", "")
      .option("context", "max_position_embeddings", "")
      .option("rope-theta", "RoPE base", "10000")
      .option("norm-eps", "RMSNorm epsilon", "1e-5")
      .flag("tie", "tie the LM head to the embedding")
      .option("dtype", "stored dtype: float32 or bfloat16", "float32")
      .option("seed", "random seed", "0")
      .option("tokenizer", "SentencePiece model to copy in as tokenizer.model", "")
      .option("shard-mb", "write shards of at most this many MB with an index (0: one file)", "0")
      .flag("json", "print one JSON document on stdout");
  if (!p.parse(argc, argv)) return 0;
  LlamaConfig c;
  std::string preset = p.get("preset");
  if (preset == "tiny") {
    c.hidden_size = 64; c.num_hidden_layers = 4; c.num_attention_heads = 8; c.num_key_value_heads = 4;
    c.intermediate_size = 172; c.vocab_size = 512; c.max_position_embeddings = 512;
  } else if (preset == "110m") {
    c.hidden_size = 768; c.num_hidden_layers = 12; c.num_attention_heads = 12; c.num_key_value_heads = 12;
    c.intermediate_size = 2048; c.vocab_size = 32000; c.max_position_embeddings = 1024;
  } else {
    throw UsageError("make-model: unknown --preset '" + preset + "' (tiny or 110m)");
  }
  auto set = [&](const char* flag, int64_t& field) {
    if (!p.get(flag).empty()) field = p.get_int(flag);
  };
  set("dim", c.hidden_size);
  set("layers", c.num_hidden_layers);
  set("heads", c.num_attention_heads);
  if (!p.get("heads").empty()) c.num_key_value_heads = c.num_attention_heads;  // no GQA unless asked
  set("kv-heads", c.num_key_value_heads);
  set("ffn", c.intermediate_size);
  set("vocab", c.vocab_size);
  set("context", c.max_position_embeddings);
  c.rope_theta = p.get_double("rope-theta");
  c.rms_norm_eps = p.get_double("norm-eps");
  c.tie_word_embeddings = p.flag_set("tie");
  MakeModelOptions o;
  o.seed = uint64_t(p.get_int("seed"));
  o.dtype = p.get("dtype");
  o.tokenizer_model = p.get("tokenizer");
  o.max_shard_bytes = uint64_t(p.get_int("shard-mb")) << 20;
  make_random_model(c, p.get("out"), o);
  if (p.flag_set("json")) std::cout << json::parse(c.to_json()).dump() << std::endl;
  else std::printf("wrote %s\n", p.get("out").c_str());
  return 0;
}

}  // namespace layerprune::cli
