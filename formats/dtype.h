// Element types of checkpoint tensors (safetensors names), independent of LibTorch.
#pragma once
#include <cstddef>
#include <string>

namespace layerprune {

enum class DType { F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL };

// Size of one element in bytes.
size_t dtype_size(DType t);
// The safetensors spelling: "F32", "BF16", ...
const char* dtype_name(DType t);
// Parses a safetensors dtype string; returns false for unknown ones.
bool parse_dtype(const std::string& s, DType* out);

}  // namespace layerprune
