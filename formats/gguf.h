// GGUF files (llama.cpp's checkpoint format) without LibTorch: a strict, zero-copy reader and the
// dequantisation of its block formats to float32.
//
// The format (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md), all integers little-endian:
//   "GGUF" magic, uint32 version (2 or 3), uint64 tensor count, uint64 metadata count;
//   metadata: key (uint64 length + UTF-8 bytes), uint32 value type, value (scalars; strings as length + bytes;
//     arrays as uint32 element type, uint64 count, elements, which may themselves be strings or arrays);
//   tensor infos: name, uint32 n_dims, uint64 dims[n_dims] (ggml order: dims[0] is the innermost, contiguous
//     one), uint32 ggml type, uint64 offset (relative to the data section);
//   padding to `general.alignment` (uint32, a power of two, default 32); the data section.
// Version 1 (32-bit counts, 2023) is refused. A big-endian file (what llama.cpp's converter writes with
// --bigendian) is recognised and refused: this reader does not byte-swap.
//
// Every count, length and dimension is checked against the bytes actually left in the file before anything
// is allocated, so a truncated or hostile file is an InputError naming the file, the key or tensor and the
// byte offset, never a crash or a huge allocation. Tensors must lie inside the data section, start on an
// aligned offset, not overlap each other, have a shape whose product fits in 64 bits, and a row size
// (dims[0]) that is a multiple of their type's block size.
//
// Values and tensors are views into a read-only memory mapping (the file is treated as immutable, as with
// safetensors: truncating it while mapped makes reads fault).
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace layerprune {

// ------------------------------------------------------------------------------------------------
// Metadata values
// ------------------------------------------------------------------------------------------------

enum class GgufValueType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
// "uint32", "string", "array", ...; "type id N" for an id outside the enum.
std::string gguf_value_type_name(GgufValueType t);

// One metadata value (or one element of an array), decoded on access from the mapping. The typed getters
// throw an InputError naming the file and the key, what was expected and what was found.
class GgufValue {
 public:
  GgufValueType type() const { return type_; }
  // "uint32", or for arrays "array of 49152 string".
  std::string describe() const;

  bool is_integer() const;  // any of uint8..int64
  bool is_float() const { return type_ == GgufValueType::FLOAT32 || type_ == GgufValueType::FLOAT64; }

  int64_t as_int() const;          // any integer type (a uint64 beyond int64 is an error)
  double as_double() const;        // float32 or float64 (not integers: a key's type is part of its contract)
  bool as_bool() const;            // bool (a byte other than 0 or 1 is an error)
  std::string as_string() const;   // string

  // Arrays.
  bool is_array() const { return type_ == GgufValueType::ARRAY; }
  GgufValueType element_type() const;  // throws when not an array
  uint64_t size() const;               // number of elements; throws when not an array
  std::vector<std::string> as_strings() const;  // array of string
  std::vector<int64_t> as_ints() const;         // array of any integer type
  std::vector<float> as_floats() const;         // array of float32 or float64
  std::vector<GgufValue> elements() const;      // any array (nested arrays included)

  const std::string& key() const { return key_; }

 private:
  friend class GgufFile;
  friend struct GgufParser;
  [[noreturn]] void wrong_type(const std::string& expected) const;
  void require_array_of(const char* expected) const;

  GgufValueType type_ = GgufValueType::UINT8;
  GgufValueType element_type_ = GgufValueType::UINT8;  // arrays only
  uint64_t count_ = 0;                                  // arrays only
  const uint8_t* data_ = nullptr;  // the value's bytes (for arrays: the first element's)
  size_t nbytes_ = 0;              // bytes of the value (for arrays: of all elements)
  std::string key_;                // for messages ("general.name", "tokenizer.ggml.tokens[3]")
  const std::string* file_ = nullptr;
};

// ------------------------------------------------------------------------------------------------
// Tensor types and dequantisation
// ------------------------------------------------------------------------------------------------

// ggml's type ids (ggml.h; sizes as in ggml's type traits, Q8_1 at ggml's 36 bytes where gguf-py 0.19 says 40). Ids that ggml retired (4, 5, 31-33, 36-38) are not listed; reading a file that
// uses one, or an id beyond the table, is an "unknown tensor type" error.
enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23,
  I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30, TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39,
  NVFP4 = 40, Q1_0 = 41,
};

struct GgmlTypeInfo {
  const char* name;      // "Q4_K"
  int64_t block_size;    // elements per block (1 for plain types)
  int64_t type_size;     // bytes per block
  bool dequantizable;    // this reader can turn it into float32
};
// nullptr for an id ggml does not (or no longer) define.
const GgmlTypeInfo* ggml_type_info(uint32_t id);
// The name for messages: "Q4_1", or "type id 4" for an unknown id.
std::string ggml_type_name(uint32_t id);

// Dequantise n elements (a multiple of the type's block size) from `src` (n / block_size blocks, read
// byte-wise: `src` need not be aligned) into dst. Each follows ggml-quants.c's dequantize_row_* (and
// gguf-py's gguf.quants, against which the tests check them).
void dequantize_f32(const uint8_t* src, int64_t n, float* dst);
void dequantize_f16(const uint8_t* src, int64_t n, float* dst);
void dequantize_bf16(const uint8_t* src, int64_t n, float* dst);
void dequantize_q8_0(const uint8_t* src, int64_t n, float* dst);
void dequantize_q4_0(const uint8_t* src, int64_t n, float* dst);
void dequantize_q4_1(const uint8_t* src, int64_t n, float* dst);
void dequantize_q5_0(const uint8_t* src, int64_t n, float* dst);
void dequantize_q5_1(const uint8_t* src, int64_t n, float* dst);
void dequantize_q4_k(const uint8_t* src, int64_t n, float* dst);
void dequantize_q5_k(const uint8_t* src, int64_t n, float* dst);
void dequantize_q6_k(const uint8_t* src, int64_t n, float* dst);
// Dispatches on the type. std::invalid_argument for a type without a dequantiser or an n that is not a
// multiple of the block size (callers with a file in hand check both first and report InputErrors).
void dequantize(GgmlType type, const uint8_t* src, int64_t n, float* dst);

// IEEE half and bfloat16 to float, exactly (subnormals, infinities and NaNs included).
float half_to_float(uint16_t h);
float bf16_to_float(uint16_t b);

// ------------------------------------------------------------------------------------------------
// The file
// ------------------------------------------------------------------------------------------------

struct GgufTensor {
  std::string name;
  uint32_t type = 0;           // a GgmlType id (known to ggml_type_info: checked on open)
  std::vector<int64_t> dims;   // ggml order: dims[0] is the innermost (a row)
  uint64_t offset = 0;         // from the start of the data section
  const uint8_t* data = nullptr;  // into the mapping
  size_t nbytes = 0;
  int64_t numel() const;
  // The PyTorch / Hugging Face shape: dims reversed ([rows, cols] for a matrix).
  std::vector<int64_t> shape() const;
  std::string type_name() const { return ggml_type_name(type); }
};

// Refuses files with more tensors than this, whatever their size (a real model has hundreds to a few
// thousand; llama.cpp checks the count only for overflow). Key counts are bounded by the file's size.
constexpr uint64_t kMaxGgufTensors = 1'000'000;
// Nested arrays deeper than this are refused (a recursion bound; real files nest at most once).
constexpr int kMaxGgufArrayDepth = 8;
// At most this many dimensions per tensor (GGML_MAX_DIMS).
constexpr uint32_t kMaxGgufDims = 4;

class GgufFile {
 public:
  static std::shared_ptr<GgufFile> open(const std::string& path);  // throws InputError
  ~GgufFile();  // unmaps
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // where the data section starts in the file

  // Metadata, in file order.
  const std::vector<GgufValue>& metadata() const { return metadata_; }
  const GgufValue* find(const std::string& key) const;  // nullptr if absent
  const GgufValue& get(const std::string& key) const;   // InputError naming the file and key if absent
  // Typed shorthands for get(key).as_*().
  int64_t get_int(const std::string& key) const { return get(key).as_int(); }
  double get_double(const std::string& key) const { return get(key).as_double(); }
  bool get_bool(const std::string& key) const { return get(key).as_bool(); }
  std::string get_string(const std::string& key) const { return get(key).as_string(); }

  // Tensors, in file order.
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const GgufTensor* find_tensor(const std::string& name) const;  // nullptr if absent
  const GgufTensor& tensor(const std::string& name) const;       // InputError if absent
  // The tensor as float32 in its own (ggml) element order; InputError "unsupported tensor type X in tensor
  // Y" for a type without a dequantiser.
  std::vector<float> dequantize(const GgufTensor& t) const;
  void dequantize_into(const GgufTensor& t, float* dst) const;  // dst holds t.numel() floats

 private:
  GgufFile() = default;
  friend struct GgufParser;
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  uint32_t version_ = 0, alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<GgufValue> metadata_;
  std::map<std::string, size_t, std::less<>> key_index_;
  std::vector<GgufTensor> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

// ------------------------------------------------------------------------------------------------
// The tokenizer in the metadata (tokenizer.ggml.*, the keys llama.cpp's vocabulary loader reads)
// ------------------------------------------------------------------------------------------------

struct GgufTokenizerMetadata {
  std::string model;               // tokenizer.ggml.model: "gpt2" (byte-level BPE), "llama" (SentencePiece), ...
  std::string pre;                 // tokenizer.ggml.pre: the pre-tokenizer's name ("" when absent)
  std::vector<std::string> tokens;  // tokenizer.ggml.tokens, by id
  std::vector<int64_t> token_types;  // tokenizer.ggml.token_type (1 normal, 2 unknown, 3 control,
                                      // 4 user-defined, 5 unused, 6 byte); empty when absent
  std::vector<std::string> merges;  // tokenizer.ggml.merges ("a b"), empty when absent
  std::vector<float> scores;        // tokenizer.ggml.scores, empty when absent
  std::optional<int64_t> bos_token_id, eos_token_id, unknown_token_id, padding_token_id;
  std::optional<bool> add_bos_token, add_eos_token, add_space_prefix;
  std::string chat_template;  // tokenizer.chat_template ("" when absent)
};
// Reads the keys above with their types checked (an InputError naming the file and the key for a wrong
// type), token_type and scores of the same length as tokens, and every token id inside the vocabulary.
// tokenizer.ggml.model and tokenizer.ggml.tokens are required.
GgufTokenizerMetadata read_gguf_tokenizer(const GgufFile& file);

}  // namespace layerprune
