// Tasks a worker group runs, as JSON (one per line in a tasks file; later leased from the coordinator).
//
//   {"id": "t1", "kind": "forward", "model": "/models/x", "dtype": "float32",
//    "tokens": [[1, 2, 3], [1, 5]], "layers": [0, 1, 3], "hidden": true, "logits": true, "repeat": 1}
//
// forward: runs the sequences as one right-padded batch (pad id 0) through the kept `layers` (default: all)
// and writes <out>/<id>.safetensors ("logits" [B, T, V] float32, "hidden.K" [B, T, D] float32 for the input
// of the K-th kept layer and, last, the output before the final norm; "lengths" [B] int64) and
// <out>/<id>.json (per-rank bytes loaded and resident, the forward's communication counts, timings, code
// version).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace layerprune {

struct ForwardTask {
  std::string id, model, dtype = "float32";
  std::vector<std::vector<int64_t>> tokens;
  std::vector<int64_t> layers;
  bool hidden = false, logits = true;
  int64_t repeat = 1;  // run the forward pass this many times (benchmarks): times reported, last result kept

  nlohmann::json to_json() const;
  // InputError naming `where` ("tasks.jsonl:3") and the field for anything missing or malformed.
  static ForwardTask from_json(const nlohmann::json& j, const std::string& where);
};

// An experiment task (experiment/experiment.h, run by worker/experiment_tasks.h) in a tasks file, the way
// the coordinator would lease it: {"id": "t3", "kind": "distances|evaluate|heal", "payload": {...},
// "inputs": {"<dependency key>": <its result>}}; the result goes to <out>/<id>.json.
struct ExperimentTaskLine {
  std::string id, kind;
  nlohmann::json payload, inputs = nlohmann::json::object();
  nlohmann::json to_json() const;
  static ExperimentTaskLine from_json(const nlohmann::json& j, const std::string& where);
};

// A line of a tasks file: a forward task or an experiment task.
struct WorkerTask {
  std::string kind;  // "forward", "distances", "evaluate", "heal"
  ForwardTask forward;
  ExperimentTaskLine experiment;
  const std::string& id() const { return kind == "forward" ? forward.id : experiment.id; }
  nlohmann::json to_json() const { return kind == "forward" ? forward.to_json() : experiment.to_json(); }
  static WorkerTask from_json(const nlohmann::json& j, const std::string& where);
};

// Every task of a JSONL file (blank lines skipped); errors name file:line.
std::vector<WorkerTask> read_tasks(const std::string& path);

}  // namespace layerprune
