#include "worker/mpi_comm.h"

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include "common/error.h"

namespace layerprune {

namespace {

// MPI has no bfloat16: sum as uint16 payloads through a user-defined op that adds in float32 and rounds
// to nearest even (what c10::BFloat16 does), one element at a time.
void bf16_sum(void* in, void* inout, int* len, MPI_Datatype*) {
  auto* a = static_cast<const c10::BFloat16*>(in);
  auto* b = static_cast<c10::BFloat16*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = c10::BFloat16(float(a[i]) + float(b[i]));
}

MPI_Op bf16_sum_op() {
  static MPI_Op op = [] {
    MPI_Op o;
    MPI_Op_create(&bf16_sum, /*commute=*/1, &o);
    return o;
  }();
  return op;
}

MPI_Datatype mpi_type(const at::Tensor& t, const char* what) {
  switch (t.scalar_type()) {
    case at::kFloat: return MPI_FLOAT;
    case at::kBFloat16: return MPI_UINT16_T;
    case at::kDouble: return MPI_DOUBLE;
    case at::kLong: return MPI_INT64_T;
    case at::kInt: return MPI_INT32_T;
    case at::kByte: return MPI_UINT8_T;
    default: throw std::invalid_argument(std::string(what) + ": unsupported dtype " + c10::toString(t.scalar_type()));
  }
}

void check_cpu_contiguous(const at::Tensor& t, const char* what) {
  if (!t.device().is_cpu() || !t.is_contiguous())
    throw std::invalid_argument(std::string(what) + ": the MPI backend needs contiguous CPU tensors");
  if (t.numel() > INT32_MAX) throw std::invalid_argument(std::string(what) + ": tensor too large for one MPI call");
}

std::string mpi_error_text(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  return std::string(text, len);
}

void check(int code, const char* what) {
  if (code != MPI_SUCCESS) throw CommError(std::string(what) + " failed: " + mpi_error_text(code));
}

}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm comm, double timeout_seconds, std::string label)
    : comm_(comm), timeout_(timeout_seconds), label_(std::move(label)) {
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
  // Errors come back as codes (turned into CommError) instead of aborting inside MPI.
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
}

void MpiCommunicator::wait(MPI_Request& request, const char* what, uint64_t bytes) {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  for (uint64_t polls = 0;; ++polls) {
    int done = 0;
    check(MPI_Test(&request, &done, MPI_STATUS_IGNORE), what);
    if (done) return;
    if (polls < 256) continue;  // the common case: the peers are microseconds away
    double waited = std::chrono::duration<double>(clock::now() - start).count();
    if (waited > timeout_)
      throw CommError(label_ + ": " + what + " of " + std::to_string(bytes) + " bytes did not complete within " +
                      std::to_string(int(timeout_)) + " s: another rank of the group failed or stalled");
    // Oversubscribed ranks (more ranks than cores) must give the core to the rank being waited for.
    if (polls < 4096)
      std::this_thread::yield();
    else
      std::this_thread::sleep_for(std::chrono::microseconds(waited < 1 ? 20 : 1000));
  }
}

void MpiCommunicator::all_reduce_sum(at::Tensor& t) {
  check_cpu_contiguous(t, "all_reduce_sum");
  if (size_ == 1) return;
  MPI_Op op = t.scalar_type() == at::kBFloat16 ? bf16_sum_op() : MPI_SUM;
  MPI_Request r;
  check(MPI_Iallreduce(MPI_IN_PLACE, t.data_ptr(), int(t.numel()), mpi_type(t, "all_reduce_sum"), op, comm_, &r),
        "all_reduce_sum");
  wait(r, "all_reduce_sum", uint64_t(t.numel()) * t.element_size());
}

void MpiCommunicator::broadcast(at::Tensor& t, int root) {
  check_cpu_contiguous(t, "broadcast");
  if (size_ == 1) return;
  MPI_Request r;
  check(MPI_Ibcast(t.data_ptr(), int(t.numel()), mpi_type(t, "broadcast"), root, comm_, &r), "broadcast");
  wait(r, "broadcast", uint64_t(t.numel()) * t.element_size());
}

at::Tensor MpiCommunicator::all_gather(const at::Tensor& t) {
  at::Tensor in = t.contiguous();
  check_cpu_contiguous(in, "all_gather");
  std::vector<int64_t> shape = in.sizes().vec();
  shape.insert(shape.begin(), size_);
  at::Tensor out = at::empty(shape, in.options());
  if (size_ == 1) return out.copy_(in.unsqueeze(0));
  MPI_Request r;
  MPI_Datatype type = mpi_type(in, "all_gather");
  check(MPI_Iallgather(in.data_ptr(), int(in.numel()), type, out.data_ptr(), int(in.numel()), type, comm_, &r),
        "all_gather");
  wait(r, "all_gather", uint64_t(in.numel()) * in.element_size());
  return out;
}

void MpiCommunicator::barrier() {
  if (size_ == 1) return;
  MPI_Request r;
  check(MPI_Ibarrier(comm_, &r), "barrier");
  wait(r, "barrier", 0);
}

void MpiCommunicator::broadcast_string(std::string& s, int root) {
  if (size_ == 1) return;
  at::Tensor len = at::full({1}, int64_t(rank_ == root ? s.size() : 0), at::kLong);
  broadcast(len, root);
  at::Tensor bytes = at::empty({len.item<int64_t>()}, at::kByte);
  if (rank_ == root && !s.empty()) std::memcpy(bytes.data_ptr(), s.data(), s.size());
  if (bytes.numel() > 0) broadcast(bytes, root);
  if (rank_ != root) s.assign(static_cast<const char*>(bytes.data_ptr()), size_t(bytes.numel()));
}

bool MpiCommunicator::any(bool flag) {
  if (size_ == 1) return flag;
  int in = flag ? 1 : 0, out = 0;
  MPI_Request r;
  check(MPI_Iallreduce(&in, &out, 1, MPI_INT, MPI_MAX, comm_, &r), "any");
  wait(r, "any", sizeof(int));
  return out != 0;
}

MpiGroups split_into_groups(int tp) {
  MpiGroups g;
  MPI_Comm_rank(MPI_COMM_WORLD, &g.world_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g.world_size);
  if (tp < 1) throw InputError("--tp must be at least 1 (got " + std::to_string(tp) + ")");
  if (g.world_size % tp != 0)
    throw InputError("the MPI world has " + std::to_string(g.world_size) + " ranks, not a multiple of --tp " +
                     std::to_string(tp) + ": start tp x groups ranks");
  g.tp = tp;
  g.groups = g.world_size / tp;
  g.group = g.world_rank / tp;  // consecutive ranks form a group: with --map-by core they share a socket
  MPI_Comm_split(MPI_COMM_WORLD, g.group, g.world_rank, &g.group_comm);
  MPI_Comm_rank(g.group_comm, &g.group_rank);
  MPI_Comm local;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g.world_rank, MPI_INFO_NULL, &local);
  MPI_Comm_size(local, &g.local_ranks);
  MPI_Comm_rank(local, &g.local_rank);
  MPI_Comm_free(&local);
  return g;
}

void abort_job(const std::string& message, int status) {
  std::fprintf(stderr, "%s\n", message.c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, status);
  std::_Exit(status);  // not reached
}

}  // namespace layerprune
