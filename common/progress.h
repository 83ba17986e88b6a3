// Progress of a long step (loading, evaluation, healing) on stderr: count, rate and ETA.
// On a terminal it redraws one line; otherwise it prints a line at most every few seconds.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace layerprune {

class Progress {
 public:
  Progress(std::string label, int64_t total, std::string unit);
  ~Progress();
  void advance(int64_t n = 1);
  void finish();  // prints the final line (also done by the destructor)
  static void set_quiet(bool quiet);  // tests and --json pipelines may silence it

 private:
  void draw(bool final);
  std::string label_, unit_;
  int64_t total_, done_ = 0;
  bool finished_ = false, tty_;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace layerprune
