// The NCCL backend of the communicator seam: collectives on CUDA tensors between the GPUs of one
// tensor-parallel group, with host-side messages (tasks, agreement) over a host communicator: the group's
// MpiCommunicator in the worker, or a SoloCommunicator for a group of one (no MPI needed: the GPU check).
// Compiled only where CMake found CUDA and NCCL (LAYERPRUNE_HAVE_NCCL); run only on a GPU machine.
//
// The at::Tensor entry points run on LibTorch's current CUDA stream of the device (the compute stream): a
// collective is ordered after the kernels that produced its tensor and before the ones that read the result,
// with no device-wide synchronisation. The raw device-pointer entry points run on the communicator's own
// stream and need only the CUDA runtime. Every wait is bounded: NCCL runs non-blocking, the host polls NCCL's
// state and an event recorded after the collective, and on timeout (or NCCL's async error) the communicator
// is aborted (CommError). Each call returns when its collective has completed on the device.
#pragma once
#include <cuda_runtime.h>
#include <nccl.h>

#include <memory>

#include "model/comm.h"

namespace layerprune {

class NcclCommunicator : public Communicator {
 public:
  // One NCCL rank per rank of `host` (rank and size are host's), on CUDA device `device` (ranks must use
  // distinct devices). The unique id travels over `host` (broadcast_string); initialisation is bounded by
  // the timeout too. `host` needs only rank, size, broadcast_string, any and barrier.
  NcclCommunicator(std::shared_ptr<Communicator> host, int device, double timeout_seconds);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  std::string backend() const override { return "nccl"; }
  // Contiguous CUDA tensors on this communicator's device (float32, bfloat16, float16, int64, uint8).
  void all_reduce_sum(at::Tensor& t) override;
  void broadcast(at::Tensor& t, int root) override;
  at::Tensor all_gather(const at::Tensor& t) override;
  void barrier() override;
  void broadcast_string(std::string& s, int root) override { host_->broadcast_string(s, root); }
  bool any(bool flag) override { return host_->any(flag); }

  // Device-pointer collectives (count elements of `type`) on stream(), completed before they return.
  void all_reduce_sum(void* data, size_t count, ncclDataType_t type);
  void broadcast(void* data, size_t count, ncclDataType_t type, int root);
  void all_gather(const void* in, void* out, size_t count, ncclDataType_t type);  // out: size() * count
  cudaStream_t stream() const { return stream_; }
  int device() const { return device_; }

 private:
  // After an NCCL call `r` on `stream`: NCCL's enqueue settled, then the event recorded after it reached, or
  // CommError after aborting the communicator (NCCL error, CUDA error, or timeout).
  void complete(ncclResult_t r, cudaStream_t stream, const char* what);
  [[noreturn]] void fail(const std::string& message);
  cudaStream_t torch_stream() const;  // LibTorch's current stream on device_

  std::shared_ptr<Communicator> host_;
  int device_;
  double timeout_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t done_ = nullptr;
};

}  // namespace layerprune
