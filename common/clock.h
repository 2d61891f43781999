// Clock: the one way potluck code reads time and waits for it.
//
// Leases, heartbeats, timeouts and retries take a Clock* instead of calling
// absl::Now(), so tests drive them with a SimulatedClock: advancing simulated
// time by an hour takes microseconds, and a deadline fires exactly when
// simulated time reaches it, never earlier.
//
// Ownership: callers keep the Clock alive for as long as anything holds the
// pointer. Clock::Real() is a process-wide singleton that is never destroyed.
// Thread-safety: every method of both implementations is thread-safe.
#ifndef POTLUCK_COMMON_CLOCK_H_
#define POTLUCK_COMMON_CLOCK_H_

#include <cstdint>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace potluck {

class Clock {
 public:
  virtual ~Clock() = default;

  // The wall-clock time, real or simulated.
  virtual absl::Time Now() const = 0;

  // Blocks until Now() >= deadline.
  virtual void SleepUntil(absl::Time deadline) = 0;
  void SleepFor(absl::Duration duration) { SleepUntil(Now() + duration); }

  // Like absl::Mutex::AwaitWithDeadline, but against this clock: with `mu`
  // held, waits until `condition` is true or Now() >= deadline, whichever is
  // first, and returns the condition's value. `mu` is held again on return.
  // Threads that change the condition must do so while holding `mu`.
  virtual bool AwaitWithDeadline(absl::Mutex* mu, const absl::Condition& condition,
                                 absl::Time deadline) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) = 0;

  // The process-wide real clock.
  static Clock* Real();
};

// A clock whose time moves only when a test moves it.
//
// Sleepers wake as soon as AdvanceTo/AdvanceBy passes their deadline.
// AwaitWithDeadline also re-checks its condition whenever another thread
// releases `mu` (as absl::Mutex does), and notices simulated time passing its
// deadline within `poll_interval` of real time: absl::Mutex offers no way to
// wake a waiter from outside without taking its mutex, which could deadlock a
// test that advances time while holding it.
class SimulatedClock final : public Clock {
 public:
  explicit SimulatedClock(absl::Time start = absl::UnixEpoch() + absl::Hours(24 * 365 * 50),
                          absl::Duration poll_interval = absl::Milliseconds(1));

  absl::Time Now() const override;
  void SleepUntil(absl::Time deadline) override;
  bool AwaitWithDeadline(absl::Mutex* mu, const absl::Condition& condition, absl::Time deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) override;

  // Moves time forward (never backward: an earlier `time` is ignored) and
  // wakes every sleeper whose deadline has passed.
  void AdvanceTo(absl::Time time);
  void AdvanceBy(absl::Duration duration);

  // Blocks (in real time) until at least `count` threads are waiting on this
  // clock, so a test can advance time knowing who is asleep. Returns false if
  // that did not happen within `real_timeout`.
  bool WaitForWaiters(int count, absl::Duration real_timeout = absl::Seconds(10));
  int NumWaiters() const;

 private:
  const absl::Duration poll_interval_;
  mutable absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
  int waiters_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace potluck

#endif  // POTLUCK_COMMON_CLOCK_H_
