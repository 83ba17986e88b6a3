#include "evaluation/eval_data.h"

#include <algorithm>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "common/csv.h"
#include "common/error.h"
#include "common/text_file.h"

namespace layerprune {

namespace {

std::string trim_ascii(const std::string& s) {
  size_t b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t") - b + 1);
}

// 0..3 for "A".."D" or "0".."3", else -1.
int answer_index(const std::string& field) {
  std::string a = trim_ascii(field);
  if (a.size() != 1) return -1;
  if (a[0] >= 'A' && a[0] <= 'D') return a[0] - 'A';
  if (a[0] >= '0' && a[0] <= '3') return a[0] - '0';
  return -1;
}

}  // namespace

std::vector<MmluQuestion> read_mmlu_csv(const std::string& path) {
  std::vector<CsvRecord> records = parse_csv(read_file(path), path);
  std::vector<MmluQuestion> out;
  size_t first = 0;
  if (!records.empty() && records[0].fields.size() == 6) {
    const std::string& last = records[0].fields.back();
    if (answer_index(last) < 0 && trim_ascii(last).size() > 1) first = 1;  // a header row
  }
  for (size_t r = first; r < records.size(); ++r) {
    const CsvRecord& rec = records[r];
    std::string where = path + ":" + std::to_string(rec.line) + ": ";
    if (rec.fields.size() != 6)
      throw InputError(where + "expected 6 fields (question, A, B, C, D, answer), found " +
                       std::to_string(rec.fields.size()));
    int a = answer_index(rec.fields[5]);
    if (a < 0)
      throw InputError(where + "answer '" + rec.fields[5] + "' is not one of A, B, C, D (or 0-3 in the export layout)");
    MmluQuestion q;
    q.question = rec.fields[0];
    for (int c = 0; c < 4; ++c) q.choices[c] = rec.fields[1 + c];
    q.answer = a;
    q.line = rec.line;
    out.push_back(std::move(q));
  }
  return out;
}

std::vector<MmluSubject> read_mmlu(const std::string& root, const MmluReadOptions& o) {
  namespace fs = std::filesystem;
  if (o.split != "test" && o.split != "val")
    throw InputError("mmlu: split '" + o.split + "' is not test or val");
  const std::string eval_dir = root + "/" + o.split, dev_dir = root + "/dev";
  const std::string suffix = "_" + o.split + ".csv";
  if (!fs::is_directory(eval_dir))
    throw InputError(root + ": not an MMLU directory (expected " + o.split + "/<subject>" + suffix + " files)");
  std::vector<std::string> names = o.subjects;
  if (names.empty()) {
    for (const auto& e : fs::directory_iterator(eval_dir)) {
      std::string f = e.path().filename().string();
      if (f.size() > suffix.size() && f.compare(f.size() - suffix.size(), suffix.size(), suffix) == 0)
        names.push_back(f.substr(0, f.size() - suffix.size()));
    }
    if (names.empty()) throw InputError(eval_dir + ": no <subject>" + suffix + " files");
    std::sort(names.begin(), names.end());
  }
  std::vector<MmluSubject> subjects;
  for (size_t i = 0; i < names.size(); ++i)
    if (std::find(names.begin(), names.begin() + std::ptrdiff_t(i), names[i]) != names.begin() + std::ptrdiff_t(i))
      throw InputError("mmlu: subject '" + names[i] + "' is asked for twice");
  for (const std::string& name : names) {
    MmluSubject s;
    s.name = name;
    s.eval_file = eval_dir + "/" + name + suffix;
    if (!fs::exists(s.eval_file))
      throw InputError("mmlu: subject '" + name + "' has no " + o.split + " file (" + s.eval_file + ")");
    s.eval = read_mmlu_csv(s.eval_file);
    if (s.eval.empty()) throw InputError(s.eval_file + ": no questions for subject '" + name + "' (empty file)");
    if (o.limit > 0 && int64_t(s.eval.size()) > o.limit) s.eval.resize(size_t(o.limit));
    if (o.shots > 0) {
      s.dev_file = dev_dir + "/" + name + "_dev.csv";
      if (!fs::exists(s.dev_file))
        throw InputError("mmlu: subject '" + name + "' has no dev file (" + s.dev_file + ") for " +
                         std::to_string(o.shots) + "-shot prompts");
      s.dev = read_mmlu_csv(s.dev_file);
      if (int64_t(s.dev.size()) < o.shots)
        throw InputError("mmlu: subject '" + name + "' has " + std::to_string(s.dev.size()) + " dev questions in " +
                         s.dev_file + ", fewer than the " + std::to_string(o.shots) + " shots asked for");
    }
    subjects.push_back(std::move(s));
  }
  return subjects;
}

std::vector<BoolqQuestion> read_boolq(const std::string& path, int64_t limit) {
  std::string all = read_file(path);
  std::vector<BoolqQuestion> out;
  size_t pos = 0;
  int64_t lineno = 0;
  while (pos < all.size() && (limit <= 0 || int64_t(out.size()) < limit)) {
    size_t end = all.find('\n', pos);
    if (end == std::string::npos) end = all.size();
    std::string line = all.substr(pos, end - pos);
    pos = end + 1;
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(lineno) + ": ";
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {  // parse_error, and out_of_range 406 for a number like 1e999
      throw InputError(where + "invalid JSON (" + e.what() + ")");
    }
    if (!j.is_object()) throw InputError(where + "expected a JSON object");
    BoolqQuestion q;
    q.line = lineno;
    for (const char* key : {"question", "passage"}) {
      if (!j.contains(key) || !j[key].is_string())
        throw InputError(where + "expected a string field \"" + key + "\"");
    }
    q.question = j["question"].get<std::string>();
    q.passage = j["passage"].get<std::string>();
    const char* key = j.contains("answer") ? "answer" : "label";
    if (!j.contains(key)) throw InputError(where + "no \"answer\" (Google layout) or \"label\" (SuperGLUE layout) field");
    const nlohmann::json& v = j[key];
    if (v.is_boolean()) q.answer = v.get<bool>();
    else if (v.is_string() && (v == "true" || v == "false")) q.answer = v == "true";
    else if (v.is_number_integer() && (v == 0 || v == 1)) q.answer = v == 1;
    else {
      // An array or object is named, not printed: dump() recurses, and one nested 30000 deep overflows the stack.
      const std::string found = v.is_structured() ? "an " + std::string(v.type_name()) : v.dump();
      throw InputError(where + "\"" + key + "\" is " + found +
                       "; expected true/false (a JSON boolean, \"true\"/\"false\", or 1/0)");
    }
    out.push_back(std::move(q));
  }
  if (out.empty()) throw InputError(path + ": no BoolQ questions (the file is empty)");
  return out;
}

}  // namespace layerprune
