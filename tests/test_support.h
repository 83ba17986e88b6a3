// Shared by the tests: where the real data lives, temp dirs, and skipping with a clear message.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "common/error.h"

namespace layerprune::testing {

// Directory of real models/datasets: $LAYERPRUNE_DATA, else the CMake option LAYERPRUNE_DATA.
inline std::string data_dir() {
  if (const char* env = std::getenv("LAYERPRUNE_DATA"); env && *env) return env;
  return LAYERPRUNE_TEST_DATA;
}

// Absolute path of a file under the data directory, or "" when it is absent.
inline std::string data_file(const std::string& rel) {
  std::string p = data_dir() + "/" + rel;
  return std::filesystem::exists(p) ? p : std::string();
}

inline std::string source_file(const std::string& rel) { return std::string(LAYERPRUNE_SOURCE_DIR) + "/" + rel; }

// A fresh directory removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "layerprune-test-XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() {  // kept for a post-mortem when LAYERPRUNE_KEEP_TEST_DIRS is set
    if (std::getenv("LAYERPRUNE_KEEP_TEST_DIRS")) return;
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// The InputError message `f` throws ("" and a test failure when it throws nothing).
template <typename F>
std::string input_error(F f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an InputError";
  return "";
}

}  // namespace layerprune::testing

#define EXPECT_CONTAINS(text, part) \
  EXPECT_NE(std::string(text).find(part), std::string::npos) << "expected \"" << (part) << "\" in: " << (text)

// Declares `var` as the path of a data file, or skips the test saying what is missing and how to get it.
#define LP_REQUIRE_DATA(var, rel)                                                                          \
  const std::string var = ::layerprune::testing::data_file(rel);                                           \
  if (var.empty())                                                                                         \
    GTEST_SKIP() << "test data " << rel << " not found under " << ::layerprune::testing::data_dir()       \
                 << " (set LAYERPRUNE_DATA to the shared data directory)"
