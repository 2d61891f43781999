// The all-reduce benchmark behind `potluck bench allreduce`: one rank of a
// timing run, for potluck's TCP backend or a same-run baseline (Gloo's
// all-reduce, OpenMPI's MPI_Allreduce). The launcher in cli/ starts the rank
// processes (mpirun for MPI) and collects rank 0's results. The baselines are
// compiled in only where the build has them (POTLUCK_WITH_GLOO, _MPI).
//
// Thread-safety: one call per process.
#ifndef POTLUCK_COLLECTIVES_ALLREDUCE_BENCH_H_
#define POTLUCK_COLLECTIVES_ALLREDUCE_BENCH_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace potluck {

struct AllreduceBenchRank {
  std::string backend;    // "tcp", "gloo" or "mpi"
  int rank = 0;           // ignored for mpi (MPI says)
  int world_size = 1;     // ignored for mpi
  std::string store_dir;  // rendezvous directory for tcp and gloo
  std::vector<uint64_t> sizes_bytes;
  // tcp only: the address to listen on (another network namespace's), the
  // wire codec (int8 and friends with error feedback), and a fixed number of
  // timed iterations (0 = AllreduceBenchIterations).
  std::string bind_host = "127.0.0.1";
  std::string codec = "none";
  int iterations = 0;
};

struct AllreduceBenchPoint {
  std::string backend;
  std::string algorithm;  // for gloo: the fastest one at this size
  uint64_t bytes = 0;
  int ranks = 0;
  int iterations = 0;
  double seconds = 0;  // per all-reduce, on rank 0
  double algbw_gbps() const { return bytes / seconds / 1e9; }
  // nccl-tests' bus bandwidth: algbw * 2(n-1)/n.
  double busbw_gbps() const { return algbw_gbps() * 2.0 * (ranks - 1) / ranks; }
};

// OK when this build can run `backend` ("tcp", "gloo", "mpi"); otherwise
// kFailedPrecondition saying that this build has no Gloo (or MPI) and how to
// get it, or kInvalidArgument for an unknown name.
absl::Status AllreduceBenchBackendAvailable(absl::string_view backend);

// Runs the rank (first checking AllreduceBenchBackendAvailable); rank 0 returns one point per size
// (other ranks: empty). Every result is checked (n ranks of ones must sum to n) before timing.
absl::StatusOr<std::vector<AllreduceBenchPoint>> RunAllreduceBenchRank(
    const AllreduceBenchRank& args);

// The iterations timed at `bytes`: enough to run ~1 GiB through, 3 to 200.
int AllreduceBenchIterations(uint64_t bytes);

}  // namespace potluck

#endif  // POTLUCK_COLLECTIVES_ALLREDUCE_BENCH_H_
