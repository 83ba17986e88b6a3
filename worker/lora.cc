#include "worker/lora.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>

#include "common/error.h"

namespace layerprune {

const char* const kLoraProjections[7] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

namespace {
int projection_index(const std::string& name) {
  for (int i = 0; i < 7; ++i)
    if (name == kLoraProjections[i]) return i;
  return -1;
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w, double eps) {
  at::Tensor xf = x.to(at::kFloat);
  return (xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps)).to(x.scalar_type()) * w;
}

// Hugging Face's rotate-half RoPE on [B, T, heads, hd] with cos/sin [T, hd/2].
at::Tensor rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  at::Tensor x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  at::Tensor c = cos.unsqueeze(0).unsqueeze(2), s = sin.unsqueeze(0).unsqueeze(2);  // [1, T, 1, hd/2]
  return at::cat({x1 * c - x2 * s, x2 * c + x1 * s}, -1);
}
// x W^T with W in NF4, differentiable in x: the backward's input gradient g W is the fused NF4 kernel too.
// W is frozen (no gradient); it travels as its address, which outlives the graph (the model owns it).
struct Nf4Linear : torch::autograd::Function<Nf4Linear> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, int64_t weight) {
    ctx->saved_data["w"] = weight;
    return kernels::nf4_linear(x, *reinterpret_cast<const kernels::Nf4Weight*>(weight));
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    const auto* w = reinterpret_cast<const kernels::Nf4Weight*>(ctx->saved_data["w"].toInt());
    return {kernels::nf4_linear_input_grad(grad[0], *w), at::Tensor()};
  }
};
}  // namespace

std::vector<std::string> lora_targets(const std::vector<std::string>& names) {
  std::vector<std::string> out;
  for (const std::string& n : names) {
    if (n == "all-linear") {
      for (const char* p : kLoraProjections) out.push_back(p);
      continue;
    }
    if (projection_index(n) < 0)
      throw InputError("unknown LoRA target \"" + n + "\": expected q_proj, k_proj, v_proj, o_proj, gate_proj, "
                       "up_proj, down_proj or all-linear");
    out.push_back(n);
  }
  if (out.empty()) throw InputError("LoRA needs at least one target projection");
  return out;
}

LoraLlama::LoraLlama(const LlamaModel& base, std::vector<int64_t> kept, LoraConfig config)
    : base_(base), kept_(base.kept_layers(kept)), config_(std::move(config)),
      targets_(lora_targets(config_.targets)), gen_(at::make_generator<at::CPUGeneratorImpl>(config_.seed)) {
  if (base.tensor_parallel()) throw InputError("LoRA on a tensor-parallel model is not implemented yet");
  if (config_.rank < 1) throw InputError("LoRA rank must be at least 1");
  if (!(config_.dropout >= 0 && config_.dropout < 1)) throw InputError("LoRA dropout must be in [0, 1)");
  const LlamaConfig& c = base.config();
  index_.assign(kept_.size(), std::vector<int>(7, -1));
  for (size_t pos = 0; pos < kept_.size(); ++pos)
    for (int proj = 0; proj < 7; ++proj) {
      bool wanted = false;
      for (const std::string& t : targets_) wanted |= t == kLoraProjections[proj];
      if (!wanted) continue;
      const at::Tensor& w = base_weight(kept_[pos], proj);
      const int64_t out = w.size(0), in = w.size(1);
      if (config_.rank > std::min(out, in))
        throw InputError("LoRA rank " + std::to_string(config_.rank) + " exceeds the " + kLoraProjections[proj] +
                         " shape [" + std::to_string(out) + ", " + std::to_string(in) + "]");
      LoraAdapter a;
      a.layer = kept_[pos];
      a.proj = proj;
      a.name = "model.layers." + std::to_string(a.layer) + (proj < 4 ? ".self_attn." : ".mlp.") + kLoraProjections[proj];
      const double bound = 1.0 / std::sqrt(double(in));  // kaiming_uniform_(a = sqrt(5))
      a.a = at::empty({config_.rank, in}, at::kFloat).uniform_(-bound, bound, gen_).set_requires_grad(true);
      a.b = at::zeros({out, config_.rank}, at::kFloat).set_requires_grad(true);
      index_[pos][size_t(proj)] = int(adapters_.size());
      adapters_.push_back(std::move(a));
    }
  if (config_.base_quant == "nf4") {
    at::NoGradGuard no_grad;
    nf4_.resize(kept_.size());
    for (size_t pos = 0; pos < kept_.size(); ++pos)
      for (int proj = 0; proj < 7; ++proj) nf4_[pos].push_back(kernels::nf4_quantize(base_weight(kept_[pos], proj)));
  } else if (config_.base_quant != "none") {
    throw InputError("unknown base quantisation \"" + config_.base_quant + "\": expected none or nf4");
  }
  const int64_t hd = c.head_dim();
  at::Tensor inv = at::pow(c.rope_theta, -at::arange(0, hd, 2, at::kDouble) / double(hd));
  at::Tensor ang = at::outer(at::arange(c.max_position_embeddings, at::kDouble), inv);
  cos_ = ang.cos().to(at::kFloat);
  sin_ = ang.sin().to(at::kFloat);
}

const at::Tensor& LoraLlama::base_weight(int64_t layer, int proj) const {
  const LlamaLayerWeights& w = base_.weights().layers[size_t(layer)];
  switch (proj) {
    case 0: return w.wq;
    case 1: return w.wk;
    case 2: return w.wv;
    case 3: return w.wo;
    case 4: return w.w_gate;
    case 5: return w.w_up;
    default: return w.w_down;
  }
}

at::Tensor LoraLlama::project(const at::Tensor& x, const at::Tensor& w, size_t pos, int proj, bool train) {
  at::Tensor y = nf4_.empty() ? at::linear(x, w)
                              : Nf4Linear::apply(x.to(at::kFloat), int64_t(reinterpret_cast<intptr_t>(&nf4_[pos][size_t(proj)])))
                                    .to(x.scalar_type());
  const int i = index_[pos][size_t(proj)];
  if (i < 0) return y;
  const LoraAdapter& a = adapters_[size_t(i)];
  at::Tensor xin = x.to(at::kFloat);
  if (train && config_.dropout > 0) {
    at::Tensor keep = at::empty_like(xin).bernoulli_(1.0 - config_.dropout, gen_);
    xin = xin * keep / (1.0 - config_.dropout);
  }
  at::Tensor delta = at::linear(at::linear(xin, a.a), a.b) * config_.scale();
  return y + delta.to(y.scalar_type());
}

at::Tensor LoraLlama::forward(const at::Tensor& tokens, bool train) {
  const LlamaConfig& c = base_.config();
  const int64_t B = tokens.size(0), T = tokens.size(1), H = c.num_attention_heads, KV = c.num_key_value_heads,
                hd = c.head_dim();
  if (T > c.max_position_embeddings)
    throw InputError("sequence of " + std::to_string(T) + " tokens exceeds the model's " +
                     std::to_string(c.max_position_embeddings) + " positions");
  const LlamaWeights& W = base_.weights();
  at::Tensor cos = cos_.narrow(0, 0, T), sin = sin_.narrow(0, 0, T);
  at::Tensor mask = at::full({T, T}, -std::numeric_limits<float>::infinity(), at::kFloat).triu(1);
  at::Tensor x = at::embedding(W.embed, tokens);
  for (size_t pos = 0; pos < kept_.size(); ++pos) {
    const LlamaLayerWeights& w = W.layers[size_t(kept_[pos])];
    at::Tensor h = rms_norm(x, w.attn_norm, c.rms_norm_eps);
    at::Tensor q = rope(project(h, w.wq, pos, 0, train).view({B, T, H, hd}), cos, sin).transpose(1, 2);
    at::Tensor k = rope(project(h, w.wk, pos, 1, train).view({B, T, KV, hd}), cos, sin).transpose(1, 2);
    at::Tensor v = project(h, w.wv, pos, 2, train).view({B, T, KV, hd}).transpose(1, 2);
    if (KV != H) {  // GQA: query head j uses KV head j / (H / KV)
      k = k.repeat_interleave(H / KV, 1);
      v = v.repeat_interleave(H / KV, 1);
    }
    at::Tensor scores = at::matmul(q, k.transpose(-1, -2)).to(at::kFloat) / std::sqrt(double(hd)) + mask;
    at::Tensor attn = at::matmul(at::softmax(scores, -1).to(v.scalar_type()), v);  // [B, H, T, hd]
    x = x + project(attn.transpose(1, 2).reshape({B, T, H * hd}), w.wo, pos, 3, train);
    h = rms_norm(x, w.ffn_norm, c.rms_norm_eps);
    at::Tensor g = at::silu(project(h, w.w_gate, pos, 4, train)) * project(h, w.w_up, pos, 5, train);
    x = x + project(g, w.w_down, pos, 6, train);
  }
  return at::linear(rms_norm(x, W.final_norm, c.rms_norm_eps), W.lm_head).to(at::kFloat);
}

at::Tensor LoraLlama::loss(const at::Tensor& tokens, bool train) {
  const int64_t T = tokens.size(1);
  if (T < 2) throw InputError("loss needs sequences of at least 2 tokens");
  at::Tensor logits = forward(tokens, train).narrow(1, 0, T - 1);
  at::Tensor target = tokens.narrow(1, 1, T - 1);
  return at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}), target.reshape({-1}));
}

std::vector<at::Tensor> LoraLlama::parameters() const {
  std::vector<at::Tensor> out;
  for (const LoraAdapter& a : adapters_) {
    out.push_back(a.a);
    out.push_back(a.b);
  }
  return out;
}

int64_t LoraLlama::trainable_parameters() const {
  int64_t n = 0;
  for (const LoraAdapter& a : adapters_) n += a.a.numel() + a.b.numel();
  return n;
}

at::Tensor LoraLlama::merged_weight(size_t i) const {
  const LoraAdapter& a = adapters_.at(i);
  const at::Tensor& w = base_weight(a.layer, a.proj);
  at::NoGradGuard no_grad;
  at::Tensor base = w.to(at::kFloat);
  if (!nf4_.empty()) {
    const size_t pos = size_t(std::find(kept_.begin(), kept_.end(), a.layer) - kept_.begin());
    base = kernels::nf4_dequantize(nf4_[pos][size_t(a.proj)]);
  }
  return (base + at::matmul(a.b, a.a) * config_.scale()).to(w.scalar_type());
}

int64_t LoraLlama::base_projection_bytes() const {
  int64_t n = 0;
  for (size_t pos = 0; pos < kept_.size(); ++pos)
    for (int proj = 0; proj < 7; ++proj)
      n += nf4_.empty() ? base_weight(kept_[pos], proj).nbytes() : nf4_[pos][size_t(proj)].storage_bytes();
  return n;
}

}  // namespace layerprune
