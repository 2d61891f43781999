#include "coordinator/internal/ledger.h"

#include <vector>

#include <gtest/gtest.h>

namespace potluck::coordinator_internal {
namespace {

ShardLedger TwoShards() {
  Shard a;
  a.name = "a";
  a.size = 100;
  Shard b;
  b.name = "b";
  b.size = 10;
  return ShardLedger({a, b}, 0);
}

TEST(ShardLedger, SnapshotCountsOnlyReportsUpToItsStep) {
  ShardLedger ledger = TwoShards();
  ASSERT_EQ(*ledger.Acquire("w"), 0u);
  ASSERT_TRUE(ledger.Report(0, "w", 10, 1).ok());
  ASSERT_TRUE(ledger.Report(0, "w", 25, 2).ok());
  ASSERT_TRUE(ledger.Report(0, "w", 40, 3).ok());
  const auto snapshot = ledger.SnapshotAt(2, 1);
  EXPECT_EQ(snapshot.epoch(), 0u);
  ASSERT_EQ(snapshot.committed_offsets_size(), 2);
  EXPECT_EQ(snapshot.committed_offsets(0), 25u);
  EXPECT_EQ(snapshot.committed_offsets(1), 0u);

  ledger.ApplyCommitted(snapshot);
  EXPECT_EQ(ledger.shards()[0].committed, 25u);
  EXPECT_EQ(ledger.shards()[0].consumed, 40u);
  ASSERT_EQ(ledger.shards()[0].progress.size(), 1u);
  EXPECT_EQ(ledger.shards()[0].progress[0].step, 3u);

  ledger.RevertUncommitted();
  EXPECT_EQ(ledger.shards()[0].consumed, 25u);
  EXPECT_TRUE(ledger.shards()[0].progress.empty());
  EXPECT_EQ(ledger.shards()[0].holder, "w");
  EXPECT_EQ(ledger.shards()[0].lease_from, 25u);
}

TEST(ShardLedger, CommittedOffsetsNeverFall) {
  ShardLedger ledger = TwoShards();
  ASSERT_TRUE(ledger.Acquire("w").ok());
  ASSERT_TRUE(ledger.Report(0, "w", 50, 5).ok());
  ledger.ApplyCommitted(ledger.SnapshotAt(5, 1));
  auto older = ledger.SnapshotAt(5, 1);
  older.set_committed_offsets(0, 20);
  ledger.ApplyCommitted(older);
  EXPECT_EQ(ledger.shards()[0].committed, 50u);
}

TEST(ShardLedger, OneLeasePerWorkerAndPartlyCommittedShardsFirst) {
  ShardLedger ledger = TwoShards();
  EXPECT_EQ(*ledger.Acquire("x"), 0u);
  EXPECT_EQ(*ledger.Acquire("x"), 0u);  // a retry returns the same lease
  EXPECT_EQ(*ledger.Acquire("y"), 1u);
  EXPECT_EQ(ledger.Acquire("z").status().code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(ledger.Report(1, "y", 4, 1).ok());
  ledger.ApplyCommitted(ledger.SnapshotAt(1, 1));
  ledger.Release("y");
  ledger.Release("x");
  EXPECT_EQ(*ledger.Acquire("z"), 1u);
  EXPECT_EQ(ledger.shards()[1].lease_from, 4u);
}

TEST(ShardLedger, EachRankLeasesItsOwnSlotWhoeverAsksFirst) {
  std::vector<Shard> shards(5);
  for (size_t i = 0; i < shards.size(); ++i) {
    shards[i].name = std::to_string(i);
    shards[i].size = 10;
  }
  // Rank 1 asks first, then rank 0: each still gets its slot's first shard.
  ShardLedger ledger(shards, 0);
  EXPECT_EQ(*ledger.Acquire("b", 1, 2), 1u);
  EXPECT_EQ(*ledger.Acquire("a", 0, 2), 0u);
  ASSERT_TRUE(ledger.Report(0, "a", 10, 1).ok());
  ASSERT_TRUE(ledger.Report(1, "b", 4, 1).ok());
  EXPECT_EQ(*ledger.Acquire("a", 0, 2), 2u);
  ASSERT_TRUE(ledger.Report(2, "a", 10, 2).ok());
  EXPECT_EQ(*ledger.Acquire("a", 0, 2), 4u);
  ASSERT_TRUE(ledger.Report(4, "a", 10, 3).ok());
  // Slot 0 is used up; shard 3 is slot 1's although rank 0 is idle.
  EXPECT_EQ(ledger.Acquire("a", 0, 2).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ledger.Acquire("a", 2, 2).status().code(), absl::StatusCode::kInvalidArgument);

  // A group of one after a rollback: every lease is dropped and the single
  // rank takes the partly consumed shard first.
  ledger.ApplyCommitted(ledger.SnapshotAt(3, 1));
  ledger.RevertUncommitted();
  ledger.ReleaseAll();
  EXPECT_EQ(*ledger.Acquire("a", 0, 1), 1u);
  EXPECT_EQ(ledger.shards()[1].lease_from, 4u);
}

TEST(ShardLedger, ReportsAreChecked) {
  ShardLedger ledger = TwoShards();
  ASSERT_TRUE(ledger.Acquire("w").ok());
  EXPECT_EQ(ledger.Report(1, "w", 1, 1).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ledger.Report(0, "v", 1, 1).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ledger.Report(2, "w", 1, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ledger.Report(0, "w", 101, 1).code(), absl::StatusCode::kOutOfRange);
  ASSERT_TRUE(ledger.Report(0, "w", 30, 4).ok());
  EXPECT_EQ(ledger.Report(0, "w", 20, 5).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ledger.Report(0, "w", 40, 3).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(ledger.Report(0, "w", 100, 5).ok());
  EXPECT_EQ(ledger.shards()[0].holder, "");  // consumed to its end: released
}

TEST(ShardLedger, CompletingEveryShardRollsTheSnapshotOver) {
  ShardLedger ledger = TwoShards();
  ASSERT_TRUE(ledger.Acquire("w").ok());
  ASSERT_TRUE(ledger.Report(0, "w", 100, 1).ok());
  ASSERT_TRUE(ledger.Acquire("w").ok());
  ASSERT_TRUE(ledger.Report(1, "w", 10, 2).ok());
  EXPECT_TRUE(ledger.AllConsumed());
  EXPECT_EQ(ledger.SnapshotAt(1, 3).epoch(), 0u);  // shard 1 was step 2's
  const auto snapshot = ledger.SnapshotAt(2, 3);
  EXPECT_EQ(snapshot.epoch(), 1u);
  EXPECT_FALSE(snapshot.finished());
  EXPECT_EQ(snapshot.committed_offsets(0), 0u);
  ledger.ApplyCommitted(snapshot);
  EXPECT_EQ(ledger.epoch(), 1u);
  EXPECT_EQ(ledger.shards()[0].consumed, 0u);
  EXPECT_FALSE(ledger.AllConsumed());
}

TEST(ShardLedger, ResetToRefusesARecordOfAnotherShape) {
  ShardLedger ledger = TwoShards();
  potluck::coordinator_state::LedgerSnapshot snapshot;
  snapshot.add_committed_offsets(1);
  EXPECT_EQ(ledger.ResetTo(snapshot).code(), absl::StatusCode::kDataLoss);
  snapshot.add_committed_offsets(11);
  EXPECT_EQ(ledger.ResetTo(snapshot).code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace potluck::coordinator_internal
