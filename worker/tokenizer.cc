#include "worker/tokenizer.h"

#include <cstdio>
#include <cstring>
#include <queue>
#include <string_view>
#include <unordered_map>

#include "common/error.h"
#include "common/hashing.h"
#include "common/text_file.h"

namespace layerprune {

namespace {

// SentencePiece's piece types (sentencepiece_model.proto).
enum PieceType { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";  // U+2581 '▁', SentencePiece's visible space

// ---------------------------------------------------------------------------------------------------------
// Protobuf wire format: just enough to walk ModelProto. Every read is bounds-checked.
class WireReader {
 public:
  WireReader(const std::string& file, std::string_view data) : file_(file), data_(data) {}
  bool done() const { return pos_ >= data_.size(); }
  // Next field: number and wire type.
  void next(uint32_t* field, uint32_t* wire) {
    uint64_t key = varint();
    *field = uint32_t(key >> 3);
    *wire = uint32_t(key & 7);
  }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= data_.size()) fail("truncated varint");
      uint8_t b = uint8_t(data_[pos_++]);
      v |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    fail("varint longer than 10 bytes");
    return 0;
  }
  std::string_view bytes() {
    uint64_t n = varint();
    if (n > data_.size() - pos_) fail("length-delimited field runs past the end");
    std::string_view s = data_.substr(pos_, size_t(n));
    pos_ += size_t(n);
    return s;
  }
  float fixed32_float() {
    if (data_.size() - pos_ < 4) fail("truncated fixed32");
    float f;
    std::memcpy(&f, data_.data() + pos_, 4);  // little-endian, as protobuf and x86/ARM are
    pos_ += 4;
    return f;
  }
  void skip(uint32_t wire) {
    switch (wire) {
      case 0: varint(); break;
      case 1: advance(8); break;
      case 2: bytes(); break;
      case 5: advance(4); break;
      default: fail("unsupported wire type " + std::to_string(wire));
    }
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw InputError(file_ + ": not a valid SentencePiece model (" + what + " at byte " + std::to_string(pos_) + ")");
  }

 private:
  void advance(size_t n) {
    if (data_.size() - pos_ < n) fail("truncated field");
    pos_ += n;
  }
  const std::string& file_;
  std::string_view data_;
  size_t pos_ = 0;
};

// Length of the UTF-8 character at s[0]; 0 if it is malformed (SentencePiece then takes one byte and
// normalises it to U+FFFD).
size_t utf8_length(std::string_view s) {
  const uint8_t c = uint8_t(s[0]);
  size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
  if (n == 0 || n > s.size()) return 0;
  for (size_t i = 1; i < n; ++i)
    if ((uint8_t(s[i]) & 0xc0) != 0x80) return 0;
  // Reject overlong forms and surrogates, as a strict decoder does.
  uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1f) : n == 3 ? (c & 0x0f) : (c & 0x07);
  for (size_t i = 1; i < n; ++i) cp = (cp << 6) | (uint8_t(s[i]) & 0x3f);
  if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
      (cp >= 0xd800 && cp <= 0xdfff))
    return 0;
  return n;
}

// Appends s to out, each malformed UTF-8 byte replaced by U+FFFD (what sentencepiece does to input text
// and to decoded byte pieces alike).
void append_utf8_replacing_invalid(std::string_view s, std::string* out) {
  while (!s.empty()) {
    size_t n = utf8_length(s);
    if (n == 0) {
      *out += "\xEF\xBF\xBD";
      s.remove_prefix(1);
    } else {
      out->append(s.data(), n);
      s.remove_prefix(n);
    }
  }
}

// Appends a piece's text with its '▁' turned back into spaces.
void append_unescaped(std::string_view piece, std::string* out) {
  for (size_t i = 0; i < piece.size();) {
    if (piece.compare(i, kSpaceSymbol.size(), kSpaceSymbol) == 0) {
      *out += ' ';
      i += kSpaceSymbol.size();
    } else {
      *out += piece[i++];
    }
  }
}

}  // namespace

struct Tokenizer::Model {
  struct Piece {
    std::string text;
    float score = 0;
    int type = kNormal;
  };
  std::vector<Piece> pieces;
  std::unordered_map<std::string_view, int32_t> mergeable;  // normal, user-defined, unused: BPE may form them
  std::unordered_map<std::string_view, int32_t> reserved;   // control, unknown, byte
  std::vector<std::string_view> user_defined;               // matched whole before BPE
  int32_t byte_piece[256];
  int32_t unk_id = 0, bos_id = 1, eos_id = 2;
  int model_type = 1;
  bool byte_fallback = false, add_dummy_prefix = true, remove_extra_whitespaces = true, escape_whitespaces = true;
  std::string unk_surface = " \xE2\x81\x87 ";
  std::string sha256;

  int32_t id_of(std::string_view s) const {
    if (auto it = reserved.find(s); it != reserved.end()) return it->second;
    if (auto it = mergeable.find(s); it != mergeable.end()) return it->second;
    return unk_id;
  }
};

Tokenizer Tokenizer::load(const std::string& path) {
  auto m = std::make_shared<Model>();
  const std::string bytes = read_file(path);
  if (bytes.empty()) throw InputError(path + ": empty file (not a SentencePiece model)");
  m->sha256 = sha256_hex(bytes);
  WireReader r(path, bytes);
  bool has_trainer = false;
  while (!r.done()) {
    uint32_t field, wire;
    r.next(&field, &wire);
    if (field == 1 && wire == 2) {  // repeated SentencePiece pieces
      WireReader p(path, r.bytes());
      Model::Piece piece;
      while (!p.done()) {
        uint32_t f, w;
        p.next(&f, &w);
        if (f == 1 && w == 2) piece.text = std::string(p.bytes());
        else if (f == 2 && w == 5) piece.score = p.fixed32_float();
        else if (f == 3 && w == 0) piece.type = int(p.varint());
        else p.skip(w);
      }
      m->pieces.push_back(std::move(piece));
    } else if (field == 2 && wire == 2) {  // TrainerSpec
      has_trainer = true;
      WireReader t(path, r.bytes());
      while (!t.done()) {
        uint32_t f, w;
        t.next(&f, &w);
        if (f == 3 && w == 0) m->model_type = int(t.varint());
        else if (f == 35 && w == 0) m->byte_fallback = t.varint() != 0;
        else if (f == 40 && w == 0) m->unk_id = int32_t(t.varint());
        else if (f == 41 && w == 0) m->bos_id = int32_t(t.varint());
        else if (f == 42 && w == 0) m->eos_id = int32_t(t.varint());
        else if (f == 44 && w == 2) m->unk_surface = std::string(t.bytes());
        else t.skip(w);
      }
    } else if (field == 3 && wire == 2) {  // NormalizerSpec
      WireReader n(path, r.bytes());
      while (!n.done()) {
        uint32_t f, w;
        n.next(&f, &w);
        if (f == 2 && w == 2) {
          if (!n.bytes().empty())
            throw InputError(path + ": the normalizer has a precompiled character map (e.g. NFKC); only the "
                                    "'identity' normalization of Llama tokenizers is supported");
        } else if (f == 3 && w == 0) m->add_dummy_prefix = n.varint() != 0;
        else if (f == 4 && w == 0) m->remove_extra_whitespaces = n.varint() != 0;
        else if (f == 5 && w == 0) m->escape_whitespaces = n.varint() != 0;
        else n.skip(w);
      }
    } else {
      r.skip(wire);
    }
  }
  if (m->pieces.empty() || !has_trainer) throw InputError(path + ": not a SentencePiece model (no pieces or trainer spec)");
  if (m->model_type != 2)
    throw InputError(path + ": SentencePiece model type " + std::to_string(m->model_type) +
                     " is not supported (only BPE, type 2, as Llama tokenizers use)");
  const int32_t n = int32_t(m->pieces.size());
  for (int32_t id : {m->unk_id, m->bos_id, m->eos_id})
    if (id < -1 || id >= n) throw InputError(path + ": special token id " + std::to_string(id) + " outside the vocabulary");
  std::fill(std::begin(m->byte_piece), std::end(m->byte_piece), -1);
  for (int32_t i = 0; i < n; ++i) {
    const auto& p = m->pieces[size_t(i)];
    std::string_view key(p.text);
    if (p.type == kNormal || p.type == kUserDefined || p.type == kUnused) m->mergeable.emplace(key, i);
    else m->reserved.emplace(key, i);
    if (p.type == kUserDefined) m->user_defined.push_back(key);
    if (p.type == kByte) {
      unsigned v = 0;
      if (p.text.size() != 6 || std::sscanf(p.text.c_str(), "<0x%02X>", &v) != 1 || v > 255)
        throw InputError(path + ": byte piece '" + p.text + "' is not of the form <0xXX>");
      m->byte_piece[v] = i;
    }
  }
  if (m->byte_fallback)
    for (int b = 0; b < 256; ++b)
      if (m->byte_piece[b] < 0) throw InputError(path + ": byte_fallback is on but piece <0x" + std::to_string(b) + "> is missing");
  Tokenizer t;
  t.m_ = std::move(m);
  return t;
}

const std::string& Tokenizer::piece(int32_t id) const { return m_->pieces.at(size_t(id)).text; }
int32_t Tokenizer::vocab_size() const { return int32_t(m_->pieces.size()); }
int32_t Tokenizer::bos_id() const { return m_->bos_id; }
int32_t Tokenizer::eos_id() const { return m_->eos_id; }
int32_t Tokenizer::unk_id() const { return m_->unk_id; }
const std::string& Tokenizer::file_sha256() const { return m_->sha256; }

namespace {

// SentencePiece's normaliser for the identity rule: malformed UTF-8 bytes become U+FFFD; with
// remove_extra_whitespaces, leading and trailing spaces go and inner runs collapse to one; the dummy
// prefix adds a space in front of non-empty text; spaces become '▁'.
std::string normalize(const Tokenizer::Model& m, const std::string& text) {
  std::string chars;
  chars.reserve(text.size());
  append_utf8_replacing_invalid(text, &chars);
  if (m.remove_extra_whitespaces) {
    std::string squeezed;
    squeezed.reserve(chars.size());
    for (char c : chars) {
      if (c == ' ' && (squeezed.empty() || squeezed.back() == ' ')) continue;
      squeezed += c;
    }
    while (!squeezed.empty() && squeezed.back() == ' ') squeezed.pop_back();
    chars.swap(squeezed);
  }
  if (chars.empty()) return chars;
  if (m.add_dummy_prefix) chars.insert(chars.begin(), ' ');
  if (!m.escape_whitespaces) return chars;
  std::string out;
  out.reserve(chars.size() + chars.size() / 2);
  for (char c : chars) {
    if (c == ' ') out += kSpaceSymbol;
    else out += c;
  }
  return out;
}

}  // namespace

std::vector<int32_t> Tokenizer::encode(const std::string& text, bool add_bos) const {
  const Model& m = *m_;
  std::vector<int32_t> ids;
  if (add_bos && m.bos_id >= 0) ids.push_back(m.bos_id);
  const std::string norm = normalize(m, text);
  if (norm.empty()) return ids;

  // Symbols: a doubly linked list over the normalised text, first one character (or one whole
  // user-defined piece) each. `frozen` symbols (user-defined) never merge.
  struct Symbol {
    int prev, next;
    const char* data;
    size_t size;
    bool frozen;
  };
  std::vector<Symbol> sym;
  sym.reserve(norm.size());
  std::string_view rest(norm);
  while (!rest.empty()) {
    size_t n = 0;
    bool frozen = false;
    for (std::string_view u : m.user_defined)  // longest user-defined piece at this point
      if (u.size() > n && rest.substr(0, u.size()) == u) {
        n = u.size();
        frozen = true;
      }
    if (n == 0) n = std::max<size_t>(1, utf8_length(rest));
    int i = int(sym.size());
    sym.push_back({i - 1, rest.size() > n ? i + 1 : -1, rest.data(), n, frozen});
    rest.remove_prefix(n);
  }

  // The agenda: candidate merges of adjacent symbols whose concatenation is a piece, best score first,
  // leftmost first among equal scores (sentencepiece's SymbolPairComparator).
  struct Pair {
    float score;
    int left, right;
    size_t size;
  };
  auto worse = [](const Pair& a, const Pair& b) { return a.score < b.score || (a.score == b.score && a.left > b.left); };
  std::priority_queue<Pair, std::vector<Pair>, decltype(worse)> agenda(worse);
  auto consider = [&](int left, int right) {
    if (left < 0 || right < 0 || sym[left].frozen || sym[right].frozen) return;
    std::string_view merged(sym[left].data, sym[left].size + sym[right].size);
    auto it = m.mergeable.find(merged);
    if (it == m.mergeable.end()) return;
    agenda.push({m.pieces[size_t(it->second)].score, left, right, merged.size()});
  };
  for (size_t i = 1; i < sym.size(); ++i) consider(int(i) - 1, int(i));
  while (!agenda.empty()) {
    Pair top = agenda.top();
    agenda.pop();
    Symbol& l = sym[size_t(top.left)];
    Symbol& r = sym[size_t(top.right)];
    // Stale entries: one side was merged away or grew since this pair was queued.
    if (l.size == 0 || r.size == 0 || l.next != top.right || l.size + r.size != top.size) continue;
    l.size += r.size;
    l.next = r.next;
    if (r.next >= 0) sym[size_t(r.next)].prev = top.left;
    r.size = 0;
    consider(l.prev, top.left);
    consider(top.left, l.next);
  }

  // Emit: known pieces by id; unknown ones as their UTF-8 bytes when byte fallback is on, else unk.
  for (int i = 0; i >= 0; i = sym[size_t(i)].next) {
    std::string_view piece(sym[size_t(i)].data, sym[size_t(i)].size);
    int32_t id = m.id_of(piece);
    if (id == m.unk_id && m.byte_fallback) {
      for (unsigned char b : piece) ids.push_back(m.byte_piece[b]);
    } else {
      ids.push_back(id);
    }
  }
  return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  const Model& m = *m_;
  std::string out;
  std::string pending_bytes;  // consecutive byte pieces form one UTF-8 sequence
  // sentencepiece's decoder drops the leading '▁' of pieces at the start of the text (the dummy prefix).
  // With remove_extra_whitespaces it keeps doing so until something visible is out (the normaliser would
  // have removed those spaces); without, only once.
  const bool strip_start = m.add_dummy_prefix || m.remove_extra_whitespaces;
  bool bos_ws_seen = false;
  auto flush_bytes = [&]() {
    append_utf8_replacing_invalid(pending_bytes, &out);
    pending_bytes.clear();
  };
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) throw InputError("decode: token id " + std::to_string(id) + " outside the vocabulary");
    const auto& p = m.pieces[size_t(id)];
    if (p.type == kControl) continue;
    if (p.type == kByte) {
      pending_bytes += char(std::stoi(p.text.substr(3, 2), nullptr, 16));
      continue;
    }
    flush_bytes();
    if (p.type == kUnknown) {
      out += m.unk_surface;
      continue;
    }
    std::string_view text(p.text);
    const bool at_start = strip_start && out.empty() && !bos_ws_seen;
    if (at_start && text.substr(0, kSpaceSymbol.size()) == kSpaceSymbol) {
      text.remove_prefix(kSpaceSymbol.size());
      bos_ws_seen = !m.remove_extra_whitespaces;
    }
    append_unescaped(text, &out);
  }
  flush_bytes();
  return out;
}

std::string Tokenizer::token_text(int32_t prev, int32_t id) const {
  const Model& m = *m_;
  if (id < 0 || id >= vocab_size()) throw InputError("token id " + std::to_string(id) + " outside the vocabulary");
  const auto& p = m.pieces[size_t(id)];
  if (p.type == kByte) return std::string(1, char(std::stoi(p.text.substr(3, 2), nullptr, 16)));
  std::string out;
  append_unescaped(p.text, &out);
  if (prev == m.bos_id && !out.empty() && out[0] == ' ') out.erase(0, 1);
  return out;
}

}  // namespace layerprune
