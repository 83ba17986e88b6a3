// The NCCL backend of the communicator seam: collectives on CUDA tensors between the GPUs of one
// tensor-parallel group, with host-side messages (tasks, agreement) over the group's MPI communicator.
// Compiled only where CMake found CUDA and NCCL (LAYERPRUNE_HAVE_NCCL); run only on a GPU machine.
//
// The at::Tensor entry points need a CUDA build of LibTorch (Debian's is CPU-only: on GPU clusters users
// point Torch_DIR at the official CUDA LibTorch). The raw device-pointer entry points need only the CUDA
// runtime, so the backend is testable with any LibTorch. Every wait is bounded: NCCL runs non-blocking,
// the host polls the stream and NCCL's async error, and on timeout the communicator is aborted (CommError).
#pragma once
#include <cuda_runtime.h>
#include <nccl.h>

#include <memory>

#include "model/comm.h"
#include "worker/mpi_comm.h"

namespace layerprune {

class NcclCommunicator : public Communicator {
 public:
  // One NCCL rank per MPI rank of `host`, on CUDA device `device` (ranks must use distinct devices).
  // The unique id travels over `host`; initialisation is bounded by the timeout too.
  NcclCommunicator(std::shared_ptr<MpiCommunicator> host, int device, double timeout_seconds);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  std::string backend() const override { return "nccl"; }
  void all_reduce_sum(at::Tensor& t) override;
  void broadcast(at::Tensor& t, int root) override;
  at::Tensor all_gather(const at::Tensor& t) override;
  void barrier() override;
  void broadcast_string(std::string& s, int root) override { host_->broadcast_string(s, root); }
  bool any(bool flag) override { return host_->any(flag); }

  // Device-pointer collectives (count elements of `type`), completed before they return.
  void all_reduce_sum(void* data, size_t count, ncclDataType_t type);
  void broadcast(void* data, size_t count, ncclDataType_t type, int root);
  void all_gather(const void* in, void* out, size_t count, ncclDataType_t type);  // out: size() * count
  cudaStream_t stream() const { return stream_; }

 private:
  void wait(const char* what);  // stream done, or CommError after aborting the communicator

  std::shared_ptr<MpiCommunicator> host_;
  int device_;
  double timeout_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

}  // namespace layerprune
