#include "formats/dtype.h"

namespace layerprune {

namespace {
struct Row {
  DType t;
  const char* name;
  size_t size;
};
constexpr Row kRows[] = {{DType::F32, "F32", 4}, {DType::F16, "F16", 2}, {DType::BF16, "BF16", 2},
                         {DType::F64, "F64", 8}, {DType::I64, "I64", 8}, {DType::I32, "I32", 4},
                         {DType::I16, "I16", 2}, {DType::I8, "I8", 1},   {DType::U8, "U8", 1},
                         {DType::BOOL, "BOOL", 1}};
}  // namespace

size_t dtype_size(DType t) {
  for (const auto& r : kRows)
    if (r.t == t) return r.size;
  return 0;
}

const char* dtype_name(DType t) {
  for (const auto& r : kRows)
    if (r.t == t) return r.name;
  return "?";
}

bool parse_dtype(const std::string& s, DType* out) {
  for (const auto& r : kRows)
    if (s == r.name) {
      *out = r.t;
      return true;
    }
  return false;
}

}  // namespace layerprune
