// The MPI backend of the communicator seam, for CPU tensors (float32, bfloat16), and MPI process set-up:
// initialisation and the split of the world into tensor-parallel groups.
#pragma once
#include <mpi.h>

#include <memory>
#include <string>

#include "model/comm.h"

namespace layerprune {

class MpiCommunicator : public Communicator {
 public:
  // Collectives over `comm` (not owned). Every wait is bounded by timeout_seconds: on expiry CommError.
  MpiCommunicator(MPI_Comm comm, double timeout_seconds, std::string label);
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }
  void all_reduce_sum(at::Tensor& t) override;
  void broadcast(at::Tensor& t, int root) override;
  at::Tensor all_gather(const at::Tensor& t) override;
  void barrier() override;
  void broadcast_string(std::string& s, int root) override;
  bool any(bool flag) override;

  MPI_Comm comm() const { return comm_; }
  double timeout_seconds() const { return timeout_; }

 private:
  // Polls a non-blocking collective until it completes or the timeout expires (CommError).
  void wait(MPI_Request& request, const char* what, uint64_t bytes);

  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
  double timeout_;
  std::string label_;  // "group 1 rank 0 (world rank 2)": who is waiting, in error messages
};

// The world split into G = world_size / tp groups of tp consecutive ranks (MPI_Comm_split).
struct MpiGroups {
  int world_rank = 0, world_size = 1;
  int tp = 1;            // ranks per group
  int group = 0, groups = 1;
  int group_rank = 0;    // rank inside the group; 0 talks to the outside world
  MPI_Comm group_comm = MPI_COMM_NULL;
  int local_ranks = 1;   // ranks of the whole job on this host (to divide the cores between them)
  int local_rank = 0;    // this rank among them: its GPU is local_rank mod the GPUs it sees
};

// Splits MPI_COMM_WORLD; InputError when the world size is not a multiple of tp.
MpiGroups split_into_groups(int tp);

// MPI_Abort with a message on stderr: the way out for a rank that cannot go on (never hang its group).
[[noreturn]] void abort_job(const std::string& message, int status);

}  // namespace layerprune
