// Byte-level BPE from a tokenizer.json or a GGUF's metadata; see bpe_tokenizer.h for the pipeline and
// docs/formats.md ("tokenizer.json") for what is supported.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "formats/bpe_tokenizer.h"

#include <pcre2.h>
#include <utf8proc.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <unordered_map>

#include "common/error.h"
#include "formats/json_input.h"
#include "common/hashing.h"
#include "common/text_file.h"

namespace layerprune {

namespace {

using json = nlohmann::json;

constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// A token or merge as a JSON string literal for messages. A GGUF's strings may hold bytes that are not
// UTF-8: they are shown as U+FFFD (plain dump() would throw json::type_error instead of the InputError).
std::string quoted(const std::string& s) { return json(s).dump(-1, ' ', false, json::error_handler_t::replace); }

// ------------------------------------------------------------------------------------------------------
// UTF-8

// Length of the well-formed UTF-8 character at s[pos] and its code point, or 0 when malformed.
size_t utf8_char(std::string_view s, size_t pos, uint32_t* cp) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data()) + pos;
  const size_t left = s.size() - pos;
  utf8proc_int32_t c = 0;
  const utf8proc_ssize_t n = utf8proc_iterate(p, utf8proc_ssize_t(std::min<size_t>(left, 4)), &c);
  if (n <= 0) return 0;
  *cp = uint32_t(c);
  return size_t(n);
}

// Length of the longest prefix of s[pos..] that can begin a well-formed character (Unicode's "maximal
// subpart", at least 1): what Python's errors="replace" and Rust's from_utf8_lossy replace by one U+FFFD.
size_t maximal_subpart(std::string_view s, size_t pos) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data()) + pos;
  const size_t left = s.size() - pos;
  const unsigned char b0 = p[0];
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;  // the allowed range of the second byte (Unicode Table 3-7)
  if (b0 >= 0xC2 && b0 <= 0xDF) need = 2;
  else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return 1;
  }
  size_t n = 1;
  if (n < left && n < need && p[n] >= lo && p[n] <= hi) ++n;
  else return 1;
  while (n < left && n < need && p[n] >= 0x80 && p[n] <= 0xBF) ++n;
  return n;
}

// `bytes` as UTF-8 with each maximal ill-formed subsequence replaced by U+FFFD.
std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t i = 0; i < bytes.size();) {
    uint32_t cp;
    if (size_t n = utf8_char(bytes, i, &cp)) {
      out.append(bytes.substr(i, n));
      i += n;
    } else {
      out.append(kReplacementChar);
      i += maximal_subpart(bytes, i);
    }
  }
  return out;
}

void append_utf8(uint32_t cp, std::string* out) {
  unsigned char buf[4];
  const utf8proc_ssize_t n = utf8proc_encode_char(utf8proc_int32_t(cp), buf);
  out->append(reinterpret_cast<const char*>(buf), size_t(n));
}

bool is_whitespace(uint32_t cp) {  // Unicode White_Space, as Rust's char::is_whitespace
  if ((cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85) return true;
  const auto cat = utf8proc_category(utf8proc_int32_t(cp));
  return cat == UTF8PROC_CATEGORY_ZS || cat == UTF8PROC_CATEGORY_ZL || cat == UTF8PROC_CATEGORY_ZP;
}

// A word character as tokenizers' single_word test sees it (the Rust regex crate's Unicode \w): letters,
// marks, decimal digits, letter numbers, connector punctuation ("_") and the zero-width joiners; not other
// numbers such as "²" or "①". (Rust's Alphabetic also takes a few symbols, e.g. circled letters; not here.)
bool is_word_char(uint32_t cp) {
  if (cp == 0x200C || cp == 0x200D) return true;
  const auto cat = utf8proc_category(utf8proc_int32_t(cp));
  return (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) ||
         (cat >= UTF8PROC_CATEGORY_MN && cat <= UTF8PROC_CATEGORY_ME) || cat == UTF8PROC_CATEGORY_ND ||
         cat == UTF8PROC_CATEGORY_NL || cat == UTF8PROC_CATEGORY_PC;
}

uint32_t last_char(std::string_view s) {  // of well-formed UTF-8; 0 for ""
  if (s.empty()) return 0;
  size_t i = s.size() - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  uint32_t cp = 0;
  utf8_char(s, i, &cp);
  return cp;
}

uint32_t first_char(std::string_view s) {
  uint32_t cp = 0;
  if (!s.empty()) utf8_char(s, 0, &cp);
  return cp;
}

// ------------------------------------------------------------------------------------------------------
// GPT-2's byte alphabet: each byte is shown as a printable character, the printable Latin-1 ones as
// themselves and the rest as U+0100 onwards in byte order (GPT-2's bytes_to_unicode()).

struct ByteAlphabet {
  std::string byte_to_char[256];                // UTF-8 of the character standing for each byte
  std::unordered_map<uint32_t, uint8_t> char_to_byte;
  ByteAlphabet() {
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const uint32_t cp = printable ? uint32_t(b) : next++;
      append_utf8(cp, &byte_to_char[b]);
      char_to_byte[cp] = uint8_t(b);
    }
  }
};

const ByteAlphabet& byte_alphabet() {
  static const ByteAlphabet a;
  return a;
}

std::string to_byte_alphabet(std::string_view bytes) {
  const ByteAlphabet& a = byte_alphabet();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) out += a.byte_to_char[b];
  return out;
}

// ------------------------------------------------------------------------------------------------------
// Regular expressions through PCRE2, in UTF + UCP mode (\p{..}, \s, \w by Unicode properties), as the Rust
// regex crates that `tokenizers` uses (onig for Split, fancy-regex-like for ByteLevel) read them.

struct Regex {
  std::shared_ptr<pcre2_code> code;

  static Regex compile(const std::string& pattern, const std::string& where) {
    int err = 0;
    PCRE2_SIZE offset = 0;
    pcre2_code* c = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                  PCRE2_UTF | PCRE2_UCP, &err, &offset, nullptr);
    if (!c) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      throw InputError(where + ": the regex " + json(pattern).dump() + " does not compile (PCRE2: " +
                       reinterpret_cast<const char*>(msg) + ", at offset " + std::to_string(offset) + ")");
    }
    pcre2_jit_compile(c, PCRE2_JIT_COMPLETE);  // faster when the platform has a JIT; plain matching otherwise
    Regex r;
    r.code.reset(c, pcre2_code_free);
    return r;
  }

  // The non-overlapping matches in `s` (well-formed UTF-8), as [begin, end) byte ranges; empty matches
  // are skipped (they would make empty pieces, which are dropped anyway).
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view s) const {
    std::vector<std::pair<size_t, size_t>> out;
    std::unique_ptr<pcre2_match_data, void (*)(pcre2_match_data*)> md(
        pcre2_match_data_create_from_pattern(code.get(), nullptr), pcre2_match_data_free);
    size_t start = 0;
    while (start <= s.size()) {
      // NO_UTF_CHECK: the text was made well-formed on the way in, and checking it again at every start
      // offset would make the scan quadratic.
      const int rc = pcre2_match(code.get(), reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), start,
                                 PCRE2_NO_UTF_CHECK, md.get(), nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        throw InputError(std::string("regex match failed (PCRE2: ") + reinterpret_cast<const char*>(msg) + ")");
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
      const size_t b = ov[0], e = ov[1];
      if (e > b) {
        out.emplace_back(b, e);
        start = e;
      } else {  // an empty match: step over one character
        if (b >= s.size()) break;
        uint32_t cp;
        const size_t n = utf8_char(s, b, &cp);
        start = b + (n ? n : 1);
      }
    }
    return out;
  }
};

// GPT-2's pre-tokenizer regex (tokenizers' ByteLevel with use_regex).
constexpr const char* kGpt2Regex = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// ------------------------------------------------------------------------------------------------------
// Pre-tokenizers: each turns a list of pieces into a finer one (tokenizers' PreTokenizedString splits).

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

struct PreTokenizer {
  enum class Kind { kSplit, kByteLevel, kSequence } kind = Kind::kSplit;
  Regex regex;                       // kSplit, and kByteLevel with use_regex
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
  bool add_prefix_space = false;     // kByteLevel
  bool use_regex = true;             // kByteLevel
  std::vector<PreTokenizer> steps;   // kSequence
};

// tokenizers' NormalizedString::split(pattern, behavior) on one piece.
void split_piece(std::string_view piece, const Regex& regex, SplitBehavior behavior, bool invert,
                 std::vector<std::string>* out) {
  // (range, is_match) covering the piece
  std::vector<std::pair<std::pair<size_t, size_t>, bool>> parts;
  size_t prev = 0;
  for (const auto& m : regex.find_all(piece)) {
    if (m.first > prev) parts.push_back({{prev, m.first}, false});
    parts.push_back({m, true});
    prev = m.second;
  }
  if (prev < piece.size()) parts.push_back({{prev, piece.size()}, false});
  if (invert)
    for (auto& p : parts) p.second = !p.second;

  std::vector<std::pair<size_t, size_t>> pieces;
  switch (behavior) {
    case SplitBehavior::kRemoved:
      for (const auto& p : parts)
        if (!p.second) pieces.push_back(p.first);
      break;
    case SplitBehavior::kIsolated:
      for (const auto& p : parts) pieces.push_back(p.first);
      break;
    case SplitBehavior::kContiguous: {  // neighbours with the same flag join (matches, or after invert the rest)
      bool prev_match = false;
      for (const auto& p : parts) {
        if (p.second == prev_match && !pieces.empty()) pieces.back().second = p.first.second;
        else pieces.push_back(p.first);
        prev_match = p.second;
      }
      break;
    }
    case SplitBehavior::kMergedWithPrevious: {
      bool prev_match = false;
      for (const auto& p : parts) {
        if (p.second && !prev_match && !pieces.empty()) pieces.back().second = p.first.second;
        else pieces.push_back(p.first);
        prev_match = p.second;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool prev_match = false;
      for (const auto& p : parts) {
        if (!p.second && prev_match && !pieces.empty()) pieces.back().second = p.first.second;
        else pieces.push_back(p.first);
        prev_match = p.second;
      }
      break;
    }
  }
  for (const auto& r : pieces)
    if (r.second > r.first) out->emplace_back(piece.substr(r.first, r.second - r.first));
}

void pre_tokenize(const PreTokenizer& p, std::vector<std::string>* pieces) {
  std::vector<std::string> out;
  switch (p.kind) {
    case PreTokenizer::Kind::kSequence:
      for (const auto& s : p.steps) pre_tokenize(s, pieces);
      return;
    case PreTokenizer::Kind::kSplit:
      for (const auto& piece : *pieces) split_piece(piece, p.regex, p.behavior, p.invert, &out);
      break;
    case PreTokenizer::Kind::kByteLevel:
      for (auto& piece : *pieces) {
        if (p.add_prefix_space && !piece.empty() && piece.front() != ' ') piece.insert(0, 1, ' ');
        std::vector<std::string> split;
        if (p.use_regex) split_piece(piece, p.regex, SplitBehavior::kIsolated, false, &split);
        else split.push_back(std::move(piece));
        for (const auto& s : split) out.push_back(to_byte_alphabet(s));
      }
      break;
  }
  *pieces = std::move(out);
}

// ------------------------------------------------------------------------------------------------------
// tokenizer.json fields, with errors that name the file and the field.

struct JsonField {
  const json& j;
  std::string where;  // "tokenizer.json: pre_tokenizer.pretokenizers[1]"

  [[noreturn]] void fail(const std::string& what) const { throw InputError(where + ": " + what); }
  JsonField at(const std::string& key) const {
    static const json kNull;
    auto it = j.find(key);
    return JsonField{it == j.end() ? kNull : *it, where + "." + key};
  }
  JsonField at(size_t i) const { return JsonField{j[i], where + "[" + std::to_string(i) + "]"}; }
  bool is_null() const { return j.is_null(); }
  static std::string describe(const json& v) {
    std::string d = v.dump();
    if (d.size() > 60) d = d.substr(0, 57) + "...";
    return std::string(v.type_name()) + " " + d;
  }
  std::string string() const {
    if (!j.is_string()) fail("expected a string, found " + describe(j));
    return j.get<std::string>();
  }
  bool boolean(bool dflt) const {
    if (j.is_null()) return dflt;
    if (!j.is_boolean()) fail("expected true or false, found " + describe(j));
    return j.get<bool>();
  }
  int32_t id(int32_t vocab_size) const {
    if (!j.is_number_integer() || j.get<int64_t>() < 0 || j.get<int64_t>() >= int64_t(1) << 31)
      fail("expected a token id, found " + describe(j));
    const int64_t v = j.get<int64_t>();
    if (vocab_size >= 0 && v >= vocab_size)
      fail("token id " + std::to_string(v) + " is outside the vocabulary (" + std::to_string(vocab_size) + " tokens)");
    return int32_t(v);
  }
  void expect_object() const {
    if (!j.is_object()) fail("expected an object, found " + describe(j));
  }
  void expect_array() const {
    if (!j.is_array()) fail("expected an array, found " + describe(j));
  }
  std::string type() const {  // the "type" of a component object
    expect_object();
    return at("type").string();
  }
};

}  // namespace

// ------------------------------------------------------------------------------------------------------
// The model

struct BpeTokenizer::Model {
  std::string path, file_sha256;

  // BPE
  std::vector<std::string> tokens;                     // id -> vocabulary string
  // The BPE model's vocabulary (what merging and ignore_merges look up; added tokens are not in it, as in
  // tokenizers), and the added tokens' contents, which token_to_id() consults first.
  std::unordered_map<std::string, int32_t> vocab_ids, added_ids;
  // (left id, right id) -> (rank, merged id)
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges;
  bool ignore_merges = false;
  int32_t unk_id = -1;
  bool fuse_unk = false, byte_fallback = false;

  // added tokens, matched in the raw text (normalized = false) or in the normalized text (true)
  struct AddedToken {
    int32_t id;
    std::string content;
    bool single_word = false, lstrip = false, rstrip = false, normalized = false, special = false;
  };
  std::vector<AddedToken> added;
  std::vector<bool> special;  // per id: an added token marked special (skipped by skip_special_tokens)

  bool nfc = false;  // the normalizer (NFC or none)
  bool has_pre_tokenizer = false;
  PreTokenizer pre;
  bool byte_level_decoder = false;  // else tokens joined with spaces (tokenizers without a decoder)

  std::vector<int32_t> prefix_ids, suffix_ids;  // TemplateProcessing's single: specials around $A
  int32_t bos_id = -1, eos_id = -1;

  // pre-token -> ids (the same words recur), bounded so a hostile text cannot grow it without limit
  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;

  void add_merge(int32_t rank, const std::string& a, const std::string& b, const std::string& where) {
    auto ia = vocab_ids.find(a), ib = vocab_ids.find(b), im = vocab_ids.find(a + b);
    auto fail = [&](const std::string& t) {
      throw InputError(where + ": merge " + std::to_string(rank) + " (" + quoted(a) + " " + quoted(b) + ") names " +
                       quoted(t) + ", which is not in the vocabulary");
    };
    if (ia == vocab_ids.end()) fail(a);
    if (ib == vocab_ids.end()) fail(b);
    if (im == vocab_ids.end()) fail(a + b);
    merges.emplace((uint64_t(uint32_t(ia->second)) << 32) | uint32_t(ib->second), std::make_pair(rank, im->second));
  }

  void bpe(const std::string& word, std::vector<int32_t>* out) const;
  void encode_piece(const std::string& word, std::vector<int32_t>* out) const;
};

namespace {

// One BPE symbol in a word being merged: a doubly linked list over a vector, as tokenizers' Word.
struct Symbol {
  int32_t id;
  int32_t prev, next;
  size_t len;  // bytes of the word it covers; 0 once merged into its left neighbour
};

struct MergeCandidate {
  int32_t rank;
  size_t pos;
  int32_t new_id;
  bool operator>(const MergeCandidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

}  // namespace

// tokenizers' Word::merge_all: the lowest-ranked pair first (the leftmost among equals), until no pair of
// neighbours has a merge.
void BpeTokenizer::Model::bpe(const std::string& word, std::vector<int32_t>* out) const {
  std::vector<Symbol> symbols;
  // The characters of the word, unknown ones as byte-fallback tokens, <unk> (fused when asked) or dropped,
  // as tokenizers' BPE::merge_word does.
  for (size_t i = 0; i < word.size();) {
    uint32_t cp;
    size_t n = utf8_char(word, i, &cp);
    if (!n) n = 1;  // cannot happen on well-formed text; keeps the loop finite
    const std::string ch = word.substr(i, n);
    auto it = vocab_ids.find(ch);
    if (it != vocab_ids.end()) {
      symbols.push_back({it->second, -1, -1, n});
    } else {
      bool done = false;
      if (byte_fallback) {
        std::vector<int32_t> bytes;
        for (unsigned char b : ch) {
          char name[8];
          std::snprintf(name, sizeof name, "<0x%02X>", b);
          auto bt = vocab_ids.find(name);
          if (bt == vocab_ids.end()) break;
          bytes.push_back(bt->second);
        }
        if (bytes.size() == ch.size()) {
          for (int32_t b : bytes) symbols.push_back({b, -1, -1, 1});
          done = true;
        }
      }
      if (!done && unk_id >= 0) {
        if (fuse_unk && !symbols.empty() && symbols.back().id == unk_id) symbols.back().len += n;
        else symbols.push_back({unk_id, -1, -1, n});
      }
    }
    i += n;
  }
  for (size_t k = 0; k < symbols.size(); ++k) {
    symbols[k].prev = int32_t(k) - 1;
    symbols[k].next = k + 1 < symbols.size() ? int32_t(k + 1) : -1;
  }
  auto pair_of = [&](size_t left) -> const std::pair<int32_t, int32_t>* {
    const Symbol& l = symbols[left];
    if (l.next < 0) return nullptr;
    auto it = merges.find((uint64_t(uint32_t(l.id)) << 32) | uint32_t(symbols[size_t(l.next)].id));
    return it == merges.end() ? nullptr : &it->second;
  };
  std::priority_queue<MergeCandidate, std::vector<MergeCandidate>, std::greater<MergeCandidate>> queue;
  for (size_t k = 0; k + 1 < symbols.size(); ++k)
    if (auto m = pair_of(k)) queue.push({m->first, k, m->second});
  while (!queue.empty()) {
    const MergeCandidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (left.len == 0 || left.next < 0) continue;
    const auto* m = pair_of(top.pos);
    if (!m || m->second != top.new_id) continue;  // stale: a neighbour changed since it was queued
    Symbol& right = symbols[size_t(left.next)];
    left.id = top.new_id;
    left.len += right.len;
    left.next = right.next;
    right.len = 0;
    if (left.next >= 0) symbols[size_t(left.next)].prev = int32_t(top.pos);
    if (left.prev >= 0)
      if (auto pm = pair_of(size_t(left.prev))) queue.push({pm->first, size_t(left.prev), pm->second});
    if (auto nm = pair_of(top.pos)) queue.push({nm->first, top.pos, nm->second});
  }
  for (const Symbol& s : symbols)
    if (s.len > 0) out->push_back(s.id);
}

void BpeTokenizer::Model::encode_piece(const std::string& word, std::vector<int32_t>* out) const {
  if (ignore_merges) {  // Llama-3: a pre-token that is itself a token is that token, whatever the merges say
    auto it = vocab_ids.find(word);
    if (it != vocab_ids.end()) {
      out->push_back(it->second);
      return;
    }
  }
  {
    std::lock_guard<std::mutex> lock(cache_mutex);
    auto it = cache.find(word);
    if (it != cache.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  bpe(word, &ids);
  out->insert(out->end(), ids.begin(), ids.end());
  constexpr size_t kMaxCachedWordBytes = 256, kMaxCacheEntries = 1 << 16;
  if (word.size() > kMaxCachedWordBytes) return;
  std::lock_guard<std::mutex> lock(cache_mutex);
  if (cache.size() >= kMaxCacheEntries) cache.clear();
  cache.emplace(word, std::move(ids));
}

// ------------------------------------------------------------------------------------------------------
// Loading a tokenizer.json

namespace {

SplitBehavior parse_behavior(const JsonField& f) {
  const std::string b = f.string();
  if (b == "Removed") return SplitBehavior::kRemoved;
  if (b == "Isolated") return SplitBehavior::kIsolated;
  if (b == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (b == "Contiguous") return SplitBehavior::kContiguous;
  f.fail("unknown split behavior \"" + b + "\" (expected Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous)");
}

// Regex-escapes a literal (Split's {"String": ...} pattern).
std::string quote_regex(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (std::string_view("\\^$.|?*+()[]{}-").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

// Sequences may nest; a hostile file nesting them without end would exhaust the stack.
constexpr int kMaxNesting = 16;

void check_nesting(const JsonField& f, int depth) {
  if (depth > kMaxNesting) f.fail("Sequences nested deeper than " + std::to_string(kMaxNesting));
}

PreTokenizer parse_pre_tokenizer(const JsonField& f, int depth = 0) {
  check_nesting(f, depth);
  const std::string type = f.type();
  PreTokenizer p;
  if (type == "Sequence") {
    p.kind = PreTokenizer::Kind::kSequence;
    const JsonField steps = f.at("pretokenizers");
    steps.expect_array();
    for (size_t i = 0; i < steps.j.size(); ++i) p.steps.push_back(parse_pre_tokenizer(steps.at(i), depth + 1));
  } else if (type == "ByteLevel") {
    p.kind = PreTokenizer::Kind::kByteLevel;
    p.add_prefix_space = f.at("add_prefix_space").boolean(true);
    p.use_regex = f.at("use_regex").boolean(true);
    if (p.use_regex) p.regex = Regex::compile(kGpt2Regex, f.where);
  } else if (type == "Split") {
    p.kind = PreTokenizer::Kind::kSplit;
    const JsonField pattern = f.at("pattern");
    pattern.expect_object();
    if (!pattern.at("Regex").is_null()) p.regex = Regex::compile(pattern.at("Regex").string(), pattern.at("Regex").where);
    else if (!pattern.at("String").is_null()) p.regex = Regex::compile(quote_regex(pattern.at("String").string()), pattern.where);
    else pattern.fail("expected {\"Regex\": ...} or {\"String\": ...}, found " + JsonField::describe(pattern.j));
    p.behavior = parse_behavior(f.at("behavior"));
    p.invert = f.at("invert").boolean(false);
  } else if (type == "Digits") {
    // tokenizers' Digits: numeric characters (Rust char::is_numeric = \p{N}) one by one, or in runs.
    p.kind = PreTokenizer::Kind::kSplit;
    const bool individual = f.at("individual_digits").boolean(false);
    p.regex = Regex::compile(individual ? R"(\p{N})" : R"(\p{N}+)", f.where);
    p.behavior = individual ? SplitBehavior::kIsolated : SplitBehavior::kContiguous;
  } else {
    f.at("type").fail("pre-tokenizer type \"" + type +
                      "\" is not supported (supported: ByteLevel, Split, Digits, Sequence)");
  }
  return p;
}

void parse_normalizer(const JsonField& f, bool* nfc, int depth = 0) {
  if (f.is_null()) return;
  check_nesting(f, depth);
  const std::string type = f.type();
  if (type == "NFC") {
    *nfc = true;
  } else if (type == "Sequence") {
    const JsonField steps = f.at("normalizers");
    steps.expect_array();
    for (size_t i = 0; i < steps.j.size(); ++i) parse_normalizer(steps.at(i), nfc, depth + 1);
  } else {
    f.at("type").fail("normalizer type \"" + type + "\" is not supported (supported: NFC, Sequence, none)");
  }
}

void parse_decoder(const JsonField& f, bool* byte_level, int depth = 0) {
  if (f.is_null()) return;
  check_nesting(f, depth);
  const std::string type = f.type();
  if (type == "ByteLevel") {
    *byte_level = true;
  } else if (type == "Sequence") {
    const JsonField steps = f.at("decoders");
    steps.expect_array();
    for (size_t i = 0; i < steps.j.size(); ++i) parse_decoder(steps.at(i), byte_level, depth + 1);
  } else {
    f.at("type").fail("decoder type \"" + type + "\" is not supported (supported: ByteLevel, Sequence, none)");
  }
}

void parse_post_processor(const JsonField& f, BpeTokenizer::Model* m, int depth = 0) {
  if (f.is_null()) return;
  check_nesting(f, depth);
  const std::string type = f.type();
  const int32_t n = int32_t(m->tokens.size());
  if (type == "ByteLevel") return;  // only moves offsets, which this tokenizer does not report
  if (type == "Sequence") {
    const JsonField steps = f.at("processors");
    steps.expect_array();
    for (size_t i = 0; i < steps.j.size(); ++i) parse_post_processor(steps.at(i), m, depth + 1);
    return;
  }
  if (type != "TemplateProcessing")
    f.at("type").fail("post-processor type \"" + type +
                      "\" is not supported (supported: TemplateProcessing, ByteLevel, Sequence, none)");
  // single: [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}}, ...]; special_tokens: name -> ids
  const JsonField single = f.at("single"), specials = f.at("special_tokens");
  single.expect_array();
  if (!specials.is_null()) specials.expect_object();
  m->prefix_ids.clear();
  m->suffix_ids.clear();
  bool seen_a = false;
  for (size_t i = 0; i < single.j.size(); ++i) {
    const JsonField item = single.at(i);
    item.expect_object();
    if (!item.at("Sequence").is_null()) {
      const std::string id = item.at("Sequence").at("id").string();
      if (id != "A" || seen_a) item.fail("expected $A once in the single template, found $" + id);
      seen_a = true;
    } else if (!item.at("SpecialToken").is_null()) {
      const JsonField name = item.at("SpecialToken").at("id");
      const JsonField def = specials.at(name.string());
      if (def.is_null()) name.fail("special token \"" + name.string() + "\" is not in special_tokens");
      const JsonField ids = def.at("ids");
      ids.expect_array();
      for (size_t k = 0; k < ids.j.size(); ++k) (seen_a ? m->suffix_ids : m->prefix_ids).push_back(ids.at(k).id(n));
    } else {
      item.fail("expected a SpecialToken or a Sequence, found " + JsonField::describe(item.j));
    }
  }
  if (!seen_a) single.fail("the single template has no $A");
  if (!m->prefix_ids.empty()) m->bos_id = m->prefix_ids.front();
  if (!m->suffix_ids.empty()) m->eos_id = m->suffix_ids.back();
}

void parse_model(const JsonField& f, BpeTokenizer::Model* m) {
  const std::string type = f.type();
  if (type != "BPE") f.at("type").fail("model type \"" + type + "\" is not supported (only BPE)");
  // Options that change the result and are not implemented: refused rather than ignored.
  if (!f.at("dropout").is_null() && !(f.at("dropout").j.is_number() && f.at("dropout").j.get<double>() == 0.0))
    f.at("dropout").fail("BPE dropout is not supported (found " + JsonField::describe(f.at("dropout").j) + ")");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const JsonField v = f.at(key);
    if (!v.is_null() && !(v.j.is_string() && v.j.get<std::string>().empty()))
      v.fail(std::string(key) + " is not supported (found " + JsonField::describe(v.j) + ")");
  }
  const JsonField vocab = f.at("vocab");
  vocab.expect_object();
  const size_t n = vocab.j.size();
  if (n == 0) vocab.fail("the vocabulary is empty");
  m->tokens.assign(n, std::string());
  std::vector<bool> seen(n, false);
  for (auto it = vocab.j.begin(); it != vocab.j.end(); ++it) {
    const JsonField idf{it.value(), vocab.where + "[" + json(it.key()).dump() + "]"};
    const int32_t id = idf.id(int32_t(n));  // ids must be 0..n-1, each once
    if (seen[size_t(id)]) idf.fail("token id " + std::to_string(id) + " is given to two tokens");
    seen[size_t(id)] = true;
    m->tokens[size_t(id)] = it.key();
    m->vocab_ids.emplace(it.key(), id);
  }
  const JsonField merges = f.at("merges");
  if (!merges.is_null()) {
    merges.expect_array();
    m->merges.reserve(merges.j.size());
    for (size_t i = 0; i < merges.j.size(); ++i) {
      const JsonField mf = merges.at(i);
      std::string a, b;
      if (mf.j.is_string()) {  // "a b" (tokenizers < 0.20)
        const std::string s = mf.j.get<std::string>();
        const size_t sp = s.find(' ');
        if (sp == std::string::npos || sp == 0 || sp + 1 >= s.size() || s.find(' ', sp + 1) != std::string::npos)
          mf.fail("expected \"left right\" (two tokens, one space), found " + json(s).dump());
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (mf.j.is_array() && mf.j.size() == 2) {  // ["a", "b"] (tokenizers >= 0.20)
        a = mf.at(0).string();
        b = mf.at(1).string();
      } else {
        mf.fail("expected \"left right\" or [\"left\", \"right\"], found " + JsonField::describe(mf.j));
      }
      m->add_merge(int32_t(i), a, b, merges.where);
    }
  }
  m->ignore_merges = f.at("ignore_merges").boolean(false);
  m->fuse_unk = f.at("fuse_unk").boolean(false);
  m->byte_fallback = f.at("byte_fallback").boolean(false);
  const JsonField unk = f.at("unk_token");
  if (!unk.is_null()) {
    auto it = m->vocab_ids.find(unk.string());
    if (it == m->vocab_ids.end()) unk.fail("unk_token " + json(unk.string()).dump() + " is not in the vocabulary");
    m->unk_id = it->second;
  }
}

void parse_added_tokens(const JsonField& f, BpeTokenizer::Model* m) {
  if (f.is_null()) return;
  f.expect_array();
  for (size_t i = 0; i < f.j.size(); ++i) {
    const JsonField t = f.at(i);
    t.expect_object();
    BpeTokenizer::Model::AddedToken a;
    a.content = t.at("content").string();
    if (a.content.empty()) t.at("content").fail("an added token cannot be empty");
    const int64_t id64 = t.at("id").id(-1);
    // An added token normally has a vocabulary id; one past the end extends the vocabulary (tokenizers
    // allows it), but only contiguously, so ids stay dense.
    if (id64 > int64_t(m->tokens.size())) t.at("id").fail("id " + std::to_string(id64) + " leaves a gap after the vocabulary (" + std::to_string(m->tokens.size()) + " tokens)");
    a.id = int32_t(id64);
    if (size_t(a.id) == m->tokens.size()) {
      m->tokens.push_back(a.content);
    } else if (m->tokens[size_t(a.id)] != a.content) {
      // tokenizers lets the added token's content stand for the id (its id_to_token gives the content)
      m->tokens[size_t(a.id)] = a.content;
    }
    m->added_ids[a.content] = a.id;
    a.single_word = t.at("single_word").boolean(false);
    a.lstrip = t.at("lstrip").boolean(false);
    a.rstrip = t.at("rstrip").boolean(false);
    a.special = t.at("special").boolean(false);
    a.normalized = t.at("normalized").boolean(!a.special);
    m->added.push_back(a);
  }
}

}  // namespace

BpeTokenizer BpeTokenizer::load(const std::string& path) { return from_json(read_file(path), path); }


BpeTokenizer BpeTokenizer::from_json(const std::string& text, const std::string& name) {
  const json j = parse_json_input(text, name);
  const JsonField root{j, name};
  if (!j.is_object()) root.fail("expected a JSON object (a tokenizers tokenizer.json), found " + JsonField::describe(j));
  auto m = std::make_shared<Model>();
  m->path = name;
  m->file_sha256 = sha256_hex(text);
  if (root.at("model").is_null()) root.fail("no \"model\"");
  parse_model(root.at("model"), m.get());
  parse_added_tokens(root.at("added_tokens"), m.get());
  parse_normalizer(root.at("normalizer"), &m->nfc);
  if (!root.at("pre_tokenizer").is_null()) {
    m->pre = parse_pre_tokenizer(root.at("pre_tokenizer"));
    m->has_pre_tokenizer = true;
  }
  parse_post_processor(root.at("post_processor"), m.get());
  parse_decoder(root.at("decoder"), &m->byte_level_decoder);
  const JsonField trunc = root.at("truncation"), pad = root.at("padding");
  if (!trunc.is_null()) trunc.fail("truncation is not supported (expected null)");
  if (!pad.is_null()) pad.fail("padding is not supported (expected null)");
  m->special.assign(m->tokens.size(), false);
  for (const auto& a : m->added) m->special[size_t(a.id)] = a.special;
  return BpeTokenizer(std::move(m));
}

// ------------------------------------------------------------------------------------------------------
// Building from a GGUF's metadata, with llama.cpp's pre-tokenizer for its `pre` name

namespace {

// llama.cpp's regexes (src/llama-vocab.cpp, llm_tokenizer_bpe), applied one after the other, each
// splitting every piece into matches and the text between them.
std::vector<std::string> llama_cpp_regexes(const std::string& pre, bool* ignore_merges) {
  const std::string gpt2 = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))";
  if (pre == "smollm") return {R"(\p{N})", gpt2};  // LLAMA_VOCAB_PRE_TYPE_SMOLLM: digits one by one first
  if (pre == "gpt-2") return {gpt2};               // LLAMA_VOCAB_PRE_TYPE_GPT2
  if (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3") {  // LLAMA_VOCAB_PRE_TYPE_LLAMA3
    *ignore_merges = true;
    return {R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"};
  }
  if (pre == "qwen2")  // LLAMA_VOCAB_PRE_TYPE_QWEN2
    return {R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"};
  if (pre == "default" || pre.empty())  // LLAMA_VOCAB_PRE_TYPE_DEFAULT
    return {R"([\p{P}\$\+<=>\^~\|]+)", gpt2, R"(\p{N}+)", R"([0-9][0-9][0-9])"};
  return {};
}

}  // namespace

BpeTokenizer BpeTokenizer::from_gguf(const GgufVocab& v, const std::string& name) {
  auto fail = [&](const std::string& key, const std::string& what) {
    throw InputError(name + ": tokenizer.ggml." + key + ": " + what);
  };
  auto m = std::make_shared<Model>();
  m->path = name;
  m->file_sha256 = v.file_sha256;
  const size_t n = v.tokens.size();
  if (n == 0) fail("tokens", "the vocabulary is empty");
  if (n >= size_t(1) << 31) fail("tokens", "too many tokens");
  if (!v.token_types.empty() && v.token_types.size() != n)
    fail("token_type", std::to_string(v.token_types.size()) + " types for " + std::to_string(n) + " tokens");
  m->tokens = v.tokens;
  for (size_t i = 0; i < n; ++i) m->vocab_ids.emplace(v.tokens[i], int32_t(i));
  bool ignore_merges = false;
  const std::vector<std::string> regexes = llama_cpp_regexes(v.pre, &ignore_merges);
  if (regexes.empty())
    fail("pre", "\"" + v.pre + "\" is not supported (supported: smollm, llama-bpe, llama3, llama-v3, qwen2, gpt-2, default)");
  m->ignore_merges = ignore_merges;
  m->merges.reserve(v.merges.size());
  for (size_t i = 0; i < v.merges.size(); ++i) {
    const std::string& s = v.merges[i];
    const size_t sp = s.find(' ', 1);  // llama.cpp splits at the first space after the first character
    if (sp == std::string::npos || sp + 1 >= s.size())
      fail("merges", "entry " + std::to_string(i) + " " + quoted(s) + " is not \"left right\"");
    m->add_merge(int32_t(i), s.substr(0, sp), s.substr(sp + 1), name + ": tokenizer.ggml.merges");
  }
  auto check_id = [&](const char* key, int32_t id) {
    if (id < -1 || id >= int32_t(n)) fail(key, "token id " + std::to_string(id) + " is outside the vocabulary");
  };
  check_id("bos_token_id", v.bos_id);
  check_id("eos_token_id", v.eos_id);
  check_id("unknown_token_id", v.unk_id);
  m->bos_id = v.bos_id;
  m->eos_id = v.eos_id;
  if (v.add_bos) {
    if (v.bos_id < 0) fail("add_bos_token", "is true but there is no bos_token_id");
    m->prefix_ids = {v.bos_id};
  }
  if (v.add_eos) {
    if (v.eos_id < 0) fail("add_eos_token", "is true but there is no eos_token_id");
    m->suffix_ids = {v.eos_id};
  }
  m->special.assign(n, false);
  // Control (3) and user-defined (4) tokens are matched in the text before pre-tokenization (llama.cpp's
  // tokenizer_st_partition with parse_special); control ones are dropped by skip_special_tokens.
  for (size_t i = 0; i < v.token_types.size(); ++i) {
    const int32_t t = v.token_types[i];
    if (t < 0 || t > 6) fail("token_type", "entry " + std::to_string(i) + " is " + std::to_string(t) + " (expected 0..6)");
    if ((t == 3 || t == 4) && !v.tokens[i].empty()) {
      Model::AddedToken a;
      a.id = int32_t(i);
      a.content = v.tokens[i];
      a.special = t == 3;
      m->added.push_back(a);
      m->special[i] = a.special;
    }
  }
  PreTokenizer seq;
  seq.kind = PreTokenizer::Kind::kSequence;
  for (const auto& r : regexes) {
    PreTokenizer p;
    p.kind = PreTokenizer::Kind::kSplit;
    p.regex = Regex::compile(r, name + ": the pre-tokenizer for tokenizer.ggml.pre = " + v.pre);
    seq.steps.push_back(std::move(p));
  }
  PreTokenizer bytes;
  bytes.kind = PreTokenizer::Kind::kByteLevel;
  bytes.use_regex = false;
  seq.steps.push_back(std::move(bytes));
  m->pre = std::move(seq);
  m->has_pre_tokenizer = true;
  m->byte_level_decoder = true;
  return BpeTokenizer(std::move(m));
}

// ------------------------------------------------------------------------------------------------------
// Encoding

namespace {

std::string nfc(const std::string& s) {
  utf8proc_uint8_t* out = nullptr;
  const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()), utf8proc_ssize_t(s.size()),
                                          &out, utf8proc_option_t(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (n < 0) throw InputError(std::string("NFC normalization failed: ") + utf8proc_errmsg(n));
  std::string r(reinterpret_cast<const char*>(out), size_t(n));
  std::free(out);
  return r;
}

struct Segment {
  std::string text;
  int32_t added_id;  // -1: text still to tokenize
};

// tokenizers' AddedVocabulary::split_with_indices: the added tokens in `text`, leftmost first and the
// longest at a position, single_word ones only between non-word characters, lstrip/rstrip taking the
// whitespace beside them.
void split_added(const std::vector<const BpeTokenizer::Model::AddedToken*>& tokens, const std::string& text,
                 std::vector<Segment>* out) {
  if (tokens.empty()) {
    if (!text.empty()) out->push_back({text, -1});
    return;
  }
  // The candidates by first byte, so a position costs only the tokens that can start there.
  std::vector<const BpeTokenizer::Model::AddedToken*> by_byte[256];
  for (const auto* t : tokens) by_byte[static_cast<unsigned char>(t->content[0])].push_back(t);
  size_t prev = 0;  // end of the last match
  size_t pos = 0;
  while (pos < text.size()) {
    const BpeTokenizer::Model::AddedToken* best = nullptr;
    for (const auto* t : by_byte[static_cast<unsigned char>(text[pos])])
      if (text.compare(pos, t->content.size(), t->content) == 0 && (!best || t->content.size() > best->content.size()))
        best = t;
    if (!best) {
      ++pos;
      continue;
    }
    size_t start = pos, stop = pos + best->content.size();
    if (best->single_word) {
      const bool start_ok = start == 0 || !is_word_char(last_char(std::string_view(text).substr(0, start)));
      const bool stop_ok = stop == text.size() || !is_word_char(first_char(std::string_view(text).substr(stop)));
      if (!start_ok || !stop_ok) {
        pos = stop;  // the automaton has consumed this match; the search goes on after it
        continue;
      }
    }
    if (best->lstrip) {
      while (start > prev) {
        size_t k = start - 1;
        while (k > prev && (static_cast<unsigned char>(text[k]) & 0xC0) == 0x80) --k;
        uint32_t cp = 0;
        utf8_char(text, k, &cp);
        if (!is_whitespace(cp)) break;
        start = k;
      }
    }
    if (best->rstrip) {
      while (stop < text.size()) {
        uint32_t cp = 0;
        const size_t n = utf8_char(text, stop, &cp);
        if (!n || !is_whitespace(cp)) break;
        stop += n;
      }
    }
    if (start > prev) out->push_back({text.substr(prev, start - prev), -1});
    out->push_back({best->content, best->id});
    prev = pos = stop;
  }
  if (prev < text.size()) out->push_back({text.substr(prev), -1});
}

}  // namespace

std::vector<int32_t> BpeTokenizer::encode(std::string_view raw, bool add_special_tokens) const {
  const Model& m = *m_;
  const std::string text = utf8_lossy(raw);
  std::vector<const Model::AddedToken*> raw_tokens, normalized_tokens;
  for (const auto& a : m.added) (a.normalized && m.nfc ? normalized_tokens : raw_tokens).push_back(&a);
  // Without a normalizer, "normalized" tokens match the raw text alike: one pass over all of them keeps
  // longest-first across both kinds.
  std::vector<Segment> first, segments;
  split_added(raw_tokens, text, &first);
  for (auto& s : first) {
    if (s.added_id >= 0) {
      segments.push_back(std::move(s));
      continue;
    }
    split_added(normalized_tokens, m.nfc ? nfc(s.text) : s.text, &segments);
  }
  std::vector<int32_t> ids;
  if (add_special_tokens) ids = m.prefix_ids;
  ids.reserve(ids.size() + text.size() / 3);
  for (const Segment& s : segments) {
    if (s.added_id >= 0) {
      ids.push_back(s.added_id);
      continue;
    }
    std::vector<std::string> pieces{s.text};
    if (m.has_pre_tokenizer) pre_tokenize(m.pre, &pieces);
    for (const auto& p : pieces) m.encode_piece(p, &ids);
  }
  if (add_special_tokens) ids.insert(ids.end(), m.suffix_ids.begin(), m.suffix_ids.end());
  return ids;
}

// ------------------------------------------------------------------------------------------------------
// Decoding

namespace {

// tokenizers' ByteLevel decoder on one token: its characters as bytes when all are in the byte alphabet,
// else the token's own UTF-8 (an added token such as "hello world").
void append_token_bytes(const std::string& token, std::string* out) {
  const ByteAlphabet& a = byte_alphabet();
  std::string bytes;
  for (size_t i = 0; i < token.size();) {
    uint32_t cp;
    const size_t n = utf8_char(token, i, &cp);
    auto it = n ? a.char_to_byte.find(cp) : a.char_to_byte.end();
    if (it == a.char_to_byte.end()) {
      out->append(token);
      return;
    }
    bytes += char(it->second);
    i += n;
  }
  out->append(bytes);
}

}  // namespace

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  const Model& m = *m_;
  std::string bytes;
  bool first = true;
  for (int32_t id : ids) {
    const std::string& t = token(id);  // InputError on a bad id
    if (skip_special_tokens && m.special[size_t(id)]) continue;
    if (m.byte_level_decoder) {
      append_token_bytes(t, &bytes);
    } else {
      if (!first) bytes += ' ';
      bytes += t;
    }
    first = false;
  }
  return utf8_lossy(bytes);
}

std::string BpeTokenizer::token_bytes(int32_t id) const {
  const std::string& t = token(id);
  if (m_->special[size_t(id)]) return "";
  if (!m_->byte_level_decoder) return t;
  std::string out;
  append_token_bytes(t, &out);
  return out;
}

int32_t BpeTokenizer::vocab_size() const { return int32_t(m_->tokens.size()); }

const std::string& BpeTokenizer::token(int32_t id) const {
  if (id < 0 || id >= vocab_size())
    throw InputError(m_->path + ": token id " + std::to_string(id) + " is outside the vocabulary (" +
                     std::to_string(vocab_size()) + " tokens)");
  return m_->tokens[size_t(id)];
}

int32_t BpeTokenizer::token_to_id(std::string_view t) const {
  const std::string key(t);
  if (auto it = m_->added_ids.find(key); it != m_->added_ids.end()) return it->second;
  auto it = m_->vocab_ids.find(key);
  return it == m_->vocab_ids.end() ? -1 : it->second;
}

bool BpeTokenizer::is_special(int32_t id) const { return id >= 0 && id < vocab_size() && m_->special[size_t(id)]; }
int32_t BpeTokenizer::bos_id() const { return m_->bos_id; }
int32_t BpeTokenizer::eos_id() const { return m_->eos_id; }
bool BpeTokenizer::adds_bos() const { return !m_->prefix_ids.empty(); }

void BpeTokenizer::set_bos_eos(const std::string& bos_token, const std::string& eos_token) {
  auto lookup = [&](const std::string& t, const char* what) {
    const int32_t id = token_to_id(t);
    if (id < 0) throw InputError(m_->path + ": the " + std::string(what) + " token " + quoted(t) + " is not in the vocabulary");
    return id;
  };
  if (!bos_token.empty()) m_->bos_id = lookup(bos_token, "BOS");
  if (!eos_token.empty()) m_->eos_id = lookup(eos_token, "EOS");
}

const std::string& BpeTokenizer::file_sha256() const { return m_->file_sha256; }
const std::string& BpeTokenizer::path() const { return m_->path; }

}  // namespace layerprune
