#include "method/distances.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "model/finite.h"
#include "common/hashing.h"
#include "common/progress.h"
#include "common/text_file.h"
#include "formats/safetensors.h"

namespace layerprune {

namespace fs = std::filesystem;

std::string CalibrationRecipe::to_json() const {
  // Key order is fixed by nlohmann::json's sorted maps; "rules" names the sampling/tokenizing rules above
  // so that a change to them changes every key.
  return nlohmann::json{{"samples", samples}, {"seq_len", seq_len}, {"seed", seed},
                        {"rules", add_bos ? "sha256-order,bos,truncate/v1" : "sha256-order,nobos,truncate/v1"}}
      .dump();
}

int64_t CalibrationSet::tokens() const {
  int64_t n = 0;
  for (const auto& s : sequences) n += int64_t(s.size());
  return n;
}

CalibrationSet build_calibration(const std::string& path, const Tokenizer& tokenizer, const CalibrationRecipe& recipe,
                                 int64_t max_positions) {
  if (recipe.samples < 1) throw InputError("calibration: samples must be at least 1");
  if (recipe.seq_len < 2) throw InputError("calibration: seq_len must be at least 2 tokens");
  if (recipe.add_bos && tokenizer.bos_id() < 0) throw InputError(tokenizer.path() + ": the tokenizer has no BOS token");
  CalibrationSet set;
  std::vector<std::string> all = read_documents(path);
  std::vector<int64_t> usable;
  for (size_t i = 0; i < all.size(); ++i)
    if (all[i].find_first_not_of(" \t\r\n") != std::string::npos) usable.push_back(int64_t(i));
  set.documents = int64_t(usable.size());
  if (set.documents < recipe.samples)
    throw InputError(path + ": " + std::to_string(set.documents) + " non-empty documents, fewer than the " +
                     std::to_string(recipe.samples) + " calibration samples asked for");
  std::vector<std::pair<std::string, int64_t>> order;
  order.reserve(usable.size());
  for (int64_t i : usable) order.emplace_back(sha256_hex(std::to_string(recipe.seed) + ":" + std::to_string(i)), i);
  std::sort(order.begin(), order.end());
  const int64_t len = std::min(recipe.seq_len, max_positions);
  for (int64_t k = 0; k < recipe.samples; ++k) {
    const int64_t i = order[size_t(k)].second;
    std::vector<int32_t> ids = tokenizer.encode(all[size_t(i)], recipe.add_bos);
    if (int64_t(ids.size()) > len) ids.resize(size_t(len));
    set.chosen.push_back(i);
    set.sequences.push_back(std::move(ids));
  }
  return set;
}

DistanceTable measure_distances(const LlamaModel& model, const CalibrationSet& calibration,
                                const DistanceOptions& options) {
  const int64_t L = model.config().num_hidden_layers, S = L + 1;
  const int64_t N = int64_t(calibration.sequences.size());
  if (N == 0) throw InputError("distances: no calibration sequences");
  const int64_t B = std::max<int64_t>(1, options.batch_size);
  at::Tensor sum = at::zeros({S, S}, at::kDouble);
  at::Tensor cos_sum = at::zeros({L}, at::kDouble);  // sum over real tokens of cos(x^(l), x^(l+1))
  int64_t real_tokens = 0;
  Progress progress("distances", N, "samples");
  ForwardOptions fwd;
  fwd.return_hidden = true;
  fwd.logits = false;
  for (int64_t b0 = 0; b0 < N; b0 += B) {
    const int64_t nb = std::min(B, N - b0);
    int64_t T = 0;
    for (int64_t b = 0; b < nb; ++b) T = std::max<int64_t>(T, int64_t(calibration.sequences[size_t(b0 + b)].size()));
    // Right padding with token 0: causal attention keeps it out of every real position.
    at::Tensor tokens = at::zeros({nb, T}, at::kLong);
    at::Tensor last = at::empty({nb}, at::kLong);
    at::Tensor real = at::zeros({nb, T}, at::kBool);  // the non-padding positions, 0 included
    auto acc = tokens.accessor<int64_t, 2>();
    for (int64_t b = 0; b < nb; ++b) {
      const auto& seq = calibration.sequences[size_t(b0 + b)];
      for (size_t t = 0; t < seq.size(); ++t) acc[b][int64_t(t)] = seq[t];
      last[b] = int64_t(seq.size()) - 1;
      real[b].narrow(0, 0, int64_t(seq.size())).fill_(true);
      real_tokens += int64_t(seq.size());
    }
    ForwardResult r = model.forward(tokens, fwd);
    // x[i, b, :] = hidden state i of sequence b at its last real token, in float64.
    at::Tensor index = last.to(model.device()).view({nb, 1, 1}).expand({nb, 1, model.config().hidden_size});
    std::vector<at::Tensor> states;
    states.reserve(size_t(S));
    for (const at::Tensor& h : r.hidden) states.push_back(h.gather(1, index).squeeze(1).to(at::kDouble));
    at::Tensor x = at::stack(states, 1);                                  // [nb, S, D]
    at::Tensor unit = x / x.norm(2, -1, /*keepdim=*/true);
    at::Tensor cos = at::bmm(unit, unit.transpose(1, 2)).clamp(-1.0, 1.0);  // [nb, S, S]
    at::Tensor batch = (at::acos(cos) / M_PI).sum(0).to(at::kCPU);  // float64 on the model's device, summed on the host
    // Block influence: cos between consecutive hidden states at every real token, in float64.
    at::Tensor mask = real.to(model.device());
    std::vector<at::Tensor> cos_sums;
    cos_sums.reserve(size_t(L));
    at::Tensor prev = r.hidden[0].to(at::kDouble);
    for (int64_t l = 0; l < L; ++l) {
      at::Tensor next = r.hidden[size_t(l + 1)].to(at::kDouble);
      at::Tensor c = (prev * next).sum(-1) / (prev.norm(2, -1) * next.norm(2, -1));  // [nb, T]
      cos_sums.push_back(c.masked_select(mask).clamp(-1.0, 1.0).sum());
      prev = next;
    }
    at::Tensor batch_cos = at::stack(cos_sums).to(at::kCPU);
    if (!all_finite(batch) || !all_finite(batch_cos)) {
      std::string where = model.locate_non_finite(tokens, fwd);
      if (where.empty()) where = "no layer (every hidden state is finite): a hidden state of norm 0";
      throw NonFiniteError("distances: calibration samples " + std::to_string(b0) + "-" + std::to_string(b0 + nb - 1) +
                           ": a non-finite angular distance or block influence; the first non-finite output is " + where);
    }
    sum += batch;
    cos_sum += batch_cos;
    progress.advance(nb);
  }
  sum /= double(N);
  sum.diagonal().zero_();  // d(x, x) = 0 exactly (acos of a rounded 1 can be ~1e-8)
  std::vector<double> pair(sum.data_ptr<double>(), sum.data_ptr<double>() + S * S);
  std::vector<double> bi(static_cast<size_t>(L));
  for (int64_t l = 0; l < L; ++l) bi[size_t(l)] = 1.0 - cos_sum[l].item<double>() / double(real_tokens);
  return DistanceTable(L, std::move(pair), std::move(bi));
}

std::string DistanceResult::to_json() const {
  const int64_t L = table.layers();
  nlohmann::json d = nlohmann::json::array();
  for (int64_t i = 0; i <= L; ++i) {
    nlohmann::json row = nlohmann::json::array();
    for (int64_t j = 0; j <= L; ++j) row.push_back(table.pair_matrix()[size_t(i * (L + 1) + j)]);
    d.push_back(row);
  }
  nlohmann::json best = nlohmann::json::array();
  for (int64_t n = 1; n <= L; ++n) {
    const int64_t l = table.best_start(n);
    best.push_back({{"n", n}, {"l_star", l}, {"d", table.at(l, n)}});
  }
  nlohmann::json recipe_json = nlohmann::json::parse(recipe.to_json());
  nlohmann::json out{{"key", key},
                     {"model", model_dir},
                     {"model_fingerprint", model_fingerprint},
                     {"dtype", dtype},
                     {"layers", L},
                     {"calibration", {{"data", data_path}, {"data_sha256", data_sha256}, {"documents", documents},
                                      {"tokens", tokens}, {"recipe", recipe_json}}},
                     {"distances", d},
                     {"best", best},
                     {"seconds", seconds},
                     {"code_version", code_version}};
  if (table.has_block_influence()) out["block_influence"] = table.block_influence();
  return out.dump(1);
}

DistanceResult DistanceResult::from_json(const std::string& text, const std::string& source) {
  DistanceResult r;
  try {
    nlohmann::json j = nlohmann::json::parse(text);
    r.key = j.at("key").get<std::string>();
    r.model_dir = j.at("model").get<std::string>();
    r.model_fingerprint = j.at("model_fingerprint").get<std::string>();
    r.dtype = j.at("dtype").get<std::string>();
    const auto& c = j.at("calibration");
    r.data_path = c.at("data").get<std::string>();
    r.data_sha256 = c.at("data_sha256").get<std::string>();
    r.documents = c.at("documents").get<int64_t>();
    r.tokens = c.at("tokens").get<int64_t>();
    r.recipe.samples = c.at("recipe").at("samples").get<int64_t>();
    r.recipe.seq_len = c.at("recipe").at("seq_len").get<int64_t>();
    r.recipe.seed = c.at("recipe").at("seed").get<uint64_t>();
    r.recipe.add_bos = c.at("recipe").value("rules", std::string()).find("nobos") == std::string::npos;
    const int64_t L = j.at("layers").get<int64_t>();
    const auto& d = j.at("distances");
    if (L < 1 || int64_t(d.size()) != L + 1) throw InputError(source + ": \"distances\" must be (layers+1) rows");
    std::vector<double> pair;
    for (const auto& row : d) {
      if (int64_t(row.size()) != L + 1) throw InputError(source + ": \"distances\" rows must have layers+1 entries");
      for (const auto& v : row) pair.push_back(v.get<double>());
    }
    std::vector<double> bi;
    if (j.contains("block_influence")) {
      bi = j.at("block_influence").get<std::vector<double>>();
      if (int64_t(bi.size()) != L) throw InputError(source + ": \"block_influence\" must have one entry per layer");
    }
    r.table = DistanceTable(L, std::move(pair), std::move(bi));
    r.seconds = j.value("seconds", 0.0);
    r.code_version = j.value("code_version", "");
  } catch (const nlohmann::json::exception& e) {
    throw InputError(source + ": not a distance result (" + e.what() + ")");
  }
  return r;
}

std::string model_fingerprint(const std::string& model_dir) {
  std::string acc;
  auto add = [&](const std::string& label, const std::string& bytes) {
    acc += label + ":" + std::to_string(bytes.size()) + ":" + sha256_hex(bytes) + "\n";
  };
  const std::string config = model_dir + "/config.json";
  add("config.json", read_file(config));
  Checkpoint ckpt = Checkpoint::open(model_dir);
  for (const auto& f : ckpt.files()) {
    std::ifstream in(f->path(), std::ios::binary);
    if (!in) throw InputError(f->path() + ": cannot open file");
    const uint64_t size = fs::file_size(f->path());
    uint64_t header_len = 0;
    in.read(reinterpret_cast<char*>(&header_len), 8);
    std::string header(size_t(std::min<uint64_t>(header_len, size - 8)), '\0');
    in.read(header.data(), std::streamsize(header.size()));
    std::string samples;
    const uint64_t block = 64 << 10;
    for (int k = 0; k < 16; ++k) {
      const uint64_t off = size > block ? (size - block) / 15 * uint64_t(k) : 0;
      std::string buf(size_t(std::min<uint64_t>(block, size)), '\0');
      in.seekg(std::streamoff(off));
      in.read(buf.data(), std::streamsize(buf.size()));
      samples += sha256_hex(buf);
    }
    if (!in) throw InputError(f->path() + ": read error while fingerprinting");
    acc += fs::path(f->path()).filename().string() + ":" + std::to_string(size) + "\n";
    add("header", header);
    add("blocks", samples);
  }
  return sha256_hex(acc);
}

std::string distance_key(const std::string& model_fingerprint, const std::string& data_sha256,
                         const CalibrationRecipe& recipe, const std::string& compute_dtype) {
  return sha256_hex("distances/v2\n" + model_fingerprint + "\n" + data_sha256 + "\n" + recipe.to_json() + "\n" + compute_dtype);
}

}  // namespace layerprune
