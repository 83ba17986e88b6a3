// Choosing the tokenizer: SentencePiece (tokenizer.model) or byte-level BPE (tokenizer.json), by file or by
// model directory, with tokenizer_config.json's add_bos_token and BOS/EOS strings.
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/text_file.h"
#include "formats/json_input.h"
#include "formats/bpe_tokenizer.h"
#include "formats/tokenizer.h"

namespace layerprune {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// What tokenizer_config.json says about BOS/EOS.
struct TokenizerConfig {
  bool has_add_bos = false, add_bos = false;
  std::string bos_token, eos_token;  // "" when not given
};

TokenizerConfig read_tokenizer_config(const std::string& path) {
  using nlohmann::json;
  const json j = parse_json_input(read_file(path), path);
  if (!j.is_object()) throw InputError(path + ": expected a JSON object, found " + std::string(j.type_name()));
  TokenizerConfig c;
  if (auto it = j.find("add_bos_token"); it != j.end() && !it->is_null()) {
    if (!it->is_boolean()) throw InputError(path + ": add_bos_token: expected true or false, found " + it->dump());
    c.has_add_bos = true;
    c.add_bos = it->get<bool>();
  }
  // "bos_token": "<s>" or, as transformers writes an AddedToken, {"content": "<s>", ...}
  auto token = [&](const char* key, std::string* out) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return;
    if (it->is_string()) *out = it->get<std::string>();
    else if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) *out = (*it)["content"].get<std::string>();
    else throw InputError(path + ": " + key + ": expected a string or {\"content\": string}, found " + it->dump());
  };
  token("bos_token", &c.bos_token);
  token("eos_token", &c.eos_token);
  return c;
}

}  // namespace

Tokenizer Tokenizer::load(const std::string& path) {
  if (ends_with(path, ".json")) return from_bpe(BpeTokenizer::load(path));
  Tokenizer t = from_bytes(read_file(path), path);  // read_file: InputError naming the file when unreadable
  t.add_bos_default_ = t.bos_id() >= 0;              // transformers' LlamaTokenizer default: add_bos_token=True
  return t;
}

Tokenizer Tokenizer::from_bpe(const BpeTokenizer& bpe) {
  Tokenizer t(nullptr);
  t.bpe_ = std::make_shared<const BpeTokenizer>(bpe);
  t.add_bos_default_ = bpe.adds_bos();
  return t;
}

Tokenizer Tokenizer::load_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  const std::string model = dir + "/tokenizer.model", json_file = dir + "/tokenizer.json",
                    config = dir + "/tokenizer_config.json";
  const bool has_config = fs::exists(config);
  TokenizerConfig c;
  if (has_config) c = read_tokenizer_config(config);
  if (fs::exists(model)) {
    Tokenizer t = load(model);
    t.add_bos_default_ = c.has_add_bos ? c.add_bos : t.bos_id() >= 0;  // LlamaTokenizer's default: true
    if (t.add_bos_default_ && t.bos_id() < 0)
      throw InputError(config + ": add_bos_token is true but the tokenizer has no BOS token");
    return t;
  }
  if (!fs::exists(json_file))
    throw InputError(dir + ": no tokenizer.model or tokenizer.json in this directory");
  BpeTokenizer bpe = BpeTokenizer::load(json_file);
  try {
    bpe.set_bos_eos(c.bos_token, c.eos_token);
  } catch (const InputError& e) {
    throw InputError(config + ": " + e.what());
  }
  Tokenizer t = from_bpe(bpe);
  if (c.has_add_bos) t.add_bos_default_ = c.add_bos;
  if (t.add_bos_default_ && t.bos_id() < 0)
    throw InputError(config + ": add_bos_token is true but the tokenizer has no BOS token");
  return t;
}

}  // namespace layerprune
