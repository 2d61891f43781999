// MpiCommunicator, the Communicator that CreateMpiCommunicator and its
// siblings return. Its lifecycle (creation over a duplicated MPI_Comm,
// destruction) is in collectives/mpi_communicator.cc, its collectives in
// internal/mpi_collectives.cc. Private to potluck_collectives_mpi.
//
// Thread-safety: as communicator.h: one collective at a time; Abort() from
// any thread.
#ifndef POTLUCK_COLLECTIVES_INTERNAL_MPI_COMMUNICATOR_IMPL_H_
#define POTLUCK_COLLECTIVES_INTERNAL_MPI_COMMUNICATOR_IMPL_H_

#include <atomic>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

#include "collectives/communicator.h"
#include "collectives/internal/checks.h"
#include "collectives/internal/gathered_compression.h"
#include "collectives/internal/mpi_progress.h"
#include "collectives/internal/mpi_reduce.h"
#include "collectives/mpi_communicator.h"
#include "common/dtype.h"

namespace potluck::mpi_internal {

class MpiCommunicator final : public Communicator {
 public:
  // Takes ownership of `comm` and of the two ops.
  MpiCommunicator(MPI_Comm comm, int rank, int world_size, uint64_t generation, bool serialize,
                  MPI_Op float16_sum, MPI_Op bfloat16_sum, const MpiCommunicatorOptions& options)
      : comm_(comm),
        rank_(rank),
        world_size_(world_size),
        generation_(generation),
        serialize_(serialize),
        float16_sum_(float16_sum),
        bfloat16_sum_(bfloat16_sum),
        options_(options) {}

  // Frees the communicator and the ops unless a request was abandoned in
  // flight.
  ~MpiCommunicator() override;

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  uint64_t generation() const override { return generation_; }
  absl::string_view backend() const override { return "mpi"; }

  absl::Status AllReduce(TensorView data, ReduceOp op, absl::Time deadline,
                         double weight) override {
    return Finish(AllReduceImpl(data, op, deadline, weight));
  }
  // Over this communicator's own AllReduce and AllGather
  // (internal/gathered_compression.h): MPI has no codecs.
  absl::Status CompressedAllReduce(TensorView data, ReduceOp op, WireCodec codec,
                                   ErrorFeedback* feedback, absl::Time deadline,
                                   double weight) override {
    return collectives_internal::GatheredCompressedAllReduce(*this, data, op, codec, feedback,
                                                             deadline, weight);
  }
  absl::Status ReduceScatter(TensorView data, ReduceOp op, absl::Time deadline) override {
    return Finish(ReduceScatterImpl(data, op, deadline));
  }
  absl::Status AllGather(TensorView data, absl::Time deadline) override {
    return Finish(AllGatherImpl(data, deadline));
  }
  absl::Status Broadcast(TensorView data, int root, absl::Time deadline) override {
    return Finish(BroadcastImpl(data, root, deadline));
  }
  absl::Status Barrier(absl::Time deadline) override { return Finish(BarrierImpl(deadline)); }

  void Abort() override { aborted_.store(true, std::memory_order_release); }

 private:
  absl::Status AllReduceImpl(TensorView data, ReduceOp op, absl::Time deadline, double weight);
  absl::Status ReduceScatterImpl(TensorView data, ReduceOp op, absl::Time deadline);
  absl::Status AllGatherImpl(TensorView data, absl::Time deadline);
  absl::Status BroadcastImpl(TensorView data, int root, absl::Time deadline);
  absl::Status BarrierImpl(absl::Time deadline);

  // Remembers the first error, which kills the communicator, and returns
  // `status`.
  absl::Status Finish(absl::Status status) {
    if (!status.ok() && first_error_.ok()) first_error_ = status;
    return status;
  }

  // "AllReduce(float32 x 1024, sum) on rank 1 of 4 (generation 7)".
  std::string Describe(absl::string_view call) const {
    return absl::StrCat(call, " on rank ", rank_, " of ", world_size_, " (generation ", generation_,
                        ")");
  }

  // kAborted after Abort(), kFailedPrecondition after an earlier error.
  absl::Status CheckUsable(absl::string_view context) const {
    if (aborted_.load(std::memory_order_acquire)) {
      return absl::AbortedError(absl::StrCat(context, ": the MPI communicator was aborted"));
    }
    if (!first_error_.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          context,
          ": the MPI communicator is dead after an earlier error: ", first_error_.ToString()));
    }
    return absl::OkStatus();
  }

  // A buffer every call accepts: CPU memory, present, with at most INT_MAX
  // elements per MPI call (`elements_per_call`).
  absl::Status ValidateBuffer(TensorView data, size_t elements_per_call,
                              absl::string_view context) const {
    if (!data.device().is_cpu()) {
      return absl::InvalidArgumentError(absl::StrCat(
          context, ": the MPI backend takes CPU buffers only, not ", data.device().ToString()));
    }
    if (data.data() == nullptr && data.count() > 0) {
      return absl::InvalidArgumentError(absl::StrCat(context, ": null buffer"));
    }
    if (elements_per_call > static_cast<size_t>(INT_MAX)) {
      return absl::InvalidArgumentError(absl::StrCat(context, ": ", elements_per_call,
                                                     " elements in one MPI call exceed MPI's "
                                                     "int count; split the buffer"));
    }
    return absl::OkStatus();
  }

  // `data.count()` split into world_size equal blocks: the block's count.
  absl::StatusOr<size_t> BlockCount(TensorView data, absl::string_view context) const {
    return collectives_internal::EqualBlockCount(data.count(), world_size_, context);
  }

  // The MPI_Op that sums `dtype`, after checking that `op` applies to it.
  absl::StatusOr<MPI_Op> SumOpFor(DType dtype, ReduceOp op, absl::string_view context) const {
    if (!IsFloatingPoint(dtype) && op != ReduceOp::kSum) {
      return absl::InvalidArgumentError(absl::StrCat(context, ": ", DTypeName(dtype),
                                                     " supports only sum, not ", ReduceOpName(op)));
    }
    if (dtype == DType::kFloat16) return float16_sum_;
    if (dtype == DType::kBFloat16) return bfloat16_sum_;
    return MPI_SUM;
  }

  // At least `bytes` of memory that only this communicator touches. Valid
  // until the next call to Staging().
  uint8_t* Staging(size_t bytes) {
    if (bytes > staging_bytes_) {
      staging_ = std::make_unique_for_overwrite<uint8_t[]>(bytes);
      staging_bytes_ = bytes;
    }
    return staging_.get();
  }

  // Starts a non-blocking collective with `start` (which returns an MPI error
  // code) and waits for it. A deadline already passed fails before starting.
  absl::Status Run(absl::string_view context, absl::string_view mpi_call, absl::Time deadline,
                   absl::FunctionRef<int(MPI_Request*)> start);

  // This rank's share weight / sum(weights) of a weighted average, agreed on
  // by every rank (a bad weight anywhere is kInvalidArgument everywhere).
  absl::StatusOr<double> WeightShare(double weight, absl::Time deadline, absl::string_view context);

  MPI_Comm comm_;  // our own duplicate, with MPI_ERRORS_RETURN
  const int rank_;
  const int world_size_;
  const uint64_t generation_;
  const bool serialize_;  // MPI provides only MPI_THREAD_SERIALIZED
  MPI_Op float16_sum_;
  MPI_Op bfloat16_sum_;
  const MpiCommunicatorOptions options_;

  std::atomic<bool> aborted_{false};  // set by Abort() from any thread

  // Touched only by the thread running a collective (callers run one at a
  // time), so not guarded.
  absl::Status first_error_;
  bool abandoned_request_ = false;  // a request was left in flight
  std::unique_ptr<uint8_t[]> staging_;
  size_t staging_bytes_ = 0;
};

}  // namespace potluck::mpi_internal

#endif  // POTLUCK_COLLECTIVES_INTERNAL_MPI_COMMUNICATOR_IMPL_H_
