// Where a model's weights live and its arithmetic runs: the CPU, or a CUDA GPU through LibTorch.
//
// Names: "cpu", "cuda" (GPU 0, or under a launcher the GPU of this process's local rank: the worker passes
// that index), "cuda:N". Everything above the model asks for a device by name and moves only small
// results (log-likelihoods, distances, losses) back to the host.
#pragma once
#include <c10/core/Device.h>

#include <cstdint>
#include <string>

namespace layerprune {

// Parses a device name. InputError for an unknown name, or for a CUDA device this process cannot see
// (no driver, no GPU, or an index past the GPU count), with the count it sees. `local_rank` picks the GPU
// for a plain "cuda" (rank r of a host takes GPU r mod count).
c10::Device parse_device(const std::string& name, int local_rank = 0);
// Validates the name's syntax only (no GPU needed): for configuration files read on a login node.
void check_device_name(const std::string& name);
// Visible CUDA GPUs (0 without a driver or device; never throws).
int cuda_device_count();
// "cpu", or "cuda:0 (139.8 GiB)": what results record as their device.
std::string describe_device(c10::Device device);

// The caching allocator's statistics of a GPU (zeros on the CPU): bytes allocated at the peak since the
// last reset, and now. The worker reports the peak of each task beside the planner's estimate.
struct DeviceMemory {
  uint64_t peak_allocated = 0, allocated = 0, peak_reserved = 0;
};
DeviceMemory device_memory(c10::Device device);
void reset_peak_device_memory(c10::Device device);
// Waits for the device's queued work (a no-op on the CPU): timings around GPU work need it.
void synchronize_device(c10::Device device);

}  // namespace layerprune
