// Process set-up for LibTorch on CPU: the OpenMP wait policy and thread counts (see ../shared/PLATFORM.md).
#pragma once

namespace layerprune {

// LibTorch (PyPI's wheel) runs elementwise work and MKL's matrix products on one OpenMP pool (the wheel's
// libgomp, which our OpenMP code links too). The wait policy is read once, when libgomp loads, so when
// OMP_WAIT_POLICY is unset this re-executes the program with it set to PASSIVE: idle OpenMP threads sleep
// instead of spinning, so MPI ranks sharing a host's cores (TP groups on one machine) do not steal each
// other's cores while they wait in a collective. Call first thing in main(); returns only if no re-exec
// happened. LAYERPRUNE_NO_REEXEC=1 disables it.
void ensure_passive_openmp(char** argv);

// Sets LibTorch's intra-op threads (OpenMP and MKL) to `requested` (0: $OMP_NUM_THREADS, else all cores).
// Returns the number used. MKL called inside an OpenMP parallel region (the attention groups) runs on the
// calling thread by itself.
int configure_threads(int requested);

}  // namespace layerprune
