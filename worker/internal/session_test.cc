// The session's waits on a SimulatedClock, against a stub coordinator whose
// lease length the test picks: heartbeats at the lease-derived interval, "a
// lease's worth" derived from the lease, the outage tolerance expiring
// exactly at its deadline.
#include "worker/internal/session.h"

#include <atomic>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"

namespace potluck {
namespace worker_internal {
namespace {

// A coordinator that grants `lease` at every Join and Heartbeat (on the
// test's clock), reports `generation`, and records when heartbeats came.
class StubClient final : public CoordinatorClient {
 public:
  StubClient(Clock* clock, absl::Duration lease) : clock_(clock), lease_(lease) {}

  std::atomic<uint64_t> generation{1};
  std::atomic<uint64_t> rollback_generation{1};
  std::atomic<bool> unreachable{false};
  std::atomic<bool> counts_worker_dead{false};
  std::atomic<int> joins{0};

  std::vector<absl::Time> heartbeats() {
    absl::MutexLock lock(&mu_);
    return heartbeats_;
  }
  std::vector<ProgressReport> reports() {
    absl::MutexLock lock(&mu_);
    return reports_;
  }

  absl::StatusOr<WorkerStatus> Join(const JoinRequest& request) override {
    ++joins;
    if (unreachable) return absl::UnavailableError("stub: unreachable");
    return Status(request.worker_id);
  }
  absl::StatusOr<WorkerStatus> Heartbeat(absl::string_view, absl::string_view worker_id) override {
    {
      absl::MutexLock lock(&mu_);
      heartbeats_.push_back(clock_->Now());
    }
    if (unreachable) return absl::UnavailableError("stub: unreachable");
    if (counts_worker_dead) return absl::FailedPreconditionError("stub: not a member");
    return Status(std::string(worker_id));
  }
  absl::StatusOr<ProgressResult> ReportProgress(const ProgressReport& report) override {
    if (unreachable) return absl::UnavailableError("stub: unreachable");
    absl::MutexLock lock(&mu_);
    reports_.push_back(report);
    return ProgressResult{};
  }
  absl::StatusOr<StepResult> EndStep(absl::string_view, absl::string_view, uint64_t) override {
    if (unreachable) return absl::UnavailableError("stub: unreachable");
    StepResult result;
    result.generation = generation;
    return result;
  }

  absl::StatusOr<v1::JobStatus> GetJob(absl::string_view) override { return Unimplemented(); }
  absl::Status Leave(absl::string_view, absl::string_view, const LeaveReason&) override {
    return Unimplemented();
  }
  absl::StatusOr<uint64_t> ReportFailure(absl::string_view, absl::string_view,
                                         absl::string_view) override {
    return Unimplemented();
  }
  absl::StatusOr<RendezvousResult> Rendezvous(absl::string_view, absl::string_view,
                                              uint64_t) override {
    return Unimplemented();
  }
  absl::StatusOr<ShardLease> AcquireShard(absl::string_view, absl::string_view) override {
    return Unimplemented();
  }
  absl::StatusOr<std::unique_ptr<CheckpointWriter>> BeginCheckpoint(absl::string_view,
                                                                    absl::string_view,
                                                                    uint64_t) override {
    return Unimplemented();
  }
  absl::StatusOr<std::unique_ptr<CheckpointPartWriter>> BeginCheckpointPart(absl::string_view,
                                                                            absl::string_view,
                                                                            uint64_t, uint32_t,
                                                                            uint32_t) override {
    return Unimplemented();
  }
  absl::StatusOr<std::unique_ptr<CheckpointReader>> OpenLatestCheckpoint(
      absl::string_view) override {
    return Unimplemented();
  }
  absl::StatusOr<std::unique_ptr<CheckpointReader>> OpenCheckpoint(absl::string_view,
                                                                   uint64_t) override {
    return Unimplemented();
  }
  absl::StatusOr<std::string> FetchDatasetFile(absl::string_view, absl::string_view) override {
    return Unimplemented();
  }

 private:
  static absl::Status Unimplemented() { return absl::UnimplementedError("stub"); }
  WorkerStatus Status(std::string worker_id) const {
    WorkerStatus status;
    status.worker_id = std::move(worker_id);
    status.lease_expiry = clock_->Now() + lease_;
    status.generation = generation;
    status.rollback_generation = rollback_generation;
    status.member = true;
    status.job_state = v1::JOB_STATE_RUNNING;
    return status;
  }

  Clock* const clock_;  // not owned
  const absl::Duration lease_;
  absl::Mutex mu_;
  std::vector<absl::Time> heartbeats_ ABSL_GUARDED_BY(mu_);
  std::vector<ProgressReport> reports_ ABSL_GUARDED_BY(mu_);
};

SessionOptions Options(Clock* clock, absl::Duration heartbeat_interval) {
  SessionOptions options;
  options.job_id = "job";
  options.worker_id = "w-1";
  options.endpoint = "127.0.0.1:1";
  options.heartbeat_interval = heartbeat_interval;
  options.outage_tolerance = absl::Seconds(30);
  options.clock = clock;
  return options;
}

// Waits (in real time, bounded) until `done` holds.
template <typename Predicate>
bool Eventually(Predicate done) {
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  while (!done()) {
    if (absl::Now() > give_up) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

TEST(Session, TimingsFollowTheLeaseWithTheOptionAsUpperBound) {
  SimulatedClock clock;
  {
    StubClient client(&clock, absl::Seconds(3));
    Session session(&client, Options(&clock, absl::Seconds(5)));
    // No lease known yet: the option and the default.
    EXPECT_EQ(session.HeartbeatInterval(), absl::Seconds(5));
    EXPECT_EQ(session.LeaseWait(), kDefaultLeaseWait);
    ASSERT_TRUE(session.Join().ok());
    EXPECT_EQ(session.lease(), absl::Seconds(3));
    EXPECT_EQ(session.HeartbeatInterval(), absl::Seconds(1));  // lease / 3
    EXPECT_EQ(session.LeaseWait(), absl::Seconds(4));          // lease + heartbeat
  }
  {
    StubClient client(&clock, absl::Seconds(10));
    Session session(&client, Options(&clock, absl::Milliseconds(500)));
    ASSERT_TRUE(session.Join().ok());
    EXPECT_EQ(session.HeartbeatInterval(), absl::Milliseconds(500));  // the option bounds it
    EXPECT_EQ(session.LeaseWait(), absl::Milliseconds(10500));
  }
}

TEST(Session, HeartbeatsComeEveryThirdOfTheLeaseOnTheSimulatedClock) {
  SimulatedClock clock;
  StubClient client(&clock, absl::Seconds(3));
  Session session(&client, Options(&clock, absl::Seconds(5)));
  ASSERT_TRUE(session.Join().ok());
  const absl::Time joined = clock.Now();
  session.StartHeartbeats([] {});
  for (int beat = 1; beat <= 3; ++beat) {
    ASSERT_TRUE(clock.WaitForWaiters(1));
    clock.AdvanceTo(joined + beat * absl::Seconds(1) - absl::Milliseconds(1));
    absl::SleepFor(absl::Milliseconds(20));  // (real time: give a wrong beat its chance)
    EXPECT_EQ(client.heartbeats().size(), static_cast<size_t>(beat - 1)) << "beat " << beat;
    clock.AdvanceTo(joined + beat * absl::Seconds(1));
    ASSERT_TRUE(
        Eventually([&] { return client.heartbeats().size() == static_cast<size_t>(beat); }));
    EXPECT_EQ(client.heartbeats().back(), joined + beat * absl::Seconds(1));
  }
  session.StopHeartbeats();
}

TEST(Session, WaitForNewGenerationLastsExactlyALeasesWorth) {
  SimulatedClock clock;
  StubClient client(&clock, absl::Seconds(3));
  Session session(&client, Options(&clock, absl::Seconds(5)));
  ASSERT_TRUE(session.Join().ok());
  const absl::Time until = clock.Now() + absl::Seconds(4);  // lease + lease / 3
  absl::Notification returned;
  std::thread waiter([&] {
    session.WaitForNewGeneration();
    returned.Notify();
  });
  ASSERT_TRUE(clock.WaitForWaiters(1));
  clock.AdvanceTo(until - absl::Milliseconds(1));
  absl::SleepFor(absl::Milliseconds(20));
  EXPECT_FALSE(returned.HasBeenNotified());
  clock.AdvanceTo(until);
  EXPECT_TRUE(returned.WaitForNotificationWithTimeout(absl::Seconds(10)));
  waiter.join();
}

TEST(Session, AHeartbeatThatBringsARollbackEndsTheWaitAndAbortsTheGroup) {
  SimulatedClock clock;
  StubClient client(&clock, absl::Seconds(3));
  Session session(&client, Options(&clock, absl::Seconds(5)));
  ASSERT_TRUE(session.Join().ok());
  const absl::Time joined = clock.Now();
  std::atomic<int> group_lost{0};
  session.StartHeartbeats([&] { ++group_lost; });
  absl::Notification returned;
  std::thread waiter([&] {
    session.WaitForNewGeneration();
    returned.Notify();
  });
  client.generation = 2;
  client.rollback_generation = 2;
  ASSERT_TRUE(clock.WaitForWaiters(2));
  clock.AdvanceTo(joined + absl::Seconds(1));  // the first heartbeat
  ASSERT_TRUE(Eventually([&] { return group_lost.load() == 1; }));
  EXPECT_EQ(session.latest_generation(), 2u);
  EXPECT_EQ(session.heard_at(), joined + absl::Seconds(1));
  // The waiter notices at its next poll, long before a lease's worth.
  clock.AdvanceTo(joined + absl::Milliseconds(1100));
  EXPECT_TRUE(returned.WaitForNotificationWithTimeout(absl::Seconds(10)));
  waiter.join();
  session.StopHeartbeats();
}

// A regroup that only admits joiners: the members are inside one step, which
// each must finish (aborting it on some after others applied it splits the
// group). The wait still ends: the next generation is known.
TEST(Session, AHeartbeatThatBringsJoinersEndsTheWaitButAbortsNothing) {
  SimulatedClock clock;
  StubClient client(&clock, absl::Seconds(3));
  Session session(&client, Options(&clock, absl::Seconds(5)));
  ASSERT_TRUE(session.Join().ok());
  session.EnterGeneration(1);
  const absl::Time joined = clock.Now();
  std::atomic<int> group_lost{0};
  session.StartHeartbeats([&] { ++group_lost; });
  absl::Notification returned;
  std::thread waiter([&] {
    session.WaitForNewGeneration();
    returned.Notify();
  });
  client.generation = 2;  // rollback_generation stays 1
  ASSERT_TRUE(clock.WaitForWaiters(2));
  clock.AdvanceTo(joined + absl::Seconds(1));  // the first heartbeat
  ASSERT_TRUE(Eventually([&] { return session.latest_generation() == 2; }));
  clock.AdvanceTo(joined + absl::Milliseconds(1100));
  EXPECT_TRUE(returned.WaitForNotificationWithTimeout(absl::Seconds(10)));
  waiter.join();
  // A later heartbeat of the same joiners' generation changes nothing either.
  ASSERT_TRUE(clock.WaitForWaiters(1));
  clock.AdvanceTo(joined + absl::Seconds(2));
  ASSERT_TRUE(Eventually([&] { return client.heartbeats().size() == 2; }));
  session.StopHeartbeats();
  EXPECT_EQ(group_lost.load(), 0);
  EXPECT_EQ(session.generation(), 1u);
}

TEST(Session, AWorkerCountedDeadMustRejoin) {
  SimulatedClock clock;
  StubClient client(&clock, absl::Seconds(3));
  Session session(&client, Options(&clock, absl::Seconds(5)));
  ASSERT_TRUE(session.Join().ok());
  std::atomic<int> group_lost{0};
  client.counts_worker_dead = true;
  session.StartHeartbeats([&] { ++group_lost; });
  ASSERT_TRUE(clock.WaitForWaiters(1));
  clock.AdvanceBy(absl::Seconds(1));
  ASSERT_TRUE(Eventually([&] { return session.must_rejoin(); }));
  EXPECT_EQ(group_lost.load(), 1);
  session.StopHeartbeats();
  client.counts_worker_dead = false;
  client.generation = 5;
  ASSERT_TRUE(session.Rejoin().ok());
  EXPECT_FALSE(session.must_rejoin());
  EXPECT_EQ(session.latest_generation(), 5u);
}

TEST(Session, OutageToleranceExpiresExactlyAtItsDeadlineAndReportsWaitMeanwhile) {
  SimulatedClock clock;
  StubClient client(&clock, absl::Seconds(3));
  Session session(&client, Options(&clock, absl::Seconds(5)));
  ASSERT_TRUE(session.Join().ok());
  const absl::Time seen = clock.Now();
  client.unreachable = true;
  session.Queue(session.Report(/*shard=*/4, /*offset=*/64, /*step=*/1));

  clock.AdvanceTo(seen + absl::Seconds(30));  // the tolerance, to the nanosecond
  auto ended = session.EndStep(1);
  ASSERT_TRUE(ended.ok()) << ended.status();
  EXPECT_FALSE(ended->has_value());  // tolerated: training goes on
  EXPECT_TRUE(session.CheckOutage().ok());

  clock.AdvanceTo(seen + absl::Seconds(30) + absl::Nanoseconds(1));
  EXPECT_EQ(session.CheckOutage().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(session.EndStep(1).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(client.reports().empty());

  // Back: the buffered report goes first, then the step ends.
  client.unreachable = false;
  ended = session.EndStep(1);
  ASSERT_TRUE(ended.ok()) << ended.status();
  ASSERT_TRUE(ended->has_value());
  ASSERT_EQ(client.reports().size(), 1u);
  EXPECT_EQ(client.reports()[0].shard, 4u);
  EXPECT_EQ(client.reports()[0].offset, 64u);
  EXPECT_TRUE(session.CheckOutage().ok());
}

TEST(Session, WithoutTheCoordinatorAWorkerRunsAtMostTheUnacknowledgedLimitAhead) {
  SimulatedClock clock;
  StubClient client(&clock, absl::Seconds(3));
  Session session(&client, Options(&clock, absl::Seconds(5)));
  ASSERT_TRUE(session.Join().ok());
  client.unreachable = true;
  // Short of the limit, training goes on without the coordinator.
  for (uint64_t step = 1; step < kMaxUnacknowledgedSteps; ++step) {
    auto ended = session.EndStep(step);
    ASSERT_TRUE(ended.ok()) << ended.status();
    EXPECT_FALSE(ended->has_value()) << "step " << step;
  }
  // At the limit it waits for the coordinator (the coordinator refuses
  // steps further ahead), however much time passes within the tolerance.
  absl::StatusOr<std::optional<StepResult>> ended;
  absl::Notification returned;
  std::thread stepper([&] {
    ended = session.EndStep(kMaxUnacknowledgedSteps);
    returned.Notify();
  });
  for (int i = 0; i < 20; ++i) {
    clock.AdvanceBy(absl::Seconds(1));
    EXPECT_FALSE(returned.WaitForNotificationWithTimeout(absl::Milliseconds(5)))
        << "returned after " << i + 1 << " s without the coordinator";
  }
  client.unreachable = false;
  while (!returned.WaitForNotificationWithTimeout(absl::Milliseconds(5))) {
    clock.AdvanceBy(absl::Milliseconds(200));
  }
  stepper.join();
  ASSERT_TRUE(ended.ok()) << ended.status();
  EXPECT_TRUE(ended->has_value());
}

TEST(Session, RetryGivesUpAtTheOutageTolerance) {
  SimulatedClock clock;
  StubClient client(&clock, absl::Seconds(3));
  client.unreachable = true;
  Session session(&client, Options(&clock, absl::Seconds(5)));
  const absl::Time start = clock.Now();
  absl::StatusOr<WorkerStatus> joined;
  absl::Notification returned;
  std::thread joiner([&] {
    joined = session.Join();
    returned.Notify();
  });
  // After each attempt, once the joiner sleeps its backoff (50 ms doubling,
  // at most 2 s), move time on by 2 s: one wake per attempt, attempts at
  // 0, 2, ..., 30 s, and the one at 30 s is the last.
  int attempts = 0;
  while (true) {
    ASSERT_TRUE(Eventually([&] {
      return returned.HasBeenNotified() || (client.joins > attempts && clock.NumWaiters() == 1);
    }));
    if (returned.HasBeenNotified()) break;
    attempts = client.joins;
    clock.AdvanceBy(absl::Seconds(2));
  }
  joiner.join();
  EXPECT_EQ(joined.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(clock.Now(), start + absl::Seconds(30));
  EXPECT_EQ(client.joins.load(), 16);
}

}  // namespace
}  // namespace worker_internal
}  // namespace potluck
