// Process set-up for LibTorch on CPU: OpenMP wait policy and thread counts (see ../shared/PLATFORM.md).
#pragma once

namespace layerprune {

// LibTorch runs elementwise work on OpenMP threads and matrix products on OpenBLAS's own pthreads; with
// OpenMP's default busy-waiting the two pools fight for the cores (a 2-thread forward ran slower than 1
// thread here). libgomp reads OMP_WAIT_POLICY once, when it is loaded, so when it is unset this re-executes
// the program with OMP_WAIT_POLICY=PASSIVE. Call first thing in main(); returns only if no re-exec happened.
void ensure_passive_openmp(char** argv);

// Sets LibTorch's intra-op threads and OpenBLAS's threads to `requested` (0: $OMP_NUM_THREADS, else all
// cores). Returns the number used.
int configure_threads(int requested);

// While alive, BLAS calls run on the calling thread only. For code that calls BLAS from inside
// at::parallel_for: otherwise every OpenMP thread starts its own set of OpenBLAS threads, and the spinning
// pools oversubscribe the cores (the forward pass then ran slower on 2 threads than on 1).
class SingleThreadedBlas {
 public:
  SingleThreadedBlas();
  ~SingleThreadedBlas();
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;
};

}  // namespace layerprune
