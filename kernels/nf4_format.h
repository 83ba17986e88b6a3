// The NF4 constants, without LibTorch, for the CPU (kernels/nf4.h, which describes the format) and CUDA
// (kernels/cuda/nf4.cu) code alike.
#pragma once
#include <cstdint>

namespace layerprune::kernels {

constexpr int64_t kNf4Block = 64, kNf4AbsmaxBlock = 256;
// The 16 NF4 values: quantiles of N(0, 1) normalised to [-1, 1] with an exact zero (QLoRA, Appendix E),
// and the float32 midpoints (c_k + c_{k+1}) / 2 that decide the nearest one.
inline constexpr float kNf4Codes[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,
    -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
    0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f,
    1.0f};
#define LP_NF4_MID(k) 0.5f * (kNf4Codes[k] + kNf4Codes[k + 1])
inline constexpr float kNf4Midpoints[15] = {
    LP_NF4_MID(0), LP_NF4_MID(1), LP_NF4_MID(2),   LP_NF4_MID(3),   LP_NF4_MID(4),
    LP_NF4_MID(5), LP_NF4_MID(6), LP_NF4_MID(7),   LP_NF4_MID(8),   LP_NF4_MID(9),
    LP_NF4_MID(10), LP_NF4_MID(11), LP_NF4_MID(12), LP_NF4_MID(13), LP_NF4_MID(14)};
#undef LP_NF4_MID

}  // namespace layerprune::kernels
