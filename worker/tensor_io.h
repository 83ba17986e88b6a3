// The seam between checkpoint files (torch-free TensorView / TensorToWrite) and LibTorch tensors.
#pragma once
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>

#include "worker/dtype.h"
#include "worker/safetensors.h"

namespace layerprune {

at::ScalarType to_scalar_type(DType t);
DType to_dtype(at::ScalarType t);  // throws std::invalid_argument for types safetensors cannot hold

// A tensor over the mapped bytes of `view` (zero-copy: it keeps `keepalive` alive) when the element
// alignment allows, else a copy. *zero_copy tells which. The result is read-only in spirit: the mapping
// is read-only memory, so never write into it.
at::Tensor tensor_from_view(const TensorView& view, std::shared_ptr<const void> keepalive, bool* zero_copy = nullptr);

// Describes a contiguous CPU tensor for write_safetensors (the tensor must outlive the write).
TensorToWrite tensor_to_write(const std::string& name, const at::Tensor& contiguous);

}  // namespace layerprune
