#include "common/failure.h"

#include <climits>
#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace potluck {
namespace {

constexpr absl::string_view kPayloadUrl = "type.potluck.dev/potluck.Failure";

bool Known(int value) {
  return value >= static_cast<int>(Failure::kUnspecified) &&
         value <= static_cast<int>(Failure::kCheckpointUnusable);
}

}  // namespace

absl::string_view FailureName(Failure failure) {
  switch (failure) {
    case Failure::kUnspecified:
      return "unspecified";
    case Failure::kWaitingForAdmission:
      return "waiting_for_admission";
    case Failure::kOwnStateNotFinite:
      return "own_state_not_finite";
    case Failure::kStoreLocked:
      return "store_locked";
    case Failure::kUsage:
      return "usage";
    case Failure::kJobCancelled:
      return "job_cancelled";
    case Failure::kDatasetChanged:
      return "dataset_changed";
    case Failure::kCheckpointUnusable:
      return "checkpoint_unusable";
  }
  return "unknown";
}

absl::Status WithFailure(absl::Status status, Failure failure) {
  if (status.ok() || failure == Failure::kUnspecified) return status;
  status.SetPayload(kPayloadUrl, absl::Cord(absl::StrCat(static_cast<int>(failure))));
  return status;
}

Failure FailureFromNumber(int64_t value) {
  return value >= 0 && value <= INT32_MAX && Known(static_cast<int>(value))
             ? static_cast<Failure>(value)
             : Failure::kUnspecified;
}

Failure FailureOf(const absl::Status& status) {
  const auto payload = status.GetPayload(kPayloadUrl);
  int value = 0;
  if (!payload.has_value() || !absl::SimpleAtoi(std::string(*payload), &value) || !Known(value)) {
    return Failure::kUnspecified;
  }
  return static_cast<Failure>(value);
}

}  // namespace potluck
