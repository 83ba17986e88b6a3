// Shared by the tokenizer tests (test_tokenizer: SentencePiece; test_bpe_tokenizer: byte-level BPE): the
// golden files' samples (text or hex for bytes that are not UTF-8) and readable failure messages.
#pragma once
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace layerprune::testing {

// A string for a failure message: printable ASCII kept, the rest escaped, long strings cut.
inline std::string show(const std::string& s, size_t max_len = 160) {
  std::string out;
  for (size_t i = 0; i < s.size() && out.size() < max_len; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\\') {
      out += "\\\\";
    } else if (c >= 0x20 && c < 0x7F) {
      out += char(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  if (out.size() >= max_len) out += "...";
  return "\"" + out + "\"";
}

inline std::string show_ids(const std::vector<int32_t>& ids, size_t from = 0, size_t n = 12) {
  std::ostringstream s;
  s << "[";
  if (from > 0) s << "... ";
  for (size_t i = from; i < ids.size() && i < from + n; ++i) s << (i > from ? ", " : "") << ids[i];
  if (ids.size() > from + n) s << ", ...";
  s << "] (" << ids.size() << " ids)";
  return s.str();
}

inline std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out += char(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}

inline std::string sample_text(const nlohmann::json& s) {
  return s.contains("text_hex") ? from_hex(s["text_hex"].get<std::string>()) : s["text"].get<std::string>();
}

}  // namespace layerprune::testing
