// Shared by the libFuzzer targets (fuzz/fuzz_*.cc): a per-process scratch directory for parsers that take a
// path, and the one rule every target follows: the project's documented errors (InputError and its
// subclasses) are a correct answer to a bad input; any other exception escapes LLVMFuzzerTestOneInput,
// std::terminate aborts, and libFuzzer reports it as a crash with the input that caused it.
#pragma once
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/error.h"

namespace lpfuzz {

// $LPFUZZ_TMPDIR (deploy/fuzz.sh sets it), else /dev/shm (memory: no disk writes per execution), else the
// system's temporary directory; one subdirectory per process, removed when the process exits normally (and
// by the next target to start when the process was killed or crashed).
class Scratch {
 public:
  Scratch() {
    namespace fs = std::filesystem;
    std::string root;
    if (const char* env = std::getenv("LPFUZZ_TMPDIR"); env && *env) root = env;
    else if (access("/dev/shm", W_OK) == 0) root = "/dev/shm";
    else root = fs::temp_directory_path().string();
    // A process that crashed or was killed left its directory: remove those whose process is gone.
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(root, ec)) {
      const std::string name = e.path().filename().string();
      if (name.rfind("lpfuzz-", 0) != 0 || name.size() == 7 ||
          name.find_first_not_of("0123456789", 7) != std::string::npos)
        continue;
      const long pid = std::strtol(name.c_str() + 7, nullptr, 10);
      if (pid > 0 && kill(pid_t(pid), 0) != 0 && errno == ESRCH) fs::remove_all(e.path(), ec);
    }
    dir_ = root + "/lpfuzz-" + std::to_string(getpid());
    fs::create_directories(dir_);
  }
  ~Scratch() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  const std::string& dir() const { return dir_; }
  // Writes the bytes to dir()/name (subdirectories created) and returns the path.
  std::string write(const std::string& name, const uint8_t* data, size_t size) const {
    const std::string path = dir_ + "/" + name;
    std::filesystem::create_directories(std::filesystem::path(path).parent_path());
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), std::streamsize(size));
    out.close();
    if (!out) {
      std::fprintf(stderr, "lpfuzz: cannot write %s\n", path.c_str());
      std::abort();
    }
    return path;
  }
  std::string write(const std::string& name, const std::string& bytes) const {
    return write(name, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  }

 private:
  std::string dir_;
};

inline const Scratch& scratch() {
  static const Scratch s;
  return s;
}

// Whether LPFUZZ_VERBOSE is set: then every refusal is printed (to see which seeds a parser accepts:
// `LPFUZZ_VERBOSE=1 build-fuzz/fuzz_gguf fuzz/corpus/gguf/*`).
inline bool verbose() {
  static const bool v = std::getenv("LPFUZZ_VERBOSE") != nullptr;
  return v;
}

// Runs f; an InputError (the documented answer to bad input) is swallowed, anything else propagates.
template <class F>
void accept_input_errors(F&& f) {
  try {
    f();
    if (verbose()) std::fprintf(stderr, "lpfuzz: accepted\n");
  } catch (const layerprune::InputError& e) {
    if (verbose()) std::fprintf(stderr, "lpfuzz: InputError: %.300s\n", e.what());
  }
}

// A finding that is not an exception or a sanitizer report (a broken round trip, an inconsistent answer).
#define LPFUZZ_CHECK(cond, what)                                                      \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      std::fprintf(stderr, "lpfuzz: check failed at %s:%d: %s (%s)\n", __FILE__, __LINE__, #cond, what); \
      std::abort();                                                                   \
    }                                                                                 \
  } while (0)

// Text every tokenizer target encodes: ASCII words, digits, runs of spaces and newlines, contractions,
// accented and CJK letters, an emoji, control-token spellings, and bytes that are not UTF-8.
inline const std::string& sample_text() {
  static const std::string s =
      "Hello world! It's 2024: 12345 tokens, isn't it?\n\n  Once upon a time\tthere was   a caf\xC3\xA9 "
      "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xF0\x9F\x98\x80 <s> </s> <unk> <|im_start|>user<|im_end|> "
      "<|endoftext|> \xFF\xFE bad \xC3 utf8 \xE2\x96\x81 end.  ";
  return s;
}

}  // namespace lpfuzz
