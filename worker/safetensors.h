// safetensors (Hugging Face's checkpoint format): an 8-byte little-endian header length N, N bytes of JSON
// {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}, then the data.
// Files are memory-mapped and validated in full on open, so nothing later reads outside them; tensors are
// views into the mapping (zero-copy). Sharded checkpoints add model.safetensors.index.json {"weight_map"}.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "worker/dtype.h"

namespace layerprune {

// "[2, 3]": shapes in error messages.
std::string shape_string(const std::vector<int64_t>& shape);

struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // points into the mapping
  size_t nbytes = 0;
  std::string file;               // the file it lives in, for error messages
  int64_t numel() const;
};

class SafetensorsFile {
 public:
  // Throws InputError naming the file (and the tensor) for anything malformed.
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::vector<TensorView>& tensors() const { return tensors_; }
  const TensorView* find(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return path_; }

  // A header larger than this is refused before anything is allocated for it.
  static constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::vector<TensorView> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

class Checkpoint {
 public:
  // A directory (model.safetensors.index.json + shards, or model.safetensors) or one .safetensors file.
  static Checkpoint open(const std::string& dir_or_file);

  const TensorView& tensor(const std::string& name) const;  // InputError naming checkpoint and tensor if absent
  const TensorView* find(const std::string& name) const;
  std::vector<std::string> names() const;
  std::shared_ptr<const void> keepalive() const { return keepalive_; }  // holds every mapping open
  uint64_t total_bytes() const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*> tensors_;
  std::shared_ptr<const void> keepalive_;
};

struct TensorToWrite {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;
};

// One file: header padded with spaces to a multiple of 8 bytes, tensors stored contiguously in the given
// order; written to path.tmp and renamed, so a crash never leaves a half-written checkpoint.
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Shards of at most max_shard_bytes (a larger single tensor gets a shard of its own), named
// model-0000i-of-0000n.safetensors, plus model.safetensors.index.json, as Hugging Face writes them.
void write_sharded_safetensors(const std::string& dir, const std::vector<TensorToWrite>& tensors,
                               uint64_t max_shard_bytes, const std::map<std::string, std::string>& metadata = {});

}  // namespace layerprune
