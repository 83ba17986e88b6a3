#include "model/tensor_io.h"

#include <ATen/ATen.h>

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>

namespace layerprune {

at::ScalarType to_scalar_type(DType t) {
  switch (t) {
    case DType::F32: return at::kFloat;
    case DType::F16: return at::kHalf;
    case DType::BF16: return at::kBFloat16;
    case DType::F64: return at::kDouble;
    case DType::I64: return at::kLong;
    case DType::I32: return at::kInt;
    case DType::I16: return at::kShort;
    case DType::I8: return at::kChar;
    case DType::U8: return at::kByte;
    case DType::BOOL: return at::kBool;
  }
  throw std::invalid_argument("unknown DType");
}

DType to_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return DType::F32;
    case at::kHalf: return DType::F16;
    case at::kBFloat16: return DType::BF16;
    case at::kDouble: return DType::F64;
    case at::kLong: return DType::I64;
    case at::kInt: return DType::I32;
    case at::kShort: return DType::I16;
    case at::kChar: return DType::I8;
    case at::kByte: return DType::U8;
    case at::kBool: return DType::BOOL;
    default: throw std::invalid_argument(std::string("tensor dtype ") + c10::toString(t) + " cannot be stored in safetensors");
  }
}

at::Tensor tensor_from_view(const TensorView& view, std::shared_ptr<const void> keepalive, bool* zero_copy) {
  auto type = to_scalar_type(view.dtype);
  auto options = at::TensorOptions().dtype(type).device(at::kCPU);
  size_t elem = dtype_size(view.dtype);
  bool aligned = reinterpret_cast<uintptr_t>(view.data) % elem == 0;
  if (zero_copy) *zero_copy = aligned && view.nbytes > 0;
  if (aligned && view.nbytes > 0) {
    // from_blob needs a mutable pointer; the weights are never written (the mapping is read-only).
    void* data = const_cast<uint8_t*>(view.data);
    return at::from_blob(data, view.shape, [keep = std::move(keepalive)](void*) {}, options);
  }
  at::Tensor out = at::empty(view.shape, options);
  if (view.nbytes) std::memcpy(out.data_ptr(), view.data, view.nbytes);
  return out;
}

at::Tensor tensor_rows(const TensorView& view, int64_t begin, int64_t end, std::shared_ptr<const void> keepalive,
                       bool* zero_copy) {
  if (view.shape.empty() || begin < 0 || end < begin || end > view.shape[0])
    throw std::invalid_argument("tensor_rows: rows [" + std::to_string(begin) + ", " + std::to_string(end) +
                                ") of " + view.name + " " + format_shape(view.shape));
  size_t row_bytes = view.shape[0] ? view.nbytes / size_t(view.shape[0]) : 0;
  TensorView rows = view;
  rows.shape[0] = end - begin;
  rows.data = view.data + size_t(begin) * row_bytes;
  rows.nbytes = size_t(end - begin) * row_bytes;
  return tensor_from_view(rows, std::move(keepalive), zero_copy);
}

at::Tensor tensor_columns(const TensorView& view, int64_t begin, int64_t end) {
  if (view.shape.size() != 2 || begin < 0 || end < begin || end > view.shape[1])
    throw std::invalid_argument("tensor_columns: columns [" + std::to_string(begin) + ", " + std::to_string(end) +
                                ") of " + view.name + " " + format_shape(view.shape));
  const int64_t rows = view.shape[0];
  const size_t elem = dtype_size(view.dtype), row_bytes = size_t(view.shape[1]) * elem;
  const size_t take = size_t(end - begin) * elem;
  at::Tensor out = at::empty({rows, end - begin}, at::TensorOptions().dtype(to_scalar_type(view.dtype)));
  auto* dst = static_cast<uint8_t*>(out.data_ptr());
  for (int64_t r = 0; r < rows; ++r) std::memcpy(dst + size_t(r) * take, view.data + size_t(r) * row_bytes + size_t(begin) * elem, take);
  release_mapped_pages(view.data, view.nbytes);
  return out;
}

void release_mapped_pages(const void* data, size_t nbytes) {
  static const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  uintptr_t lo = reinterpret_cast<uintptr_t>(data) & ~(page - 1);
  uintptr_t hi = (reinterpret_cast<uintptr_t>(data) + nbytes + page - 1) & ~(page - 1);
  // Read-only private file mapping, never written: the pages refault from the file if touched again.
  if (nbytes) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
}

TensorToWrite tensor_to_write(const std::string& name, const at::Tensor& t) {
  if (!t.is_contiguous() || t.device() != at::kCPU)
    throw std::invalid_argument("tensor_to_write: '" + name + "' must be a contiguous CPU tensor");
  TensorToWrite w;
  w.name = name;
  w.dtype = to_dtype(t.scalar_type());
  w.shape = t.sizes().vec();
  w.data = t.data_ptr();
  w.nbytes = size_t(t.numel()) * t.element_size();
  return w;
}

}  // namespace layerprune
