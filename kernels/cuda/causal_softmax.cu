// CUDA causal softmax: one block per row, a block-wide max and sum. Same contract as
// kernels/causal_softmax.h; tested against the CPU reference on a GPU machine (skipped elsewhere).
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "kernels/cuda/device.h"

namespace layerprune::kernels::cuda {

namespace {

constexpr int kThreads = 256;

__device__ float block_reduce(float v, bool is_max) {
  __shared__ float shared[32];
  for (int o = 16; o > 0; o >>= 1) {
    float other = __shfl_down_sync(0xffffffffu, v, o);
    v = is_max ? fmaxf(v, other) : v + other;
  }
  int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = threadIdx.x < blockDim.x / 32 ? shared[lane] : (is_max ? -INFINITY : 0.f);
  if (warp == 0)
    for (int o = 16; o > 0; o >>= 1) {
      float other = __shfl_down_sync(0xffffffffu, v, o);
      v = is_max ? fmaxf(v, other) : v + other;
    }
  __shared__ float result;
  if (threadIdx.x == 0) result = v;
  __syncthreads();
  return result;
}

__global__ void causal_softmax_kernel(float* scores, long long R, long long S, long long T, long long start, float scale) {
  long long row = blockIdx.x;
  float* x = scores + row * S;
  long long r = row % R;
  long long valid = min(S, start + r % T + 1);
  float mx = -INFINITY;
  for (long long j = threadIdx.x; j < valid; j += blockDim.x) mx = fmaxf(mx, x[j] * scale);
  mx = block_reduce(mx, true);
  float sum = 0.f;
  for (long long j = threadIdx.x; j < valid; j += blockDim.x) sum += __expf(x[j] * scale - mx);
  sum = block_reduce(sum, false);
  for (long long j = threadIdx.x; j < S; j += blockDim.x) x[j] = j < valid ? __expf(x[j] * scale - mx) / sum : 0.f;
}

}  // namespace

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

void causal_softmax(float* scores, long long N, long long R, long long S, long long T, long long start, float scale) {
  if (N * R == 0) return;
  causal_softmax_kernel<<<unsigned(N * R), kThreads>>>(scores, R, S, T, start, scale);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string("causal_softmax (CUDA): ") + cudaGetErrorString(err));
}

}  // namespace layerprune::kernels::cuda
