// MpiCommunicator's collectives: each stages the caller's data, starts MPI's
// non-blocking form and waits for it (Run), then copies the result back.
#include <cmath>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"

#include "collectives/internal/mpi_communicator_impl.h"
#include "common/status.h"

namespace potluck::mpi_internal {

absl::Status MpiCommunicator::Run(absl::string_view context, absl::string_view mpi_call,
                                  absl::Time deadline, absl::FunctionRef<int(MPI_Request*)> start) {
  if (options_.clock->Now() >= deadline) {
    return absl::DeadlineExceededError(
        absl::StrCat(context, ": the deadline passed before the call started"));
  }
  MPI_Request request = MPI_REQUEST_NULL;
  int rc;
  {
    MpiCallGuard guard(serialize_);
    rc = start(&request);
  }
  if (rc != MPI_SUCCESS) {
    return MpiErrorToStatus(rc, absl::StrCat(context, ": ", mpi_call), serialize_);
  }
  absl::Status status = PollRequest(&request, deadline, &aborted_, options_, serialize_, context);
  if (!status.ok()) {
    // MPI may still read and write the staging buffer: it is never freed.
    abandoned_request_ = true;
    KeepForever(std::move(staging_));
    staging_bytes_ = 0;
  }
  return status;
}

absl::StatusOr<double> MpiCommunicator::WeightShare(double weight, absl::Time deadline,
                                                    absl::string_view context) {
  // {weight, 1 if this rank's weight is unusable}, summed over the ranks.
  double* sums = reinterpret_cast<double*>(Staging(4 * sizeof(double)));
  const bool bad_weight = !std::isfinite(weight) || weight < 0;
  sums[0] = bad_weight ? 0.0 : weight;
  sums[1] = bad_weight ? 1.0 : 0.0;
  RETURN_IF_ERROR(Run(context, "MPI_Iallreduce of the weights", deadline, [&](MPI_Request* r) {
    return MPI_Iallreduce(sums, sums + 2, 2, MPI_DOUBLE, MPI_SUM, comm_, r);
  }));
  const double total_weight = sums[2];
  const double bad_ranks = sums[3];
  if (bad_ranks > 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(context, ": ", bad_ranks, " rank(s) passed a negative or non-finite weight",
                     bad_weight ? absl::StrCat(" (this one passed ", weight, ")") : ""));
  }
  if (total_weight == 0) {
    return absl::InvalidArgumentError(absl::StrCat(context, ": every rank's weight is 0"));
  }
  if (!std::isfinite(total_weight)) {
    return absl::InvalidArgumentError(absl::StrCat(context, ": the weights sum to infinity"));
  }
  return weight / total_weight;
}

absl::Status MpiCommunicator::AllReduceImpl(TensorView data, ReduceOp op, absl::Time deadline,
                                            double weight) {
  const std::string context = Describe(absl::StrCat("AllReduce(", DTypeName(data.dtype()), " x ",
                                                    data.count(), ", ", ReduceOpName(op), ")"));
  RETURN_IF_ERROR(CheckUsable(context));
  RETURN_IF_ERROR(ValidateBuffer(data, data.count(), context));
  ASSIGN_OR_RETURN(MPI_Op sum_op, SumOpFor(data.dtype(), op, context));
  double share = 1.0;
  if (op == ReduceOp::kWeightedAverage) {
    ASSIGN_OR_RETURN(share, WeightShare(weight, deadline, context));
  }
  // Separate send and receive buffers rather than MPI_IN_PLACE: OpenMPI then
  // may pick its bandwidth-optimal algorithms for large buffers.
  const size_t bytes = data.size_bytes();
  uint8_t* send = Staging(2 * bytes);
  uint8_t* receive = send + bytes;
  if (share == 1.0) {
    CopyBytes(send, data.data(), bytes);
  } else if (share == 0.0) {
    // A rank that weighs nothing contributes nothing, even if its data holds
    // NaN or infinity (0 * NaN would poison everyone's result). All-zero bits
    // are +0 in every floating-point format.
    if (bytes > 0) std::memset(send, 0, bytes);
  } else {
    CopyScaled(data.data(), send, data.count(), data.dtype(), share);
  }
  RETURN_IF_ERROR(Run(context, "MPI_Iallreduce", deadline, [&](MPI_Request* request) {
    return MPI_Iallreduce(send, receive, static_cast<int>(data.count()), MpiTypeOf(data.dtype()),
                          sum_op, comm_, request);
  }));
  if (op == ReduceOp::kAverage) {
    CopyDivided(receive, data.data(), data.count(), data.dtype(), world_size_);
  } else {
    CopyBytes(data.data(), receive, bytes);
  }
  return absl::OkStatus();
}

absl::Status MpiCommunicator::ReduceScatterImpl(TensorView data, ReduceOp op, absl::Time deadline) {
  const std::string context = Describe(absl::StrCat(
      "ReduceScatter(", DTypeName(data.dtype()), " x ", data.count(), ", ", ReduceOpName(op), ")"));
  RETURN_IF_ERROR(CheckUsable(context));
  ASSIGN_OR_RETURN(const size_t block, BlockCount(data, context));
  RETURN_IF_ERROR(ValidateBuffer(data, block, context));
  if (op == ReduceOp::kWeightedAverage) {
    return absl::InvalidArgumentError(
        absl::StrCat(context,
                     ": ReduceScatter takes no weight; use AllReduce for a weighted "
                     "average"));
  }
  ASSIGN_OR_RETURN(MPI_Op sum_op, SumOpFor(data.dtype(), op, context));
  const size_t bytes = data.size_bytes();
  const size_t block_bytes = block * DTypeSize(data.dtype());
  uint8_t* send = Staging(bytes + block_bytes);
  uint8_t* receive = send + bytes;
  CopyBytes(send, data.data(), bytes);
  RETURN_IF_ERROR(Run(context, "MPI_Ireduce_scatter_block", deadline, [&](MPI_Request* request) {
    return MPI_Ireduce_scatter_block(send, receive, static_cast<int>(block),
                                     MpiTypeOf(data.dtype()), sum_op, comm_, request);
  }));
  void* own_block = data.Slice(static_cast<size_t>(rank_) * block, block).data();
  if (op == ReduceOp::kAverage) {
    CopyDivided(receive, own_block, block, data.dtype(), world_size_);
  } else {
    CopyBytes(own_block, receive, block_bytes);
  }
  return absl::OkStatus();
}

absl::Status MpiCommunicator::AllGatherImpl(TensorView data, absl::Time deadline) {
  const std::string context =
      Describe(absl::StrCat("AllGather(", DTypeName(data.dtype()), " x ", data.count(), ")"));
  RETURN_IF_ERROR(CheckUsable(context));
  ASSIGN_OR_RETURN(const size_t block, BlockCount(data, context));
  RETURN_IF_ERROR(ValidateBuffer(data, block, context));
  const size_t bytes = data.size_bytes();
  const size_t block_bytes = block * DTypeSize(data.dtype());
  const size_t own_offset = static_cast<size_t>(rank_) * block_bytes;
  uint8_t* gathered = Staging(bytes);
  CopyBytes(gathered + own_offset, static_cast<const uint8_t*>(data.data()) + own_offset,
            block_bytes);
  RETURN_IF_ERROR(Run(context, "MPI_Iallgather", deadline, [&](MPI_Request* request) {
    return MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, gathered, static_cast<int>(block),
                          MpiTypeOf(data.dtype()), comm_, request);
  }));
  CopyBytes(data.data(), gathered, bytes);
  return absl::OkStatus();
}

absl::Status MpiCommunicator::BroadcastImpl(TensorView data, int root, absl::Time deadline) {
  const std::string context = Describe(absl::StrCat("Broadcast(", DTypeName(data.dtype()), " x ",
                                                    data.count(), ", root ", root, ")"));
  RETURN_IF_ERROR(CheckUsable(context));
  RETURN_IF_ERROR(ValidateBuffer(data, data.count(), context));
  if (root < 0 || root >= world_size_) {
    return absl::InvalidArgumentError(
        absl::StrCat(context, ": root ", root, " is not a rank of ", world_size_));
  }
  const size_t bytes = data.size_bytes();
  uint8_t* staged = Staging(bytes);
  if (rank_ == root) CopyBytes(staged, data.data(), bytes);
  RETURN_IF_ERROR(Run(context, "MPI_Ibcast", deadline, [&](MPI_Request* request) {
    return MPI_Ibcast(staged, static_cast<int>(data.count()), MpiTypeOf(data.dtype()), root, comm_,
                      request);
  }));
  if (rank_ != root) CopyBytes(data.data(), staged, bytes);
  return absl::OkStatus();
}

absl::Status MpiCommunicator::BarrierImpl(absl::Time deadline) {
  const std::string context = Describe("Barrier");
  RETURN_IF_ERROR(CheckUsable(context));
  return Run(context, "MPI_Ibarrier", deadline,
             [&](MPI_Request* request) { return MPI_Ibarrier(comm_, request); });
}

}  // namespace potluck::mpi_internal
