// Process set-up for LibTorch on CPU: OpenMP wait policy and thread counts (see ../shared/PLATFORM.md).
#pragma once

namespace layerprune {

// LibTorch runs elementwise work on OpenMP threads and matrix products on OpenBLAS's own pthreads, and
// both pools busy-wait by default: OpenMP's idle threads spin for the next parallel region, OpenBLAS's
// for the next GEMM (about 2^28 cycles). On 2 cores each pool's spinners steal the core the other needs:
// a 2-thread forward ran slower than 1 thread, and the OpenMP work right after a GEMM (attention groups,
// SwiGLU) did not speed up at all with a second thread. Both settings are read once, when the libraries
// load, so when either is unset this re-executes the program with OMP_WAIT_POLICY=PASSIVE and
// OPENBLAS_THREAD_TIMEOUT=4. Call first thing in main(); returns only if no re-exec happened.
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
