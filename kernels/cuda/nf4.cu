// CUDA NF4: quantise, dequantise and the fused dequantise-matmul (forward and input gradient). Same format
// and arithmetic as kernels/nf4.h (IEEE division for the codes, fma for the dequantised absmax), so the
// codes and dequantised values equal the CPU's; tested against the CPU reference on a GPU machine.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "kernels/cuda/device.h"
#include "kernels/nf4_format.h"

namespace layerprune::kernels::cuda {

namespace {

__constant__ float c_codes[16];
__constant__ float c_midpoints[15];

void check(const char* who) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string(who) + " (CUDA): " + cudaGetErrorString(err));
}

void upload_tables() {
  static bool done = false;  // per process; the tables are constants
  if (done) return;
  if (cudaMemcpyToSymbol(c_codes, kNf4Codes, sizeof(kNf4Codes)) != cudaSuccess ||
      cudaMemcpyToSymbol(c_midpoints, kNf4Midpoints, sizeof(kNf4Midpoints)) != cudaSuccess)
    check("nf4 code tables");
  done = true;
}

__device__ unsigned code_of(float x) {
  unsigned c = 0;
  for (int k = 0; k < 15; ++k) c += x > c_midpoints[k];  // a midpoint goes to the lower code
  return c;
}

__device__ float weight_at(const Nf4DeviceWeight& w, long long i) {
  const uint8_t byte = w.packed[i >> 1];
  const unsigned c = (i & 1) ? byte & 15u : byte >> 4;
  const long long b = i / kNf4Block;
  return c_codes[c] * fmaf(float(w.absmax_q[b]), w.absmax_scale[b / kNf4AbsmaxBlock], w.absmax_mean);
}

// One warp per block of 64 weights; lane j owns elements 2j and 2j+1, i.e. one output byte.
__global__ void quantize_kernel(const float* w, long long n, long long nblocks, uint8_t* packed, float* absmax) {
  const long long b = (blockIdx.x * (long long)blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (b >= nblocks) return;  // b is the same for the whole warp: all its lanes leave together
  const long long i = b * kNf4Block + 2 * lane;
  const float v0 = i < n ? w[i] : 0.f, v1 = i + 1 < n ? w[i + 1] : 0.f;
  float a = fmaxf(fabsf(v0), fabsf(v1));
  for (int o = 16; o > 0; o >>= 1) a = fmaxf(a, __shfl_xor_sync(0xffffffffu, a, o));
  if (lane == 0) absmax[b] = a;
  const float den = a > 0.f ? a : 1.f;
  if (i < n) packed[i / 2] = uint8_t(code_of(v0 / den) << 4 | (i + 1 < n ? code_of(v1 / den) : 0u));
}

// One thread per packed byte, two weights out.
__global__ void dequantize_kernel(Nf4DeviceWeight w, long long n, float* out, bool pairs) {
  const long long j = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  const long long i = 2 * j;
  if (i >= n) return;
  const uint8_t byte = w.packed[j];
  const long long b = i / kNf4Block;
  const float am = fmaf(float(w.absmax_q[b]), w.absmax_scale[b / kNf4AbsmaxBlock], w.absmax_mean);
  const float hi = c_codes[byte >> 4] * am, lo = c_codes[byte & 15u] * am;
  if (pairs && i + 1 < n) {
    reinterpret_cast<float2*>(out)[j] = make_float2(hi, lo);
  } else {
    out[i] = hi;
    if (i + 1 < n) out[i + 1] = lo;
  }
}

constexpr int kTile = 16;

// kInputGrad = false: y[m, r] = sum_k a[m, k] W[r, k]  (a = x [M, cols], y [M, rows])
// kInputGrad = true:  y[m, c] = sum_r a[m, r] W[r, c]  (a = g [M, rows], y [M, cols])
template <bool kInputGrad>
__global__ void matmul_kernel(const float* a, long long M, Nf4DeviceWeight w, float* y) {
  __shared__ float as[kTile][kTile + 1], ws[kTile][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const long long m0 = blockIdx.y * (long long)kTile, n0 = blockIdx.x * (long long)kTile;
  const long long K = kInputGrad ? w.rows : w.cols, N = kInputGrad ? w.cols : w.rows;
  float acc = 0.f;
  for (long long k0 = 0; k0 < K; k0 += kTile) {
    const long long am = m0 + ty, ak = k0 + tx;
    as[ty][tx] = am < M && ak < K ? a[am * K + ak] : 0.f;
    if (!kInputGrad) {  // ws[n][k] = W[n0 + n, k0 + k]
      const long long r = n0 + ty, c = k0 + tx;
      ws[ty][tx] = r < w.rows && c < w.cols ? weight_at(w, r * w.cols + c) : 0.f;
    } else {  // ws[k][n] = W[k0 + k, n0 + n]
      const long long r = k0 + ty, c = n0 + tx;
      ws[ty][tx] = r < w.rows && c < w.cols ? weight_at(w, r * w.cols + c) : 0.f;
    }
    __syncthreads();
    for (int k = 0; k < kTile; ++k) acc += as[ty][k] * (kInputGrad ? ws[k][tx] : ws[tx][k]);
    __syncthreads();
  }
  const long long m = m0 + ty, nn = n0 + tx;
  if (m < M && nn < N) y[m * N + nn] = acc;
}

template <bool kInputGrad>
void launch_matmul(const float* a, long long M, const Nf4DeviceWeight& w, float* y, const char* who) {
  const long long N = kInputGrad ? w.cols : w.rows;
  if (M == 0 || N == 0) return;
  const long long gy = (M + kTile - 1) / kTile, gx = (N + kTile - 1) / kTile;
  if (gy > 65535 || gx > 2147483647LL)
    throw std::invalid_argument(std::string(who) + " (CUDA): too many rows for one launch (M " + std::to_string(M) + ")");
  upload_tables();
  if (kInputGrad && w.rows == 0) {
    cudaMemset(y, 0, size_t(M * N) * sizeof(float));
    check(who);
    return;
  }
  matmul_kernel<kInputGrad><<<dim3(unsigned(gx), unsigned(gy)), dim3(kTile, kTile)>>>(a, M, w, y);
  check(who);
}

}  // namespace

void nf4_quantize(const float* w, long long n, uint8_t* packed, float* absmax) {
  if (n == 0) return;
  upload_tables();
  const long long nblocks = (n + kNf4Block - 1) / kNf4Block;
  constexpr int kThreads = 256;  // 8 warps, 8 blocks of 64 weights
  quantize_kernel<<<unsigned((nblocks * 32 + kThreads - 1) / kThreads), kThreads>>>(w, n, nblocks, packed, absmax);
  check("nf4_quantize");
}

void nf4_dequantize(const Nf4DeviceWeight& w, float* out) {
  const long long n = w.rows * w.cols;
  if (n == 0) return;
  upload_tables();
  constexpr int kThreads = 256;
  const long long bytes = (n + 1) / 2;
  const bool pairs = reinterpret_cast<uintptr_t>(out) % alignof(float2) == 0;
  dequantize_kernel<<<unsigned((bytes + kThreads - 1) / kThreads), kThreads>>>(w, n, out, pairs);
  check("nf4_dequantize");
}

void nf4_linear(const float* x, long long M, const Nf4DeviceWeight& w, float* y) {
  launch_matmul<false>(x, M, w, y, "nf4_linear");
}

void nf4_linear_input_grad(const float* g, long long M, const Nf4DeviceWeight& w, float* dx) {
  launch_matmul<true>(g, M, w, dx, "nf4_linear_input_grad");
}

}  // namespace layerprune::kernels::cuda
