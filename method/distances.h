// Angular distances between layer inputs (Gromov et al. 2024, Eq. 7), measured on calibration text.
//
//   d(x^(l), x^(l+n)) = arccos( x^(l) . x^(l+n) / (|x^(l)| |x^(l+n)|) ) / pi
//
// at the last non-padding token of each sequence, averaged over the calibration samples. One forward pass
// (no LM head) yields every hidden state x^(0..L), so a batch gives all n = 1..L and all l at once: the
// (L+1) x (L+1) matrix of pairwise distances, accumulated in float64.
//
// The same pass gives the block influence of each layer (ShortGPT, Men et al. 2024, arXiv 2403.03853):
//
//   BI_l = 1 - mean over tokens of  x^(l) . x^(l+1) / (|x^(l)| |x^(l+1)|),   l = 0..L-1
//
// averaged over EVERY real (non-padding) token of every calibration sequence, position 0 (the BOS token,
// where the model adds one) included, each token weighing the same (a long sequence counts more than a
// short one); accumulated in float64. Unlike d, BI does not use the last token only.
//
// Calibration recipe (recorded with every result):
//   documents  C4-style JSONL (one object per line, string field "text") or plain text (paragraphs split on
//              blank lines); whitespace-only documents are dropped.
//   sampling   documents ordered by sha256("<seed>:<index>") (index = 0-based position in the file) and the
//              first `samples` taken: seeded, stable, and reproducible in any language (the reference script
//              tests/golden/make_distances_golden.py does it in Python). Fewer documents than samples is an
//              error, not a silent smaller sample.
//   tokens     BOS + the document's tokens, cut to `seq_len` tokens (clipped to the model's context); no BOS
//              for a model whose tokenizer adds none (Tokenizer::add_bos_default(), e.g. SmolLM2).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/llama.h"
#include "experiment/pruning.h"
#include "formats/tokenizer.h"

namespace layerprune {

struct CalibrationRecipe {
  int64_t samples = 64;
  int64_t seq_len = 512;
  uint64_t seed = 0;
  bool add_bos = true;  // the tokenizer's add_bos_default(); "nobos" in the rules when false
  // Canonical JSON of the fields above plus the rules' version: part of the result's key.
  std::string to_json() const;
};

// The file's sha256 is not here: callers hash it once for the result's key (DistanceResult::data_sha256).
struct CalibrationSet {
  int64_t documents = 0;                // usable documents in the file
  std::vector<int64_t> chosen;          // their indices, in sampling order
  std::vector<std::vector<int32_t>> sequences;  // [BOS] + tokens, at most seq_len each
  int64_t tokens() const;
};

// InputError (file:line for bad JSONL, counts when too few documents).
CalibrationSet build_calibration(const std::string& path, const Tokenizer& tokenizer, const CalibrationRecipe& recipe,
                                 int64_t max_positions);

struct DistanceOptions {
  int64_t batch_size = 4;
};

// Mean pairwise angular distances over the calibration sequences and each layer's block influence (progress
// on stderr).
DistanceTable measure_distances(const LlamaModel& model, const CalibrationSet& calibration,
                                const DistanceOptions& options = {});

// A measured table with everything that produced it; stored as JSON (the distance cache, results).
struct DistanceResult {
  std::string key;
  std::string model_dir, model_fingerprint, dtype;
  CalibrationRecipe recipe;
  std::string data_path, data_sha256;
  int64_t documents = 0, tokens = 0;
  DistanceTable table;
  double seconds = 0;
  std::string code_version;
  // Includes l*(n) and d(l*, n) for every n, for readers of the file, and "block_influence" [L].
  std::string to_json() const;
  // InputError naming `source` for malformed or inconsistent JSON. A result without "block_influence" (from
  // before it was measured; such results also carry another key, distances/v1) loads with none, and
  // block_influence pruning then asks for a new measurement.
  static DistanceResult from_json(const std::string& text, const std::string& source);
};

// Fingerprint of a checkpoint directory: sha256 over config.json, and per weight file its name, size, header
// and 16 sampled 64 KiB blocks. It tells checkpoints apart (another model, a re-saved or truncated file)
// without reading 140 GB; it is not a full content hash.
std::string model_fingerprint(const std::string& model_dir);

// The key a distance result is stored under: sha256 of (model fingerprint, calibration data sha256, recipe,
// compute dtype: bfloat16 hidden states give slightly different distances). Version distances/v2: results
// with block influence; a v1 cache entry is never found under a v2 key, so it is measured again.
std::string distance_key(const std::string& model_fingerprint, const std::string& data_sha256,
                         const CalibrationRecipe& recipe, const std::string& compute_dtype);

}  // namespace layerprune
