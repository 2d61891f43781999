// Session: this worker's standing with the coordinator, on an injected Clock.
//
// It joins (and rejoins once counted dead), renews the lease from its own
// heartbeat thread, tracks the generations it hears of, finds each
// generation's group view (Rendezvous), buffers progress reports while the
// coordinator is unreachable and says when that outage has lasted too long.
//
// Timings follow the job's lease (learned at Join and every Heartbeat as
// lease_expiry - now): heartbeats every min(heartbeat_interval, lease / 3),
// and "a lease's worth" (how long a survivor waits for the coordinator to
// notice a dead peer) is lease + one heartbeat interval. Before a lease is
// known (or when the coordinator's clock is too far off ours to derive one)
// the options' heartbeat_interval and kDefaultLeaseWait apply.
//
// FinalStep() is the one place the training loop reads the job's last step.
//
// Thread-safety: the heartbeat thread and the training thread share it.
// Stop(), the generation accessors, the timings and FinalStep() may be
// called from any thread; the report buffer and Join/Rendezvous belong to
// the training thread.
#ifndef POTLUCK_WORKER_INTERNAL_SESSION_H_
#define POTLUCK_WORKER_INTERNAL_SESSION_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

#include "common/clock.h"
#include "coordinator/client.h"

namespace potluck {
namespace worker_internal {

// Used until the coordinator has told this worker its lease.
inline constexpr absl::Duration kDefaultLeaseWait = absl::Seconds(15);
// A derived lease longer than this is a clock skew between the coordinator
// and this machine, not a lease: the defaults apply.
inline constexpr absl::Duration kMaxDerivedLease = absl::Minutes(10);

struct SessionOptions {
  std::string job_id;
  std::string token;
  std::string worker_id;
  std::string endpoint;  // where peers reach this worker ("host:port")
  // Upper bound of the heartbeat interval (the lease may ask for less).
  absl::Duration heartbeat_interval = absl::Milliseconds(500);
  // How long to keep going without the coordinator before giving up.
  absl::Duration outage_tolerance = absl::Minutes(2);
  Clock* clock = Clock::Real();  // not owned
};

class Session {
 public:
  // `client` is not owned and must outlive the session.
  Session(CoordinatorClient* client, SessionOptions options);
  ~Session();  // stops the heartbeats
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Joins the job, retrying through an outage; the generation it reports
  // becomes the one to form. kOutOfRange: the job has finished.
  absl::StatusOr<WorkerStatus> Join();
  // Whether the coordinator counts this worker dead (it must Join again).
  bool must_rejoin() const { return must_rejoin_; }
  absl::Status Rejoin();

  // Heartbeats from a thread of the session's until StopHeartbeats().
  // `on_group_lost` runs on that thread when the heartbeat shows that what
  // the current generation computes no longer counts (a newer generation
  // rolled back, or this worker is counted dead). A newer generation that
  // only admits joiners is noted, not acted on: the group finishes its step.
  void StartHeartbeats(std::function<void()> on_group_lost);
  void StopHeartbeats();

  // The view of the newest generation once the coordinator has formed it,
  // waiting through the join window and coordinator outages. kCancelled
  // after Stop(); kFailedPrecondition/kNotFound: counted dead (must_rejoin).
  absl::StatusOr<GroupView> Rendezvous();
  // This worker now trains in `generation`.
  void EnterGeneration(uint64_t generation);
  uint64_t generation() const { return generation_; }
  uint64_t latest_generation() const { return latest_generation_; }
  bool generation_changed() const { return latest_generation_ != generation_; }
  // Records a generation heard of (from EndStep or a heartbeat).
  void NoteGeneration(uint64_t generation);
  // When the newest generation was first heard of.
  absl::Time heard_at() const;

  // Waits until a newer generation is heard of, a rejoin is needed, Stop(),
  // or a lease's worth of time has passed.
  void WaitForNewGeneration();

  // Retries `call` on kUnavailable with backoff, up to the outage tolerance.
  template <typename Call>
  auto Retry(Call call) -> decltype(call());

  // Progress reports, buffered in order.
  ProgressReport Report(uint32_t shard, uint64_t offset, uint64_t step) const;
  void Queue(ProgressReport report) { pending_.push_back(std::move(report)); }
  void DropReports() { pending_.clear(); }
  // Sends the buffered reports in order; kUnavailable (kept for later) when
  // the coordinator cannot be reached, kAborted (dropped) after a rollback.
  absl::Status FlushReports();
  // Flushes the reports and ends `step`. nullopt: the coordinator could not
  // be reached but the outage is still tolerated (training goes on), for
  // up to kMaxUnacknowledgedSteps steps past the last one it acknowledged;
  // then it waits for the coordinator (or the outage tolerance).
  absl::StatusOr<std::optional<StepResult>> EndStep(uint64_t step);
  // kUnavailable once the coordinator has been unreachable for longer than
  // the outage tolerance.
  absl::Status CheckOutage() const;

  // The lease the coordinator grants (zero before it is known), and the
  // timings derived from it (see the header comment).
  absl::Duration lease() const;
  absl::Duration HeartbeatInterval() const;
  absl::Duration LeaseWait() const;

  // The job's final step (sync: steps; diloco: inner steps).
  uint64_t FinalStep() const { return final_step_; }
  void SetFinalStep(uint64_t step) { final_step_ = step; }

  void Stop() { stop_ = true; }
  bool stopping() const { return stop_; }
  // The job's owner cancelled it (a heartbeat, a step's answer or a refused
  // call said so): stop, leave, and exit 0 saying why.
  void StopCancelled() {
    cancelled_ = true;
    stop_ = true;
  }
  bool cancelled() const { return cancelled_; }

  Clock* clock() const { return options_.clock; }
  CoordinatorClient* client() const { return client_; }
  const std::string& job_id() const { return options_.job_id; }
  const std::string& worker_id() const { return options_.worker_id; }

 private:
  void Heartbeats(const std::function<void()>& on_group_lost);
  // One try of EndStep.
  absl::StatusOr<std::optional<StepResult>> TryEndStep(uint64_t step);
  void Seen(const WorkerStatus& status);

  CoordinatorClient* const client_;  // not owned
  const SessionOptions options_;
  std::atomic<uint64_t> generation_{0};         // the one this worker trains in
  std::atomic<uint64_t> latest_generation_{0};  // the newest it has heard of
  std::atomic<uint64_t> final_step_{0};
  std::atomic<bool> stop_{false};
  std::atomic<bool> cancelled_{false};
  std::atomic<bool> must_rejoin_{false};

  mutable absl::Mutex mu_;
  absl::Time coordinator_seen_ ABSL_GUARDED_BY(mu_);
  absl::Time heard_at_ ABSL_GUARDED_BY(mu_);
  absl::Duration lease_ ABSL_GUARDED_BY(mu_) = absl::ZeroDuration();

  absl::Mutex heartbeat_mu_;
  bool heartbeat_stop_ ABSL_GUARDED_BY(heartbeat_mu_) = false;
  std::thread heartbeat_;

  std::deque<ProgressReport> pending_;  // training thread only
  // The step the coordinator last acknowledged (an EndStep it answered, or
  // the generation's resume step); training thread only.
  uint64_t acknowledged_step_ = 0;
};

template <typename Call>
auto Session::Retry(Call call) -> decltype(call()) {
  absl::Duration backoff = absl::Milliseconds(50);
  const absl::Time give_up = clock()->Now() + options_.outage_tolerance;
  while (true) {
    auto result = call();
    if (result.ok() || result.status().code() != absl::StatusCode::kUnavailable ||
        clock()->Now() >= give_up || stop_) {
      return result;
    }
    clock()->SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(2));
  }
}

}  // namespace worker_internal
}  // namespace potluck

#endif  // POTLUCK_WORKER_INTERNAL_SESSION_H_
