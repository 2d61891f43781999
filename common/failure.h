// Failure reasons: why a call failed, as a type, where the canonical code
// alone does not tell a caller what to do.
//
// A reason travels as a payload of the absl::Status (and across gRPC in the
// status details, see coordinator/server.cc), so a caller branches on
// FailureOf(status), never on the message text. Most failures need no
// reason: the canonical code says enough (kUnavailable: retry; kDataLoss:
// corrupt). Add a reason only where two failures share a code but must be
// handled differently.
//
// The numbers are part of the wire format: never renumber, only append.
//
// Thread-safety: stateless; safe from any thread.
#ifndef POTLUCK_COMMON_FAILURE_H_
#define POTLUCK_COMMON_FAILURE_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace potluck {

enum class Failure : int {
  kUnspecified = 0,
  // kFailedPrecondition from a worker call: the worker is alive but waits in
  // the join window; it is admitted at the group's next step boundary.
  kWaitingForAdmission = 1,
  // kDataLoss from a training step: this worker's own gradients or
  // parameters are not finite (a broken device, a bad kernel). It must leave
  // so that the others go on without it; it is not a peer's fault.
  kOwnStateNotFinite = 2,
  // A database (state or checkpoint store) is held by another process.
  kStoreLocked = 3,
  // kInvalidArgument from a command: its command line lacks or misuses a
  // flag (the CLI exits 1, a usage error, instead of 2).
  kUsage = 4,
  // kFailedPrecondition from a worker call: the job was cancelled by its
  // owner. Its workers leave and exit 0; it is no network blip to retry.
  kJobCancelled = 5,
  // kDataLoss from reading a job's data: a shard is not the one the job was
  // submitted with (changed or replaced since). Retrying or regrouping reads
  // the same bytes: the worker stops, naming the shard.
  kDatasetChanged = 6,
  // kInvalidArgument or kDataLoss from restoring a job's committed
  // checkpoint: it lacks an entry this model needs, holds one of another
  // shape, or its trainer state does not parse. Every retry reads the same
  // checkpoint: the worker stops, naming it.
  kCheckpointUnusable = 7,
};

// The name of `failure` ("waiting_for_admission"), for logs and tests.
absl::string_view FailureName(Failure failure);

// `status` (not OK) with `failure` attached; OK stays OK.
absl::Status WithFailure(absl::Status status, Failure failure);

// The Failure numbered `value` (as it travels in a message), or
// kUnspecified for a number this release does not know.
Failure FailureFromNumber(int64_t value);

// The reason attached to `status`, or kUnspecified.
Failure FailureOf(const absl::Status& status);

// Whether `status` failed for `failure`.
inline bool FailedBecause(const absl::Status& status, Failure failure) {
  return !status.ok() && FailureOf(status) == failure;
}

}  // namespace potluck

#endif  // POTLUCK_COMMON_FAILURE_H_
