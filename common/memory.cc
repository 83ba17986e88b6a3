#include "common/memory.h"

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

namespace layerprune {

uint64_t resident_bytes_of_files(const std::vector<std::string>& paths) {
  std::set<std::string> wanted;
  for (const auto& p : paths) {
    std::error_code ec;
    auto canonical = std::filesystem::canonical(p, ec);
    wanted.insert(ec ? p : canonical.string());
  }
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool counting = false;
  uint64_t kib = 0;
  while (std::getline(smaps, line)) {
    // A mapping header: "start-end perms offset dev inode   path"; attribute lines start with "Name:".
    std::istringstream in(line);
    std::string first;
    in >> first;
    if (!first.empty() && first.back() != ':') {
      std::string perms, offset, dev, inode, path;
      in >> perms >> offset >> dev >> inode;
      std::getline(in >> std::ws, path);
      counting = wanted.count(path) > 0;
    } else if (counting && first == "Rss:") {
      uint64_t v = 0;
      in >> v;
      kib += v;
    }
  }
  return kib * 1024;
}

ResidentSet resident_set() {
  std::ifstream status("/proc/self/status");
  std::string key;
  ResidentSet r;
  while (status >> key) {
    uint64_t v = 0;
    if (key == "RssAnon:" && status >> v) r.anon = v * 1024;
    if (key == "RssFile:" && status >> v) r.file = v * 1024;
    status.ignore(1 << 20, '\n');
  }
  return r;
}

}  // namespace layerprune
