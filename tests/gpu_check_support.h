// Shared by the GPU check's programs (tests/test_gpu.cc, bench/gpu.cc; deploy/gpu_check.sh runs them): the
// real models converted once into a work directory both programs reuse, and the report file every check
// appends its line to. No GoogleTest here (the benchmark does not link it).
#pragma once
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/progress.h"
#include "formats/gguf_llama.h"
#include "model/llama2c.h"

namespace layerprune::gpu_check {

// $LAYERPRUNE_DATA, else the build's LAYERPRUNE_DATA.
inline std::string data_dir() {
  if (const char* env = std::getenv("LAYERPRUNE_DATA"); env && *env) return env;
  return LAYERPRUNE_TEST_DATA;
}

// A data file's path, or "" when it is absent.
inline std::string data_file(const std::string& rel) {
  const std::string p = data_dir() + "/" + rel;
  return std::filesystem::exists(p) ? p : std::string();
}

constexpr const char* kStoriesBin = "stories260K/stories260K.bin";
constexpr const char* kStoriesTokenizer = "stories260K/tok512.model";
constexpr const char* kSmolLM2Gguf = "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

// Where converted models live: $LAYERPRUNE_GPU_WORK (the script points both programs at one, kept), else a
// directory of this process under the temp dir, removed at exit.
inline std::string work_dir() {
  struct Dir {
    std::string path;
    bool owned = false;
    ~Dir() {
      if (!owned || std::getenv("LAYERPRUNE_KEEP_TEST_DIRS")) return;
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  };
  static Dir dir;
  static const bool made = [] {
    if (const char* env = std::getenv("LAYERPRUNE_GPU_WORK"); env && *env) {
      std::filesystem::create_directories(env);
      dir.path = env;
    } else {
      std::string tmpl = (std::filesystem::temp_directory_path() / "layerprune-gpu-XXXXXX").string();
      dir.path = mkdtemp(tmpl.data());
      dir.owned = true;
    }
    return true;
  }();
  (void)made;
  return dir.path;
}

// A converted model directory, made once: `convert` writes into dir, and a marker says it completed (a
// conversion killed half-way is redone).
template <typename F>
std::string converted(const std::string& name, F convert) {
  const std::string dir = work_dir() + "/" + name, done = dir + "/.converted";
  if (!std::filesystem::exists(done)) {
    std::filesystem::remove_all(dir);
    Progress::set_quiet(true);
    convert(dir);
    Progress::set_quiet(false);
    std::ofstream(done) << "ok\n";
  }
  return dir;
}

// stories260K (llama2.c) as a Hugging Face directory, or "" when the data is absent.
inline std::string stories260k_dir() {
  const std::string bin = data_file(kStoriesBin), tok = data_file(kStoriesTokenizer);
  if (bin.empty() || tok.empty()) return "";
  return converted("stories260K", [&](const std::string& dir) { convert_llama2c(bin, tok, dir); });
}

// SmolLM2-135M-Instruct (GGUF) as a Hugging Face directory (float32), or "" when the data is absent.
inline std::string smollm2_dir() {
  const std::string gguf = data_file(kSmolLM2Gguf);
  if (gguf.empty()) return "";
  return converted("smollm2", [&](const std::string& dir) { convert_gguf(gguf, dir); });
}

// Appends one line to $LAYERPRUNE_GPU_REPORT (when set) and prints it.
inline void report_line(const std::string& line) {
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
  if (const char* path = std::getenv("LAYERPRUNE_GPU_REPORT"); path && *path) std::ofstream(path, std::ios::app) << line << "\n";
}

}  // namespace layerprune::gpu_check
