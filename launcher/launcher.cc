#include "launcher/launcher.h"

#include <chrono>
#include <cstdint>
#include <thread>
#include <utility>

namespace layerprune {

const char* job_state_name(JobState s) {
  switch (s) {
    case JobState::kQueued: return "queued";
    case JobState::kRunning: return "running";
    case JobState::kFinished: return "finished";
    case JobState::kFailed: return "failed";
    case JobState::kCancelled: return "cancelled";
    case JobState::kUnknown: break;
  }
  return "unknown";
}

std::vector<JobId> wait_for_end(Launcher& launcher, const std::vector<JobId>& ids, double seconds,
                                double poll_seconds) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(int64_t(seconds * 1000));
  std::vector<JobId> active = ids;
  while (true) {
    std::vector<JobId> still;
    for (const JobId& id : active)
      if (job_active(launcher.status(id).state)) still.push_back(id);
    active = std::move(still);
    if (active.empty() || std::chrono::steady_clock::now() >= end) return active;
    std::this_thread::sleep_for(std::chrono::milliseconds(int64_t(poll_seconds * 1000)));
  }
}

}  // namespace layerprune
