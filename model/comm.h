// The one seam between the model and distribution: the few collectives tensor parallelism needs.
//
// The model code calls only this interface; which transport carries the bytes is the backend's business:
//   SoloCommunicator   one process (every collective is the identity)
//   MpiCommunicator    CPU tensors over MPI (worker/mpi_comm.h)
//   NcclCommunicator   CUDA tensors over NCCL, host messages over MPI (worker/nccl_comm.h; CUDA builds only)
// Backends bound every wait: a collective that does not complete within the timeout throws CommError
// naming the operation, so a rank that died or stalled makes its group exit instead of hanging.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

namespace layerprune {

// A collective that failed or timed out; the group cannot continue.
class CommError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;  // "solo", "mpi", "nccl"

  // In place: t = sum over ranks of t. t must be contiguous (float32 or bfloat16).
  virtual void all_reduce_sum(at::Tensor& t) = 0;
  // In place: t = root's t. Same shape and dtype on every rank.
  virtual void broadcast(at::Tensor& t, int root) = 0;
  // [size, *t.shape]: every rank's t stacked in rank order. Same shape and dtype on every rank.
  virtual at::Tensor all_gather(const at::Tensor& t) = 0;
  virtual void barrier() = 0;

  // Host-side control messages (tasks, errors): root's string, any length, lands on every rank.
  virtual void broadcast_string(std::string& s, int root) = 0;
  // True on every rank when `flag` is true on any rank (e.g. "some rank failed to load its shard").
  virtual bool any(bool flag) = 0;
};

// Counts and times what goes through a communicator (the tests check the model's exact traffic; the
// worker reports it with every result). Bytes are each call's payload on one rank: an all-reduce of a
// [B, T, D] float32 tensor counts B*T*D*4, an all-gather counts its input.
struct CommStats {
  uint64_t all_reduce = 0, all_reduce_bytes = 0;
  uint64_t broadcast = 0, broadcast_bytes = 0;
  uint64_t all_gather = 0, all_gather_bytes = 0;
  uint64_t barrier = 0;
  double seconds = 0;  // wall time inside tensor collectives (waiting for slower ranks included)
};

class CountingCommunicator : public Communicator {
 public:
  explicit CountingCommunicator(std::shared_ptr<Communicator> inner) : inner_(std::move(inner)) {}
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  std::string backend() const override { return inner_->backend(); }
  void all_reduce_sum(at::Tensor& t) override;
  void broadcast(at::Tensor& t, int root) override;
  at::Tensor all_gather(const at::Tensor& t) override;
  void barrier() override;
  void broadcast_string(std::string& s, int root) override { inner_->broadcast_string(s, root); }
  bool any(bool flag) override { return inner_->any(flag); }

  const CommStats& stats() const { return stats_; }
  void reset() { stats_ = {}; }

 private:
  std::shared_ptr<Communicator> inner_;
  CommStats stats_;
};

class SoloCommunicator : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "solo"; }
  void all_reduce_sum(at::Tensor&) override {}
  void broadcast(at::Tensor&, int) override {}
  at::Tensor all_gather(const at::Tensor& t) override { return t.unsqueeze(0); }
  void barrier() override {}
  void broadcast_string(std::string&, int) override {}
  bool any(bool flag) override { return flag; }
};

}  // namespace layerprune
