#include "healing/trainer.h"

#include <ATen/core/grad_mode.h>
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <mutex>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/progress.h"
#include "formats/lora_checkpoint.h"
#include "formats/safetensors.h"
#include "model/finite.h"
#include "model/tensor_io.h"

namespace layerprune {

std::atomic<bool> g_stop_training{false};

double learning_rate(const TrainConfig& c, int64_t step) {
  if (c.warmup > 0 && step < c.warmup) return c.lr * double(step + 1) / double(c.warmup);
  const int64_t span = std::max<int64_t>(1, c.steps - 1 - c.warmup);
  const double t = std::min(1.0, double(step - c.warmup) / double(span));
  const double floor = c.min_lr_ratio * c.lr;
  return floor + (c.lr - floor) * 0.5 * (1.0 + std::cos(M_PI * t));
}

PackedStream::PackedStream(std::vector<int32_t> tokens, int32_t bos, int64_t seq_len, uint64_t seed)
    : tokens_(std::move(tokens)), bos_(bos), seq_len_(seq_len), seed_(seed) {
  if (seq_len_ < 2) throw InputError("training sequences need at least 2 tokens");
  windows_ = int64_t(tokens_.size()) / window_tokens();
  if (windows_ < 1)
    throw InputError("the training text has " + std::to_string(tokens_.size()) + " tokens, fewer than one sequence of " +
                     std::to_string(window_tokens()));
}

int64_t PackedStream::window_at(int64_t position) {
  const int64_t epoch = position / windows_;
  if (epoch != epoch_) {  // a fresh seeded order for each pass over the data
    at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed_ * 1000003ull + uint64_t(epoch));
    at::Tensor perm = at::randperm(windows_, g, at::kLong);
    order_.assign(perm.data_ptr<int64_t>(), perm.data_ptr<int64_t>() + windows_);
    epoch_ = epoch;
  }
  return order_[size_t(position % windows_)];
}

at::Tensor PackedStream::next(int64_t batch) {
  at::Tensor out = at::empty({batch, seq_len_}, at::kLong);
  auto acc = out.accessor<int64_t, 2>();
  for (int64_t b = 0; b < batch; ++b) {
    const int32_t* src = tokens_.data() + window_at(position_++) * window_tokens();
    if (bos_ >= 0) {
      acc[b][0] = bos_;
      for (int64_t t = 1; t < seq_len_; ++t) acc[b][t] = src[t - 1];
    } else {
      for (int64_t t = 0; t < seq_len_; ++t) acc[b][t] = src[t];
    }
  }
  return out;
}

void PackedStream::seek(int64_t position) {
  if (position < 0) throw InputError("data position must be >= 0");
  position_ = position;
}

void save_checkpoint(const std::string& path, const LoraLlama& model, const std::vector<at::Tensor>& exp_avg,
                     const std::vector<at::Tensor>& exp_avg_sq, int64_t step, int64_t data_position) {
  // Full tensors (gathered from a tensor-parallel group; every rank takes part), written by one rank.
  std::vector<std::pair<std::string, at::Tensor>> full;
  const auto& adapters = model.adapters();
  for (size_t i = 0; i < adapters.size(); ++i)
    for (bool is_b : {false, true}) {
      const std::string n = adapters[i].name + (is_b ? ".lora_B" : ".lora_A");
      const size_t k = 2 * i + (is_b ? 1 : 0);
      full.emplace_back(n + ".weight", model.gather_full(i, is_b, is_b ? adapters[i].b : adapters[i].a));
      full.emplace_back(n + ".exp_avg", model.gather_full(i, is_b, exp_avg[k]));
      full.emplace_back(n + ".exp_avg_sq", model.gather_full(i, is_b, exp_avg_sq[k]));
    }
  const TensorParallel* tp = model.tensor_parallel();
  if (tp && tp->plan().rank != 0) return;
  std::vector<at::Tensor> keep;  // contiguous copies alive until the write
  std::vector<TensorToWrite> w;
  auto add = [&](const std::string& name, const at::Tensor& t) {
    keep.push_back(t.detach().to(at::kCPU).contiguous());  // from any device: the file is device-independent
    w.push_back(tensor_to_write(name, keep.back()));
  };
  for (const auto& [name, t] : full) add(name, t);
  at::Generator& gen = const_cast<LoraLlama&>(model).generator();
  add("rng_state", gen.get_state());
  const LoraConfig& c = model.config();
  nlohmann::json cfg{{"rank", c.rank}, {"alpha", c.alpha > 0 ? c.alpha : double(c.rank)}, {"dropout", c.dropout},
                     {"targets", c.targets}, {"seed", c.seed}, {"kept_layers", model.kept_layers()}};
  LoraCheckpointInfo info;
  info.step = step;
  info.data_position = data_position;
  info.lora = cfg;
  info.rng_device = c10::DeviceTypeName(gen.device().type(), /*lower_case=*/true);
  write_safetensors(path, w, lora_checkpoint_metadata(info));
}

namespace {

struct Loaded {
  int64_t step = 0, data_position = 0;
};

Loaded load_checkpoint(const std::string& path, LoraLlama& model, std::vector<at::Tensor>& exp_avg,
                       std::vector<at::Tensor>& exp_avg_sq) {
  auto file = SafetensorsFile::open(path);
  const LoraConfig& c = model.config();
  auto& adapters = model.adapters();
  // Every tensor is checked (name, F32, full shape, finite) before any is copied (formats/lora_checkpoint.h).
  std::vector<ExpectedTensor> expected;
  for (const LoraAdapter& a : adapters)
    for (const char* suffix : {"weight", "exp_avg", "exp_avg_sq"}) {
      expected.push_back({a.name + ".lora_A." + suffix, {c.rank, a.full_cols}});
      expected.push_back({a.name + ".lora_B." + suffix, {a.full_rows, c.rank}});
    }
  const nlohmann::json identity = {{"rank", c.rank}, {"kept_layers", model.kept_layers()}, {"targets", c.targets}};
  const LoraCheckpointInfo info = check_lora_checkpoint(*file, path, identity, expected);
  // Full tensors in the file; under tensor parallelism each rank takes its shard.
  auto get = [&](size_t i, bool is_b, const std::string& suffix) {
    const TensorView* v = file->find(model.adapters()[i].name + (is_b ? ".lora_B." : ".lora_A.") + suffix);
    return model.shard_of(i, is_b, tensor_from_view(*v, file).clone());
  };
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < adapters.size(); ++i) {
    adapters[i].a.copy_(get(i, false, "weight"));
    adapters[i].b.copy_(get(i, true, "weight"));
    exp_avg[2 * i].copy_(get(i, false, "exp_avg"));
    exp_avg[2 * i + 1].copy_(get(i, true, "exp_avg"));
    exp_avg_sq[2 * i].copy_(get(i, false, "exp_avg_sq"));
    exp_avg_sq[2 * i + 1].copy_(get(i, true, "exp_avg_sq"));
  }
  Loaded l;
  l.step = info.step;
  l.data_position = info.data_position;
  // The dropout generator's state resumes on a device of the kind that saved it (older checkpoints: the
  // CPU's). Another kind's state means nothing to this generator (a GPU run resumed on the CPU, or the
  // other way round): it is reseeded from the seed and the step, so the resumed run is deterministic, and
  // only its dropout masks differ from an uninterrupted run on the first device.
  at::Generator& gen = model.generator();
  const std::string here = c10::DeviceTypeName(gen.device().type(), /*lower_case=*/true);
  if (info.rng_device == here) {
    try {
      gen.set_state(tensor_from_view(*file->find("rng_state"), file).clone());
    } catch (const c10::Error&) {  // LibTorch checks the state's size: a damaged file
      throw InputError(path + ": tensor rng_state is not a " + here + " generator's state (" +
                       format_shape(file->find("rng_state")->shape) + " bytes)");
    }
  } else {
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_current_seed(c.seed * 1000003ull + uint64_t(l.step));
    const TensorParallel* tp = model.tensor_parallel();
    if (!tp || tp->plan().rank == 0)
      std::fprintf(stderr, "heal: %s was written with dropout drawn on %s; resuming on %s, the dropout generator is "
                   "reseeded (seed %llu, step %lld): adapters, moments, step and data position resume exactly\n",
                   path.c_str(), info.rng_device.c_str(), here.c_str(), (unsigned long long)c.seed, (long long)l.step);
  }
  return l;
}

std::string checkpoint_name(const std::string& dir, int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "/step-%06lld.safetensors", (long long)step);
  return dir + buf;
}

}  // namespace

TrainResult train(LoraLlama& model, PackedStream& data, const TrainConfig& c, const std::string& resume,
                  const std::function<void(const TrainStep&)>& on_step) {
  if (c.micro_batch < 1 || c.global_batch < c.micro_batch || c.global_batch % c.micro_batch != 0)
    throw InputError("global batch " + std::to_string(c.global_batch) + " must be a multiple of the micro batch " +
                     std::to_string(c.micro_batch));
  std::vector<at::Tensor> params = model.parameters(), m, v;
  for (const at::Tensor& p : params) {
    m.push_back(at::zeros_like(p).detach());
    v.push_back(at::zeros_like(p).detach());
  }
  const TensorParallel* tp = model.tensor_parallel();
  const bool leader = !tp || tp->plan().rank == 0;  // logs once per group
  int64_t step = 0;
  if (!resume.empty()) {
    Loaded l = load_checkpoint(resume, model, m, v);
    step = l.step;
    data.seek(l.data_position);
    if (leader) std::fprintf(stderr, "heal: resumed %s at step %lld\n", resume.c_str(), (long long)step);
  }
  if (!c.checkpoint_dir.empty() && leader) std::filesystem::create_directories(c.checkpoint_dir);
  TrainResult result;
  auto checkpoint = [&]() {
    if (c.checkpoint_dir.empty()) return;
    result.last_checkpoint = checkpoint_name(c.checkpoint_dir, step);
    save_checkpoint(result.last_checkpoint, model, m, v, step, data.position());
  };
  const int64_t accum = c.global_batch / c.micro_batch;
  Progress progress("heal", c.steps, "steps");
  progress.advance(step);
  while (step < c.steps) {
    auto t0 = std::chrono::steady_clock::now();
    for (at::Tensor& p : params) p.mutable_grad() = at::Tensor();
    double loss_sum = 0;
    for (int64_t k = 0; k < accum; ++k) {
      const int64_t position = data.position();
      at::Tensor tokens = data.next(c.micro_batch);
      at::Tensor loss = model.loss(tokens, /*train=*/true);
      const double value = loss.item<double>();
      if (!std::isfinite(value)) {  // the same on every rank of a TP group (the logits are gathered)
        const std::string where = model.locate_non_finite(tokens);
        throw NonFiniteError("heal: step " + std::to_string(step + 1) + ", micro-batch " + std::to_string(k + 1) +
                             " (training sequences " + std::to_string(position) + "-" +
                             std::to_string(position + c.micro_batch - 1) + "): non-finite training loss; " +
                             (where.empty() ? std::string("the evaluation-mode forward is finite (the dropout masks or "
                                                          "the training-mode arithmetic overflowed)")
                                            : "the first non-finite output is " + where));
      }
      (loss / double(accum)).backward();
      loss_sum += value;
    }
    TrainStep s;
    s.lr = learning_rate(c, step);
    {
      at::NoGradGuard no_grad;
      model.reduce_gradients();  // tensor parallelism: replicated adapters' partial gradients
      s.grad_norm = model.gradient_norm();
      if (!std::isfinite(s.grad_norm)) {
        std::string first;
        for (const LoraAdapter& a : model.adapters())
          for (const at::Tensor* p : {&a.a, &a.b})
            if (first.empty() && p->grad().defined() && !all_finite(p->grad()))
              first = a.name + (p == &a.a ? ".lora_A" : ".lora_B");
        throw NonFiniteError("heal: step " + std::to_string(step + 1) + ": the adapters' gradient norm is non-finite "
                             "(the loss was finite, " + std::to_string(loss_sum / double(accum)) + ")" +
                             (first.empty() ? std::string() : "; first in " + first) +
                             ": the gradients overflowed (a lower learning rate or float32 may help)");
      }
      const double clip = c.clip > 0 && s.grad_norm > c.clip ? c.clip / (s.grad_norm + 1e-6) : 1.0;
      const int64_t t = step + 1;
      const double bc1 = 1.0 - std::pow(c.beta1, double(t)), bc2 = 1.0 - std::pow(c.beta2, double(t));
      for (size_t i = 0; i < params.size(); ++i) {  // AdamW (Loshchilov & Hutter): decoupled weight decay
        at::Tensor g = params[i].grad() * clip;
        m[i].mul_(c.beta1).add_(g, 1.0 - c.beta1);
        v[i].mul_(c.beta2).addcmul_(g, g, 1.0 - c.beta2);
        if (c.weight_decay > 0) params[i].mul_(1.0 - s.lr * c.weight_decay);
        at::Tensor denom = (v[i] / bc2).sqrt_().add_(c.adam_eps);
        params[i].addcdiv_(m[i], denom, -s.lr / bc1);
      }
    }
    ++step;
    s.step = step;
    s.loss = loss_sum / double(accum);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    s.tokens_per_second = double(c.global_batch * data.seq_len()) / secs;
    result.steps.push_back(s);
    progress.advance();
    if (leader && c.log_every > 0 && (step % c.log_every == 0 || step == c.steps))
      std::fprintf(stderr, "heal: step %lld/%lld loss %.4f lr %.3g grad-norm %.3g %.0f tokens/s\n", (long long)step,
                   (long long)c.steps, s.loss, s.lr, s.grad_norm, s.tokens_per_second);
    if (on_step) on_step(s);
    // A group stops together: a rank that saw the signal tells the others (one tiny collective a step).
    const bool requested = g_stop_training.load() || (c.stop && c.stop->load());
    const bool stop = tp ? tp->comm().any(requested) : requested;
    if (stop) {
      checkpoint();
      result.stopped = true;
      break;
    }
    if (c.checkpoint_every > 0 && step % c.checkpoint_every == 0 && step < c.steps) checkpoint();
  }
  if (!result.stopped) checkpoint();
  result.final_step = step;
  return result;
}

}  // namespace layerprune
