// Status helpers shared by every potluck component.
//
// Errors cross component boundaries as absl::Status / absl::StatusOr<T> with
// canonical codes (a vanished peer is kUnavailable, a timeout
// kDeadlineExceeded, a bad request kInvalidArgument, a corrupt file
// kDataLoss). Foreign error codes (errno here; RocksDB, gRPC, MPI and NCCL in
// their own components) are converted at the lowest layer, with context.
//
// Debian 12's Abseil (20220623) has no RETURN_IF_ERROR / ASSIGN_OR_RETURN;
// they are defined once, here.
//
// Thread-safety: everything here is stateless and safe from any thread.
#ifndef POTLUCK_COMMON_STATUS_H_
#define POTLUCK_COMMON_STATUS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace potluck {

// Converts an errno value into a Status with a canonical code, e.g.
// ErrnoStatus(ENOSPC, "writing /ckpt/000042.blob") is kResourceExhausted
// "writing /ckpt/000042.blob: No space left on device".
absl::Status ErrnoStatus(int errno_value, absl::string_view context);

// Returns `status` with `context` prefixed to its message ("context: message"),
// keeping the code and the payloads (common/failure.h). OK stays OK.
absl::Status Annotate(const absl::Status& status, absl::string_view context);

}  // namespace potluck

#define POTLUCK_STATUS_CONCAT_INNER_(a, b) a##b
#define POTLUCK_STATUS_CONCAT_(a, b) POTLUCK_STATUS_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::Status) and returns it from the enclosing
// function if it is not OK.
#define RETURN_IF_ERROR(expr)                          \
  do {                                                 \
    ::absl::Status potluck_status_ = (expr);           \
    if (!potluck_status_.ok()) return potluck_status_; \
  } while (false)

// ASSIGN_OR_RETURN(lhs, rexpr): evaluates `rexpr` (an absl::StatusOr<T>); on
// error returns its status, otherwise moves the value into `lhs`, which may be
// a declaration (`auto x`) or an existing variable.
#define ASSIGN_OR_RETURN(lhs, rexpr) \
  POTLUCK_ASSIGN_OR_RETURN_IMPL_(POTLUCK_STATUS_CONCAT_(potluck_statusor_, __LINE__), lhs, rexpr)

#define POTLUCK_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                   \
  if (!statusor.ok()) return std::move(statusor).status();   \
  lhs = std::move(statusor).value()

#endif  // POTLUCK_COMMON_STATUS_H_
