// The coordinator's membership: leases, rendezvous and generations, joiners,
// rejoiners, worker ids, and the job states and limits that refuse work.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

#include "common/failure.h"
#include "coordinator/coordinator.h"
#include "coordinator/coordinator_test_util.h"
#include "coordinator/internal/job_state.h"

namespace potluck {
namespace {

namespace ci = coordinator_internal;

using ::testing::HasSubstr;
using State = RendezvousResult::State;
using CoordinatorTest = testing_util::SingleJobFixture;

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
  // All three run (they heartbeat), so all are admitted to one generation.
  for (const char* worker : {"a", "b", "c"}) {
    ASSERT_TRUE(coordinator_->Heartbeat("job-1", worker).ok());
  }
  ASSERT_TRUE(Arrive("job-1", "a").ok());
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

// A failure report is evidence, not a verdict: a member is evicted on its
// peers' word only when at least two and more than half of them agree.
TEST_F(CoordinatorTest, OneMembersReportAloneEvictsNobody) {
  const GroupView first = Start({"a", "b"});
  auto reported = coordinator_->ReportFailure("job-1", "a", "b");
  ASSERT_TRUE(reported.ok()) << reported.status();
  EXPECT_EQ(*reported, first.generation);
  auto again = coordinator_->ReportFailure("job-1", "a", "b");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, first.generation);
  auto b = coordinator_->Heartbeat("job-1", "b");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_TRUE(b->member);
  EXPECT_EQ(b->generation, first.generation);
}

TEST_F(CoordinatorTest, TwoFailuresInOneGenerationMakeTwoGenerations) {
  const GroupView first = Start({"a", "b", "c", "d"});
  ASSERT_EQ(first.members.size(), 4u);

  auto accused = coordinator_->ReportFailure("job-1", "a", "b");
  ASSERT_TRUE(accused.ok()) << accused.status();
  EXPECT_EQ(*accused, first.generation);  // 1 of b's 3 peers
  auto second = coordinator_->ReportFailure("job-1", "c", "b");
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(*second, first.generation + 1);  // 2 of 3
  // c and a saw d fail in the same collective; d is still a member of the
  // new generation, whose peers of d are a and c: both must say so.
  auto one = coordinator_->ReportFailure("job-1", "c", "d");
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(*one, first.generation + 1);
  auto third = coordinator_->ReportFailure("job-1", "a", "d");
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
  EXPECT_THAT(Find("job-1", "d").dead_reason, HasSubstr("reported failed by 2 of its 2 peers"));
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
  EXPECT_EQ(Arrive("job-1", "a")->state, State::kWaiting);
  uint64_t generation = CurrentGeneration("job-1");
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
  ASSERT_EQ(Arrive("job-1", "a")->state, State::kReady);
  // Formed with a alone; b must wait for a boundary.
  Join("job-1", "b");
  EXPECT_FALSE(coordinator_->Heartbeat("job-1", "b")->member);
}

// Issue 15: one token holder once joined 3,000 workers in 17 s, and every
// record was kept; a ghost join (Join, then nothing) every 2.5 s froze the
// committed step, each ghost admitted and then dropped with a rollback.
// Now a token has at most access.max_workers_per_token live workers, a
// joiner is admitted only once it calls again, and dead records are pruned:
// the group trains on through wave after wave of ghosts.
TEST_F(CoordinatorTest, GhostJoinsOnOneTokenNeverStallTheGroupNorPileUp) {
  const GroupView formed = Start({"a", "b"});
  auto token = coordinator_->CreateToken("job-1", absl::Hours(1));
  ASSERT_TRUE(token.ok());
  uint64_t step = 0;
  int refused = 0;
  for (int wave = 0; wave < 20; ++wave) {
    for (int i = 0; i < 10; ++i) {
      const std::string ghost = absl::StrCat("ghost-", wave, "-", i);
      auto joined = coordinator_->Join({"job-1", *token, ghost, ghost + ":1"});
      if (!joined.ok()) {
        EXPECT_EQ(joined.status().code(), absl::StatusCode::kResourceExhausted) << joined.status();
        ++refused;
      }
    }
    // The members train on: no step ends in a regroup for a ghost.
    for (int s = 0; s < 3; ++s) {
      ++step;
      for (const char* member : {"a", "b"}) {
        auto ended = coordinator_->EndStep("job-1", member, step);
        ASSERT_TRUE(ended.ok()) << ended.status();
        EXPECT_FALSE(ended->regroup) << "step " << step;
        EXPECT_EQ(ended->generation, formed.generation);
      }
    }
    AdvanceWithHeartbeats(absl::Seconds(15), {"a", "b"});  // the ghosts' leases end
  }
  EXPECT_EQ(refused, 20 * (10 - static_cast<int>(ci::kDefaultWorkersPerToken)));
  auto workers = coordinator_->ListWorkers("job-1");
  ASSERT_TRUE(workers.ok());
  EXPECT_LE(workers->size(), 2 + ci::kDefaultWorkersPerToken + ci::kMaxDeadWorkers);
  EXPECT_EQ(Find("job-1", "a").phase, WorkerView::Phase::kMember);
  EXPECT_EQ(Find("job-1", "b").phase, WorkerView::Phase::kMember);
  // The pruned records are gone from disk too.
  Reopen();
  workers = coordinator_->ListWorkers("job-1");
  ASSERT_TRUE(workers.ok());
  EXPECT_LE(workers->size(), 2 + ci::kDefaultWorkersPerToken + ci::kMaxDeadWorkers);
  EXPECT_EQ(Find("job-1", "a").phase, WorkerView::Phase::kMember);
}

// Issue 15: the admin removes a member now. Its group rolls back without
// it, its credential and its id stop working, and with --revoke-token the
// volunteer cannot come back under a fresh id either.
TEST_F(CoordinatorTest, AnEvictedWorkerIsGoneAtOnceAndMayNotComeBack) {
  Submit(Spec("job-1"), shards_);
  Join("job-1", "a");
  auto token = coordinator_->CreateToken("job-1", absl::Hours(1));
  ASSERT_TRUE(token.ok());
  auto b = coordinator_->Join({"job-1", *token, "b", "b:1"});
  ASSERT_TRUE(b.ok()) << b.status();
  const GroupView first = Form("job-1", {"a", "b"});
  ASSERT_EQ(first.members.size(), 2u);

  EXPECT_FALSE(coordinator_->EvictWorker("not-the-admin", "job-1", "b", true).ok());
  EXPECT_EQ(coordinator_->EvictWorker(admin_, "job-1", "nobody", true).status().code(),
            absl::StatusCode::kNotFound);
  ASSERT_TRUE(coordinator_->EvictWorker(admin_, "job-1", "b", /*revoke_token=*/true).ok());
  EXPECT_EQ(Find("job-1", "b").phase, WorkerView::Phase::kDead);
  EXPECT_THAT(Find("job-1", "b").dead_reason, HasSubstr("evicted"));
  const GroupView view = Form("job-1", {"a"});
  ASSERT_EQ(view.members.size(), 1u);
  EXPECT_TRUE(view.from_checkpoint);

  const absl::Status own = coordinator_->AuthenticateMember("job-1", "b", b->member_secret);
  EXPECT_EQ(own.code(), absl::StatusCode::kPermissionDenied) << own;
  EXPECT_FALSE(coordinator_->Join({"job-1", *token, "b", "b:1"}).ok());
  auto fresh_token = coordinator_->CreateToken("job-1", absl::Hours(1));
  ASSERT_TRUE(fresh_token.ok());
  EXPECT_EQ(coordinator_->Join({"job-1", *fresh_token, "b", "b:1"}).status().code(),
            absl::StatusCode::kPermissionDenied);  // the id, whatever the token
  EXPECT_FALSE(coordinator_->Join({"job-1", *token, "b2", "b2:1"}).ok());  // the token, revoked
}

// Issue 16: a member that stops because of the job (its data changed) says
// why as it leaves; the job's status shows it, printable and bounded, until
// the job commits again. A worker's own failure stays on its record.
TEST_F(CoordinatorTest, AMemberLeavingBecauseOfTheJobLeavesTheReasonInItsStatus) {
  Start({"a", "b", "c"});
  ASSERT_TRUE(
      coordinator_->Leave("job-1", "c", {Failure::kOwnStateNotFinite, "NaN gradients"}).ok());
  EXPECT_THAT(Find("job-1", "c").dead_reason, HasSubstr("(own_state_not_finite): NaN gradients"));
  EXPECT_EQ(coordinator_->GetJob("job-1")->problem(), "");

  const std::string said = "shard train-00000.tok is not the data job job-1 was submitted with\n" +
                           std::string(2000, 'x');
  ASSERT_TRUE(coordinator_->Leave("job-1", "b", {Failure::kDatasetChanged, said}).ok());
  const std::string problem = coordinator_->GetJob("job-1")->problem();
  EXPECT_THAT(problem, HasSubstr("worker b stopped after step 0 (dataset_changed): shard "
                                 "train-00000.tok is not the data job job-1 was submitted with?x"));
  EXPECT_LT(problem.size(), 600u);
  Reopen();  // kept with the job
  EXPECT_EQ(coordinator_->GetJob("job-1")->problem(), problem);

  Form("job-1", {"a"});
  ASSERT_TRUE(coordinator_->EndStep("job-1", "a", 1).ok());
  ASSERT_TRUE(Commit("a", 1).ok());
  EXPECT_EQ(coordinator_->GetJob("job-1")->problem(), "");
}

TEST_F(CoordinatorTest, AJoinTokenHasAtMostItsCapOfLiveWorkers) {
  v1::JobSpec spec = Spec("job-1");
  spec.mutable_access()->set_max_workers_per_token(2);
  Submit(spec, shards_);
  auto token = coordinator_->CreateToken("job-1", absl::Hours(1));
  auto other = coordinator_->CreateToken("job-1", absl::Hours(1));
  ASSERT_TRUE(token.ok() && other.ok());
  ASSERT_TRUE(coordinator_->Join({"job-1", *token, "a", "a:1"}).ok());
  ASSERT_TRUE(coordinator_->Join({"job-1", *token, "b", "b:1"}).ok());
  const absl::Status third = coordinator_->Join({"job-1", *token, "c", "c:1"}).status();
  EXPECT_EQ(third.code(), absl::StatusCode::kResourceExhausted) << third;
  EXPECT_THAT(third.message(), HasSubstr("max_workers_per_token"));
  // A rejoin under a counted id is no new worker; another token has its own cap.
  EXPECT_TRUE(coordinator_->Join({"job-1", *token, "b", "b:2"}).ok());
  EXPECT_TRUE(coordinator_->Join({"job-1", *other, "c", "c:1"}).ok());
  // Once one of the token's workers leaves, the token may join another.
  ASSERT_TRUE(coordinator_->Leave("job-1", "a").ok());
  EXPECT_TRUE(coordinator_->Join({"job-1", *token, "d", "d:1"}).ok());
}

TEST_F(CoordinatorTest, RejoiningMemberWithItsIdRollsTheGroupBack) {
  const GroupView first = Start({"a", "b"});
  auto token = coordinator_->CreateToken("job-1", absl::Hours(1));
  auto rejoined = coordinator_->Join({"job-1", *token, "b", "b:7001"});
  ASSERT_TRUE(rejoined.ok()) << rejoined.status();
  EXPECT_EQ(rejoined->worker_id, "b");
  // The group rolls back at once; b is admitted once it calls again (its
  // Join alone does not prove a running process).
  EXPECT_FALSE(rejoined->member);
  const GroupView view = Form("job-1", {"a", "b"});
  EXPECT_GT(view.generation, first.generation + 1);
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
  auto token = coordinator_->CreateToken("job-1", absl::Hours(1));
  EXPECT_EQ(coordinator_->Heartbeat("job-1", "a")->job_state, v1::JOB_STATE_PAUSED);
  ASSERT_TRUE(coordinator_->ResumeJob(admin_, "job-1").ok());
  EXPECT_TRUE(coordinator_->AcquireShard("job-1", "a").ok());
  EXPECT_EQ(coordinator_->CancelJob(*token, "job-1").code(), absl::StatusCode::kPermissionDenied);
  ASSERT_TRUE(coordinator_->CancelJob(admin_, "job-1").ok());
  EXPECT_EQ(coordinator_->ResumeJob(admin_, "job-1").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(coordinator_->GetJob("job-1")->state(), v1::JOB_STATE_CANCELLED);
  // Its workers learn that as a reason of its own, not a blip to retry.
  const absl::Status cancelled = coordinator_->AcquireShard("job-1", "a").status();
  EXPECT_EQ(cancelled.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(FailedBecause(cancelled, Failure::kJobCancelled)) << cancelled;
  EXPECT_EQ(coordinator_->Heartbeat("job-1", "a")->job_state, v1::JOB_STATE_CANCELLED);
  Reopen();
  EXPECT_EQ(coordinator_->GetJob("job-1")->state(), v1::JOB_STATE_CANCELLED);
}

// Issue 16: a volunteer joining a paused job once failed its Join and
// exited 2. It now waits in the join window while the job is paused, and
// is admitted at the first step boundary after the resume.
TEST_F(CoordinatorTest, AJoinerOfAPausedJobWaitsAndIsAdmittedAfterTheResume) {
  Start({"a"});
  ASSERT_TRUE(coordinator_->EndStep("job-1", "a", 1).ok());
  ASSERT_TRUE(coordinator_->PauseJob(admin_, "job-1").ok());
  auto token = coordinator_->CreateToken("job-1", absl::Hours(1));
  ASSERT_TRUE(token.ok());
  auto joined = coordinator_->Join({"job-1", *token, "b", "b:1"});
  ASSERT_TRUE(joined.ok()) << joined.status();
  EXPECT_FALSE(joined->member);
  EXPECT_EQ(joined->job_state, v1::JOB_STATE_PAUSED);
  auto ended = coordinator_->EndStep("job-1", "a", 2);  // the pause step
  ASSERT_TRUE(ended.ok()) << ended.status();
  EXPECT_TRUE(ended->pause);
  for (int i = 0; i < 3; ++i) {  // b polls; nobody trains, so it stays out
    clock_.AdvanceBy(absl::Seconds(2));
    ASSERT_TRUE(coordinator_->Heartbeat("job-1", "a").ok());
    const absl::Status waiting =
        coordinator_->Rendezvous("job-1", "b", CurrentGeneration("job-1")).status();
    EXPECT_TRUE(FailedBecause(waiting, Failure::kWaitingForAdmission)) << waiting;
  }
  ASSERT_TRUE(coordinator_->ResumeJob(admin_, "job-1").ok());
  for (uint64_t step = 3; step <= 4; ++step) {
    ended = coordinator_->EndStep("job-1", "a", step);
    ASSERT_TRUE(ended.ok()) << ended.status();
  }
  EXPECT_TRUE(ended->regroup);
  const GroupView view = Form("job-1", {"a", "b"});
  ASSERT_EQ(view.members.size(), 2u);
  EXPECT_EQ(view.members[1].worker_id, "b");
}

// A pause takes effect at one step every member reaches and none has ended:
// the one after the furthest member's last. Members one step behind train up
// to it; each is told to wait after it, and the group's state there is
// checkpointed. After resume they train on.
TEST_F(CoordinatorTest, APauseStopsEveryMemberAfterTheSameStep) {
  Start({"a", "b"});
  for (const char* w : {"a", "b"}) ASSERT_TRUE(coordinator_->EndStep("job-1", w, 1).ok());
  ASSERT_TRUE(coordinator_->EndStep("job-1", "a", 2).ok());  // a is a step ahead
  ASSERT_TRUE(coordinator_->PauseJob(admin_, "job-1").ok());
  auto b2 = coordinator_->EndStep("job-1", "b", 2);
  ASSERT_TRUE(b2.ok()) << b2.status();
  EXPECT_FALSE(b2->pause) << "b must still train step 3, which a is already in";
  EXPECT_TRUE(coordinator_->AcquireShard("job-1", "b").ok()) << "its data for step 3";
  for (const char* w : {"a", "b"}) {
    auto ended = coordinator_->EndStep("job-1", w, 3);
    ASSERT_TRUE(ended.ok()) << ended.status();
    EXPECT_TRUE(ended->pause) << w;
    EXPECT_TRUE(ended->should_checkpoint) << w;
    EXPECT_EQ(ended->job_state, v1::JOB_STATE_PAUSED);
  }
  const absl::Status committed = Commit("a", 3);
  ASSERT_TRUE(committed.ok()) << committed;
  EXPECT_EQ(coordinator_->GetJob("job-1")->committed_step(), 3u);
  EXPECT_EQ(coordinator_->GetJob("job-1")->state(), v1::JOB_STATE_PAUSED);
  ASSERT_TRUE(coordinator_->ResumeJob(admin_, "job-1").ok());
  for (const char* w : {"a", "b"}) {
    auto ended = coordinator_->EndStep("job-1", w, 4);
    ASSERT_TRUE(ended.ok()) << ended.status();
    EXPECT_FALSE(ended->pause) << w;
    EXPECT_EQ(ended->job_state, v1::JOB_STATE_RUNNING);
  }
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
