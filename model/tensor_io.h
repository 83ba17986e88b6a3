// The seam between checkpoint files (torch-free TensorView / TensorToWrite) and LibTorch tensors.
#pragma once
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>

#include "formats/dtype.h"
#include "formats/safetensors.h"

namespace layerprune {

at::ScalarType to_scalar_type(DType t);
DType to_dtype(at::ScalarType t);  // throws std::invalid_argument for types safetensors cannot hold

// A tensor over the mapped bytes of `view` (zero-copy: it keeps `keepalive` alive) when the element
// alignment allows, else a copy. *zero_copy tells which. The result is read-only in spirit: the mapping
// is read-only memory, so never write into it.
at::Tensor tensor_from_view(const TensorView& view, std::shared_ptr<const void> keepalive, bool* zero_copy = nullptr);

// Rows [begin, end) of a tensor of 1 or more dimensions (a contiguous byte range of the file): zero-copy
// when aligned, else a copy of just those bytes.
at::Tensor tensor_rows(const TensorView& view, int64_t begin, int64_t end, std::shared_ptr<const void> keepalive,
                       bool* zero_copy = nullptr);

// Columns [begin, end) of a 2-D tensor: a strided read, so always a copy of just those elements; the
// mapped pages it touched are then released from this process (they stay in the page cache), so a rank's
// resident memory holds its own slice and not the whole tensor.
at::Tensor tensor_columns(const TensorView& view, int64_t begin, int64_t end);

// Drops this process's mappings of the pages inside [data, data + nbytes) (they refault from the file if
// read again). For bytes that were copied out of a read-only checkpoint mapping.
void release_mapped_pages(const void* data, size_t nbytes);

// Describes a contiguous CPU tensor for write_safetensors (the tensor must outlive the write).
TensorToWrite tensor_to_write(const std::string& name, const at::Tensor& contiguous);

}  // namespace layerprune
