// The sanitizer builds' settings (LAYERPRUNE_SANITIZER, deploy/sanitize.sh), compiled into every program of
// such a build: the tests, the programs they start (coordinator, worker, CLI, no-op worker) and ctest's test
// discovery all run with the same options and suppressions, with no environment to forget. Options given
// in ASAN_OPTIONS, UBSAN_OPTIONS, LSAN_OPTIONS or TSAN_OPTIONS still add to these (deploy/sanitize.sh adds
// log_path there, so a report from a child process is found too).
//
// Every suppression carries its reason. Each names code outside layerprune: ours is never suppressed.
extern "C" {

// Stop at the first error, with a stack trace; ASan's exit status 1 fails the test. print_suppressions=0:
// a process whose only leaks are the suppressed ones below writes no report (deploy/sanitize.sh fails on
// any report file).
const char* __asan_default_options() { return "halt_on_error=1:detect_leaks=1:strict_string_checks=1:print_suppressions=0"; }

const char* __ubsan_default_options() { return "halt_on_error=1:print_stacktrace=1"; }

// Leaks at exit inside libraries that free nothing when they finish; each was read in a report of our
// tests (deploy/sanitize.sh address) before it was listed here:
// - OpenMPI 4.1.4 (Debian): MPI_Init allocates component lists, hwloc topologies, PMIx values and op
//   tables that MPI_Finalize does not free (libmpi, libopen-pal, libopen-rte, libpmix, libhwloc, and the
//   MCA plugins under .../openmpi/lib/openmpi3/, kept loaded by the dlclose below so that they can be
//   named). Over 2,000 reports in the MPI and NCCL communicator, tensor-parallel LoRA and worker tests.
// - __vasprintf_internal: OpenMPI's opal_hwloc_base_get_locality_string (libopen-pal) calls asprintf,
//   and libopen-pal has no frame pointers, so the fast unwinder stops at vasprintf and the stack names
//   no OpenMPI frame. layerprune itself never calls asprintf or vasprintf: tests/test_layout checks.
// - libcares (c-ares, Debian's, used by gRPC's DNS resolver): 50 bytes of a resolver channel that gRPC
//   never shuts down, at exit of a coordinator test that resolves a name (Coordinator.TlsFromCertificateFiles).
const char* __lsan_default_suppressions() {
  return "leak:libmpi.so\n"
         "leak:libopen-pal.so\n"
         "leak:libopen-rte.so\n"
         "leak:libpmix.so\n"
         "leak:libhwloc.so\n"
         "leak:/openmpi/lib/\n"
         "leak:__vasprintf_internal\n"
         "leak:libcares.so\n";
}

#if defined(LAYERPRUNE_KEEP_MODULES)
// OpenMPI loads its MCA components with dlopen and unloads them in MPI_Finalize, before LeakSanitizer
// looks; their frames then read "<unknown module>" and no suppression can name them. In the ASan build
// this program's dlclose (exported, so it takes the place of libc's for every library) leaves every
// module loaded: a leak inside one is then reported with its library's name, and matched above.
int dlclose(void*) { return 0; }
#endif

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
