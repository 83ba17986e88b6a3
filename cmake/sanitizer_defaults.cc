// The sanitizer builds' settings (LAYERPRUNE_SANITIZER, deploy/sanitize.sh), compiled into every program of
// such a build: the tests, the programs they start (coordinator, worker, CLI, no-op worker) and ctest's test
// discovery all run with the same options and suppressions, with no environment to forget. Options given
// in ASAN_OPTIONS, UBSAN_OPTIONS, LSAN_OPTIONS or TSAN_OPTIONS still add to these (deploy/sanitize.sh adds
// log_path there, so a report from a child process is found too).
//
// Every suppression carries its reason. Each names code outside layerprune: ours is never suppressed.
extern "C" {

// Stop at the first error, with a stack trace; ASan's exit status 1 fails the test.
const char* __asan_default_options() { return "halt_on_error=1:detect_leaks=1:strict_string_checks=1"; }

const char* __ubsan_default_options() { return "halt_on_error=1:print_stacktrace=1"; }

const char* __lsan_default_suppressions() { return ""; }

// ignore_noninstrumented_modules: gRPC, protobuf and Abseil are Debian's, built without TSan. Their locks
// (absl::Mutex, over futexes) are invisible to it, so every memcpy or free they do looks racy: over 800
// reports in the coordinator's and lease loop's tests, all inside libgrpc, libgpr and libabsl. With the
// flag, memory accesses made from those libraries are not tracked; every access of our own code still is
// (tests/test_sanitizer.cc checks that a planted race is caught).
const char* __tsan_default_options() {
  return "halt_on_error=1:second_deadlock_stack=1:ignore_noninstrumented_modules=1";
}

const char* __tsan_default_suppressions() { return ""; }

}  // extern "C"
