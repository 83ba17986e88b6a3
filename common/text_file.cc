#include "common/text_file.h"

#include <cstdio>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/error.h"

namespace layerprune {

namespace {
bool is_jsonl(const std::string& path) {
  auto ends = [&](const std::string& s) {
    return path.size() >= s.size() && path.compare(path.size() - s.size(), s.size(), s) == 0;
  };
  return ends(".jsonl") || ends(".json");
}
}  // namespace

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path + ": cannot open file");
  std::ostringstream s;
  s << in.rdbuf();
  if (in.bad()) throw InputError(path + ": read error");
  return s.str();
}

void write_file(const std::string& path, const std::string& bytes) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw InputError(path + ": cannot open for writing");
    out.write(bytes.data(), std::streamsize(bytes.size()));
    if (!out) throw std::runtime_error(path + ": write failed (disk full?)");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw std::runtime_error(path + ": cannot rename " + tmp);
}

std::vector<std::string> read_documents(const std::string& path) {
  std::string all = read_file(path);
  std::vector<std::string> docs;
  if (is_jsonl(path)) {
    std::istringstream in(all);
    std::string line;
    int lineno = 0;
    while (std::getline(in, line)) {
      ++lineno;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception& e) {  // parse_error, and out_of_range 406 for a number like 1e999
        throw InputError(path + ":" + std::to_string(lineno) + ": invalid JSON (" + e.what() + ")");
      }
      if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
        throw InputError(path + ":" + std::to_string(lineno) + ": expected an object with a string field \"text\"");
      docs.push_back(j["text"].get<std::string>());
    }
  } else {
    // Paragraphs: runs of non-blank lines.
    std::istringstream in(all);
    std::string line, cur;
    while (std::getline(in, line)) {
      bool blank = line.find_first_not_of(" \t\r") == std::string::npos;
      if (blank) {
        if (!cur.empty()) docs.push_back(cur);
        cur.clear();
      } else {
        if (!cur.empty()) cur += "\n";
        cur += line;
      }
    }
    if (!cur.empty()) docs.push_back(cur);
  }
  if (docs.empty()) throw InputError(path + ": no documents (the file is empty)");
  return docs;
}

std::string read_text_stream(const std::string& path) {
  if (!is_jsonl(path)) {
    std::string s = read_file(path);
    if (s.empty()) throw InputError(path + ": the file is empty");
    return s;
  }
  std::string out;
  for (const auto& d : read_documents(path)) {
    if (!out.empty()) out += "\n\n";
    out += d;
  }
  return out;
}

}  // namespace layerprune
