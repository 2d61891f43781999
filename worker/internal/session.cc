#include "worker/internal/session.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

#include "common/failure.h"
#include "common/status.h"

namespace potluck {
namespace worker_internal {

namespace {

constexpr absl::Duration kPoll = absl::Milliseconds(20);

}  // namespace

Session::Session(CoordinatorClient* client, SessionOptions options)
    : client_(client), options_(std::move(options)) {
  absl::MutexLock lock(&mu_);
  coordinator_seen_ = clock()->Now();
  heard_at_ = coordinator_seen_;
}

Session::~Session() { StopHeartbeats(); }

absl::StatusOr<WorkerStatus> Session::Join() {
  const JoinRequest join{options_.job_id, options_.token, options_.worker_id, options_.endpoint};
  ASSIGN_OR_RETURN(WorkerStatus status, Retry([&] { return client_->Join(join); }));
  Seen(status);
  generation_ = status.generation;
  latest_generation_ = status.generation;
  return status;
}

absl::Status Session::Rejoin() {
  must_rejoin_ = false;
  const JoinRequest join{options_.job_id, options_.token, options_.worker_id, options_.endpoint};
  ASSIGN_OR_RETURN(WorkerStatus status, Retry([&] { return client_->Join(join); }));
  Seen(status);
  latest_generation_ = status.generation;
  return absl::OkStatus();
}

void Session::Seen(const WorkerStatus& status) {
  const absl::Time now = clock()->Now();
  absl::MutexLock lock(&mu_);
  coordinator_seen_ = now;
  const absl::Duration lease = status.lease_expiry - now;
  if (lease > absl::ZeroDuration() && lease <= kMaxDerivedLease) lease_ = lease;
}

void Session::StartHeartbeats(std::function<void()> on_group_lost) {
  {
    absl::MutexLock lock(&heartbeat_mu_);
    heartbeat_stop_ = false;
  }
  heartbeat_ =
      std::thread([this, on_group_lost = std::move(on_group_lost)] { Heartbeats(on_group_lost); });
}

void Session::StopHeartbeats() {
  if (!heartbeat_.joinable()) return;
  {
    absl::MutexLock lock(&heartbeat_mu_);
    heartbeat_stop_ = true;
  }
  heartbeat_.join();
}

void Session::Heartbeats(const std::function<void()>& on_group_lost) {
  while (true) {
    {
      absl::MutexLock lock(&heartbeat_mu_);
      const absl::Time next = clock()->Now() + HeartbeatInterval();
      if (clock()->AwaitWithDeadline(&heartbeat_mu_, absl::Condition(&heartbeat_stop_), next)) {
        return;
      }
    }
    auto status = client_->Heartbeat(options_.job_id, options_.worker_id);
    if (status.ok()) {
      Seen(*status);
      NoteGeneration(status->generation);
      if (status->job_state == v1::JOB_STATE_CANCELLED) {
        StopCancelled();
        on_group_lost();  // nothing the group computes counts any more
        continue;
      }
      // A rollback voids what this group computes: stop its collectives
      // now. A regroup that only admits joiners is not a reason to: the
      // members are inside one step, and a step aborted on some members
      // after others completed it would leave the group split (those
      // members' samples trained in it, then again in the next one). Each
      // learns of that regroup at the step's end (EndStep).
      if (status->rollback_generation > generation_) on_group_lost();
    } else if (status.status().code() == absl::StatusCode::kFailedPrecondition ||
               status.status().code() == absl::StatusCode::kNotFound) {
      must_rejoin_ = true;  // the coordinator counts this worker dead
      on_group_lost();
    }
  }
}

void Session::NoteGeneration(uint64_t generation) {
  absl::MutexLock lock(&mu_);
  if (generation > latest_generation_) {
    latest_generation_ = generation;
    heard_at_ = clock()->Now();
  }
}

absl::Time Session::heard_at() const {
  absl::MutexLock lock(&mu_);
  return heard_at_;
}

void Session::EnterGeneration(uint64_t generation) {
  generation_ = generation;
  latest_generation_ = std::max(latest_generation_.load(), generation);
}

absl::StatusOr<GroupView> Session::Rendezvous() {
  uint64_t generation = latest_generation_;
  while (true) {
    if (stop_) return absl::CancelledError("stopping");
    auto r = client_->Rendezvous(options_.job_id, options_.worker_id, generation);
    if (!r.ok()) {
      const absl::StatusCode code = r.status().code();
      if (code == absl::StatusCode::kUnavailable) {
        clock()->SleepFor(kPoll * 10);
        continue;
      }
      if (FailedBecause(r.status(), Failure::kWaitingForAdmission)) {
        // In the join window: admitted at the group's next step boundary.
        clock()->SleepFor(kPoll * 5);
        generation = std::max(generation, latest_generation_.load());
        continue;
      }
      if (code == absl::StatusCode::kFailedPrecondition || code == absl::StatusCode::kNotFound) {
        must_rejoin_ = true;
      }
      return r.status();
    }
    if (r->state == RendezvousResult::State::kSuperseded) {
      generation = r->generation;
      continue;
    }
    if (r->state == RendezvousResult::State::kWaiting) {
      clock()->SleepFor(kPoll);
      continue;
    }
    acknowledged_step_ = r->view.resume_step;
    return r->view;
  }
}

void Session::WaitForNewGeneration() {
  const absl::Time until = clock()->Now() + LeaseWait();
  while (!stop_ && !must_rejoin_ && !generation_changed()) {
    const absl::Time now = clock()->Now();
    if (now >= until) return;
    clock()->SleepUntil(std::min(until, now + kPoll * 5));
  }
}

ProgressReport Session::Report(uint32_t shard, uint64_t offset, uint64_t step) const {
  const uint64_t generation = generation_;
  ProgressReport report;
  report.job_id = options_.job_id;
  report.worker_id = options_.worker_id;
  report.request_id =
      absl::StrCat(options_.worker_id, "-g", generation, "-s", step, "-", shard, "-", offset);
  report.generation = generation;
  report.shard = shard;
  report.offset = offset;
  report.step = step;
  return report;
}

absl::Status Session::FlushReports() {
  while (!pending_.empty()) {
    auto reported = client_->ReportProgress(pending_.front());
    if (!reported.ok()) {
      if (reported.status().code() == absl::StatusCode::kAborted) pending_.clear();
      return reported.status();
    }
    pending_.pop_front();
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<StepResult>> Session::EndStep(uint64_t step) {
  while (true) {
    ASSIGN_OR_RETURN(std::optional<StepResult> ended, TryEndStep(step));
    if (ended.has_value() || stop_ || step < acknowledged_step_ + kMaxUnacknowledgedSteps) {
      return ended;
    }
    // As far ahead of what the coordinator acknowledged as a member may run
    // (it refuses steps beyond): wait for it, within the outage tolerance.
    clock()->SleepFor(kPoll * 10);
  }
}

absl::StatusOr<std::optional<StepResult>> Session::TryEndStep(uint64_t step) {
  while (!pending_.empty()) {
    auto reported = client_->ReportProgress(pending_.front());
    if (reported.ok()) {
      pending_.pop_front();
      continue;
    }
    if (reported.status().code() == absl::StatusCode::kUnavailable) {
      RETURN_IF_ERROR(CheckOutage());
      return std::nullopt;  // keep training; the reports wait
    }
    if (reported.status().code() == absl::StatusCode::kAborted) {
      pending_.clear();  // rolled back: the new generation resumes elsewhere
      return reported.status();
    }
    return Annotate(reported.status(), "reporting progress");
  }
  auto ended = client_->EndStep(options_.job_id, options_.worker_id, step);
  if (!ended.ok()) {
    if (ended.status().code() == absl::StatusCode::kUnavailable) {
      RETURN_IF_ERROR(CheckOutage());
      return std::nullopt;
    }
    return Annotate(ended.status(), absl::StrCat("ending step ", step));
  }
  {
    absl::MutexLock lock(&mu_);
    coordinator_seen_ = clock()->Now();
  }
  acknowledged_step_ = std::max(acknowledged_step_, step);
  NoteGeneration(ended->generation);
  return *ended;
}

absl::Status Session::CheckOutage() const {
  absl::MutexLock lock(&mu_);
  if (clock()->Now() - coordinator_seen_ > options_.outage_tolerance) {
    return absl::UnavailableError(absl::StrCat("the coordinator has been unreachable for over ",
                                               absl::FormatDuration(options_.outage_tolerance)));
  }
  return absl::OkStatus();
}

absl::Duration Session::lease() const {
  absl::MutexLock lock(&mu_);
  return lease_;
}

absl::Duration Session::HeartbeatInterval() const {
  const absl::Duration lease = this->lease();
  if (lease <= absl::ZeroDuration()) return options_.heartbeat_interval;
  return std::min(options_.heartbeat_interval, lease / 3);
}

absl::Duration Session::LeaseWait() const {
  const absl::Duration lease = this->lease();
  if (lease <= absl::ZeroDuration()) return kDefaultLeaseWait;
  return lease + HeartbeatInterval();
}

}  // namespace worker_internal
}  // namespace potluck
