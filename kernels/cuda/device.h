// What the CUDA side of this build can see. Compiled only when CMake found a CUDA toolkit
// (LAYERPRUNE_HAVE_CUDA); callers guard with that macro.
#pragma once
#include <string>

namespace layerprune::kernels::cuda {

// Number of usable GPUs; 0 when there is no driver or device (cudaGetDeviceCount's error 35 included).
int device_count();
// "NCCL 2.28.x" from ncclGetVersion (works without a GPU).
std::string nccl_version();

// The CUDA counterpart of kernels::causal_softmax on device memory (same layout and contract).
void causal_softmax(float* scores, long long N, long long R, long long S, long long T, long long start, float scale);

}  // namespace layerprune::kernels::cuda
