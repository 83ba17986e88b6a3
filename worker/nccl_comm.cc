#include "worker/nccl_comm.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <chrono>
#include <cstring>
#include <stdexcept>
#include <thread>

namespace layerprune {

namespace {

void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw CommError(std::string(what) + ": " + cudaGetErrorString(e));
}

ncclDataType_t nccl_type(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return ncclFloat32;
    case at::kDouble: return ncclFloat64;  // LoRA's gradient norm under TP (model/lora.cc)
    case at::kBFloat16: return ncclBfloat16;
    case at::kHalf: return ncclFloat16;
    case at::kLong: return ncclInt64;
    case at::kByte: return ncclUint8;
    default: throw std::invalid_argument(std::string("NCCL backend: unsupported dtype ") + c10::toString(t.scalar_type()));
  }
}

void check_cuda_tensor(const at::Tensor& t, int device, const char* what, bool contiguous = true) {
  if (!t.is_cuda() || (contiguous && !t.is_contiguous()))
    throw std::invalid_argument(std::string(what) + ": the NCCL backend needs contiguous CUDA tensors, got " +
                                (t.is_cuda() ? "a non-contiguous one" : "one on " + t.device().str()));
  if (t.device().index() != device)
    throw std::invalid_argument(std::string(what) + ": tensor on " + t.device().str() +
                                ", the communicator on cuda:" + std::to_string(device));
}

}  // namespace

NcclCommunicator::NcclCommunicator(std::shared_ptr<Communicator> host, int device, double timeout_seconds)
    : host_(std::move(host)), device_(device), timeout_(timeout_seconds) {
  if (!host_) throw std::invalid_argument("NcclCommunicator: no host communicator");
  check_cuda(cudaSetDevice(device_), "cudaSetDevice");
  check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  check_cuda(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming), "cudaEventCreate");
  ncclUniqueId id;
  std::memset(&id, 0, sizeof id);
  if (host_->rank() == 0 && ncclGetUniqueId(&id) != ncclSuccess) throw CommError("ncclGetUniqueId failed");
  std::string bytes(reinterpret_cast<const char*>(&id), sizeof(id));
  host_->broadcast_string(bytes, 0);
  if (bytes.size() != sizeof(id)) throw CommError("NCCL unique id: wrong size from the host communicator");
  std::memcpy(&id, bytes.data(), sizeof(id));
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // every call returns at once; complete() bounds the time
  ncclResult_t r = ncclCommInitRankConfig(&comm_, host_->size(), id, host_->rank(), &config);
  complete(r, stream_, "NCCL initialisation");
}

NcclCommunicator::~NcclCommunicator() {
  if (comm_) ncclCommDestroy(comm_);
  if (done_) cudaEventDestroy(done_);
  if (stream_) cudaStreamDestroy(stream_);
}

void NcclCommunicator::fail(const std::string& message) {
  if (comm_) ncclCommAbort(comm_);
  comm_ = nullptr;
  throw CommError(message);
}

cudaStream_t NcclCommunicator::torch_stream() const {
  return c10::cuda::getCurrentCUDAStream(c10::DeviceIndex(device_)).stream();
}

void NcclCommunicator::complete(ncclResult_t r, cudaStream_t stream, const char* what) {
  if (r != ncclSuccess && r != ncclInProgress)
    fail(std::string(what) + " failed: " + ncclGetErrorString(r));
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  auto waited = [&] { return std::chrono::duration<double>(clock::now() - start).count(); };
  auto pause = [&] {
    const double w = waited();
    if (w > timeout_)
      fail(std::string(what) + " did not complete within " + std::to_string(int(timeout_)) +
           " s: another rank of the group failed or stalled");
    std::this_thread::sleep_for(std::chrono::microseconds(w < 1 ? 5 : 500));
  };
  // 1. A non-blocking communicator may still be enqueuing the call (or initialising): its state settles.
  while (true) {
    ncclResult_t async = ncclSuccess;
    ncclCommGetAsyncError(comm_, &async);
    if (async == ncclSuccess) break;
    if (async != ncclInProgress) fail(std::string(what) + " failed: " + ncclGetErrorString(async));
    pause();
  }
  // 2. The device reaches the event recorded after the collective (a rank that died leaves the kernel
  //    spinning: NCCL's async error or the timeout then ends the wait).
  check_cuda(cudaEventRecord(done_, stream), what);
  while (true) {
    const cudaError_t q = cudaEventQuery(done_);
    if (q == cudaSuccess) return;
    if (q != cudaErrorNotReady) check_cuda(q, what);
    ncclResult_t async = ncclSuccess;
    ncclCommGetAsyncError(comm_, &async);
    if (async != ncclSuccess && async != ncclInProgress) fail(std::string(what) + " failed: " + ncclGetErrorString(async));
    pause();
  }
}

void NcclCommunicator::all_reduce_sum(void* data, size_t count, ncclDataType_t type) {
  if (!comm_) throw CommError("NCCL communicator was aborted");
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_));
  complete(ncclAllReduce(data, data, count, type, ncclSum, comm_, stream_), stream_, "all_reduce_sum");
}

void NcclCommunicator::broadcast(void* data, size_t count, ncclDataType_t type, int root) {
  if (!comm_) throw CommError("NCCL communicator was aborted");
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_));
  complete(ncclBroadcast(data, data, count, type, root, comm_, stream_), stream_, "broadcast");
}

void NcclCommunicator::all_gather(const void* in, void* out, size_t count, ncclDataType_t type) {
  if (!comm_) throw CommError("NCCL communicator was aborted");
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_));
  complete(ncclAllGather(in, out, count, type, comm_, stream_), stream_, "all_gather");
}

void NcclCommunicator::all_reduce_sum(at::Tensor& t) {
  check_cuda_tensor(t, device_, "all_reduce_sum");
  if (!comm_) throw CommError("NCCL communicator was aborted");
  c10::cuda::CUDAGuard guard(t.device());
  const cudaStream_t s = torch_stream();  // after t's producers, before its readers
  complete(ncclAllReduce(t.data_ptr(), t.data_ptr(), size_t(t.numel()), nccl_type(t), ncclSum, comm_, s), s,
           "all_reduce_sum");
}

void NcclCommunicator::broadcast(at::Tensor& t, int root) {
  check_cuda_tensor(t, device_, "broadcast");
  if (!comm_) throw CommError("NCCL communicator was aborted");
  c10::cuda::CUDAGuard guard(t.device());
  const cudaStream_t s = torch_stream();
  complete(ncclBroadcast(t.data_ptr(), t.data_ptr(), size_t(t.numel()), nccl_type(t), root, comm_, s), s,
           "broadcast");
}

at::Tensor NcclCommunicator::all_gather(const at::Tensor& t) {
  check_cuda_tensor(t, device_, "all_gather", /*contiguous=*/false);
  if (!comm_) throw CommError("NCCL communicator was aborted");
  c10::cuda::CUDAGuard guard(t.device());
  at::Tensor in = t.contiguous();  // a copy (if needed) on the current stream, before the collective
  std::vector<int64_t> shape = in.sizes().vec();
  shape.insert(shape.begin(), size());
  at::Tensor out = at::empty(shape, in.options());  // the caching allocator's, on the current stream
  const cudaStream_t s = torch_stream();
  complete(ncclAllGather(in.data_ptr(), out.data_ptr(), size_t(in.numel()), nccl_type(in), comm_, s), s, "all_gather");
  return out;
}

void NcclCommunicator::barrier() {
  check_cuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  host_->barrier();
}

}  // namespace layerprune
