#include "model/llama.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <limits>
#include <tuple>

#include "common/error.h"
#include "model/finite.h"
#include "kernels/causal_softmax.h"
#include "kernels/rms_norm.h"
#include "kernels/rope.h"
#include "kernels/swiglu.h"
#include "formats/llama_tensors.h"
#include "model/runtime.h"
#include "formats/safetensors.h"
#include "model/tensor_io.h"

namespace layerprune {

at::ScalarType parse_compute_dtype(const std::string& name) {
  if (name == "float32" || name == "f32" || name == "fp32") return at::kFloat;
  if (name == "bfloat16" || name == "bf16") return at::kBFloat16;
  throw InputError("unsupported compute dtype '" + name + "' (use float32 or bfloat16)");
}

LlamaModel::LlamaModel(LlamaConfig config, LlamaWeights weights, std::shared_ptr<const TensorParallel> tp)
    : config_(std::move(config)), weights_(std::move(weights)), tp_(std::move(tp)) {
  config_.validate("model config");
  heads_ = tp_ ? tp_->plan().heads : config_.num_attention_heads;
  kv_heads_ = tp_ ? tp_->plan().kv_heads : config_.num_key_value_heads;
  std::tie(rope_cos_, rope_sin_) = rope_tables(config_);
  if (weights_.embed.defined() && !weights_.embed.device().is_cpu()) {
    rope_cos_ = rope_cos_.to(weights_.embed.device());
    rope_sin_ = rope_sin_.to(weights_.embed.device());
  }
}

std::pair<at::Tensor, at::Tensor> rope_tables(const LlamaConfig& config) {
  std::vector<double> w = config.rope_inverse_frequencies();
  at::Tensor inv_freq = at::tensor(w, at::kDouble);
  at::Tensor pos = at::arange(config.max_position_embeddings, at::kDouble);
  at::Tensor angles = at::outer(pos, inv_freq);  // [P, hd/2]
  return {angles.cos().to(at::kFloat).contiguous(), angles.sin().to(at::kFloat).contiguous()};
}

LlamaModel LlamaModel::load(const std::string& dir, const LoadOptions& options) {
  LlamaConfig config = LlamaConfig::from_file(dir + "/config.json");
  Checkpoint ckpt = Checkpoint::open(dir);
  if (options.check_tensors) check_llama_checkpoint(ckpt, config);
  at::ScalarType dtype = parse_compute_dtype(options.dtype);
  const c10::Device device = options.device;
  // Under tensor parallelism every tensor is read through its shard rule; without, each rule is "all".
  std::shared_ptr<const TensorParallel> tp;
  TensorParallelPlan plan = plan_tensor_parallel(config, 1, 0);
  if (options.comm && options.comm->size() > 1) {
    plan = plan_tensor_parallel(config, options.comm->size(), options.comm->rank());
    tp = std::make_shared<TensorParallel>(options.comm, plan);
    for (const auto& f : ckpt.files()) f->advise_partial_reads();
  }
  auto keep = ckpt.keepalive();
  uint64_t mapped = 0, copied = 0, loaded = 0;
  auto get = [&](const std::string& name) {
    const TensorView& v = ckpt.tensor(name);
    ShardRule rule = tp ? shard_rule(name, config, plan) : ShardRule{};
    bool zero_copy = false;
    at::Tensor t;
    if (rule.kind == ShardRule::kColumns) {
      t = tensor_columns(v, rule.begin, rule.end);
    } else if (rule.kind == ShardRule::kRows) {
      t = tensor_rows(v, rule.begin, rule.end, keep, &zero_copy);
    } else {
      t = tensor_from_view(v, keep, &zero_copy);
    }
    uint64_t bytes = uint64_t(t.numel()) * dtype_size(v.dtype);  // of the file's bytes
    loaded += bytes;
    if (!device.is_cpu()) {
      // To the device tensor by tensor, straight from the mapping (or this rank's shard of it); the dtype
      // conversion runs there. The host holds at most one tensor's shard copy at a time.
      t = t.to(device).to(dtype);
      zero_copy = false;
    } else if (t.scalar_type() != dtype) {
      t = t.to(dtype);
      zero_copy = false;
    }
    // Copied out of the mapping: its pages need not stay in this process (they stay in the page cache).
    if (!zero_copy) release_mapped_pages(v.data, v.nbytes);
    (zero_copy ? mapped : copied) += bytes;
    return t;
  };
  LlamaWeights w;
  w.embed = get("model.embed_tokens.weight");
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    std::string p = "model.layers." + std::to_string(i) + ".";
    LlamaLayerWeights l;
    l.attn_norm = get(p + "input_layernorm.weight");
    l.wq = get(p + "self_attn.q_proj.weight");
    l.wk = get(p + "self_attn.k_proj.weight");
    l.wv = get(p + "self_attn.v_proj.weight");
    if (config.qkv_bias()) {
      l.bq = get(p + "self_attn.q_proj.bias");
      l.bk = get(p + "self_attn.k_proj.bias");
      l.bv = get(p + "self_attn.v_proj.bias");
    }
    if (config.o_bias()) l.bo = get(p + "self_attn.o_proj.bias");
    l.wo = get(p + "self_attn.o_proj.weight");
    l.ffn_norm = get(p + "post_attention_layernorm.weight");
    l.w_gate = get(p + "mlp.gate_proj.weight");
    l.w_up = get(p + "mlp.up_proj.weight");
    l.w_down = get(p + "mlp.down_proj.weight");
    w.layers.push_back(std::move(l));
  }
  w.final_norm = get("model.norm.weight");
  if (!config.tie_word_embeddings)
    w.lm_head = get("lm_head.weight");
  else  // tied: the head is (this rank's rows of) the replicated embedding, no extra bytes
    w.lm_head = tp ? w.embed.narrow(0, plan.vocab_begin, plan.vocab_end - plan.vocab_begin) : w.embed;
  LlamaModel model(std::move(config), std::move(w), std::move(tp));
  model.mapped_bytes_ = mapped;
  model.copied_bytes_ = copied;
  model.loaded_bytes_ = loaded;
  for (const auto& f : ckpt.files()) model.files_.push_back(f->path());
  model.keepalive_ = keep;
  return model;
}

LlamaModel LlamaModel::with_weights(LlamaWeights weights) const {
  if (weights.layers.size() != weights_.layers.size()) throw std::logic_error("with_weights: another layer count");
  LlamaModel m(config_, std::move(weights), tp_);
  m.mapped_bytes_ = mapped_bytes_;
  m.copied_bytes_ = copied_bytes_;
  m.loaded_bytes_ = loaded_bytes_;
  m.files_ = files_;
  m.keepalive_ = keepalive_;
  return m;
}

std::vector<int64_t> LlamaModel::kept_layers(const std::vector<int64_t>& layers) const {
  int64_t L = config_.num_hidden_layers;
  if (layers.empty()) {
    std::vector<int64_t> all(L);
    for (int64_t i = 0; i < L; ++i) all[i] = i;
    return all;
  }
  for (size_t i = 0; i < layers.size(); ++i) {
    if (layers[i] < 0 || layers[i] >= L)
      throw InputError("layer index " + std::to_string(layers[i]) + " out of range [0, " + std::to_string(L) + ")");
    if (i > 0 && layers[i] <= layers[i - 1]) throw InputError("kept layer indices must be strictly increasing");
  }
  return layers;
}

at::Tensor LlamaModel::attention(const LlamaLayerWeights& w, const at::Tensor& xn, int64_t start,
                                 at::Tensor* k_cache, at::Tensor* v_cache, bool sdpa) const {
  const int64_t B = xn.size(0), T = xn.size(1);
  const int64_t H = heads_, KV = kv_heads_, hd = config_.head_dim();  // this rank's heads
  // Undefined biases (all families but Qwen2) add nothing.
  at::Tensor q = kernels::rope(at::linear(xn, w.wq, w.bq), H, start, rope_cos_, rope_sin_).view({B, T, H, hd}).transpose(1, 2);
  at::Tensor k = kernels::rope(at::linear(xn, w.wk, w.bk), KV, start, rope_cos_, rope_sin_).view({B, T, KV, hd}).transpose(1, 2);
  at::Tensor v = at::linear(xn, w.wv, w.bv).view({B, T, KV, hd}).transpose(1, 2);  // [B, KV, T, hd]
  if (k_cache) {
    if (k_cache->defined()) {
      k = at::cat({*k_cache, k}, 2);
      v = at::cat({*v_cache, v}, 2);
    }
    *k_cache = k;
    *v_cache = v;
  }
  at::Tensor out = sdpa ? attend_sdpa(q, k, v, start) : attend_cpu(q, k, v, start);
  out = out.transpose(1, 2).reshape({B, T, H * hd});
  at::Tensor update = at::linear(out, w.wo);
  if (tp_) tp_->reduce(update);  // row-parallel o_proj: sum the ranks' partial products
  if (w.bo.defined()) update += w.bo;  // after the sum: once, not once per rank
  return update;
}

at::Tensor LlamaModel::attend_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t start) const {
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), hd = q.size(3), KV = k.size(1), S = k.size(2);
  const int64_t rep = H / KV;
  // GQA without copying K/V: query heads h = g*rep + r share KV head g, so fold the rep query heads of a
  // group into the row dimension: [rep*T, hd] x [hd, S] per (sequence, KV head). The groups run in
  // parallel, each a chain of two small products and the softmax whose scores stay in cache; a batched
  // product over all heads would run on one thread (LibTorch's CPU bmm) and spill the scores to memory.
  // Queries go in blocks of kQueryBlock rows, each against only the keys it may see (the causal mask makes
  // the rest zero), which skips most of the masked upper triangle of a prefill.
  constexpr int64_t kQueryBlock = 128;
  const float scale = float(1.0 / std::sqrt(double(hd)));
  // Mistral's sliding window: matters only once a query is window or more positions past a key.
  const int64_t window = config_.sliding_window;
  const bool windowed = window > 0 && start + T > window;
  at::Tensor qg = q.reshape({B * KV, rep * T, hd});  // contiguous copy: one matrix per group
  at::Tensor kg = k.reshape({B * KV, S, hd}), vg = v.reshape({B * KV, S, hd});
  at::Tensor out = at::empty({B * KV, rep * T, hd}, q.options());
  at::parallel_for(0, B * KV, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      for (int64_t r = 0; r < rep; ++r)
        for (int64_t t0 = 0; t0 < T; t0 += kQueryBlock) {
          const int64_t n = std::min(kQueryBlock, T - t0), keys = std::min(S, start + t0 + n);
          const int64_t row = r * T + t0;
          at::Tensor scores = at::mm(qg[i].narrow(0, row, n), kg[i].narrow(0, 0, keys).t());  // [n, keys]
          if (scores.scalar_type() != at::kFloat) scores = scores.to(at::kFloat);  // softmax in float32, as HF
          if (windowed) {  // keys j with p - j >= window: -inf, which the softmax turns into (almost) 0
            at::Tensor p = at::arange(start + t0, start + t0 + n, at::kLong).unsqueeze(1);
            scores.masked_fill_(p - at::arange(keys, at::kLong).unsqueeze(0) >= window,
                                -std::numeric_limits<float>::infinity());
          }
          // Scale, causal mask (row j is position start+t0+j and sees keys <= it) and softmax in one pass.
          kernels::causal_softmax(scores.unsqueeze(0), n, start + t0, scale);
          at::Tensor out_rows = out[i].narrow(0, row, n);
          at::mm_out(out_rows, scores.to(v.scalar_type()), vg[i].narrow(0, 0, keys));
        }
  });
  return out.view({B, H, T, hd});
}

at::Tensor LlamaModel::attend_sdpa(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t start) const {
  const int64_t T = q.size(2), S = k.size(2), hd = q.size(3);
  const int64_t window = config_.sliding_window;
  const bool windowed = window > 0 && start + T > window;
  // Query row t is position start + t and sees keys j <= start + t (and, with a window, j > start + t -
  // window). Without a cache and a window that is the plain causal mask, which SDPA's is_causal gives to
  // the flash kernel without a mask tensor; a single query after a cache sees every key. Otherwise a
  // boolean [T, S] mask (true = attend), made on the device.
  std::optional<at::Tensor> mask;
  bool causal = false;
  if (!windowed && start == 0) {
    causal = T > 1;
  } else if (windowed || T > 1) {
    const auto opts = at::TensorOptions().dtype(at::kLong).device(q.device());
    at::Tensor p = at::arange(start, start + T, opts).unsqueeze(1), j = at::arange(S, opts).unsqueeze(0);
    at::Tensor allowed = j <= p;
    if (windowed) allowed = allowed.logical_and(p - j < window);
    mask = allowed;
  }
  // GQA without copying K/V: enable_gqa maps query head h to KV head h / (H / KV) inside the kernel.
  return at::scaled_dot_product_attention(q, k, v, mask, /*dropout_p=*/0.0, causal, 1.0 / std::sqrt(double(hd)),
                                          /*enable_gqa=*/q.size(1) != k.size(1));
}

namespace {

// ForwardOptions::logit_positions checked before any work (a KV cache is not advanced by a refused call).
void check_logit_positions(const ForwardOptions& options, int64_t B, int64_t T) {
  const at::Tensor& positions = options.logit_positions;
  if (!positions.defined()) return;
  if (!options.logits) throw InputError("forward: logit_positions given with logits = false");
  if (positions.dim() != 1 || positions.scalar_type() != at::kLong)
    throw InputError("forward: logit_positions must be a 1-D int64 tensor of flat indices into [batch * time], got " +
                     std::to_string(positions.dim()) + "-D " + std::string(c10::toString(positions.scalar_type())));
  if (positions.numel() > 0) {
    const int64_t lo = positions.min().item<int64_t>(), hi = positions.max().item<int64_t>();
    if (lo < 0 || hi >= B * T)
      throw InputError("forward: logit position " + std::to_string(lo < 0 ? lo : hi) + " outside [0, " +
                       std::to_string(B * T) + ") (batch " + std::to_string(B) + " x " + std::to_string(T) +
                       " positions)");
  }
}

}  // namespace

ForwardResult LlamaModel::forward(const at::Tensor& tokens, const ForwardOptions& options, KVCache* cache) const {
  if (tokens.dim() != 2) throw InputError("forward: tokens must be [batch, time]");
  const int64_t T = tokens.size(1);
  const int64_t start = cache ? cache->length : 0;
  if (start + T > config_.max_position_embeddings)
    throw InputError("sequence of " + std::to_string(start + T) + " positions exceeds the model's context of " +
                     std::to_string(config_.max_position_embeddings));
  // Checked where they are (a CPU batch is checked on the host before it travels), then moved to the
  // weights' device.
  if (tokens.numel() > 0) {
    int64_t lo = tokens.min().item<int64_t>(), hi = tokens.max().item<int64_t>();
    if (lo < 0 || hi >= config_.vocab_size)
      throw InputError("token id " + std::to_string(lo < 0 ? lo : hi) + " outside the vocabulary [0, " +
                       std::to_string(config_.vocab_size) + ")");
  }
  check_logit_positions(options, tokens.size(0), T);
  const c10::Device device = this->device();
  const bool sdpa = options.sdpa_attention || !device.is_cpu();
  const at::Tensor ids = tokens.device() == device ? tokens : tokens.to(device);
  std::vector<int64_t> kept = kept_layers(options.layers);
  if (cache && cache->k.empty()) {
    cache->k.resize(kept.size());
    cache->v.resize(kept.size());
  }
  if (cache && cache->k.size() != kept.size()) throw std::logic_error("KV cache was built for another layer list");

  ForwardResult result;
  at::Tensor x;
  if (options.input_hidden.defined()) {
    const auto& h = options.input_hidden;
    if (h.dim() != 3 || h.size(0) != tokens.size(0) || h.size(1) != T || h.size(2) != config_.hidden_size ||
        h.scalar_type() != dtype())
      throw InputError("forward: input_hidden must be [" + std::to_string(tokens.size(0)) + ", " +
                       std::to_string(T) + ", " + std::to_string(config_.hidden_size) + "] in the compute dtype");
    if (h.device() != device)
      throw InputError("forward: input_hidden is on " + h.device().str() + ", the model on " + device.str());
    x = h;
  } else {
    x = at::embedding(weights_.embed, ids);  // [B, T, D]
  }
  const double eps = config_.rms_norm_eps;
  for (size_t i = 0; i < kept.size(); ++i) {
    const LlamaLayerWeights& w = weights_.layers[kept[i]];
    if (options.return_hidden) result.hidden.push_back(x);
    at::Tensor h = attention(w, kernels::rms_norm(x, w.attn_norm, eps), start, cache ? &cache->k[i] : nullptr,
                             cache ? &cache->v[i] : nullptr, sdpa);
    x = x + h;
    at::Tensor xn = kernels::rms_norm(x, w.ffn_norm, eps);
    at::Tensor gate = at::linear(xn, w.w_gate);
    at::Tensor update = at::linear(kernels::swiglu_(gate, at::linear(xn, w.w_up)), w.w_down);
    if (tp_) tp_->reduce(update);  // row-parallel down_proj
    x = x + update;
  }
  if (options.return_hidden) result.hidden.push_back(x);
  if (cache) cache->length += T;
  if (options.logits) {
    // Chosen positions: gather their hidden states first (as [1, N, D]), so the norm and the head (and, under
    // tensor parallelism, the all-gather) run on N rows instead of B*T. Each row is normalised and
    // multiplied on its own, so the rows are the full logits' rows up to the GEMM's summation order.
    const bool chosen = options.logit_positions.defined();
    at::Tensor h = chosen ? x.reshape({-1, x.size(2)}).index_select(0, options.logit_positions.to(device)).unsqueeze(0) : x;
    result.logits = at::linear(kernels::rms_norm(h, weights_.final_norm, eps), weights_.lm_head).to(at::kFloat);
    if (tp_) result.logits = tp_->gather_vocab(result.logits, config_.vocab_size);  // vocab-parallel head
    if (chosen) result.logits = result.logits.squeeze(0);
    if (options.check_finite && !all_finite(result.logits)) {
      KVCache before;
      if (cache) {  // the cache as this call found it: its first `start` positions
        before.length = start;
        for (size_t i = 0; i < cache->k.size(); ++i) {
          before.k.push_back(start ? cache->k[i].narrow(2, 0, start) : at::Tensor());
          before.v.push_back(start ? cache->v[i].narrow(2, 0, start) : at::Tensor());
        }
      }
      const std::string where = locate_non_finite(tokens, options, cache ? &before : nullptr);
      throw NonFiniteError("non-finite logits (NaN or Inf): the first non-finite output is " +
                           (where.empty() ? std::string("not reproduced by a second run") : where));
    }
  }
  return result;
}

std::string LlamaModel::locate_non_finite(const at::Tensor& tokens, const ForwardOptions& options,
                                          const KVCache* cache) const {
  ForwardOptions o = options;
  o.return_hidden = true;
  o.check_finite = false;
  KVCache copy;
  if (cache) copy = *cache;  // tensors shared, never written: forward replaces them with new ones
  ForwardResult r = forward(tokens, o, cache ? &copy : nullptr);
  return describe_non_finite(r.hidden, kept_layers(options.layers), r.logits, options.input_hidden.defined());
}

}  // namespace layerprune
