#include "common/device_name.h"

#include <regex>

#include "common/error.h"

namespace layerprune {

DeviceName parse_device_name(const std::string& name) {
  if (name == "cpu") return {};
  static const std::regex pattern("cuda(:([0-9]{1,3}))?");
  std::smatch m;
  if (!std::regex_match(name, m, pattern)) throw InputError("unknown device '" + name + "' (use cpu, cuda or cuda:N)");
  return {true, m[2].matched ? std::stoi(m[2].str()) : -1};
}

}  // namespace layerprune
