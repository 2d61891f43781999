#include "common/status.h"

#include <cerrno>

#include <gtest/gtest.h>

#include "common/check.h"

namespace potluck {
namespace {

absl::Status FailIfNegative(int value) {
  if (value < 0) return absl::InvalidArgumentError("negative");
  return absl::OkStatus();
}

absl::StatusOr<int> Half(int value) {
  if (value % 2 != 0) return absl::InvalidArgumentError("odd");
  return value / 2;
}

absl::Status CheckBoth(int a, int b, int* calls) {
  RETURN_IF_ERROR(FailIfNegative(a));
  ++*calls;
  RETURN_IF_ERROR(FailIfNegative(b));
  ++*calls;
  return absl::OkStatus();
}

absl::StatusOr<int> Quarter(int value) {
  ASSIGN_OR_RETURN(int half, Half(value));
  ASSIGN_OR_RETURN(half, Half(half));  // assigns to an existing variable
  return half;
}

TEST(StatusMacros, ReturnIfErrorStopsAtTheFirstError) {
  int calls = 0;
  EXPECT_TRUE(CheckBoth(1, 2, &calls).ok());
  EXPECT_EQ(calls, 2);
  calls = 0;
  const absl::Status status = CheckBoth(1, -2, &calls);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "negative");
  EXPECT_EQ(calls, 1);
}

TEST(StatusMacros, AssignOrReturnUnwrapsOrPropagates) {
  EXPECT_EQ(*Quarter(8), 2);
  EXPECT_EQ(Quarter(6).status().code(), absl::StatusCode::kInvalidArgument);  // 3 is odd
  EXPECT_EQ(Quarter(5).status().message(), "odd");
}

TEST(ErrnoStatus, MapsToCanonicalCodesWithContext) {
  const absl::Status full = ErrnoStatus(ENOSPC, "writing chunk 3");
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(full.message(), "writing chunk 3: No space left on device");
  EXPECT_EQ(ErrnoStatus(ECONNRESET, "rank 2").code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(ErrnoStatus(ETIMEDOUT, "x").code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(ErrnoStatus(ENOENT, "x").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ErrnoStatus(EACCES, "x").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ErrnoStatus(EIO, "x").code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(ErrnoStatus(0, "x").ok());
}

TEST(Annotate, PrefixesContextAndKeepsTheCode) {
  const absl::Status status = Annotate(absl::DataLossError("bad chunk"), "tensor w1");
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(status.message(), "tensor w1: bad chunk");
  EXPECT_TRUE(Annotate(absl::OkStatus(), "ignored").ok());
}

TEST(CheckDeathTest, FailureNamesTheConditionAndMessage) {
  EXPECT_DEATH(
      {
        int rank = 5;
        POTLUCK_CHECK(rank < 4) << "rank " << rank;
      },
      "CHECK failed: rank < 4 rank 5");
}

}  // namespace
}  // namespace potluck
