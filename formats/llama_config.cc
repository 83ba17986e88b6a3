#include "formats/llama_config.h"

#include <cmath>
#include <limits>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/text_file.h"

namespace layerprune {

using json = nlohmann::json;

namespace {

constexpr const char* kArchitecture = "LlamaForCausalLM";

// "a string (\"4096\")": what a wrong-typed value is, for error messages.
std::string describe(const json& v) {
  std::string text = v.dump();
  if (text.size() > 60) text = text.substr(0, 57) + "...";
  return std::string(v.type_name()) + " (" + text + ")";
}

// Typed field access: absent or null leaves `out` at its default; a wrong type is an InputError.
class Fields {
 public:
  Fields(const json& j, const std::string& source) : j_(j), source_(source) {}

  [[noreturn]] void fail(const std::string& field, const std::string& msg) const {
    throw InputError(source_ + ": field '" + field + "' " + msg);
  }
  const json* get(const std::string& field) const {
    auto it = j_.find(field);
    return it == j_.end() || it->is_null() ? nullptr : &*it;
  }
  void required_int(const std::string& field, int64_t* out) const {
    if (!get(field)) fail(field, "is required but missing");
    optional_int(field, out);
  }
  void optional_int(const std::string& field, int64_t* out) const {
    if (const json* v = get(field)) *out = as_int(field, *v);
  }
  void optional_number(const std::string& field, double* out) const {
    if (const json* v = get(field)) {
      if (!v->is_number()) fail(field, "must be a number, got " + describe(*v));
      *out = v->get<double>();
    }
  }
  void optional_bool(const std::string& field, bool* out) const {
    if (const json* v = get(field)) {
      if (!v->is_boolean()) fail(field, "must be true or false, got " + describe(*v));
      *out = v->get<bool>();
    }
  }
  void optional_string(const std::string& field, std::string* out) const {
    if (const json* v = get(field)) {
      if (!v->is_string()) fail(field, "must be a string, got " + describe(*v));
      *out = v->get<std::string>();
    }
  }
  // An id, or a non-empty list of ids of which the first is kept (Llama 3 lists several end tokens).
  void optional_token_id(const std::string& field, int64_t* out) const {
    const json* v = get(field);
    if (!v) return;
    if (v->is_array()) {
      if (v->empty()) fail(field, "must be a token id or a non-empty list of token ids, got []");
      *out = as_int(field, v->front());
      for (const json& e : *v) as_int(field, e);
    } else {
      *out = as_int(field, *v);
    }
  }

 private:
  int64_t as_int(const std::string& field, const json& v) const {
    // Integers only: a float such as 4096.5 (or 4096.0, which Python would carry as a float) is a broken config.
    if (v.is_number_integer()) {
      if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
        fail(field, "is too large: " + v.dump());
      return v.get<int64_t>();
    }
    fail(field, "must be an integer, got " + describe(v));
  }

  const json& j_;
  const std::string& source_;
};

// The architecture check: HF picks the model class from `architectures`, the config class from `model_type`.
void check_architecture(const Fields& f, const std::string& source) {
  std::string model_type;
  f.optional_string("model_type", &model_type);
  std::vector<std::string> archs;
  if (const json* a = f.get("architectures")) {
    if (!a->is_array()) f.fail("architectures", "must be a list of strings, got " + describe(*a));
    for (const json& e : *a) {
      if (!e.is_string()) f.fail("architectures", "must be a list of strings, got " + describe(*a));
      archs.push_back(e.get<std::string>());
    }
  }
  bool arch_ok = false;
  for (const auto& a : archs) arch_ok |= a == kArchitecture;
  const bool supported = archs.empty() ? model_type == "llama" : arch_ok;
  if (supported) return;
  std::string found = "model_type " + (model_type.empty() ? std::string("(none)") : "'" + model_type + "'") +
                      ", architectures [";
  for (size_t i = 0; i < archs.size(); ++i) found += (i ? ", " : "") + archs[i];
  found += "]";
  throw InputError(source + ": unsupported model (" + found + "); supported: model_type 'llama' with architecture " +
                   kArchitecture);
}

// Options of transformers' LlamaConfig that change the computation and that this project does not implement.
// Runs after validate(), so the sizes are sane.
void reject_unsupported_options(const Fields& f, const LlamaConfig& c) {
  if (const json* v = f.get("rope_scaling"))
    f.fail("rope_scaling", "is not supported (only unscaled RoPE, as in Llama-2, which has null): got " + describe(*v));
  std::string act = "silu";
  f.optional_string("hidden_act", &act);
  if (act != "silu") f.fail("hidden_act", "'" + act + "' is not supported (Llama uses 'silu')");
  for (const char* bias : {"attention_bias", "mlp_bias"}) {
    bool on = false;
    f.optional_bool(bias, &on);
    if (on) f.fail(bias, "= true is not supported (Llama projections have no bias)");
  }
  int64_t head_dim = 0;
  f.optional_int("head_dim", &head_dim);
  if (head_dim != 0 && head_dim != c.head_dim())
    f.fail("head_dim", "= " + std::to_string(head_dim) + " is not supported: it must equal hidden_size / " +
                           "num_attention_heads = " + std::to_string(c.head_dim()));
}

}  // namespace

int64_t LlamaConfig::head_dim() const { return num_attention_heads > 0 ? hidden_size / num_attention_heads : 0; }
int64_t LlamaConfig::kv_dim() const { return num_key_value_heads * head_dim(); }

LlamaConfig LlamaConfig::from_json(const std::string& text, const std::string& source_name) {
  // nlohmann's lexer takes a NUL byte for the end of input, which would let bytes after it go unread.
  if (text.find('\0') != std::string::npos) throw InputError(source_name + ": not valid JSON (it contains a NUL byte)");
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    throw InputError(source_name + ": not valid JSON (" + e.what() + ")");
  }
  if (!j.is_object()) throw InputError(source_name + ": expected a JSON object (an HF config.json), got " + describe(j));
  Fields f(j, source_name);
  check_architecture(f, source_name);

  LlamaConfig c;
  f.required_int("hidden_size", &c.hidden_size);
  f.required_int("intermediate_size", &c.intermediate_size);
  f.required_int("num_hidden_layers", &c.num_hidden_layers);
  f.required_int("num_attention_heads", &c.num_attention_heads);
  f.required_int("vocab_size", &c.vocab_size);
  c.num_key_value_heads = c.num_attention_heads;  // multi-head attention unless grouped-query is asked for
  f.optional_int("num_key_value_heads", &c.num_key_value_heads);
  f.optional_int("max_position_embeddings", &c.max_position_embeddings);
  f.optional_number("rms_norm_eps", &c.rms_norm_eps);
  f.optional_number("rope_theta", &c.rope_theta);
  f.optional_bool("tie_word_embeddings", &c.tie_word_embeddings);
  // transformers >= 4.56 writes "dtype"; older versions "torch_dtype".
  if (f.get("torch_dtype")) f.optional_string("torch_dtype", &c.torch_dtype);
  else f.optional_string("dtype", &c.torch_dtype);
  f.optional_token_id("bos_token_id", &c.bos_token_id);
  f.optional_token_id("eos_token_id", &c.eos_token_id);
  c.validate(source_name);
  reject_unsupported_options(f, c);
  return c;
}

LlamaConfig LlamaConfig::from_file(const std::string& path) { return from_json(read_file(path), path); }

std::string LlamaConfig::to_json() const {
  // Field order as transformers writes it (alphabetical), so a diff against an HF config is readable.
  nlohmann::ordered_json j;
  j["architectures"] = {architecture};
  j["attention_bias"] = false;
  j["bos_token_id"] = bos_token_id;
  j["eos_token_id"] = eos_token_id;
  j["hidden_act"] = "silu";
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["max_position_embeddings"] = max_position_embeddings;
  j["model_type"] = "llama";
  j["num_attention_heads"] = num_attention_heads;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_key_value_heads"] = num_key_value_heads;
  j["rms_norm_eps"] = rms_norm_eps;
  j["rope_scaling"] = nullptr;
  j["rope_theta"] = rope_theta;
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["torch_dtype"] = torch_dtype;
  j["vocab_size"] = vocab_size;
  return j.dump(2) + "\n";
}

void LlamaConfig::validate(const std::string& source_name) const {
  auto fail = [&](const std::string& msg) { throw InputError(source_name + ": " + msg); };
  const std::pair<const char*, int64_t> sizes[] = {
      {"hidden_size", hidden_size},
      {"intermediate_size", intermediate_size},
      {"num_hidden_layers", num_hidden_layers},
      {"num_attention_heads", num_attention_heads},
      {"num_key_value_heads", num_key_value_heads},
      {"vocab_size", vocab_size},
      {"max_position_embeddings", max_position_embeddings}};
  for (const auto& [name, v] : sizes) {
    if (v <= 0) fail(std::string(name) + " must be positive, got " + std::to_string(v));
    if (v > std::numeric_limits<int32_t>::max()) fail(std::string(name) + " = " + std::to_string(v) + " is too large");
  }
  if (hidden_size % num_attention_heads != 0)
    fail("num_attention_heads (" + std::to_string(num_attention_heads) + ") must divide hidden_size (" +
         std::to_string(hidden_size) + ")");
  if (num_attention_heads % num_key_value_heads != 0)
    fail("num_key_value_heads (" + std::to_string(num_key_value_heads) + ") must divide num_attention_heads (" +
         std::to_string(num_attention_heads) + ")");
  if (head_dim() % 2 != 0)
    fail("head_dim = hidden_size / num_attention_heads = " + std::to_string(head_dim()) +
         " must be even (RoPE rotates pairs of dimensions)");
  if (!(rms_norm_eps > 0) || !std::isfinite(rms_norm_eps))
    fail("rms_norm_eps must be a positive number, got " + std::to_string(rms_norm_eps));
  if (!(rope_theta > 0) || !std::isfinite(rope_theta))
    fail("rope_theta must be a positive number, got " + std::to_string(rope_theta));
  if (torch_dtype != "float32" && torch_dtype != "float16" && torch_dtype != "bfloat16")
    fail("torch_dtype '" + torch_dtype + "' is not supported (float32, float16 or bfloat16)");
  if (architecture != kArchitecture)
    fail("architecture '" + architecture + "' is not supported (" + kArchitecture + ")");
}

bool operator==(const LlamaConfig& a, const LlamaConfig& b) {
  return a.architecture == b.architecture && a.hidden_size == b.hidden_size &&
         a.intermediate_size == b.intermediate_size && a.num_hidden_layers == b.num_hidden_layers &&
         a.num_attention_heads == b.num_attention_heads && a.num_key_value_heads == b.num_key_value_heads &&
         a.vocab_size == b.vocab_size && a.max_position_embeddings == b.max_position_embeddings &&
         a.rms_norm_eps == b.rms_norm_eps && a.rope_theta == b.rope_theta &&
         a.tie_word_embeddings == b.tie_word_embeddings && a.torch_dtype == b.torch_dtype &&
         a.bos_token_id == b.bos_token_id && a.eos_token_id == b.eos_token_id;
}

HeadSplit split_heads(const LlamaConfig& c, int tp) {
  auto n = [](int64_t v) { return std::to_string(v); };
  const int64_t H = c.num_attention_heads, KV = c.num_key_value_heads, F = c.intermediate_size;
  if (tp < 1) throw InputError("tensor parallelism needs at least 1 rank, got " + n(tp));
  if (H % tp != 0)
    throw InputError("tensor parallelism over " + n(tp) + " ranks needs the " + n(H) +
                     " attention heads to split evenly (" + n(H) + " % " + n(tp) + " = " + n(H % tp) + ")");
  HeadSplit s;
  s.heads_per_rank = H / tp;
  if (KV % tp == 0) {
    s.kv_heads_per_rank = KV / tp;
  } else if (tp % KV == 0) {
    s.kv_heads_per_rank = 1;
    s.kv_replicated = true;
  } else {
    throw InputError("tensor parallelism over " + n(tp) + " ranks cannot split " + n(KV) +
                     " key/value heads: KV heads must divide by the TP size (" + n(KV) + " % " + n(tp) + " = " +
                     n(KV % tp) + ") or the TP size by the KV heads (" + n(tp) + " % " + n(KV) + " = " +
                     n(tp % KV) + ")");
  }
  if (F < tp) throw InputError("tensor parallelism over " + n(tp) + " ranks: only " + n(F) + " FFN features");
  return s;
}

}  // namespace layerprune
