// The NCCL communicator on real GPUs. Two builds of this file:
// - the main build: one NCCL rank per MPI rank over an MpiCommunicator host (ctest runs it under mpirun
//   -np 1 and -np 2);
// - the GPU check (deploy/gpu_check.sh, LAYERPRUNE_NCCL_TEST_SOLO): one rank over a SoloCommunicator host,
//   no MPI in the process.
// The device-pointer entry points get cudaMalloc'd buffers; the tensor entry points get CUDA tensors made on
// a non-default current stream right before each collective, so a collective that did not run on LibTorch's
// current stream would read them unfinished. Skips, saying why, where there is no GPU or fewer GPUs than ranks.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <gtest/gtest.h>

#include <memory>
#include <stdexcept>
#include <vector>

#include "kernels/cuda/device.h"
#include "worker/nccl_comm.h"

#ifndef LAYERPRUNE_NCCL_TEST_SOLO
#include <mpi.h>

#include "worker/mpi_comm.h"
#endif

namespace layerprune {
namespace {

#ifdef LAYERPRUNE_NCCL_TEST_SOLO
int world_size() { return 1; }
std::shared_ptr<Communicator> make_host() { return std::make_shared<SoloCommunicator>(); }
#else
int world_size() {
  int n = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}
std::shared_ptr<Communicator> make_host() { return std::make_shared<MpiCommunicator>(MPI_COMM_WORLD, 120, "nccl test"); }
#endif

#define LP_REQUIRE_GPUS()                                                                                   \
  const int gpus = kernels::cuda::device_count(), ranks = world_size();                                    \
  if (gpus == 0)                                                                                           \
    GTEST_SKIP() << "NCCL backend compiled (" << kernels::cuda::nccl_version() << "), but this machine has no GPU"; \
  if (gpus < ranks) GTEST_SKIP() << ranks << " ranks need " << ranks << " GPUs; this machine has " << gpus

TEST(NcclComm, AllReduceBroadcastAllGatherOnGpus) {
  LP_REQUIRE_GPUS();
  auto host = make_host();
  NcclCommunicator c(host, host->rank() % gpus, 120);
  const int n = c.size();
  const size_t count = 1 << 20;
  std::vector<float> h(count);
  for (size_t i = 0; i < count; ++i) h[i] = float(i % 1000) + float(c.rank());
  float* d = nullptr;
  ASSERT_EQ(cudaMalloc(&d, count * sizeof(float)), cudaSuccess);
  cudaMemcpy(d, h.data(), count * sizeof(float), cudaMemcpyHostToDevice);
  c.all_reduce_sum(d, count, ncclFloat32);
  cudaMemcpy(h.data(), d, count * sizeof(float), cudaMemcpyDeviceToHost);
  for (size_t i = 0; i < count; i += 4099) ASSERT_EQ(h[i], float(i % 1000) * n + float(n * (n - 1) / 2)) << i;

  float mine = float(c.rank() + 7);
  cudaMemcpy(d, &mine, sizeof(float), cudaMemcpyHostToDevice);
  c.broadcast(d, 1, ncclFloat32, n - 1);
  float got = 0;
  cudaMemcpy(&got, d, sizeof(float), cudaMemcpyDeviceToHost);
  EXPECT_EQ(got, float(n - 1 + 7));

  float* all = nullptr;
  ASSERT_EQ(cudaMalloc(&all, n * sizeof(float)), cudaSuccess);
  cudaMemcpy(d, &mine, sizeof(float), cudaMemcpyHostToDevice);
  c.all_gather(d, all, 1, ncclFloat32);
  std::vector<float> gathered(n);
  cudaMemcpy(gathered.data(), all, n * sizeof(float), cudaMemcpyDeviceToHost);
  for (int r = 0; r < n; ++r) EXPECT_EQ(gathered[r], float(r + 7));
  c.barrier();
  cudaFree(all);
  cudaFree(d);
}

// The Communicator interface the model calls, on CUDA tensors, on a side stream made current: every value
// exact (small integers, also in bfloat16).
TEST(NcclComm, TensorCollectivesRunOnTheCurrentStream) {
  LP_REQUIRE_GPUS();
  auto host = make_host();
  const int device = host->rank() % gpus;
  NcclCommunicator c(host, device, 120);
  const int n = c.size(), r = c.rank();
  c10::cuda::CUDAGuard device_guard(static_cast<c10::DeviceIndex>(device));
  c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, static_cast<c10::DeviceIndex>(device));
  c10::cuda::CUDAStreamGuard stream_guard(side);
  const auto on_gpu = at::TensorOptions().device(at::kCUDA, device);
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kDouble}) {  // double: LoRA's TP gradient norm
    SCOPED_TRACE(c10::toString(dtype));
    // Large enough that the producing kernels are still running when the collective is enqueued.
    const int64_t count = int64_t(1) << 22;
    at::Tensor base = at::arange(count, on_gpu.dtype(at::kLong)).remainder(64);
    at::Tensor t = (base + r).to(dtype);
    c.all_reduce_sum(t);
    at::Tensor want = (base * n + n * (n - 1) / 2).to(at::kFloat);
    EXPECT_TRUE(at::equal(t.to(at::kFloat).cpu(), want.cpu())) << "all_reduce_sum";

    at::Tensor b = at::full({3, 5}, double(r + 3), on_gpu.dtype(dtype));
    c.broadcast(b, n - 1);
    EXPECT_TRUE(at::equal(b.to(at::kFloat).cpu(), at::full({3, 5}, double(n - 1 + 3)))) << "broadcast";

    at::Tensor g = at::full({2, 3}, double(r + 1), on_gpu.dtype(dtype)).t();  // non-contiguous input
    at::Tensor all = c.all_gather(g);
    ASSERT_EQ(all.sizes().vec(), (std::vector<int64_t>{n, 3, 2}));
    EXPECT_TRUE(all.is_cuda());
    for (int k = 0; k < n; ++k)
      EXPECT_TRUE(at::equal(all[k].to(at::kFloat).cpu(), at::full({3, 2}, double(k + 1)))) << "all_gather " << k;
  }
  at::Tensor ids = at::arange(10, on_gpu.dtype(at::kLong)) + (int64_t(1) << 40);
  ids.add_(r);
  c.broadcast(ids, 0);
  EXPECT_TRUE(at::equal(ids.cpu(), at::arange(10, at::kLong) + (int64_t(1) << 40))) << "int64 broadcast";
  at::Tensor cpu = at::zeros({4});
  EXPECT_THROW(c.all_reduce_sum(cpu), std::invalid_argument) << "CPU tensors are refused";
  c.barrier();
}

}  // namespace
}  // namespace layerprune

#ifdef LAYERPRUNE_NCCL_TEST_SOLO
int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
#else
int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  int failed = RUN_ALL_TESTS(), any_failed = 0;
  MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return any_failed;
}
#endif
