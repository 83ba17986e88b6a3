// Reading every value of a checkpoint once, for `layerprune check`: how many are NaN or Inf, by tensor,
// from the stored bits (no conversion, no LibTorch), so a 140 GB checkpoint is checked at the speed of its
// memory map.
#pragma once
#include <cstdint>
#include <string>

#include "formats/safetensors.h"

namespace layerprune {

struct TensorScan {
  int64_t values = 0;       // elements read (0 for dtypes that cannot hold a NaN: integers, bool)
  int64_t nan = 0, inf = 0;
  int64_t first_bad = -1;   // flat index of the first non-finite value, -1 if none
  bool finite() const { return nan == 0 && inf == 0; }
};

// F32, F16, BF16 and F64 are read by their exponent bits (all ones: Inf when the mantissa is 0, else NaN);
// other dtypes hold no non-finite values and are not read.
TensorScan scan_tensor(const TensorView& view);

}  // namespace layerprune
