// One tensor-parallel group of layerprune-worker: its ranks, communicator and
// loaded model, and how it runs a task. Every rank of the group calls the same
// method with the same task; rank 0 (the leader) is the one that writes results
// and talks to the outside. Used by both task sources: a tasks file
// (worker_main.cc) and the coordinator (lease_loop.h).
#pragma once
#include <atomic>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "model/comm.h"
#include "worker/experiment_tasks.h"
#include "model/llama.h"
#include "worker/mpi_comm.h"
#include "worker/worker_tasks.h"

namespace layerprune {

struct WorkerGroup {
  MpiGroups groups;
  std::shared_ptr<CountingCommunicator> comm;
  std::string out_dir, work_dir, label;
  std::string loaded_key;             // model + dtype of `model`
  std::unique_ptr<LlamaModel> model;  // forward tasks' model
  std::unique_ptr<ModelCache> cache;  // experiment tasks' model (one of the two is loaded at a time)
  DeviceCommunicator device_comm;     // NCCL for a TP group on GPUs (CUDA builds; worker_main.cc)

  bool leader() const { return groups.group_rank == 0; }
  void log(const std::string& message) const;

  // A forward task: <out>/<id>.safetensors and <id>.json
  // (worker/worker_tasks.h).
  void run(const ForwardTask& task);
  // An experiment task (worker/experiment_tasks.h) with the results of its
  // dependencies; returns its result (the same on every rank). task_key names
  // its checkpoint directory.
  nlohmann::json run(const std::string& kind, const nlohmann::json& payload, const nlohmann::json& inputs,
                     const std::string& task_key, const std::function<void(const TrainStep&)>& on_step = nullptr,
                     const std::atomic<bool>* abandon = nullptr);

 private:
  void load(const ForwardTask& task);
};

// Test hook: LAYERPRUNE_TEST_FAULT="load@R" makes group rank R fail to load its
// shard, "stall@R" makes it sleep through the forward pass (its peers must time
// out, not hang).
bool test_fault(const char* what, int group_rank);

}  // namespace layerprune
