#include "model/device.h"

#include <ATen/Context.h>
#include <ATen/DeviceAccelerator.h>

#include <cstdio>
#include <cstdlib>

#include "common/device_name.h"
#include "common/error.h"

namespace layerprune {

void check_device_name(const std::string& name) { parse_device_name(name); }

int cuda_device_count() {
  try {
    return at::globalContext().hasCUDA() ? int(at::accelerator::deviceCount()) : 0;
  } catch (const std::exception&) {
    return 0;
  }
}

c10::Device parse_device(const std::string& name, int local_rank) {
  const DeviceName parsed = parse_device_name(name);
  if (!parsed.cuda) return c10::Device(c10::kCPU);
  const int index = parsed.index;
  const int count = cuda_device_count();
  if (count == 0)
    throw InputError("device '" + name + "': no CUDA GPU is visible to this process (no driver or no device; "
                     "CUDA_VISIBLE_DEVICES='" + std::string(std::getenv("CUDA_VISIBLE_DEVICES") ? std::getenv("CUDA_VISIBLE_DEVICES") : "") +
                     "'); use --device cpu");
  const int chosen = index >= 0 ? index : (local_rank < 0 ? 0 : local_rank % count);
  if (chosen >= count)
    throw InputError("device '" + name + "': this process sees " + std::to_string(count) + " CUDA GPU(s)");
  return c10::Device(c10::kCUDA, c10::DeviceIndex(chosen));
}

std::string describe_device(c10::Device device) {
  if (!device.is_cuda()) return device.str();
  const auto [free_bytes, total_bytes] = at::accelerator::getMemoryInfo(device.index());
  (void)free_bytes;
  char memory[32];
  std::snprintf(memory, sizeof memory, "%.1f GiB", double(total_bytes) / double(1ull << 30));
  return device.str() + " (" + memory + ")";
}

DeviceMemory device_memory(c10::Device device) {
  DeviceMemory m;
  if (!device.is_cuda()) return m;
  const auto stats = at::accelerator::getDeviceStats(device.index());
  const auto all = size_t(c10::CachingDeviceAllocator::StatType::AGGREGATE);
  m.peak_allocated = uint64_t(stats.allocated_bytes[all].peak);
  m.allocated = uint64_t(stats.allocated_bytes[all].current);
  m.peak_reserved = uint64_t(stats.reserved_bytes[all].peak);
  return m;
}

void reset_peak_device_memory(c10::Device device) {
  if (device.is_cuda()) at::accelerator::resetPeakStats(device.index());
}

void synchronize_device(c10::Device device) {
  if (device.is_cuda()) at::accelerator::synchronizeDevice(device.index());
}

}  // namespace layerprune
