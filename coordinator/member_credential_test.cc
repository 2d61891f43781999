// Member credentials (coordinator.h AuthenticateMember): a Join's secret
// proves the worker on later calls, survives a restart (only its hash is
// stored), is rotated by a later Join and voided by revoking the join token;
// a record written before credentials existed asks its worker to join again.
#include <filesystem>
#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "coordinator/coordinator.h"
#include "coordinator/coordinator_test_util.h"
#include "coordinator/internal/state.pb.h"
#include "coordinator/internal/state_db.h"

namespace potluck {
namespace {

using ::testing::HasSubstr;
using CredentialTest = testing_util::SingleJobFixture;

TEST_F(CredentialTest, AJoinsSecretProvesItsWorkerAndNoOther) {
  Submit(Spec("job-1"), shards_);
  auto token = coordinator_->CreateToken("job-1", absl::Hours(1));
  ASSERT_TRUE(token.ok());
  auto a = coordinator_->Join({"job-1", *token, "a", "a:1"});
  auto b = coordinator_->Join({"job-1", *token, "b", "b:1"});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->member_secret.size(), 64u);  // 256 bits, hex
  EXPECT_NE(a->member_secret, b->member_secret);
  EXPECT_TRUE(coordinator_->AuthenticateMember("job-1", "a", a->member_secret).ok());
  EXPECT_EQ(coordinator_->AuthenticateMember("job-1", "a", b->member_secret).code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(coordinator_->AuthenticateMember("job-1", "a", "").code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(coordinator_->AuthenticateMember("job-1", "ghost", a->member_secret).code(),
            absl::StatusCode::kUnauthenticated);
  // Heartbeats and other answers never carry it.
  auto beat = coordinator_->Heartbeat("job-1", "a");
  ASSERT_TRUE(beat.ok());
  EXPECT_EQ(beat->member_secret, "");
}

TEST_F(CredentialTest, ARestartedCoordinatorStillKnowsItsMembersButStoresNoSecret) {
  Submit(Spec("job-1"), shards_);
  auto token = coordinator_->CreateToken("job-1", absl::Hours(1));
  ASSERT_TRUE(token.ok());
  auto a = coordinator_->Join({"job-1", *token, "a", "a:1"});
  ASSERT_TRUE(a.ok());
  Reopen();
  EXPECT_TRUE(coordinator_->AuthenticateMember("job-1", "a", a->member_secret).ok());
  // The data directory holds a hash, not the secret.
  coordinator_.reset();
  auto db = coordinator_internal::StateDb::Open((dir_ / "state").string(), false);
  ASSERT_TRUE(db.ok()) << db.status();
  auto stored = (*db)->Get(coordinator_internal::WorkerKey("job-1", "a"));
  ASSERT_TRUE(stored.ok() && stored->has_value());
  EXPECT_EQ((*stored)->find(a->member_secret), std::string::npos);
  coordinator_state::WorkerRecord record;
  ASSERT_TRUE(record.ParseFromString(**stored));
  EXPECT_EQ(record.secret_hash().size(), 32u);
}

TEST_F(CredentialTest, AJoinWithTheSameWorkerIdRotatesTheSecret) {
  Submit(Spec("job-1"), shards_);
  auto token = coordinator_->CreateToken("job-1", absl::Hours(1));
  ASSERT_TRUE(token.ok());
  auto first = coordinator_->Join({"job-1", *token, "a", "a:1"});
  auto second = coordinator_->Join({"job-1", *token, "a", "a:2"});
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_NE(first->member_secret, second->member_secret);
  EXPECT_EQ(coordinator_->AuthenticateMember("job-1", "a", first->member_secret).code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(coordinator_->AuthenticateMember("job-1", "a", second->member_secret).ok());
}

TEST_F(CredentialTest, RevokingTheJoinTokenEndsItsMembersCredentialsOnly) {
  Submit(Spec("job-1"), shards_);
  auto revoked = coordinator_->CreateToken("job-1", absl::Hours(1));
  auto kept = coordinator_->CreateToken("job-1", absl::Hours(1));
  ASSERT_TRUE(revoked.ok() && kept.ok());
  auto a = coordinator_->Join({"job-1", *revoked, "a", "a:1"});
  auto b = coordinator_->Join({"job-1", *kept, "b", "b:1"});
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE(coordinator_->RevokeToken(*revoked).ok());
  const absl::Status refused = coordinator_->AuthenticateMember("job-1", "a", a->member_secret);
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(refused.message(), HasSubstr("was revoked"));
  EXPECT_TRUE(coordinator_->AuthenticateMember("job-1", "b", b->member_secret).ok());
}

// A member restarted within its lease rejoins on the token it joined with
// even after that token expired; once its lease lapsed, or for anyone else,
// the expired token admits nobody.
TEST_F(CredentialTest, ALiveMembersLeaseNotItsTokensExpiryDecidesItsRejoin) {
  Submit(Spec("job-1"), shards_);
  auto token = coordinator_->CreateToken("job-1", absl::Minutes(1));
  auto other = coordinator_->CreateToken("job-1", absl::Hours(1));
  ASSERT_TRUE(token.ok() && other.ok());
  ASSERT_TRUE(coordinator_->Join({"job-1", *token, "a", "a:1"}).ok());
  ASSERT_TRUE(coordinator_->Join({"job-1", *other, "c", "c:1"}).ok());
  AdvanceWithHeartbeats(absl::Minutes(2), {"a", "c"});

  auto again = coordinator_->Join({"job-1", *token, "a", "a:2"});
  EXPECT_TRUE(again.ok()) << again.status();
  auto stranger = coordinator_->Join({"job-1", *token, "b", "b:1"});
  EXPECT_EQ(stranger.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(stranger.status().message(), HasSubstr("expired"));
  // c holds a live lease, but joined with another token.
  EXPECT_EQ(coordinator_->Join({"job-1", *token, "c", "c:2"}).status().code(),
            absl::StatusCode::kUnauthenticated);

  AdvanceWithHeartbeats(absl::Seconds(30), {"c"});  // a's lease (10 s) lapses
  auto lapsed = coordinator_->Join({"job-1", *token, "a", "a:3"});
  EXPECT_EQ(lapsed.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(lapsed.status().message(), HasSubstr("expired"));
}

// A revocation is a record in the state database's log: damage there must
// stop the coordinator (kDataLoss), not open a state from before it, in
// which the token would work again.
TEST_F(CredentialTest, ADamagedStateLogIsDataLossNotARollbackThatUnrevokes) {
  Submit(Spec("job-1"), shards_);
  auto token = coordinator_->CreateToken("job-1", absl::Hours(1));
  ASSERT_TRUE(token.ok());
  ASSERT_TRUE(coordinator_->RevokeToken(*token).ok());
  coordinator_.reset();
  int damaged = 0;
  for (const auto& file : std::filesystem::directory_iterator(dir_ / "state")) {
    if (file.path().extension() != ".log" || std::filesystem::file_size(file.path()) < 200) {
      continue;
    }
    std::fstream stream(file.path(), std::ios::in | std::ios::out | std::ios::binary);
    for (std::streamoff offset = 100; offset < 200; offset += 7) {
      stream.seekp(offset);
      stream.put('\x5a');
    }
    ++damaged;
  }
  ASSERT_GT(damaged, 0);
  auto db = coordinator_internal::StateDb::Open((dir_ / "state").string(), false);
  EXPECT_EQ(db.status().code(), absl::StatusCode::kDataLoss) << db.status();
}

// A data directory of the release before credentials: its worker records
// carry no hash. It opens, and its members are told to join again.
TEST_F(CredentialTest, AMemberRecordedBeforeCredentialsIsAskedToJoinAgain) {
  Start({"a", "b"});
  coordinator_.reset();
  {
    auto db = coordinator_internal::StateDb::Open((dir_ / "state").string(), false);
    ASSERT_TRUE(db.ok()) << db.status();
    const std::string key = coordinator_internal::WorkerKey("job-1", "a");
    auto stored = (*db)->Get(key);
    ASSERT_TRUE(stored.ok() && stored->has_value());
    coordinator_state::WorkerRecord record;
    ASSERT_TRUE(record.ParseFromString(**stored));
    record.clear_secret_hash();
    record.clear_token_id();
    ASSERT_TRUE((*db)->Put(key, record.SerializeAsString()).ok());
  }
  Reopen();
  const absl::Status refused = coordinator_->AuthenticateMember("job-1", "a", "anything");
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.message(), HasSubstr("join again"));
  auto token = coordinator_->CreateToken("job-1", absl::Hours(1));
  ASSERT_TRUE(token.ok());
  auto again = coordinator_->Join({"job-1", *token, "a", "a:1"});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(coordinator_->AuthenticateMember("job-1", "a", again->member_secret).ok());
  // Nothing of the job was lost on the way.
  EXPECT_EQ(coordinator_->GetLedger("job-1")->shards.size(), shards_.size());
}

}  // namespace
}  // namespace potluck
