#include "formats/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <numeric>
#include <set>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "formats/json_input.h"
#include "common/text_file.h"

namespace layerprune {

namespace fs = std::filesystem;
using json = nlohmann::json;

// ------------------------------------------------------------------------------------------------
// Small helpers
// ------------------------------------------------------------------------------------------------

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string format_shape(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

namespace {

std::string in_quotes(const std::string& name) { return "'" + name + "'"; }

std::string errno_text() { return std::strerror(errno); }

// numel x dtype size, or false when it does not fit in 64 bits (a hostile shape such as [2^40, 2^40]).
bool byte_size(const std::vector<int64_t>& shape, DType dtype, uint64_t* out) {
  uint64_t n = 1;
  for (int64_t d : shape)
    if (d < 0 || __builtin_mul_overflow(n, uint64_t(d), &n)) return false;
  return !__builtin_mul_overflow(n, uint64_t(dtype_size(dtype)), out);
}

// ------------------------------------------------------------------------------------------------
// Header parsing: a SAX handler, so that the header is never turned into a generic JSON tree. This keeps
// memory proportional to the number of tensors, keeps header order, detects duplicate keys (which a JSON
// object parser would silently merge), and rejects any nesting a safetensors header cannot have.
// ------------------------------------------------------------------------------------------------

struct RawEntry {
  std::string name;
  std::string dtype;
  std::vector<uint64_t> shape, offsets;
  bool has_dtype = false, has_shape = false, has_offsets = false;
};

class HeaderParser {
 public:
  using number_integer_t = json::number_integer_t;
  using number_unsigned_t = json::number_unsigned_t;
  using number_float_t = json::number_float_t;
  using string_t = json::string_t;
  using binary_t = json::binary_t;

  explicit HeaderParser(const std::string& file) : file_(file) {}

  std::vector<RawEntry> entries;
  std::map<std::string, std::string> metadata;

  // --- json_sax interface ---
  bool null() { return scalar("null", [] {}); }
  bool boolean(bool) { return scalar("a boolean", [] {}); }
  bool number_integer(number_integer_t v) {
    if (v >= 0) return number_unsigned(number_unsigned_t(v));
    return scalar("the number " + std::to_string(v), [] {});
  }
  bool number_unsigned(number_unsigned_t v) {
    if (state_ == State::kArray) {
      current_array_->push_back(v);
      return true;
    }
    return scalar("the number " + std::to_string(v), [] {});
  }
  bool number_float(number_float_t, const string_t& text) {
    return scalar("the number " + text, [] {});  // a fraction, an exponent, or beyond 64 bits
  }
  bool binary(binary_t&) { return scalar("binary data", [] {}); }
  bool string(string_t& s) {
    return scalar("a string", [&] {
      if (state_ == State::kMetadata) metadata[key_] = s;
      else if (state_ == State::kEntry && key_ == "dtype") entries.back().dtype = s;
    });
  }

  bool start_object(std::size_t) {
    if (skip_depth_ > 0) return ++skip_depth_, true;
    switch (state_) {
      case State::kStart:
        state_ = State::kRoot;
        return true;
      case State::kRoot:
        if (key_ == "__metadata__") {
          state_ = State::kMetadata;
          seen_.clear();
        } else {
          state_ = State::kEntry;
          seen_.clear();
          entries.emplace_back();
          entries.back().name = key_;
        }
        return true;
      case State::kEntry:
        if (known_entry_field()) fail(where() + "field '" + key_ + "' must be " + field_type() + ", not an object");
        skip_depth_ = 1;  // unknown fields are ignored, as the reference implementation does
        return true;
      case State::kMetadata:
        fail(where() + "value of '" + key_ + "' must be a string, not an object");
      default:
        fail(where() + "unexpected nested object");
    }
  }
  bool end_object() {
    if (skip_depth_ > 0) return --skip_depth_, true;
    if (state_ == State::kRoot) state_ = State::kDone;
    else state_ = State::kRoot;
    return true;
  }
  bool start_array(std::size_t) {
    if (skip_depth_ > 0) return ++skip_depth_, true;
    if (state_ == State::kStart) fail(file_ + ": header is not a JSON object (it is an array)");
    if (state_ == State::kEntry) {
      if (key_ == "shape") {
        entries.back().has_shape = true;
        current_array_ = &entries.back().shape;
        state_ = State::kArray;
        return true;
      }
      if (key_ == "data_offsets") {
        entries.back().has_offsets = true;
        current_array_ = &entries.back().offsets;
        state_ = State::kArray;
        return true;
      }
      if (key_ == "dtype") fail(where() + "field 'dtype' must be a string, not an array");
      skip_depth_ = 1;
      return true;
    }
    if (state_ == State::kArray) fail(where() + "field '" + key_ + "' must be a list of integers, not nested lists");
    if (state_ == State::kMetadata) fail(where() + "value of '" + key_ + "' must be a string, not an array");
    if (state_ == State::kRoot) fail(root_value_error("an array"));
    fail(where() + "unexpected array");
  }
  bool end_array() {
    if (skip_depth_ > 0) return --skip_depth_, true;
    state_ = State::kEntry;
    return true;
  }
  bool key(string_t& k) {
    if (skip_depth_ > 0) return true;
    key_ = k;
    if (state_ == State::kRoot) {
      if (!root_keys_.insert(k).second) fail(file_ + ": header lists tensor " + in_quotes(k) + " twice");
    } else if (!seen_.insert(k).second) {
      fail(where() + "key '" + k + "' appears twice");
    }
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) {
    fail(file_ + ": header is not valid JSON (" + e.what() + ")");
  }

 private:
  enum class State { kStart, kRoot, kMetadata, kEntry, kArray, kDone };

  [[noreturn]] void fail(const std::string& msg) { throw InputError(msg); }

  std::string where() const {
    if (state_ == State::kMetadata) return file_ + ": __metadata__: ";
    if (state_ == State::kRoot) return file_ + ": tensor " + in_quotes(key_) + ": ";
    if (entries.empty()) return file_ + ": ";
    return file_ + ": tensor " + in_quotes(entries.back().name) + ": ";
  }
  std::string root_value_error(const std::string& what) const {
    if (key_ == "__metadata__") return file_ + ": __metadata__ must be an object of strings, not " + what;
    return where() + "entry must be an object with dtype, shape and data_offsets, not " + what;
  }
  bool known_entry_field() const { return key_ == "dtype" || key_ == "shape" || key_ == "data_offsets"; }
  std::string field_type() const { return key_ == "dtype" ? "a string" : "a list of integers"; }

  // A scalar value (what = its description for errors); `accept` stores it where it is allowed.
  template <typename F>
  bool scalar(const std::string& what, F accept) {
    if (skip_depth_ > 0) return true;
    switch (state_) {
      case State::kStart:
        fail(file_ + ": header is not a JSON object (it is " + what + ")");
      case State::kRoot:
        if (key_ == "__metadata__" && what == "null") return true;  // no metadata
        fail(root_value_error(what));
      case State::kMetadata:
        if (what != "a string") fail(where() + "value of '" + key_ + "' must be a string, not " + what);
        accept();
        return true;
      case State::kEntry:
        if (key_ == "dtype") {
          if (what != "a string") fail(where() + "field 'dtype' must be a string, not " + what);
          entries.back().has_dtype = true;
          accept();
        } else if (key_ == "shape" || key_ == "data_offsets") {
          fail(where() + "field '" + key_ + "' must be a list of integers, not " + what);
        }
        return true;  // other fields are ignored
      case State::kArray:
        fail(where() + "field '" + key_ + "' must hold non-negative 64-bit integers, found " + what);
      default:
        fail(file_ + ": header has trailing content");
    }
  }

  std::string file_;
  State state_ = State::kStart;
  std::string key_;
  int skip_depth_ = 0;  // > 0 while inside the value of an ignored field
  std::vector<uint64_t>* current_array_ = nullptr;
  std::unordered_set<std::string> root_keys_;
  std::set<std::string> seen_;  // keys of the current entry / metadata object
};

uint64_t read_le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// SafetensorsFile
// ------------------------------------------------------------------------------------------------

void SafetensorsFile::advise_partial_reads() const {
  if (map_) madvise(map_, map_size_, MADV_RANDOM);
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) munmap(map_, map_size_);
}

const TensorView* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;

  // Map the file. Sizes are checked before mapping: mmap of an empty file fails, and a directory "opens".
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw InputError(path + ": cannot open (" + errno_text() + ")");
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    std::string err = errno_text();
    ::close(fd);
    throw InputError(path + ": cannot stat (" + err + ")");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw InputError(path + ": not a regular file");
  }
  const uint64_t file_size = uint64_t(st.st_size);
  if (file_size == 0) {
    ::close(fd);
    throw InputError(path + ": the file is empty (0 bytes); expected a safetensors file");
  }
  if (file_size < 8) {
    ::close(fd);
    throw InputError(path + ": file is truncated: " + std::to_string(file_size) +
                     " bytes, shorter than the 8-byte header length that starts a safetensors file");
  }
  void* map = mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  std::string map_err = map == MAP_FAILED ? errno_text() : "";
  ::close(fd);  // the mapping keeps the file alive
  if (map == MAP_FAILED) throw InputError(path + ": cannot mmap (" + map_err + ")");
  f->map_ = map;
  f->map_size_ = file_size;
  const uint8_t* base = static_cast<const uint8_t*>(map);

  // Header length: bounded before anything is read or allocated from it.
  const uint64_t header_len = read_le64(base);
  if (header_len > kMaxSafetensorsHeaderBytes)
    throw InputError(path + ": header length " + std::to_string(header_len) + " exceeds the limit of " +
                     std::to_string(kMaxSafetensorsHeaderBytes) + " bytes (corrupt or not a safetensors file)");
  if (header_len > file_size - 8)
    throw InputError(path + ": header length " + std::to_string(header_len) + " runs past the end of the file (" +
                     std::to_string(file_size) + " bytes; the file is truncated or not a safetensors file)");
  const char* header = reinterpret_cast<const char*>(base + 8);
  if (header_len == 0 || header[0] != '{')
    throw InputError(path + ": header is not a JSON object (it must begin with '{')");

  // nlohmann's lexer takes a NUL byte for the end of input, which would let bytes after it go unread.
  if (const void* nul = std::memchr(header, 0, header_len))
    throw InputError(path + ": header is not valid JSON (NUL byte at header offset " +
                     std::to_string(static_cast<const char*>(nul) - header) + ")");
  HeaderParser parser(path);
  json::sax_parse(header, header + header_len, &parser, nlohmann::detail::input_format_t::json, /*strict=*/true);
  f->metadata_ = std::move(parser.metadata);

  // Check each entry on its own, then that the entries tile the data buffer exactly.
  const uint8_t* data = base + 8 + header_len;
  const uint64_t data_size = file_size - 8 - header_len;
  f->tensors_.reserve(parser.entries.size());
  for (RawEntry& e : parser.entries) {
    const std::string at = path + ": tensor " + in_quotes(e.name) + ": ";
    if (!e.has_dtype) throw InputError(at + "missing field 'dtype'");
    if (!e.has_shape) throw InputError(at + "missing field 'shape'");
    if (!e.has_offsets) throw InputError(at + "missing field 'data_offsets'");
    TensorView t;
    t.name = e.name;
    t.file = path;
    if (!parse_dtype(e.dtype, &t.dtype))
      throw InputError(at + "unknown dtype '" + e.dtype +
                       "' (supported: F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL)");
    for (uint64_t d : e.shape) {
      if (d > uint64_t(std::numeric_limits<int64_t>::max()))
        throw InputError(at + "shape dimension " + std::to_string(d) + " is too large");
      t.shape.push_back(int64_t(d));
    }
    if (e.offsets.size() != 2)
      throw InputError(at + "data_offsets must be [begin, end], found " + std::to_string(e.offsets.size()) +
                       " numbers");
    const uint64_t begin = e.offsets[0], end = e.offsets[1];
    const std::string offsets = "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "]";
    if (begin > end) throw InputError(at + offsets + " begin after end");
    if (end > data_size)
      throw InputError(at + offsets + " run past the end of the data (" + std::to_string(data_size) +
                       " bytes; the file is truncated?)");
    uint64_t need = 0;
    if (!byte_size(t.shape, t.dtype, &need))
      throw InputError(at + "shape " + format_shape(t.shape) + " x " + dtype_name(t.dtype) +
                       " has more bytes than fit in 64 bits");
    if (end - begin != need)
      throw InputError(at + offsets + " hold " + std::to_string(end - begin) + " bytes but shape " +
                       format_shape(t.shape) + " x " + dtype_name(t.dtype) + " needs " + std::to_string(need));
    t.data = data + begin;
    t.nbytes = size_t(need);
    f->tensors_.push_back(std::move(t));
  }

  // Sorted by position, each tensor must start where the previous one ended and the last must end at the
  // end of the file: no overlap (two names for the same bytes), no gap and no trailing bytes (hidden
  // content, as in polyglot files). This is the reference implementation's rule.
  std::vector<size_t> order(parser.entries.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return std::make_pair(parser.entries[a].offsets[0], parser.entries[a].offsets[1]) <
           std::make_pair(parser.entries[b].offsets[0], parser.entries[b].offsets[1]);
  });
  uint64_t pos = 0;
  const RawEntry* prev = nullptr;
  for (size_t i : order) {
    const RawEntry& e = parser.entries[i];
    const uint64_t begin = e.offsets[0], end = e.offsets[1];
    if (begin < pos)
      throw InputError(path + ": tensor " + in_quotes(e.name) + ": data_offsets [" + std::to_string(begin) + ", " +
                       std::to_string(end) + "] overlap tensor " + in_quotes(prev->name) + " (which ends at " +
                       std::to_string(pos) + ")");
    if (begin > pos)
      throw InputError(path + ": tensor " + in_quotes(e.name) + ": data_offsets [" + std::to_string(begin) + ", " +
                       std::to_string(end) + "] leave a gap of " + std::to_string(begin - pos) +
                       " unused bytes before it (tensors must tile the data buffer)");
    pos = end;
    prev = &e;
  }
  if (pos != data_size)
    throw InputError(path + ": " + std::to_string(data_size - pos) +
                     " bytes after the last tensor belong to no tensor (tensors must tile the data buffer)");

  for (size_t i = 0; i < f->tensors_.size(); ++i) f->index_[f->tensors_[i].name] = i;
  return f;
}

// ------------------------------------------------------------------------------------------------
// Checkpoint: one file, or shards listed by an HF index
// ------------------------------------------------------------------------------------------------

struct Checkpoint::State {
  std::vector<std::shared_ptr<SafetensorsFile>> files;
  std::vector<const TensorView*> order;
  std::unordered_map<std::string, const TensorView*> by_name;
};

namespace {

constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr const char* kSingleName = "model.safetensors";
constexpr uint64_t kMaxIndexBytes = 100'000'000;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The shards an HF index names, opened, with the index checked against what the shards hold.
std::vector<std::shared_ptr<SafetensorsFile>> open_sharded(const std::string& index_path) {
  std::error_code ec;
  const uint64_t size = fs::file_size(index_path, ec);
  if (!ec && size > kMaxIndexBytes)
    throw InputError(index_path + ": " + std::to_string(size) + " bytes is too large for a shard index");
  json index = parse_json_input(read_file(index_path), index_path);
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
    throw InputError(index_path + ": expected an object with a \"weight_map\" object {tensor: shard file}");

  // shard file -> tensors the index places there
  std::map<std::string, std::vector<std::string>> listed;
  for (const auto& [name, shard] : index["weight_map"].items()) {
    if (!shard.is_string())
      throw InputError(index_path + ": weight_map entry for tensor " + in_quotes(name) + " must be a file name");
    const std::string file = shard.get<std::string>();
    const fs::path p(file);
    if (file.empty() || p.is_absolute() || std::any_of(p.begin(), p.end(), [](const fs::path& c) { return c == ".."; }))
      throw InputError(index_path + ": weight_map entry for tensor " + in_quotes(name) + " names shard '" + file +
                       "', which is not a file inside the checkpoint directory");
    listed[file].push_back(name);
  }

  const fs::path dir = fs::path(index_path).parent_path();
  std::vector<std::shared_ptr<SafetensorsFile>> files;
  for (const auto& [shard, names] : listed) {
    const std::string shard_path = (dir / shard).string();
    if (!fs::exists(shard_path, ec))  // (a name too long for the filesystem: an error code, not an exception)
      throw InputError(index_path + ": shard '" + shard + "' (listed for " + std::to_string(names.size()) +
                       " tensors, e.g. " + in_quotes(names.front()) + ") is missing: " + shard_path +
                       (ec ? ": " + ec.message() : " does not exist"));
    files.push_back(SafetensorsFile::open(shard_path));
  }

  // Every listed tensor must be in the shard the index names, and every shard tensor must be listed.
  std::unordered_map<std::string, const TensorView*> found;
  for (const auto& f : files)
    for (const TensorView& t : f->tensors()) {
      auto [it, fresh] = found.emplace(t.name, &t);
      if (!fresh)
        throw InputError(index_path + ": tensor " + in_quotes(t.name) + " appears in two shards: " + it->second->file +
                         " and " + t.file);
    }
  size_t n_listed = 0, i = 0;
  for (const auto& [shard, names] : listed) {
    const SafetensorsFile& file = *files[i++];
    for (const std::string& name : names) {
      ++n_listed;
      auto it = found.find(name);
      if (it == found.end())
        throw InputError(index_path + ": weight_map places tensor " + in_quotes(name) + " in shard '" + shard +
                         "', but no shard holds it");
      if (it->second->file != file.path())
        throw InputError(index_path + ": weight_map places tensor " + in_quotes(name) + " in shard '" + shard +
                         "', but it is in " + it->second->file);
    }
  }
  if (n_listed != found.size())
    for (const auto& f : files)
      for (const TensorView& t : f->tensors())
        if (!index["weight_map"].contains(t.name))
          throw InputError(index_path + ": shard " + f->path() + " holds tensor " + in_quotes(t.name) +
                           ", which the weight_map does not list");
  return files;
}

// Why a directory holds no checkpoint we can read, and what to do about it.
[[noreturn]] void no_checkpoint_in(const std::string& dir) {
  std::string msg = dir + ": no safetensors checkpoint found (looked for " + kIndexName + " and " + kSingleName + ")";
  std::vector<std::string> other_safetensors;
  bool pytorch = false;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("pytorch_model", 0) == 0 && (ends_with(name, ".bin") || ends_with(name, ".bin.index.json")))
      pytorch = true;
    if (ends_with(name, ".safetensors")) other_safetensors.push_back(name);
  }
  if (pytorch) msg += "; found pytorch_model.bin*: PyTorch .bin checkpoints are not supported; convert to safetensors";
  if (!other_safetensors.empty()) {
    std::sort(other_safetensors.begin(), other_safetensors.end());
    msg += "; found " + other_safetensors.front() + (other_safetensors.size() > 1 ? " and others" : "") +
           ": pass a .safetensors file's path to load it directly";
  }
  throw InputError(msg);
}

}  // namespace

Checkpoint::Checkpoint() : state_(std::make_shared<State>()) {}

Checkpoint Checkpoint::open(const std::string& dir_or_file) {
  auto state = std::make_shared<State>();
  std::error_code ec;
  if (!fs::exists(dir_or_file, ec)) throw InputError(dir_or_file + ": no such file or directory");
  if (fs::is_directory(dir_or_file, ec)) {
    const fs::path dir(dir_or_file);
    if (fs::exists(dir / kIndexName, ec)) state->files = open_sharded((dir / kIndexName).string());
    else if (fs::exists(dir / kSingleName, ec)) state->files = {SafetensorsFile::open((dir / kSingleName).string())};
    else no_checkpoint_in(dir_or_file);
  } else if (ends_with(dir_or_file, ".json")) {
    state->files = open_sharded(dir_or_file);
  } else {
    state->files = {SafetensorsFile::open(dir_or_file)};
  }
  for (const auto& f : state->files)
    for (const TensorView& t : f->tensors()) {
      state->order.push_back(&t);
      state->by_name[t.name] = &t;
    }
  Checkpoint c;
  c.state_ = std::move(state);
  c.path_ = dir_or_file;
  return c;
}

const TensorView* Checkpoint::find(const std::string& name) const {
  auto it = state_->by_name.find(name);
  return it == state_->by_name.end() ? nullptr : it->second;
}

const TensorView& Checkpoint::tensor(const std::string& name) const {
  if (const TensorView* t = find(name)) return *t;
  throw InputError("checkpoint " + path_ + " has no tensor " + in_quotes(name) + " (it has " +
                   std::to_string(state_->order.size()) + " tensors)");
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(state_->order.size());
  for (const TensorView* t : state_->order) out.push_back(t->name);
  return out;
}

std::shared_ptr<const void> Checkpoint::keepalive() const { return state_; }

uint64_t Checkpoint::total_bytes() const {
  uint64_t n = 0;
  for (const TensorView* t : state_->order) n += t->nbytes;
  return n;
}

std::vector<std::shared_ptr<SafetensorsFile>> Checkpoint::files() const { return state_->files; }

// ------------------------------------------------------------------------------------------------
// Writing
// ------------------------------------------------------------------------------------------------

namespace {

// A temporary file beside the destination, renamed over it by commit(); removed if never committed.
class AtomicFile {
 public:
  explicit AtomicFile(const std::string& path) : path_(path), tmp_(path + ".tmp.XXXXXX") {
    fd_ = mkstemp(tmp_.data());
    if (fd_ < 0) throw InputError(path + ": cannot create a file here (" + errno_text() + ")");
    fchmod(fd_, 0644);  // mkstemp creates 0600; checkpoints are meant to be shared
  }
  ~AtomicFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(tmp_.c_str());
  }
  void write(const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      ssize_t w = ::write(fd_, p, n);  // may write less than asked (e.g. > 2 GiB requests)
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) throw std::runtime_error(path_ + ": write failed (" + errno_text() + ")");
      p += w;
      n -= size_t(w);
    }
  }
  void commit() {
    if (fsync(fd_) != 0) throw std::runtime_error(path_ + ": fsync failed (" + errno_text() + ")");
    if (::close(fd_) != 0) {
      fd_ = -1;
      throw std::runtime_error(path_ + ": close failed (" + errno_text() + ")");
    }
    fd_ = -1;
    if (std::rename(tmp_.c_str(), path_.c_str()) != 0)
      throw std::runtime_error(path_ + ": cannot rename " + tmp_ + " (" + errno_text() + ")");
    committed_ = true;
  }

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

void check_tensors_to_write(const std::string& path, const std::vector<TensorToWrite>& tensors) {
  std::unordered_set<std::string> names;
  for (const auto& t : tensors) {
    const std::string at = path + ": tensor " + in_quotes(t.name) + ": ";
    if (t.name == "__metadata__") throw std::invalid_argument(at + "the name is reserved by the format");
    if (!names.insert(t.name).second) throw std::invalid_argument(at + "given twice");
    uint64_t need = 0;
    if (!byte_size(t.shape, t.dtype, &need))
      throw std::invalid_argument(at + "invalid shape " + format_shape(t.shape));
    if (need != t.nbytes)
      throw std::invalid_argument(at + "shape " + format_shape(t.shape) + " x " + dtype_name(t.dtype) + " needs " +
                                  std::to_string(need) + " bytes, given " + std::to_string(t.nbytes));
    if (t.nbytes > 0 && t.data == nullptr) throw std::invalid_argument(at + "no data");
  }
}

}  // namespace

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  check_tensors_to_write(path, tensors);

  // ordered_json keeps the tensors in the caller's order, so a reader lists them back the same way.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    header[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.nbytes}}};
    offset += t.nbytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data buffer then starts 8-byte aligned

  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = uint8_t(uint64_t(text.size()) >> (8 * i));
  AtomicFile out(path);
  out.write(len, sizeof len);
  out.write(text.data(), text.size());
  for (const auto& t : tensors) out.write(t.data, t.nbytes);
  out.commit();
}

void write_sharded_safetensors(const std::string& dir, const std::vector<TensorToWrite>& tensors,
                               uint64_t max_shard_bytes, const std::map<std::string, std::string>& metadata) {
  if (max_shard_bytes == 0) throw std::invalid_argument("write_sharded_safetensors: max_shard_bytes must be > 0");
  check_tensors_to_write(dir, tensors);

  // Greedy packing in the given order, as HF's save_pretrained does.
  std::vector<std::vector<TensorToWrite>> shards(1);
  uint64_t in_shard = 0, total = 0;
  for (const auto& t : tensors) {
    if (!shards.back().empty() && in_shard + t.nbytes > max_shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(t);
    in_shard += t.nbytes;
    total += t.nbytes;
  }

  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw InputError(dir + ": cannot create directory (" + ec.message() + ")");
  json weight_map = json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
    write_safetensors((fs::path(dir) / name).string(), shards[i], metadata);
    for (const auto& t : shards[i]) weight_map[t.name] = name;
  }
  // Written last, so a reader never sees an index whose shards are not all complete.
  json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  write_file((fs::path(dir) / kIndexName).string(), index.dump(2) + "\n");
}

}  // namespace layerprune
