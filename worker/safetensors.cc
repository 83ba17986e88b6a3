#include "worker/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/text_file.h"

namespace layerprune {

namespace fs = std::filesystem;
using nlohmann::json;

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_string(const std::vector<int64_t>& s) {
  std::string o = "[";
  for (size_t i = 0; i < s.size(); ++i) o += (i ? ", " : "") + std::to_string(s[i]);
  return o + "]";
}

namespace {

// Parses one header entry into a view (without its data pointer), checking everything that can be
// checked without the other entries.
TensorView parse_entry(const std::string& file, const std::string& name, const json& e, uint64_t data_size,
                       uint64_t* begin_out) {
  auto fail = [&](const std::string& what) { throw InputError(file + ": tensor '" + name + "': " + what); };
  if (!e.is_object()) fail("header entry is not an object");
  if (!e.contains("dtype") || !e["dtype"].is_string()) fail("missing string field \"dtype\"");
  if (!e.contains("shape") || !e["shape"].is_array()) fail("missing array field \"shape\"");
  if (!e.contains("data_offsets") || !e["data_offsets"].is_array() || e["data_offsets"].size() != 2)
    fail("missing field \"data_offsets\" [begin, end]");
  TensorView v;
  v.name = name;
  v.file = file;
  std::string dt = e["dtype"].get<std::string>();
  if (!parse_dtype(dt, &v.dtype)) fail("unknown dtype \"" + dt + "\" (supported: F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL)");
  // numel x element size in 128 bits, saturated at 2^64: a hostile shape cannot wrap around to a small size
  // (each factor is < 2^63 and the running product <= 2^64, so no step overflows).
  const unsigned __int128 cap = (unsigned __int128)1 << 64;
  unsigned __int128 bytes = dtype_size(v.dtype);
  for (const auto& d : e["shape"]) {
    if (!d.is_number_integer() || d.get<int64_t>() < 0) fail("shape " + e["shape"].dump() + " has a non-integer or negative dimension");
    v.shape.push_back(d.get<int64_t>());
    bytes = std::min(bytes * (unsigned __int128)v.shape.back(), cap);
  }
  const auto& off = e["data_offsets"];
  if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned())
    fail("data_offsets " + off.dump() + " must be non-negative integers");
  uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
  if (begin > end) fail("data_offsets " + off.dump() + ": begin is after end");
  if (end > data_size)
    fail("data_offsets " + off.dump() + " reach beyond the " + std::to_string(data_size) + " bytes of data (truncated file?)");
  if (bytes != (unsigned __int128)(end - begin))
    fail("data_offsets " + off.dump() + " hold " + std::to_string(end - begin) + " bytes but shape " + shape_string(v.shape) +
         " x " + dt + " needs " + (bytes == cap ? std::string("2^64 or more") : std::to_string(uint64_t(bytes))));
  v.nbytes = size_t(end - begin);
  *begin_out = begin;
  return v;
}

}  // namespace

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw InputError(path + ": cannot open (" + std::strerror(errno) + ")");
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw InputError(path + ": not a regular file");
  }
  const uint64_t size = uint64_t(st.st_size);
  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  if (size == 0) {
    ::close(fd);
    throw InputError(path + ": empty file (not a safetensors checkpoint)");
  }
  if (size < 8) {
    ::close(fd);
    throw InputError(path + ": " + std::to_string(size) + " bytes, shorter than the 8-byte safetensors header length");
  }
  void* map = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) throw InputError(path + ": cannot map (" + std::strerror(errno) + ")");
  f->map_ = map;
  f->map_size_ = size;
  const uint8_t* base = static_cast<const uint8_t*>(map);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | base[i];  // little-endian
  if (header_len > kMaxHeaderBytes)
    throw InputError(path + ": header length " + std::to_string(header_len) + " exceeds the " +
                     std::to_string(kMaxHeaderBytes >> 20) + " MB limit (corrupt or not a safetensors file)");
  if (header_len > size - 8)
    throw InputError(path + ": header length " + std::to_string(header_len) + " runs past the end of the " +
                     std::to_string(size) + "-byte file (truncated?)");
  json header;
  try {
    header = json::parse(base + 8, base + 8 + header_len);
  } catch (const json::exception& e) {
    throw InputError(path + ": header is not valid JSON (" + e.what() + ")");
  }
  if (!header.is_object()) throw InputError(path + ": header is not a JSON object");
  const uint8_t* data = base + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;
  std::vector<std::pair<uint64_t, size_t>> spans;  // (begin, tensor index) to check overlaps
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it.value().is_object()) throw InputError(path + ": __metadata__ is not an object");
      for (auto m = it.value().begin(); m != it.value().end(); ++m) {
        if (!m.value().is_string()) throw InputError(path + ": __metadata__ value for '" + m.key() + "' is not a string");
        f->metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    uint64_t begin = 0;
    TensorView v = parse_entry(path, it.key(), it.value(), data_size, &begin);
    v.data = data + begin;
    spans.emplace_back(begin, f->tensors_.size());
    f->index_[v.name] = f->tensors_.size();
    f->tensors_.push_back(std::move(v));
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i) {
    const TensorView& prev = f->tensors_[spans[i - 1].second];
    const TensorView& cur = f->tensors_[spans[i].second];
    if (prev.nbytes > 0 && cur.nbytes > 0 && spans[i - 1].first + prev.nbytes > spans[i].first)
      throw InputError(path + ": tensors '" + prev.name + "' and '" + cur.name + "' overlap in the data section");
  }
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) munmap(map_, map_size_);
}

const TensorView* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

Checkpoint Checkpoint::open(const std::string& dir_or_file) {
  Checkpoint c;
  c.path_ = dir_or_file;
  auto add_file = [&](const std::string& file) {
    auto f = SafetensorsFile::open(file);
    c.files_.push_back(f);
    return f;
  };
  if (fs::is_regular_file(dir_or_file)) {
    auto f = add_file(dir_or_file);
    for (const auto& t : f->tensors()) c.tensors_[t.name] = &t;
  } else if (fs::is_directory(dir_or_file)) {
    std::string index = dir_or_file + "/model.safetensors.index.json";
    std::string single = dir_or_file + "/model.safetensors";
    if (fs::exists(index)) {
      json j;
      try {
        j = json::parse(read_file(index));
      } catch (const json::parse_error& e) {
        throw InputError(index + ": invalid JSON (" + e.what() + ")");
      }
      if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
        throw InputError(index + ": expected an object with a \"weight_map\" {tensor: shard file}");
      std::map<std::string, std::shared_ptr<SafetensorsFile>> shards;
      for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
        if (!it.value().is_string()) throw InputError(index + ": weight_map entry for '" + it.key() + "' is not a file name");
        std::string shard = it.value().get<std::string>();
        if (shard.find('/') != std::string::npos || shard == "..")
          throw InputError(index + ": shard name '" + shard + "' must be a file in the checkpoint directory");
        if (!shards.count(shard)) {
          std::string p = dir_or_file + "/" + shard;
          if (!fs::exists(p)) throw InputError(index + ": shard '" + shard + "' (for tensor '" + it.key() + "') is missing");
          shards[shard] = add_file(p);
        }
        const TensorView* v = shards[shard]->find(it.key());
        if (!v) throw InputError(index + ": tensor '" + it.key() + "' is mapped to " + shard + " but that shard does not hold it");
        c.tensors_[it.key()] = v;
      }
      // A tensor in two shards, or one no index entry names, means the index and the files disagree.
      for (const auto& [shard, f] : shards)
        for (const auto& t : f->tensors()) {
          auto it = c.tensors_.find(t.name);
          if (it == c.tensors_.end())
            throw InputError(dir_or_file + "/" + shard + ": tensor '" + t.name + "' is not in the index's weight_map");
          if (it->second != &t)
            throw InputError(dir_or_file + ": tensor '" + t.name + "' appears in two shards (" + shard + " and " +
                             fs::path(it->second->file).filename().string() + ")");
        }
    } else if (fs::exists(single)) {
      auto f = add_file(single);
      for (const auto& t : f->tensors()) c.tensors_[t.name] = &t;
    } else {
      std::string hint;
      for (const auto& e : fs::directory_iterator(dir_or_file))
        if (e.path().filename().string().rfind("pytorch_model", 0) == 0)
          hint = " (found " + e.path().filename().string() + ": PyTorch .bin checkpoints are not supported; convert to safetensors)";
      throw InputError(dir_or_file + ": no model.safetensors.index.json or model.safetensors" + hint);
    }
  } else {
    throw InputError(dir_or_file + ": no such checkpoint file or directory");
  }
  auto files = std::make_shared<std::vector<std::shared_ptr<SafetensorsFile>>>(c.files_);
  c.keepalive_ = files;
  return c;
}

const TensorView* Checkpoint::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : it->second;
}

const TensorView& Checkpoint::tensor(const std::string& name) const {
  const TensorView* v = find(name);
  if (!v) throw InputError(path_ + ": checkpoint has no tensor '" + name + "'");
  return *v;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  for (const auto& [n, v] : tensors_) out.push_back(n);
  return out;
}

uint64_t Checkpoint::total_bytes() const {
  uint64_t n = 0;
  for (const auto& [name, v] : tensors_) n += v->nbytes;
  return n;
}

namespace {

std::string header_json(const std::vector<TensorToWrite>& tensors, const std::map<std::string, std::string>& metadata) {
  json h = json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    if (uint64_t(n) * dtype_size(t.dtype) != t.nbytes)
      throw std::invalid_argument("write_safetensors: tensor '" + t.name + "' has " + std::to_string(t.nbytes) +
                                  " bytes for shape " + shape_string(t.shape));
    h[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.nbytes}}};
    offset += t.nbytes;
  }
  std::string s = h.dump();
  s.append((8 - s.size() % 8) % 8, ' ');  // keeps the data 8-byte aligned for zero-copy readers
  return s;
}

}  // namespace

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::set<std::string> seen;
  for (const auto& t : tensors)
    if (!seen.insert(t.name).second) throw std::invalid_argument("write_safetensors: duplicate tensor '" + t.name + "'");
  std::string header = header_json(tensors, metadata);
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw InputError(path + ": cannot open for writing");
    uint64_t n = header.size();
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = uint8_t(n >> (8 * i));
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(header.data(), std::streamsize(header.size()));
    for (const auto& t : tensors) out.write(static_cast<const char*>(t.data), std::streamsize(t.nbytes));
    if (!out) throw std::runtime_error(path + ": write failed (disk full?)");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw std::runtime_error(path + ": cannot rename " + tmp);
}

void write_sharded_safetensors(const std::string& dir, const std::vector<TensorToWrite>& tensors,
                               uint64_t max_shard_bytes, const std::map<std::string, std::string>& metadata) {
  std::vector<std::vector<TensorToWrite>> shards(1);
  uint64_t fill = 0;
  for (const auto& t : tensors) {
    if (fill > 0 && fill + t.nbytes > max_shard_bytes) {
      shards.emplace_back();
      fill = 0;
    }
    shards.back().push_back(t);
    fill += t.nbytes;
  }
  fs::create_directories(dir);
  json weight_map = json::object();
  uint64_t total = 0;
  char name[64];
  for (size_t i = 0; i < shards.size(); ++i) {
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
    write_safetensors(dir + "/" + name, shards[i], metadata);
    for (const auto& t : shards[i]) {
      weight_map[t.name] = name;
      total += t.nbytes;
    }
  }
  json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  write_file(dir + "/model.safetensors.index.json", index.dump(2) + "\n");
}

}  // namespace layerprune
