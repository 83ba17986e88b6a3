// main() of a GoogleTest binary that ctest runs under mpirun: every rank runs every test, rank 0 prints,
// and the exit status is a failure when any rank failed.
#pragma once
#include <gtest/gtest.h>
#include <mpi.h>

namespace layerprune::testing {

inline int run_mpi_tests(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) {  // one report, from rank 0 (failures on other ranks still set the exit status)
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int failed = RUN_ALL_TESTS();
  int any_failed = 0;
  MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return any_failed;
}

}  // namespace layerprune::testing
