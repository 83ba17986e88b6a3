// SentencePiece BPE, reimplemented from the behaviour of sentencepiece 0.1.97 (src/bpe_model.cc,
// normalizer.cc, sentencepiece_processor.cc) and checked token for token against its Python module.
//
// Sections: UTF-8 and protobuf wire format; the model (load + validation); normalizer; BPE encoder; decoder.
#include "formats/tokenizer.h"

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstring>
#include <functional>
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include "common/error.h"
#include "common/hashing.h"
#include "formats/bpe_tokenizer.h"

namespace layerprune {

namespace {

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";          // U+2581 "▁", sentencepiece's escaped space
constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";      // U+FFFD
constexpr std::string_view kDefaultUnkSurface = " \xE2\x81\x87 ";  // TrainerSpec.unk_surface default " ⁇ "

// ------------------------------------------------------------------------------------------------------
// UTF-8

bool is_trail_byte(unsigned char c) { return (c & 0xC0) == 0x80; }

// Length of the well-formed UTF-8 character at s[pos], or 0 when it is malformed. The same rules as
// sentencepiece's string_util::IsValidDecodeUTF8: no overlong forms, no surrogates, nothing past U+10FFFF.
size_t valid_utf8_length(std::string_view s, size_t pos) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data()) + pos;
  const size_t left = s.size() - pos;
  if (p[0] < 0x80) return 1;
  if (left >= 2 && (p[0] & 0xE0) == 0xC0 && is_trail_byte(p[1])) {
    const uint32_t cp = (uint32_t(p[0] & 0x1F) << 6) | (p[1] & 0x3F);
    return cp >= 0x80 ? 2 : 0;
  }
  if (left >= 3 && (p[0] & 0xF0) == 0xE0 && is_trail_byte(p[1]) && is_trail_byte(p[2])) {
    const uint32_t cp = (uint32_t(p[0] & 0x0F) << 12) | (uint32_t(p[1] & 0x3F) << 6) | (p[2] & 0x3F);
    return cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF) ? 3 : 0;
  }
  if (left >= 4 && (p[0] & 0xF8) == 0xF0 && is_trail_byte(p[1]) && is_trail_byte(p[2]) && is_trail_byte(p[3])) {
    const uint32_t cp =
        (uint32_t(p[0] & 0x07) << 18) | (uint32_t(p[1] & 0x3F) << 12) | (uint32_t(p[2] & 0x3F) << 6) | (p[3] & 0x3F);
    return cp >= 0x10000 && cp <= 0x10FFFF ? 4 : 0;
  }
  return 0;
}

// sentencepiece's OneCharLen: the UTF-8 length implied by a lead byte (sentencepiece splits
// normalized text, which is well-formed, with it).
size_t one_char_len(unsigned char lead) {
  static constexpr uint8_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[lead >> 4];
}

// Appends `bytes` read as UTF-8, each malformed byte replaced by U+FFFD (sentencepiece's decoder does this
// for runs of byte pieces).
void append_utf8_lossy(std::string_view bytes, std::string* out) {
  for (size_t i = 0; i < bytes.size();) {
    if (size_t n = valid_utf8_length(bytes, i)) {
      out->append(bytes.substr(i, n));
      i += n;
    } else {
      out->append(kReplacementChar);
      i += 1;
    }
  }
}

// ------------------------------------------------------------------------------------------------------
// Protobuf wire format (protobuf.dev/programming-guides/encoding): a message is a sequence of records
// `varint(field_number << 3 | wire_type)` + value. This reader knows the four wire types a proto2
// ModelProto can hold; it throws on anything that runs past the end of its buffer.

enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

class WireReader {
 public:
  // `offset` is where `buf` starts in the file, for error messages.
  WireReader(std::string_view buf, size_t offset, const std::string& path) : buf_(buf), base_(offset), path_(path) {}

  bool done() const { return pos_ == buf_.size(); }

  // Reads the next record's tag.
  void next(uint32_t* field, uint32_t* wire) {
    const uint64_t tag = varint();
    *field = uint32_t(tag >> 3);
    *wire = uint32_t(tag & 7);
    if (*field == 0 || tag >> 32) fail("invalid field tag");
  }

  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ == buf_.size()) fail("truncated varint");
      const auto b = uint8_t(buf_[pos_++]);
      v |= uint64_t(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    fail("varint longer than 10 bytes");
  }

  // A length-delimited value; `*offset` (if given) receives its position in the file.
  std::string_view bytes(size_t* offset = nullptr) {
    const uint64_t n = varint();
    if (n > buf_.size() - pos_) fail("length " + std::to_string(n) + " runs past the end of the data");
    if (offset) *offset = base_ + pos_;
    std::string_view v = buf_.substr(pos_, size_t(n));
    pos_ += size_t(n);
    return v;
  }

  float fixed32_float() {
    if (buf_.size() - pos_ < 4) fail("truncated fixed32");
    uint32_t bits = 0;
    for (int i = 0; i < 4; ++i) bits |= uint32_t(uint8_t(buf_[pos_ + i])) << (8 * i);  // little-endian
    pos_ += 4;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }

  void skip(uint32_t wire) {
    switch (wire) {
      case kVarint:
        varint();
        return;
      case kLengthDelimited:
        bytes();
        return;
      case kFixed64:
        if (buf_.size() - pos_ < 8) fail("truncated fixed64");
        pos_ += 8;
        return;
      case kFixed32:
        if (buf_.size() - pos_ < 4) fail("truncated fixed32");
        pos_ += 4;
        return;
      default:
        fail("unsupported wire type " + std::to_string(wire));  // groups (3, 4) never occur here
    }
  }

  // Reads a field whose wire type must be `want`, or fails naming the field.
  void expect(uint32_t wire, uint32_t want, const char* field_name) {
    if (wire != want) fail(std::string("field ") + field_name + " has wire type " + std::to_string(wire));
  }

  [[noreturn]] void fail(const std::string& what) const {
    throw InputError(path_ + ": corrupt or truncated SentencePiece model file (" + what + " at byte " +
                     std::to_string(base_ + pos_) + ")");
  }

 private:
  std::string_view buf_;
  size_t pos_ = 0;
  size_t base_;
  const std::string& path_;
};

// The fields of sentencepiece_model.proto this tokenizer reads (field numbers from that file), with the
// proto2 defaults for absent ones.
struct TrainerSpec {
  int32_t model_type = 1;  // UNIGRAM=1, BPE=2, WORD=3, CHAR=4
  bool byte_fallback = false;
  bool treat_whitespace_as_suffix = false;
  std::string unk_surface{kDefaultUnkSurface};
  std::string bos_piece = "<s>", eos_piece = "</s>";
};

struct NormalizerSpec {
  std::string name;
  std::string precompiled_charsmap;
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
};

const char* model_type_name(int32_t t) {
  switch (t) {
    case 1:
      return "UNIGRAM";
    case 2:
      return "BPE";
    case 3:
      return "WORD";
    case 4:
      return "CHAR";
    default:
      return "unknown";
  }
}

// "<0x41>" -> 0x41, as sentencepiece's PieceToByte (uppercase hex only); -1 for anything else.
int parse_byte_piece(std::string_view p) {
  auto hex = [](char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1; };
  if (p.size() != 6 || p.substr(0, 3) != "<0x" || p[5] != '>') return -1;
  const int hi = hex(p[3]), lo = hex(p[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }
bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

void append_unescaped(std::string_view piece, std::string* out) {  // ▁ -> ' '
  for (size_t i = 0; i < piece.size();) {
    if (starts_with(piece.substr(i), kSpaceSymbol)) {
      out->push_back(' ');
      i += kSpaceSymbol.size();
    } else {
      out->push_back(piece[i++]);
    }
  }
}

// A set of strings (views that outlive it) -> id, by open addressing with linear probing at load <= 1/2.
// The encoder's hot loop is these lookups; std::unordered_map's node chasing made them 40% of encode time.
class PieceIndex {
 public:
  // Adds `key` unless present; returns the id stored under it.
  int32_t insert(std::string_view key, int32_t id) {
    if (2 * (keys_.size() + 1) > slots_.size()) grow();
    const uint64_t h = hash(key);
    Slot& slot = slots_[probe(key, h)];
    if (slot.id < 0) {
      slot = {h, key, id};
      keys_.push_back(key);
    }
    return slot.id;
  }

  // The id of `key`, or -1.
  int32_t find(std::string_view key) const { return slots_.empty() ? -1 : slots_[probe(key, hash(key))].id; }

  const std::vector<std::string_view>& keys() const { return keys_; }

 private:
  struct Slot {
    uint64_t hash = 0;
    std::string_view key;
    int32_t id = -1;
  };

  static uint64_t hash(std::string_view s) {  // FNV-1a: pieces are a few bytes long
    uint64_t h = 14695981039346656037ull;
    for (char c : s) h = (h ^ uint8_t(c)) * 1099511628211ull;
    return h;
  }

  // The slot holding `key`, or the empty slot where it would go.
  size_t probe(std::string_view key, uint64_t h) const {
    const size_t mask = slots_.size() - 1;
    for (size_t i = size_t(h) & mask;; i = (i + 1) & mask) {
      const Slot& s = slots_[i];
      if (s.id < 0 || (s.hash == h && s.key == key)) return i;
    }
  }

  void grow() {
    std::vector<Slot> old;
    old.swap(slots_);
    slots_.assign(std::max<size_t>(64, 2 * old.size()), Slot{});
    for (const Slot& s : old)
      if (s.id >= 0) slots_[probe(s.key, s.hash)] = s;
  }

  std::vector<Slot> slots_;
  std::vector<std::string_view> keys_;
};

}  // namespace

// ------------------------------------------------------------------------------------------------------
// The model

struct Tokenizer::Model {
  struct Piece {
    std::string text;
    float score = 0.0f;
    PieceType type = PieceType::kNormal;
    uint8_t byte = 0;  // for kByte pieces: the byte it stands for
  };

  std::string path;
  std::string file_sha256;
  std::vector<Piece> pieces;
  // sentencepiece's two lookup tables (ModelInterface::InitializePieces): `mergeable` holds the pieces BPE
  // may form (normal, user-defined, unused), `reserved` the rest (unknown, control, byte); PieceToId looks
  // in `reserved` first. Keys view into `pieces`, which never changes after load.
  PieceIndex mergeable;
  PieceIndex reserved;
  std::vector<std::string> user_defined;  // matched whole in the input and never merged further
  size_t max_piece_bytes = 0;             // a merge longer than this cannot be a piece: skip the lookup
  bool has_unused = false;
  int32_t byte_ids[256] = {};
  int32_t unk_id = -1, bos_id = -1, eos_id = -1;
  TrainerSpec trainer;
  NormalizerSpec normalizer;

  // The characters that occur in some mergeable piece of two or more characters (ASCII in a table); no other
  // character can ever be part of a merge.
  bool ascii_in_merges[128] = {};
  std::unordered_set<std::string_view> chars_in_merges;

  bool can_merge(std::string_view c) const {
    return c.size() == 1 ? uint8_t(c[0]) < 128 && ascii_in_merges[uint8_t(c[0])] : chars_in_merges.count(c) > 0;
  }

  int32_t piece_to_id(std::string_view p) const {
    if (const int32_t id = reserved.find(p); id >= 0) return id;
    if (const int32_t id = mergeable.find(p); id >= 0) return id;
    return unk_id;
  }
};

namespace {

void parse_piece(WireReader& r, Tokenizer::PieceType* type, std::string* text, float* score) {
  while (!r.done()) {
    uint32_t field, wire;
    r.next(&field, &wire);
    if (field == 1) {
      r.expect(wire, kLengthDelimited, "SentencePiece.piece");
      *text = std::string(r.bytes());
    } else if (field == 2) {
      r.expect(wire, kFixed32, "SentencePiece.score");
      *score = r.fixed32_float();
    } else if (field == 3) {
      r.expect(wire, kVarint, "SentencePiece.type");
      const uint64_t t = r.varint();
      if (t < 1 || t > 6) r.fail("unknown piece type " + std::to_string(t));
      *type = Tokenizer::PieceType(t);
    } else {
      r.skip(wire);
    }
  }
}

void parse_trainer_spec(WireReader& r, TrainerSpec* t) {
  while (!r.done()) {
    uint32_t field, wire;
    r.next(&field, &wire);
    switch (field) {
      case 3:
        r.expect(wire, kVarint, "TrainerSpec.model_type");
        t->model_type = int32_t(r.varint());
        break;
      case 24:
        r.expect(wire, kVarint, "TrainerSpec.treat_whitespace_as_suffix");
        t->treat_whitespace_as_suffix = r.varint() != 0;
        break;
      case 35:
        r.expect(wire, kVarint, "TrainerSpec.byte_fallback");
        t->byte_fallback = r.varint() != 0;
        break;
      case 44:
        r.expect(wire, kLengthDelimited, "TrainerSpec.unk_surface");
        t->unk_surface = r.bytes();
        break;
      case 46:
        r.expect(wire, kLengthDelimited, "TrainerSpec.bos_piece");
        t->bos_piece = r.bytes();
        break;
      case 47:
        r.expect(wire, kLengthDelimited, "TrainerSpec.eos_piece");
        t->eos_piece = r.bytes();
        break;
      default:
        r.skip(wire);
    }
  }
}

void parse_normalizer_spec(WireReader& r, NormalizerSpec* n) {
  while (!r.done()) {
    uint32_t field, wire;
    r.next(&field, &wire);
    switch (field) {
      case 1:
        r.expect(wire, kLengthDelimited, "NormalizerSpec.name");
        n->name = r.bytes();
        break;
      case 2:
        r.expect(wire, kLengthDelimited, "NormalizerSpec.precompiled_charsmap");
        n->precompiled_charsmap = r.bytes();
        break;
      case 3:
        r.expect(wire, kVarint, "NormalizerSpec.add_dummy_prefix");
        n->add_dummy_prefix = r.varint() != 0;
        break;
      case 4:
        r.expect(wire, kVarint, "NormalizerSpec.remove_extra_whitespaces");
        n->remove_extra_whitespaces = r.varint() != 0;
        break;
      case 5:
        r.expect(wire, kVarint, "NormalizerSpec.escape_whitespaces");
        n->escape_whitespaces = r.varint() != 0;
        break;
      default:
        r.skip(wire);
    }
  }
}

}  // namespace

Tokenizer Tokenizer::from_bytes(const std::string& bytes, const std::string& path) {
  auto m = std::make_shared<Model>();
  m->path = path;
  m->file_sha256 = sha256_hex(bytes);

  // ModelProto: 1 = repeated SentencePiece pieces, 2 = TrainerSpec, 3 = NormalizerSpec,
  // 4 = SelfTestData (ignored), 5 = NormalizerSpec denormalizer_spec.
  bool has_trainer = false, has_normalizer = false;
  NormalizerSpec denormalizer;
  WireReader top(bytes, 0, path);
  while (!top.done()) {
    uint32_t field, wire;
    top.next(&field, &wire);
    if (field < 1 || field > 5 || field == 4) {
      top.skip(wire);
      continue;
    }
    static const char* const kNames[] = {
        "", "ModelProto.pieces",           "ModelProto.trainer_spec", "ModelProto.normalizer_spec",
        "", "ModelProto.denormalizer_spec"};
    top.expect(wire, kLengthDelimited, kNames[field]);
    size_t offset = 0;
    const std::string_view sub = top.bytes(&offset);
    WireReader r(sub, offset, path);
    if (field == 1) {
      Model::Piece p;
      parse_piece(r, &p.type, &p.text, &p.score);
      m->pieces.push_back(std::move(p));
    } else if (field == 2) {
      parse_trainer_spec(r, &m->trainer);  // a repeated message field merges, as protobuf does
      has_trainer = true;
    } else if (field == 3) {
      parse_normalizer_spec(r, &m->normalizer);
      has_normalizer = true;
    } else {
      parse_normalizer_spec(r, &denormalizer);
    }
  }

  auto fail = [&](const std::string& what) -> InputError { return InputError(path + ": " + what); };
  // Every model spm_train writes has both specs; a file cut at a record boundary parses but lacks them.
  if (m->pieces.empty()) throw fail("not a SentencePiece model (no pieces; truncated or wrong file?)");
  if (!has_trainer) throw fail("not a complete SentencePiece model (no trainer_spec; truncated?)");
  if (!has_normalizer) throw fail("not a complete SentencePiece model (no normalizer_spec; truncated?)");

  // What this class implements; refuse the rest instead of tokenizing it almost right.
  if (m->trainer.model_type != 2)
    throw fail(std::string("unsupported SentencePiece model type ") + model_type_name(m->trainer.model_type) + " (" +
               std::to_string(m->trainer.model_type) + "): only BPE models are supported");
  if (!m->normalizer.precompiled_charsmap.empty())
    throw fail("unsupported normalizer '" + m->normalizer.name +
               "': only the identity normalizer (no precompiled_charsmap) is supported");
  if (!denormalizer.precompiled_charsmap.empty())
    throw fail("unsupported denormalizer_spec with a precompiled_charsmap");
  if (m->trainer.treat_whitespace_as_suffix) throw fail("unsupported treat_whitespace_as_suffix=true");

  // The checks of sentencepiece's ModelInterface::InitializePieces.
  bool byte_seen[256] = {};
  for (int32_t id = 0; id < int32_t(m->pieces.size()); ++id) {
    Model::Piece& p = m->pieces[size_t(id)];
    auto where = [&] { return "piece " + std::to_string(id) + " '" + p.text + "'"; };
    if (p.text.empty()) throw fail("piece " + std::to_string(id) + " is empty");
    const bool mergeable =
        p.type == PieceType::kNormal || p.type == PieceType::kUserDefined || p.type == PieceType::kUnused;
    auto& table = mergeable ? m->mergeable : m->reserved;
    if (const int32_t first = table.insert(p.text, id); first != id)
      throw fail(where() + " is already defined as piece " + std::to_string(first));
    m->max_piece_bytes = std::max(m->max_piece_bytes, p.text.size());
    switch (p.type) {
      case PieceType::kUserDefined:
        m->user_defined.push_back(p.text);
        break;
      case PieceType::kUnused:
        m->has_unused = true;
        break;
      case PieceType::kUnknown:
        if (m->unk_id >= 0) throw fail(where() + ": <unk> is already defined as piece " + std::to_string(m->unk_id));
        m->unk_id = id;
        break;
      case PieceType::kByte: {
        if (!m->trainer.byte_fallback) throw fail(where() + " is a byte piece but byte_fallback is off");
        const int b = parse_byte_piece(p.text);
        if (b < 0) throw fail(where() + " is a byte piece but not of the form <0xXX>");
        p.byte = uint8_t(b);
        byte_seen[b] = true;
        m->byte_ids[b] = id;
        break;
      }
      default:
        break;
    }
  }
  if (m->unk_id < 0) throw fail("no <unk> piece (type UNKNOWN)");
  for (const std::string_view text : m->mergeable.keys()) {
    if (one_char_len(uint8_t(text[0])) >= text.size()) continue;  // a single character
    for (size_t i = 0; i < text.size();) {
      const size_t n = std::min(one_char_len(uint8_t(text[i])), text.size() - i);
      if (n == 1 && uint8_t(text[i]) < 128)
        m->ascii_in_merges[uint8_t(text[i])] = true;
      else
        m->chars_in_merges.insert(text.substr(i, n));
      i += n;
    }
  }
  if (m->trainer.byte_fallback)
    for (int b = 0; b < 256; ++b)
      if (!byte_seen[b]) {
        char name[8];
        std::snprintf(name, sizeof name, "<0x%02X>", b);
        throw fail(std::string("byte_fallback is on but byte piece ") + name + " is missing");
      }
  // SentencePieceProcessor::bos_id()/eos_id(): the id of TrainerSpec.bos_piece/eos_piece if it is a control
  // piece, else -1.
  auto control_id = [&](const std::string& piece) {
    const int32_t id = m->piece_to_id(piece);
    return m->pieces[size_t(id)].type == PieceType::kControl ? id : -1;
  };
  m->bos_id = control_id(m->trainer.bos_piece);
  m->eos_id = control_id(m->trainer.eos_piece);
  return Tokenizer(std::move(m));
}

// ------------------------------------------------------------------------------------------------------
// Normalizer (sentencepiece's Normalizer::Normalize with the identity rule): only the ASCII space counts as
// whitespace; tabs and newlines are ordinary characters. Malformed UTF-8 becomes U+FFFD, one per byte.

namespace {

std::string normalize(std::string_view text, const NormalizerSpec& spec) {
  const std::string_view space = spec.escape_whitespaces ? kSpaceSymbol : " ";
  std::string out;
  out.reserve(text.size() + text.size() / 2 + 3);
  size_t i = 0;
  if (spec.remove_extra_whitespaces)
    while (i < text.size() && text[i] == ' ') ++i;  // leading spaces
  if (i == text.size()) return out;                 // nothing but spaces: no tokens, no dummy prefix
  // The dummy prefix makes "world" and "hello world" both contain "▁world".
  if (spec.add_dummy_prefix) out.append(space);
  bool prev_space = spec.remove_extra_whitespaces;  // collapse runs only when asked to
  while (i < text.size()) {
    if (text[i] == ' ') {
      if (!prev_space) out.append(space);
      prev_space = spec.remove_extra_whitespaces;
      ++i;
    } else if (size_t n = valid_utf8_length(text, i)) {
      out.append(text.substr(i, n));
      prev_space = false;
      i += n;
    } else {
      out.append(kReplacementChar);
      prev_space = false;
      ++i;
    }
  }
  if (spec.remove_extra_whitespaces)
    while (ends_with(out, space)) out.resize(out.size() - space.size());  // trailing spaces
  return out;
}

}  // namespace

// ------------------------------------------------------------------------------------------------------
// BPE encoder (sentencepiece's bpe::Model::SampleEncode without sampling). The normalized text starts as one
// symbol per character (or per user-defined piece, which is frozen). Then, repeatedly, the adjacent pair
// whose concatenation is a piece with the highest score is merged, the leftmost winning ties. Candidates
// live in a priority queue; a merge invalidates the entries of its neighbours, which are skipped when
// popped (their recorded size no longer matches). O(n log n) in the text length.

namespace {

struct Symbol {
  uint32_t begin = 0, len = 0;  // bytes of the normalized text; len 0 = merged into its left neighbour
  int32_t prev = -1, next = -1;
  bool frozen = false;
};

struct Candidate {
  float score;
  int32_t left, right;
  uint32_t size;  // len(left) + len(right) when pushed; a mismatch later means stale
};

// std::priority_queue pops the largest: higher score first, then smaller `left`.
struct CandidateOrder {
  bool operator()(const Candidate& a, const Candidate& b) const {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  }
};

}  // namespace

std::vector<int32_t> Tokenizer::encode(const std::string& text, bool add_bos) const {
  if (bpe_) {
    std::vector<int32_t> ids = bpe_->encode(text, false);
    if (add_bos) {
      if (bpe_->bos_id() < 0) throw InputError(path() + ": add_bos asked for, but the tokenizer has no BOS token");
      ids.insert(ids.begin(), bpe_->bos_id());
    }
    return ids;
  }
  const Model& m = *m_;
  std::vector<int32_t> ids;
  if (add_bos) {
    if (m.bos_id < 0)
      throw InputError(m.path + ": cannot add BOS: the model has no control piece '" + m.trainer.bos_piece + "'");
    ids.push_back(m.bos_id);
  }
  const std::string normalized = normalize(text, m.normalizer);
  if (normalized.empty()) return ids;
  if (normalized.size() >= size_t(INT32_MAX))  // symbols are indexed by int32
    throw InputError("cannot tokenize a text of " + std::to_string(text.size()) + " bytes in one piece (limit 2 GB)");
  const std::string_view s = normalized;

  // 1. Split into characters; a user-defined piece starting here (longest one) is one frozen symbol. A
  // character that occurs in no multi-character piece can never be merged either: freezing it changes nothing
  // in the result but cuts the text into runs that are merged independently (step 2).
  std::vector<Symbol> symbols;
  symbols.reserve(s.size());
  for (size_t pos = 0; pos < s.size();) {
    Symbol sym;
    size_t len = 0;
    for (const std::string& u : m.user_defined)
      if (u.size() > len && s.compare(pos, u.size(), u) == 0) len = u.size();
    sym.frozen = len > 0;
    if (!sym.frozen) {
      len = std::min(one_char_len(uint8_t(s[pos])), s.size() - pos);
      sym.frozen = !m.can_merge(s.substr(pos, len));
    }
    sym.begin = uint32_t(pos);
    sym.len = uint32_t(len);
    sym.prev = int32_t(symbols.size()) - 1;
    pos += len;
    sym.next = pos < s.size() ? int32_t(symbols.size()) + 1 : -1;
    symbols.push_back(sym);
  }

  auto view = [&](const Symbol& x) { return s.substr(x.begin, x.len); };
  // For unused pieces: how each merged one was formed, to split it back at the end (last writer wins, as in
  // sentencepiece's `rev_merge`).
  std::unordered_map<std::string_view, std::pair<std::string_view, std::string_view>> rev_merge;
  std::priority_queue<Candidate, std::vector<Candidate>, CandidateOrder> agenda;
  auto consider = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const Symbol& l = symbols[size_t(left)];
    const Symbol& r = symbols[size_t(right)];
    if (l.frozen || r.frozen) return;
    const uint32_t size = l.len + r.len;
    if (size > m.max_piece_bytes) return;
    const std::string_view merged = s.substr(l.begin, size);
    const int32_t id = m.mergeable.find(merged);
    if (id < 0) return;
    const Model::Piece& p = m.pieces[size_t(id)];
    agenda.push({p.score, left, right, size});
    if (p.type == PieceType::kUnused) rev_merge[merged] = {view(l), view(r)};
  };

  // 2. Merge, one run of unfrozen symbols at a time. Merges in different runs never interact, and within a
  // run they happen in the same order as with one queue for the whole text, so the result is the same; the
  // queues stay small (a paragraph, not a whole corpus: 3x faster on TinyStories). With unused
  // pieces, `rev_merge` would see its writes in another order, so those models use one queue, like
  // sentencepiece.
  auto merge_run = [&](size_t first, size_t end) {
    for (size_t i = first + 1; i < end; ++i) consider(int32_t(i - 1), int32_t(i));
    while (!agenda.empty()) {
      const Candidate top = agenda.top();
      agenda.pop();
      Symbol& l = symbols[size_t(top.left)];
      Symbol& r = symbols[size_t(top.right)];
      if (l.len == 0 || r.len == 0 || l.len + r.len != top.size) continue;  // stale
      l.len += r.len;
      l.next = r.next;
      if (r.next >= 0) symbols[size_t(r.next)].prev = top.left;
      r.len = 0;
      consider(l.prev, top.left);
      consider(top.left, l.next);
    }
  };
  if (m.has_unused) {
    merge_run(0, symbols.size());
  } else {
    for (size_t first = 0; first < symbols.size();) {
      size_t end = first + 1;
      while (end < symbols.size() && !symbols[end].frozen) ++end;
      merge_run(first, end);
      first = end;
    }
  }

  // 3. Emit ids. Unused pieces are split back into what formed them; a symbol that is no piece becomes its
  // UTF-8 bytes' <0xXX> pieces with byte fallback, else <unk>, where a run of unknown symbols gives one <unk>
  // (sentencepiece's PopulateSentencePieceText merges them: "☃☃" is one <unk>, not two).
  bool prev_unk = false;
  std::function<void(std::string_view)> emit = [&](std::string_view w) {
    const int32_t id = m.piece_to_id(w);
    if (m.has_unused && m.pieces[size_t(id)].type == PieceType::kUnused) {
      if (auto it = rev_merge.find(w); it != rev_merge.end()) {
        const auto [a, b] = it->second;
        emit(a);
        emit(b);
        return;
      }
    }
    const bool unk = id == m.unk_id;
    if (unk && m.trainer.byte_fallback) {
      for (unsigned char c : w) ids.push_back(m.byte_ids[c]);
    } else if (!(unk && prev_unk)) {
      ids.push_back(id);
    }
    prev_unk = unk;
  };
  for (int32_t i = 0; i >= 0; i = symbols[size_t(i)].next) emit(view(symbols[size_t(i)]));
  return ids;
}

// ------------------------------------------------------------------------------------------------------
// Decoder (sentencepiece's SentencePieceProcessor::Decode, as 0.1.97 behaves).

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  if (bpe_) return bpe_->decode(ids, /*skip_special_tokens=*/true);
  const Model& m = *m_;
  // The dummy prefix the encoder added shows up as a leading ▁ on the first piece; sentencepiece removes it
  // while nothing has been output yet. With remove_extra_whitespaces every such leading ▁ goes (the encoder
  // could not have produced them from text), otherwise only the first one: decode([▁, ▁hello]) is "hello"
  // for tok512 but " hello" for Llama-2. Control tokens output nothing and do not end the start.
  const bool strip_dummy_prefix = m.normalizer.add_dummy_prefix || m.normalizer.remove_extra_whitespaces;
  bool at_start = true, prefix_removed = false;
  std::string out, bytes;
  for (const int32_t id : ids) {
    check_id(id);
    const Model::Piece& p = m.pieces[size_t(id)];
    if (p.type == PieceType::kByte) {  // collect a run of bytes and read them as UTF-8 together
      bytes.push_back(char(p.byte));
      continue;
    }
    append_utf8_lossy(bytes, &out);
    bytes.clear();
    if (prefix_removed || !out.empty()) at_start = false;
    prefix_removed = false;
    if (p.type == PieceType::kControl) continue;  // <s>, </s>: invisible
    if (p.type == PieceType::kUnknown) {
      out.append(m.trainer.unk_surface);
      continue;
    }
    std::string_view piece = p.text;
    if (at_start && strip_dummy_prefix && starts_with(piece, kSpaceSymbol)) {
      piece.remove_prefix(kSpaceSymbol.size());
      prefix_removed = !m.normalizer.remove_extra_whitespaces;
    }
    append_unescaped(piece, &out);
  }
  append_utf8_lossy(bytes, &out);
  return out;
}

std::string Tokenizer::token_text(int32_t prev, int32_t id) const {
  if (bpe_) return bpe_->token_bytes(id);  // byte-level BPE spells spaces itself: nothing to strip after BOS
  check_id(id);
  const Model::Piece& p = m_->pieces[size_t(id)];
  if (p.type == PieceType::kControl) return "";
  if (p.type == PieceType::kByte) return std::string(1, char(p.byte));
  std::string out;
  append_unescaped(p.text, &out);
  // run.c: "following BOS (1) token, sentencepiece decoder strips any leading whitespace"
  if (prev >= 0 && prev == m_->bos_id && !out.empty() && out[0] == ' ') out.erase(0, 1);
  return out;
}

// ------------------------------------------------------------------------------------------------------
// Accessors

void Tokenizer::check_id(int32_t id) const {
  if (id < 0 || id >= vocab_size())
    throw InputError("token id " + std::to_string(id) + " is out of range: " + m_->path + " has " +
                     std::to_string(vocab_size()) + " pieces");
}

const std::string& Tokenizer::piece(int32_t id) const {
  if (bpe_) return bpe_->token(id);
  check_id(id);
  return m_->pieces[size_t(id)].text;
}

float Tokenizer::score(int32_t id) const {
  if (bpe_) {
    bpe_->token(id);  // InputError on a bad id
    return 0.0f;      // BPE ranks merges, not pieces
  }
  check_id(id);
  return m_->pieces[size_t(id)].score;
}

Tokenizer::PieceType Tokenizer::piece_type(int32_t id) const {
  if (bpe_) {
    bpe_->token(id);  // InputError on a bad id
    return bpe_->is_special(id) ? PieceType::kControl : PieceType::kNormal;
  }
  check_id(id);
  return m_->pieces[size_t(id)].type;
}

int32_t Tokenizer::piece_to_id(std::string_view piece) const { return bpe_ ? bpe_->token_to_id(piece) : m_->piece_to_id(piece); }
int32_t Tokenizer::vocab_size() const { return bpe_ ? bpe_->vocab_size() : int32_t(m_->pieces.size()); }
int32_t Tokenizer::bos_id() const { return bpe_ ? bpe_->bos_id() : m_->bos_id; }
int32_t Tokenizer::eos_id() const { return bpe_ ? bpe_->eos_id() : m_->eos_id; }
int32_t Tokenizer::unk_id() const { return bpe_ ? -1 : m_->unk_id; }
bool Tokenizer::byte_fallback() const { return bpe_ ? false : m_->trainer.byte_fallback; }
const std::string& Tokenizer::file_sha256() const { return bpe_ ? bpe_->file_sha256() : m_->file_sha256; }
const std::string& Tokenizer::path() const { return bpe_ ? bpe_->path() : m_->path; }

}  // namespace layerprune
