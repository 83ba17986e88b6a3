#include "experiment/experiment.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "common/data_locator.h"
#include "common/device_name.h"
#include "common/error.h"
#include "common/text_file.h"
#include "formats/gguf.h"
#include "formats/gguf_llama.h"
#include "formats/llama_config.h"
#include "experiment/pruning.h"

namespace layerprune {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const std::vector<std::string> kStrategies = {"similarity", "simple", "block_influence"};
const std::vector<std::string> kFormats = {"hf", "llama2c", "gguf"};
const std::vector<std::string> kDtypes = {"float32", "bfloat16"};
const std::vector<std::string> kQuants = {"none", "nf4"};
// model/lora.h's projection names (that header needs LibTorch; the coordinator must not).
const std::vector<std::string> kLoraTargets = {"q_proj",    "k_proj",  "v_proj",    "o_proj",
                                               "gate_proj", "up_proj", "down_proj", "all-linear"};

std::string join(const std::vector<std::string>& items, const std::string& sep = ", ") {
  std::string out;
  for (const std::string& s : items) out += (out.empty() ? "" : sep) + s;
  return out;
}

bool contains(const std::vector<std::string>& items, const std::string& s) {
  return std::find(items.begin(), items.end(), s) != items.end();
}

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// Names become parts of grid keys ("model/n=2/similarity/qlora/seed=0"): no separators, no spaces.
bool valid_name(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return false;
  return true;
}

// Levenshtein distance, for "did you mean" on a misspelt key.
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// ---------------------------------------------------------------------------------------------------------
// Reading the YAML: every value is read through a Field, which knows where it is (file:line:column, from
// yaml-cpp's 0-based Mark) and its path in the schema ("models[0].tp"), so every message can say both.

struct Field {
  YAML::Node key;    // null for list elements and the document
  YAML::Node value;
  std::string path;  // "models[0].tp"
};

class Reader {
 public:
  explicit Reader(std::string source) : source_(source.empty() ? "<yaml>" : std::move(source)) {}

  std::string where(const YAML::Mark& m) const {
    if (m.is_null() || m.line < 0) return source_ + ":1:1";
    return source_ + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1);
  }
  // A null value's mark points at the next token (often the next line), and a block map's at its first key:
  // report the key that names them instead ("calibration:" for "calibration: missing 'data'").
  std::string where(const Field& f) const {
    const bool keyed = f.key.IsDefined() && !f.key.IsNull();
    if (keyed && (!f.value.IsDefined() || f.value.IsNull() || f.value.IsMap())) return where(f.key.Mark());
    return where(f.value.Mark());
  }
  [[noreturn]] void fail(const Field& f, const std::string& message) const {
    throw InputError(where(f) + ": " + f.path + ": " + message);
  }

  // What the user wrote, for "expected X, found Y".
  static std::string found(const YAML::Node& n) {
    if (!n.IsDefined() || n.IsNull()) return "nothing";
    if (n.IsSequence()) return "a list";
    if (n.IsMap()) return "a map";
    if (n.Tag() == "!") return "the string \"" + n.Scalar() + "\"";
    return "'" + n.Scalar() + "'";
  }

  // The fields of a map, in order; unknown and repeated keys are errors. `known` lists every key allowed.
  std::vector<Field> map_fields(const Field& f, const std::vector<std::string>& known) const {
    if (!f.value.IsMap()) fail(f, "expected a map with keys " + join(known) + ", found " + found(f.value));
    std::vector<Field> out;
    std::set<std::string> seen;
    for (auto it = f.value.begin(); it != f.value.end(); ++it) {
      Field k{YAML::Node(), it->first, f.path};
      if (!it->first.IsScalar()) fail(k, "expected a key name, found " + found(it->first));
      const std::string name = it->first.Scalar();
      if (!contains(known, name)) {
        std::string hint;
        size_t best = 3;  // suggest only near misses
        for (const std::string& candidate : known)
          if (const size_t d = edit_distance(name, candidate); d < best)
            best = d, hint = " (did you mean '" + candidate + "'?)";
        fail(k, "unknown key '" + name + "'" + hint + "; known keys: " + join(known));
      }
      if (!seen.insert(name).second) fail(k, "key '" + name + "' appears twice");
      out.push_back({it->first, it->second, f.path.empty() ? name : f.path + "." + name});
    }
    return out;
  }

  std::vector<Field> list_items(const Field& f, const std::string& of, bool allow_empty = false) const {
    if (!f.value.IsSequence()) fail(f, "expected a list of " + of + ", found " + found(f.value));
    if (f.value.size() == 0 && !allow_empty) fail(f, "expected a non-empty list of " + of + ", found []");
    std::vector<Field> out;
    for (size_t i = 0; i < f.value.size(); ++i)
      out.push_back({YAML::Node(), f.value[i], f.path + "[" + std::to_string(i) + "]"});
    return out;
  }

  std::string string(const Field& f, const std::string& what) const {
    if (!f.value.IsScalar()) fail(f, "expected " + what + ", found " + found(f.value));
    require_utf8(f, f.value.Scalar(), what);
    return f.value.Scalar();
  }

  // Names and paths travel in the experiment's JSON, which holds UTF-8 only (nlohmann's dump() throws
  // json::type_error on other bytes, which a YAML file may hold and a ${VAR} may bring in).
  void require_utf8(const Field& f, const std::string& s, const std::string& what) const {
    try {
      (void)json(s).dump();
    } catch (const json::type_error&) {
      fail(f, "expected " + what + " in UTF-8, found bytes that are not UTF-8");
    }
  }

  std::string choice(const Field& f, const std::vector<std::string>& allowed) const {
    const std::string s = f.value.IsScalar() ? f.value.Scalar() : std::string();
    if (!f.value.IsScalar() || !contains(allowed, s))
      fail(f, "expected one of " + join(allowed) + ", found " + found(f.value));
    return s;
  }

  // true / false (YAML's plain booleans; a quoted "true" is a string).
  bool boolean(const Field& f) const {
    const std::string s = f.value.IsScalar() && f.value.Tag() != "!" ? f.value.Scalar() : std::string();
    if (s == "true") return true;
    if (s == "false") return false;
    fail(f, "expected true or false, found " + found(f.value));
    return false;
  }

  // Numbers must be plain scalars: a quoted "8" is a string, and saying so catches a YAML mistake early.
  int64_t integer(const Field& f, int64_t min) const {
    const std::string expected = "an integer >= " + std::to_string(min);
    if (!f.value.IsScalar() || f.value.Tag() == "!") fail(f, "expected " + expected + ", found " + found(f.value));
    const std::string& s = f.value.Scalar();
    size_t i = (!s.empty() && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
    bool digits = i < s.size();
    for (size_t k = i; k < s.size(); ++k) digits = digits && std::isdigit(static_cast<unsigned char>(s[k]));
    errno = 0;
    const long long v = digits ? std::strtoll(s.c_str(), nullptr, 10) : 0;
    if (!digits || errno == ERANGE) fail(f, "expected " + expected + ", found " + found(f.value));
    if (v < min) fail(f, "expected " + expected + ", found " + s);
    return v;
  }

  // A finite number in [lo, hi) (hi_inclusive: [lo, hi]).
  double real(const Field& f, double lo, double hi, bool hi_inclusive = false) const {
    std::string range = "[" + number(lo) + ", " + (std::isinf(hi) ? "inf)" : number(hi) + (hi_inclusive ? "]" : ")"));
    const std::string expected = "a number in " + range;
    if (!f.value.IsScalar() || f.value.Tag() == "!") fail(f, "expected " + expected + ", found " + found(f.value));
    const std::string& s = f.value.Scalar();
    char* end = nullptr;
    const double v = s.empty() ? 0.0 : std::strtod(s.c_str(), &end);
    if (s.empty() || *end != '\0' || !std::isfinite(v)) fail(f, "expected " + expected + ", found " + found(f.value));
    if (v < lo || v > hi || (v == hi && !hi_inclusive)) fail(f, "expected " + expected + ", found " + s);
    return v;
  }

  // [begin, end]: two numbers with 0 <= begin < end <= 1 (a part of a token stream, as fractions).
  std::pair<double, double> range(const Field& f) const {
    const std::vector<Field> items = list_items(f, "[begin, end] fractions of the text, e.g. [0.9, 1.0]");
    if (items.size() != 2) fail(f, "expected [begin, end] (two fractions), found " + std::to_string(items.size()) + " numbers");
    const double b = real(items[0], 0.0, 1.0), e = real(items[1], 0.0, 1.0, /*hi_inclusive=*/true);
    if (e <= b) fail(f, "expected begin < end, found [" + number(b) + ", " + number(e) + "]");
    return {b, e};
  }

  // A path: ${VAR} expanded from the environment, then a relative path resolved against the YAML's directory.
  std::string path(const Field& f) const {
    std::string raw = string(f, "a path");
    if (raw.empty()) fail(f, "expected a path, found an empty string");
    std::string out;
    for (size_t i = 0; i < raw.size();) {
      if (raw.compare(i, 2, "${") != 0) {
        out += raw[i++];
        continue;
      }
      const size_t close = raw.find('}', i);
      if (close == std::string::npos) fail(f, "unterminated '${' in \"" + raw + "\" (write ${NAME})");
      const std::string var = raw.substr(i + 2, close - i - 2);
      out += environment(f, var);
      i = close + 1;
    }
    require_utf8(f, out, "a path");
    fs::path p(out);
    if (p.is_relative()) p = base_dir() / p;
    return p.lexically_normal().string();
  }

  const std::string& source() const { return source_; }

 private:
  std::string environment(const Field& f, const std::string& var) const {
    if (var.empty()) fail(f, "empty variable name '${}'");
    if (const char* v = std::getenv(var.c_str()); v && *v) return v;
    // The data mirror has a default: the data locator's first root (~/.cache/layerprune without a mirror).
    if (var == "LAYERPRUNE_DATA") {
      const std::vector<std::string> roots = data_roots();
      if (!roots.empty()) return roots.front();
      fail(f, "${LAYERPRUNE_DATA} is not set and there is no default data root (HOME is not set either)");
    }
    fail(f, "environment variable ${" + var + "} is not set (export it, or write the path out)");
  }

  fs::path base_dir() const {
    if (source_ == "<yaml>") return fs::current_path();
    fs::path dir = fs::path(source_).parent_path();
    return dir.empty() ? fs::current_path() : fs::absolute(dir);
  }

  std::string source_;
};

// Each section reads its map; Experiment::locations records the positions plan_experiment may need.

ModelSpec read_model(const Reader& r, const Field& f, Experiment& e) {
  static const std::vector<std::string> known = {"name", "path", "format", "tokenizer", "dtype", "tp", "device"};
  ModelSpec m;
  const Field* path_field = nullptr;
  std::vector<Field> fields = r.map_fields(f, known);
  for (const Field& x : fields) {
    const std::string k = x.key.Scalar();
    if (k == "name") {
      m.name = r.string(x, "a model name");
      if (!valid_name(m.name))
        r.fail(x, "a model name may hold letters, digits, '-', '_' and '.', found \"" + m.name + "\"");
      e.locations[f.path + ".name"] = r.where(x);
    } else if (k == "path") {
      m.path = r.path(x);
      path_field = &x;
      e.locations[f.path + ".path"] = r.where(x);
    } else if (k == "format") {
      m.format = r.choice(x, kFormats);
    } else if (k == "tokenizer") {
      m.tokenizer = r.path(x);
    } else if (k == "dtype") {
      m.dtype = r.choice(x, kDtypes);
    } else if (k == "device") {
      m.device = r.string(x, "a device (cpu, cuda or cuda:N)");
      try {
        parse_device_name(m.device);  // its syntax here; whether the GPU exists, on the worker
      } catch (const InputError& err) {
        r.fail(x, err.what());
      }
    } else if (k == "tp") {
      m.tp = int(r.integer(x, 1));
      if (m.tp > 4096) r.fail(x, "expected at most 4096 tensor-parallel ranks, found " + std::to_string(m.tp));
    }
  }
  if (!path_field)
    r.fail(f, "missing 'path' (a Hugging Face model directory, a llama2.c .bin with format: llama2c, or a .gguf "
              "with format: gguf)");
  if (m.tp > 1 && parse_device_name(m.device).index >= 0)
    r.fail(f, "device " + m.device + " with tp " + std::to_string(m.tp) + " would put every rank on one GPU: use "
              "device: cuda (each rank takes the GPU of its local rank)");
  if (m.format == "llama2c" && m.tokenizer.empty())
    r.fail(f, "format llama2c needs 'tokenizer' (the SentencePiece tokenizer.model the checkpoint was trained with)");
  if (m.format != "llama2c" && !m.tokenizer.empty())
    r.fail(f, "'tokenizer' is for format llama2c only; a Hugging Face directory and a GGUF file hold their own");
  if (m.name.empty()) {
    // The default name: the directory or file name without extension ("Llama-2-7b-hf", "stories260K").
    m.name = fs::path(m.path).filename().empty() ? fs::path(m.path).parent_path().filename().stem().string()
                                                  : fs::path(m.path).stem().string();
    if (!valid_name(m.name))
      r.fail(f, "cannot name this model after its path (\"" + m.name + "\"): give it a 'name'");
  }
  e.locations[f.path] = r.where(f);
  return m;
}

void read_pruning(const Reader& r, const Field& f, Experiment& e) {
  static const std::vector<std::string> known = {"fractions", "layers", "strategies"};
  bool any = false;
  for (const Field& x : r.map_fields(f, known)) {
    const std::string k = x.key.Scalar();
    if (k == "fractions") {
      any = true;
      for (const Field& item : r.list_items(x, "fractions of layers to drop, in [0, 1)")) {
        e.fractions.push_back(r.real(item, 0.0, 1.0));
        e.locations[item.path] = r.where(item);
      }
    } else if (k == "layers") {
      any = true;
      for (const Field& item : r.list_items(x, "numbers of layers to drop (n >= 0)")) {
        e.layer_counts.push_back(r.integer(item, 0));
        e.locations[item.path] = r.where(item);
      }
    } else if (k == "strategies") {
      e.strategies.clear();
      for (const Field& item : r.list_items(x, "strategies (" + join(kStrategies) + ")")) {
        const std::string s = r.choice(item, kStrategies);
        if (contains(e.strategies, s)) r.fail(item, "strategy '" + s + "' is listed twice");
        e.strategies.push_back(s);
      }
    }
  }
  if (!e.fractions.empty() && !e.layer_counts.empty())
    r.fail(f, "give either 'fractions' or 'layers', not both");
  if (!any) r.fail(f, "missing 'fractions' (e.g. [0.0, 0.1, 0.2]) or 'layers' (numbers of layers to drop, e.g. [0, 1, 2])");
}

HealingSpec read_healing_entry(const Reader& r, const Field& f, Experiment& e) {
  static const std::vector<std::string> known = {
      "name", "quant", "rank", "alpha", "dropout", "targets", "train_data", "steps", "global_batch", "micro_batch",
      "seq_len", "warmup", "lr", "min_lr_ratio", "checkpoint_every", "train_range", "heal_unpruned", "fractions",
      "layers"};
  HealingSpec h;
  h.enabled = true;
  bool named = false;
  const Field* micro = nullptr;
  std::vector<Field> fields = r.map_fields(f, known);
  for (const Field& x : fields) {
    const std::string k = x.key.Scalar();
    if (k == "name") {
      h.name = r.string(x, "a healing name");
      named = true;
      if (!valid_name(h.name))
        r.fail(x, "a healing name may hold letters, digits, '-', '_' and '.', found \"" + h.name + "\"");
      if (h.name == "off") r.fail(x, "'off' names the no-healing entry; give this one another name");
    } else if (k == "quant") {
      h.quant = r.choice(x, kQuants);
    } else if (k == "rank") {
      h.rank = r.integer(x, 1);
    } else if (k == "alpha") {
      h.alpha = r.real(x, 0.0, INFINITY);
    } else if (k == "dropout") {
      h.dropout = r.real(x, 0.0, 1.0);
    } else if (k == "targets") {
      h.targets.clear();
      for (const Field& item : r.list_items(x, "projections (" + join(kLoraTargets) + ")")) {
        const std::string t = r.choice(item, kLoraTargets);
        if (contains(h.targets, t)) r.fail(item, "target '" + t + "' is listed twice");
        h.targets.push_back(t);
      }
    } else if (k == "train_data") {
      h.train_data = r.path(x);
    } else if (k == "steps") {
      h.steps = r.integer(x, 1);
    } else if (k == "global_batch") {
      h.global_batch = r.integer(x, 1);
    } else if (k == "micro_batch") {
      h.micro_batch = r.integer(x, 1);
      micro = &x;
    } else if (k == "seq_len") {
      h.seq_len = r.integer(x, 2);
    } else if (k == "warmup") {
      h.warmup = r.integer(x, 0);
    } else if (k == "lr") {
      h.lr = r.real(x, 0.0, INFINITY);
      if (h.lr == 0.0) r.fail(x, "expected a learning rate > 0, found 0");
    } else if (k == "min_lr_ratio") {
      h.min_lr_ratio = r.real(x, 0.0, 1.0, /*hi_inclusive=*/true);
    } else if (k == "checkpoint_every") {
      h.checkpoint_every = r.integer(x, 0);
    } else if (k == "train_range") {
      std::tie(h.train_begin, h.train_end) = r.range(x);
    } else if (k == "heal_unpruned") {
      h.heal_unpruned = r.boolean(x);
    } else if (k == "fractions") {
      for (const Field& item : r.list_items(x, "pruning fractions to heal at, in [0, 1)")) {
        h.fractions.push_back(r.real(item, 0.0, 1.0));
        e.locations[item.path] = r.where(item);
      }
    } else if (k == "layers") {
      for (const Field& item : r.list_items(x, "pruning depths n to heal at (n >= 0)")) {
        h.layer_counts.push_back(r.integer(item, 0));
        e.locations[item.path] = r.where(item);
      }
    }
  }
  if (!h.fractions.empty() && !h.layer_counts.empty()) r.fail(f, "give either 'fractions' or 'layers', not both");
  if (!named) h.name = h.quant == "nf4" ? "qlora" : "lora";
  if (h.train_data.empty()) r.fail(f, "missing 'train_data' (the healing text: C4-style .jsonl or plain text)");
  if (h.global_batch % h.micro_batch != 0)
    r.fail(micro ? *micro : f, "micro_batch " + std::to_string(h.micro_batch) + " must divide global_batch " +
                                   std::to_string(h.global_batch) + " (gradient accumulation)");
  return h;
}

void read_healing(const Reader& r, const Field& f, Experiment& e) {
  e.healing.clear();
  for (const Field& item : r.list_items(f, "healing variants ('off', or a map with the QLoRA settings)")) {
    HealingSpec h;
    if (item.value.IsScalar()) {
      if (item.value.Scalar() != "off")
        r.fail(item, "expected 'off' or a map of QLoRA settings (quant, rank, steps, ...), found " +
                         Reader::found(item.value));
    } else if (item.value.IsMap()) {
      h = read_healing_entry(r, item, e);
    } else {
      r.fail(item, "expected 'off' or a map of QLoRA settings, found " + Reader::found(item.value));
    }
    for (const HealingSpec& other : e.healing)
      if (other.name == h.name)
        r.fail(item, "healing '" + h.name + "' appears twice (give each variant a distinct 'name')");
    e.healing.push_back(h);
  }
}

void read_calibration(const Reader& r, const Field& f, Experiment& e) {
  static const std::vector<std::string> known = {"data", "samples", "seq_len", "seed"};
  CalibrationSpec& c = e.calibration;
  for (const Field& x : r.map_fields(f, known)) {
    const std::string k = x.key.Scalar();
    if (k == "data") c.data = r.path(x);
    else if (k == "samples") c.samples = r.integer(x, 1);
    else if (k == "seq_len") c.seq_len = r.integer(x, 2);
    else if (k == "seed") c.seed = uint64_t(r.integer(x, 0));
  }
  if (c.data.empty()) r.fail(f, "missing 'data' (calibration text: C4-style .jsonl or plain text)");
}

void read_evaluation(const Reader& r, const Field& f, Experiment& e) {
  EvaluationSpec& v = e.evaluation;
  for (const Field& x : r.map_fields(f, {"mmlu", "boolq", "loss", "batch_size"})) {
    const std::string k = x.key.Scalar();
    if (k == "batch_size") {
      v.batch_size = r.integer(x, 1);
    } else if (k == "mmlu") {
      v.mmlu = true;
      for (const Field& y : r.map_fields(x, {"data", "shots", "limit", "subjects"})) {
        const std::string kk = y.key.Scalar();
        if (kk == "data") v.mmlu_data = r.path(y);
        else if (kk == "shots") v.mmlu_shots = r.integer(y, 0);
        else if (kk == "limit") v.mmlu_limit = r.integer(y, 0);
        else if (kk == "subjects") {
          for (const Field& s : r.list_items(y, "MMLU subjects (e.g. abstract_algebra)", /*allow_empty=*/true)) {
            const std::string name = r.string(s, "an MMLU subject");
            if (!valid_name(name)) r.fail(s, "expected an MMLU subject name (e.g. high_school_physics), found \"" + name + "\"");
            v.mmlu_subjects.push_back(name);
          }
        }
      }
      if (v.mmlu_data.empty()) r.fail(x, "missing 'data' (the MMLU directory with dev/ and test/)");
    } else if (k == "boolq") {
      v.boolq = true;
      for (const Field& y : r.map_fields(x, {"data", "limit"})) {
        if (y.key.Scalar() == "data") v.boolq_data = r.path(y);
        else v.boolq_limit = r.integer(y, 0);
      }
      if (v.boolq_data.empty()) r.fail(x, "missing 'data' (the BoolQ validation .jsonl)");
    } else if (k == "loss") {
      v.loss = true;
      for (const Field& y : r.map_fields(x, {"data", "seq_len", "windows", "range"})) {
        const std::string kk = y.key.Scalar();
        if (kk == "data") v.loss_data = r.path(y);
        else if (kk == "seq_len") v.loss_seq_len = r.integer(y, 2);
        else if (kk == "range") std::tie(v.loss_begin, v.loss_end) = r.range(y);
        else v.loss_windows = r.integer(y, 0);
      }
      if (v.loss_data.empty()) r.fail(x, "missing 'data' (held-out text for the validation loss)");
    }
  }
  if (!v.mmlu && !v.boolq && !v.loss) r.fail(f, "expected at least one of mmlu, boolq, loss");
}

// Slurm's time formats: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS (digits, an optional "D-", <= 2 colons).
bool slurm_time(const std::string& s) {
  const size_t dash = s.find('-');
  const std::string rest = dash == std::string::npos ? s : s.substr(dash + 1);
  if (dash == 0 || rest.empty() || (dash != std::string::npos && s.find_first_not_of("0123456789") != dash)) return false;
  int colons = 0;
  for (size_t i = 0; i < rest.size(); ++i) {
    if (rest[i] == ':') {
      if (i == 0 || i + 1 == rest.size() || rest[i - 1] == ':') return false;
      ++colons;
    } else if (!std::isdigit(static_cast<unsigned char>(rest[i]))) {
      return false;
    }
  }
  return colons <= 2;
}

void read_slurm(const Reader& r, const Field& f, Experiment& e) {
  static const std::vector<std::string> known = {
      "partition", "account", "qos", "constraint", "time", "coordinator_time", "coordinator", "groups",
      "max_running", "gpus_per_rank", "cpus_per_rank", "mem", "warning_seconds", "mpi", "lease_seconds",
      "sbatch_args", "setup"};
  SlurmSpec& s = e.slurm;
  // Values go into #SBATCH lines and a shell script: no quotes, spaces or shell syntax in the plain ones.
  auto word = [&](const Field& x, const std::string& what) {
    const std::string v = r.string(x, what);
    for (char c : v)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || std::string("-_.,:+=/@[]&|").find(c) != std::string::npos))
        r.fail(x, "expected " + what + " (letters, digits and -_.,:+=/@[]&|), found \"" + v + "\"");
    if (v.empty()) r.fail(x, "expected " + what + ", found an empty string");
    return v;
  };
  for (const Field& x : r.map_fields(f, known)) {
    const std::string k = x.key.Scalar();
    if (k == "partition") s.partition = word(x, "a partition name");
    else if (k == "account") s.account = word(x, "an account name");
    else if (k == "qos") s.qos = word(x, "a QoS name");
    else if (k == "constraint") s.constraint = word(x, "a node feature constraint (e.g. a100|h100)");
    else if (k == "time" || k == "coordinator_time") {
      const std::string t = r.string(x, "a Slurm time limit");
      if (!slurm_time(t)) r.fail(x, "expected a Slurm time limit (MM, HH:MM:SS or D-HH:MM:SS), found \"" + t + "\"");
      (k == "time" ? s.time : s.coordinator_time) = t;
    } else if (k == "coordinator") s.coordinator = r.choice(x, {"job", "login"});
    else if (k == "groups") s.groups = r.integer(x, 1);
    else if (k == "max_running") s.max_running = r.integer(x, 0);
    else if (k == "gpus_per_rank") s.gpus_per_rank = r.integer(x, 0);
    else if (k == "cpus_per_rank") s.cpus_per_rank = r.integer(x, 1);
    else if (k == "mem") {
      s.mem = r.string(x, "a memory size");
      const size_t digits = s.mem.find_first_not_of("0123456789");
      if (digits == 0 || (digits != std::string::npos && (digits + 1 != s.mem.size() || std::string("KMGT").find(s.mem[digits]) == std::string::npos)))
        r.fail(x, "expected a memory size per node (e.g. 64G, 500000M), found \"" + s.mem + "\"");
    } else if (k == "warning_seconds") s.warning_seconds = r.integer(x, 0);
    else if (k == "mpi") s.mpi = word(x, "an srun --mpi plugin (pmix, pmi2, none)");
    else if (k == "lease_seconds") s.lease_seconds = r.integer(x, 1);
    else if (k == "sbatch_args") {
      for (const Field& item : r.list_items(x, "sbatch options (e.g. --exclusive)")) {
        const std::string a = r.string(item, "an sbatch option");
        if (a.rfind("--", 0) != 0 || a.find_first_of("\n\r") != std::string::npos)
          r.fail(item, "expected an sbatch option starting with '--' (e.g. --exclusive), found \"" + a + "\"");
        s.sbatch_args.push_back(a);
      }
    } else if (k == "setup") s.setup = r.string(x, "shell lines (e.g. module load cuda)");
  }
}

Experiment read_experiment(const Reader& r, const YAML::Node& root) {
  static const std::vector<std::string> known = {"name",    "models",      "pruning",    "healing",
                                                 "calibration", "evaluation", "seeds",   "slurm"};
  Field doc{YAML::Node(), root, ""};
  if (!root.IsDefined() || root.IsNull())
    throw InputError(r.source() + ":1:1: the experiment is empty; expected a map with keys " + join(known));
  if (!root.IsMap())
    throw InputError(r.where(root.Mark()) + ": expected a map with keys " + join(known) + ", found " +
                     Reader::found(root));
  Experiment e;
  e.source = r.source() == "<yaml>" ? "" : r.source();
  bool has_models = false, has_pruning = false, has_calibration = false, has_evaluation = false;
  for (const Field& x : r.map_fields(doc, known)) {
    const std::string k = x.key.Scalar();
    if (k == "name") {
      e.name = r.string(x, "an experiment name");
      if (!valid_name(e.name))
        r.fail(x, "an experiment name may hold letters, digits, '-', '_' and '.', found \"" + e.name + "\"");
    } else if (k == "models") {
      has_models = true;
      for (const Field& item : r.list_items(x, "models (maps with name, path, format, ...)")) {
        ModelSpec m = read_model(r, item, e);
        for (const ModelSpec& other : e.models)
          if (other.name == m.name) r.fail(item, "model name '" + m.name + "' is used twice; names must be unique");
        e.models.push_back(std::move(m));
      }
    } else if (k == "pruning") {
      has_pruning = true;
      read_pruning(r, x, e);
    } else if (k == "healing") {
      read_healing(r, x, e);
    } else if (k == "calibration") {
      has_calibration = true;
      read_calibration(r, x, e);
    } else if (k == "evaluation") {
      has_evaluation = true;
      read_evaluation(r, x, e);
    } else if (k == "slurm") {
      read_slurm(r, x, e);
    } else if (k == "seeds") {
      e.seeds.clear();
      std::set<uint64_t> seen;
      for (const Field& item : r.list_items(x, "seeds (integers >= 0)")) {
        const uint64_t s = uint64_t(r.integer(item, 0));
        if (!seen.insert(s).second) r.fail(item, "seed " + std::to_string(s) + " is listed twice");
        e.seeds.push_back(s);
      }
    }
  }
  const std::string top = r.where(root.Mark()) + ": ";
  if (!has_models) throw InputError(top + "missing 'models' (a list of maps with name, path, ...)");
  if (!has_pruning) throw InputError(top + "missing 'pruning' (fractions or layers, and strategies)");
  if (!has_evaluation) throw InputError(top + "missing 'evaluation' (mmlu, boolq and/or loss)");
  for (const std::string& s : e.strategies)
    if (!has_calibration && strategy_needs_distances(parse_strategy(s)))
      throw InputError(top + "missing 'calibration' (its data is needed to measure the distances of the " + s +
                       " strategy)");
  if (e.name.empty()) {
    e.name = e.source.empty() ? "experiment" : fs::path(e.source).stem().string();
    if (!valid_name(e.name)) throw InputError(top + "missing 'name' (the file name \"" + e.name + "\" cannot be one)");
  }
  if (e.healing.empty()) e.healing.push_back(HealingSpec{});
  return e;
}

// ---------------------------------------------------------------------------------------------------------
// JSON: one key per struct field, named after it.

template <typename T>
void read_if(const json& j, const char* key, T& out, const char* what) {
  if (!j.contains(key)) return;
  try {
    out = j.at(key).get<T>();
  } catch (const json::exception& ex) {
    throw InputError(std::string(what) + " JSON: field '" + key + "': " + ex.what());
  }
}

void require_object(const json& j, const char* what) {
  if (!j.is_object()) throw InputError(std::string(what) + " JSON: expected an object, found " + j.type_name());
}

// The location of an Experiment field, "file:line:col: " (or "file: " / "" without one).
std::string at(const Experiment& e, const std::string& field) {
  if (auto it = e.locations.find(field); it != e.locations.end()) return it->second + ": ";
  return e.source.empty() ? "" : e.source + ": ";
}

}  // namespace

void to_json(json& j, const ModelSpec& m) {
  j = json{{"name", m.name},       {"path", m.path}, {"format", m.format}, {"tokenizer", m.tokenizer},
           {"dtype", m.dtype},     {"tp", m.tp},     {"layers", m.layers}};
  // Only when it is not the default, so an experiment written before devices existed keeps its
  // configuration's hash (a database resumes only the configuration it was made with).
  if (m.device != "cpu") j["device"] = m.device;
}
void from_json(const json& j, ModelSpec& m) {
  require_object(j, "model");
  read_if(j, "name", m.name, "model");
  read_if(j, "path", m.path, "model");
  read_if(j, "format", m.format, "model");
  read_if(j, "tokenizer", m.tokenizer, "model");
  read_if(j, "dtype", m.dtype, "model");
  read_if(j, "tp", m.tp, "model");
  read_if(j, "layers", m.layers, "model");
  read_if(j, "device", m.device, "model");
}

void to_json(json& j, const CalibrationSpec& c) {
  j = json{{"data", c.data}, {"samples", c.samples}, {"seq_len", c.seq_len}, {"seed", c.seed}};
}
void from_json(const json& j, CalibrationSpec& c) {
  require_object(j, "calibration");
  read_if(j, "data", c.data, "calibration");
  read_if(j, "samples", c.samples, "calibration");
  read_if(j, "seq_len", c.seq_len, "calibration");
  read_if(j, "seed", c.seed, "calibration");
}

void to_json(json& j, const HealingSpec& h) {
  j = json{{"name", h.name},
           {"enabled", h.enabled},
           {"quant", h.quant},
           {"rank", h.rank},
           {"alpha", h.alpha},
           {"dropout", h.dropout},
           {"targets", h.targets},
           {"train_data", h.train_data},
           {"steps", h.steps},
           {"global_batch", h.global_batch},
           {"micro_batch", h.micro_batch},
           {"seq_len", h.seq_len},
           {"warmup", h.warmup},
           {"lr", h.lr},
           {"min_lr_ratio", h.min_lr_ratio},
           {"checkpoint_every", h.checkpoint_every},
           {"train_begin", h.train_begin},
           {"train_end", h.train_end},
           {"heal_unpruned", h.heal_unpruned},
           {"fractions", h.fractions},
           {"layers", h.layer_counts}};
}
void from_json(const json& j, HealingSpec& h) {
  require_object(j, "healing");
  const char* w = "healing";
  read_if(j, "name", h.name, w);
  read_if(j, "enabled", h.enabled, w);
  read_if(j, "quant", h.quant, w);
  read_if(j, "rank", h.rank, w);
  read_if(j, "alpha", h.alpha, w);
  read_if(j, "dropout", h.dropout, w);
  read_if(j, "targets", h.targets, w);
  read_if(j, "train_data", h.train_data, w);
  read_if(j, "steps", h.steps, w);
  read_if(j, "global_batch", h.global_batch, w);
  read_if(j, "micro_batch", h.micro_batch, w);
  read_if(j, "seq_len", h.seq_len, w);
  read_if(j, "warmup", h.warmup, w);
  read_if(j, "lr", h.lr, w);
  read_if(j, "min_lr_ratio", h.min_lr_ratio, w);
  read_if(j, "checkpoint_every", h.checkpoint_every, w);
  read_if(j, "train_begin", h.train_begin, w);
  read_if(j, "train_end", h.train_end, w);
  read_if(j, "heal_unpruned", h.heal_unpruned, w);
  read_if(j, "fractions", h.fractions, w);
  read_if(j, "layers", h.layer_counts, w);
}

void to_json(json& j, const EvaluationSpec& e) {
  j = json{{"mmlu", e.mmlu},
           {"mmlu_data", e.mmlu_data},
           {"mmlu_shots", e.mmlu_shots},
           {"mmlu_limit", e.mmlu_limit},
           {"mmlu_subjects", e.mmlu_subjects},
           {"boolq", e.boolq},
           {"boolq_data", e.boolq_data},
           {"boolq_limit", e.boolq_limit},
           {"loss", e.loss},
           {"loss_data", e.loss_data},
           {"loss_seq_len", e.loss_seq_len},
           {"loss_windows", e.loss_windows},
           {"loss_begin", e.loss_begin},
           {"loss_end", e.loss_end},
           {"batch_size", e.batch_size}};
}
void from_json(const json& j, EvaluationSpec& e) {
  require_object(j, "evaluation");
  const char* w = "evaluation";
  read_if(j, "mmlu", e.mmlu, w);
  read_if(j, "mmlu_data", e.mmlu_data, w);
  read_if(j, "mmlu_shots", e.mmlu_shots, w);
  read_if(j, "mmlu_limit", e.mmlu_limit, w);
  read_if(j, "mmlu_subjects", e.mmlu_subjects, w);
  read_if(j, "boolq", e.boolq, w);
  read_if(j, "boolq_data", e.boolq_data, w);
  read_if(j, "boolq_limit", e.boolq_limit, w);
  read_if(j, "loss", e.loss, w);
  read_if(j, "loss_data", e.loss_data, w);
  read_if(j, "loss_seq_len", e.loss_seq_len, w);
  read_if(j, "loss_windows", e.loss_windows, w);
  read_if(j, "loss_begin", e.loss_begin, w);
  read_if(j, "loss_end", e.loss_end, w);
  read_if(j, "batch_size", e.batch_size, w);
}

// GridPoint's JSON (the wire form too) is in submission.cc.

json Experiment::to_json() const {
  json j{{"name", name}, {"source", source}, {"fractions", fractions}, {"layer_counts", layer_counts},
         {"strategies", strategies}, {"seeds", seeds}};
  j["models"] = models;
  j["healing"] = healing;
  j["calibration"] = calibration;
  j["evaluation"] = evaluation;
  return j;
}

Experiment Experiment::from_json(const json& j) {
  require_object(j, "experiment");
  Experiment e;
  const char* w = "experiment";
  read_if(j, "name", e.name, w);
  read_if(j, "source", e.source, w);
  read_if(j, "models", e.models, w);
  read_if(j, "fractions", e.fractions, w);
  read_if(j, "layer_counts", e.layer_counts, w);
  read_if(j, "strategies", e.strategies, w);
  read_if(j, "healing", e.healing, w);
  read_if(j, "calibration", e.calibration, w);
  read_if(j, "evaluation", e.evaluation, w);
  read_if(j, "seeds", e.seeds, w);
  return e;
}

// ---------------------------------------------------------------------------------------------------------

Experiment parse_experiment(const std::string& yaml_text, const std::string& source) {
  Reader reader(source);
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& ex) {
    throw InputError(reader.where(ex.mark) + ": YAML syntax error: " + ex.msg);
  }
  try {
    return read_experiment(reader, root);
  } catch (const YAML::Exception& ex) {  // not expected (values are read as scalars); still a located message
    throw InputError(reader.where(ex.mark) + ": " + ex.msg);
  }
}

Experiment parse_experiment_file(const std::string& path) {
  if (!fs::is_regular_file(path)) throw InputError(path + ": experiment file not found");
  return parse_experiment(read_file(path), path);
}

int64_t default_layer_resolver(const ModelSpec& model) {
  const std::string who = "model '" + model.name + "': ";
  std::error_code ec;  // a path from the YAML too long for the filesystem is "not found", not an exception
  if (model.format == "llama2c") {
    // llama2.c's header: 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len).
    std::ifstream in(model.path, std::ios::binary);
    if (!fs::is_regular_file(model.path, ec) || !in)
      throw InputError(who + model.path + " not found (expected a llama2.c checkpoint .bin)");
    int32_t header[7] = {};
    in.read(reinterpret_cast<char*>(header), sizeof header);
    if (in.gcount() != std::streamsize(sizeof header))
      throw InputError(who + model.path + " is too short for a llama2.c checkpoint (a 28-byte header)");
    const int32_t dim = header[0], hidden = header[1], layers = header[2], heads = header[3], kv = header[4];
    if (dim <= 0 || hidden <= 0 || layers <= 0 || heads <= 0 || kv <= 0 || layers > 100000)
      throw InputError(who + model.path + " does not look like a llama2.c checkpoint (header dim " +
                       std::to_string(dim) + ", hidden_dim " + std::to_string(hidden) + ", n_layers " +
                       std::to_string(layers) + ", n_heads " + std::to_string(heads) + ", n_kv_heads " +
                       std::to_string(kv) + ")");
    return layers;
  }
  if (model.format == "gguf") {
    if (!fs::is_regular_file(model.path, ec)) throw InputError(who + model.path + " not found (expected a GGUF file)");
    return gguf_llama_config(*GgufFile::open(model.path)).num_hidden_layers;
  }
  if (!fs::exists(model.path, ec))
    throw InputError(who + model.path + " not found (expected a Hugging Face model directory with config.json)");
  const std::string config = (fs::path(model.path) / "config.json").string();
  if (!fs::is_regular_file(config, ec))
    throw InputError(who + model.path + " has no config.json (expected a Hugging Face model directory; for a "
                     "llama2.c .bin write format: llama2c)");
  return LlamaConfig::from_file(config).num_hidden_layers;
}

ExperimentPlan plan_experiment(const Experiment& experiment, const LayerResolver& resolver) {
  const std::string src = experiment.source.empty() ? "" : experiment.source + ": ";
  const Experiment& e = experiment;
  if (e.models.empty()) throw InputError(src + "the experiment has no models");
  if (e.fractions.empty() == e.layer_counts.empty())
    throw InputError(src + "pruning needs exactly one of fractions or layers");
  if (e.strategies.empty()) throw InputError(src + "pruning needs at least one strategy");
  for (const std::string& s : e.strategies)
    if (!contains(kStrategies, s)) throw InputError(src + "unknown strategy '" + s + "' (" + join(kStrategies) + ")");
  if (e.healing.empty()) throw InputError(src + "healing needs at least one entry ('off')");
  if (e.seeds.empty()) throw InputError(src + "the experiment needs at least one seed");
  std::set<std::string> names;
  for (size_t i = 0; i < e.models.size(); ++i)
    if (!names.insert(e.models[i].name).second)
      throw InputError(at(e, "models[" + std::to_string(i) + "].name") + "model name '" + e.models[i].name +
                       "' is used twice");
  names.clear();
  for (const HealingSpec& h : e.healing) {
    if (!names.insert(h.name).second) throw InputError(src + "healing '" + h.name + "' appears twice");
    if (h.enabled == (h.name == "off"))
      throw InputError(src + "healing '" + h.name + "': 'off' is the name of the one disabled entry, and only of it");
  }

  ExperimentPlan plan;
  plan.experiment = experiment;
  std::vector<std::vector<int64_t>> depths(e.models.size());  // distinct n per model, ascending
  std::vector<std::vector<std::set<int64_t>>> heal_depths(e.models.size(), std::vector<std::set<int64_t>>(e.healing.size()));
  for (size_t i = 0; i < e.models.size(); ++i) {
    ModelSpec& m = plan.experiment.models[i];
    const std::string model_at = "models[" + std::to_string(i) + "]";
    try {
      m.layers = resolver(m);
    } catch (const InputError& ex) {
      throw InputError(at(e, model_at + ".path") + ex.what());
    }
    if (m.layers < 1) throw InputError(at(e, model_at + ".path") + "model '" + m.name + "' has no layers");
    const int64_t L = m.layers;
    std::set<int64_t> ns;
    for (size_t k = 0; k < e.fractions.size(); ++k) {
      const double f = e.fractions[k];
      const std::string field = "pruning.fractions[" + std::to_string(k) + "]";
      if (!(f >= 0.0 && f < 1.0)) throw InputError(at(e, field) + field + ": expected a fraction in [0, 1), found " + number(f));
      const int64_t n = int64_t(std::floor(f * double(L) + 0.5));  // experiment/pruning.h: halves up
      if (n >= L)
        throw InputError(at(e, field) + field + ": fraction " + number(f) + " of model '" + m.name + "' (" +
                         std::to_string(L) + " layers) drops n = " + std::to_string(n) + "; at most " +
                         std::to_string(L - 1) + " can be dropped (one layer must stay)");
      if (n != layers_to_prune(f, L)) throw std::logic_error("plan_experiment: rounding differs from experiment/pruning.h");
      ns.insert(n);
    }
    for (size_t k = 0; k < e.layer_counts.size(); ++k) {
      const int64_t n = e.layer_counts[k];
      const std::string field = "pruning.layers[" + std::to_string(k) + "]";
      if (n < 0 || n >= L)
        throw InputError(at(e, field) + field + ": cannot drop n = " + std::to_string(n) + " layers of model '" +
                         m.name + "' (" + std::to_string(L) + " layers); n must be in 0.." + std::to_string(L - 1));
      ns.insert(n);
    }
    depths[i].assign(ns.begin(), ns.end());
    // Depths each healing entry runs at: its own fractions/layers (each one of the pruning depths), or all.
    for (size_t hi = 0; hi < e.healing.size(); ++hi) {
      const HealingSpec& h = e.healing[hi];
      std::set<int64_t>& at_n = heal_depths[i][hi];
      if (h.fractions.empty() && h.layer_counts.empty()) {
        at_n = ns;
        continue;
      }
      const std::string where_h = "healing[" + std::to_string(hi) + "]";
      auto add = [&](int64_t n, const std::string& field, const std::string& given) {
        if (!ns.count(n))
          throw InputError(at(e, field) + field + ": " + given + " is n = " + std::to_string(n) + " for model '" +
                           m.name + "', which is not one of the pruning depths");
        at_n.insert(n);
      };
      for (size_t k = 0; k < h.fractions.size(); ++k)
        add(layers_to_prune(h.fractions[k], L), where_h + ".fractions[" + std::to_string(k) + "]",
            "fraction " + number(h.fractions[k]));
      for (size_t k = 0; k < h.layer_counts.size(); ++k)
        add(h.layer_counts[k], where_h + ".layers[" + std::to_string(k) + "]", "depth " + std::to_string(h.layer_counts[k]));
    }
  }

  // The grid's size before any of it exists: a grid a coordinator cannot sensibly hold is refused with its
  // count (and nothing is written: submission comes after planning).
  {
    double points = 0;  // an upper bound: n = 0 counts once per strategy here
    for (size_t i = 0; i < e.models.size(); ++i)
      points += double(depths[i].size()) * double(e.strategies.size()) * double(e.healing.size()) * double(e.seeds.size());
    if (points > double(kMaxGridPoints))
      throw InputError(src + "the grid has about " + std::to_string(int64_t(points)) + " points (" + std::to_string(e.models.size()) +
                       " model(s) x their depths x " + std::to_string(e.strategies.size()) + " strategies x " +
                       std::to_string(e.healing.size()) + " healing x " + std::to_string(e.seeds.size()) +
                       " seeds), more than the " + std::to_string(kMaxGridPoints) +
                       " one experiment may have: split it into several experiments");
  }

  // Points: model, then n ascending, then strategy, healing and seed in the YAML's order; n = 0 once ("none").
  for (size_t i = 0; i < e.models.size(); ++i) {
    const ModelSpec& m = plan.experiment.models[i];
    for (int64_t n : depths[i]) {
      const std::vector<std::string> strategies = n == 0 ? std::vector<std::string>{"none"} : e.strategies;
      for (const std::string& s : strategies)
        for (size_t hi = 0; hi < e.healing.size(); ++hi)
          for (uint64_t seed : e.seeds) {
            const HealingSpec& h = e.healing[hi];
            if (n == 0 && h.enabled && !h.heal_unpruned) continue;
            if (h.enabled && !heal_depths[i][hi].count(n)) continue;
            GridPoint p;
            p.model = m.name;
            p.n = n;
            p.layers = m.layers;
            p.strategy = s;
            p.healing = h.name;
            p.seed = seed;
            p.key = m.name + "/n=" + std::to_string(n) + "/" + s + "/" + h.name + "/seed=" + std::to_string(seed);
            plan.points.push_back(std::move(p));
          }
    }
  }

  // Tasks: every distances task, then every evaluate task, then every heal task (dependencies come first).
  auto needs_distances = [](const GridPoint& p) {
    return p.n > 0 && p.strategy != "none" && strategy_needs_distances(parse_strategy(p.strategy));
  };
  const json calibration = e.calibration, evaluation = e.evaluation;
  std::vector<bool> measured(e.models.size(), false);
  for (size_t i = 0; i < e.models.size(); ++i) {
    const ModelSpec& m = plan.experiment.models[i];
    for (const GridPoint& p : plan.points) measured[i] = measured[i] || (p.model == m.name && needs_distances(p));
    if (!measured[i]) continue;
    TaskSpec t;
    t.key = "distances/" + m.name;
    t.kind = "distances";
    t.model = m.name;
    t.payload = {{"experiment", e.name}, {"model", m}, {"calibration", calibration}};
    plan.tasks.push_back(std::move(t));
  }
  for (size_t i = 0; i < e.models.size(); ++i) {
    const ModelSpec& m = plan.experiment.models[i];
    for (uint64_t seed : e.seeds) {
      TaskSpec t;
      t.key = "evaluate/" + m.name + "/seed=" + std::to_string(seed);
      t.kind = "evaluate";
      t.model = m.name;
      json points = json::array();
      bool needs = false;
      for (const GridPoint& p : plan.points) {
        if (p.model != m.name || p.seed != seed || p.healing != "off") continue;
        t.points.push_back(p.key);
        points.push_back(p.to_json());
        needs = needs || needs_distances(p);
      }
      if (t.points.empty()) continue;  // no "off" entry in healing
      if (needs) t.depends_on.push_back("distances/" + m.name);
      t.payload = {{"experiment", e.name}, {"model", m},       {"seed", seed},
                   {"calibration", calibration}, {"evaluation", evaluation}, {"points", points}};
      plan.tasks.push_back(std::move(t));
    }
  }
  for (const GridPoint& p : plan.points) {
    if (p.healing == "off") continue;
    const ModelSpec* m = nullptr;
    for (const ModelSpec& x : plan.experiment.models)
      if (x.name == p.model) m = &x;
    const HealingSpec* h = nullptr;
    for (const HealingSpec& x : e.healing)
      if (x.name == p.healing) h = &x;
    TaskSpec t;
    t.key = "heal/" + p.key;
    t.kind = "heal";
    t.model = p.model;
    t.points = {p.key};
    if (needs_distances(p)) t.depends_on.push_back("distances/" + p.model);
    t.payload = {{"experiment", e.name},       {"model", *m},           {"seed", p.seed},
                 {"calibration", calibration}, {"healing", *h},         {"evaluation", evaluation},
                 {"points", json::array({p.to_json()})}};
    plan.tasks.push_back(std::move(t));
  }
  return plan;
}

}  // namespace layerprune
