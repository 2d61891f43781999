#include "collectives/allreduce_bench.h"

#ifdef POTLUCK_WITH_MPI
#include <mpi.h>
#endif

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <vector>

#ifdef POTLUCK_WITH_GLOO
#include <gloo/allreduce_halving_doubling.h>
#include <gloo/allreduce_ring.h>
#include <gloo/allreduce_ring_chunked.h>
#include <gloo/barrier_all_to_all.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/file_store.h>
#include <gloo/transport/tcp/device.h>
#endif

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

#include "collectives/tcp_communicator.h"
#include "common/status.h"

namespace potluck {

namespace {

// Times `iterations` all-reduces after a barrier; checks one first.
// `tolerance`: how far from exact the check may be (lossy wire codecs).
absl::StatusOr<double> TimeAllreduce(std::vector<float>& data, int world_size, int iterations,
                                     const std::function<absl::Status()>& barrier,
                                     const std::function<absl::Status()>& allreduce,
                                     float tolerance = 0.0f) {
  std::fill(data.begin(), data.end(), 1.0f);
  RETURN_IF_ERROR(allreduce());
  for (float value : data) {
    if (std::fabs(value - static_cast<float>(world_size)) > tolerance * world_size) {
      return absl::InternalError(
          absl::StrCat("the all-reduce produced ", value, ", not ", world_size));
    }
  }
  std::fill(data.begin(), data.end(), 0.0f);  // zeros stay zeros: no overflow over iterations
  RETURN_IF_ERROR(allreduce());               // warm-up
  RETURN_IF_ERROR(barrier());
  const absl::Time start = absl::Now();
  for (int i = 0; i < iterations; ++i) RETURN_IF_ERROR(allreduce());
  return absl::ToDoubleSeconds(absl::Now() - start) / iterations;
}

absl::StatusOr<std::vector<AllreduceBenchPoint>> RunTcp(const AllreduceBenchRank& args) {
  ASSIGN_OR_RETURN(const WireCodec codec, ParseWireCodec(args.codec));
  FileRendezvousStore store(args.store_dir);
  TcpTransportOptions options;
  options.rank = args.rank;
  options.world_size = args.world_size;
  options.generation = 1;
  options.secret = "allreduce-bench";
  options.bind_host = args.bind_host;
  ASSIGN_OR_RETURN(std::unique_ptr<Communicator> communicator,
                   ConnectTcpCommunicator(&store, options, absl::Now() + absl::Seconds(60)));
  std::vector<AllreduceBenchPoint> points;
  for (uint64_t bytes : args.sizes_bytes) {
    std::vector<float> data(bytes / sizeof(float));
    ErrorFeedback feedback(data.size());
    const int iterations = args.iterations > 0 ? args.iterations : AllreduceBenchIterations(bytes);
    auto deadline = [] { return absl::Now() + absl::Seconds(600); };
    ASSIGN_OR_RETURN(
        const double seconds,
        TimeAllreduce(
            data, args.world_size, iterations, [&] { return communicator->Barrier(deadline()); },
            [&] {
              const TensorView view = TensorView::Of(data.data(), data.size());
              return codec == WireCodec::kNone
                         ? communicator->AllReduce(view, ReduceOp::kSum, deadline())
                         : communicator->CompressedAllReduce(view, ReduceOp::kSum, codec, &feedback,
                                                             deadline());
            }));
    points.push_back(
        {"tcp",
         codec == WireCodec::kNone ? "ring/recursive-doubling" : absl::StrCat("ring, ", args.codec),
         bytes, args.world_size, iterations, seconds});
  }
  return points;
}

#ifdef POTLUCK_WITH_GLOO
absl::StatusOr<std::vector<AllreduceBenchPoint>> RunGloo(const AllreduceBenchRank& args) {
  try {
    gloo::transport::tcp::attr attr;
    attr.hostname = "127.0.0.1";
    auto device = gloo::transport::tcp::CreateDevice(attr);
    gloo::rendezvous::FileStore store(args.store_dir);
    auto context = std::make_shared<gloo::rendezvous::Context>(args.rank, args.world_size);
    context->connectFullMesh(store, device);
    std::vector<AllreduceBenchPoint> points;
    for (uint64_t bytes : args.sizes_bytes) {
      std::vector<float> data(bytes / sizeof(float));
      const int iterations = AllreduceBenchIterations(bytes);
      auto barrier = [&] {
        gloo::BarrierAllToAll(context).run();
        return absl::OkStatus();
      };
      // Gloo's algorithms; the fastest at each size is the baseline.
      std::vector<std::pair<std::string, std::function<absl::Status()>>> algorithms;
      std::vector<float*> pointers = {data.data()};
      auto ring_chunked =
          std::make_shared<gloo::AllreduceRingChunked<float>>(context, pointers, data.size());
      auto halving_doubling =
          std::make_shared<gloo::AllreduceHalvingDoubling<float>>(context, pointers, data.size());
      algorithms.emplace_back("ring_chunked", [&] {
        ring_chunked->run();
        return absl::OkStatus();
      });
      algorithms.emplace_back("halving_doubling", [&] {
        halving_doubling->run();
        return absl::OkStatus();
      });
      auto ring = std::make_shared<gloo::AllreduceRing<float>>(context, pointers, data.size());
      algorithms.emplace_back("ring", [&] {
        ring->run();
        return absl::OkStatus();
      });
      // gloo::allreduce() (the newer API) is left out: in this Gloo version it
      // hangs from 1 MiB on when called repeatedly in place.
      AllreduceBenchPoint best{"gloo", "", bytes, args.world_size, iterations, 0};
      for (const auto& [name, run] : algorithms) {
        ASSIGN_OR_RETURN(const double seconds,
                         TimeAllreduce(data, args.world_size, iterations, barrier, run));
        if (best.seconds == 0 || seconds < best.seconds) {
          best.seconds = seconds;
          best.algorithm = name;
        }
      }
      points.push_back(best);
    }
    return points;
  } catch (const std::exception& error) {
    return absl::UnavailableError(absl::StrCat("gloo: ", error.what()));
  }
}
#endif  // POTLUCK_WITH_GLOO

#ifdef POTLUCK_WITH_MPI
absl::StatusOr<std::vector<AllreduceBenchPoint>> RunMpi(const AllreduceBenchRank& args) {
  MPI_Init(nullptr, nullptr);
  int rank = 0, world_size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  std::vector<AllreduceBenchPoint> points;
  absl::Status status;
  for (uint64_t bytes : args.sizes_bytes) {
    std::vector<float> data(bytes / sizeof(float));
    const int iterations = AllreduceBenchIterations(bytes);
    auto mpi = [](int result, const char* what) {
      return result == MPI_SUCCESS ? absl::OkStatus()
                                   : absl::UnavailableError(absl::StrCat(what, " failed"));
    };
    auto seconds = TimeAllreduce(
        data, world_size, iterations,
        [&] { return mpi(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier"); },
        [&] {
          return mpi(MPI_Allreduce(MPI_IN_PLACE, data.data(), static_cast<int>(data.size()),
                                   MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD),
                     "MPI_Allreduce");
        });
    if (!seconds.ok()) {
      status = seconds.status();
      break;
    }
    points.push_back({"mpi", "MPI_Allreduce", bytes, world_size, iterations, *seconds});
  }
  MPI_Finalize();
  RETURN_IF_ERROR(status);
  if (rank != 0) points.clear();
  return points;
}
#endif  // POTLUCK_WITH_MPI

}  // namespace

absl::Status AllreduceBenchBackendAvailable(absl::string_view backend) {
  if (backend == "tcp") return absl::OkStatus();
  if (backend == "gloo") {
#ifdef POTLUCK_WITH_GLOO
    return absl::OkStatus();
#else
    return absl::FailedPreconditionError(
        "this build has no Gloo, so no gloo baseline: configure with -DPOTLUCK_WITH_GLOO=ON "
        "(needs libgloo-dev), or pass --backend tcp,mpi");
#endif
  }
  if (backend == "mpi") {
#ifdef POTLUCK_WITH_MPI
    return absl::OkStatus();
#else
    return absl::FailedPreconditionError(
        "this build has no MPI, so no mpi baseline: configure with -DPOTLUCK_WITH_MPI=ON "
        "(needs libopenmpi-dev openmpi-bin), or pass --backend tcp,gloo");
#endif
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown backend '", backend, "': use tcp, gloo or mpi"));
}

int AllreduceBenchIterations(uint64_t bytes) {
  return static_cast<int>(
      std::clamp<uint64_t>((uint64_t{1} << 30) / std::max<uint64_t>(bytes, 1), 3, 200));
}

absl::StatusOr<std::vector<AllreduceBenchPoint>> RunAllreduceBenchRank(
    const AllreduceBenchRank& args) {
  RETURN_IF_ERROR(AllreduceBenchBackendAvailable(args.backend));
  absl::StatusOr<std::vector<AllreduceBenchPoint>> points;
  if (args.backend == "tcp") {
    points = RunTcp(args);
  }
#ifdef POTLUCK_WITH_GLOO
  if (args.backend == "gloo") points = RunGloo(args);
#endif
#ifdef POTLUCK_WITH_MPI
  if (args.backend == "mpi") return RunMpi(args);
#endif
  if (points.ok() && args.rank != 0) points->clear();
  return points;
}

}  // namespace potluck
