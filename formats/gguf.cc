#include "formats/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <numeric>
#include <stdexcept>

#include "common/error.h"

namespace layerprune {

namespace {

std::string in_quotes(const std::string& s) { return "'" + s + "'"; }

uint16_t le16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }
uint32_t le32(const uint8_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24; }
uint64_t le64(const uint8_t* p) { return uint64_t(le32(p)) | uint64_t(le32(p + 4)) << 32; }

// Size in bytes of a scalar value type; 0 for string, array and unknown ids.
size_t scalar_size(GgufValueType t) {
  switch (t) {
    case GgufValueType::UINT8: case GgufValueType::INT8: case GgufValueType::BOOL: return 1;
    case GgufValueType::UINT16: case GgufValueType::INT16: return 2;
    case GgufValueType::UINT32: case GgufValueType::INT32: case GgufValueType::FLOAT32: return 4;
    case GgufValueType::UINT64: case GgufValueType::INT64: case GgufValueType::FLOAT64: return 8;
    default: return 0;
  }
}

bool known_value_type(uint32_t id) { return id <= uint32_t(GgufValueType::FLOAT64); }

// Reads one integer of type t (already known to be an integer type) at p.
bool read_integer(GgufValueType t, const uint8_t* p, int64_t* out) {
  switch (t) {
    case GgufValueType::UINT8: *out = p[0]; return true;
    case GgufValueType::INT8: *out = int8_t(p[0]); return true;
    case GgufValueType::UINT16: *out = le16(p); return true;
    case GgufValueType::INT16: *out = int16_t(le16(p)); return true;
    case GgufValueType::UINT32: *out = le32(p); return true;
    case GgufValueType::INT32: *out = int32_t(le32(p)); return true;
    case GgufValueType::INT64: *out = int64_t(le64(p)); return true;
    case GgufValueType::UINT64: {
      const uint64_t v = le64(p);
      if (v > uint64_t(std::numeric_limits<int64_t>::max())) return false;
      *out = int64_t(v);
      return true;
    }
    default: return false;
  }
}

bool integer_type(GgufValueType t) {
  switch (t) {
    case GgufValueType::UINT8: case GgufValueType::INT8: case GgufValueType::UINT16: case GgufValueType::INT16:
    case GgufValueType::UINT32: case GgufValueType::INT32: case GgufValueType::UINT64: case GgufValueType::INT64:
      return true;
    default:
      return false;
  }
}

double read_float(GgufValueType t, const uint8_t* p) {
  if (t == GgufValueType::FLOAT32) {
    const uint32_t bits = le32(p);
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  const uint64_t bits = le64(p);
  double d;
  std::memcpy(&d, &bits, 8);
  return d;
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Metadata values
// ------------------------------------------------------------------------------------------------

std::string gguf_value_type_name(GgufValueType t) {
  static const char* const names[] = {"uint8", "int8",  "uint16", "int16",  "uint32", "int32",  "float32",
                                      "bool",  "string", "array", "uint64", "int64",  "float64"};
  const uint32_t id = uint32_t(t);
  return id < sizeof names / sizeof names[0] ? names[id] : "type id " + std::to_string(id);
}

std::string GgufValue::describe() const {
  if (type_ != GgufValueType::ARRAY) return gguf_value_type_name(type_);
  return "array of " + std::to_string(count_) + " " + gguf_value_type_name(element_type_);
}

bool GgufValue::is_integer() const { return integer_type(type_); }

void GgufValue::wrong_type(const std::string& expected) const {
  throw InputError(*file_ + ": key " + in_quotes(key_) + ": expected " + expected + ", found " + describe());
}

int64_t GgufValue::as_int() const {
  if (!is_integer()) wrong_type("an integer");
  int64_t v = 0;
  if (!read_integer(type_, data_, &v))
    throw InputError(*file_ + ": key " + in_quotes(key_) + ": uint64 value " + std::to_string(le64(data_)) +
                     " does not fit in a signed 64-bit integer");
  return v;
}

double GgufValue::as_double() const {
  if (!is_float()) wrong_type("a float32 or float64");
  return read_float(type_, data_);
}

bool GgufValue::as_bool() const {
  if (type_ != GgufValueType::BOOL) wrong_type("a bool");
  if (data_[0] > 1)
    throw InputError(*file_ + ": key " + in_quotes(key_) + ": bool byte is " + std::to_string(data_[0]) +
                     ", expected 0 or 1");
  return data_[0] == 1;
}

std::string GgufValue::as_string() const {
  if (type_ != GgufValueType::STRING) wrong_type("a string");
  return std::string(reinterpret_cast<const char*>(data_ + 8), nbytes_ - 8);
}

GgufValueType GgufValue::element_type() const {
  if (!is_array()) wrong_type("an array");
  return element_type_;
}

uint64_t GgufValue::size() const {
  if (!is_array()) wrong_type("an array");
  return count_;
}

void GgufValue::require_array_of(const char* expected) const {
  if (!is_array()) wrong_type(std::string("an array of ") + expected);
}

std::vector<std::string> GgufValue::as_strings() const {
  require_array_of("string");
  if (element_type_ != GgufValueType::STRING) wrong_type("an array of string");
  std::vector<std::string> out;
  out.reserve(count_);  // bounded: each element took at least 8 bytes of the file (checked on open)
  const uint8_t* p = data_;
  for (uint64_t i = 0; i < count_; ++i) {
    const uint64_t n = le64(p);  // lengths were checked against the array's extent on open
    out.emplace_back(reinterpret_cast<const char*>(p + 8), size_t(n));
    p += 8 + n;
  }
  return out;
}

std::vector<int64_t> GgufValue::as_ints() const {
  require_array_of("integers");
  if (!integer_type(element_type_)) wrong_type("an array of integers");
  std::vector<int64_t> out(count_);
  const size_t step = scalar_size(element_type_);
  for (uint64_t i = 0; i < count_; ++i)
    if (!read_integer(element_type_, data_ + i * step, &out[i]))
      throw InputError(*file_ + ": key " + in_quotes(key_) + ": element " + std::to_string(i) +
                       " does not fit in a signed 64-bit integer");
  return out;
}

std::vector<float> GgufValue::as_floats() const {
  require_array_of("float32");
  if (element_type_ != GgufValueType::FLOAT32 && element_type_ != GgufValueType::FLOAT64)
    wrong_type("an array of float32 or float64");
  std::vector<float> out(count_);
  const size_t step = scalar_size(element_type_);
  for (uint64_t i = 0; i < count_; ++i) out[i] = float(read_float(element_type_, data_ + i * step));
  return out;
}

// ------------------------------------------------------------------------------------------------
// Parsing: a cursor over the mapping that checks every read against the bytes left
// ------------------------------------------------------------------------------------------------

struct GgufParser {
  const std::string& path;
  const uint8_t* base;
  size_t size;
  size_t pos = 0;

  size_t left() const { return size - pos; }

  [[noreturn]] void fail(const std::string& where, const std::string& what, size_t at) const {
    throw InputError(path + ": " + where + (where.empty() ? "" : ": ") + what + " (at byte " + std::to_string(at) + ")");
  }
  // Makes sure n more bytes exist; `what` says what was being read.
  void need(uint64_t n, const std::string& where, const std::string& what) const {
    if (n > left())
      fail(where, what + " needs " + std::to_string(n) + " bytes, but the file ends after " + std::to_string(left()),
           pos);
  }
  uint32_t u32(const std::string& where, const char* what) {
    need(4, where, what);
    const uint32_t v = le32(base + pos);
    pos += 4;
    return v;
  }
  uint64_t u64(const std::string& where, const char* what) {
    need(8, where, what);
    const uint64_t v = le64(base + pos);
    pos += 8;
    return v;
  }
  // A length-prefixed string, as a view into the mapping.
  std::string_view str(const std::string& where, const char* what) {
    const size_t at = pos;
    const uint64_t n = u64(where, what);
    if (n > left())
      fail(where, std::string(what) + " length " + std::to_string(n) + " runs past the end of the file (" +
                      std::to_string(left()) + " bytes left)",
           at);
    std::string_view s(reinterpret_cast<const char*>(base + pos), size_t(n));
    pos += n;
    return s;
  }

  // Checks a value of type `t` starting at pos and moves past it; fills v's extent.
  void value(GgufValueType t, const std::string& key, int depth, GgufValue* v) {
    const size_t at = pos;
    v->type_ = t;
    v->key_ = key;
    v->file_ = &path;
    if (const size_t n = scalar_size(t)) {
      need(n, "key " + in_quotes(key), gguf_value_type_name(t) + " value");
      v->data_ = base + pos;
      v->nbytes_ = n;
      pos += n;
      return;
    }
    if (t == GgufValueType::STRING) {
      v->data_ = base + pos;
      const std::string_view s = str("key " + in_quotes(key), "string");
      v->nbytes_ = 8 + s.size();
      return;
    }
    if (t != GgufValueType::ARRAY)
      fail("key " + in_quotes(key), "unknown value type id " + std::to_string(uint32_t(t)) + " (known: 0-12)", at - 4);
    const std::string where = "key " + in_quotes(key);
    const uint32_t elem = u32(where, "array element type");
    if (!known_value_type(elem))
      fail(where, "unknown array element type id " + std::to_string(elem) + " (known: 0-12)", pos - 4);
    const uint64_t count = u64(where, "array length");
    v->element_type_ = GgufValueType(elem);
    v->count_ = count;
    v->data_ = base + pos;
    // Every element takes at least `least` bytes: a count the rest of the file cannot hold is refused here,
    // before any per-element work.
    const size_t width = scalar_size(GgufValueType(elem));
    const uint64_t least = width ? width : elem == uint32_t(GgufValueType::STRING) ? 8 : 12;
    if (count > left() / least)
      fail(where, "array of " + std::to_string(count) + " " + gguf_value_type_name(GgufValueType(elem)) +
                      " needs at least " + std::to_string(least) + " bytes each, but only " +
                      std::to_string(left()) + " bytes are left",
           pos - 8);
    if (width) {
      pos += count * width;
    } else if (elem == uint32_t(GgufValueType::STRING)) {
      // (49k tokens, 49k merges: the message is built only on failure)
      for (uint64_t i = 0; i < count; ++i) {
        if (left() < 8 || le64(base + pos) > left() - 8) str(where + " element " + std::to_string(i), "string");
        pos += 8 + size_t(le64(base + pos));
      }
    } else {
      if (depth + 1 > kMaxGgufArrayDepth)
        fail(where, "arrays nested deeper than " + std::to_string(kMaxGgufArrayDepth) + " levels", at);
      // A nested array's elements carry no type tag of their own: each is an element type, a count and
      // the elements (gguf-py's writer and reader).
      for (uint64_t i = 0; i < count; ++i) {
        GgufValue inner;
        value(GgufValueType::ARRAY, key + "[" + std::to_string(i) + "]", depth + 1, &inner);
      }
    }
    v->nbytes_ = size_t(base + pos - v->data_);
  }
};

std::vector<GgufValue> GgufValue::elements() const {
  require_array_of("values");
  // Walks the extent checked on open again (so it cannot fail), one GgufValue per element.
  GgufParser p{*file_, data_, nbytes_};
  std::vector<GgufValue> out(count_);
  for (uint64_t i = 0; i < count_; ++i) p.value(element_type_, key_ + "[" + std::to_string(i) + "]", 1, &out[i]);
  return out;
}

// ------------------------------------------------------------------------------------------------
// Tensor types
// ------------------------------------------------------------------------------------------------

namespace {

struct TypeRow {
  uint32_t id;
  GgmlTypeInfo info;
};
// ggml.c's type_traits (block size, bytes per block); `true` where this file has a dequantiser.
const TypeRow kTypes[] = {
    {0, {"F32", 1, 4, true}},          {1, {"F16", 1, 2, true}},          {2, {"Q4_0", 32, 18, true}},
    {3, {"Q4_1", 32, 20, true}},       {6, {"Q5_0", 32, 22, true}},       {7, {"Q5_1", 32, 24, true}},
    {8, {"Q8_0", 32, 34, true}},       {9, {"Q8_1", 32, 36, false}},      {10, {"Q2_K", 256, 84, false}},
    {11, {"Q3_K", 256, 110, false}},   {12, {"Q4_K", 256, 144, true}},    {13, {"Q5_K", 256, 176, true}},
    {14, {"Q6_K", 256, 210, true}},    {15, {"Q8_K", 256, 292, false}},   {16, {"IQ2_XXS", 256, 66, false}},
    {17, {"IQ2_XS", 256, 74, false}},  {18, {"IQ3_XXS", 256, 98, false}}, {19, {"IQ1_S", 256, 50, false}},
    {20, {"IQ4_NL", 32, 18, false}},   {21, {"IQ3_S", 256, 110, false}},  {22, {"IQ2_S", 256, 82, false}},
    {23, {"IQ4_XS", 256, 136, false}}, {24, {"I8", 1, 1, false}},         {25, {"I16", 1, 2, false}},
    {26, {"I32", 1, 4, false}},        {27, {"I64", 1, 8, false}},        {28, {"F64", 1, 8, false}},
    {29, {"IQ1_M", 256, 56, false}},   {30, {"BF16", 1, 2, true}},        {34, {"TQ1_0", 256, 54, false}},
    {35, {"TQ2_0", 256, 66, false}},   {39, {"MXFP4", 32, 17, false}},    {40, {"NVFP4", 64, 36, false}},
    {41, {"Q1_0", 128, 18, false}},
};

std::string dequantizable_list() {
  std::string s;
  for (const TypeRow& r : kTypes)
    if (r.info.dequantizable) s += std::string(s.empty() ? "" : ", ") + r.info.name;
  return s;
}

}  // namespace

const GgmlTypeInfo* ggml_type_info(uint32_t id) {
  for (const TypeRow& r : kTypes)
    if (r.id == id) return &r.info;
  return nullptr;
}

std::string ggml_type_name(uint32_t id) {
  const GgmlTypeInfo* info = ggml_type_info(id);
  return info ? info->name : "type id " + std::to_string(id);
}

// ------------------------------------------------------------------------------------------------
// Dequantisation (ggml-quants.c's dequantize_row_*; blocks read byte-wise, little-endian)
// ------------------------------------------------------------------------------------------------

float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  const uint32_t exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
  uint32_t bits;
  if (exponent == 0) {
    // zero or subnormal: mantissa x 2^-24, exact in float
    const float f = float(mantissa) * 0x1p-24f;
    return sign ? -f : f;
  }
  if (exponent == 31) bits = sign | 0x7f800000u | (mantissa << 13);  // inf / NaN (payload kept)
  else bits = sign | ((exponent + 112) << 23) | (mantissa << 13);      // rebias 15 -> 127
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float bf16_to_float(uint16_t b) {
  const uint32_t bits = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

void dequantize_f32(const uint8_t* src, int64_t n, float* dst) {
  if (n > 0) std::memcpy(dst, src, size_t(n) * 4);  // (memcpy's pointers must be non-null even for 0 bytes)
}

void dequantize_f16(const uint8_t* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = half_to_float(le16(src + 2 * i));
}

void dequantize_bf16(const uint8_t* src, int64_t n, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_float(le16(src + 2 * i));
}

// Q8_0: 32 weights = f16 scale d, int8 q[32]; w = q * d.
void dequantize_q8_0(const uint8_t* src, int64_t n, float* dst) {
  for (int64_t b = 0; b < n / 32; ++b, src += 34, dst += 32) {
    const float d = half_to_float(le16(src));
    for (int j = 0; j < 32; ++j) dst[j] = float(int8_t(src[2 + j])) * d;
  }
}

// Q4_0: f16 d, 16 bytes of nibbles; low nibbles are weights 0-15, high nibbles 16-31; w = (q - 8) * d.
void dequantize_q4_0(const uint8_t* src, int64_t n, float* dst) {
  for (int64_t b = 0; b < n / 32; ++b, src += 18, dst += 32) {
    const float d = half_to_float(le16(src));
    const uint8_t* qs = src + 2;
    for (int j = 0; j < 16; ++j) {
      dst[j] = float(int(qs[j] & 0x0F) - 8) * d;
      dst[j + 16] = float(int(qs[j] >> 4) - 8) * d;
    }
  }
}

// Q4_1: f16 d, f16 m, nibbles as Q4_0; w = q * d + m.
void dequantize_q4_1(const uint8_t* src, int64_t n, float* dst) {
  for (int64_t b = 0; b < n / 32; ++b, src += 20, dst += 32) {
    const float d = half_to_float(le16(src)), m = half_to_float(le16(src + 2));
    const uint8_t* qs = src + 4;
    for (int j = 0; j < 16; ++j) {
      dst[j] = float(qs[j] & 0x0F) * d + m;
      dst[j + 16] = float(qs[j] >> 4) * d + m;
    }
  }
}

// Q5_0: f16 d, 32 fifth bits (uint32 qh: bit j for weight j), nibbles as Q4_0; w = (q - 16) * d.
void dequantize_q5_0(const uint8_t* src, int64_t n, float* dst) {
  for (int64_t b = 0; b < n / 32; ++b, src += 22, dst += 32) {
    const float d = half_to_float(le16(src));
    const uint32_t qh = le32(src + 2);
    const uint8_t* qs = src + 6;
    for (int j = 0; j < 16; ++j) {
      const int hi0 = int((qh >> j) & 1) << 4, hi1 = int((qh >> (j + 16)) & 1) << 4;
      dst[j] = float(((qs[j] & 0x0F) | hi0) - 16) * d;
      dst[j + 16] = float(((qs[j] >> 4) | hi1) - 16) * d;
    }
  }
}

// Q5_1: f16 d, f16 m, qh, nibbles; w = q * d + m.
void dequantize_q5_1(const uint8_t* src, int64_t n, float* dst) {
  for (int64_t b = 0; b < n / 32; ++b, src += 24, dst += 32) {
    const float d = half_to_float(le16(src)), m = half_to_float(le16(src + 2));
    const uint32_t qh = le32(src + 4);
    const uint8_t* qs = src + 8;
    for (int j = 0; j < 16; ++j) {
      const int hi0 = int((qh >> j) & 1) << 4, hi1 = int((qh >> (j + 16)) & 1) << 4;
      dst[j] = float((qs[j] & 0x0F) | hi0) * d + m;
      dst[j + 16] = float((qs[j] >> 4) | hi1) * d + m;
    }
  }
}

namespace {

// The K-quants' 8 six-bit (scale, min) pairs packed in 12 bytes (ggml's get_scale_min_k4).
void scale_min_k4(int j, const uint8_t* q, uint8_t* scale, uint8_t* min) {
  if (j < 4) {
    *scale = q[j] & 63;
    *min = q[j + 4] & 63;
  } else {
    *scale = uint8_t((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4));
    *min = uint8_t((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

}  // namespace

// Q4_K: 256 weights = f16 d, f16 dmin, 12 bytes of scales/mins, 128 bytes of nibbles; 8 sub-blocks of 32,
// w = d*scale * q - dmin*min. Each 32 bytes of nibbles hold two sub-blocks (low nibbles, then high).
void dequantize_q4_k(const uint8_t* src, int64_t n, float* dst) {
  for (int64_t b = 0; b < n / 256; ++b, src += 144) {
    const float d = half_to_float(le16(src)), dmin = half_to_float(le16(src + 2));
    const uint8_t* scales = src + 4;
    const uint8_t* q = src + 16;
    for (int is = 0; is < 8; is += 2, q += 32) {
      uint8_t sc, m;
      scale_min_k4(is, scales, &sc, &m);
      const float d1 = d * sc, m1 = dmin * m;
      scale_min_k4(is + 1, scales, &sc, &m);
      const float d2 = d * sc, m2 = dmin * m;
      for (int l = 0; l < 32; ++l) *dst++ = d1 * float(q[l] & 0x0F) - m1;
      for (int l = 0; l < 32; ++l) *dst++ = d2 * float(q[l] >> 4) - m2;
    }
  }
}

// Q5_K: as Q4_K plus 32 bytes of fifth bits (bit 2k and 2k+1 of qh[l] for the k-th pair of sub-blocks).
void dequantize_q5_k(const uint8_t* src, int64_t n, float* dst) {
  for (int64_t b = 0; b < n / 256; ++b, src += 176) {
    const float d = half_to_float(le16(src)), dmin = half_to_float(le16(src + 2));
    const uint8_t* scales = src + 4;
    const uint8_t* qh = src + 16;
    const uint8_t* ql = src + 48;
    uint8_t u1 = 1, u2 = 2;
    for (int is = 0; is < 8; is += 2, ql += 32, u1 = uint8_t(u1 << 2), u2 = uint8_t(u2 << 2)) {
      uint8_t sc, m;
      scale_min_k4(is, scales, &sc, &m);
      const float d1 = d * sc, m1 = dmin * m;
      scale_min_k4(is + 1, scales, &sc, &m);
      const float d2 = d * sc, m2 = dmin * m;
      for (int l = 0; l < 32; ++l) *dst++ = d1 * float((ql[l] & 0x0F) + (qh[l] & u1 ? 16 : 0)) - m1;
      for (int l = 0; l < 32; ++l) *dst++ = d2 * float((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
    }
  }
}

// Q6_K: 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 int8 scales, f16 d (last);
// 16 sub-blocks of 16, w = d * scale * (q - 32).
void dequantize_q6_k(const uint8_t* src, int64_t n, float* dst) {
  for (int64_t b = 0; b < n / 256; ++b, src += 210) {
    const float d = half_to_float(le16(src + 208));
    const uint8_t* ql = src;
    const uint8_t* qh = src + 128;
    const int8_t* sc = reinterpret_cast<const int8_t*>(src + 192);
    for (int half = 0; half < 2; ++half, ql += 64, qh += 32, sc += 8, dst += 128) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = int((ql[l] & 0x0F) | ((qh[l] >> 0) & 3) << 4) - 32;
        const int q2 = int((ql[l + 32] & 0x0F) | ((qh[l] >> 2) & 3) << 4) - 32;
        const int q3 = int((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
        const int q4 = int((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
        dst[l] = d * float(sc[is]) * float(q1);
        dst[l + 32] = d * float(sc[is + 2]) * float(q2);
        dst[l + 64] = d * float(sc[is + 4]) * float(q3);
        dst[l + 96] = d * float(sc[is + 6]) * float(q4);
      }
    }
  }
}

void dequantize(GgmlType type, const uint8_t* src, int64_t n, float* dst) {
  const GgmlTypeInfo* info = ggml_type_info(uint32_t(type));
  if (!info || !info->dequantizable)
    throw std::invalid_argument("dequantize: unsupported tensor type " + ggml_type_name(uint32_t(type)));
  if (n < 0 || n % info->block_size != 0)
    throw std::invalid_argument("dequantize: " + std::to_string(n) + " elements is not a multiple of " +
                                info->name + "'s block size " + std::to_string(info->block_size));
  switch (type) {
    case GgmlType::F32: return dequantize_f32(src, n, dst);
    case GgmlType::F16: return dequantize_f16(src, n, dst);
    case GgmlType::BF16: return dequantize_bf16(src, n, dst);
    case GgmlType::Q8_0: return dequantize_q8_0(src, n, dst);
    case GgmlType::Q4_0: return dequantize_q4_0(src, n, dst);
    case GgmlType::Q4_1: return dequantize_q4_1(src, n, dst);
    case GgmlType::Q5_0: return dequantize_q5_0(src, n, dst);
    case GgmlType::Q5_1: return dequantize_q5_1(src, n, dst);
    case GgmlType::Q4_K: return dequantize_q4_k(src, n, dst);
    case GgmlType::Q5_K: return dequantize_q5_k(src, n, dst);
    case GgmlType::Q6_K: return dequantize_q6_k(src, n, dst);
    default: throw std::invalid_argument("dequantize: unsupported tensor type " + ggml_type_name(uint32_t(type)));
  }
}

// ------------------------------------------------------------------------------------------------
// The file
// ------------------------------------------------------------------------------------------------

int64_t GgufTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

std::vector<int64_t> GgufTensor::shape() const { return std::vector<int64_t>(dims.rbegin(), dims.rend()); }

GgufFile::~GgufFile() {
  if (map_) munmap(map_, map_size_);
}

std::shared_ptr<GgufFile> GgufFile::open(const std::string& path) {
  std::shared_ptr<GgufFile> f(new GgufFile);
  f->path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw InputError(path + ": cannot open (" + std::strerror(errno) + ")");
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw InputError(path + ": cannot stat (" + std::strerror(err) + ")");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw InputError(path + ": not a regular file");
  }
  const size_t size = size_t(st.st_size);
  // magic + version + two counts: the smallest v2/v3 header
  if (size < 24) {
    ::close(fd);
    throw InputError(path + ": " + std::to_string(size) + " bytes is too short for a GGUF header (24 bytes)");
  }
  void* map = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_errno = errno;
  ::close(fd);
  if (map == MAP_FAILED) throw InputError(path + ": cannot map (" + std::strerror(map_errno) + ")");
  f->map_ = map;
  f->map_size_ = size;

  GgufParser p{f->path_, static_cast<const uint8_t*>(map), size};
  if (std::memcmp(p.base, "GGUF", 4) != 0) {
    std::string found;
    for (int i = 0; i < 4; ++i) {
      const uint8_t c = p.base[i];
      found += (c >= 32 && c < 127) ? std::string(1, char(c)) : "\\x" + std::string(1, "0123456789abcdef"[c >> 4]) +
                                                                          "0123456789abcdef"[c & 15];
    }
    throw InputError(path + ": not a GGUF file (the first 4 bytes are \"" + found + "\", expected \"GGUF\")");
  }
  p.pos = 4;
  const uint32_t version = p.u32("", "version");
  // gguf-py's test: a byte-swapped version has its low 16 bits zero.
  if ((version & 0xFFFF) == 0 && version != 0)
    throw InputError(path + ": a big-endian GGUF file (version field reads " + std::to_string(version) +
                     " little-endian, " + std::to_string(__builtin_bswap32(version)) +
                     " big-endian); only little-endian files are supported");
  if (version == 1)
    throw InputError(path + ": GGUF version 1 (llama.cpp before August 2023, 32-bit counts) is not supported; "
                            "versions 2 and 3 are read (convert the model again with a current llama.cpp)");
  if (version != 2 && version != 3)
    throw InputError(path + ": unsupported GGUF version " + std::to_string(version) + " (versions 2 and 3 are read)");
  f->version_ = version;

  const uint64_t n_tensors = p.u64("", "tensor count");
  const uint64_t n_keys = p.u64("", "metadata key count");
  // Each key takes at least 13 bytes (length, type, a 1-byte value), each tensor info at least 24.
  if (n_keys > p.left() / 13)
    p.fail("", "metadata key count " + std::to_string(n_keys) + " cannot fit in the " + std::to_string(p.left()) +
                   " bytes left",
           16);
  if (n_tensors > kMaxGgufTensors || n_tensors > p.left() / 24)
    p.fail("", "tensor count " + std::to_string(n_tensors) + " cannot fit in the " + std::to_string(p.left()) +
                   " bytes left (or exceeds " + std::to_string(kMaxGgufTensors) + ")",
           8);

  f->metadata_.reserve(n_keys);
  for (uint64_t i = 0; i < n_keys; ++i) {
    const size_t at = p.pos;
    const std::string where = "metadata key #" + std::to_string(i);
    const std::string key(p.str(where, "key"));
    const uint32_t type = p.u32("key " + in_quotes(key), "value type");
    GgufValue v;
    p.value(GgufValueType(type), key, 0, &v);
    if (!f->key_index_.emplace(key, f->metadata_.size()).second)
      p.fail("key " + in_quotes(key), "appears twice in the metadata", at);
    f->metadata_.push_back(std::move(v));
  }

  // general.alignment: a uint32 power of two (llama.cpp's gguf.cpp and gguf-py both insist on uint32).
  if (const GgufValue* a = f->find("general.alignment")) {
    if (a->type() != GgufValueType::UINT32)
      throw InputError(path + ": key 'general.alignment': expected a uint32, found " + a->describe());
    const uint32_t alignment = uint32_t(a->as_int());
    if (alignment == 0 || (alignment & (alignment - 1)) != 0)
      throw InputError(path + ": key 'general.alignment': " + std::to_string(alignment) + " is not a power of two");
    f->alignment_ = alignment;
  }

  struct Range {
    uint64_t begin, end;
    size_t index;
  };
  std::vector<Range> ranges;
  f->tensors_.reserve(n_tensors);
  std::vector<size_t> info_at;
  for (uint64_t i = 0; i < n_tensors; ++i) {
    const size_t at = p.pos;
    GgufTensor t;
    t.name = std::string(p.str("tensor info #" + std::to_string(i), "tensor name"));
    const std::string where = "tensor " + in_quotes(t.name);
    const uint32_t n_dims = p.u32(where, "dimension count");
    if (n_dims > kMaxGgufDims)
      p.fail(where, std::to_string(n_dims) + " dimensions (at most " + std::to_string(kMaxGgufDims) + ")", p.pos - 4);
    uint64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t dim = p.u64(where, "dimension");
      if (dim > uint64_t(std::numeric_limits<int64_t>::max()) || __builtin_mul_overflow(numel, dim, &numel) ||
          numel > uint64_t(std::numeric_limits<int64_t>::max()))
        p.fail(where, "dimension " + std::to_string(d) + " = " + std::to_string(dim) +
                          " makes the element count overflow 63 bits",
               p.pos - 8);
      t.dims.push_back(int64_t(dim));
    }
    t.type = p.u32(where, "tensor type");
    const GgmlTypeInfo* info = ggml_type_info(t.type);
    if (!info) p.fail(where, "unknown tensor type id " + std::to_string(t.type), p.pos - 4);
    const int64_t row = t.dims.empty() ? 1 : t.dims[0];
    if (row % info->block_size != 0)
      p.fail(where, std::string("row size dims[0] = ") + std::to_string(row) + " is not a multiple of " + info->name +
                        "'s block size " + std::to_string(info->block_size),
             at);
    // numel < 2^63 and type_size <= 292 / block_size >= 1: bytes fit in 64 bits only when checked
    uint64_t nbytes = 0;
    if (__builtin_mul_overflow(numel / uint64_t(info->block_size), uint64_t(info->type_size), &nbytes))
      p.fail(where, "byte size overflows 64 bits", at);
    t.offset = p.u64(where, "data offset");
    t.nbytes = size_t(nbytes);
    if (!f->tensor_index_.emplace(t.name, f->tensors_.size()).second)
      p.fail(where, "appears twice in the tensor list", at);
    info_at.push_back(at);
    f->tensors_.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment.
  const uint64_t a = f->alignment_;
  const uint64_t data_offset = (uint64_t(p.pos) + a - 1) / a * a;
  f->data_offset_ = data_offset;
  const uint64_t data_size = data_offset <= size ? size - data_offset : 0;
  // Cut inside the padding: even a tensor of 0 bytes would point past the end of the mapping.
  if (data_offset > size && !f->tensors_.empty())
    throw InputError(path + ": the data section starts at byte " + std::to_string(data_offset) + " (aligned to " +
                     std::to_string(a) + "), past the end of the file (" + std::to_string(size) +
                     " bytes): the file is truncated");
  for (size_t i = 0; i < f->tensors_.size(); ++i) {
    GgufTensor& t = f->tensors_[i];
    const std::string where = "tensor " + in_quotes(t.name);
    if (t.offset % a != 0)
      p.fail(where, "data offset " + std::to_string(t.offset) + " is not a multiple of the alignment " +
                        std::to_string(a),
             info_at[i]);
    if (t.offset > data_size || t.nbytes > data_size - t.offset)
      p.fail(where, std::to_string(t.nbytes) + " bytes of " + t.type_name() + " data at offset " +
                        std::to_string(t.offset) + " run past the end of the data section (" +
                        std::to_string(data_size) + " bytes, from byte " + std::to_string(data_offset) + ")",
             info_at[i]);
    t.data = p.base + data_offset + t.offset;
    if (t.nbytes > 0) ranges.push_back({t.offset, t.offset + t.nbytes, i});
  }
  std::sort(ranges.begin(), ranges.end(), [](const Range& x, const Range& y) { return x.begin < y.begin; });
  for (size_t k = 1; k < ranges.size(); ++k)
    if (ranges[k].begin < ranges[k - 1].end)
      p.fail("tensor " + in_quotes(f->tensors_[ranges[k].index].name),
             "data [" + std::to_string(ranges[k].begin) + ", " + std::to_string(ranges[k].end) + ") overlaps tensor " +
                 in_quotes(f->tensors_[ranges[k - 1].index].name) + " [" + std::to_string(ranges[k - 1].begin) +
                 ", " + std::to_string(ranges[k - 1].end) + ")",
             info_at[ranges[k].index]);
  return f;
}

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = key_index_.find(key);
  return it == key_index_.end() ? nullptr : &metadata_[it->second];
}

const GgufValue& GgufFile::get(const std::string& key) const {
  if (const GgufValue* v = find(key)) return *v;
  throw InputError(path_ + ": metadata key " + in_quotes(key) + " is missing");
}

const GgufTensor* GgufFile::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const GgufTensor& GgufFile::tensor(const std::string& name) const {
  if (const GgufTensor* t = find_tensor(name)) return *t;
  throw InputError(path_ + ": no tensor " + in_quotes(name) + " (the file has " + std::to_string(tensors_.size()) +
                   " tensors)");
}

void GgufFile::dequantize_into(const GgufTensor& t, float* dst) const {
  const GgmlTypeInfo* info = ggml_type_info(t.type);
  if (!info || !info->dequantizable)
    throw InputError(path_ + ": unsupported tensor type " + t.type_name() + " in tensor " + in_quotes(t.name) +
                     " (this reader dequantises " + dequantizable_list() + ")");
  layerprune::dequantize(GgmlType(t.type), t.data, t.numel(), dst);
}

std::vector<float> GgufFile::dequantize(const GgufTensor& t) const {
  const GgmlTypeInfo* info = ggml_type_info(t.type);
  if (!info || !info->dequantizable)
    throw InputError(path_ + ": unsupported tensor type " + t.type_name() + " in tensor " + in_quotes(t.name) +
                     " (this reader dequantises " + dequantizable_list() + ")");
  std::vector<float> out(size_t(t.numel()));
  dequantize_into(t, out.data());
  return out;
}

// ------------------------------------------------------------------------------------------------
// Tokenizer metadata
// ------------------------------------------------------------------------------------------------

GgufTokenizerMetadata read_gguf_tokenizer(const GgufFile& f) {
  GgufTokenizerMetadata m;
  m.model = f.get_string("tokenizer.ggml.model");
  if (f.find("tokenizer.ggml.pre")) m.pre = f.get_string("tokenizer.ggml.pre");
  m.tokens = f.get("tokenizer.ggml.tokens").as_strings();
  const auto same_length = [&](const char* key, size_t n) {
    if (n != m.tokens.size())
      throw InputError(f.path() + ": key " + in_quotes(key) + " has " + std::to_string(n) + " entries for " +
                       std::to_string(m.tokens.size()) + " tokens");
  };
  if (f.find("tokenizer.ggml.token_type")) {
    m.token_types = f.get("tokenizer.ggml.token_type").as_ints();
    same_length("tokenizer.ggml.token_type", m.token_types.size());
  }
  if (f.find("tokenizer.ggml.scores")) {
    m.scores = f.get("tokenizer.ggml.scores").as_floats();
    same_length("tokenizer.ggml.scores", m.scores.size());
  }
  if (f.find("tokenizer.ggml.merges")) m.merges = f.get("tokenizer.ggml.merges").as_strings();
  const std::pair<const char*, std::optional<int64_t>*> ids[] = {
      {"tokenizer.ggml.bos_token_id", &m.bos_token_id},
      {"tokenizer.ggml.eos_token_id", &m.eos_token_id},
      {"tokenizer.ggml.unknown_token_id", &m.unknown_token_id},
      {"tokenizer.ggml.padding_token_id", &m.padding_token_id},
  };
  for (const auto& [key, out] : ids) {
    if (!f.find(key)) continue;
    const int64_t id = f.get_int(key);
    if (id < 0 || uint64_t(id) >= m.tokens.size())
      throw InputError(f.path() + ": key " + in_quotes(key) + ": token id " + std::to_string(id) +
                       " is outside the vocabulary of " + std::to_string(m.tokens.size()) + " tokens");
    *out = id;
  }
  const std::pair<const char*, std::optional<bool>*> flags[] = {
      {"tokenizer.ggml.add_bos_token", &m.add_bos_token},
      {"tokenizer.ggml.add_eos_token", &m.add_eos_token},
      {"tokenizer.ggml.add_space_prefix", &m.add_space_prefix},
  };
  for (const auto& [key, out] : flags)
    if (f.find(key)) *out = f.get_bool(key);
  if (f.find("tokenizer.chat_template")) m.chat_template = f.get_string("tokenizer.chat_template");
  return m;
}

}  // namespace layerprune
