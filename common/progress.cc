#include "common/progress.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>

namespace layerprune {

namespace {
std::atomic<bool> g_quiet{false};

std::string human_seconds(double s) {
  char buf[32];
  if (s < 60) std::snprintf(buf, sizeof buf, "%.0fs", s);
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%dm%02ds", int(s) / 60, int(s) % 60);
  else std::snprintf(buf, sizeof buf, "%dh%02dm", int(s) / 3600, (int(s) % 3600) / 60);
  return buf;
}
}  // namespace

void Progress::set_quiet(bool quiet) { g_quiet = quiet; }

Progress::Progress(std::string label, int64_t total, std::string unit)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), tty_(isatty(2)) {
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

Progress::~Progress() { finish(); }

void Progress::advance(int64_t n) {
  done_ += n;
  auto now = std::chrono::steady_clock::now();
  double since = std::chrono::duration<double>(now - last_draw_).count();
  if (since >= (tty_ ? 0.2 : 5.0)) {
    last_draw_ = now;
    draw(false);
  }
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  draw(true);
}

void Progress::draw(bool final) {
  if (g_quiet) return;
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  double rate = elapsed > 0 ? done_ / elapsed : 0.0;
  char line[256];
  int pct = total_ > 0 ? int(100.0 * done_ / total_) : 100;
  if (final) {
    std::snprintf(line, sizeof line, "%s: %lld/%lld %s in %s (%.1f %s/s)", label_.c_str(), (long long)done_,
                  (long long)total_, unit_.c_str(), human_seconds(elapsed).c_str(), rate, unit_.c_str());
  } else {
    double eta = rate > 0 ? (total_ - done_) / rate : 0.0;
    std::snprintf(line, sizeof line, "%s: %lld/%lld %s (%d%%), %.1f %s/s, ETA %s", label_.c_str(),
                  (long long)done_, (long long)total_, unit_.c_str(), pct, rate, unit_.c_str(),
                  human_seconds(eta).c_str());
  }
  if (tty_) std::fprintf(stderr, "\r\033[K%s%s", line, final ? "\n" : "");
  else std::fprintf(stderr, "%s\n", line);
  std::fflush(stderr);
}

}  // namespace layerprune
