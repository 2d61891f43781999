#include "collectives/internal/mpi_progress.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace potluck::mpi_internal {
namespace {

// The one mutex behind every MpiCallGuard: serializes MPI calls when MPI
// provides only MPI_THREAD_SERIALIZED.
absl::Mutex& MpiCallMutex() {
  static absl::Mutex* const mutex = new absl::Mutex();
  return *mutex;
}

// MPI's error classes to the canonical codes.
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

}  // namespace

MpiCallGuard::MpiCallGuard(bool serialize) : mutex_(serialize ? &MpiCallMutex() : nullptr) {
  if (mutex_ != nullptr) mutex_->Lock();
}

MpiCallGuard::~MpiCallGuard() {
  if (mutex_ != nullptr) mutex_->Unlock();
}

// ---------------------------------------------------------------------------
// Memory that an abandoned MPI request may still read or write.

void KeepForever(std::shared_ptr<void> memory) {
  static absl::Mutex* const mutex = new absl::Mutex();
  static auto* const kept = new std::vector<std::shared_ptr<void>>();
  absl::MutexLock lock(mutex);
  kept->push_back(std::move(memory));
}

// ---------------------------------------------------------------------------
// MPI error codes to absl::Status.

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

}  // namespace potluck::mpi_internal
