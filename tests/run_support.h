// Helpers of the tests that drive the programs as a user does (test_run: `layerprune run`; test_slurm_cluster:
// `layerprune slurm submit` on a real Slurm cluster): waiting for a condition, logs that may not exist yet,
// processes found by their command line and environment, a small experiment, and its results per point.
#pragma once
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/text_file.h"

namespace layerprune::testing {

// Polls `ready` every `poll_ms` until it is true (true) or `seconds` have passed (false).
inline bool wait_until(const std::function<bool()>& ready, double seconds, int poll_ms = 50) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(int64_t(seconds * 1000));
  while (true) {
    if (ready()) return true;
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(poll_ms));
  }
}

// A file that may not exist yet (a log being written): "" until it does.
inline std::string read_or_empty(const std::string& path) {
  try {
    return read_file(path);
  } catch (const std::exception&) {
    return "";
  }
}

// The first file named `name` anywhere under `dir` (e.g. a healing checkpoint, "step-000004.safetensors"), or
// "" while there is none (or no `dir` yet).
inline std::string find_under(const std::string& dir, const std::string& name) {
  std::error_code ec;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir, ec))
    if (e.path().filename() == name) return e.path().string();
  return "";
}

// The pids of processes whose command line contains `needle` (not shells or launchers: sh, mpirun, srun) and
// whose environment has every "NAME=value" of `environment`.
inline std::vector<pid_t> pids_matching(const std::string& needle, const std::vector<std::string>& environment = {}) {
  namespace fs = std::filesystem;
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmdline = read_or_empty(e.path().string() + "/cmdline");
    std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
    if (cmdline.find(needle) == std::string::npos) continue;
    const std::string program = fs::path(cmdline.substr(0, cmdline.find(' '))).filename().string();
    if (program == "sh" || program == "bash" || program == "mpirun" || program == "srun") continue;
    std::string env = read_or_empty(e.path().string() + "/environ");
    std::replace(env.begin(), env.end(), '\0', '\n');
    env = "\n" + env;
    bool all = true;
    for (const std::string& v : environment) all = all && env.find("\n" + v + "\n") != std::string::npos;
    if (all) out.push_back(pid_t(std::stol(name)));
  }
  return out;
}

// A small experiment on stories260K (4 points, 3 tasks: evaluate, heal n=0, heal n=2; about 15 s of healing
// per 200 steps here), its models of TP size `tp`; `tail` is appended (e.g. a slurm: section).
inline std::string mini_experiment_yaml(int64_t steps, int tp = 1, const std::string& tail = "") {
  return "name: mini\n"
         "models:\n"
         "  - name: s\n"
         "    path: ${LAYERPRUNE_DATA}/stories260K/stories260K.bin\n"
         "    format: llama2c\n"
         "    tokenizer: ${LAYERPRUNE_DATA}/stories260K/tok512.model\n"
         "    dtype: float32\n" +
         (tp == 1 ? std::string() : "    tp: " + std::to_string(tp) + "\n") +
         "pruning:\n"
         "  layers: [0, 2]\n"
         "  strategies: [simple]\n"
         "healing:\n"
         "  - off\n"
         "  - name: lora\n"
         "    quant: none\n"
         "    steps: " + std::to_string(steps) + "\n"
         "    global_batch: 4\n"
         "    micro_batch: 4\n"
         "    seq_len: 64\n"
         "    lr: 2.0e-3\n"
         "    warmup: 2\n"
         "    checkpoint_every: 2\n"
         "    train_data: ${LAYERPRUNE_DATA}/tinystories/tinystories_val.txt\n"
         "    train_range: [0.0, 0.9]\n"
         "evaluation:\n"
         "  boolq:\n"
         "    data: ${LAYERPRUNE_DATA}/boolq/val.jsonl\n"
         "    limit: 10\n"
         "  loss:\n"
         "    data: ${LAYERPRUNE_DATA}/tinystories/tinystories_val.txt\n"
         "    range: [0.9, 1.0]\n"
         "    seq_len: 128\n"
         "    windows: 8\n" +
         tail;
}

// point -> metric -> value.
using PointResults = std::map<std::string, std::map<std::string, double>>;

// `layerprune results ID --format json` output as point -> metric -> value, failing the test on a repeated
// (point, metric) row: every grid point's metrics are stored exactly once.
inline PointResults results_by_point(const std::string& json_text) {
  PointResults out;
  for (const nlohmann::json& row : nlohmann::json::parse(json_text)) {
    const bool fresh = out[row.at("point")].emplace(row.at("metric"), row.at("value").get<double>()).second;
    EXPECT_TRUE(fresh) << "duplicate row " << row.dump();
  }
  return out;
}

}  // namespace layerprune::testing
