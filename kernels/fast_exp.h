// exp(x) in plain float/int arithmetic that GCC vectorises (std::exp is a scalar libm call here), for the
// fused kernels: 2^n * p(r) with n = round(x / ln 2), r = x - n ln 2 (ln 2 split in two for accuracy) and
// Cephes' degree-6 polynomial for e^r on [-ln2/2, ln2/2]; relative error ~1e-7 over [-87, 88], clamped
// outside (e^-87 is below float32's normal range; e^88 near its maximum).
#pragma once
#include <cstdint>

namespace layerprune::kernels {

inline float fast_exp(float x) {
  x = x < -87.f ? -87.f : (x > 88.f ? 88.f : x);
  const float n = __builtin_roundf(x * 1.44269504088896341f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  // A NaN x leaves n NaN (the clamps compare false): its exponent is taken as 0, p is NaN anyway. Unsigned,
  // so the shift is defined (UBSan found the int32 shift of a NaN's converted exponent).
  const uint32_t bits = uint32_t(int32_t(n == n ? n : 0.f) + 127) << 23;
  float scale;
  __builtin_memcpy(&scale, &bits, 4);
  return p * scale;
}

}  // namespace layerprune::kernels
