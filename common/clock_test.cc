#include "common/clock.h"

#include <atomic>
#include <thread>

#include <gtest/gtest.h>

namespace potluck {
namespace {

const absl::Time kStart = absl::FromUnixSeconds(1'700'000'000);

// Gives a wrongly woken thread real time to show itself.
void LetOtherThreadsRun() { absl::SleepFor(absl::Milliseconds(30)); }

TEST(SimulatedClock, TimeMovesOnlyForwardAndOnlyWhenAdvanced) {
  SimulatedClock clock(kStart);
  EXPECT_EQ(clock.Now(), kStart);
  LetOtherThreadsRun();
  EXPECT_EQ(clock.Now(), kStart);
  clock.AdvanceBy(absl::Seconds(5));
  EXPECT_EQ(clock.Now(), kStart + absl::Seconds(5));
  clock.AdvanceTo(kStart + absl::Seconds(1));  // backwards: ignored
  EXPECT_EQ(clock.Now(), kStart + absl::Seconds(5));
  clock.AdvanceBy(-absl::Seconds(1));  // backwards: ignored
  EXPECT_EQ(clock.Now(), kStart + absl::Seconds(5));
}

TEST(SimulatedClock, SleepWakesExactlyWhenTimeReachesTheDeadline) {
  SimulatedClock clock(kStart);
  const absl::Time deadline = kStart + absl::Seconds(10);
  std::atomic<bool> woke{false};
  absl::Time woke_at;
  std::thread sleeper([&] {
    clock.SleepUntil(deadline);
    woke_at = clock.Now();
    woke = true;
  });
  ASSERT_TRUE(clock.WaitForWaiters(1));

  clock.AdvanceTo(deadline - absl::Nanoseconds(1));
  LetOtherThreadsRun();
  EXPECT_FALSE(woke) << "woke before its deadline";
  EXPECT_EQ(clock.NumWaiters(), 1);

  clock.AdvanceTo(deadline);
  sleeper.join();
  EXPECT_TRUE(woke);
  EXPECT_EQ(woke_at, deadline);
  EXPECT_EQ(clock.NumWaiters(), 0);
}

TEST(SimulatedClock, AwaitWithDeadlineTimesOutExactlyAtTheDeadline) {
  SimulatedClock clock(kStart);
  absl::Mutex mu;
  bool ready = false;  // never set: only the deadline can end the wait
  const absl::Time deadline = kStart + absl::Minutes(30);
  std::atomic<int> result{-1};
  absl::Time returned_at;
  std::thread waiter([&] {
    absl::MutexLock lock(&mu);
    result = clock.AwaitWithDeadline(&mu, absl::Condition(&ready), deadline) ? 1 : 0;
    returned_at = clock.Now();
  });
  ASSERT_TRUE(clock.WaitForWaiters(1));

  clock.AdvanceTo(deadline - absl::Nanoseconds(1));
  LetOtherThreadsRun();
  EXPECT_EQ(result, -1) << "returned before its deadline";

  clock.AdvanceTo(deadline);
  waiter.join();
  EXPECT_EQ(result, 0);
  EXPECT_EQ(returned_at, deadline);
}

TEST(SimulatedClock, AwaitWithDeadlineReturnsAsSoonAsTheConditionHolds) {
  SimulatedClock clock(kStart);
  absl::Mutex mu;
  bool ready = false;
  std::atomic<int> result{-1};
  std::thread waiter([&] {
    absl::MutexLock lock(&mu);
    result = clock.AwaitWithDeadline(&mu, absl::Condition(&ready), kStart + absl::Hours(1)) ? 1 : 0;
  });
  ASSERT_TRUE(clock.WaitForWaiters(1));
  {
    absl::MutexLock lock(&mu);
    ready = true;
  }
  waiter.join();
  EXPECT_EQ(result, 1);
  EXPECT_EQ(clock.Now(), kStart) << "no simulated time should have passed";
}

TEST(SimulatedClock, PastDeadlinesReturnImmediately) {
  SimulatedClock clock(kStart);
  clock.SleepUntil(kStart - absl::Seconds(1));
  clock.SleepFor(absl::ZeroDuration());
  absl::Mutex mu;
  bool ready = false;
  absl::MutexLock lock(&mu);
  EXPECT_FALSE(clock.AwaitWithDeadline(&mu, absl::Condition(&ready), kStart));
}

TEST(SimulatedClock, OneAdvanceWakesEverySleeperWhoseDeadlinePassed) {
  SimulatedClock clock(kStart);
  absl::Mutex mu;
  int woken = 0;  // guarded by mu
  auto woken_now = [&] {
    absl::MutexLock lock(&mu);
    return woken;
  };
  std::vector<std::thread> sleepers;
  for (int i = 1; i <= 4; ++i) {
    sleepers.emplace_back([&clock, &mu, &woken, i] {
      clock.SleepUntil(kStart + absl::Seconds(i));
      absl::MutexLock lock(&mu);
      ++woken;
    });
  }
  ASSERT_TRUE(clock.WaitForWaiters(4));
  clock.AdvanceBy(absl::Milliseconds(2500));  // passes the deadlines at 1 s and 2 s
  {
    // The two due sleepers left SleepUntil (and the waiter count) before
    // counting themselves, so once both have counted, NumWaiters() can only
    // differ from 2 if a sleeper that was not due woke too.
    absl::MutexLock lock(&mu);
    auto two_woke = [&woken] { return woken >= 2; };
    ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(&two_woke), absl::Seconds(10)))
        << "the sleepers whose deadlines passed did not wake";
  }
  LetOtherThreadsRun();  // only gives a wrongly woken sleeper time to show itself
  EXPECT_EQ(woken_now(), 2);
  EXPECT_EQ(clock.NumWaiters(), 2);
  clock.AdvanceBy(absl::Seconds(10));
  for (std::thread& t : sleepers) t.join();
  EXPECT_EQ(woken_now(), 4);
}

TEST(RealClock, AwaitWithDeadlineWaitsInRealTime) {
  Clock* clock = Clock::Real();
  absl::Mutex mu;
  bool ready = false;
  const absl::Time start = clock->Now();
  absl::MutexLock lock(&mu);
  EXPECT_FALSE(
      clock->AwaitWithDeadline(&mu, absl::Condition(&ready), start + absl::Milliseconds(50)));
  EXPECT_GE(clock->Now() - start, absl::Milliseconds(50));
}

}  // namespace
}  // namespace potluck
