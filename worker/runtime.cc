#include "worker/runtime.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <thread>

namespace layerprune {

namespace {
using SetThreads = void (*)(int);
// The BLAS behind LibTorch is whatever libblas.so.3 points at; OpenBLAS exposes its own thread knob.
SetThreads openblas_set_threads() {
  static SetThreads set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  return set;
}
int g_blas_threads = 1;
}  // namespace

void ensure_passive_openmp(char** argv) {
  if (std::getenv("LAYERPRUNE_NO_REEXEC") != nullptr) return;
  bool changed = false;
  if (std::getenv("OMP_WAIT_POLICY") == nullptr) {
    setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    changed = true;
  }
  if (std::getenv("OPENBLAS_THREAD_TIMEOUT") == nullptr) {
    setenv("OPENBLAS_THREAD_TIMEOUT", "4", 1);  // spin 2^4 cycles, then sleep (default 2^28)
    changed = true;
  }
  if (!changed) return;
  setenv("LAYERPRUNE_NO_REEXEC", "1", 1);  // never loop, whatever happens
  execv("/proc/self/exe", argv);
  // exec failed (no /proc?): carry on with the defaults.
}

int configure_threads(int requested) {
  int n = requested;
  if (n <= 0) {
    const char* env = std::getenv("OMP_NUM_THREADS");
    n = env ? std::atoi(env) : 0;
  }
  if (n <= 0) n = int(std::thread::hardware_concurrency());
  if (n <= 0) n = 1;
  at::set_num_threads(n);
  g_blas_threads = n;
  if (auto set = openblas_set_threads()) set(n);
  return n;
}

SingleThreadedBlas::SingleThreadedBlas() {
  if (auto set = openblas_set_threads(); set && g_blas_threads > 1) set(1);
}

SingleThreadedBlas::~SingleThreadedBlas() {
  if (auto set = openblas_set_threads(); set && g_blas_threads > 1) set(g_blas_threads);
}

}  // namespace layerprune
