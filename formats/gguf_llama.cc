#include "formats/gguf_llama.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/progress.h"
#include "common/text_file.h"
#include "formats/llama_tensors.h"
#include "formats/safetensors.h"

namespace layerprune {

using json = nlohmann::json;

namespace {

std::string in_quotes(const std::string& s) { return "'" + s + "'"; }

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The shortest decimal that reads back as the same float32 (GGUF stores eps 1e-5 as a float32, which as a
// double is 9.99999974738e-06; config.json should say 1e-05, as the Hugging Face original does).
double shortest_float(double v) {
  const float f = float(v);
  char buf[64];
  for (int digits = 1; digits <= 9; ++digits) {
    std::snprintf(buf, sizeof buf, "%.*g", digits, double(f));
    if (std::strtof(buf, nullptr) == f) return std::strtod(buf, nullptr);
  }
  return v;
}

// `llama.*` keys this reader understands; anything else under `llama.` is refused by name.
const std::set<std::string> kLlamaKeys = {
    "llama.context_length", "llama.embedding_length", "llama.block_count", "llama.feed_forward_length",
    "llama.attention.head_count", "llama.attention.head_count_kv", "llama.attention.layer_norm_rms_epsilon",
    "llama.rope.freq_base", "llama.rope.dimension_count", "llama.attention.key_length",
    "llama.attention.value_length", "llama.vocab_size", "llama.expert_count", "llama.expert_used_count",
    "llama.rope.scaling.type", "llama.rope.scaling.factor",
};

}  // namespace

LlamaConfig gguf_llama_config(const GgufFile& f) {
  const std::string& path = f.path();
  auto fail = [&](const std::string& key, const std::string& msg) -> void {
    throw InputError(path + ": key " + in_quotes(key) + ": " + msg);
  };
  const std::string arch = f.get_string("general.architecture");
  if (arch != "llama")
    throw InputError(path + ": general.architecture is '" + arch + "'; only 'llama' models can be read");

  for (const GgufValue& v : f.metadata())
    if (v.key().rfind("llama.", 0) == 0 && !kLlamaKeys.count(v.key()))
      fail(v.key(), "is not understood by this reader (" + v.describe() +
                        "); refusing rather than ignoring what it says about the model");

  LlamaConfig c;
  c.num_hidden_layers = f.get_int("llama.block_count");
  c.hidden_size = f.get_int("llama.embedding_length");
  c.intermediate_size = f.get_int("llama.feed_forward_length");
  c.num_attention_heads = f.get_int("llama.attention.head_count");
  c.num_key_value_heads = f.find("llama.attention.head_count_kv") ? f.get_int("llama.attention.head_count_kv")
                                                                  : c.num_attention_heads;
  c.rms_norm_eps = shortest_float(f.get_double("llama.attention.layer_norm_rms_epsilon"));
  // llama.cpp's default base when the key is absent, which is also Hugging Face's.
  c.rope_theta = f.find("llama.rope.freq_base") ? shortest_float(f.get_double("llama.rope.freq_base")) : 10000.0;
  c.max_position_embeddings = f.get_int("llama.context_length");
  c.torch_dtype = "float32";
  // Sizes first, so that head_dim() below is meaningful.
  if (c.num_attention_heads <= 0 || c.hidden_size <= 0 || c.hidden_size % c.num_attention_heads != 0)
    fail("llama.attention.head_count", std::to_string(c.num_attention_heads) + " heads do not divide embedding_length " +
                                           std::to_string(c.hidden_size));
  const int64_t head_dim = c.hidden_size / c.num_attention_heads;
  for (const char* key : {"llama.rope.dimension_count", "llama.attention.key_length", "llama.attention.value_length"})
    if (f.find(key) && f.get_int(key) != head_dim)
      fail(key, "= " + std::to_string(f.get_int(key)) + " is not supported: the model needs embedding_length / "
                "head_count = " + std::to_string(head_dim));
  for (const char* key : {"llama.expert_count", "llama.expert_used_count"})
    if (f.find(key) && f.get_int(key) != 0)
      fail(key, "= " + std::to_string(f.get_int(key)) + ": mixture-of-experts models are not supported");
  if (const GgufValue* v = f.find("llama.rope.scaling.type"))
    if (v->as_string() != "none")
      fail("llama.rope.scaling.type", "'" + v->as_string() + "': RoPE scaling is not supported");
  if (const GgufValue* v = f.find("llama.rope.scaling.factor"))
    if (v->as_double() != 0.0 && v->as_double() != 1.0)
      fail("llama.rope.scaling.factor", std::to_string(v->as_double()) + ": RoPE scaling is not supported");

  // Vocabulary: the token list and the embedding must agree (either may stand alone).
  const GgufTensor& embd = f.tensor("token_embd.weight");
  if (embd.dims.size() != 2)
    throw InputError(path + ": tensor 'token_embd.weight' has " + std::to_string(embd.dims.size()) +
                     " dimensions, expected 2");
  c.vocab_size = embd.dims[1];
  if (const GgufValue* tokens = f.find("tokenizer.ggml.tokens")) {
    const uint64_t n = tokens->size();
    if (n != uint64_t(c.vocab_size))
      fail("tokenizer.ggml.tokens", "lists " + std::to_string(n) + " tokens, but token_embd.weight has " +
                                        std::to_string(c.vocab_size) + " rows");
  }
  if (f.find("llama.vocab_size") && f.get_int("llama.vocab_size") != c.vocab_size)
    fail("llama.vocab_size", "= " + std::to_string(f.get_int("llama.vocab_size")) + ", but token_embd.weight has " +
                                 std::to_string(c.vocab_size) + " rows");
  c.tie_word_embeddings = f.find_tensor("output.weight") == nullptr;
  if (f.find("tokenizer.ggml.bos_token_id")) c.bos_token_id = f.get_int("tokenizer.ggml.bos_token_id");
  if (f.find("tokenizer.ggml.eos_token_id")) c.eos_token_id = f.get_int("tokenizer.ggml.eos_token_id");
  for (const char* key : {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"})
    if (f.find(key) && (f.get_int(key) < 0 || f.get_int(key) >= c.vocab_size))
      fail(key, "= " + std::to_string(f.get_int(key)) + " is outside the vocabulary of " + std::to_string(c.vocab_size));
  c.validate(path);
  return c;
}

std::string gguf_to_hf_tensor_name(const std::string& name) {
  static const std::unordered_map<std::string, std::string> top = {
      {"token_embd.weight", "model.embed_tokens.weight"},
      {"output_norm.weight", "model.norm.weight"},
      {"output.weight", "lm_head.weight"},
  };
  static const std::unordered_map<std::string, std::string> per_layer = {
      {"attn_norm.weight", "input_layernorm.weight"},     {"attn_q.weight", "self_attn.q_proj.weight"},
      {"attn_k.weight", "self_attn.k_proj.weight"},       {"attn_v.weight", "self_attn.v_proj.weight"},
      {"attn_output.weight", "self_attn.o_proj.weight"},  {"ffn_norm.weight", "post_attention_layernorm.weight"},
      {"ffn_gate.weight", "mlp.gate_proj.weight"},        {"ffn_up.weight", "mlp.up_proj.weight"},
      {"ffn_down.weight", "mlp.down_proj.weight"},
  };
  if (auto it = top.find(name); it != top.end()) return it->second;
  if (name.rfind("blk.", 0) != 0) return "";
  size_t i = 4;
  while (i < name.size() && name[i] >= '0' && name[i] <= '9') ++i;
  // digits, no leading zero (so each layer has one spelling), then ".rest"
  if (i == 4 || i - 4 > 9 || (name[4] == '0' && i > 5) || i >= name.size() || name[i] != '.') return "";
  auto it = per_layer.find(name.substr(i + 1));
  if (it == per_layer.end()) return "";
  return "model.layers." + name.substr(4, i - 4) + "." + it->second;
}

void unpermute_rope_rows(const float* src, float* dst, int64_t rows, int64_t cols, int64_t heads) {
  const int64_t hd = rows / heads, half = hd / 2;
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < half; ++i)
      for (int64_t j = 0; j < 2; ++j) {
        const float* from = src + (h * hd + 2 * i + j) * cols;
        std::copy(from, from + cols, dst + (h * hd + j * half + i) * cols);
      }
}

std::vector<float> gguf_llama_tensor(const GgufFile& f, const GgufTensor& t, const LlamaConfig& c) {
  std::vector<float> w = f.dequantize(t);
  const bool q = ends_with(t.name, ".attn_q.weight"), k = ends_with(t.name, ".attn_k.weight");
  if (q || k) {
    const int64_t heads = q ? c.num_attention_heads : c.num_key_value_heads;
    const std::vector<int64_t> shape = t.shape();
    if (shape.size() != 2 || shape[0] != heads * c.head_dim())
      throw InputError(f.path() + ": tensor " + in_quotes(t.name) + " has shape " + format_shape(shape) +
                       ", expected [" + std::to_string(heads * c.head_dim()) + ", " + std::to_string(c.hidden_size) + "]");
    std::vector<float> hf(w.size());
    unpermute_rope_rows(w.data(), hf.data(), shape[0], shape[1], heads);
    return hf;
  }
  return w;
}

// ------------------------------------------------------------------------------------------------
// Tokenizer
// ------------------------------------------------------------------------------------------------

namespace {

// llama.cpp's token types (llama_token_type / gguf-py's TokenType).
enum TokenType : int64_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

// The pre-tokenizer Hugging Face's own tokenizer.json has for each supported tokenizer.ggml.pre value.
json pre_tokenizer_for(const std::string& pre, const std::string& path) {
  const json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  if (pre == "smollm")  // HuggingFaceTB/SmolLM2-*: digits split one by one, then GPT-2's byte-level regex
    return {{"type", "Sequence"},
            {"pretokenizers", json::array({{{"type", "Digits"}, {"individual_digits", true}}, byte_level})}};
  if (pre == "gpt-2") return byte_level;  // GPT-2's regex, which ByteLevel(use_regex) applies
  throw InputError(path + ": key 'tokenizer.ggml.pre': '" + pre +
                   "' is not supported (supported: smollm, gpt-2); its pre-tokenizer regex would have to be written "
                   "into tokenizer.json and is not known here");
}

std::string json_string(const std::string& s, const std::string& path, const std::string& what) {
  try {
    return json(s).dump();
  } catch (const json::type_error&) {
    throw InputError(path + ": " + what + " is not valid UTF-8");
  }
}

}  // namespace

HfTokenizerFiles gguf_hf_tokenizer(const GgufFile& f, const LlamaConfig& c) {
  const std::string& path = f.path();
  const GgufTokenizerMetadata meta = read_gguf_tokenizer(f);
  if (meta.model != "gpt2")
    throw InputError(path + ": key 'tokenizer.ggml.model': '" + meta.model +
                     "' is not supported; only byte-level BPE vocabularies ('gpt2') are converted");
  if (meta.pre.empty())
    throw InputError(path + ": key 'tokenizer.ggml.pre' is missing: the pre-tokenizer tokenizer.json needs is not "
                            "known (supported: smollm, gpt-2)");
  const json pre_tokenizer = pre_tokenizer_for(meta.pre, path);
  const std::vector<std::string>& tokens = meta.tokens;
  const std::vector<std::string>& merges = meta.merges;
  std::vector<int64_t> types = meta.token_types;
  if (types.empty()) types.assign(tokens.size(), kNormal);

  // The vocab in id order, written by hand: an ordered JSON object of 50k keys is quadratic to build.
  std::unordered_map<std::string, size_t> seen;
  std::string vocab = "{";
  for (size_t id = 0; id < tokens.size(); ++id) {
    auto [it, fresh] = seen.emplace(tokens[id], id);
    if (!fresh)
      throw InputError(path + ": key 'tokenizer.ggml.tokens': token " + std::to_string(id) + " " +
                       json_string(tokens[id], path, "a token") + " repeats token " + std::to_string(it->second));
    if (id) vocab += ",";
    vocab += json_string(tokens[id], path, "tokenizer.ggml.tokens[" + std::to_string(id) + "]") + ":" + std::to_string(id);
  }
  vocab += "}";
  std::string merge_list = "[";
  for (size_t i = 0; i < merges.size(); ++i) {
    const size_t space = merges[i].find(' ');
    if (space == std::string::npos || space == 0 || space + 1 == merges[i].size() ||
        merges[i].find(' ', space + 1) != std::string::npos)
      throw InputError(path + ": key 'tokenizer.ggml.merges': merge " + std::to_string(i) + " " +
                       json_string(merges[i], path, "a merge") + " is not two tokens separated by one space");
    if (i) merge_list += ",";
    merge_list += json_string(merges[i], path, "tokenizer.ggml.merges[" + std::to_string(i) + "]");
  }
  merge_list += "]";

  // Control and user-defined tokens are matched before BPE, as Hugging Face's added tokens.
  json added = json::array();
  for (size_t id = 0; id < tokens.size(); ++id)
    if (types[id] == kControl || types[id] == kUserDefined)
      added.push_back({{"id", id}, {"content", tokens[id]}, {"single_word", false}, {"lstrip", false},
                       {"rstrip", false}, {"normalized", false}, {"special", types[id] == kControl}});

  const bool add_bos = meta.add_bos_token.value_or(false), add_eos = meta.add_eos_token.value_or(false);
  if (meta.add_space_prefix.value_or(false))
    throw InputError(path + ": key 'tokenizer.ggml.add_space_prefix' is true; a byte-level BPE tokenizer with a "
                            "space prefix is not supported");
  if (c.vocab_size != int64_t(tokens.size()))
    throw InputError(path + ": the config's vocab_size " + std::to_string(c.vocab_size) + " differs from the " +
                     std::to_string(tokens.size()) + " tokens of tokenizer.ggml.tokens");
  // Without tokenizer.ggml.{bos,eos}_token_id the config has Llama's defaults (1, 2), which a tiny vocabulary lacks.
  for (const int64_t id : {c.bos_token_id, c.eos_token_id})
    if (id < 0 || uint64_t(id) >= tokens.size())
      throw InputError(path + ": the config's BOS/EOS token id " + std::to_string(id) + " is outside the " +
                       std::to_string(tokens.size()) + " tokens of tokenizer.ggml.tokens (set "
                       "tokenizer.ggml.bos_token_id and eos_token_id)");
  const std::string bos = tokens[size_t(c.bos_token_id)], eos = tokens[size_t(c.eos_token_id)];

  // BOS/EOS added by the post-processor when the metadata asks for it; otherwise ByteLevel's, as SmolLM2's
  // own tokenizer.json has.
  json post;
  if (add_bos || add_eos) {
    json single = json::array(), pair = json::array(), special = json::object();
    auto add_special = [&](const std::string& tok, int64_t id) {
      special[tok] = {{"id", tok}, {"ids", {id}}, {"tokens", {tok}}};
    };
    if (add_bos) {
      single.push_back({{"SpecialToken", {{"id", bos}, {"type_id", 0}}}});
      add_special(bos, c.bos_token_id);
    }
    single.push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
    if (add_eos) {
      single.push_back({{"SpecialToken", {{"id", eos}, {"type_id", 0}}}});
      add_special(eos, c.eos_token_id);
    }
    pair = single;
    if (add_bos) pair.push_back({{"SpecialToken", {{"id", bos}, {"type_id", 1}}}});
    pair.push_back({{"Sequence", {{"id", "B"}, {"type_id", 1}}}});
    if (add_eos) pair.push_back({{"SpecialToken", {{"id", eos}, {"type_id", 1}}}});
    post = {{"type", "TemplateProcessing"}, {"single", single}, {"pair", pair}, {"special_tokens", special}};
  } else {
    post = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}};
  }

  nlohmann::ordered_json head;
  head["version"] = "1.0";
  head["truncation"] = nullptr;
  head["padding"] = nullptr;
  head["added_tokens"] = added;
  head["normalizer"] = nullptr;
  head["pre_tokenizer"] = pre_tokenizer;
  head["post_processor"] = post;
  head["decoder"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}};
  nlohmann::ordered_json model_head;
  model_head["type"] = "BPE";
  model_head["dropout"] = nullptr;
  model_head["unk_token"] = nullptr;
  model_head["continuing_subword_prefix"] = nullptr;
  model_head["end_of_word_suffix"] = nullptr;
  model_head["fuse_unk"] = false;
  model_head["byte_fallback"] = false;
  model_head["ignore_merges"] = false;
  std::string model_text = model_head.dump();
  model_text.pop_back();  // '}'
  model_text += ",\"vocab\":" + vocab + ",\"merges\":" + merge_list + "}";
  std::string text = head.dump();
  text.pop_back();
  text += ",\"model\":" + model_text + "}\n";

  nlohmann::ordered_json config;
  config["add_bos_token"] = add_bos;
  config["add_eos_token"] = add_eos;
  config["bos_token"] = bos;
  config["eos_token"] = eos;
  if (meta.padding_token_id) config["pad_token"] = tokens[size_t(*meta.padding_token_id)];
  if (meta.unknown_token_id) config["unk_token"] = tokens[size_t(*meta.unknown_token_id)];
  config["clean_up_tokenization_spaces"] = false;
  config["model_max_length"] = c.max_position_embeddings;
  config["tokenizer_class"] = "GPT2Tokenizer";
  if (!meta.chat_template.empty()) {
    (void)json_string(meta.chat_template, path, "key 'tokenizer.chat_template'");  // dump() below throws on non-UTF-8
    config["chat_template"] = meta.chat_template;
  }
  return {text, config.dump(2) + "\n"};
}

// ------------------------------------------------------------------------------------------------
// Conversion
// ------------------------------------------------------------------------------------------------

GgufImport convert_gguf(const std::string& gguf_path, const std::string& out_dir) {
  auto file = GgufFile::open(gguf_path);
  const GgufFile& f = *file;
  GgufImport r;
  r.config = gguf_llama_config(f);
  const LlamaConfig& c = r.config;
  // The tokenizer first: it is cheap, and a vocabulary we cannot write should stop us before the slow part.
  const HfTokenizerFiles tok = gguf_hf_tokenizer(f, c);

  // Every GGUF tensor must map to an expected Hugging Face tensor of the right shape, and vice versa.
  std::unordered_map<std::string, const GgufTensor*> by_hf;
  for (const GgufTensor& t : f.tensors()) {
    const std::string hf = gguf_to_hf_tensor_name(t.name);
    if (hf.empty())
      throw InputError(gguf_path + ": tensor " + in_quotes(t.name) + " (" + t.type_name() + " " +
                       format_shape(t.shape()) + ") has no counterpart in a Hugging Face Llama");
    by_hf[hf] = &t;
  }
  const std::vector<ExpectedTensor> layout = llama_tensor_layout(c);
  std::set<std::string> expected;
  for (const ExpectedTensor& e : layout) {
    expected.insert(e.name);
    auto it = by_hf.find(e.name);
    if (it == by_hf.end())
      throw InputError(gguf_path + ": no tensor for " + in_quotes(e.name) + " (a " +
                       std::to_string(c.num_hidden_layers) + "-layer Llama needs it)");
    if (it->second->shape() != e.shape)
      throw InputError(gguf_path + ": tensor " + in_quotes(it->second->name) + " has shape " +
                       format_shape(it->second->shape()) + " (Hugging Face order), expected " + format_shape(e.shape));
  }
  for (const auto& [hf, t] : by_hf)
    if (!expected.count(hf))
      throw InputError(gguf_path + ": tensor " + in_quotes(t->name) + " does not belong to a " +
                       std::to_string(c.num_hidden_layers) + "-layer Llama");

  // Types before the slow part, so that an unsupported one stops the conversion at once.
  for (const GgufTensor& t : f.tensors())
    if (!ggml_type_info(t.type)->dequantizable)
      throw InputError(gguf_path + ": unsupported tensor type " + t.type_name() + " in tensor " + in_quotes(t.name) +
                       " (convert --gguf dequantises F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K)");

  std::vector<std::vector<float>> data;
  std::vector<TensorToWrite> writes;
  data.reserve(layout.size());
  {
    Progress progress("dequantising " + gguf_path, int64_t(layout.size()), "tensors");
    for (const ExpectedTensor& e : layout) {
      data.push_back(gguf_llama_tensor(f, *by_hf.at(e.name), c));
      writes.push_back({e.name, DType::F32, e.shape, data.back().data(), data.back().size() * sizeof(float)});
      r.parameters += int64_t(data.back().size());
      progress.advance();
    }
  }
  r.tensors = writes.size();

  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) throw InputError(out_dir + ": cannot create directory (" + ec.message() + ")");
  write_safetensors(out_dir + "/model.safetensors", writes, {{"format", "pt"}});
  write_file(out_dir + "/config.json", c.to_json());
  write_file(out_dir + "/tokenizer.json", tok.tokenizer_json);
  write_file(out_dir + "/tokenizer_config.json", tok.tokenizer_config_json);
  return r;
}

}  // namespace layerprune
