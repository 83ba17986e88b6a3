// What this process holds in memory, read from /proc (Linux): for per-rank memory reports and tests.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace layerprune {

// Resident bytes of this process's mappings of the given files (sum of "Rss" in /proc/self/smaps over the
// mappings whose path is one of them): the checkpoint pages this process has touched and still maps.
uint64_t resident_bytes_of_files(const std::vector<std::string>& paths);

// The process's resident set: anonymous (heap: copied weights, activations) and file-backed, in bytes
// (RssAnon and RssFile of /proc/self/status).
struct ResidentSet {
  uint64_t anon = 0, file = 0;
};
ResidentSet resident_set();

}  // namespace layerprune
