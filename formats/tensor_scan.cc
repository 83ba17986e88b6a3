#include "formats/tensor_scan.h"

#include <cstring>

namespace layerprune {

namespace {

// Counts the elements whose exponent field is all ones; unaligned-safe (memcpy of each element).
template <typename Bits, int kMantissaBits, int kExponentBits>
TensorScan scan_bits(const uint8_t* data, int64_t n) {
  constexpr Bits exponent = Bits(((Bits(1) << kExponentBits) - 1) << kMantissaBits);
  constexpr Bits mantissa = Bits((Bits(1) << kMantissaBits) - 1);
  TensorScan s;
  s.values = n;
  for (int64_t i = 0; i < n; ++i) {
    Bits b;
    std::memcpy(&b, data + i * int64_t(sizeof(Bits)), sizeof(Bits));
    if ((b & exponent) != exponent) continue;
    (b & mantissa ? s.nan : s.inf) += 1;
    if (s.first_bad < 0) s.first_bad = i;
  }
  return s;
}

}  // namespace

TensorScan scan_tensor(const TensorView& v) {
  const int64_t n = v.numel();
  switch (v.dtype) {
    case DType::F32: return scan_bits<uint32_t, 23, 8>(v.data, n);
    case DType::F64: return scan_bits<uint64_t, 52, 11>(v.data, n);
    case DType::F16: return scan_bits<uint16_t, 10, 5>(v.data, n);
    case DType::BF16: return scan_bits<uint16_t, 7, 8>(v.data, n);
    default: return {};
  }
}

}  // namespace layerprune
