// What the CUDA side of this build can see. Compiled only when CMake found a CUDA toolkit
// (LAYERPRUNE_HAVE_CUDA); callers guard with that macro.
#pragma once
#include <cstdint>
#include <string>

namespace layerprune::kernels::cuda {

// Number of usable GPUs; 0 when there is no driver or device (cudaGetDeviceCount's error 35 included).
int device_count();
// "NCCL 2.28.x" from ncclGetVersion (works without a GPU).
std::string nccl_version();

// The CUDA counterpart of kernels::causal_softmax on device memory (same layout and contract).
void causal_softmax(float* scores, long long N, long long R, long long S, long long T, long long start, float scale);

// NF4 on device memory, the layout of kernels::Nf4Weight (kernels/nf4.h): every pointer is a device pointer.
struct Nf4DeviceWeight {
  const uint8_t* packed = nullptr;       // [ceil(rows x cols / 2)]
  const int8_t* absmax_q = nullptr;      // [nblocks]
  const float* absmax_scale = nullptr;   // [ceil(nblocks / 256)]
  float absmax_mean = 0;
  long long rows = 0, cols = 0;
};
// The codes of n float32 weights, packed two per byte, and the float32 absmax per block of 64: the same bytes
// as the CPU quantiser. The double quantisation of absmax is left to kernels::nf4_double_quantize on the host
// (its mean is a float64 sum in block order, which fixes every absmax byte). Weights must be finite.
void nf4_quantize(const float* w, long long n, uint8_t* packed, float* absmax);
// All rows x cols weights into out (float32), as kernels::nf4_dequantize.
void nf4_dequantize(const Nf4DeviceWeight& w, float* out);
// y [M, rows] = x [M, cols] W^T, and dx [M, cols] = g [M, rows] W: a shared-memory tiled product that
// dequantises each 16 x 16 tile of W as it loads it (no dequantised W in memory).
void nf4_linear(const float* x, long long M, const Nf4DeviceWeight& w, float* y);
void nf4_linear_input_grad(const float* g, long long M, const Nf4DeviceWeight& w, float* dx);

}  // namespace layerprune::kernels::cuda
