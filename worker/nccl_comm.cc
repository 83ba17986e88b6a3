#include "worker/nccl_comm.h"

#include <ATen/ATen.h>

#include <chrono>
#include <cstring>
#include <thread>

namespace layerprune {

namespace {

void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw CommError(std::string(what) + ": " + cudaGetErrorString(e));
}

ncclDataType_t nccl_type(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return ncclFloat32;
    case at::kBFloat16: return ncclBfloat16;
    case at::kHalf: return ncclFloat16;
    case at::kLong: return ncclInt64;
    case at::kByte: return ncclUint8;
    default: throw std::invalid_argument(std::string("NCCL backend: unsupported dtype ") + c10::toString(t.scalar_type()));
  }
}

void check_cuda_tensor(const at::Tensor& t, const char* what) {
  if (!t.is_cuda() || !t.is_contiguous())
    throw std::invalid_argument(std::string(what) + ": the NCCL backend needs contiguous CUDA tensors");
}

}  // namespace

NcclCommunicator::NcclCommunicator(std::shared_ptr<MpiCommunicator> host, int device, double timeout_seconds)
    : host_(std::move(host)), device_(device), timeout_(timeout_seconds) {
  check_cuda(cudaSetDevice(device_), "cudaSetDevice");
  check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  ncclUniqueId id;
  if (host_->rank() == 0 && ncclGetUniqueId(&id) != ncclSuccess) throw CommError("ncclGetUniqueId failed");
  std::string bytes(reinterpret_cast<const char*>(&id), sizeof(id));
  host_->broadcast_string(bytes, 0);
  std::memcpy(&id, bytes.data(), sizeof(id));
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // every call returns at once; wait() bounds the time
  ncclResult_t r = ncclCommInitRankConfig(&comm_, host_->size(), id, host_->rank(), &config);
  if (r != ncclSuccess && r != ncclInProgress)
    throw CommError(std::string("ncclCommInitRankConfig failed: ") + ncclGetErrorString(r));
  wait("NCCL initialisation");
}

NcclCommunicator::~NcclCommunicator() {
  if (comm_) ncclCommDestroy(comm_);
  if (stream_) cudaStreamDestroy(stream_);
}

void NcclCommunicator::wait(const char* what) {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  while (true) {
    ncclResult_t async = ncclSuccess;
    ncclCommGetAsyncError(comm_, &async);
    if (async != ncclSuccess && async != ncclInProgress) {
      ncclCommAbort(comm_);
      comm_ = nullptr;
      throw CommError(std::string(what) + " failed: " + ncclGetErrorString(async));
    }
    if (async == ncclSuccess) {
      cudaError_t q = cudaStreamQuery(stream_);
      if (q == cudaSuccess) return;
      if (q != cudaErrorNotReady) check_cuda(q, what);
    }
    double waited = std::chrono::duration<double>(clock::now() - start).count();
    if (waited > timeout_) {
      ncclCommAbort(comm_);
      comm_ = nullptr;
      throw CommError(std::string(what) + " did not complete within " + std::to_string(int(timeout_)) +
                      " s: another rank of the group failed or stalled");
    }
    std::this_thread::sleep_for(std::chrono::microseconds(waited < 1 ? 5 : 500));
  }
}

void NcclCommunicator::all_reduce_sum(void* data, size_t count, ncclDataType_t type) {
  if (!comm_) throw CommError("NCCL communicator was aborted");
  ncclAllReduce(data, data, count, type, ncclSum, comm_, stream_);
  wait("all_reduce_sum");
}

void NcclCommunicator::broadcast(void* data, size_t count, ncclDataType_t type, int root) {
  if (!comm_) throw CommError("NCCL communicator was aborted");
  ncclBroadcast(data, data, count, type, root, comm_, stream_);
  wait("broadcast");
}

void NcclCommunicator::all_gather(const void* in, void* out, size_t count, ncclDataType_t type) {
  if (!comm_) throw CommError("NCCL communicator was aborted");
  ncclAllGather(in, out, count, type, comm_, stream_);
  wait("all_gather");
}

void NcclCommunicator::all_reduce_sum(at::Tensor& t) {
  check_cuda_tensor(t, "all_reduce_sum");
  // The tensor's producers ran on LibTorch's stream: finish them before NCCL's stream reads.
  check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  all_reduce_sum(t.data_ptr(), size_t(t.numel()), nccl_type(t));
}

void NcclCommunicator::broadcast(at::Tensor& t, int root) {
  check_cuda_tensor(t, "broadcast");
  check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  broadcast(t.data_ptr(), size_t(t.numel()), nccl_type(t), root);
}

at::Tensor NcclCommunicator::all_gather(const at::Tensor& t) {
  at::Tensor in = t.contiguous();
  check_cuda_tensor(in, "all_gather");
  std::vector<int64_t> shape = in.sizes().vec();
  shape.insert(shape.begin(), size());
  at::Tensor out = at::empty(shape, in.options());
  check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  all_gather(in.data_ptr(), out.data_ptr(), size_t(in.numel()), nccl_type(in));
  return out;
}

void NcclCommunicator::barrier() {
  check_cuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  host_->barrier();
}

}  // namespace layerprune
