#include "worker/llama_tensors.h"

#include <set>

#include "common/error.h"

namespace layerprune {

std::vector<ExpectedTensor> llama_tensor_layout(const LlamaConfig& c) {
  const int64_t D = c.hidden_size, F = c.intermediate_size, V = c.vocab_size;
  const int64_t q = c.num_attention_heads * c.head_dim(), kv = c.kv_dim();
  std::vector<ExpectedTensor> out = {{"model.embed_tokens.weight", {V, D}}};
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    std::string p = "model.layers." + std::to_string(i) + ".";
    out.push_back({p + "input_layernorm.weight", {D}});
    out.push_back({p + "self_attn.q_proj.weight", {q, D}});
    out.push_back({p + "self_attn.k_proj.weight", {kv, D}});
    out.push_back({p + "self_attn.v_proj.weight", {kv, D}});
    out.push_back({p + "self_attn.o_proj.weight", {D, q}});
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
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
}  // namespace

void check_llama_checkpoint(const Checkpoint& ckpt, const LlamaConfig& config) {
  std::vector<std::string> problems;
  std::set<std::string> expected;
  for (const auto& e : llama_tensor_layout(config)) {
    expected.insert(e.name);
    const TensorView* v = ckpt.find(e.name);
    if (!v) {
      problems.push_back("missing tensor '" + e.name + "' " + shape_string(e.shape));
      continue;
    }
    if (v->shape != e.shape)
      problems.push_back(v->file + ": tensor '" + e.name + "' has shape " + shape_string(v->shape) + ", config.json implies " +
                         shape_string(e.shape));
    if (v->dtype != DType::F32 && v->dtype != DType::F16 && v->dtype != DType::BF16)
      problems.push_back(v->file + ": tensor '" + e.name + "' has dtype " + dtype_name(v->dtype) +
                         " (weights must be F32, F16 or BF16)");
  }
  for (const auto& name : ckpt.names())
    if (!expected.count(name) && !ends_with(name, "rotary_emb.inv_freq"))
      problems.push_back(ckpt.find(name)->file + ": unexpected tensor '" + name + "'" +
                         (name == "lm_head.weight" ? " (config.json says tie_word_embeddings)" : ""));
  if (problems.empty()) return;
  std::string msg = ckpt.path() + ": checkpoint does not match config.json (" + std::to_string(config.num_hidden_layers) +
                    " layers, hidden " + std::to_string(config.hidden_size) + "):";
  const size_t shown = std::min<size_t>(problems.size(), 12);
  for (size_t i = 0; i < shown; ++i) msg += "\n  " + problems[i];
  if (problems.size() > shown) msg += "\n  ... and " + std::to_string(problems.size() - shown) + " more";
  throw InputError(msg);
}

}  // namespace layerprune
