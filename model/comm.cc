#include "model/comm.h"

#include <ATen/ATen.h>

#include <chrono>

namespace layerprune {

namespace {
class Timer {
 public:
  explicit Timer(double* total) : total_(total), start_(std::chrono::steady_clock::now()) {}
  ~Timer() { *total_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(); }

 private:
  double* total_;
  std::chrono::steady_clock::time_point start_;
};

uint64_t payload(const at::Tensor& t) { return uint64_t(t.numel()) * t.element_size(); }
}  // namespace

void CountingCommunicator::all_reduce_sum(at::Tensor& t) {
  ++stats_.all_reduce;
  stats_.all_reduce_bytes += payload(t);
  Timer timer(&stats_.seconds);
  inner_->all_reduce_sum(t);
}

void CountingCommunicator::broadcast(at::Tensor& t, int root) {
  ++stats_.broadcast;
  stats_.broadcast_bytes += payload(t);
  Timer timer(&stats_.seconds);
  inner_->broadcast(t, root);
}

at::Tensor CountingCommunicator::all_gather(const at::Tensor& t) {
  ++stats_.all_gather;
  stats_.all_gather_bytes += payload(t);
  Timer timer(&stats_.seconds);
  return inner_->all_gather(t);
}

void CountingCommunicator::barrier() {
  ++stats_.barrier;
  Timer timer(&stats_.seconds);
  inner_->barrier();
}

}  // namespace layerprune
