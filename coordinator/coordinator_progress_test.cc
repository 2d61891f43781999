// The coordinator's shard ledger as workers see it: progress reports, ranges
// returned by dead workers, epochs, and every sample trained exactly once.
#include <map>
#include <numeric>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

#include "coordinator/coordinator.h"
#include "coordinator/coordinator_test_util.h"
#include "job/job_spec.h"

namespace potluck {
namespace {

using ::testing::HasSubstr;
using State = RendezvousResult::State;
using CoordinatorTest = testing_util::SingleJobFixture;

TEST_F(CoordinatorTest, ReplayedProgressReportIsAppliedOnce) {
  Start({"a"});
  auto lease = coordinator_->AcquireShard("job-1", "a");
  ASSERT_TRUE(lease.ok()) << lease.status();
  EXPECT_EQ(lease->shard, 0u);
  EXPECT_EQ(lease->offset, 0u);

  auto first = Report("a", "r1", 0, 30, 1);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_FALSE(first->duplicate);
  EXPECT_EQ(first->consumed_offset, 30u);
  auto replay = Report("a", "r1", 0, 30, 1);
  ASSERT_TRUE(replay.ok()) << replay.status();
  EXPECT_TRUE(replay->duplicate);
  EXPECT_EQ(Shard(0).consumed_offset, 30u);

  ASSERT_TRUE(Report("a", "r2", 0, 60, 2).ok());
  auto late_replay = Report("a", "r1", 0, 30, 1);
  ASSERT_TRUE(late_replay.ok());
  EXPECT_TRUE(late_replay->duplicate);
  EXPECT_EQ(Shard(0).consumed_offset, 60u);

  EXPECT_EQ(Report("a", "r1", 0, 35, 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Report("a", "r3", 0, 50, 2).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Report("a", "", 0, 70, 2).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Shard(0).consumed_offset, 60u);
}

// A gpt job, whose ledger is in tokens: context 16, a global batch of 8
// (2 sequences per member and step in a group of three), ranges of one
// global batch (8 * 16 + 1 tokens).
v1::JobSpec TokenSpec() {
  v1::JobSpec spec = CoordinatorTest::Spec("job-1");
  v1::GptSpec* gpt = spec.mutable_model()->mutable_gpt();
  gpt->set_vocab_size(256);
  gpt->set_context_length(16);
  gpt->set_layers(1);
  gpt->set_heads(1);
  gpt->set_width(8);
  return spec;
}

TEST_F(CoordinatorTest, AMemberCannotReportMoreThanOneStepsWorthOfItsShare) {
  const v1::JobSpec spec = TokenSpec();
  Submit(spec, {{"s0", 1000}});
  Join("job-1", "a");
  Join("job-1", "b");
  Join("job-1", "c");
  Form("job-1", {"a", "b", "c"});
  const uint64_t budget = MaxTokensPerStep(spec, 3);
  ASSERT_EQ(budget, (2u + 1) * 17);
  ASSERT_EQ(Shard(0).size, 129u);
  ASSERT_EQ(coordinator_->AcquireShard("job-1", "a")->shard, 0u);
  ASSERT_TRUE(Report("a", "r1", 0, 32, 1).ok());  // 2 sequences of 16

  // The bricking report: the whole range consumed at once, without training.
  auto whole = Report("a", "r2", 0, 129, 2);
  EXPECT_EQ(whole.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(whole.status().message(), HasSubstr("more than one step's worth"));
  EXPECT_EQ(Shard(0).consumed_offset, 32u);  // nothing of it applied

  // Reports of one step add up (a step may finish one range and read on).
  ASSERT_TRUE(Report("a", "r3", 0, 32 + 40, 2).ok());
  EXPECT_EQ(Report("a", "r4", 0, 32 + budget + 1, 2).status().code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(Report("a", "r5", 0, 32 + budget, 2).ok());
  EXPECT_EQ(Shard(0).consumed_offset, 32u + budget);
}

TEST_F(CoordinatorTest, AStepFurtherAheadOfTheGroupThanAMemberRunsIsRefused) {
  Start({"a", "b"});
  ASSERT_EQ(coordinator_->AcquireShard("job-1", "a")->shard, 0u);
  auto far = Report("a", "r1", 0, 10, 1000000000000000ull);
  EXPECT_EQ(far.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(far.status().message(), HasSubstr("out of reach"));
  EXPECT_EQ(coordinator_->EndStep("job-1", "a", 1000000000000000ull).status().code(),
            absl::StatusCode::kInvalidArgument);

  // b has ended no step: a may run kMaxUnacknowledgedSteps ahead of it (and
  // be in the next), no further, however often it asks.
  const uint64_t reach = kMaxUnacknowledgedSteps + 1;
  EXPECT_TRUE(coordinator_->EndStep("job-1", "a", reach).ok());
  EXPECT_EQ(coordinator_->EndStep("job-1", "a", reach + 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(coordinator_->EndStep("job-1", "b", 1).ok());
  EXPECT_TRUE(coordinator_->EndStep("job-1", "a", reach + 1).ok());
}

TEST_F(CoordinatorTest, ProgressForAShardNotHeldIsRefused) {
  Start({"a", "b"});
  ASSERT_EQ(coordinator_->AcquireShard("job-1", "a")->shard, 0u);
  ASSERT_EQ(coordinator_->AcquireShard("job-1", "b")->shard, 1u);

  auto other = Report("b", "x1", 0, 10, 1);
  EXPECT_EQ(other.status().code(), absl::StatusCode::kPermissionDenied);
  auto unleased = Report("a", "x2", 2, 10, 1);
  EXPECT_EQ(unleased.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(unleased.status().message(), HasSubstr("not leased"));
  EXPECT_EQ(Report("a", "x3", 99, 10, 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Report("a", "x4", 0, 101, 1).status().code(), absl::StatusCode::kOutOfRange);
  Join("job-1", "c");  // waiting, not a member
  EXPECT_EQ(coordinator_->ReportProgress({"job-1", "c", "x5", 1, 2, 10, 1}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  for (uint32_t i = 0; i < 3; ++i) EXPECT_EQ(Shard(i).consumed_offset, 0u) << i;
  // The refused request ids were not remembered: the holder may use them.
  auto fine = Report("a", "x1", 0, 10, 1);
  ASSERT_TRUE(fine.ok()) << fine.status();
  EXPECT_FALSE(fine->duplicate);
}

TEST_F(CoordinatorTest, DeadWorkersUncommittedRangeReturnsToPending) {
  const GroupView first = Start({"a", "b"});
  ASSERT_EQ(coordinator_->AcquireShard("job-1", "a")->shard, 0u);
  ASSERT_TRUE(Report("a", "a1", 0, 40, 1).ok());
  ASSERT_TRUE(coordinator_->EndStep("job-1", "a", 1).ok());
  ASSERT_TRUE(coordinator_->EndStep("job-1", "b", 1).ok());
  ASSERT_TRUE(Commit("a", 1).ok());
  ASSERT_TRUE(Report("a", "a2", 0, 70, 2).ok());
  ASSERT_EQ(coordinator_->AcquireShard("job-1", "b")->shard, 1u);
  ASSERT_TRUE(Report("b", "b1", 1, 25, 2).ok());
  const uint64_t old_generation = first.generation;

  // a goes silent; b heartbeats through a's lease.
  AdvanceWithHeartbeats(absl::Seconds(10), {"b"});
  EXPECT_EQ(Find("job-1", "a").phase, WorkerView::Phase::kDead);
  ShardView zero = Shard(0);
  EXPECT_EQ(zero.state, ShardView::State::kPending);
  EXPECT_EQ(zero.committed_offset, 40u);
  EXPECT_EQ(zero.consumed_offset, 40u);
  EXPECT_EQ(zero.holder, "");
  // The survivor's own uncommitted progress is reverted too (the group
  // resumes from the checkpoint at step 1), and its lease is dropped: the
  // new group leases by its own ranks.
  ShardView one = Shard(1);
  EXPECT_EQ(one.consumed_offset, 0u);
  EXPECT_EQ(one.holder, "");
  EXPECT_EQ(one.state, ShardView::State::kPending);

  const GroupView view = Form("job-1", {"b"});
  EXPECT_TRUE(view.from_checkpoint);
  EXPECT_EQ(view.resume_step, 1u);
  auto stale = coordinator_->ReportProgress({"job-1", "b", "b2", old_generation, 1, 30, 2});
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kAborted);

  // The dead worker's remainder of shard 0 comes first, from its committed
  // offset, before any fresh shard.
  auto remainder = coordinator_->AcquireShard("job-1", "b");
  ASSERT_TRUE(remainder.ok());
  EXPECT_EQ(remainder->shard, 0u);
  EXPECT_EQ(remainder->offset, 40u);
  ASSERT_TRUE(Report("b", "b3", 0, 100, 2).ok());
  auto fresh = coordinator_->AcquireShard("job-1", "b");
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ(fresh->shard, 1u);
  EXPECT_EQ(fresh->offset, 0u);
}

TEST_F(CoordinatorTest, EpochRollsOverWhenEveryShardIsDone) {
  shards_ = {{"s0", 50}, {"s1", 50}};
  v1::JobSpec spec = Spec("job-1");
  spec.mutable_dataset()->set_epochs(2);
  spec.mutable_checkpoint()->set_every_steps(100);
  Submit(spec, shards_);
  Join("job-1", "a");
  Form("job-1", {"a"});

  uint64_t step = 0;
  for (uint64_t epoch = 0; epoch < 2; ++epoch) {
    for (uint32_t i = 0; i < 2; ++i) {
      auto lease = coordinator_->AcquireShard("job-1", "a");
      ASSERT_TRUE(lease.ok()) << lease.status();
      EXPECT_EQ(lease->epoch, epoch);
      auto done = Report("a", absl::StrCat("e", epoch, "s", i), lease->shard, 50, ++step);
      ASSERT_TRUE(done.ok()) << done.status();
      EXPECT_TRUE(done->shard_finished);
    }
    // Everything consumed, nothing committed: no shard to lease until a
    // checkpoint, and the policy asks for one although step % 100 != 0.
    EXPECT_EQ(coordinator_->AcquireShard("job-1", "a").status().code(),
              absl::StatusCode::kResourceExhausted);
    EXPECT_EQ(Shard(0).state, ShardView::State::kConsumed);
    auto ended = coordinator_->EndStep("job-1", "a", step);
    ASSERT_TRUE(ended.ok());
    EXPECT_TRUE(ended->should_checkpoint);
    ASSERT_TRUE(Commit("a", step).ok());
  }
  auto ledger = coordinator_->GetLedger("job-1");
  ASSERT_TRUE(ledger.ok());
  EXPECT_EQ(ledger->epoch, 2u);
  EXPECT_EQ(coordinator_->GetJob("job-1")->state(), v1::JOB_STATE_FINISHED);
  EXPECT_EQ(coordinator_->AcquireShard("job-1", "a").status().code(),
            absl::StatusCode::kOutOfRange);
}

TEST_F(CoordinatorTest, EpochDoesNotRollOverWhileARangeIsUncommitted) {
  shards_ = {{"s0", 50}};
  Start({"a"});
  ASSERT_TRUE(coordinator_->AcquireShard("job-1", "a").ok());
  ASSERT_TRUE(Report("a", "r1", 0, 20, 1).ok());
  ASSERT_TRUE(Report("a", "r2", 0, 50, 2).ok());
  ASSERT_TRUE(coordinator_->EndStep("job-1", "a", 2).ok());
  ASSERT_TRUE(Commit("a", 1).ok());  // counts step 1's range only
  auto ledger = coordinator_->GetLedger("job-1");
  EXPECT_EQ(ledger->epoch, 0u);
  EXPECT_EQ(ledger->shards[0].committed_offset, 20u);
  EXPECT_EQ(ledger->shards[0].consumed_offset, 50u);
  ASSERT_TRUE(Commit("a", 2).ok());
  EXPECT_EQ(coordinator_->GetLedger("job-1")->epoch, 1u);
}

// A trainer simulated on top of the coordinator: its "model" is how often
// each sample went into an applied update. A rollback reloads the model of
// the last checkpoint; a commit stores the live model. However workers fail,
// join and regroup, the model of the final checkpoint must hold every sample
// of the epoch exactly once.
TEST_F(CoordinatorTest, EverySampleIsTrainedExactlyOnceAcrossFailures) {
  shards_ = {{"s0", 37}, {"s1", 50}, {"s2", 23}, {"s3", 61}, {"s4", 40}, {"s5", 29}};
  std::vector<uint64_t> base(shards_.size());
  uint64_t total = 0;
  for (size_t i = 0; i < shards_.size(); ++i) {
    base[i] = total;
    total += shards_[i].size;
  }
  v1::JobSpec spec = Spec("job-1");
  spec.mutable_checkpoint()->set_every_steps(3);
  Submit(spec, shards_);
  std::vector<std::string> members = {"w0", "w1", "w2"};
  for (const std::string& worker : members) Join("job-1", worker);

  std::vector<int> live(total, 0), checkpointed(total, 0);
  std::map<std::string, std::optional<ShardLease>> leases;
  std::map<std::string, uint64_t> generation_of;
  uint64_t step = 0, request = 0, commits = 0, rollbacks = 0;

  const auto regroup = [&] {
    // Everyone polls the rendezvous of the current generation until formed.
    for (int round = 0; round < 3; ++round) {
      for (const std::string& worker : members) {
        const uint64_t generation = coordinator_->Heartbeat("job-1", worker)->generation;
        auto result = coordinator_->Rendezvous("job-1", worker, generation);
        ASSERT_TRUE(result.ok()) << worker << ": " << result.status();
        if (result->state != State::kReady) continue;
        if (generation_of[worker] != generation && result->view.from_checkpoint) {
          if (worker == members.front()) {
            live = checkpointed;
            step = result->view.resume_step;
            ++rollbacks;
          }
        }
        generation_of[worker] = generation;
        leases[worker].reset();  // re-acquire: the offset may have moved back
      }
    }
  };
  regroup();

  for (int iteration = 0; iteration < 200; ++iteration) {
    auto job = coordinator_->GetJob("job-1");
    ASSERT_TRUE(job.ok());
    if (job->state() == v1::JOB_STATE_FINISHED) break;
    ++step;
    for (const std::string& worker : members) {
      std::optional<ShardLease>& lease = leases[worker];
      if (!lease.has_value()) {
        auto acquired = coordinator_->AcquireShard("job-1", worker);
        if (acquired.status().code() == absl::StatusCode::kResourceExhausted) continue;
        ASSERT_TRUE(acquired.ok()) << acquired.status();
        lease = *acquired;
      }
      const uint64_t end = std::min(lease->size, lease->offset + 7);
      for (uint64_t i = lease->offset; i < end; ++i) ++live[base[lease->shard] + i];
      auto reported =
          coordinator_->ReportProgress({"job-1", worker, absl::StrCat("r", ++request),
                                        generation_of[worker], lease->shard, end, step});
      ASSERT_TRUE(reported.ok()) << worker << ": " << reported.status();
      lease->offset = end;
      if (reported->shard_finished) lease.reset();
    }
    // The scripted faults, after the step's reports: the lost work is in the
    // live model and must be rolled back with it.
    if (step == 4) {
      ASSERT_TRUE(coordinator_->ReportFailure("job-1", "w0", "w1").ok());
      ASSERT_TRUE(coordinator_->ReportFailure("job-1", "w2", "w1").ok());
    }
    if (step == 8) {
      Join("job-1", "w3");
      // Running, it calls again: admissible at the next step boundary.
      ASSERT_TRUE(coordinator_->Heartbeat("job-1", "w3").ok());
    }
    if (step == 13) {
      ASSERT_TRUE(coordinator_->ReportFailure("job-1", "w3", "w2").ok());
      ASSERT_TRUE(coordinator_->ReportFailure("job-1", "w0", "w2").ok());
    }
    if (step == 4) members = {"w0", "w2"};
    if (step == 13) members = {"w0", "w3"};
    bool needs_regroup = false, should_checkpoint = false;
    for (const std::string& worker : members) {
      auto ended = coordinator_->EndStep("job-1", worker, step);
      ASSERT_TRUE(ended.ok()) << worker << ": " << ended.status();
      needs_regroup = needs_regroup || ended->regroup;
      should_checkpoint = should_checkpoint || ended->should_checkpoint;
    }
    if (needs_regroup) {
      if (step >= 8 && members.size() == 2 && members[1] == "w2") members.push_back("w3");
      regroup();
      continue;
    }
    if (should_checkpoint) {
      std::vector<float> weights = {static_cast<float>(step)};
      ASSERT_TRUE(
          coordinator_
              ->CommitCheckpoint("job-1", members.front(), step,
                                 std::vector<TensorToSave>{
                                     {"w", TensorView::Of(weights.data(), weights.size()), {}}})
              .ok());
      checkpointed = live;
      ++commits;
    }
  }
  EXPECT_EQ(coordinator_->GetJob("job-1")->state(), v1::JOB_STATE_FINISHED);
  EXPECT_GE(rollbacks, 2u);
  EXPECT_GE(commits, 3u);
  std::vector<uint64_t> wrong;
  for (uint64_t i = 0; i < total; ++i) {
    if (checkpointed[i] != 1) wrong.push_back(i);
  }
  EXPECT_TRUE(wrong.empty()) << wrong.size() << " samples not trained exactly once, first "
                             << (wrong.empty() ? 0 : wrong[0]) << " trained "
                             << (wrong.empty() ? 0 : checkpointed[wrong[0]]) << " times";
  EXPECT_EQ(std::accumulate(checkpointed.begin(), checkpointed.end(), uint64_t{0}), total);
}

TEST_F(CoordinatorTest, ConcurrentWorkersConsumeEveryShardOnce) {
  shards_.clear();
  for (int i = 0; i < 24; ++i) shards_.push_back({absl::StrCat("s", i), 40});
  const std::vector<std::string> workers = {"a", "b", "c", "d"};
  Submit(Spec("job-1"), shards_);
  for (const std::string& worker : workers) Join("job-1", worker);
  const GroupView view = Form("job-1", {"a", "b", "c", "d"});
  std::vector<std::thread> threads;
  std::vector<uint64_t> consumed(workers.size(), 0);
  for (size_t w = 0; w < workers.size(); ++w) {
    threads.emplace_back([&, w] {
      uint64_t request = 0;
      for (;;) {
        auto lease = coordinator_->AcquireShard("job-1", workers[w]);
        if (lease.status().code() == absl::StatusCode::kResourceExhausted) return;
        ASSERT_TRUE(lease.ok()) << lease.status();
        for (uint64_t offset = lease->offset; offset < lease->size;) {
          offset += 10;
          ASSERT_TRUE(coordinator_->Heartbeat("job-1", workers[w]).ok());
          auto reported = coordinator_->ReportProgress({"job-1", workers[w],
                                                        absl::StrCat(workers[w], ++request),
                                                        view.generation, lease->shard, offset, 1});
          ASSERT_TRUE(reported.ok()) << reported.status();
          ASSERT_FALSE(reported->duplicate);
          consumed[w] += 10;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(std::accumulate(consumed.begin(), consumed.end(), uint64_t{0}), 24u * 40u);
  for (const std::string& worker : workers) {
    ASSERT_TRUE(coordinator_->EndStep("job-1", worker, 1).ok());
  }
  ASSERT_TRUE(Commit("a", 1).ok());
  EXPECT_EQ(coordinator_->GetJob("job-1")->state(), v1::JOB_STATE_FINISHED);
}

// A lease carries the shard's checksum as the job was submitted with it, so
// a worker can refuse a copy that changed since; a restart keeps it.
TEST_F(CoordinatorTest, ALeaseCarriesTheShardsChecksumFromTheSubmit) {
  shards_ = {{"s0", 100, 0x1234abcd5678ef00}, {"s1", 100, 0x42}};
  Start({"a"});
  auto lease = coordinator_->AcquireShard("job-1", "a");
  ASSERT_TRUE(lease.ok()) << lease.status();
  EXPECT_EQ(lease->checksum, shards_[lease->shard].checksum);
  Reopen();
  Join("job-1", "a");
  Form("job-1", {"a"});
  auto again = coordinator_->AcquireShard("job-1", "a");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->checksum, shards_[again->shard].checksum);
}

}  // namespace
}  // namespace potluck
