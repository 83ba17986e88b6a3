// The NCCL communicator on real GPUs, one per MPI rank (ctest runs it under mpirun -np 1 and -np 2).
// Device buffers come from cudaMalloc and go through the device-pointer entry points, so the test needs
// only the CUDA runtime (Debian's LibTorch has no CUDA). It skips, saying why, where there is no GPU or
// fewer GPUs than ranks.
#include <gtest/gtest.h>
#include <mpi.h>

#include <vector>

#include "kernels/cuda/device.h"
#include "worker/nccl_comm.h"

namespace layerprune {
namespace {

int world_size() {
  int n = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}

TEST(NcclComm, AllReduceBroadcastAllGatherOnGpus) {
  const int gpus = kernels::cuda::device_count(), ranks = world_size();
  if (gpus == 0) GTEST_SKIP() << "NCCL backend compiled (" << kernels::cuda::nccl_version() << "), but this machine has no GPU";
  if (gpus < ranks) GTEST_SKIP() << ranks << " ranks need " << ranks << " GPUs; this machine has " << gpus;
  auto host = std::make_shared<MpiCommunicator>(MPI_COMM_WORLD, 120, "nccl test");
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

}  // namespace
}  // namespace layerprune

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  int failed = RUN_ALL_TESTS(), any_failed = 0;
  MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return any_failed;
}
