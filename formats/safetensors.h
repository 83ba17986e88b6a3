// Safetensors checkpoints without LibTorch: a strict, zero-copy reader (one file or HF-style shards) and a
// writer.
//
// The format (https://github.com/huggingface/safetensors): an 8-byte little-endian header length N, N bytes
// of UTF-8 JSON {"name": {"dtype", "shape", "data_offsets": [begin, end]}, ..., "__metadata__": {str: str}},
// then the data buffer; offsets are relative to the start of the buffer. The reader checks everything the
// reference implementation checks (header size limit, known dtypes, offsets tiling the buffer exactly with
// no overlap, gap or trailing bytes, byte length == numel x dtype size) and reports each problem as an
// InputError naming the file and the tensor, so a hostile or truncated file is an error, never a crash.
//
// Tensors are views into a read-only memory mapping. `data` is NOT guaranteed to be aligned for its dtype
// (the format does not promise it): copy with memcpy, or read through byte pointers. Checkpoints are treated
// as immutable: truncating a file while it is mapped makes reads of the lost pages fault (SIGBUS).
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "formats/dtype.h"

namespace layerprune {

// One tensor inside a mapped file (zero-copy).
struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // points into the mapping
  size_t nbytes = 0;
  std::string file;  // path of the file it lives in (for error messages)
  int64_t numel() const;
};

// A tensor a reader needs from a file: its name and full shape (a model's layout, a checkpoint's adapters).
struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> shape;
};

// "[4096, 11008]": shapes as error messages print them.
std::string format_shape(const std::vector<int64_t>& shape);

// Headers larger than this are rejected before anything is allocated (the reference implementation's limit).
constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// One memory-mapped file, fully validated on open.
class SafetensorsFile {
 public:
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);  // throws InputError
  const std::vector<TensorView>& tensors() const { return tensors_; }     // in header order
  const TensorView* find(const std::string& name) const;                  // nullptr if absent
  const std::map<std::string, std::string>& metadata() const { return metadata_; }  // "__metadata__"
  const std::string& path() const { return path_; }
  // Tells the kernel this process will read only parts of the file (a tensor-parallel shard): no
  // read-ahead and no mapping of neighbouring pages on a fault, so what stays resident is what was read.
  void advise_partial_reads() const;
  ~SafetensorsFile();  // unmaps

  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::vector<TensorView> tensors_;
  std::map<std::string, size_t> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
};

// A model's weights: a directory with model.safetensors.index.json + shards (preferred) or model.safetensors,
// or the path of one .safetensors file (or of an index .json). Cheap to copy: copies share the mappings.
class Checkpoint {
 public:
  Checkpoint();  // empty: no tensors
  static Checkpoint open(const std::string& dir_or_file);  // throws InputError
  const TensorView& tensor(const std::string& name) const;  // InputError naming checkpoint + tensor if absent
  const TensorView* find(const std::string& name) const;
  std::vector<std::string> names() const;  // shard by shard (shards in file-name order), each in header order
  std::shared_ptr<const void> keepalive() const;  // keeps every mapping alive (tensors made from views hold it)
  uint64_t total_bytes() const;                    // sum of tensor bytes
  const std::string& path() const { return path_; }
  // The mapped files, in file-name order (one for a single-file checkpoint).
  // (A copy: safe to iterate over the result of a temporary Checkpoint.)
  std::vector<std::shared_ptr<SafetensorsFile>> files() const;

 private:
  struct State;
  std::shared_ptr<const State> state_;
  std::string path_;
};

// A tensor to write: `data` must hold `nbytes` == numel(shape) x dtype_size(dtype) bytes.
struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const void* data;
  size_t nbytes;
};

// Writes a safetensors file: header JSON padded with spaces to a multiple of 8 bytes, then the tensors' bytes
// contiguously in the given order (the format does not require per-tensor alignment). Atomic: the bytes go
// to a temporary file in the same directory, which is renamed over `path` once complete and synced.
// Throws std::invalid_argument for inconsistent tensors (size mismatch, duplicate or reserved name),
// InputError when the file cannot be created, std::runtime_error when writing fails (disk full).
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Writes shards "model-00001-of-0000N.safetensors" of at most max_shard_bytes of tensor data each (a single
// tensor larger than that gets a shard of its own), then model.safetensors.index.json (HF layout:
// {"metadata": {"total_size": bytes}, "weight_map": {tensor: shard}}) into dir, creating dir if needed.
// `metadata` goes into every shard's "__metadata__".
void write_sharded_safetensors(const std::string& dir, const std::vector<TensorToWrite>& tensors,
                               uint64_t max_shard_bytes, const std::map<std::string, std::string>& metadata = {});

}  // namespace layerprune
