#include "formats/llama_config.h"

#include <cmath>
#include <limits>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "formats/json_input.h"
#include "common/text_file.h"

namespace layerprune {

using json = nlohmann::json;

namespace {

// The families: transformers' model_type and the causal-LM class of each.
struct Family {
  const char* model_type;
  const char* architecture;
};
constexpr Family kFamilies[] = {
    {"llama", "LlamaForCausalLM"}, {"mistral", "MistralForCausalLM"}, {"qwen2", "Qwen2ForCausalLM"}};

const Family* family_of_type(const std::string& model_type) {
  for (const Family& f : kFamilies)
    if (model_type == f.model_type) return &f;
  return nullptr;
}
const Family* family_of_architecture(const std::string& architecture) {
  for (const Family& f : kFamilies)
    if (architecture == f.architecture) return &f;
  return nullptr;
}
std::string supported_families() {
  std::string s;
  for (const Family& f : kFamilies) s += std::string(s.empty() ? "" : ", ") + f.model_type + " (" + f.architecture + ")";
  return s;
}

// "a string (\"4096\")": what a wrong-typed value is, for error messages.
std::string describe(const json& v) {
  std::string text = v.dump();
  if (text.size() > 60) text = text.substr(0, 57) + "...";
  return std::string(v.type_name()) + " (" + text + ")";
}

// Typed field access: absent or null leaves `out` at its default; a wrong type is an InputError.
class Fields {
 public:
  // `prefix` names the object the fields are in ("rope_scaling."), for messages.
  Fields(const json& j, const std::string& source, std::string prefix = "")
      : j_(j), source_(source), prefix_(std::move(prefix)) {}

  [[noreturn]] void fail(const std::string& field, const std::string& msg) const {
    throw InputError(source_ + ": field '" + prefix_ + field + "' " + msg);
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
  std::string prefix_;
};

// The family: HF picks the model class from `architectures`, the config class from `model_type`; when both
// are given they must name the same family.
const Family& check_family(const Fields& f, const std::string& source) {
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
  const Family* by_type = model_type.empty() ? nullptr : family_of_type(model_type);
  const Family* by_arch = nullptr;
  bool archs_ok = !archs.empty();
  for (const auto& a : archs) {
    const Family* fam = family_of_architecture(a);
    if (!fam || (by_arch && fam != by_arch)) archs_ok = false;
    by_arch = fam ? fam : by_arch;
  }
  const Family* family = archs.empty() ? by_type : (archs_ok ? by_arch : nullptr);
  if (family && (model_type.empty() || by_type == family)) return *family;
  std::string found = "model_type " + (model_type.empty() ? std::string("(none)") : "'" + model_type + "'") +
                      ", architectures [";
  for (size_t i = 0; i < archs.size(); ++i) found += (i ? ", " : "") + archs[i];
  found += "]";
  throw InputError(source + ": unsupported model (" + found + "); supported: " + supported_families() +
                   ", with model_type and architectures naming the same family");
}

// RoPE: transformers 5.x writes `rope_parameters` {rope_type, rope_theta, scaling fields}; 4.x writes
// top-level `rope_theta` and `rope_scaling` (null, or {rope_type or the older "type", scaling fields}).
void parse_rope(const Fields& f, const std::string& source, LlamaConfig* c) {
  f.optional_number("rope_theta", &c->rope_theta);
  const json* params = f.get("rope_parameters");
  const json* scaling = f.get("rope_scaling");
  if (params && scaling)
    f.fail("rope_scaling", "and 'rope_parameters' are both set: a config has one or the other "
                           "(transformers 4.x writes rope_scaling, 5.x rope_parameters)");
  const char* where = params ? "rope_parameters" : "rope_scaling";
  const json* spec = params ? params : scaling;
  if (!spec) return;  // 4.x, unscaled
  if (!spec->is_object()) f.fail(where, "must be an object, got " + describe(*spec));
  Fields r(*spec, source, std::string(where) + ".");
  if (params) r.optional_number("rope_theta", &c->rope_theta);
  std::string type;
  if (r.get("rope_type")) r.optional_string("rope_type", &type);
  else r.optional_string("type", &type);  // transformers before 4.37
  if (type.empty()) type = "default";
  if (type == "default") {
    c->rope_type = "default";
  } else if (type == "linear") {
    c->rope_type = type;
    if (!r.get("factor")) r.fail("factor", "is required for rope_type 'linear' but missing");
    r.optional_number("factor", &c->rope_factor);
  } else if (type == "llama3") {
    c->rope_type = type;
    for (const char* k : {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"})
      if (!r.get(k)) r.fail(k, "is required for rope_type 'llama3' but missing");
    r.optional_number("factor", &c->rope_factor);
    r.optional_number("low_freq_factor", &c->rope_low_freq_factor);
    r.optional_number("high_freq_factor", &c->rope_high_freq_factor);
    r.optional_int("original_max_position_embeddings", &c->rope_original_max_position_embeddings);
  } else {
    r.fail(r.get("rope_type") ? "rope_type" : "type",
           "'" + type + "' is not supported (supported: default, linear, llama3; not yarn, dynamic, longrope, ...)");
  }
}

// Options that change the computation and that this project does not implement. Runs after validate(), so
// the sizes are sane.
void reject_unsupported_options(const Fields& f, const LlamaConfig& c) {
  std::string act = "silu";
  f.optional_string("hidden_act", &act);
  if (act != "silu") f.fail("hidden_act", "'" + act + "' is not supported (these families use 'silu')");
  bool on = false;
  if (c.model_type != "llama") {  // only LlamaConfig has the flag; Qwen2's biases are fixed, Mistral has none
    f.optional_bool("attention_bias", &on);
    if (on) f.fail("attention_bias", "= true is not supported for " + c.model_type + " (only llama has the option)");
  }
  on = false;
  f.optional_bool("mlp_bias", &on);
  if (on) f.fail("mlp_bias", "= true is not supported (the MLP projections have no bias here)");
  int64_t head_dim = 0;
  f.optional_int("head_dim", &head_dim);
  if (head_dim != 0 && head_dim != c.head_dim())
    f.fail("head_dim", "= " + std::to_string(head_dim) + " is not supported: it must equal hidden_size / " +
                           "num_attention_heads = " + std::to_string(c.head_dim()));
  if (c.model_type == "qwen2") {
    on = false;
    f.optional_bool("use_sliding_window", &on);
    if (on) f.fail("use_sliding_window", "= true is not supported for qwen2 (Qwen2's per-layer sliding window, "
                                         "max_window_layers, is not implemented)");
    // transformers 5.x lists each layer's attention; a sliding one would need the window above.
    if (const json* types = f.get("layer_types")) {
      if (!types->is_array()) f.fail("layer_types", "must be a list of strings, got " + describe(*types));
      for (const json& t : *types)
        if (t != "full_attention")
          f.fail("layer_types", "lists " + describe(t) + ": only 'full_attention' layers are supported");
    }
  } else if (const json* types = f.get("layer_types")) {
    if (!types->is_array()) f.fail("layer_types", "must be a list of strings, got " + describe(*types));
    const std::string want = c.sliding_window > 0 ? "sliding_attention" : "full_attention";
    for (const json& t : *types)
      if (t != want) f.fail("layer_types", "lists " + describe(t) + ": every layer must be '" + want + "' here");
  }
}

}  // namespace

int64_t LlamaConfig::head_dim() const { return num_attention_heads > 0 ? hidden_size / num_attention_heads : 0; }
int64_t LlamaConfig::kv_dim() const { return num_key_value_heads * head_dim(); }

LlamaConfig LlamaConfig::from_json(const std::string& text, const std::string& source_name) {
  const json j = parse_json_input(text, source_name);
  if (!j.is_object()) throw InputError(source_name + ": expected a JSON object (an HF config.json), got " + describe(j));
  Fields f(j, source_name);
  const Family& family = check_family(f, source_name);

  LlamaConfig c;
  c.model_type = family.model_type;
  c.architecture = family.architecture;
  if (c.model_type == "llama") f.optional_bool("attention_bias", &c.attention_bias);
  f.required_int("hidden_size", &c.hidden_size);
  f.required_int("intermediate_size", &c.intermediate_size);
  f.required_int("num_hidden_layers", &c.num_hidden_layers);
  f.required_int("num_attention_heads", &c.num_attention_heads);
  f.required_int("vocab_size", &c.vocab_size);
  c.num_key_value_heads = c.num_attention_heads;  // multi-head attention unless grouped-query is asked for
  f.optional_int("num_key_value_heads", &c.num_key_value_heads);
  f.optional_int("max_position_embeddings", &c.max_position_embeddings);
  f.optional_number("rms_norm_eps", &c.rms_norm_eps);
  parse_rope(f, source_name, &c);
  if (c.model_type == "mistral") f.optional_int("sliding_window", &c.sliding_window);  // null: no window
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
  if (model_type == "llama") j["attention_bias"] = attention_bias;
  j["bos_token_id"] = bos_token_id;
  j["eos_token_id"] = eos_token_id;
  j["hidden_act"] = "silu";
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["max_position_embeddings"] = max_position_embeddings;
  j["model_type"] = model_type;
  j["num_attention_heads"] = num_attention_heads;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_key_value_heads"] = num_key_value_heads;
  j["rms_norm_eps"] = rms_norm_eps;
  if (rope_type == "default") {
    j["rope_scaling"] = nullptr;
  } else {
    nlohmann::ordered_json r;
    r["factor"] = rope_factor;
    if (rope_type == "llama3") {
      r["high_freq_factor"] = rope_high_freq_factor;
      r["low_freq_factor"] = rope_low_freq_factor;
      r["original_max_position_embeddings"] = rope_original_max_position_embeddings;
    }
    r["rope_type"] = rope_type;
    j["rope_scaling"] = r;
  }
  j["rope_theta"] = rope_theta;
  if (model_type == "mistral") j["sliding_window"] = sliding_window > 0 ? json(sliding_window) : json(nullptr);
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["torch_dtype"] = torch_dtype;
  if (model_type == "qwen2") j["use_sliding_window"] = false;
  j["vocab_size"] = vocab_size;
  return j.dump(2) + "\n";
}

std::vector<double> LlamaConfig::rope_inverse_frequencies() const {
  const int64_t hd = head_dim();
  std::vector<double> inv(size_t(hd / 2));
  for (int64_t i = 0; i < hd / 2; ++i) inv[size_t(i)] = std::pow(rope_theta, -double(2 * i) / double(hd));
  if (rope_type == "linear") {
    for (double& w : inv) w /= rope_factor;  // angle (p / factor) w = p (w / factor)
  } else if (rope_type == "llama3") {
    // transformers' _compute_llama3_parameters: wavelengths longer than the original context / low_freq_factor
    // are slowed by `factor`, those shorter than context / high_freq_factor kept, and the band between
    // interpolated linearly in context / wavelength.
    const double old_context = double(rope_original_max_position_embeddings);
    const double low_freq_wavelen = old_context / rope_low_freq_factor;
    const double high_freq_wavelen = old_context / rope_high_freq_factor;
    for (double& w : inv) {
      const double wavelen = 2 * M_PI / w;
      if (wavelen > low_freq_wavelen) {
        w /= rope_factor;
      } else if (wavelen >= high_freq_wavelen) {
        const double smooth = (old_context / wavelen - rope_low_freq_factor) /
                              (rope_high_freq_factor - rope_low_freq_factor);
        w = (1 - smooth) * w / rope_factor + smooth * w;
      }
    }
  }
  return inv;
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
  const Family* family = family_of_type(model_type);
  if (!family || architecture != family->architecture)
    fail("model_type '" + model_type + "' with architecture '" + architecture + "' is not supported (" +
         supported_families() + ")");
  auto num = [](double v) { return std::to_string(v); };
  if (rope_type == "linear" || rope_type == "llama3") {
    if (!(rope_factor > 0) || !std::isfinite(rope_factor))
      fail("RoPE scaling factor must be a positive number, got " + num(rope_factor));
  } else if (rope_type != "default") {
    fail("rope_type '" + rope_type + "' is not supported (default, linear, llama3)");
  }
  if (rope_type == "llama3") {
    if (!(rope_low_freq_factor > 0) || !std::isfinite(rope_low_freq_factor))
      fail("RoPE low_freq_factor must be a positive number, got " + num(rope_low_freq_factor));
    // The interpolation divides by their difference.
    if (!(rope_high_freq_factor > rope_low_freq_factor) || !std::isfinite(rope_high_freq_factor))
      fail("RoPE high_freq_factor (" + num(rope_high_freq_factor) + ") must be larger than low_freq_factor (" +
           num(rope_low_freq_factor) + ")");
    if (rope_original_max_position_embeddings <= 0 ||
        rope_original_max_position_embeddings > std::numeric_limits<int32_t>::max())
      fail("RoPE original_max_position_embeddings must be positive, got " +
           std::to_string(rope_original_max_position_embeddings));
  }
  if (sliding_window < 0) fail("sliding_window must be positive or null, got " + std::to_string(sliding_window));
  if (sliding_window > 0 && model_type != "mistral") fail("sliding_window is only supported for mistral");
  if (attention_bias && model_type != "llama") fail("attention_bias is only an option of llama");
}

bool operator==(const LlamaConfig& a, const LlamaConfig& b) {
  return a.model_type == b.model_type && a.architecture == b.architecture && a.hidden_size == b.hidden_size &&
         a.intermediate_size == b.intermediate_size && a.num_hidden_layers == b.num_hidden_layers &&
         a.num_attention_heads == b.num_attention_heads && a.num_key_value_heads == b.num_key_value_heads &&
         a.vocab_size == b.vocab_size && a.max_position_embeddings == b.max_position_embeddings &&
         a.rms_norm_eps == b.rms_norm_eps && a.rope_theta == b.rope_theta &&
         a.tie_word_embeddings == b.tie_word_embeddings && a.torch_dtype == b.torch_dtype &&
         a.bos_token_id == b.bos_token_id && a.eos_token_id == b.eos_token_id && a.rope_type == b.rope_type &&
         a.rope_factor == b.rope_factor && a.rope_low_freq_factor == b.rope_low_freq_factor &&
         a.rope_high_freq_factor == b.rope_high_freq_factor &&
         a.rope_original_max_position_embeddings == b.rope_original_max_position_embeddings &&
         a.sliding_window == b.sliding_window && a.attention_bias == b.attention_bias;
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
