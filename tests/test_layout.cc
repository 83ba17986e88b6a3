// The house rules, checked: one folder per library, includes pointing down the pipeline, LibTorch and MPI
// only where they belong, and a coordinator binary that links neither.
//
//   common <- formats <- model (+ kernels) <- evaluation <- healing
//   experiment (formats, common) <- method (model, evaluation) ; proto (experiment) <- coordinator
//   worker (method, healing, experiment, proto) ; launcher (common) <- deploy (experiment) ; cli, bench, tests: anything
#include <gtest/gtest.h>

#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;

const fs::path kSource = LAYERPRUNE_SOURCE_DIR;

// The folders each library's sources may include from (besides their own and system headers).
const std::map<std::string, std::set<std::string>>& allowed_includes() {
  static const std::map<std::string, std::set<std::string>> allowed = {
      {"common", {}},
      {"formats", {"common"}},
      {"kernels", {}},
      {"model", {"common", "formats", "kernels"}},
      {"evaluation", {"common", "formats", "kernels", "model"}},
      {"healing", {"common", "formats", "kernels", "model"}},
      {"experiment", {"common", "formats"}},
      {"method", {"common", "formats", "kernels", "model", "evaluation", "experiment"}},
      {"proto", {"common", "formats", "experiment"}},
      {"coordinator", {"common", "formats", "experiment", "proto"}},
      {"worker", {"common", "formats", "kernels", "model", "evaluation", "healing", "method", "experiment", "proto"}},
      // The launcher interface and its local (mpirun) side; the Slurm side in deploy/. Both run on a login
      // node: torch-free, like the coordinator.
      {"launcher", {"common"}},
      {"deploy", {"common", "formats", "experiment", "launcher"}},
      // libFuzzer targets of the parsers of outside input, built with clang apart from the main build.
      {"fuzz", {"common", "formats", "experiment", "evaluation", "proto", "coordinator"}},
  };
  return allowed;
}

// Folders whose code must not see LibTorch, ATen or MPI (they run where neither is installed).
const std::set<std::string> kTorchFree = {"common", "formats", "experiment", "proto", "coordinator", "launcher",
                                          "deploy", "fuzz"};

struct Include {
  fs::path file;
  int line;
  std::string target;  // "model/llama.h" or "<torch/torch.h>"
  bool quoted;
};

std::vector<Include> includes_of(const fs::path& file) {
  static const std::regex re(R"(^\s*#\s*include\s*([<"])([^>"]+)[>"])");
  std::vector<Include> out;
  std::ifstream in(file);
  std::string text;
  int line = 0;
  while (std::getline(in, text)) {
    ++line;
    std::smatch m;
    if (std::regex_search(text, m, re)) out.push_back({file, line, m[2].str(), m[1].str() == "\""});
  }
  return out;
}

// Every C++/CUDA source of the project, by top-level folder (build outputs and dot-folders skipped).
std::map<std::string, std::vector<fs::path>> sources_by_folder() {
  std::map<std::string, std::vector<fs::path>> out;
  for (auto it = fs::recursive_directory_iterator(kSource); it != fs::recursive_directory_iterator(); ++it) {
    const fs::path rel = fs::relative(it->path(), kSource);
    const std::string top = rel.begin()->string();
    if (it->is_directory() && (top.empty() || top[0] == '.' || top == "build" || top.rfind("build", 0) == 0 ||
                               top == "out")) {
      it.disable_recursion_pending();
      continue;
    }
    if (!it->is_regular_file()) continue;
    const std::string ext = it->path().extension().string();
    if (ext == ".h" || ext == ".cc" || ext == ".cu" || ext == ".cuh") out[top].push_back(it->path());
  }
  return out;
}

std::string folder_of(const std::string& include) {
  const size_t slash = include.find('/');
  return slash == std::string::npos ? "" : include.substr(0, slash);
}

bool is_torch_or_mpi(const std::string& include) {
  static const std::regex re(R"(^(torch|ATen|c10|caffe2)/|^(mpi\.h|nccl\.h|cuda_runtime.*\.h)$)");
  return std::regex_search(include, re);
}

std::string where(const Include& inc) {
  return fs::relative(inc.file, kSource).string() + ":" + std::to_string(inc.line) + ": #include " +
         (inc.quoted ? "\"" + inc.target + "\"" : "<" + inc.target + ">");
}

TEST(Layout, EveryLibraryFolderIsKnown) {
  const auto sources = sources_by_folder();
  const std::set<std::string> free_folders = {"cli", "bench", "tests", "cmake"};
  for (const auto& [folder, files] : sources) {
    if (free_folders.count(folder)) continue;
    EXPECT_TRUE(allowed_includes().count(folder))
        << folder << "/ holds code (" << fs::relative(files.front(), kSource).string()
        << ") but is not in the layout table of tests/test_layout.cc";
  }
  for (const char* expected : {"common", "formats", "kernels", "model", "evaluation", "healing", "experiment",
                               "method", "proto", "coordinator", "worker"})
    EXPECT_TRUE(sources.count(expected)) << expected << "/ is missing";
}

TEST(Layout, IncludesPointDownThePipeline) {
  std::vector<std::string> violations;
  for (const auto& [folder, files] : sources_by_folder()) {
    auto rule = allowed_includes().find(folder);
    if (rule == allowed_includes().end()) continue;  // cli, bench, tests: anything
    for (const auto& file : files)
      for (const Include& inc : includes_of(file)) {
        if (!inc.quoted) continue;
        const std::string target = folder_of(inc.target);
        if (target.empty() || target == folder) continue;
        if (!fs::exists(kSource / target) && target != "proto") continue;  // generated or third-party
        if (!rule->second.count(target))
          violations.push_back(where(inc) + "  (" + folder + "/ may include only: " +
                               [&] {
                                 std::string s;
                                 for (const auto& a : rule->second) s += (s.empty() ? "" : ", ") + a;
                                 return s.empty() ? std::string("nothing outside itself") : s;
                               }() +
                               ")");
      }
  }
  for (const auto& v : violations) ADD_FAILURE() << v;
}

TEST(Layout, TorchFreeFoldersIncludeNoTorchOrMpi) {
  std::vector<std::string> violations;
  for (const auto& [folder, files] : sources_by_folder()) {
    if (!kTorchFree.count(folder)) continue;
    for (const auto& file : files)
      for (const Include& inc : includes_of(file))
        if (!inc.quoted && is_torch_or_mpi(inc.target)) violations.push_back(where(inc));
  }
  for (const auto& v : violations) ADD_FAILURE() << v << "  (" << "this folder must stay free of LibTorch and MPI)";
}

// The ASan build's leak suppressions name __vasprintf_internal (OpenMPI calls asprintf from a library
// without frame pointers: cmake/sanitizer_defaults.cc); that stays safe only while no code of ours
// allocates through asprintf or vasprintf, whose leaks it would hide.
TEST(Layout, NoSourceCallsAsprintf) {
  static const std::regex call(R"(\bv?asprintf\s*\()");
  std::vector<std::string> found;
  for (const auto& [folder, files] : sources_by_folder())
    for (const auto& file : files) {
      if (file.filename() == "test_layout.cc") continue;  // this test's own pattern
      std::ifstream in(file);
      std::string text;
      for (int line = 1; std::getline(in, text); ++line)
        if (std::regex_search(text, call)) found.push_back(file.string() + ":" + std::to_string(line));
    }
  for (const auto& f : found) ADD_FAILURE() << f << ": calls asprintf/vasprintf (use std::string formatting)";
  EXPECT_TRUE(std::regex_search("  n = asprintf(&s, \"%d\", 1);", call));
}

// The rule checker itself: a planted violation is found (so an empty result above means something).
TEST(Layout, CheckerFindsAPlantedViolation) {
  const fs::path dir = fs::temp_directory_path() / ("lp_layout_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const fs::path file = dir / "bad.cc";
  std::ofstream(file) << "#include <vector>\n#include \"worker/stages.h\"\n  #  include <torch/torch.h>\n";
  const auto incs = includes_of(file);
  fs::remove_all(dir);
  ASSERT_EQ(incs.size(), 3u);
  EXPECT_EQ(folder_of(incs[1].target), "worker");
  EXPECT_FALSE(allowed_includes().at("coordinator").count("worker"));
  EXPECT_TRUE(is_torch_or_mpi(incs[2].target));
  EXPECT_TRUE(is_torch_or_mpi("mpi.h"));
  EXPECT_FALSE(is_torch_or_mpi("nlohmann/json.hpp"));
}

// What a shell command prints on stdout and stderr.
std::string command_output(const std::string& cmd) {
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen((cmd + " 2>&1").c_str(), "r"), pclose);
  if (!pipe) return "";
  std::string out;
  std::array<char, 4096> buf{};
  while (size_t n = fread(buf.data(), 1, buf.size(), pipe.get())) out.append(buf.data(), n);
  return out;
}

fs::path built(const std::string& folder, const std::string& program) {
  return fs::path(LAYERPRUNE_BINARY_DIR) / folder / program;
}

// `layerprune-coordinator` runs on a login node: its binary needs neither LibTorch nor MPI.
TEST(Layout, CoordinatorBinaryLinksNeitherTorchNorMpi) {
  const fs::path binary = built("coordinator", "layerprune-coordinator");
  ASSERT_TRUE(fs::exists(binary)) << binary << " not built";
  const std::string out = command_output("ldd '" + binary.string() + "'");
  ASSERT_NE(out.find("libc.so"), std::string::npos) << "ldd printed no libraries: " << out;
  for (const char* lib : {"libtorch", "libc10", "libmpi", "libnccl", "libcudart", "libgomp"})
    EXPECT_EQ(out.find(lib), std::string::npos) << "layerprune-coordinator links " << lib << ":\n" << out;
  // The same check on a binary that does link LibTorch, so a broken ldd cannot pass the test.
  const fs::path worker = built("worker", "layerprune-worker");
  ASSERT_TRUE(fs::exists(worker)) << worker << " not built";
  const std::string wout = command_output("ldd '" + worker.string() + "'");
  EXPECT_NE(wout.find("libtorch"), std::string::npos) << "ldd of layerprune-worker shows no libtorch:\n" << wout;
  EXPECT_NE(wout.find("libmpi"), std::string::npos) << "ldd of layerprune-worker shows no libmpi:\n" << wout;
}

// PyPI's libtorch.so exports its own copies of libstdc++'s std::filesystem functions; a program that names
// libtorch before libstdc++ calls those, and std::filesystem::remove_all crashed through them. Every
// LibTorch program must name libstdc++ first (CMakeLists.txt links it so).
TEST(Layout, TorchProgramsNameLibstdcxxBeforeLibtorch) {
  for (const auto& [folder, program] : std::vector<std::pair<std::string, std::string>>{
           {"worker", "layerprune-worker"}, {"cli", "layerprune"}, {"tests", "test_llama"}}) {
    const fs::path binary = built(folder, program);
    ASSERT_TRUE(fs::exists(binary)) << binary << " not built";
    const std::string out = command_output("readelf -d '" + binary.string() + "'");
    const size_t stdcxx = out.find("[libstdc++.so"), torch = out.find("[libtorch");
    ASSERT_NE(torch, std::string::npos) << program << " needs no libtorch?\n" << out;
    ASSERT_NE(stdcxx, std::string::npos) << program << " needs no libstdc++?\n" << out;
    EXPECT_LT(stdcxx, torch) << program << " names libtorch before libstdc++:\n" << out;
  }
}

}  // namespace
