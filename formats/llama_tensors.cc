#include "formats/llama_tensors.h"

#include <unordered_set>

#include "common/error.h"

namespace layerprune {

std::vector<ExpectedTensor> llama_tensor_layout(const LlamaConfig& c) {
  const int64_t V = c.vocab_size, D = c.hidden_size, F = c.intermediate_size;
  const int64_t q_dim = c.num_attention_heads * c.head_dim(), kv_dim = c.kv_dim();
  std::vector<ExpectedTensor> out;
  out.push_back({"model.embed_tokens.weight", {V, D}});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    out.push_back({p + "input_layernorm.weight", {D}});
    out.push_back({p + "self_attn.q_proj.weight", {q_dim, D}});
    out.push_back({p + "self_attn.k_proj.weight", {kv_dim, D}});
    out.push_back({p + "self_attn.v_proj.weight", {kv_dim, D}});
    if (c.qkv_bias()) {  // Qwen2, Llama with attention_bias
      out.push_back({p + "self_attn.q_proj.bias", {q_dim}});
      out.push_back({p + "self_attn.k_proj.bias", {kv_dim}});
      out.push_back({p + "self_attn.v_proj.bias", {kv_dim}});
    }
    out.push_back({p + "self_attn.o_proj.weight", {D, q_dim}});
    if (c.o_bias()) out.push_back({p + "self_attn.o_proj.bias", {D}});
    out.push_back({p + "post_attention_layernorm.weight", {D}});
    out.push_back({p + "mlp.gate_proj.weight", {F, D}});
    out.push_back({p + "mlp.up_proj.weight", {F, D}});
    out.push_back({p + "mlp.down_proj.weight", {D, F}});
  }
  out.push_back({"model.norm.weight", {D}});
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {V, D}});
  return out;
}

namespace {

bool is_rotary_buffer(const std::string& name) {
  static const std::string kSuffix = ".rotary_emb.inv_freq";
  return name.size() >= kSuffix.size() && name.compare(name.size() - kSuffix.size(), kSuffix.size(), kSuffix) == 0;
}

}  // namespace

void check_llama_checkpoint(const Checkpoint& ckpt, const LlamaConfig& config) {
  std::vector<std::string> problems;
  std::unordered_set<std::string> expected;
  for (const ExpectedTensor& e : llama_tensor_layout(config)) {
    expected.insert(e.name);
    const TensorView* t = ckpt.find(e.name);
    if (!t) {
      problems.push_back(ckpt.path() + ": missing tensor '" + e.name + "' (expected shape " + format_shape(e.shape) +
                         ")");
      continue;
    }
    if (t->shape != e.shape)
      problems.push_back(t->file + ": tensor '" + e.name + "' has shape " + format_shape(t->shape) + ", expected " +
                         format_shape(e.shape));
    if (t->dtype != DType::F32 && t->dtype != DType::F16 && t->dtype != DType::BF16)
      problems.push_back(t->file + ": tensor '" + e.name + "' has dtype " + dtype_name(t->dtype) +
                         ", expected F32, F16 or BF16");
  }
  for (const std::string& name : ckpt.names()) {
    if (expected.count(name) || is_rotary_buffer(name)) continue;
    std::string msg = ckpt.tensor(name).file + ": unexpected tensor '" + name + "'";
    if (name == "lm_head.weight") msg += " (the config ties the output head to model.embed_tokens.weight)";
    problems.push_back(msg);
  }
  if (problems.empty()) return;

  // A checkpoint of the wrong model size can have thousands of problems: show enough to act on.
  constexpr size_t kShown = 20;
  std::string msg = "checkpoint " + ckpt.path() + " does not match its Llama config (" +
                    std::to_string(config.num_hidden_layers) + " layers, hidden " + std::to_string(config.hidden_size) +
                    "): " + std::to_string(problems.size()) + " problem" + (problems.size() == 1 ? "" : "s");
  for (size_t i = 0; i < problems.size() && i < kShown; ++i) msg += "\n  " + problems[i];
  if (problems.size() > kShown) msg += "\n  ... and " + std::to_string(problems.size() - kShown) + " more";
  throw InputError(msg);
}

}  // namespace layerprune
