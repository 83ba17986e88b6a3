#include "model/tensor_parallel.h"

#include <ATen/ATen.h>

#include "common/error.h"

namespace layerprune {

namespace {
std::string n(int64_t v) { return std::to_string(v); }

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// [floor(rank * total / tp), floor((rank + 1) * total / tp)): sizes differ by at most one.
std::pair<int64_t, int64_t> even_range(int64_t total, int tp, int rank) {
  return {total * rank / tp, total * (rank + 1) / tp};
}
}  // namespace

TensorParallelPlan plan_tensor_parallel(const LlamaConfig& c, int tp, int rank) {
  if (tp < 1 || rank < 0 || rank >= tp)
    throw InputError("tensor parallelism: rank " + n(rank) + " of " + n(tp) + " is not a valid rank");
  const int64_t KV = c.num_key_value_heads, F = c.intermediate_size, V = c.vocab_size;
  TensorParallelPlan p;
  p.tp = tp;
  p.rank = rank;
  const HeadSplit split = split_heads(c, tp);
  p.heads = split.heads_per_rank;
  p.head_begin = rank * p.heads;
  p.kv_heads = split.kv_heads_per_rank;
  p.kv_replicated = split.kv_replicated;
  // Replicated: the tp/KV consecutive ranks that share a KV head.
  p.kv_head_begin = split.kv_replicated ? rank / (tp / KV) : rank * p.kv_heads;
  std::tie(p.ffn_begin, p.ffn_end) = even_range(F, tp, rank);
  p.vocab_shard = (V + tp - 1) / tp;
  p.vocab_begin = std::min(V, rank * p.vocab_shard);
  p.vocab_end = std::min(V, (rank + 1) * p.vocab_shard);
  return p;
}

ShardRule shard_rule(const std::string& name, const LlamaConfig& c, const TensorParallelPlan& p) {
  const int64_t hd = c.head_dim();
  auto rows = [](int64_t b, int64_t e) { return ShardRule{ShardRule::kRows, b, e}; };
  auto cols = [](int64_t b, int64_t e) { return ShardRule{ShardRule::kColumns, b, e}; };
  // A column-parallel projection's bias goes with its weight's rows (Qwen2's q/k/v biases).
  if (ends_with(name, "self_attn.q_proj.weight") || ends_with(name, "self_attn.q_proj.bias"))
    return rows(p.head_begin * hd, (p.head_begin + p.heads) * hd);
  if (ends_with(name, "self_attn.k_proj.weight") || ends_with(name, "self_attn.v_proj.weight") ||
      ends_with(name, "self_attn.k_proj.bias") || ends_with(name, "self_attn.v_proj.bias"))
    return rows(p.kv_head_begin * hd, (p.kv_head_begin + p.kv_heads) * hd);
  if (ends_with(name, "self_attn.o_proj.weight")) return cols(p.head_begin * hd, (p.head_begin + p.heads) * hd);
  if (ends_with(name, "mlp.gate_proj.weight") || ends_with(name, "mlp.up_proj.weight"))
    return rows(p.ffn_begin, p.ffn_end);
  if (ends_with(name, "mlp.down_proj.weight")) return cols(p.ffn_begin, p.ffn_end);
  if (name == "lm_head.weight") return rows(p.vocab_begin, p.vocab_end);
  return ShardRule{};  // embedding and norms
}

TensorParallel::TensorParallel(std::shared_ptr<Communicator> comm, TensorParallelPlan plan)
    : comm_(std::move(comm)), plan_(plan) {
  if (comm_->size() != plan_.tp || comm_->rank() != plan_.rank)
    throw std::logic_error("TensorParallel: plan is for rank " + n(plan_.rank) + " of " + n(plan_.tp) +
                           ", communicator is rank " + n(comm_->rank()) + " of " + n(comm_->size()));
}

void TensorParallel::reduce(at::Tensor& partial) const {
  if (plan_.tp == 1) return;
  if (!partial.is_contiguous()) partial = partial.contiguous();
  comm_->all_reduce_sum(partial);
}

at::Tensor TensorParallel::gather_vocab(const at::Tensor& local, int64_t vocab_size) const {
  if (plan_.tp == 1) return local;
  const int64_t B = local.size(0), T = local.size(1), shard = plan_.vocab_shard;
  at::Tensor block = local;
  if (local.size(2) < shard) block = at::constant_pad_nd(local, {0, shard - local.size(2)});  // the last ranks
  at::Tensor all = comm_->all_gather(block.contiguous());                 // [tp, B, T, shard]
  return all.permute({1, 2, 0, 3}).reshape({B, T, plan_.tp * shard}).narrow(2, 0, vocab_size).contiguous();
}

}  // namespace layerprune
