// The MPI communicator's collectives, run by ctest as plain (1 rank) and under mpirun -np 2 and -np 4.
// Every rank runs every test; values are chosen so the exact result is known (and representable).
#include <gtest/gtest.h>
#include <mpi.h>

#include <ATen/ATen.h>

#include "model/comm.h"
#include "tests/mpi_test_main.h"
#include "worker/mpi_comm.h"

namespace layerprune {
namespace {

MpiCommunicator& world() {
  static MpiCommunicator comm(MPI_COMM_WORLD, /*timeout_seconds=*/60, "test");
  return comm;
}

TEST(MpiComm, AllReduceSumFloat32) {
  auto& c = world();
  const int n = c.size();
  at::Tensor t = at::arange(1000, at::kFloat) + float(c.rank());
  c.all_reduce_sum(t);
  at::Tensor want = at::arange(1000, at::kFloat) * float(n) + float(n * (n - 1) / 2);
  EXPECT_TRUE(at::equal(t, want));
}

TEST(MpiComm, AllReduceSumBFloat16) {
  auto& c = world();
  const int n = c.size();
  // Multiples of 1/4 below 64: every partial sum is exact in bfloat16 (8 significant bits).
  at::Tensor base = (at::arange(40, at::kFloat) / 4).to(at::kBFloat16);
  at::Tensor t = base.clone();
  c.all_reduce_sum(t);
  EXPECT_EQ(t.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(at::equal(t.to(at::kFloat), base.to(at::kFloat) * float(n)));
  // Rounding: 1 + 2^-8 is not a bfloat16; the sum of n ones plus tiny parts rounds like one float32 sum.
  at::Tensor r = at::full({3}, 1.0f + (c.rank() == 0 ? 0.0f : 1.0f / 512), at::kFloat).to(at::kBFloat16);
  c.all_reduce_sum(r);
  EXPECT_TRUE(at::allclose(r.to(at::kFloat), at::full({3}, float(n), at::kFloat), 0, 0.02f * n));
}

TEST(MpiComm, EveryRankGetsBitwiseTheSameSum) {
  // Tensor parallelism keeps one residual stream on every rank: the all-reduced values must not differ
  // by rounding between ranks, or the replicas drift apart layer after layer.
  auto& c = world();
  at::manual_seed(1234 + c.rank());
  at::Tensor t = at::randn({4097});
  c.all_reduce_sum(t);
  at::Tensor all = c.all_gather(t);
  for (int r = 1; r < c.size(); ++r) EXPECT_TRUE(at::equal(all[r], all[0])) << "rank " << r;
}

TEST(MpiComm, BroadcastAllGatherBarrier) {
  auto& c = world();
  const int root = c.size() - 1;
  at::Tensor t = at::full({5, 3}, float(c.rank()), at::kFloat);
  c.broadcast(t, root);
  EXPECT_TRUE(at::equal(t, at::full({5, 3}, float(root), at::kFloat)));
  at::Tensor g = c.all_gather(at::full({2, 3}, int64_t(c.rank()), at::kLong));
  ASSERT_EQ(g.sizes().vec(), (std::vector<int64_t>{c.size(), 2, 3}));
  for (int r = 0; r < c.size(); ++r) EXPECT_TRUE(at::equal(g[r], at::full({2, 3}, int64_t(r), at::kLong)));
  c.barrier();
}

TEST(MpiComm, StringsAndAgreement) {
  auto& c = world();
  std::string s = c.rank() == 0 ? std::string(100000, 'x') + "end" : "stale";
  c.broadcast_string(s, 0);
  EXPECT_EQ(s.size(), 100003u);
  EXPECT_EQ(s.substr(s.size() - 3), "end");
  std::string empty = c.rank() == 0 ? "" : "stale";
  c.broadcast_string(empty, 0);
  EXPECT_EQ(empty, "");
  EXPECT_TRUE(c.any(c.rank() == c.size() - 1));
  EXPECT_FALSE(c.any(false));
}

TEST(MpiComm, RefusesWhatItCannotSend) {
  auto& c = world();
  at::Tensor strided = at::zeros({4, 4}).t();
  EXPECT_THROW(c.all_reduce_sum(strided), std::invalid_argument);
  at::Tensor half = at::zeros({4}, at::kHalf);
  if (c.size() > 1) {
    EXPECT_THROW(c.all_reduce_sum(half), std::invalid_argument);
  }
}

TEST(CountingComm, CountsCallsAndBytes) {
  auto inner = std::shared_ptr<Communicator>(&world(), [](Communicator*) {});
  CountingCommunicator c(inner);
  at::Tensor t = at::ones({3, 7});
  c.all_reduce_sum(t);
  c.all_reduce_sum(t);
  c.all_gather(at::ones({5}, at::kBFloat16));
  c.barrier();
  EXPECT_EQ(c.stats().all_reduce, 2u);
  EXPECT_EQ(c.stats().all_reduce_bytes, 2u * 3 * 7 * 4);
  EXPECT_EQ(c.stats().all_gather, 1u);
  EXPECT_EQ(c.stats().all_gather_bytes, 10u);
  EXPECT_EQ(c.stats().barrier, 1u);
  c.reset();
  EXPECT_EQ(c.stats().all_reduce, 0u);
}

}  // namespace
}  // namespace layerprune

int main(int argc, char** argv) { return layerprune::testing::run_mpi_tests(argc, argv); }
