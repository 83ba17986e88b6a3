// The orchestrator end to end, as a user runs it: `layerprune run` on real experiments (coordinator,
// SQLite, MPI workers leasing distances/evaluate/heal tasks), processes killed with SIGKILL mid-run, and
// the input errors that must leave nothing behind.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/text_file.h"
#include "tests/run_support.h"
#include "tests/test_support.h"

namespace layerprune {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct CliRun {
  int status = -1;
  std::string out, err;
};

std::string env_prefix() {
  return "LAYERPRUNE_DATA='" + testing::data_dir() + "' OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 ";
}
std::string layerprune() { return std::string(LAYERPRUNE_BINARY_DIR) + "/cli/layerprune"; }

CliRun run(const std::string& args, const std::string& err_file) {
  const std::string cmd = env_prefix() + layerprune() + " " + args + " 2> " + err_file;
  FILE* p = popen(cmd.c_str(), "r");
  CliRun r;
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  r.err = read_file(err_file);
  return r;
}

// `layerprune run` in the background (its own process group, killed with it at the end of the test).
struct Background {
  pid_t pid = -1;
  std::string out, err;
  Background(const std::string& args, const std::string& dir) : out(dir + "/run.out"), err(dir + "/run.err") {
    pid = fork();
    if (pid == 0) {
      setpgid(0, 0);
      const std::string cmd = "exec env " + env_prefix() + layerprune() + " " + args + " > " + out + " 2> " + err;
      execl("/bin/sh", "sh", "-c", cmd.c_str(), (char*)nullptr);
      _exit(127);
    }
  }
  int wait(double seconds) {
    for (int i = 0; i < int(seconds * 10); ++i) {
      int st = 0;
      if (waitpid(pid, &st, WNOHANG) == pid) {
        pid = -1;
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
      }
      usleep(100'000);
    }
    return -2;  // still running
  }
  ~Background() {
    if (pid > 0) {
      kill(-pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  }
};

// point -> metric -> value, failing the test on a repeated (point, metric) row.
testing::PointResults results_of(const std::string& db, const std::string& err_file) {
  CliRun r = run("results 1 --db " + db + " --format json", err_file);
  EXPECT_EQ(r.status, 0) << r.err;
  return testing::results_by_point(r.out);
}

class Run : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* f : {"stories260K/stories260K.bin", "stories260K/tok512.model", "tinystories/tinystories_val.txt",
                          "boolq/val.jsonl", "mmlu/hendrycks_format"})
      if (testing::data_file(f).empty()) GTEST_SKIP() << f << " not found under " << testing::data_dir();
  }
  std::string file(const std::string& name) const { return tmp_.file(name); }
  // The uninterrupted mini run's results (the reference for the kill tests). Two tests compare with the same
  // 300-step run, each in its own process (ctest runs one test per process, two at a time): the first to
  // need it computes it under a file lock and leaves it in the build tree, keyed by the programs' build
  // times, so the second reads it instead of running the same experiment again.
  testing::PointResults reference(int64_t steps) {
    write_file(file("ref.yaml"), testing::mini_experiment_yaml(steps));
    const std::string dir = std::string(LAYERPRUNE_BINARY_DIR) + "/tests/run-reference";
    fs::create_directories(dir);
    std::string key = std::to_string(steps);
    for (const std::string& program : {layerprune(), std::string(LAYERPRUNE_BINARY_DIR) + "/worker/layerprune-worker"})
      key += " " + std::to_string(fs::last_write_time(program).time_since_epoch().count());
    const std::string cached = dir + "/steps-" + std::to_string(steps) + ".json";
    const int lock = ::open((dir + "/lock").c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644);
    EXPECT_GE(lock, 0) << dir;
    EXPECT_EQ(flock(lock, LOCK_EX), 0);
    testing::PointResults out;
    const json previous = fs::exists(cached) ? json::parse(read_file(cached)) : json();
    if (previous.is_object() && previous.value("key", "") == key) {
      out = previous.at("results").get<testing::PointResults>();
    } else {
      CliRun r = run("run " + file("ref.yaml") + " --state " + file("ref"), file("ref.err"));
      EXPECT_EQ(r.status, 0) << r.err;
      out = results_of(file("ref/layerprune.db"), file("q.err"));
      if (r.status == 0 && !out.empty()) write_file(cached, json{{"key", key}, {"results", out}}.dump());
    }
    flock(lock, LOCK_UN);
    ::close(lock);
    return out;
  }
  testing::TempDir tmp_;
};

// The shipped experiment's grid (every depth, both strategies, with and without healing) with less
// evaluation data: the demo runs the file as it is; here most of its time would be evaluation (each healed
// point scores 20 MMLU prompts of 512 tokens, 100 BoolQ questions and 40 loss windows), which the other tests
// cover. Each cut is checked to have happened, so the copy cannot silently become something else.
std::string lighter_stories260k_yaml() {
  std::string yaml = read_file(std::string(LAYERPRUNE_SOURCE_DIR) + "/experiments/stories260k.yaml");
  for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
           {"    limit: 5 ", "    limit: 1 "}, {"    limit: 100\n", "    limit: 20\n"}, {"    windows: 40\n", "    windows: 8\n"}}) {
    const size_t at = yaml.find(from);
    EXPECT_NE(at, std::string::npos) << "experiments/stories260k.yaml no longer has '" << from << "'";
    if (at != std::string::npos) yaml.replace(at, from.size(), to);
  }
  // Relative paths in the file are relative to its directory; ${LAYERPRUNE_DATA} is all it uses.
  EXPECT_EQ(yaml.find("path: ."), std::string::npos);
  return yaml;
}

TEST_F(Run, Stories260KExperimentPrintsEveryGridPoint) {
  write_file(file("stories260k.yaml"), lighter_stories260k_yaml());
  CliRun r = run("run " + file("stories260k.yaml") + " --state " + file("s"), file("s.err"));
  ASSERT_EQ(r.status, 0) << r.err;
  // One table per metric, a row per n = 0..4, a column per strategy x healing, every cell a number.
  for (const char* metric : {"boolq", "loss", "mmlu"}) {
    const size_t at = r.out.find("stories260k (L = 5), " + std::string(metric) + "\n");
    ASSERT_NE(at, std::string::npos) << r.out;
    std::istringstream lines(r.out.substr(at));
    std::string line;
    std::getline(lines, line);
    std::getline(lines, line);
    EXPECT_EQ(line.find("similarity/off  similarity/qlora  simple/off  simple/qlora") != std::string::npos, true) << line;
    for (int n = 0; n < 5; ++n) {
      std::getline(lines, line);
      std::istringstream cells(line);
      double fraction, value;
      int row_n;
      cells >> fraction >> row_n;
      EXPECT_EQ(row_n, n) << line;
      for (int c = 0; c < 4; ++c) EXPECT_TRUE(bool(cells >> value)) << metric << " n=" << n << ": " << line;
    }
  }
  // The database holds each of the 18 points' metrics exactly once (results_of fails on a duplicate).
  const auto results = results_of(file("s/layerprune.db"), file("q.err"));
  EXPECT_EQ(results.size(), 18u);
  for (const auto& [point, metrics] : results) {
    for (const char* m : {"mmlu", "boolq", "loss"}) EXPECT_EQ(metrics.count(m), 1u) << point << " " << m;
  }
  // Healing lowers the loss of every pruned model.
  for (const char* s : {"similarity", "simple"})
    for (int n = 1; n < 5; ++n) {
      const std::string p = "stories260k/n=" + std::to_string(n) + "/" + s + "/";
      EXPECT_LT(results.at(p + "qlora/seed=0").at("loss"), results.at(p + "off/seed=0").at("loss")) << p;
    }
  // The SVG: both strategies, with and without healing.
  const std::string svg = read_file(file("s/curves.svg"));
  EXPECT_EQ(svg.rfind("<svg", 0) == 0 || svg.rfind("<?xml", 0) == 0, true);
  for (const char* legend : {"similarity, no healing", "similarity, healed (qlora)", "simple, no healing",
                             "simple, healed (qlora)"})
    EXPECT_CONTAINS(svg, legend);
  // The distances as the paper's Figure 1c, one heatmap per model, named on the last line.
  const std::string heatmap = read_file(file("s/distances-stories260k.svg"));
  EXPECT_EQ(heatmap.rfind("<svg", 0) == 0 || heatmap.rfind("<?xml", 0) == 0, true);
  EXPECT_CONTAINS(heatmap, "angular distance d(x_l, x_l+n): stories260k");
  EXPECT_CONTAINS(r.out, file("s/distances-stories260k.svg"));
  // `curves` on the database prints the same tables.
  CliRun c = run("curves 1 --db " + file("s/layerprune.db"), file("c.err"));
  ASSERT_EQ(c.status, 0) << c.err;
  EXPECT_CONTAINS(r.out, c.out);
}

TEST_F(Run, AWorkerKilledMidHealingIsReplacedAndItsTaskResumes) {
  const auto want = reference(60);
  write_file(file("k.yaml"), testing::mini_experiment_yaml(60));
  Background bg("run " + file("k.yaml") + " --state " + file("k") + " --lease-seconds 3", tmp_.path());
  // SIGKILL the worker once a healing task has checkpointed (mid-training: 60 steps, a checkpoint every 2).
  const std::string ckpt = file("k/checkpoints/mini/heal");
  ASSERT_TRUE(testing::wait_until([&] { return !testing::find_under(ckpt, "step-000004.safetensors").empty(); }, 120)) << testing::read_or_empty(bg.err);
  const std::vector<pid_t> workers = testing::pids_matching("layerprune-worker --tp 1 --coordinator " + file("k"));
  ASSERT_EQ(workers.size(), 1u);
  kill(workers[0], SIGKILL);
  ASSERT_EQ(bg.wait(300), 0) << testing::read_or_empty(bg.err);
  const std::string err = testing::read_or_empty(bg.err);
  EXPECT_CONTAINS(err, "starting it again");
  // The task's lease expired, it was leased again and resumed from its checkpoint: same numbers.
  EXPECT_EQ(results_of(file("k/layerprune.db"), file("q.err")), want);
  const std::string log = read_file(file("k/logs/workers-tp1.log"));
  EXPECT_CONTAINS(log, "resumed");
  EXPECT_CONTAINS(log, "(attempt 2)");
}

TEST_F(Run, ACoordinatorKilledMidRunRestartsFromItsDatabase) {
  // Healing long enough (300 steps, seconds) that the kill lands while one runs.
  const auto want = reference(300);
  write_file(file("c.yaml"), testing::mini_experiment_yaml(300));
  Background bg("run " + file("c.yaml") + " --state " + file("c"), tmp_.path());
  // The evaluate task's 2 points are in: the heal tasks are next.
  ASSERT_TRUE(testing::wait_until([&] { return testing::read_or_empty(bg.err).find("2/4 points") != std::string::npos; }, 120))
      << testing::read_or_empty(bg.err);
  const std::vector<pid_t> coordinators = testing::pids_matching("layerprune-coordinator --db " + file("c"));
  ASSERT_EQ(coordinators.size(), 1u);
  kill(coordinators[0], SIGKILL);
  ASSERT_EQ(bg.wait(300), 0) << testing::read_or_empty(bg.err);
  EXPECT_CONTAINS(testing::read_or_empty(bg.err), "the coordinator exited with status 137; starting it again");
  EXPECT_EQ(results_of(file("c/layerprune.db"), file("q.err")), want) << "nothing lost, nothing repeated";
}

TEST_F(Run, CtrlCStopsCleanlyAndTheSameCommandResumes) {
  const auto want = reference(300);
  write_file(file("i.yaml"), testing::mini_experiment_yaml(300));
  const std::string args = "run " + file("i.yaml") + " --state " + file("i");
  {
    Background bg(args, tmp_.path());
    const std::string ckpt = file("i/checkpoints/mini/heal");
    ASSERT_TRUE(testing::wait_until([&] { return !testing::find_under(ckpt, "step-000004.safetensors").empty(); }, 120)) << testing::read_or_empty(bg.err);
    kill(bg.pid, SIGINT);  // what the terminal sends on Ctrl-C
    EXPECT_EQ(bg.wait(120), 130) << testing::read_or_empty(bg.err);
    const std::string err = testing::read_or_empty(bg.err);
    EXPECT_CONTAINS(err, "run the same command again to resume");
    EXPECT_CONTAINS(testing::read_or_empty(file("i/logs/workers-tp1.log")), "lease given back");
  }
  EXPECT_TRUE(testing::pids_matching("layerprune-worker --tp 1 --coordinator " + file("i")).empty()) << "no worker left running";
  EXPECT_TRUE(testing::pids_matching("layerprune-coordinator --db " + file("i")).empty()) << "no coordinator left running";
  CliRun again = run(args, file("again.err"));
  ASSERT_EQ(again.status, 0) << again.err;
  EXPECT_CONTAINS(again.err, "resumed from the database");
  EXPECT_CONTAINS(testing::read_or_empty(file("i/logs/workers-tp1.log")), "resumed");
  EXPECT_EQ(results_of(file("i/layerprune.db"), file("q.err")), want);
}

TEST_F(Run, BadInputsExitWithClearErrorsAndLeaveNothingBehind) {
  // Malformed YAML: file:line:column, exit 2, no state written.
  write_file(file("bad.yaml"), testing::mini_experiment_yaml(4) + "  mmlu: {shots: five}\n");
  CliRun r = run("run " + file("bad.yaml") + " --state " + file("b1"), file("b1.err"));
  EXPECT_EQ(r.status, 2);
  EXPECT_CONTAINS(r.err, file("bad.yaml") + ":33:");
  EXPECT_FALSE(fs::exists(file("b1/layerprune.db")));
  // A model path that does not exist: named, with its YAML line.
  std::string missing = testing::mini_experiment_yaml(4);
  missing.replace(missing.find("stories260K.bin"), 15, "nothing.bin");
  write_file(file("missing.yaml"), missing);
  r = run("run " + file("missing.yaml") + " --state " + file("b2"), file("b2.err"));
  EXPECT_EQ(r.status, 2);
  EXPECT_CONTAINS(r.err, "missing.yaml:4:");
  EXPECT_CONTAINS(r.err, "no llama2.c checkpoint at");
  EXPECT_FALSE(fs::exists(file("b2/layerprune.db")));
  // An unreachable coordinator: exit 4 within the retry window, saying where it tried.
  const auto t0 = std::chrono::steady_clock::now();
  r = run("status --coordinator 127.0.0.1:1 --retry-seconds 1", file("b3.err"));
  EXPECT_EQ(r.status, 4) << r.err;
  EXPECT_CONTAINS(r.err, "127.0.0.1:1");
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 30);
  r = run("submit " + file("ref.yaml") + " --coordinator 127.0.0.1:1 --retry-seconds 1", file("b4.err"));
  EXPECT_NE(r.status, 0);
}

}  // namespace
}  // namespace layerprune
