#include "coordinator/internal/token.h"

#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_split.h"

#include "coordinator/coordinator.h"
#include "coordinator/coordinator_test_util.h"

namespace potluck {
namespace {

using ::testing::HasSubstr;

class TokenTest : public testing_util::CoordinatorFixture {
 protected:
  void SetUp() override {
    CoordinatorFixture::SetUp();
    Submit(Spec("job-1"), shards_);
    Submit(Spec("job-2"), shards_);
  }

  // Join must refuse the token with `code` and leave no worker behind.
  void ExpectJoinRefused(const std::string& token, absl::StatusCode code) {
    auto joined = coordinator_->Join({"job-1", token, "intruder", "x:1"});
    EXPECT_EQ(joined.status().code(), code) << joined.status();
    auto workers = coordinator_->ListWorkers("job-1");
    ASSERT_TRUE(workers.ok());
    EXPECT_TRUE(workers->empty());
  }
};

TEST_F(TokenTest, ValidTokenLetsAWorkerJoin) {
  auto token = coordinator_->CreateToken("job-1", absl::Minutes(5));
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_THAT(*token, HasSubstr("plk1:job-1:"));
  EXPECT_TRUE(coordinator_->VerifyToken("job-1", *token).ok());
  EXPECT_TRUE(coordinator_->Join({"job-1", *token, "w", "w:1"}).ok());
}

TEST_F(TokenTest, WrongSignatureIsUnauthenticated) {
  std::string token = *coordinator_->CreateToken("job-1", absl::Minutes(5));
  token.back() = token.back() == '0' ? '1' : '0';
  const absl::Status status = coordinator_->VerifyToken("job-1", token);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(status.message(), HasSubstr("wrong signature"));
  ExpectJoinRefused(token, absl::StatusCode::kUnauthenticated);
}

TEST_F(TokenTest, TamperedJobOrExpiryBreaksTheSignature) {
  const std::string token = *coordinator_->CreateToken("job-2", absl::Minutes(5));
  std::string other_job = token;
  other_job.replace(other_job.find("job-2"), 5, "job-1");
  EXPECT_THAT(coordinator_->VerifyToken("job-1", other_job).message(),
              HasSubstr("wrong signature"));
  ExpectJoinRefused(other_job, absl::StatusCode::kUnauthenticated);
}

TEST_F(TokenTest, TokenSignedByAnotherCoordinatorIsRefused) {
  const std::string foreign =
      coordinator_internal::SignToken(std::string(32, 'k'), {"job-1", 4102444800, "abcd"});
  EXPECT_THAT(coordinator_->VerifyToken("job-1", foreign).message(), HasSubstr("wrong signature"));
}

TEST_F(TokenTest, ExpiredTokenIsUnauthenticated) {
  const std::string token = *coordinator_->CreateToken("job-1", absl::Minutes(5));
  clock_.AdvanceBy(absl::Minutes(4));
  EXPECT_TRUE(coordinator_->VerifyToken("job-1", token).ok());
  clock_.AdvanceBy(absl::Minutes(1));
  const absl::Status status = coordinator_->VerifyToken("job-1", token);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(status.message(), HasSubstr("expired"));
  ExpectJoinRefused(token, absl::StatusCode::kUnauthenticated);
}

TEST_F(TokenTest, RevokedTokenIsUnauthenticatedAlsoAfterReopen) {
  const std::string token = *coordinator_->CreateToken("job-1", absl::Minutes(5));
  const std::string kept = *coordinator_->CreateToken("job-1", absl::Minutes(5));
  const std::vector<std::string> fields = absl::StrSplit(token, ':');
  ASSERT_EQ(fields.size(), 5u);
  ASSERT_TRUE(coordinator_->RevokeToken(fields[3]).ok());  // by id
  absl::Status status = coordinator_->VerifyToken("job-1", token);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(status.message(), HasSubstr("revoked"));
  ExpectJoinRefused(token, absl::StatusCode::kUnauthenticated);
  Reopen();
  EXPECT_THAT(coordinator_->VerifyToken("job-1", token).message(), HasSubstr("revoked"));
  EXPECT_TRUE(coordinator_->VerifyToken("job-1", kept).ok());
  EXPECT_EQ(coordinator_->RevokeToken("0123456789abcdef").code(), absl::StatusCode::kNotFound);
}

TEST_F(TokenTest, OtherJobsTokenIsPermissionDenied) {
  const std::string token = *coordinator_->CreateToken("job-2", absl::Minutes(5));
  const absl::Status status = coordinator_->VerifyToken("job-1", token);
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(status.message(), HasSubstr("is for job job-2, not job-1"));
  ExpectJoinRefused(token, absl::StatusCode::kPermissionDenied);
}

TEST_F(TokenTest, MalformedTokensAreUnauthenticated) {
  for (const std::string& token :
       std::vector<std::string>{"", "garbage", "plk1:job-1:notanumber:id:00", "plk2:job-1:1:id:00",
                                std::string(600, 'x')}) {
    EXPECT_EQ(coordinator_->VerifyToken("job-1", token).code(), absl::StatusCode::kUnauthenticated)
        << token;
  }
  ExpectJoinRefused("plk1:job-1", absl::StatusCode::kUnauthenticated);
}

TEST_F(TokenTest, SubmissionNeedsAnAdminToken) {
  const std::string join = *coordinator_->CreateToken("job-3", absl::Minutes(5));
  auto submitted = coordinator_->SubmitJob(join, Spec("job-3"));
  EXPECT_EQ(submitted.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(submitted.status().message(), HasSubstr("not an admin token"));
  EXPECT_EQ(coordinator_->SubmitJob("", Spec("job-3")).status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(coordinator_->GetJob("job-3").status().code(), absl::StatusCode::kNotFound);
  // An admin token is not a join token either.
  EXPECT_EQ(coordinator_->VerifyToken("job-1", admin_).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(coordinator_->SubmitJob(admin_, Spec("job-3")).ok());
}

TEST_F(TokenTest, CreateTokenValidatesItsArguments) {
  EXPECT_EQ(coordinator_->CreateToken("Bad Job", absl::Minutes(1)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(coordinator_->CreateToken("job-1", absl::ZeroDuration()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace potluck
