#include "collectives/mpi_communicator.h"

// MPI's C API only: OpenMPI's deprecated C++ bindings (mpicxx.h) do not
// compile warning-free.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"

#include "collectives/internal/checks.h"
#include "common/check.h"
#include "common/dtype.h"
#include "common/status.h"

namespace potluck {
namespace {

// ---------------------------------------------------------------------------
// Serializing MPI calls when MPI provides only MPI_THREAD_SERIALIZED.

absl::Mutex& MpiCallMutex() {
  static absl::Mutex* const mutex = new absl::Mutex();
  return *mutex;
}

// Holds MpiCallMutex() for its scope when `serialize` is true, i.e. when MPI
// allows one MPI call at a time in the whole process.
class MpiCallGuard {
 public:
  explicit MpiCallGuard(bool serialize) : mutex_(serialize ? &MpiCallMutex() : nullptr) {
    if (mutex_ != nullptr) mutex_->Lock();
  }
  ~MpiCallGuard() {
    if (mutex_ != nullptr) mutex_->Unlock();
  }
  MpiCallGuard(const MpiCallGuard&) = delete;
  MpiCallGuard& operator=(const MpiCallGuard&) = delete;

 private:
  absl::Mutex* const mutex_;  // MpiCallMutex(), or null when MPI is fully thread-safe
};

// ---------------------------------------------------------------------------
// Memory that an abandoned MPI request may still read or write.

// Keeps `memory` allocated, and reachable (so leak checkers stay quiet), until
// the process exits: a request abandoned in flight cannot be cancelled.
void KeepForever(std::shared_ptr<void> memory) {
  static absl::Mutex* const mutex = new absl::Mutex();
  static auto* const kept = new std::vector<std::shared_ptr<void>>();
  absl::MutexLock lock(mutex);
  kept->push_back(std::move(memory));
}

// ---------------------------------------------------------------------------
// MPI error codes to absl::Status.

absl::StatusCode CodeForMpiErrorClass(int error_class) {
  switch (error_class) {
    case MPI_SUCCESS:
      return absl::StatusCode::kOk;
    case MPI_ERR_BUFFER:
    case MPI_ERR_COUNT:
    case MPI_ERR_TYPE:
    case MPI_ERR_TAG:
    case MPI_ERR_COMM:
    case MPI_ERR_RANK:
    case MPI_ERR_REQUEST:
    case MPI_ERR_ROOT:
    case MPI_ERR_GROUP:
    case MPI_ERR_OP:
    case MPI_ERR_TOPOLOGY:
    case MPI_ERR_DIMS:
    case MPI_ERR_ARG:
    case MPI_ERR_NOT_SAME:
    case MPI_ERR_SIZE:
    case MPI_ERR_INFO:
    case MPI_ERR_INFO_KEY:
    case MPI_ERR_INFO_VALUE:
    case MPI_ERR_INFO_NOKEY:
      return absl::StatusCode::kInvalidArgument;
    case MPI_ERR_TRUNCATE:  // a member sent more than this one expected
      return absl::StatusCode::kDataLoss;
    case MPI_ERR_NO_MEM:
    case MPI_ERR_NO_SPACE:
    case MPI_ERR_QUOTA:
      return absl::StatusCode::kResourceExhausted;
    case MPI_ERR_UNSUPPORTED_OPERATION:
    case MPI_ERR_UNSUPPORTED_DATAREP:
      return absl::StatusCode::kUnimplemented;
    case MPI_ERR_PORT:
    case MPI_ERR_SERVICE:
    case MPI_ERR_SPAWN:
      return absl::StatusCode::kUnavailable;
    case MPI_ERR_INTERN:
    case MPI_ERR_IN_STATUS:
    case MPI_ERR_PENDING:
      return absl::StatusCode::kInternal;
    default:  // MPI_ERR_OTHER, MPI_ERR_UNKNOWN, ...
      return absl::StatusCode::kUnknown;
  }
}

// "context: <MPI's message>" with the canonical code for `error_code`'s class.
absl::Status MpiErrorToStatus(int error_code, absl::string_view context, bool serialize) {
  if (error_code == MPI_SUCCESS) return absl::OkStatus();
  MpiCallGuard guard(serialize);
  int error_class = MPI_ERR_UNKNOWN;
  if (MPI_Error_class(error_code, &error_class) != MPI_SUCCESS) error_class = MPI_ERR_UNKNOWN;
  char message[MPI_MAX_ERROR_STRING + 1] = {};
  int length = 0;
  if (MPI_Error_string(error_code, message, &length) != MPI_SUCCESS) {
    return absl::UnknownError(absl::StrCat(context, ": MPI error code ", error_code));
  }
  return absl::Status(CodeForMpiErrorClass(error_class),
                      absl::StrCat(context, ": ", absl::string_view(message, length)));
}

// ---------------------------------------------------------------------------
// Waiting for a request.

// Tests `request` until it completes (OK), `deadline` passes
// (kDeadlineExceeded), `*aborted` turns true (kAborted; `aborted` may be null)
// or MPI reports an error. On any error the request may still be in flight:
// whatever it reads or writes must stay allocated for good.
absl::Status PollRequest(MPI_Request* request, absl::Time deadline,
                         const std::atomic<bool>* aborted, const MpiCommunicatorOptions& options,
                         bool serialize, absl::string_view context) {
  static constexpr absl::string_view kStranded =
      "; a started MPI collective cannot be cancelled, so the communicator is dead and the MPI "
      "job must be torn down";
  const absl::Time start = options.clock->Now();
  const absl::Time spin_until = start + options.spin_duration;
  for (;;) {
    int done = 0;
    int rc;
    {
      MpiCallGuard guard(serialize);
      rc = MPI_Test(request, &done, MPI_STATUS_IGNORE);
    }
    if (rc != MPI_SUCCESS) {
      return MpiErrorToStatus(rc, absl::StrCat(context, ": MPI_Test"), serialize);
    }
    if (done) return absl::OkStatus();
    if (aborted != nullptr && aborted->load(std::memory_order_acquire)) {
      return absl::AbortedError(absl::StrCat(context, ": aborted while in flight", kStranded));
    }
    const absl::Time now = options.clock->Now();
    if (now >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(context, ": deadline exceeded after ",
                                                      absl::FormatDuration(now - start),
                                                      " waiting for the other members", kStranded));
    }
    if (now >= spin_until) absl::SleepFor(options.poll_interval);
  }
}

// ---------------------------------------------------------------------------
// Element types and reductions.

bool IsFloatingPoint(DType dtype) {
  return dtype == DType::kFloat32 || dtype == DType::kFloat64 || dtype == DType::kFloat16 ||
         dtype == DType::kBFloat16;
}

// The MPI type a buffer of `dtype` is sent as; 16-bit floats travel as
// uint16 units (MPI has no 16-bit float type) and are reduced by our own ops.
MPI_Datatype MpiTypeOf(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return MPI_FLOAT;
    case DType::kFloat64:
      return MPI_DOUBLE;
    case DType::kFloat16:
    case DType::kBFloat16:
      return MPI_UINT16_T;
    case DType::kInt32:
      return MPI_INT32_T;
    case DType::kInt64:
      return MPI_INT64_T;
    case DType::kUInt8:
      return MPI_UINT8_T;
    case DType::kInt8:
      return MPI_INT8_T;
  }
  POTLUCK_CHECK(false) << "invalid DType " << static_cast<int>(dtype);
  return MPI_DATATYPE_NULL;
}

absl::string_view ReduceOpName(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kAverage:
      return "average";
    case ReduceOp::kWeightedAverage:
      return "weighted average";
  }
  return "invalid op";
}

// The MPI_User_function behind the fp16/bf16 sums: inout[i] = in[i] + inout[i],
// added in float and rounded once to the 16-bit format. Float's 24-bit
// significand has at least twice the 16-bit formats' bits plus two, so this is
// the correctly rounded 16-bit sum, and it is commutative bit for bit.
template <typename Half, void (*kToFloat)(const Half*, float*, size_t),
          void (*kFromFloat)(const float*, Half*, size_t)>
void SumInFloat(void* in, void* inout, int* length, MPI_Datatype* /*datatype*/) {
  constexpr size_t kChunk = 256;
  float addend[kChunk];
  float sum[kChunk];
  const Half* x = static_cast<const Half*>(in);
  Half* y = static_cast<Half*>(inout);
  const size_t count = static_cast<size_t>(*length);
  for (size_t begin = 0; begin < count; begin += kChunk) {
    const size_t n = std::min(kChunk, count - begin);
    kToFloat(x + begin, addend, n);
    kToFloat(y + begin, sum, n);
    for (size_t i = 0; i < n; ++i) sum[i] += addend[i];
    kFromFloat(sum, y + begin, n);
  }
}

double ToDouble(float value) { return value; }
double ToDouble(double value) { return value; }
double ToDouble(Float16 value) { return ToFloat(value); }
double ToDouble(BFloat16 value) { return ToFloat(value); }

// Rounds `value` to T, through float for the 16-bit formats. When `value` is
// the double nearest a quotient of two numbers exact in T, that is the
// correctly rounded quotient: double and float each have at least twice T's
// significand bits plus two, so the intermediate roundings change nothing.
template <typename T>
T FromDouble(double value);
template <>
float FromDouble<float>(double value) {
  return static_cast<float>(value);
}
template <>
double FromDouble<double>(double value) {
  return value;
}
template <>
Float16 FromDouble<Float16>(double value) {
  return ToFloat16(static_cast<float>(value));
}
template <>
BFloat16 FromDouble<BFloat16>(double value) {
  return ToBFloat16(static_cast<float>(value));
}

// Calls fn.template operator()<T>() with T the storage type of the
// floating-point `dtype`.
template <typename Fn>
void VisitFloatingPoint(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kFloat32:
      fn.template operator()<float>();
      return;
    case DType::kFloat64:
      fn.template operator()<double>();
      return;
    case DType::kFloat16:
      fn.template operator()<Float16>();
      return;
    case DType::kBFloat16:
      fn.template operator()<BFloat16>();
      return;
    default:
      POTLUCK_CHECK(false) << DTypeName(dtype) << " is not a floating-point dtype";
  }
}

// out[i] = round(in[i] * factor), computed in double (not always correctly
// rounded for the 16-bit formats: an arbitrary factor can make the rounding
// through float land on a tie).
void CopyScaled(const void* in, void* out, size_t count, DType dtype, double factor) {
  VisitFloatingPoint(dtype, [&]<typename T>() {
    const T* from = static_cast<const T*>(in);
    T* to = static_cast<T*>(out);
    for (size_t i = 0; i < count; ++i) to[i] = FromDouble<T>(ToDouble(from[i]) * factor);
  });
}

// out[i] = round(in[i] / divisor), computed in double: the correctly rounded
// quotient when `divisor` is exact in the dtype (world sizes up to 256 for
// bf16, 2048 for fp16).
void CopyDivided(const void* in, void* out, size_t count, DType dtype, double divisor) {
  VisitFloatingPoint(dtype, [&]<typename T>() {
    const T* from = static_cast<const T*>(in);
    T* to = static_cast<T*>(out);
    for (size_t i = 0; i < count; ++i) to[i] = FromDouble<T>(ToDouble(from[i]) / divisor);
  });
}

void CopyBytes(void* to, const void* from, size_t bytes) {
  if (bytes > 0) std::memcpy(to, from, bytes);
}

// ---------------------------------------------------------------------------

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

  ~MpiCommunicator() override {
    // A request abandoned in flight may still use the communicator and the
    // ops (and the staging buffer, already kept aside): never free them.
    if (abandoned_request_) return;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;  // too late to free anything; MPI has let go of it all
    MpiCallGuard guard(serialize_);
    MPI_Op_free(&float16_sum_);
    MPI_Op_free(&bfloat16_sum_);
    MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  uint64_t generation() const override { return generation_; }

  absl::Status AllReduce(TensorView data, ReduceOp op, absl::Time deadline,
                         double weight) override {
    return Finish(AllReduceImpl(data, op, deadline, weight));
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

// Checks that MPI is usable by a communicator; sets `*serialize` when MPI
// provides only MPI_THREAD_SERIALIZED.
absl::Status CheckMpiReady(bool* serialize) {
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (finalized) return absl::FailedPreconditionError("MPI was already finalized");
  if (!initialized) {
    return absl::FailedPreconditionError("MPI is not initialized: create an MpiRuntime first");
  }
  int provided = MPI_THREAD_SINGLE;
  MPI_Query_thread(&provided);
  if (provided < MPI_THREAD_SERIALIZED) {
    return absl::FailedPreconditionError(
        absl::StrCat("MPI was initialized with thread level ", provided,
                     "; the MPI backend needs MPI_THREAD_SERIALIZED or MPI_THREAD_MULTIPLE"));
  }
  *serialize = provided < MPI_THREAD_MULTIPLE;
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Communicator>> CreateOnComm(MPI_Comm parent, uint64_t generation,
                                                           absl::Time deadline,
                                                           const MpiCommunicatorOptions& options,
                                                           bool serialize) {
  const std::string context =
      absl::StrCat("creating the MPI communicator of generation ", generation);
  POTLUCK_CHECK(options.clock != nullptr) << "MpiCommunicatorOptions::clock is null";
  if (options.clock->Now() >= deadline) {
    return absl::DeadlineExceededError(absl::StrCat(context, ": the deadline already passed"));
  }
  // MPI writes the duplicate's handle when the request completes, which may
  // be after we gave up on it: it lives on the heap until we know.
  auto duplicate = std::make_shared<MPI_Comm>(MPI_COMM_NULL);
  MPI_Request request = MPI_REQUEST_NULL;
  int rc;
  {
    MpiCallGuard guard(serialize);
    rc = MPI_Comm_idup(parent, duplicate.get(), &request);
  }
  if (rc != MPI_SUCCESS) {
    return MpiErrorToStatus(rc, absl::StrCat(context, ": MPI_Comm_idup"), serialize);
  }
  absl::Status status = PollRequest(&request, deadline, /*aborted=*/nullptr, options, serialize,
                                    absl::StrCat(context, ": MPI_Comm_idup"));
  if (!status.ok()) {
    KeepForever(std::move(duplicate));
    return status;
  }
  MPI_Comm comm = *duplicate;

  int rank = 0;
  int size = 0;
  MPI_Op float16_sum = MPI_OP_NULL;
  MPI_Op bfloat16_sum = MPI_OP_NULL;
  {
    MpiCallGuard guard(serialize);
    rc = MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_rank(comm, &rank);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_size(comm, &size);
    if (rc == MPI_SUCCESS) {
      std::string name = absl::StrCat("potluck generation ", generation);
      rc = MPI_Comm_set_name(comm, name.c_str());
    }
    if (rc == MPI_SUCCESS) {
      rc = MPI_Op_create(&SumInFloat<Float16, ConvertHalfToFloat, ConvertFloatToHalf>,
                         /*commute=*/1, &float16_sum);
    }
    if (rc == MPI_SUCCESS) {
      rc = MPI_Op_create(&SumInFloat<BFloat16, ConvertBFloat16ToFloat, ConvertFloatToBFloat16>,
                         /*commute=*/1, &bfloat16_sum);
    }
    if (rc != MPI_SUCCESS) {
      if (float16_sum != MPI_OP_NULL) MPI_Op_free(&float16_sum);
      MPI_Comm_free(&comm);
    }
  }
  if (rc != MPI_SUCCESS) return MpiErrorToStatus(rc, context, serialize);
  return std::make_unique<MpiCommunicator>(comm, rank, size, generation, serialize, float16_sum,
                                           bfloat16_sum, options);
}

}  // namespace

absl::StatusOr<std::unique_ptr<MpiRuntime>> MpiRuntime::Init(int* argc, char*** argv) {
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (finalized) {
    return absl::FailedPreconditionError(
        "MPI was already finalized; it cannot be initialized twice in one process");
  }
  if (initialized) {
    return absl::FailedPreconditionError(
        "MPI is already initialized; whoever initialized it also finalizes it");
  }
  int provided = MPI_THREAD_SINGLE;
  const int rc = MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided);
  if (rc != MPI_SUCCESS) return MpiErrorToStatus(rc, "MPI_Init_thread", /*serialize=*/false);
  if (provided < MPI_THREAD_SERIALIZED) {
    MPI_Finalize();
    return absl::FailedPreconditionError(
        absl::StrCat("MPI provides thread level ", provided,
                     "; potluck needs MPI_THREAD_SERIALIZED or MPI_THREAD_MULTIPLE"));
  }
  // OpenMPI 4.1 reports a failed non-blocking collective through
  // MPI_COMM_WORLD's error handler, whatever the request's communicator has.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  int world_rank = 0;
  int world_size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  return std::unique_ptr<MpiRuntime>(
      new MpiRuntime(provided == MPI_THREAD_MULTIPLE, world_rank, world_size));
}

MpiRuntime::~MpiRuntime() { MPI_Finalize(); }

absl::StatusOr<std::unique_ptr<Communicator>> CreateMpiCommunicator(
    MpiCommHandle comm, uint64_t generation, absl::Time deadline,
    const MpiCommunicatorOptions& options) {
  bool serialize = false;
  RETURN_IF_ERROR(CheckMpiReady(&serialize));
  const MPI_Fint fortran_handle = static_cast<MPI_Fint>(comm.fortran_handle);
  if (fortran_handle != comm.fortran_handle) {
    return absl::InvalidArgumentError(
        absl::StrCat("MPI communicator handle ", comm.fortran_handle, " is out of range"));
  }
  MPI_Comm parent;
  {
    MpiCallGuard guard(serialize);
    parent = MPI_Comm_f2c(fortran_handle);
  }
  if (parent == MPI_COMM_NULL) {
    return absl::InvalidArgumentError(
        absl::StrCat("MPI communicator handle ", comm.fortran_handle, " names no communicator"));
  }
  return CreateOnComm(parent, generation, deadline, options, serialize);
}

absl::StatusOr<std::unique_ptr<Communicator>> CreateMpiWorldCommunicator(
    uint64_t generation, absl::Time deadline, const MpiCommunicatorOptions& options) {
  bool serialize = false;
  RETURN_IF_ERROR(CheckMpiReady(&serialize));
  return CreateOnComm(MPI_COMM_WORLD, generation, deadline, options, serialize);
}

absl::StatusOr<std::unique_ptr<Communicator>> CreateMpiWorldCommunicatorRanked(
    int rank, uint64_t generation, absl::Time deadline, const MpiCommunicatorOptions& options) {
  bool serialize = false;
  RETURN_IF_ERROR(CheckMpiReady(&serialize));
  MPI_Comm split = MPI_COMM_NULL;
  int rc;
  {
    MpiCallGuard guard(serialize);
    rc = MPI_Comm_split(MPI_COMM_WORLD, 0, rank, &split);
  }
  if (rc != MPI_SUCCESS) {
    return MpiErrorToStatus(rc, absl::StrCat("MPI_Comm_split for generation ", generation),
                            serialize);
  }
  auto created = CreateOnComm(split, generation, deadline, options, serialize);
  {
    MpiCallGuard guard(serialize);
    MPI_Comm_free(&split);
  }
  if (created.ok() && (*created)->rank() != rank) {
    return absl::InvalidArgumentError(
        absl::StrCat("MPI rank ", rank, " of generation ", generation, " was passed by ",
                     "more than one process (this one became rank ", (*created)->rank(), ")"));
  }
  return created;
}

void AbortMpiJob(const absl::Status& reason) {
  std::fprintf(stderr, "potluck: tearing down the MPI job: %s\n", reason.ToString().c_str());
  std::fflush(stderr);
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, 1);
  std::abort();  // MPI_Abort does not return; without MPI there is no job to abort
}

}  // namespace potluck
