#include "model/lora.h"

#include <ATen/core/grad_mode.h>
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <optional>
#include <tuple>

#include "common/error.h"
#include "model/finite.h"

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
// `device_path`: the ATen dequantise + GEMM of kernels/nf4.h (a GPU's path, or a test's on the CPU) instead
// of the CPU's fused tile kernels.
struct Nf4Linear : torch::autograd::Function<Nf4Linear> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, int64_t weight,
                            bool device_path) {
    ctx->saved_data["w"] = weight;
    ctx->saved_data["device_path"] = device_path;
    const auto& w = *reinterpret_cast<const kernels::Nf4Weight*>(weight);
    return device_path ? kernels::nf4_linear_aten(x, w) : kernels::nf4_linear(x, w);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    const auto& w = *reinterpret_cast<const kernels::Nf4Weight*>(ctx->saved_data["w"].toInt());
    at::Tensor g = ctx->saved_data["device_path"].toBool() ? kernels::nf4_linear_input_grad_aten(grad[0], w)
                                                          : kernels::nf4_linear_input_grad(grad[0], w);
    return {g, at::Tensor(), at::Tensor()};
  }
};

// The tensor-parallel seams of the differentiable forward (Megatron-LM's f and g, and the vocab gather).
// The group travels as its address (the base model owns it and outlives the graph), like the NF4 weight.
const TensorParallel& group_of(const torch::autograd::AutogradContext* ctx) {
  return *reinterpret_cast<const TensorParallel*>(ctx->saved_data.at("tp").toInt());
}
int64_t address(const TensorParallel* tp) { return int64_t(reinterpret_cast<intptr_t>(tp)); }

// Entering a parallel region: every rank already has x; its gradient is the sum of the ranks' partials.
struct GroupInput : torch::autograd::Function<GroupInput> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, int64_t tp) {
    ctx->saved_data["tp"] = tp;
    return x.clone();
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    at::Tensor g = grad[0].contiguous().clone();
    group_of(ctx).comm().all_reduce_sum(g);
    return {g, at::Tensor()};
  }
};

// Leaving it after a row-parallel product: sum the partial products; the gradient passes unchanged.
struct GroupSum : torch::autograd::Function<GroupSum> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& partial, int64_t tp) {
    ctx->saved_data["tp"] = tp;
    at::Tensor sum = partial.contiguous().clone();
    group_of(ctx).reduce(sum);
    return sum;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*, torch::autograd::variable_list grad) {
    return {grad[0], at::Tensor()};
  }
};

// The vocab-parallel head: all-gather the logits; each rank's gradient is its slice of the vocabulary.
struct GroupGatherVocab : torch::autograd::Function<GroupGatherVocab> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& local, int64_t tp,
                            int64_t vocab) {
    ctx->saved_data["tp"] = tp;
    return group_of(ctx).gather_vocab(local, vocab);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    const TensorParallelPlan& p = group_of(ctx).plan();
    return {grad[0].narrow(-1, p.vocab_begin, p.vocab_end - p.vocab_begin).contiguous(), at::Tensor(), at::Tensor()};
  }
};

// A's columns under a row-parallel rule (a contiguous copy), else A itself.
at::Tensor shard_cols(const at::Tensor& a, const ShardRule& r) {
  return r.kind == ShardRule::kColumns ? a.narrow(1, r.begin, r.end - r.begin).contiguous() : a;
}

// The whole W [out, in] of projection `proj`.
std::pair<int64_t, int64_t> full_shape(const LlamaConfig& c, int proj) {
  const int64_t D = c.hidden_size, F = c.intermediate_size, q = c.num_attention_heads * c.head_dim(),
                kv = c.num_key_value_heads * c.head_dim();
  switch (proj) {
    case 0: return {q, D};
    case 1:
    case 2: return {kv, D};
    case 3: return {D, q};
    case 4:
    case 5: return {F, D};
    default: return {D, F};
  }
}
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
  const c10::Device device = base.device();
  device_kernels_ = config_.device_kernels || !device.is_cpu();
  const TensorParallel* tp = base.tensor_parallel();
  if (config_.rank < 1) throw InputError("LoRA rank must be at least 1");
  if (!(config_.dropout >= 0 && config_.dropout < 1)) throw InputError("LoRA dropout must be in [0, 1)");
  const LlamaConfig& c = base.config();
  index_.assign(kept_.size(), std::vector<int>(7, -1));
  for (size_t pos = 0; pos < kept_.size(); ++pos)
    for (int proj = 0; proj < 7; ++proj) {
      bool wanted = false;
      for (const std::string& t : targets_) wanted |= t == kLoraProjections[proj];
      if (!wanted) continue;
      const auto [out, in] = full_shape(c, proj);
      if (config_.rank > std::min(out, in))
        throw InputError("LoRA rank " + std::to_string(config_.rank) + " exceeds the " + kLoraProjections[proj] +
                         " shape [" + std::to_string(out) + ", " + std::to_string(in) + "]");
      LoraAdapter a;
      a.layer = kept_[pos];
      a.proj = proj;
      a.name = "model.layers." + std::to_string(a.layer) + (proj < 4 ? ".self_attn." : ".mlp.") + kLoraProjections[proj];
      a.full_rows = out;
      a.full_cols = in;
      if (tp) {
        if ((proj == 1 || proj == 2) && tp->plan().kv_replicated)
          throw InputError(std::string("LoRA on ") + kLoraProjections[proj] + " is not supported when KV heads are "
                           "replicated across tensor-parallel ranks (tp " + std::to_string(tp->plan().tp) + " > " +
                           std::to_string(c.num_key_value_heads) + " KV heads): their adapters would be copies "
                           "that must stay equal; target other projections or use a smaller tp");
        a.shard = shard_rule(a.name + ".weight", c, tp->plan());
      }
      // Drawn at the full shape, then sliced: a TP group draws what one process draws.
      const double bound = 1.0 / std::sqrt(double(in));  // kaiming_uniform_(a = sqrt(5))
      at::Tensor a_full = at::empty({config_.rank, in}, at::kFloat).uniform_(-bound, bound, gen_);
      a.a = shard_cols(a_full, a.shard).to(device).set_requires_grad(true);
      a.b = at::zeros({a.shard.kind == ShardRule::kRows ? a.shard.end - a.shard.begin : out, config_.rank},
                      at::TensorOptions().dtype(at::kFloat).device(device))
                .set_requires_grad(true);
      index_[pos][size_t(proj)] = int(adapters_.size());
      adapters_.push_back(std::move(a));
    }
  if (config_.base_quant == "nf4") {
    at::NoGradGuard no_grad;
    nf4_.resize(kept_.size());
    for (size_t pos = 0; pos < kept_.size(); ++pos)
      for (int proj = 0; proj < 7; ++proj) {
        const at::Tensor& w = base_weight(kept_[pos], proj);
        // On a GPU (or when asked) the device path: quantised where the weight is, multiplied by cuBLAS.
        nf4_[pos].push_back(device_kernels_ ? kernels::nf4_quantize_aten(w) : kernels::nf4_quantize(w));
      }
  } else if (config_.base_quant != "none") {
    throw InputError("unknown base quantisation \"" + config_.base_quant + "\": expected none or nf4");
  }
  std::tie(cos_, sin_) = rope_tables(c);  // the inference model's tables, scaling included
  cos_ = cos_.to(device);
  sin_ = sin_.to(device);
  if (!device.is_cpu()) {
    // Dropout masks drawn on the device: the initialisation above used the host generator (A is the same
    // on every device); from here on a generator of the device's kind, seeded alike.
    gen_ = at::globalContext().defaultGenerator(device).clone();
    std::lock_guard<std::mutex> lock(gen_.mutex());
    gen_.set_current_seed(config_.seed);
  }
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

at::Tensor LoraLlama::project(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias, size_t pos, int proj,
                              bool train) {
  // NF4: the CPU's fused kernels compute in float32; the device path in x's dtype (dequantise + GEMM).
  const intptr_t nf4 = nf4_.empty() ? 0 : reinterpret_cast<intptr_t>(&nf4_[pos][size_t(proj)]);
  at::Tensor y = !nf4 ? at::linear(x, w)
                      : Nf4Linear::apply(device_kernels_ ? x : x.to(at::kFloat), int64_t(nf4), device_kernels_)
                            .to(x.scalar_type());
  // A frozen bias (Qwen2's q/k/v, never quantised): base(x) + bias + the adapter's term.
  if (bias.defined()) y = y + bias;
  const int i = index_[pos][size_t(proj)];
  if (i < 0) return y;
  const LoraAdapter& a = adapters_[size_t(i)];
  at::Tensor xin = x.to(at::kFloat);
  if (train && config_.dropout > 0) xin = xin * dropout_mask(xin, a) / (1.0 - config_.dropout);
  at::Tensor delta = at::linear(at::linear(xin, a.a), a.b) * config_.scale();
  return y + delta.to(y.scalar_type());
}

// Keep-masks drawn at the full input's shape; a row-parallel rank keeps its columns of it.
at::Tensor LoraLlama::dropout_mask(const at::Tensor& x, const LoraAdapter& a) {
  if (a.shard.kind != ShardRule::kColumns) return at::empty_like(x).bernoulli_(1.0 - config_.dropout, gen_);
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = a.full_cols;
  return at::empty(shape, x.options())
      .bernoulli_(1.0 - config_.dropout, gen_)
      .narrow(-1, a.shard.begin, a.shard.end - a.shard.begin);
}

at::Tensor LoraLlama::forward(const at::Tensor& tokens, bool train, std::vector<at::Tensor>* hidden) {
  const LlamaConfig& c = base_.config();
  const TensorParallel* tp = base_.tensor_parallel();
  // This rank's heads (all of them without tensor parallelism).
  const int64_t B = tokens.size(0), T = tokens.size(1), H = tp ? tp->plan().heads : c.num_attention_heads,
                KV = tp ? tp->plan().kv_heads : c.num_key_value_heads, hd = c.head_dim();
  if (T > c.max_position_embeddings)
    throw InputError("sequence of " + std::to_string(T) + " tokens exceeds the model's " +
                     std::to_string(c.max_position_embeddings) + " positions");
  auto enter = [&](const at::Tensor& h) { return tp ? GroupInput::apply(h, address(tp)) : h; };
  auto leave = [&](const at::Tensor& partial) { return tp ? GroupSum::apply(partial, address(tp)) : partial; };
  const LlamaWeights& W = base_.weights();
  at::Tensor cos = cos_.narrow(0, 0, T), sin = sin_.narrow(0, 0, T);
  const c10::Device device = base_.device();
  const bool windowed = c.sliding_window > 0 && T > c.sliding_window;
  // The explicit path's additive mask: causal; with Mistral's sliding window also keys at distance >=
  // window (transformers' convention). The SDPA path: is_causal, or the same as a boolean mask.
  const auto fopts = at::TensorOptions().dtype(at::kFloat).device(device);
  at::Tensor mask;
  if (!device_kernels_ || windowed) {
    mask = at::full({T, T}, -std::numeric_limits<float>::infinity(), fopts).triu(1);
    if (windowed) mask = mask + at::full({T, T}, -std::numeric_limits<float>::infinity(), fopts).tril(-c.sliding_window);
    if (device_kernels_) mask = mask.eq(0);  // true = attend
  }
  at::Tensor x = at::embedding(W.embed, tokens.to(device));
  for (size_t pos = 0; pos < kept_.size(); ++pos) {
    const LlamaLayerWeights& w = W.layers[size_t(kept_[pos])];
    if (hidden) hidden->push_back(x);
    at::Tensor h = enter(rms_norm(x, w.attn_norm, c.rms_norm_eps));
    at::Tensor q = rope(project(h, w.wq, w.bq, pos, 0, train).view({B, T, H, hd}), cos, sin).transpose(1, 2);
    at::Tensor k = rope(project(h, w.wk, w.bk, pos, 1, train).view({B, T, KV, hd}), cos, sin).transpose(1, 2);
    at::Tensor v = project(h, w.wv, w.bv, pos, 2, train).view({B, T, KV, hd}).transpose(1, 2);
    at::Tensor attn;  // [B, H, T, hd]
    if (device_kernels_) {
      // Flash / memory-efficient attention with their backward on a GPU; GQA inside the kernel.
      attn = at::scaled_dot_product_attention(q, k, v, windowed ? std::optional<at::Tensor>(mask) : std::nullopt,
                                              /*dropout_p=*/0.0, /*is_causal=*/!windowed, 1.0 / std::sqrt(double(hd)),
                                              /*enable_gqa=*/KV != H);
    } else {
      if (KV != H) {  // GQA: query head j uses KV head j / (H / KV)
        k = k.repeat_interleave(H / KV, 1);
        v = v.repeat_interleave(H / KV, 1);
      }
      at::Tensor scores = at::matmul(q, k.transpose(-1, -2)).to(at::kFloat) / std::sqrt(double(hd)) + mask;
      attn = at::matmul(at::softmax(scores, -1).to(v.scalar_type()), v);
    }
    at::Tensor o = leave(project(attn.transpose(1, 2).reshape({B, T, H * hd}), w.wo, {}, pos, 3, train));
    x = x + (w.bo.defined() ? o + w.bo : o);  // o_proj's bias after the row-parallel sum
    h = enter(rms_norm(x, w.ffn_norm, c.rms_norm_eps));
    at::Tensor g = at::silu(project(h, w.w_gate, {}, pos, 4, train)) * project(h, w.w_up, {}, pos, 5, train);
    x = x + leave(project(g, w.w_down, {}, pos, 6, train));
  }
  if (hidden) hidden->push_back(x);
  at::Tensor logits = at::linear(enter(rms_norm(x, W.final_norm, c.rms_norm_eps)), W.lm_head).to(at::kFloat);
  return tp ? GroupGatherVocab::apply(logits, address(tp), c.vocab_size) : logits;
}

at::Tensor LoraLlama::loss(const at::Tensor& tokens, bool train) {
  const int64_t T = tokens.size(1);
  if (T < 2) throw InputError("loss needs sequences of at least 2 tokens");
  at::Tensor logits = forward(tokens, train).narrow(1, 0, T - 1);
  at::Tensor target = tokens.narrow(1, 1, T - 1).to(logits.device());
  return at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}), target.reshape({-1}));
}

std::string LoraLlama::locate_non_finite(const at::Tensor& tokens) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> hidden;
  at::Tensor logits = forward(tokens, /*train=*/false, &hidden);
  return describe_non_finite(hidden, kept_, logits, /*input_hidden=*/false);
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

LlamaModel LoraLlama::merged_model() const {
  at::NoGradGuard no_grad;
  LlamaWeights w = base_.weights();  // tensors shared; the merged ones replaced below
  for (size_t pos = 0; pos < kept_.size(); ++pos) {
    LlamaLayerWeights& l = w.layers[size_t(kept_[pos])];
    at::Tensor* slots[7] = {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down};
    for (int proj = 0; proj < 7; ++proj) {
      const int i = index_[pos][size_t(proj)];
      if (i >= 0)
        *slots[proj] = merged_weight(size_t(i)).contiguous();
      else if (!nf4_.empty())  // what the healed model computes with: the dequantised base
        *slots[proj] = kernels::nf4_dequantize(nf4_[pos][size_t(proj)]).to(slots[proj]->scalar_type());
    }
  }
  return base_.with_weights(std::move(w));
}

void LoraLlama::reduce_gradients() {
  const TensorParallel* tp = base_.tensor_parallel();
  if (!tp) return;
  std::vector<at::Tensor> replicated;  // A of column-parallel and B of row-parallel projections
  for (const LoraAdapter& a : adapters_) replicated.push_back(a.shard.kind == ShardRule::kColumns ? a.b : a.a);
  std::vector<at::Tensor> grads;
  for (const at::Tensor& p : replicated)
    grads.push_back(p.grad().defined() ? p.grad().reshape({-1}) : at::zeros({p.numel()}, p.options()));
  at::Tensor flat = at::cat(grads);  // one all-reduce for all of them
  tp->comm().all_reduce_sum(flat);
  int64_t offset = 0;
  for (at::Tensor& p : replicated) {
    p.mutable_grad() = flat.narrow(0, offset, p.numel()).view(p.sizes()).clone();
    offset += p.numel();
  }
}

double LoraLlama::gradient_norm() const {
  const TensorParallel* tp = base_.tensor_parallel();
  double replicated = 0, sharded = 0;
  auto sq = [](const at::Tensor& p) { return p.grad().defined() ? p.grad().to(at::kDouble).pow(2).sum().item<double>() : 0.0; };
  for (const LoraAdapter& a : adapters_) {
    const bool a_sharded = a.shard.kind == ShardRule::kColumns, b_sharded = a.shard.kind == ShardRule::kRows;
    (a_sharded ? sharded : replicated) += sq(a.a);
    (b_sharded ? sharded : replicated) += sq(a.b);
  }
  if (tp) {  // the shards' squares from every rank, summed in rank order (the same double on every rank)
    // On the group's device (NCCL takes device tensors, MPI host ones).
    at::Tensor all = tp->comm().all_gather(at::full({1}, sharded, at::TensorOptions().dtype(at::kDouble).device(device())))
                         .to(at::kCPU);
    sharded = 0;
    for (int64_t r = 0; r < all.size(0); ++r) sharded += all[r].item<double>();
  }
  return std::sqrt(replicated + sharded);
}

at::Tensor LoraLlama::gather_full(size_t i, bool is_b, const at::Tensor& local) const {
  const LoraAdapter& a = adapters_.at(i);
  const TensorParallel* tp = base_.tensor_parallel();
  const int dim = is_b ? 0 : 1;
  if (!tp || a.shard.kind != (is_b ? ShardRule::kRows : ShardRule::kColumns)) return local;
  // Shards may differ in size by one (near-equal FFN ranges): pad each to the largest, gather, trim.
  std::vector<ShardRule> rules;
  int64_t widest = 0;
  for (int r = 0; r < tp->plan().tp; ++r) {
    rules.push_back(shard_rule(a.name + ".weight", base_.config(), plan_tensor_parallel(base_.config(), tp->plan().tp, r)));
    widest = std::max(widest, rules.back().end - rules.back().begin);
  }
  std::vector<int64_t> pad(4, 0);  // constant_pad_nd pads the last dimension first
  pad[is_b ? 3 : 1] = widest - local.size(dim);
  at::Tensor all = tp->comm().all_gather(at::constant_pad_nd(local.detach(), pad).contiguous());
  std::vector<at::Tensor> parts;
  for (size_t r = 0; r < rules.size(); ++r) parts.push_back(all[int64_t(r)].narrow(dim, 0, rules[r].end - rules[r].begin));
  return at::cat(parts, dim);
}

at::Tensor LoraLlama::shard_of(size_t i, bool is_b, const at::Tensor& full) const {
  const LoraAdapter& a = adapters_.at(i);
  if (a.shard.kind != (is_b ? ShardRule::kRows : ShardRule::kColumns)) return full;
  return full.narrow(is_b ? 0 : 1, a.shard.begin, a.shard.end - a.shard.begin).contiguous();
}

int64_t LoraLlama::base_projection_bytes() const {
  int64_t n = 0;
  for (size_t pos = 0; pos < kept_.size(); ++pos)
    for (int proj = 0; proj < 7; ++proj)
      n += nf4_.empty() ? base_weight(kept_[pos], proj).nbytes() : nf4_[pos][size_t(proj)].storage_bytes();
  return n;
}

}  // namespace layerprune
