// libFuzzer target: a safetensors file (formats/safetensors.h). The bytes become a file, opened by
// SafetensorsFile::open and Checkpoint::open (the path a user passes); every tensor the reader accepts is
// then read in full (formats/tensor_scan.h, as `layerprune check` does), so a view that points past the
// mapping faults here.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "formats/safetensors.h"
#include "formats/tensor_scan.h"
#include "fuzz_support.h"

using namespace layerprune;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = lpfuzz::scratch().write("model.safetensors", data, size);
  lpfuzz::accept_input_errors([&] {
    auto f = SafetensorsFile::open(path);
    uint64_t total = 0;
    for (const TensorView& t : f->tensors()) {
      LPFUZZ_CHECK(f->find(t.name) == &t, "find() returns the tensor listed");
      LPFUZZ_CHECK(t.nbytes == size_t(t.numel()) * dtype_size(t.dtype), "nbytes == numel x dtype size");
      scan_tensor(t);
      total += t.nbytes;
    }
    // The tensors tile the data buffer: header length + header + tensors is the whole file.
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = header_len << 8 | data[i];
    LPFUZZ_CHECK(8 + header_len + total == size, "accepted tensors tile the file exactly");
    Checkpoint c = Checkpoint::open(path);
    LPFUZZ_CHECK(c.total_bytes() == total, "Checkpoint::total_bytes is the sum of the tensors");
    for (const std::string& name : c.names()) (void)c.tensor(name);
  });
  return 0;
}
