// Argument and state checks every Communicator backend shares, so their
// errors read the same whichever backend a job runs on.
#ifndef POTLUCK_COLLECTIVES_INTERNAL_CHECKS_H_
#define POTLUCK_COLLECTIVES_INTERNAL_CHECKS_H_

#include <cstddef>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace potluck::collectives_internal {

// The element count of each of `world_size` equal blocks of `count`
// elements; kInvalidArgument when they do not split evenly.
inline absl::StatusOr<size_t> EqualBlockCount(size_t count, int world_size,
                                              absl::string_view call) {
  if (count % static_cast<size_t>(world_size) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        call, ": ", count, " elements do not split into ", world_size, " equal blocks"));
  }
  return count / static_cast<size_t>(world_size);
}

// kInvalidArgument unless 0 <= rank < world_size.
inline absl::Status ValidateRank(int rank, int world_size) {
  if (world_size < 1 || rank < 0 || rank >= world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", rank, " does not exist in a group of ", world_size));
  }
  return absl::OkStatus();
}

// What every call on a communicator killed by `first_error` returns.
inline absl::Status DeadCommunicatorError(absl::string_view call, const absl::Status& first_error) {
  return absl::FailedPreconditionError(
      absl::StrCat(call, ": the communicator is dead since: ", first_error.ToString()));
}

}  // namespace potluck::collectives_internal

#endif  // POTLUCK_COLLECTIVES_INTERNAL_CHECKS_H_
