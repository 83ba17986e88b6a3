// Test fixtures that need the model library: stories260K converted once per test binary.
#pragma once
#include <gtest/gtest.h>

#include <string>

#include "tests/test_support.h"
#include "model/llama2c.h"

namespace layerprune::testing {

// Converts stories260K (llama2.c format, ../shared/data) into a temp HF directory once per test suite
// (a few ms); tests skip with a message when the data is absent.
class Stories260K : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string bin = data_file("stories260K/stories260K.bin");
    std::string tok = data_file("stories260K/tok512.model");
    if (bin.empty() || tok.empty()) return;
    dir_ = new TempDir();
    convert_llama2c(bin, tok, dir_->path() + "/stories260K");
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (!dir_) GTEST_SKIP() << "stories260K not found under " << data_dir() << " (set LAYERPRUNE_DATA)";
  }
  static std::string model_dir() { return dir_->path() + "/stories260K"; }
  static std::string tokenizer_path() { return model_dir() + "/tokenizer.model"; }
  static inline TempDir* dir_ = nullptr;
};

}  // namespace layerprune::testing
