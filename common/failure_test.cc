#include "common/failure.h"

#include <gtest/gtest.h>

#include "common/status.h"

namespace potluck {
namespace {

TEST(Failure, TravelsWithTheStatusThroughAnnotateAndCopies) {
  const absl::Status tagged =
      WithFailure(absl::FailedPreconditionError("worker w1 waits in the join window"),
                  Failure::kWaitingForAdmission);
  const absl::Status annotated = Annotate(tagged, "rendezvous");
  EXPECT_EQ(annotated.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(FailureOf(annotated), Failure::kWaitingForAdmission);
  EXPECT_TRUE(FailedBecause(annotated, Failure::kWaitingForAdmission));
  EXPECT_FALSE(FailedBecause(annotated, Failure::kStoreLocked));
  absl::StatusOr<int> carried = annotated;
  EXPECT_EQ(FailureOf(carried.status()), Failure::kWaitingForAdmission);
}

TEST(Failure, TheMessageAloneCarriesNoReason) {
  // The same words without the payload are no reason: nobody reads text.
  EXPECT_EQ(FailureOf(absl::FailedPreconditionError("worker w1 waits in the join window")),
            Failure::kUnspecified);
  EXPECT_EQ(FailureOf(absl::OkStatus()), Failure::kUnspecified);
  EXPECT_TRUE(WithFailure(absl::OkStatus(), Failure::kStoreLocked).ok());
}

TEST(Failure, EveryReasonHasAName) {
  EXPECT_EQ(FailureName(Failure::kWaitingForAdmission), "waiting_for_admission");
  EXPECT_EQ(FailureName(Failure::kOwnStateNotFinite), "own_state_not_finite");
  EXPECT_EQ(FailureName(Failure::kStoreLocked), "store_locked");
  EXPECT_EQ(FailureName(Failure::kUsage), "usage");
  EXPECT_EQ(FailureName(Failure::kJobCancelled), "job_cancelled");
  EXPECT_EQ(FailureName(Failure::kDatasetChanged), "dataset_changed");
  EXPECT_EQ(FailureOf(WithFailure(absl::InvalidArgumentError("give --x"), Failure::kUsage)),
            Failure::kUsage);
}

}  // namespace
}  // namespace potluck
