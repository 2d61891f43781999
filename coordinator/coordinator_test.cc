#include "coordinator/coordinator.h"

#include <map>
#include <numeric>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

#include "checkpoint/checkpoint_store.h"
#include "common/status.h"
#include "coordinator/coordinator_test_util.h"
#include "coordinator/internal/state.pb.h"
#include "job/job_spec.h"

namespace potluck {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using State = RendezvousResult::State;

class CoordinatorTest : public testing_util::CoordinatorFixture {
 protected:
  // job-1 with members `workers`, formed.
  GroupView Start(std::initializer_list<std::string> workers) {
    Submit(Spec("job-1"), shards_);
    for (const std::string& worker : workers) Join("job-1", worker);
    return Form("job-1", workers);
  }

  absl::StatusOr<ProgressResult> Report(const std::string& worker, const std::string& request_id,
                                        uint32_t shard, uint64_t offset, uint64_t step) {
    return coordinator_->ReportProgress(
        {"job-1", worker, request_id, CurrentGeneration("job-1"), shard, offset, step});
  }

  ShardView Shard(uint32_t index) {
    auto ledger = coordinator_->GetLedger("job-1");
    EXPECT_TRUE(ledger.ok()) << ledger.status();
    return ledger->shards.at(index);
  }

  absl::Status Commit(const std::string& worker, uint64_t step) {
    std::vector<float> weights = {1.0f, 2.0f, static_cast<float>(step)};
    return coordinator_->CommitCheckpoint(
        "job-1", worker, step,
        std::vector<TensorToSave>{{"w", TensorView::Of(weights.data(), weights.size()), {}}});
  }
};

TEST_F(CoordinatorTest, LeaseExpiryMarksTheWorkerDeadAndRegroups) {
  const GroupView first = Start({"a", "b"});
  ASSERT_EQ(first.members.size(), 2u);
  // a keeps its lease by heartbeating; b stays silent for one lease.
  AdvanceWithHeartbeats(absl::Seconds(9), {"a"});
  EXPECT_EQ(Find("job-1", "b").phase, WorkerView::Phase::kMember);
  AdvanceWithHeartbeats(absl::Seconds(1), {"a"}, "job-1", absl::Seconds(1));

  const WorkerView b = Find("job-1", "b");
  EXPECT_EQ(b.phase, WorkerView::Phase::kDead);
  EXPECT_THAT(b.dead_reason, HasSubstr("lease expired"));
  auto heartbeat = coordinator_->Heartbeat("job-1", "b");
  EXPECT_EQ(heartbeat.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(heartbeat.status().message(), HasSubstr("lease expired"));

  auto job = coordinator_->GetJob("job-1");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->live_workers(), 1u);
  const GroupView next = Form("job-1", {"a"});
  EXPECT_EQ(next.generation, first.generation + 1);
  ASSERT_EQ(next.members.size(), 1u);
  EXPECT_EQ(next.members[0].worker_id, "a");
  EXPECT_TRUE(next.from_checkpoint);

  // A dead worker may join again under its id: it waits for the next boundary.
  Join("job-1", "b");
  EXPECT_EQ(Find("job-1", "b").phase, WorkerView::Phase::kWaiting);
}

TEST_F(CoordinatorTest, ExpiryIsEvaluatedByTickWithoutCalls) {
  Start({"a"});
  clock_.AdvanceBy(absl::Seconds(10));
  ASSERT_TRUE(coordinator_->Tick().ok());
  EXPECT_EQ(Find("job-1", "a").phase, WorkerView::Phase::kDead);
}

TEST_F(CoordinatorTest, WorkerThatMissesTheRendezvousIsDropped) {
  Submit(Spec("job-1"), shards_);
  for (const char* worker : {"a", "b", "c"}) Join("job-1", worker);
  const uint64_t generation = CurrentGeneration("job-1");
  for (const char* worker : {"a", "b"}) {
    auto result = coordinator_->Rendezvous("job-1", worker, generation);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->state, State::kWaiting);
    EXPECT_EQ(result->deadline, clock_.Now() + absl::Seconds(30));
  }
  // c stays alive (heartbeats) but never comes to the rendezvous.
  AdvanceWithHeartbeats(absl::Seconds(29), {"a", "b", "c"}, "job-1", absl::Seconds(1));
  auto waiting = coordinator_->Rendezvous("job-1", "a", generation);
  ASSERT_TRUE(waiting.ok());
  EXPECT_EQ(waiting->state, State::kWaiting);

  clock_.AdvanceBy(absl::Seconds(1));
  auto superseded = coordinator_->Rendezvous("job-1", "a", generation);
  ASSERT_TRUE(superseded.ok()) << superseded.status();
  EXPECT_EQ(superseded->state, State::kSuperseded);
  EXPECT_EQ(superseded->generation, generation + 1);
  EXPECT_THAT(Find("job-1", "c").dead_reason, HasSubstr("missed the rendezvous"));

  const GroupView view = Form("job-1", {"a", "b"});
  EXPECT_EQ(view.generation, generation + 1);
  ASSERT_EQ(view.members.size(), 2u);
  EXPECT_EQ(view.members[0].worker_id, "a");
  EXPECT_EQ(view.members[1].worker_id, "b");
  EXPECT_EQ(view.members[1].rank, 1u);
  EXPECT_EQ(view.members[1].endpoint, "b:7000");
  EXPECT_EQ(coordinator_->Heartbeat("job-1", "c").status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(CoordinatorTest, TwoFailuresInOneGenerationMakeTwoGenerations) {
  const GroupView first = Start({"a", "b", "c", "d"});
  ASSERT_EQ(first.members.size(), 4u);

  auto second = coordinator_->ReportFailure("job-1", "a", "b");
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(*second, first.generation + 1);
  // c saw d fail in the same collective; d is still a member of the new one.
  auto third = coordinator_->ReportFailure("job-1", "c", "d");
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(*third, first.generation + 2);
  // A second report of b changes nothing.
  auto again = coordinator_->ReportFailure("job-1", "a", "b");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, first.generation + 2);

  const GroupView view = Form("job-1", {"a", "c"});
  EXPECT_EQ(view.generation, first.generation + 2);
  ASSERT_EQ(view.members.size(), 2u);
  EXPECT_EQ(view.members[0].worker_id, "a");
  EXPECT_EQ(view.members[1].worker_id, "c");
  EXPECT_TRUE(view.from_checkpoint);
  EXPECT_EQ(view.secret.size(), 32u);
  EXPECT_NE(view.secret, first.secret);
  EXPECT_THAT(Find("job-1", "d").dead_reason, HasSubstr("reported failed by c"));
  // A dead worker cannot report others.
  EXPECT_EQ(coordinator_->ReportFailure("job-1", "d", "a").status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(coordinator_->ReportFailure("job-1", "a", "nobody").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(CoordinatorTest, LateJoinerIsAdmittedAtTheStepBoundary) {
  const GroupView first = Start({"a", "b"});
  Join("job-1", "c");
  auto c = coordinator_->Heartbeat("job-1", "c");
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(c->member);
  EXPECT_EQ(c->generation, first.generation);
  EXPECT_EQ(coordinator_->AcquireShard("job-1", "c").status().code(),
            absl::StatusCode::kFailedPrecondition);

  // Step 1 ends: the boundary is set for step 2, so a laggard still in step 1
  // and the first to finish it regroup at the same step.
  for (const char* worker : {"a", "b"}) {
    auto ended = coordinator_->EndStep("job-1", worker, 1);
    ASSERT_TRUE(ended.ok()) << ended.status();
    EXPECT_FALSE(ended->regroup);
    EXPECT_EQ(ended->generation, first.generation);
  }
  EXPECT_FALSE(coordinator_->Heartbeat("job-1", "c")->member);
  for (const char* worker : {"a", "b"}) {
    auto ended = coordinator_->EndStep("job-1", worker, 2);
    ASSERT_TRUE(ended.ok()) << ended.status();
    EXPECT_TRUE(ended->regroup);
    EXPECT_EQ(ended->generation, first.generation + 1);
  }
  c = coordinator_->Heartbeat("job-1", "c");
  EXPECT_TRUE(c->member);

  const GroupView view = Form("job-1", {"a", "b", "c"});
  ASSERT_EQ(view.members.size(), 3u);
  EXPECT_EQ(view.members[2].worker_id, "c");
  EXPECT_EQ(view.members[2].rank, 2u);
  EXPECT_EQ(view.resume_step, 2u);
  EXPECT_FALSE(view.from_checkpoint);  // a join continues from the live step
}

TEST_F(CoordinatorTest, AGroupBelowMinWorkersWaitsForMembersWithoutTimingOut) {
  v1::JobSpec spec = Spec("job-1");
  spec.mutable_access()->set_min_workers(2);
  Submit(spec, shards_);
  Join("job-1", "a");
  uint64_t generation = CurrentGeneration("job-1");
  EXPECT_EQ(coordinator_->Rendezvous("job-1", "a", generation)->state, State::kWaiting);
  // Past the rendezvous deadline: a came, so nobody is dropped.
  for (int i = 0; i < 8; ++i) {
    clock_.AdvanceBy(absl::Seconds(5));
    ASSERT_TRUE(coordinator_->Heartbeat("job-1", "a").ok());
  }
  EXPECT_EQ(CurrentGeneration("job-1"), generation);
  EXPECT_EQ(coordinator_->Rendezvous("job-1", "a", generation)->state, State::kWaiting);

  Join("job-1", "b");
  const GroupView view = Form("job-1", {"a", "b"});
  ASSERT_EQ(view.members.size(), 2u);
  EXPECT_EQ(view.members[0].worker_id, "a");

  // b leaves: the survivor alone is below the minimum and waits again.
  ASSERT_TRUE(coordinator_->Leave("job-1", "b").ok());
  generation = CurrentGeneration("job-1");
  EXPECT_EQ(coordinator_->Rendezvous("job-1", "a", generation)->state, State::kWaiting);
}

TEST_F(CoordinatorTest, JoinersDuringAnOpenRendezvousAreFoldedIn) {
  Submit(Spec("job-1"), shards_);
  Join("job-1", "a");
  const uint64_t generation = CurrentGeneration("job-1");
  ASSERT_EQ(coordinator_->Rendezvous("job-1", "a", generation)->state, State::kReady);
  // Formed with a alone; b must wait for a boundary.
  Join("job-1", "b");
  EXPECT_FALSE(coordinator_->Heartbeat("job-1", "b")->member);
}

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

TEST_F(CoordinatorTest, CheckpointNeedsEveryMemberToHaveEndedTheStep) {
  Start({"a", "b"});
  ASSERT_TRUE(coordinator_->EndStep("job-1", "a", 3).ok());
  auto early = Commit("a", 3);
  EXPECT_EQ(early.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(early.message(), HasSubstr("members b have not ended step 3"));
  ASSERT_TRUE(coordinator_->EndStep("job-1", "b", 3).ok());
  ASSERT_TRUE(Commit("a", 3).ok());
  EXPECT_EQ(Commit("b", 3).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(coordinator_->GetJob("job-1")->committed_step(), 3u);

  // The model and the ledger committed together.
  auto reader = coordinator_->checkpoints()->OpenLatest("job-1");
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->info().step, 3u);
  auto record = coordinator_->checkpoints()->GetRecord("coordinator/v1/job-1/ledger");
  ASSERT_TRUE(record.ok() && record->has_value());
  coordinator_state::LedgerSnapshot snapshot;
  ASSERT_TRUE(snapshot.ParseFromString(**record));
  EXPECT_EQ(snapshot.step(), 3u);
  EXPECT_EQ(snapshot.committed_offsets_size(), 3);
  // A report for a step the worker already ended is refused: it could not be
  // in that step's checkpoint.
  ASSERT_TRUE(coordinator_->AcquireShard("job-1", "a").ok());
  EXPECT_EQ(Report("a", "late", 0, 10, 3).status().code(), absl::StatusCode::kFailedPrecondition);
}

// A job is finished when the checkpoint of its last step commits (a diloco
// job's steps are rounds); then nobody can join or lease. Extended, it runs
// again from there.
TEST_F(CoordinatorTest, JobFinishesAtItsFinalStepAndCanBeExtended) {
  v1::JobSpec spec = Spec("job-1");
  spec.set_max_steps(4);
  Submit(spec, shards_);
  for (const char* w : {"a", "b"}) Join("job-1", w);
  Form("job-1", {"a", "b"});
  for (uint64_t step : {3, 4}) {
    for (const char* w : {"a", "b"}) ASSERT_TRUE(coordinator_->EndStep("job-1", w, step).ok());
    ASSERT_TRUE(Commit("a", step).ok());
    EXPECT_EQ(coordinator_->GetJob("job-1")->state(),
              step < 4 ? v1::JOB_STATE_RUNNING : v1::JOB_STATE_FINISHED);
  }
  EXPECT_EQ(coordinator_->AcquireShard("job-1", "a").status().code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(coordinator_->Join({"job-1", "", "c", "127.0.0.1:3"}).status().code(),
            absl::StatusCode::kOutOfRange);

  EXPECT_EQ(coordinator_->ExtendJob("not-a-token", "job-1", 8).status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(coordinator_->ExtendJob(admin_, "job-1", 4).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto extended = coordinator_->ExtendJob(admin_, "job-1", 8);
  ASSERT_TRUE(extended.ok()) << extended.status();
  EXPECT_EQ(extended->state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(extended->spec().max_steps(), 8u);
  EXPECT_TRUE(coordinator_->AcquireShard("job-1", "a").ok());
  Reopen();  // durable
  EXPECT_EQ(coordinator_->GetJob("job-1")->spec().max_steps(), 8u);
  EXPECT_EQ(coordinator_->GetJob("job-1")->state(), v1::JOB_STATE_RUNNING);

  // diloco: max_steps counts inner steps, the coordinator's steps are rounds.
  v1::JobSpec diloco = Spec("job-2");
  diloco.set_mode(v1::SYNC_MODE_DILOCO);
  diloco.mutable_diloco()->set_inner_steps(4);
  diloco.set_max_steps(10);
  EXPECT_EQ(FinalStep(diloco), 3u);
  EXPECT_EQ(FinalStep(Spec("job-3")), 0u);
}

TEST_F(CoordinatorTest, StreamingCheckpointCommitsTheLedgerToo) {
  Start({"a"});
  ASSERT_TRUE(coordinator_->AcquireShard("job-1", "a").ok());
  ASSERT_TRUE(Report("a", "r1", 0, 33, 4).ok());
  ASSERT_TRUE(coordinator_->EndStep("job-1", "a", 4).ok());
  auto writer = coordinator_->BeginCheckpoint("job-1", "a", 4);
  ASSERT_TRUE(writer.ok()) << writer.status();
  const std::string blob = "rng state";
  ASSERT_TRUE(
      (*writer)
          ->BeginEntry("rng", EntryKind::kBlob, DType::kUInt8, {static_cast<int64_t>(blob.size())})
          .ok());
  ASSERT_TRUE((*writer)->Append(blob.data(), blob.size()).ok());
  EXPECT_EQ(Shard(0).committed_offset, 0u);
  EXPECT_EQ((*writer)->Commit({Record{"coordinator/v1/job-1/ledger", "forged"}}).code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE((*writer)->Commit().ok());
  EXPECT_EQ(Shard(0).committed_offset, 33u);
  EXPECT_EQ(coordinator_->GetJob("job-1")->committed_step(), 4u);
}

// Sends `part` of `parts`: elements [first, first + n) of a 10-float tensor
// "w" holding 0..9, and (part 0) the blob "meta".
absl::StatusOr<bool> SendPart(Coordinator* coordinator, const std::string& worker, uint64_t step,
                              uint32_t part, uint32_t parts, uint64_t first, uint64_t n) {
  ASSIGN_OR_RETURN(auto writer,
                   coordinator->BeginCheckpointPart("job-1", worker, step, part, parts));
  std::vector<float> values(10);
  for (int i = 0; i < 10; ++i) values[i] = static_cast<float>(i);
  RETURN_IF_ERROR(writer->BeginSlice("w", EntryKind::kTensor, DType::kFloat32, {2, 5}, first, n));
  RETURN_IF_ERROR(writer->Append(values.data() + first, n * sizeof(float)));
  if (part == 0) {
    const std::string meta = "counters";
    RETURN_IF_ERROR(writer->BeginSlice("meta", EntryKind::kBlob, DType::kUInt8,
                                       {static_cast<int64_t>(meta.size())}, 0, meta.size()));
    RETURN_IF_ERROR(writer->Append(meta.data(), meta.size()));
  }
  return writer->Finish();
}

TEST_F(CoordinatorTest, SplitUploadCommitsWhenTheLastPartIsIn) {
  Start({"a", "b", "c"});
  ASSERT_TRUE(coordinator_->AcquireShard("job-1", "a").ok());
  ASSERT_TRUE(Report("a", "r1", 0, 12, 2).ok());
  for (const char* w : {"a", "b", "c"}) ASSERT_TRUE(coordinator_->EndStep("job-1", w, 2).ok());

  // Parts must match the group: the size, and each worker its own rank.
  EXPECT_EQ(coordinator_->BeginCheckpointPart("job-1", "a", 2, 0, 2).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(coordinator_->BeginCheckpointPart("job-1", "b", 2, 0, 3).status().code(),
            absl::StatusCode::kInvalidArgument);

  auto first = SendPart(coordinator_.get(), "c", 2, 2, 3, 7, 3);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_FALSE(*first);
  auto second = SendPart(coordinator_.get(), "a", 2, 0, 3, 0, 3);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_FALSE(*second);
  EXPECT_EQ(coordinator_->GetJob("job-1")->committed_step(), 0u);
  EXPECT_EQ(Shard(0).committed_offset, 0u);
  auto last = SendPart(coordinator_.get(), "b", 2, 1, 3, 3, 4);
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_TRUE(*last);

  // One checkpoint, the slices in order, committed with the ledger.
  EXPECT_EQ(coordinator_->GetJob("job-1")->committed_step(), 2u);
  EXPECT_EQ(Shard(0).committed_offset, 12u);
  auto reader = coordinator_->checkpoints()->OpenLatest("job-1");
  ASSERT_TRUE(reader.ok()) << reader.status();
  ASSERT_EQ((*reader)->info().entries.size(), 2u);
  EXPECT_EQ((*reader)->info().entries[0].shape, (std::vector<int64_t>{2, 5}));
  std::vector<float> w(10);
  ASSERT_TRUE((*reader)->ReadTensor("w", TensorView::Of(w.data(), w.size())).ok());
  for (int i = 0; i < 10; ++i) EXPECT_EQ(w[i], static_cast<float>(i));
  EXPECT_EQ(*(*reader)->ReadBlob("meta"), "counters");
  // Spooled parts are removed once joined.
  EXPECT_TRUE(std::filesystem::is_empty(dir_ / "uploads"));
}

TEST_F(CoordinatorTest, SplitUploadWithAGapOrOverlapCommitsNothing) {
  Start({"a", "b"});
  for (const char* w : {"a", "b"}) ASSERT_TRUE(coordinator_->EndStep("job-1", w, 3).ok());
  // Part 1 overlaps part 0 ([0,6) and [5,10)): refused, nothing committed.
  ASSERT_TRUE(SendPart(coordinator_.get(), "a", 3, 0, 2, 0, 6).ok());
  auto overlap = SendPart(coordinator_.get(), "b", 3, 1, 2, 5, 5);
  EXPECT_EQ(overlap.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(overlap.status().message(), HasSubstr("entry 'w'"));
  EXPECT_EQ(coordinator_->GetJob("job-1")->committed_step(), 0u);
  EXPECT_EQ(coordinator_->checkpoints()->OpenLatest("job-1").status().code(),
            absl::StatusCode::kNotFound);
  // A slice past the entry's end is refused as it arrives.
  auto writer = coordinator_->BeginCheckpointPart("job-1", "b", 3, 1, 2);
  ASSERT_TRUE(writer.ok());
  EXPECT_EQ((*writer)->BeginSlice("w", EntryKind::kTensor, DType::kFloat32, {2, 5}, 8, 3).code(),
            absl::StatusCode::kInvalidArgument);
  // Both parts sent again, correctly: committed.
  ASSERT_TRUE(SendPart(coordinator_.get(), "a", 3, 0, 2, 0, 6).ok());
  auto good = SendPart(coordinator_.get(), "b", 3, 1, 2, 6, 4);
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_TRUE(*good);
  EXPECT_EQ(coordinator_->GetJob("job-1")->committed_step(), 3u);
}

// Uploads past CoordinatorOptions.max_checkpoint_bytes are refused as the
// bytes arrive (a whole upload, or one part) or when the last part makes the
// set too big, and nothing is committed; uploads within it still commit.
TEST_F(CoordinatorTest, UploadsOverTheCheckpointByteLimitCommitNothing) {
  max_checkpoint_bytes_ = 40;
  Reopen();
  Start({"a", "b"});
  for (const char* w : {"a", "b"}) ASSERT_TRUE(coordinator_->EndStep("job-1", w, 3).ok());

  // One part alone past the limit: 10 floats and the 8-byte blob.
  auto big = SendPart(coordinator_.get(), "a", 3, 0, 2, 0, 10);
  EXPECT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(big.status().message(), HasSubstr("--max-checkpoint-bytes"));
  // Two parts within it, together past it (32 + 16 bytes).
  ASSERT_TRUE(SendPart(coordinator_.get(), "a", 3, 0, 2, 0, 6).ok());
  auto together = SendPart(coordinator_.get(), "b", 3, 1, 2, 6, 4);
  EXPECT_EQ(together.status().code(), absl::StatusCode::kResourceExhausted);
  // A whole upload past it: refused at the byte that crosses it, and after.
  auto writer = coordinator_->BeginCheckpoint("job-1", "a", 3);
  ASSERT_TRUE(writer.ok()) << writer.status();
  const std::string blob(48, 'x');
  ASSERT_TRUE((*writer)->BeginEntry("rng", EntryKind::kBlob, DType::kUInt8, {48}).ok());
  ASSERT_TRUE((*writer)->Append(blob.data(), 30).ok());
  EXPECT_EQ((*writer)->Append(blob.data() + 30, 18).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ((*writer)->Append(blob.data() + 30, 1).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ((*writer)->Commit().code(), absl::StatusCode::kResourceExhausted);
  writer->reset();  // abandoned: the store's save slot is free again
  EXPECT_EQ(coordinator_->GetJob("job-1")->committed_step(), 0u);
  EXPECT_EQ(coordinator_->checkpoints()->OpenLatest("job-1").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(std::filesystem::is_empty(dir_ / "uploads"));

  // An upload within the limit still commits.
  auto small = coordinator_->BeginCheckpoint("job-1", "a", 3);
  ASSERT_TRUE(small.ok()) << small.status();
  ASSERT_TRUE((*small)->BeginEntry("rng", EntryKind::kBlob, DType::kUInt8, {40}).ok());
  ASSERT_TRUE((*small)->Append(blob.data(), 40).ok());
  ASSERT_TRUE((*small)->Commit().ok());
  EXPECT_EQ(coordinator_->GetJob("job-1")->committed_step(), 3u);
}

TEST_F(CoordinatorTest, SplitUploadPartsOfAnOlderGenerationAreDropped) {
  Start({"a", "b", "c"});
  for (const char* w : {"a", "b", "c"}) ASSERT_TRUE(coordinator_->EndStep("job-1", w, 2).ok());
  ASSERT_TRUE(SendPart(coordinator_.get(), "a", 2, 0, 3, 0, 3).ok());
  ASSERT_TRUE(SendPart(coordinator_.get(), "b", 2, 1, 3, 3, 4).ok());
  // c fails before sending its part: the survivors form a group of two,
  // which rolls back to step 0, and its own step 2 needs parts of two.
  ASSERT_TRUE(coordinator_->ReportFailure("job-1", "a", "c").ok());
  Form("job-1", {"a", "b"});
  for (const char* w : {"a", "b"}) ASSERT_TRUE(coordinator_->EndStep("job-1", w, 2).ok());
  EXPECT_EQ(coordinator_->BeginCheckpointPart("job-1", "b", 2, 1, 3).status().code(),
            absl::StatusCode::kInvalidArgument);
  // b's part 1 of the new group alone does not complete anything: the old
  // generation's part 0 (of three) does not count.
  auto alone = SendPart(coordinator_.get(), "b", 2, 1, 2, 5, 5);
  ASSERT_TRUE(alone.ok()) << alone.status();
  EXPECT_FALSE(*alone);
  auto last = SendPart(coordinator_.get(), "a", 2, 0, 2, 0, 5);
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_TRUE(*last);
  EXPECT_EQ(coordinator_->GetJob("job-1")->committed_step(), 2u);
}

TEST_F(CoordinatorTest, EndStepGivesEveryMemberTheSameCheckpointAnswer) {
  v1::JobSpec spec = Spec("job-1");
  spec.mutable_checkpoint()->set_every_seconds(60);
  Submit(spec, shards_);
  Join("job-1", "a");
  Join("job-1", "b");
  Form("job-1", {"a", "b"});
  AdvanceWithHeartbeats(absl::Seconds(59), {"a", "b"});
  EXPECT_FALSE(coordinator_->EndStep("job-1", "a", 1)->should_checkpoint);
  // The minute passes between a's and b's EndStep: b still hears "no" for
  // step 1 (else a part would be missing), and both hear "yes" for step 2.
  clock_.AdvanceBy(absl::Seconds(2));
  EXPECT_FALSE(coordinator_->EndStep("job-1", "b", 1)->should_checkpoint);
  EXPECT_TRUE(coordinator_->EndStep("job-1", "b", 2)->should_checkpoint);
  EXPECT_TRUE(coordinator_->EndStep("job-1", "a", 2)->should_checkpoint);
}

TEST_F(CoordinatorTest, ShouldCheckpointFollowsThePolicy) {
  v1::JobSpec spec = Spec("job-1");
  spec.mutable_checkpoint()->set_every_steps(5);
  spec.mutable_checkpoint()->set_every_seconds(60);
  Submit(spec, shards_);
  EXPECT_FALSE(*coordinator_->ShouldCheckpoint("job-1", 4));
  EXPECT_TRUE(*coordinator_->ShouldCheckpoint("job-1", 5));
  EXPECT_FALSE(*coordinator_->ShouldCheckpoint("job-1", 6));
  clock_.AdvanceBy(absl::Seconds(60));
  EXPECT_TRUE(*coordinator_->ShouldCheckpoint("job-1", 6));
  EXPECT_FALSE(*coordinator_->ShouldCheckpoint("job-1", 0));  // not after committed step 0
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
    }
    if (step == 8) Join("job-1", "w3");
    if (step == 13) {
      ASSERT_TRUE(coordinator_->ReportFailure("job-1", "w3", "w2").ok());
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

// Concurrent calls wait for a shared synced write (group commit); every one
// acknowledged is on disk, in order, when the directory is reopened.
TEST_F(CoordinatorTest, ConcurrentAcknowledgedJoinsAllSurviveAReopen) {
  Submit(Spec("job-1"), shards_);
  auto token = coordinator_->CreateToken("job-1", absl::Hours(1));
  ASSERT_TRUE(token.ok());
  coordinator_.reset();
  CoordinatorOptions options = Options();
  options.sync_writes = true;
  auto opened = Coordinator::Open(options);
  ASSERT_TRUE(opened.ok()) << opened.status();
  coordinator_ = std::move(*opened);
  constexpr int kThreads = 8, kJoinsEach = 16;
  std::vector<std::thread> threads;
  std::vector<int> failures(kThreads, 0);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kJoinsEach; ++i) {
        const std::string worker = absl::StrCat("w", t, "-", i);
        auto joined = coordinator_->Join({"job-1", *token, worker, worker + ":1"});
        if (!joined.ok() || joined->worker_id != worker) ++failures[t];
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_THAT(failures, ::testing::Each(0));
  Reopen();
  auto workers = coordinator_->ListWorkers("job-1");
  ASSERT_TRUE(workers.ok()) << workers.status();
  ASSERT_EQ(workers->size(), static_cast<size_t>(kThreads * kJoinsEach));
  for (const WorkerView& worker : *workers) {
    EXPECT_NE(worker.phase, WorkerView::Phase::kDead) << worker.worker_id;
    EXPECT_EQ(worker.endpoint, worker.worker_id + ":1");
  }
}

TEST_F(CoordinatorTest, ReopenKeepsStateAndRevertsUncommittedProgress) {
  const GroupView first = Start({"a", "b"});
  auto token = coordinator_->CreateToken("job-1", absl::Hours(1));
  auto revoked = coordinator_->CreateToken("job-1", absl::Hours(1));
  ASSERT_TRUE(coordinator_->RevokeToken(*revoked).ok());
  ASSERT_EQ(coordinator_->AcquireShard("job-1", "a")->shard, 0u);
  ASSERT_TRUE(Report("a", "a1", 0, 30, 1).ok());
  ASSERT_TRUE(coordinator_->EndStep("job-1", "a", 1).ok());
  ASSERT_TRUE(coordinator_->EndStep("job-1", "b", 1).ok());
  ASSERT_TRUE(Commit("a", 1).ok());
  ASSERT_TRUE(Report("a", "a2", 0, 60, 2).ok());
  ASSERT_EQ(coordinator_->AcquireShard("job-1", "b")->shard, 1u);
  ASSERT_TRUE(Report("b", "b1", 1, 20, 2).ok());
  auto before = coordinator_->GetJob("job-1");
  ASSERT_TRUE(before.ok());

  clock_.AdvanceBy(absl::Seconds(8));
  Reopen();
  const absl::Time reopened = clock_.Now();

  auto after = coordinator_->GetJob("job-1");
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->SerializeAsString(), before->SerializeAsString());
  EXPECT_EQ(after->committed_step(), 1u);
  EXPECT_EQ(after->live_workers(), 2u);
  auto workers = coordinator_->ListWorkers("job-1");
  ASSERT_TRUE(workers.ok());
  ASSERT_EQ(workers->size(), 2u);
  for (const WorkerView& worker : *workers) {
    EXPECT_EQ(worker.phase, WorkerView::Phase::kMember) << worker.worker_id;
    EXPECT_EQ(worker.lease_expiry, reopened + absl::Seconds(20)) << worker.worker_id;
  }
  EXPECT_EQ(Find("job-1", "b").endpoint, "b:7000");

  const ShardView zero = Shard(0);
  EXPECT_EQ(zero.committed_offset, 30u);
  EXPECT_EQ(zero.consumed_offset, 30u);
  EXPECT_EQ(zero.holder, "");  // the group resumes from the checkpoint: leases start anew
  const ShardView one = Shard(1);
  EXPECT_EQ(one.committed_offset, 0u);
  EXPECT_EQ(one.consumed_offset, 0u);
  EXPECT_EQ(one.holder, "");

  // Tokens and the signing key survived; the revoked one stays revoked.
  EXPECT_TRUE(coordinator_->VerifyToken("job-1", *token).ok());
  EXPECT_EQ(coordinator_->VerifyToken("job-1", *revoked).code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(coordinator_->VerifyAdminToken(admin_).ok());

  // The group resumes from the checkpoint in a new generation; reports of
  // the old one are refused.
  const GroupView view = Form("job-1", {"a", "b"});
  EXPECT_GT(view.generation, first.generation);
  EXPECT_TRUE(view.from_checkpoint);
  EXPECT_EQ(view.resume_step, 1u);
  auto stale = coordinator_->ReportProgress({"job-1", "a", "a3", first.generation, 0, 80, 2});
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kAborted);
  auto lease = coordinator_->AcquireShard("job-1", "a");
  ASSERT_TRUE(lease.ok());
  EXPECT_EQ(lease->offset, 30u);

  // Once a worker calls in again, its lease is an ordinary one.
  clock_.AdvanceBy(absl::Seconds(10));
  EXPECT_EQ(coordinator_->Heartbeat("job-1", "b").status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(CoordinatorTest, CheckpointStoreRecordWinsOverAStaleStateDatabase) {
  Start({"a"});
  ASSERT_TRUE(coordinator_->AcquireShard("job-1", "a").ok());
  ASSERT_TRUE(Report("a", "a1", 0, 45, 1).ok());
  coordinator_.reset();
  // A crash after the checkpoint's write batch and before the state
  // database's: only the checkpoint store knows step 1 committed.
  {
    auto store = CheckpointStore::Open((dir_ / "checkpoints").string());
    ASSERT_TRUE(store.ok()) << store.status();
    coordinator_state::LedgerSnapshot snapshot;
    snapshot.set_step(1);
    for (uint64_t offset : {45, 0, 0}) snapshot.add_committed_offsets(offset);
    std::vector<float> weights = {1.0f};
    ASSERT_TRUE((*store)
                    ->Save("job-1", 1,
                           std::vector<TensorToSave>{
                               {"w", TensorView::Of(weights.data(), weights.size()), {}}},
                           {},
                           {Record{"coordinator/v1/job-1/ledger", snapshot.SerializeAsString()}})
                    .ok());
  }
  Reopen();
  EXPECT_EQ(coordinator_->GetJob("job-1")->committed_step(), 1u);
  EXPECT_EQ(Shard(0).committed_offset, 45u);
  EXPECT_EQ(Shard(0).consumed_offset, 45u);
}

TEST_F(CoordinatorTest, LedgerRecordWithoutItsCheckpointIsDataLoss) {
  Start({"a"});
  ASSERT_TRUE(coordinator_->EndStep("job-1", "a", 2).ok());
  ASSERT_TRUE(Commit("a", 2).ok());
  ASSERT_TRUE(coordinator_->checkpoints()->Delete("job-1", 2).ok());
  coordinator_.reset();
  auto opened = Coordinator::Open(Options());
  EXPECT_EQ(opened.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(opened.status().message(), HasSubstr("step 2"));
}

TEST_F(CoordinatorTest, RejoiningMemberWithItsIdRollsTheGroupBack) {
  const GroupView first = Start({"a", "b"});
  auto token = coordinator_->CreateToken("job-1", absl::Hours(1));
  auto rejoined = coordinator_->Join({"job-1", *token, "b", "b:7001"});
  ASSERT_TRUE(rejoined.ok()) << rejoined.status();
  EXPECT_EQ(rejoined->worker_id, "b");
  EXPECT_TRUE(rejoined->member);  // admitted at once: the group regroups anyway
  const GroupView view = Form("job-1", {"a", "b"});
  EXPECT_EQ(view.generation, first.generation + 1);
  EXPECT_TRUE(view.from_checkpoint);
  EXPECT_EQ(view.members[1].endpoint, "b:7001");
}

TEST_F(CoordinatorTest, AssignedWorkerIdsAreUniqueAndKept) {
  Submit(Spec("job-1"), shards_);
  auto token = coordinator_->CreateToken("job-1", absl::Hours(1));
  auto first = coordinator_->Join({"job-1", *token, "", "x:1"});
  auto second = coordinator_->Join({"job-1", *token, "", "y:1"});
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_NE(first->worker_id, second->worker_id);
  EXPECT_TRUE(coordinator_->Heartbeat("job-1", first->worker_id).ok());
  EXPECT_EQ(coordinator_->Join({"job-1", *token, "bad/id", "z:1"}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(CoordinatorTest, PausedAndCancelledJobsRefuseWork) {
  Start({"a"});
  ASSERT_TRUE(coordinator_->PauseJob(admin_, "job-1").ok());
  EXPECT_EQ(coordinator_->GetJob("job-1")->state(), v1::JOB_STATE_PAUSED);
  EXPECT_EQ(coordinator_->AcquireShard("job-1", "a").status().code(),
            absl::StatusCode::kFailedPrecondition);
  auto token = coordinator_->CreateToken("job-1", absl::Hours(1));
  EXPECT_EQ(coordinator_->Join({"job-1", *token, "b", "b:1"}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(coordinator_->Heartbeat("job-1", "a")->job_state, v1::JOB_STATE_PAUSED);
  ASSERT_TRUE(coordinator_->ResumeJob(admin_, "job-1").ok());
  EXPECT_TRUE(coordinator_->AcquireShard("job-1", "a").ok());
  EXPECT_EQ(coordinator_->CancelJob(*token, "job-1").code(), absl::StatusCode::kPermissionDenied);
  ASSERT_TRUE(coordinator_->CancelJob(admin_, "job-1").ok());
  EXPECT_EQ(coordinator_->ResumeJob(admin_, "job-1").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(coordinator_->GetJob("job-1")->state(), v1::JOB_STATE_CANCELLED);
  Reopen();
  EXPECT_EQ(coordinator_->GetJob("job-1")->state(), v1::JOB_STATE_CANCELLED);
}

TEST_F(CoordinatorTest, MaxWorkersIsEnforced) {
  v1::JobSpec spec = Spec("job-1");
  spec.mutable_access()->set_max_workers(1);
  spec.mutable_access()->set_open(true);
  Submit(spec, shards_);
  ASSERT_TRUE(coordinator_->Join({"job-1", "", "a", "a:1"}).ok());  // open: no token
  EXPECT_EQ(coordinator_->Join({"job-1", "", "b", "b:1"}).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(coordinator_->Join({"job-1", "", "a", "a:1"}).ok());  // itself again is fine
}

}  // namespace
}  // namespace potluck
