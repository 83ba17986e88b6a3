// Device names as users write them (--device, the experiment YAML's `device:`): cpu, cuda, cuda:N.
// Torch-free, so the experiment parser (read on a login node, without LibTorch) checks them too; the model
// turns a name into a LibTorch device (model/device.h).
#pragma once
#include <string>

namespace layerprune {

struct DeviceName {
  bool cuda = false;
  int index = -1;  // cuda:N's N; -1 for a plain "cuda" (the worker picks its local rank's GPU)
};

// InputError for anything but cpu, cuda or cuda:N (N at most 3 digits).
DeviceName parse_device_name(const std::string& name);

}  // namespace layerprune
