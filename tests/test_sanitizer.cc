// The sanitizer builds (deploy/sanitize.sh) catch what they are there for. Each planted bug runs in a child
// process (this program again, one DISABLED_ test, its reports on stderr instead of the run's report files)
// which must die with the sanitizer's report: a build whose options or suppressions had switched a check
// off fails here instead of passing the suite silently. Built in sanitizer builds only.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/child_process.h"
#include "tests/test_support.h"

namespace layerprune {
namespace {

// Runs DISABLED_<test> of this suite in a child; its exit status and output.
std::pair<int, std::string> run_planted(const std::string& test) {
  testing::TempDir dir;
  const std::string out = dir.file("out.txt");
  // log_path=stderr for every sanitizer: the child's report is read here, not left among the run's reports.
  for (const char* var : {"ASAN_OPTIONS", "UBSAN_OPTIONS", "TSAN_OPTIONS"}) setenv(var, "log_path=stderr", 1);
  const pid_t pid = testing::spawn_logged(
      {"/proc/self/exe", "--gtest_also_run_disabled_tests", "--gtest_filter=SanitizerPlanted.DISABLED_" + test}, out);
  int st = 0;
  waitpid(pid, &st, 0);
  std::ifstream in(out);
  std::stringstream text;
  text << in.rdbuf();
  return {WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), text.str()};
}

// The planted bugs. volatile and noinline keep the compiler from folding them away.
#if defined(__SANITIZE_ADDRESS__)
__attribute__((noinline)) int read_past(const std::vector<int>& v, size_t i) { return v.data()[i]; }

TEST(SanitizerPlanted, DISABLED_HeapOverflow) {
  std::vector<int> v(4, 1);
  volatile size_t i = 4;
  std::printf("%d\n", read_past(v, i));
}

TEST(SanitizerPlanted, DISABLED_SignedOverflow) {
  volatile int a = INT_MAX;
  volatile int b = a + 1;
  std::printf("%d\n", b);
}

TEST(SanitizerPlanted, DISABLED_Leak) {
  volatile char* p = static_cast<char*>(std::malloc(4096));
  p[0] = 1;
  p = nullptr;
}

TEST(Sanitizer, AddressSanitizerCatchesAHeapOverflow) {
  auto [status, out] = run_planted("HeapOverflow");
  EXPECT_NE(status, 0) << out;
  EXPECT_CONTAINS(out, "AddressSanitizer: heap-buffer-overflow");
  EXPECT_CONTAINS(out, "read_past");
}

TEST(Sanitizer, UndefinedBehaviorSanitizerCatchesASignedOverflow) {
  auto [status, out] = run_planted("SignedOverflow");
  EXPECT_NE(status, 0) << out;
  EXPECT_CONTAINS(out, "signed integer overflow");
}

TEST(Sanitizer, LeakSanitizerCatchesALeak) {
  auto [status, out] = run_planted("Leak");
  EXPECT_NE(status, 0) << out;
  EXPECT_CONTAINS(out, "LeakSanitizer: detected memory leaks");
}
#endif

#if defined(__SANITIZE_THREAD__)
TEST(SanitizerPlanted, DISABLED_DataRace) {
  int x = 0;
  std::thread t([&] { ++x; });
  ++x;
  t.join();
  std::printf("%d\n", x);
}

TEST(Sanitizer, ThreadSanitizerCatchesADataRace) {
  auto [status, out] = run_planted("DataRace");
  EXPECT_NE(status, 0) << out;
  EXPECT_CONTAINS(out, "ThreadSanitizer: data race");
}
#endif

}  // namespace
}  // namespace layerprune
