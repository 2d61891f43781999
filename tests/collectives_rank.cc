// One rank of a TCP group, as its own process, for the multi-process
// collectives tests:
//
//   collectives_rank STORE_DIR RANK WORLD_SIZE DEADLINE_MS
//
// Joins generation 1 through a FileRendezvousStore in STORE_DIR, prints
// "connected", then all-reduces 16 MiB over and over, each call with a
// DEADLINE_MS deadline. When a call fails it prints
// "failed <milliseconds the call took> <status>" and exits 0.
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "absl/strings/numbers.h"

#include "collectives/tcp_communicator.h"

int main(int argc, char** argv) {
  int rank = 0, world_size = 0, deadline_ms = 0;
  if (argc != 5 || !absl::SimpleAtoi(argv[2], &rank) || !absl::SimpleAtoi(argv[3], &world_size) ||
      !absl::SimpleAtoi(argv[4], &deadline_ms)) {
    std::fprintf(stderr, "usage: collectives_rank STORE_DIR RANK WORLD_SIZE DEADLINE_MS\n");
    return 2;
  }
  potluck::FileRendezvousStore store(argv[1]);
  potluck::TcpTransportOptions options;
  options.rank = rank;
  options.world_size = world_size;
  options.generation = 1;
  options.secret = "multi-process-secret";
  auto communicator =
      potluck::ConnectTcpCommunicator(&store, options, absl::Now() + absl::Seconds(30));
  if (!communicator.ok()) {
    std::printf("connect-failed %s\n", communicator.status().ToString().c_str());
    return 3;
  }
  std::printf("connected\n");
  std::fflush(stdout);
  std::vector<float> data(4 << 20, 1.0f);
  while (true) {
    const absl::Time start = absl::Now();
    const absl::Status status =
        (*communicator)
            ->AllReduce(potluck::TensorView::Of(data.data(), data.size()),
                        potluck::ReduceOp::kAverage, start + absl::Milliseconds(deadline_ms));
    if (!status.ok()) {
      std::printf("failed %lld %s\n",
                  static_cast<long long>(absl::ToInt64Milliseconds(absl::Now() - start)),
                  status.ToString().c_str());
      std::fflush(stdout);
      return 0;
    }
  }
}
