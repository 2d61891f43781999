#include "common/clock.h"

namespace potluck {

namespace {

class RealClock final : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }

  void SleepUntil(absl::Time deadline) override {
    const absl::Duration left = deadline - absl::Now();
    if (left > absl::ZeroDuration()) absl::SleepFor(left);
  }

  bool AwaitWithDeadline(absl::Mutex* mu, const absl::Condition& condition,
                         absl::Time deadline) override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return mu->AwaitWithDeadline(condition, deadline);
  }
};

}  // namespace

Clock* Clock::Real() {
  static Clock* const clock = new RealClock();
  return clock;
}

SimulatedClock::SimulatedClock(absl::Time start, absl::Duration poll_interval)
    : poll_interval_(poll_interval), now_(start) {}

absl::Time SimulatedClock::Now() const {
  absl::MutexLock lock(&mu_);
  return now_;
}

void SimulatedClock::SleepUntil(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  ++waiters_;
  auto reached = [this, deadline]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return now_ >= deadline; };
  mu_.Await(absl::Condition(&reached));
  --waiters_;
}

bool SimulatedClock::AwaitWithDeadline(absl::Mutex* mu, const absl::Condition& condition,
                                       absl::Time deadline) {
  {
    absl::MutexLock lock(&mu_);
    ++waiters_;
  }
  // Polls simulated time while waiting on the caller's mutex; see the class
  // comment for why it cannot be woken directly.
  bool satisfied = condition.Eval();
  while (!satisfied && Now() < deadline) {
    satisfied = mu->AwaitWithTimeout(condition, poll_interval_);
  }
  {
    absl::MutexLock lock(&mu_);
    --waiters_;
  }
  return satisfied;
}

void SimulatedClock::AdvanceTo(absl::Time time) {
  absl::MutexLock lock(&mu_);
  if (time > now_) now_ = time;
}

void SimulatedClock::AdvanceBy(absl::Duration duration) {
  absl::MutexLock lock(&mu_);
  if (duration > absl::ZeroDuration()) now_ += duration;
}

bool SimulatedClock::WaitForWaiters(int count, absl::Duration real_timeout) {
  absl::MutexLock lock(&mu_);
  auto enough = [this, count]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return waiters_ >= count; };
  return mu_.AwaitWithTimeout(absl::Condition(&enough), real_timeout);
}

int SimulatedClock::NumWaiters() const {
  absl::MutexLock lock(&mu_);
  return waiters_;
}

}  // namespace potluck
