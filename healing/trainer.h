// Healing: training the LoRA adapters of a pruned model (model/lora.h) on packed text, as the paper's
// appendix does (AdamW, cosine schedule with linear warm-up, global batch by gradient accumulation), with
// checkpoints that resume the identical run.
//
// Determinism: seeds drive the adapters' initialisation and the dropout masks (LoraConfig::seed) and the
// data order (PackedStream's seed, which also holds the sequence length). A checkpoint holds the adapters, AdamW's moments, the step, the data
// position and the dropout generator's state, so a resumed run repeats the uninterrupted one bit for bit on
// the same machine and thread count (tested).
//
// Devices: parameters, gradients and AdamW's moments live on the model's device (model/lora.h); a
// checkpoint holds host copies and the kind of device its dropout generator was, so a run checkpointed on
// a GPU resumes on the CPU and the other way round (the generator is then reseeded from seed and step).
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/lora.h"

namespace layerprune {

struct TrainConfig {
  int64_t steps = 5000;        // optimizer steps
  int64_t global_batch = 16;   // sequences per step
  int64_t micro_batch = 4;     // sequences per forward/backward (divides global_batch)
  double lr = 2e-4;
  int64_t warmup = 100;        // linear warm-up steps, then cosine decay to min_lr_ratio * lr
  double min_lr_ratio = 0.0;
  double weight_decay = 0.0, beta1 = 0.9, beta2 = 0.999, adam_eps = 1e-8;
  double clip = 1.0;           // max global gradient norm (0: no clipping)
  int64_t checkpoint_every = 0;  // steps (0: only at the end and on a stop request)
  std::string checkpoint_dir;    // "" : no checkpoints
  int64_t log_every = 10;
  // Another stop request besides g_stop_training (e.g. the worker's lease was lost): same effect.
  const std::atomic<bool>* stop = nullptr;
};

// The learning rate of 0-based step `step`: lr * (step + 1) / warmup during warm-up, then cosine from lr
// down to min_lr_ratio * lr at the last step.
double learning_rate(const TrainConfig& config, int64_t step);

// Packed training sequences: the token stream cut into consecutive windows of seq_len - 1 tokens, each
// prefixed with BOS (bos < 0, for a tokenizer that adds none: windows of seq_len tokens as they are);
// windows visited in a seeded random order, a new order each pass over the data.
class PackedStream {
 public:
  PackedStream(std::vector<int32_t> tokens, int32_t bos, int64_t seq_len, uint64_t seed);
  at::Tensor next(int64_t batch);  // [batch, seq_len] int64
  int64_t position() const { return position_; }  // windows served so far
  void seek(int64_t position);
  int64_t windows() const { return windows_; }
  int64_t seq_len() const { return seq_len_; }

 private:
  int64_t window_at(int64_t position);
  int64_t window_tokens() const { return bos_ >= 0 ? seq_len_ - 1 : seq_len_; }  // stream tokens per sequence
  std::vector<int32_t> tokens_;
  int32_t bos_;
  int64_t seq_len_, windows_, position_ = 0, epoch_ = -1;
  uint64_t seed_;
  std::vector<int64_t> order_;
};

struct TrainStep {
  int64_t step = 0;            // 1-based, after the update
  double loss = 0, lr = 0, grad_norm = 0, tokens_per_second = 0;
};

struct TrainResult {
  std::vector<TrainStep> steps;  // the steps run by this call
  int64_t final_step = 0;
  bool stopped = false;          // a stop was requested; the last checkpoint holds the state
  std::string last_checkpoint;
};

// Set (e.g. from a SIGTERM handler) to make train() checkpoint after the current step and return.
extern std::atomic<bool> g_stop_training;

// Trains from step 0, or from the checkpoint file `resume` (adapters, moments, step, data position, RNG).
// on_step is called after every step (logging, evaluation).
TrainResult train(LoraLlama& model, PackedStream& data, const TrainConfig& config, const std::string& resume = "",
                  const std::function<void(const TrainStep&)>& on_step = nullptr);

// Writes / reads a checkpoint (one safetensors file, written atomically).
void save_checkpoint(const std::string& path, const LoraLlama& model, const std::vector<at::Tensor>& exp_avg,
                     const std::vector<at::Tensor>& exp_avg_sq, int64_t step, int64_t data_position);

}  // namespace layerprune
