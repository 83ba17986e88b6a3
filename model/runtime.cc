#include "model/runtime.h"

#include <ATen/Parallel.h>
#include <unistd.h>

#include <cstdlib>
#include <thread>

namespace layerprune {

void ensure_passive_openmp(char** argv) {
  if (std::getenv("LAYERPRUNE_NO_REEXEC") != nullptr) return;
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
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
  return n;
}

}  // namespace layerprune
