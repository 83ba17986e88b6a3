// Running one experiment task (experiment/experiment.h: distances, evaluate, heal) on a worker group.
//
// The task arrives as its kind, its payload (the model, calibration, evaluation and healing specs and the
// grid points) and the results of the tasks it depends on (the distances table for similarity points).
// Every rank of a tensor-parallel group runs the same task on its shard; all return the same result JSON,
// which the group's rank 0 reports:
//   distances: {"distances": <DistanceResult JSON>, "provenance": {...}}
//   evaluate:  {"points": [PointResult JSON...], "provenance": {..., "sweep": {work counts}}}
//   heal:      {"points": [PointResult JSON + "healing": {steps, train loss, checkpoint...}], "provenance": {...}}
//              or, stopped by a signal: {"stopped": true, "checkpoint": PATH, ...} (nothing to store)
// Provenance: code version, model fingerprint, data sha256s, seed, dtype, tp, threads, host.
#pragma once
#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "experiment/experiment.h"
#include "model/comm.h"
#include "model/llama.h"
#include "formats/tokenizer.h"
#include "healing/trainer.h"

namespace layerprune {

// The communicator of a tensor-parallel group whose model is on a GPU: NCCL (the worker makes it from its
// MPI group, worker_main.cc). Every rank of the group calls it at the same point.
using DeviceCommunicator = std::function<std::shared_ptr<Communicator>(c10::Device)>;

// The model a worker keeps loaded between tasks: a task for the same (path, dtype, device) reuses it,
// another model replaces it (a 140 GB checkpoint is not reloaded per grid point).
class ModelCache {
 public:
  // comm: the group's host communicator (MPI), used for a model on the CPU and for agreeing on errors.
  // local_rank: this process's rank on its node, which picks its GPU for device "cuda".
  explicit ModelCache(std::shared_ptr<Communicator> comm = nullptr, int local_rank = 0,
                      DeviceCommunicator device_comm = nullptr)
      : comm_(std::move(comm)), local_rank_(local_rank), device_comm_(std::move(device_comm)) {}
  // Loads (or keeps) the model of `spec` (an HF directory with its tokenizer) on spec.device. Under tensor
  // parallelism every rank learns whether all ranks loaded their shard; InputError naming the model
  // otherwise (a GPU that is not there, a build without NCCL for a TP group on GPUs, a bad checkpoint).
  const LlamaModel& model(const ModelSpec& spec);
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const std::string& loaded_name() const { return name_; }  // "" when none
  const std::string& fingerprint() const { return fingerprint_; }

 private:
  std::shared_ptr<Communicator> comm_;
  int local_rank_ = 0;
  DeviceCommunicator device_comm_;
  std::string key_, name_, fingerprint_;
  std::unique_ptr<LlamaModel> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
};

struct TaskContext {
  std::string work_dir;  // checkpoints go under work_dir/checkpoints/<task key>/ (a shared filesystem)
  std::string task_key;
  int tp = 1;
  // Called after each healing step (the worker's heartbeat carries it as progress).
  std::function<void(const TrainStep&)> on_train_step;
  // Set when the task should stop early (its lease was lost or cancelled): healing checkpoints and returns
  // a stopped result.
  const std::atomic<bool>* abandon = nullptr;
};

// Runs the task; InputError for a malformed payload or bad data (named), CommError if the group breaks.
nlohmann::json run_experiment_task(const std::string& kind, const nlohmann::json& payload, const nlohmann::json& inputs,
                                   ModelCache& cache, const TaskContext& context);

}  // namespace layerprune
