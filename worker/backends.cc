#include "worker/backends.h"

#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

#include "collectives/rendezvous.h"
#include "common/status.h"
#ifdef POTLUCK_WITH_CUDA
#include "collectives/nccl_communicator.h"
#endif

namespace potluck {
namespace {

#ifdef POTLUCK_WITH_MPI
// Any failed collective tears the MPI job down: a request that did not
// complete can be neither cancelled nor freed, so the communicator (and MPI
// itself) cannot be trusted again.
class TearDownOnFailure final : public Communicator {
 public:
  explicit TearDownOnFailure(std::unique_ptr<Communicator> inner) : inner_(std::move(inner)) {}

  int rank() const override { return inner_->rank(); }
  int world_size() const override { return inner_->world_size(); }
  uint64_t generation() const override { return inner_->generation(); }
  absl::string_view backend() const override { return inner_->backend(); }
  void Abort() override { inner_->Abort(); }

  absl::Status AllReduce(TensorView data, ReduceOp op, absl::Time deadline,
                         double weight) override {
    return Checked(inner_->AllReduce(data, op, deadline, weight));
  }
  absl::Status CompressedAllReduce(TensorView data, ReduceOp op, WireCodec codec,
                                   ErrorFeedback* feedback, absl::Time deadline,
                                   double weight) override {
    return Checked(inner_->CompressedAllReduce(data, op, codec, feedback, deadline, weight));
  }
  absl::Status ReduceScatter(TensorView data, ReduceOp op, absl::Time deadline) override {
    return Checked(inner_->ReduceScatter(data, op, deadline));
  }
  absl::Status AllGather(TensorView data, absl::Time deadline) override {
    return Checked(inner_->AllGather(data, deadline));
  }
  absl::Status Broadcast(TensorView data, int root, absl::Time deadline) override {
    return Checked(inner_->Broadcast(data, root, deadline));
  }
  absl::Status Barrier(absl::Time deadline) override { return Checked(inner_->Barrier(deadline)); }

 private:
  static absl::Status Checked(absl::Status status) {
    if (!status.ok()) AbortMpiJob(status);
    return status;
  }
  const std::unique_ptr<Communicator> inner_;
};
#endif  // POTLUCK_WITH_MPI

#ifdef POTLUCK_WITH_CUDA
// One value that rank 0 publishes and the others read, carried by a
// broadcast over the group's TCP communicator: how the NCCL id travels.
// Every member makes exactly one call: rank 0 Set, the others Get.
class BroadcastStore final : public RendezvousStore {
 public:
  BroadcastStore(Communicator* control, absl::Time deadline)
      : control_(control), deadline_(deadline) {}

  absl::Status Set(absl::string_view, absl::string_view value) override {
    std::string bytes(value);
    return Exchange(&bytes);
  }
  absl::StatusOr<std::string> Get(absl::string_view, absl::Time) override {
    std::string bytes;
    RETURN_IF_ERROR(Exchange(&bytes));
    return bytes;
  }

 private:
  absl::Status Exchange(std::string* bytes) {
    int64_t size = static_cast<int64_t>(bytes->size());
    RETURN_IF_ERROR(control_->Broadcast(TensorView::Of(&size, 1), 0, deadline_));
    if (size < 0 || size > 4096) {
      return absl::DataLossError(absl::StrCat("rank 0 sent a ", size, "-byte NCCL id"));
    }
    bytes->resize(static_cast<size_t>(size));
    return control_->Broadcast(TensorView(bytes->data(), DType::kUInt8, bytes->size()), 0,
                               deadline_);
  }

  Communicator* const control_;  // not owned
  const absl::Time deadline_;
};
#endif

}  // namespace

#ifdef POTLUCK_WITH_MPI
ConnectDataFn MpiDataBackend(const MpiRuntime* mpi) {
  return [mpi](const GroupView& view, int rank, Communicator* control,
               absl::Time deadline) -> absl::StatusOr<std::unique_ptr<Communicator>> {
    const int members = static_cast<int>(view.members.size());
    if (members != mpi->world_size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--backend mpi: generation ", view.generation, " has ", members,
          " member(s) but this MPI job has ", mpi->world_size(),
          " processes; the group must be the MPI job (set the job's access.min_workers to ",
          mpi->world_size(), " so that it forms whole, and join no other workers)"));
    }
    // Each member's MPI rank at its place in the view: the group must hold
    // every process of this MPI job, once.
    std::vector<int64_t> world_ranks(members, 0);
    world_ranks[rank] = mpi->world_rank();
    RETURN_IF_ERROR(
        control->AllGather(TensorView::Of(world_ranks.data(), world_ranks.size()), deadline));
    if (std::set<int64_t>(world_ranks.begin(), world_ranks.end()).size() != world_ranks.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--backend mpi: generation ", view.generation,
                       " holds members of different MPI jobs (two have the same MPI rank)"));
    }
    ASSIGN_OR_RETURN(std::unique_ptr<Communicator> comm,
                     CreateMpiWorldCommunicatorRanked(rank, view.generation, deadline));
    return std::unique_ptr<Communicator>(std::make_unique<TearDownOnFailure>(std::move(comm)));
  };
}
#endif  // POTLUCK_WITH_MPI

ConnectDataFn NcclDataBackend(int device) {
  return [device](const GroupView& view, int rank, Communicator* control,
                  absl::Time deadline) -> absl::StatusOr<std::unique_ptr<Communicator>> {
#ifdef POTLUCK_WITH_CUDA
    BroadcastStore store(control, deadline);
    NcclOptions options;
    options.rank = rank;
    options.world_size = static_cast<int>(view.members.size());
    options.generation = view.generation;
    options.device = device;
    ASSIGN_OR_RETURN(std::unique_ptr<Communicator> comm,
                     ConnectNcclCommunicator(&store, options, deadline));
    return NewHostStagedCommunicator(std::move(comm), device);
#else
    (void)view, (void)rank, (void)control, (void)deadline, (void)device;
    return absl::FailedPreconditionError(
        "--backend nccl: this build has no CUDA (POTLUCK_WITH_CUDA=OFF)");
#endif
  };
}

}  // namespace potluck
