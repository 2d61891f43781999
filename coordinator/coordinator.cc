// The Coordinator facade: it owns the lock, authentication, job lookup and
// persistence, and leaves every decision to the parts in internal/:
//   membership  who is alive, who is a member, generations     (invariants 3, 4)
//   progress    shard leases, progress, step boundaries         (invariant 1)
//   commits     who may commit, what a commit changes           (invariant 2)
//   uploads     the bytes of a commit: whole, streamed, in parts
//   jobs        a job's life: submit, pause, cancel, extend
//   token_book  join and admin tokens                           (invariant 6)
//   recovery    reloading and reconciling on open               (invariant 5)
//   group_commit  acknowledged = durable, one synced write per group
// A call runs as WithJob(job, op): lock, evaluate expiries, run the part on
// the locked job, queue what changed for the group commit, unlock, and wait
// until it is durable.
#include "coordinator/coordinator.h"

#include <algorithm>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "google/protobuf/util/message_differencer.h"

#include "common/status.h"
#include "coordinator/internal/commits.h"
#include "coordinator/internal/group_commit.h"
#include "coordinator/internal/job_state.h"
#include "coordinator/internal/jobs.h"
#include "coordinator/internal/member_secret.h"
#include "coordinator/internal/membership.h"
#include "coordinator/internal/progress.h"
#include "coordinator/internal/recovery.h"
#include "coordinator/internal/state_db.h"
#include "coordinator/internal/token.h"
#include "coordinator/internal/token_book.h"
#include "coordinator/internal/uploads.h"
#include "job/job_spec.h"

namespace potluck {

namespace ci = coordinator_internal;
using ci::Job;

class Coordinator::Impl final : public ci::CommitGate {
 public:
  Impl(CoordinatorOptions options, std::unique_ptr<ci::StateDb> db,
       std::unique_ptr<CheckpointStore> checkpoints, ci::TokenBook tokens)
      : options_(std::move(options)),
        db_(std::move(db)),
        checkpoints_(std::move(checkpoints)),
        commit_(db_.get()),
        uploads_(this, checkpoints_.get(), options_.data_dir + "/uploads",
                 options_.max_checkpoint_bytes, options_.max_spool_bytes),
        tokens_(std::move(tokens)) {}

  // Rebuilds the jobs (recovery.h) and waits until the reconciled state is
  // durable.
  absl::Status Load() {
    uint64_t ticket = 0;
    {
      absl::MutexLock lock(&mu_);
      ASSIGN_OR_RETURN(jobs_, ci::LoadJobs(*db_, *checkpoints_, Now(), options_.restart_grace,
                                           options_.lease, options_.rendezvous_timeout));
      for (auto& [id, job] : jobs_) {
        ASSIGN_OR_RETURN(ticket, Flush(*job));
      }
    }
    return commit_.AwaitDurable(ticket);
  }

  // Runs `op` on the job under the lock, after evaluating expiries, then
  // persists what changed. `op` gets (Job&, const CallContext&) and returns
  // absl::Status or absl::StatusOr<T>. With `done`, returns at once and
  // passes the result to `done` once it is durable (on the committer
  // thread, or inline).
  template <typename Op, typename Result = std::invoke_result_t<Op, Job&, const ci::CallContext&>>
  Result WithJob(absl::string_view job_id, Op&& op, std::function<void(Result)> done = nullptr)
      ABSL_LOCKS_EXCLUDED(mu_) {
    uint64_t ticket = 0;
    Result result = [&]() -> Result {
      absl::MutexLock lock(&mu_);
      RETURN_IF_ERROR(broken_);
      ASSIGN_OR_RETURN(Job * job, FindJob(job_id));
      const ci::CallContext ctx = Context();
      RETURN_IF_ERROR(ci::EvaluateExpiries(*job, ctx));
      Result answer = op(*job, ctx);
      ASSIGN_OR_RETURN(ticket, Flush(*job));
      return answer;
    }();
    // Acknowledged = durable: wait (without the lock) for the group commit.
    if (done) {
      commit_.OnDurable(ticket, [result, done = std::move(done)](const absl::Status& durable) {
        if (durable.ok()) {
          done(result);
        } else {
          done(durable);
        }
      });
      return result;
    }
    RETURN_IF_ERROR(commit_.AwaitDurable(ticket));
    return result;
  }

  // Evaluates every job (ListJobs, Tick) and waits until what changed is
  // durable; `visit` sees each job after its evaluation.
  absl::Status ForEachJob(const std::function<void(const Job&)>& visit) ABSL_LOCKS_EXCLUDED(mu_) {
    uint64_t ticket = 0;
    {
      absl::MutexLock lock(&mu_);
      RETURN_IF_ERROR(broken_);
      const ci::CallContext ctx = Context();
      for (auto& [id, job] : jobs_) {
        RETURN_IF_ERROR(ci::EvaluateExpiries(*job, ctx));
        ASSIGN_OR_RETURN(const uint64_t flushed, Flush(*job));
        ticket = std::max(ticket, flushed);
        visit(*job);
      }
    }
    return commit_.AwaitDurable(ticket);
  }

  absl::Status VerifyToken(absl::string_view job_id, absl::string_view token)
      ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return tokens_.Verify(job_id, token, Now()).status();
  }
  absl::Status VerifyAdmin(absl::string_view token) ABSL_LOCKS_EXCLUDED(mu_) {
    return VerifyToken(ci::kAdminJob, token);
  }

  absl::StatusOr<v1::JobStatus> SubmitJob(absl::string_view admin_token, const v1::JobSpec& spec);
  absl::StatusOr<std::string> CreateToken(absl::string_view job_id, absl::Duration ttl) {
    absl::MutexLock lock(&mu_);
    RETURN_IF_ERROR(broken_);
    return tokens_.Create(job_id, ttl, Now());
  }
  absl::Status RevokeToken(absl::string_view token_or_id) {
    absl::MutexLock lock(&mu_);
    RETURN_IF_ERROR(broken_);
    return tokens_.Revoke(token_or_id);
  }
  absl::StatusOr<WorkerStatus> Join(const JoinRequest& request);
  absl::StatusOr<v1::JobStatus> EvictWorker(absl::string_view job_id, absl::string_view worker_id,
                                            bool revoke_token) {
    return WithJob(job_id,
                   [&](Job& job, const ci::CallContext& ctx) -> absl::StatusOr<v1::JobStatus> {
                     ASSIGN_OR_RETURN(std::string token_id, ci::Evict(job, worker_id, ctx));
                     if (revoke_token && !token_id.empty()) {
                       mu_.AssertHeld();
                       RETURN_IF_ERROR(tokens_.Revoke(token_id));
                     }
                     return ci::JobStatusOf(job);
                   });
  }
  absl::Status AuthenticateMember(absl::string_view job_id, absl::string_view worker_id,
                                  absl::string_view secret) ABSL_LOCKS_EXCLUDED(mu_);

  // ci::CommitGate: the two locked halves of a checkpoint commit.
  absl::StatusOr<ci::PendingCommit> PrepareCommit(absl::string_view job_id,
                                                  absl::string_view worker_id, uint64_t step,
                                                  bool snapshot) override {
    return WithJob(job_id, [&](Job& job, const ci::CallContext& ctx) {
      return ci::CheckCommit(job, worker_id, step, snapshot, ctx);
    });
  }
  absl::Status FinishCommit(absl::string_view job_id, const ci::PendingCommit& pending,
                            absl::Status stored) override;

  ci::Uploads& uploads() { return uploads_; }
  CheckpointStore* checkpoints() { return checkpoints_.get(); }

 private:
  absl::Time Now() const { return options_.clock->Now(); }
  ci::CallContext Context() const {
    return ci::CallContext{Now(), options_.lease, options_.rendezvous_timeout};
  }
  absl::StatusOr<Job*> FindJob(absl::string_view job_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = jobs_.find(job_id);
    if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("job ", job_id, " not found"));
    return it->second.get();
  }
  // Queues what changed in `job` for the group commit. Returns the ticket
  // to await: of this write, or of the job's last record write if nothing
  // changed.
  absl::StatusOr<uint64_t> Flush(Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const CoordinatorOptions options_;
  const std::unique_ptr<ci::StateDb> db_;
  const std::unique_ptr<CheckpointStore> checkpoints_;
  ci::GroupCommit commit_;  // lock order: mu_, then the group commit's
  ci::Uploads uploads_;     // takes mu_ through PrepareCommit/FinishCommit only

  absl::Mutex mu_;
  ci::TokenBook tokens_ ABSL_GUARDED_BY(mu_);
  ci::JobMap jobs_ ABSL_GUARDED_BY(mu_);
  // A failed state write: memory is ahead of disk, so every later call fails
  // until the coordinator is reopened (it then reloads what is on disk).
  absl::Status broken_ ABSL_GUARDED_BY(mu_);
};

absl::StatusOr<uint64_t> Coordinator::Impl::Flush(Job& job) {
  bool record_changed = false;
  std::vector<ci::StateWrite> puts = ci::TakeChanges(job, &record_changed);
  const bool nothing = puts.empty();
  // Queued in lock order of mu_, so the group commit writes them in the
  // order the state changed.
  const absl::StatusOr<uint64_t> ticket = commit_.Queue(std::move(puts));
  if (!ticket.ok()) {
    broken_ = ticket.status();
    return ticket.status();
  }
  if (nothing) return job.state_ticket;
  if (record_changed) job.state_ticket = *ticket;
  return *ticket;
}

absl::StatusOr<v1::JobStatus> Coordinator::Impl::SubmitJob(absl::string_view admin_token,
                                                           const v1::JobSpec& spec) {
  {
    absl::MutexLock lock(&mu_);
    RETURN_IF_ERROR(broken_);
    RETURN_IF_ERROR(tokens_.Verify(ci::kAdminJob, admin_token, Now()).status());
  }
  RETURN_IF_ERROR(ValidateJobSpec(spec));
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(spec.job_id());
    if (it != jobs_.end()) {
      if (google::protobuf::util::MessageDifferencer::Equals(it->second->record.spec(), spec)) {
        return ci::JobStatusOf(*it->second);
      }
      return absl::AlreadyExistsError(
          absl::StrCat("job_id: job ", spec.job_id(), " exists with another spec"));
    }
  }
  // Reading the dataset's manifest is file I/O: done without the lock.
  ASSIGN_OR_RETURN(std::vector<ShardSpec> shards, options_.load_shards
                                                      ? options_.load_shards(spec)
                                                      : ci::LoadShardsFromManifest(spec));
  ASSIGN_OR_RETURN(std::unique_ptr<Job> job, ci::NewJob(spec, shards, Now()));
  uint64_t ticket = 0;
  v1::JobStatus status;
  {
    absl::MutexLock lock(&mu_);
    RETURN_IF_ERROR(broken_);
    if (jobs_.contains(spec.job_id())) {
      return absl::AlreadyExistsError(absl::StrCat("job_id: job ", spec.job_id(), " exists"));
    }
    Job& added = *job;
    jobs_.emplace(spec.job_id(), std::move(job));
    const absl::StatusOr<uint64_t> flushed = Flush(added);
    if (!flushed.ok()) {
      jobs_.erase(spec.job_id());
      return flushed.status();
    }
    ticket = *flushed;
    status = ci::JobStatusOf(added);
  }
  RETURN_IF_ERROR(commit_.AwaitDurable(ticket));
  return status;
}

absl::StatusOr<WorkerStatus> Coordinator::Impl::Join(const JoinRequest& request) {
  std::string worker_id = request.worker_id;
  if (worker_id.empty()) {
    ASSIGN_OR_RETURN(std::string suffix, ci::RandomHex(8));
    worker_id = absl::StrCat("w-", suffix);
  }
  RETURN_IF_ERROR(ci::ValidateWorkerId(worker_id));
  if (request.endpoint.size() > 256) {
    return absl::InvalidArgumentError("endpoint: at most 256 characters");
  }
  return WithJob(
      request.job_id, [&](Job& job, const ci::CallContext& ctx) -> absl::StatusOr<WorkerStatus> {
        // A paused job takes joiners: they wait in the join window, and are
        // admitted at the first step boundary after it resumes.
        if (job.record.state() != v1::JOB_STATE_PAUSED) RETURN_IF_ERROR(ci::RequireRunning(job));
        std::string token_id;
        if (!job.record.spec().access().open()) {
          mu_.AssertHeld();
          // A member whose lease still runs (a restarted process) may
          // rejoin on the token it joined with after that token expired:
          // its lease, not the token's expiry, decides.
          ASSIGN_OR_RETURN(token_id, tokens_.Verify(job.id(), request.token, ctx.now,
                                                    ci::LiveMemberTokenId(job, worker_id, ctx)));
          RETURN_IF_ERROR(ci::CheckTokenCap(job, token_id, worker_id));
        }
        ASSIGN_OR_RETURN(ci::IssuedSecret issued, ci::IssueMemberSecret());
        ASSIGN_OR_RETURN(WorkerStatus status, ci::Join(job, worker_id, request.endpoint, ctx));
        // Every Join rotates the credential: an earlier process
        // of this worker id can no longer speak for it.
        ci::Worker& worker = job.workers.at(worker_id);
        worker.record.set_secret_hash(issued.hash);
        worker.record.set_token_id(token_id);
        job.TouchWorker(worker);
        status.member_secret = std::move(issued.secret);
        return status;
      });
}

absl::Status Coordinator::Impl::AuthenticateMember(absl::string_view job_id,
                                                   absl::string_view worker_id,
                                                   absl::string_view secret) {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(Job * job, FindJob(job_id));
  auto it = job->workers.find(worker_id);
  if (it == job->workers.end()) {
    return absl::UnauthenticatedError(
        absl::StrCat("worker ", worker_id, " holds no credential for job ", job_id));
  }
  const auto& record = it->second.record;
  if (record.secret_hash().empty()) {
    // Its record predates member credentials (an older release wrote it).
    return absl::FailedPreconditionError(
        absl::StrCat("worker ", worker_id, " joined job ", job_id,
                     " before member credentials were issued: join again"));
  }
  if (secret.empty()) {
    return absl::UnauthenticatedError(absl::StrCat(
        "a call as worker ", worker_id, " must carry the member secret its Join returned"));
  }
  if (!ci::SecretMatches(record.secret_hash(), secret)) {
    return absl::UnauthenticatedError(
        absl::StrCat("wrong member secret for worker ", worker_id, " of job ", job_id,
                     " (a later Join with this worker id replaces the secret)"));
  }
  if (record.evicted()) {
    return absl::PermissionDeniedError(
        absl::StrCat("worker ", worker_id, " was evicted from job ", job_id, " by its admin"));
  }
  if (!record.token_id().empty() && tokens_.Revoked(record.token_id())) {
    return absl::UnauthenticatedError(absl::StrCat("the join token of worker ", worker_id, " (",
                                                   record.token_id(), ") was revoked"));
  }
  return absl::OkStatus();
}

absl::Status Coordinator::Impl::FinishCommit(absl::string_view job_id,
                                             const ci::PendingCommit& pending,
                                             absl::Status stored) {
  RetentionPolicy retention;
  uint64_t ticket = 0;
  {
    absl::MutexLock lock(&mu_);
    ASSIGN_OR_RETURN(Job * job, FindJob(job_id));
    RETURN_IF_ERROR(ci::ApplyCommit(*job, pending, stored, Context()));
    RETURN_IF_ERROR(broken_);
    ASSIGN_OR_RETURN(ticket, Flush(*job));
    const v1::CheckpointPolicy& policy = job->record.spec().checkpoint();
    retention.keep_last = std::max<uint32_t>(policy.keep_last(), 1);
    retention.keep_every = policy.keep_every();
  }
  RETURN_IF_ERROR(commit_.AwaitDurable(ticket));
  const auto deleted = checkpoints_->ApplyRetention(job_id, retention);
  if (!deleted.ok()) {
    return Annotate(deleted.status(), absl::StrCat("step ", pending.snapshot.step(),
                                                   " committed, but retention failed"));
  }
  return absl::OkStatus();
}

// ---- Coordinator -------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Open(CoordinatorOptions options) {
  if (options.data_dir.empty()) return absl::InvalidArgumentError("data_dir: is required");
  if (options.clock == nullptr) return absl::InvalidArgumentError("clock: is required");
  if (options.lease <= absl::ZeroDuration() || options.rendezvous_timeout <= absl::ZeroDuration() ||
      options.restart_grace <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("lease, rendezvous_timeout and restart_grace must be > 0");
  }
  std::error_code error;
  std::filesystem::create_directories(options.data_dir, error);
  if (error) return ErrnoStatus(error.value(), absl::StrCat("creating ", options.data_dir));
  const std::filesystem::path dir(options.data_dir);
  ASSIGN_OR_RETURN(std::unique_ptr<ci::StateDb> db,
                   ci::StateDb::Open((dir / "state").string(), options.sync_writes));
  ASSIGN_OR_RETURN(std::unique_ptr<CheckpointStore> checkpoints,
                   CheckpointStore::Open((dir / "checkpoints").string()));
  // Parts of split uploads that a restart interrupted are void.
  std::filesystem::remove_all(dir / "uploads", error);
  std::filesystem::create_directories(dir / "uploads", error);
  if (error) {
    return ErrnoStatus(error.value(), absl::StrCat("creating ", (dir / "uploads").string()));
  }
  ASSIGN_OR_RETURN(ci::TokenBook tokens, ci::TokenBook::Load(db.get()));
  auto impl = std::make_unique<Impl>(std::move(options), std::move(db), std::move(checkpoints),
                                     std::move(tokens));
  RETURN_IF_ERROR(impl->Load());
  return std::unique_ptr<Coordinator>(new Coordinator(std::move(impl)));
}

Coordinator::Coordinator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Coordinator::~Coordinator() = default;

absl::StatusOr<v1::JobStatus> Coordinator::SubmitJob(absl::string_view admin_token,
                                                     const v1::JobSpec& spec) {
  return impl_->SubmitJob(admin_token, spec);
}
absl::StatusOr<v1::JobStatus> Coordinator::GetJob(absl::string_view job_id) {
  return impl_->WithJob(job_id,
                        [](Job& job, const ci::CallContext&) -> absl::StatusOr<v1::JobStatus> {
                          return ci::JobStatusOf(job);
                        });
}
absl::StatusOr<std::vector<v1::JobStatus>> Coordinator::ListJobs() {
  std::vector<v1::JobStatus> out;
  RETURN_IF_ERROR(impl_->ForEachJob([&](const Job& job) { out.push_back(ci::JobStatusOf(job)); }));
  return out;
}
absl::Status Coordinator::PauseJob(absl::string_view admin_token, absl::string_view job_id) {
  RETURN_IF_ERROR(impl_->VerifyAdmin(admin_token));
  return impl_->WithJob(job_id, [](Job& job, const ci::CallContext&) {
    return ci::SetJobState(job, v1::JOB_STATE_PAUSED);
  });
}
absl::Status Coordinator::ResumeJob(absl::string_view admin_token, absl::string_view job_id) {
  RETURN_IF_ERROR(impl_->VerifyAdmin(admin_token));
  return impl_->WithJob(job_id, [](Job& job, const ci::CallContext&) {
    return ci::SetJobState(job, v1::JOB_STATE_RUNNING);
  });
}
absl::Status Coordinator::CancelJob(absl::string_view admin_token, absl::string_view job_id) {
  RETURN_IF_ERROR(impl_->VerifyAdmin(admin_token));
  return impl_->WithJob(job_id, [](Job& job, const ci::CallContext&) {
    return ci::SetJobState(job, v1::JOB_STATE_CANCELLED);
  });
}
absl::StatusOr<v1::JobStatus> Coordinator::ExtendJob(absl::string_view admin_token,
                                                     absl::string_view job_id, uint64_t max_steps) {
  RETURN_IF_ERROR(impl_->VerifyAdmin(admin_token));
  return impl_->WithJob(
      job_id, [&](Job& job, const ci::CallContext&) { return ci::ExtendJob(job, max_steps); });
}
absl::StatusOr<v1::JobStatus> Coordinator::EvictWorker(absl::string_view admin_token,
                                                       absl::string_view job_id,
                                                       absl::string_view worker_id,
                                                       bool revoke_token) {
  RETURN_IF_ERROR(impl_->VerifyAdmin(admin_token));
  return impl_->EvictWorker(job_id, worker_id, revoke_token);
}
absl::StatusOr<std::string> Coordinator::CreateToken(absl::string_view job_id, absl::Duration ttl) {
  return impl_->CreateToken(job_id, ttl);
}
absl::StatusOr<std::string> Coordinator::CreateAdminToken(absl::Duration ttl) {
  return impl_->CreateToken(ci::kAdminJob, ttl);
}
absl::Status Coordinator::RevokeToken(absl::string_view token_or_id) {
  return impl_->RevokeToken(token_or_id);
}
absl::Status Coordinator::VerifyToken(absl::string_view job_id, absl::string_view token) {
  return impl_->VerifyToken(job_id, token);
}
absl::Status Coordinator::VerifyAdminToken(absl::string_view token) {
  return impl_->VerifyAdmin(token);
}
absl::StatusOr<WorkerStatus> Coordinator::Join(const JoinRequest& request) {
  return impl_->Join(request);
}
absl::Status Coordinator::AuthenticateMember(absl::string_view job_id, absl::string_view worker_id,
                                             absl::string_view secret) {
  return impl_->AuthenticateMember(job_id, worker_id, secret);
}
absl::StatusOr<WorkerStatus> Coordinator::Heartbeat(absl::string_view job_id,
                                                    absl::string_view worker_id) {
  return impl_->WithJob(job_id, [&](Job& job, const ci::CallContext& ctx) {
    return ci::Heartbeat(job, worker_id, ctx);
  });
}
absl::Status Coordinator::Leave(absl::string_view job_id, absl::string_view worker_id,
                                const LeaveReason& reason) {
  return impl_->WithJob(job_id, [&](Job& job, const ci::CallContext& ctx) {
    return ci::Leave(job, worker_id, reason, ctx);
  });
}
absl::StatusOr<uint64_t> Coordinator::ReportFailure(absl::string_view job_id,
                                                    absl::string_view reporter,
                                                    absl::string_view failed) {
  return impl_->WithJob(job_id, [&](Job& job, const ci::CallContext& ctx) {
    return ci::ReportFailure(job, reporter, failed, ctx);
  });
}
absl::StatusOr<RendezvousResult> Coordinator::Rendezvous(absl::string_view job_id,
                                                         absl::string_view worker_id,
                                                         uint64_t generation) {
  return impl_->WithJob(job_id, [&](Job& job, const ci::CallContext& ctx) {
    return ci::Rendezvous(job, worker_id, generation, ctx);
  });
}
absl::StatusOr<std::vector<WorkerView>> Coordinator::ListWorkers(absl::string_view job_id) {
  return impl_->WithJob(
      job_id, [](Job& job, const ci::CallContext&) -> absl::StatusOr<std::vector<WorkerView>> {
        return ci::ListWorkers(job);
      });
}
absl::StatusOr<ShardLease> Coordinator::AcquireShard(absl::string_view job_id,
                                                     absl::string_view worker_id) {
  return impl_->WithJob(job_id, [&](Job& job, const ci::CallContext& ctx) {
    return ci::AcquireShard(job, worker_id, ctx);
  });
}
void Coordinator::HeartbeatAsync(absl::string_view job_id, absl::string_view worker_id,
                                 std::function<void(absl::StatusOr<WorkerStatus>)> done) {
  // The answer goes to `done`; the returned copy is not needed.
  (void)impl_->WithJob(
      job_id,
      [&](Job& job, const ci::CallContext& ctx) { return ci::Heartbeat(job, worker_id, ctx); },
      std::move(done));
}
void Coordinator::AcquireShardAsync(absl::string_view job_id, absl::string_view worker_id,
                                    std::function<void(absl::StatusOr<ShardLease>)> done) {
  // The answer goes to `done`; the returned copy is not needed.
  (void)impl_->WithJob(
      job_id,
      [&](Job& job, const ci::CallContext& ctx) { return ci::AcquireShard(job, worker_id, ctx); },
      std::move(done));
}
void Coordinator::ReportProgressAsync(const ProgressReport& report,
                                      std::function<void(absl::StatusOr<ProgressResult>)> done) {
  // The answer goes to `done`; the returned copy is not needed.
  (void)impl_->WithJob(
      report.job_id,
      [&](Job& job, const ci::CallContext& ctx) { return ci::ReportProgress(job, report, ctx); },
      std::move(done));
}
absl::StatusOr<ProgressResult> Coordinator::ReportProgress(const ProgressReport& report) {
  return impl_->WithJob(report.job_id, [&](Job& job, const ci::CallContext& ctx) {
    return ci::ReportProgress(job, report, ctx);
  });
}
absl::StatusOr<StepResult> Coordinator::EndStep(absl::string_view job_id,
                                                absl::string_view worker_id, uint64_t step) {
  return impl_->WithJob(job_id, [&](Job& job, const ci::CallContext& ctx) {
    return ci::EndStep(job, worker_id, step, ctx);
  });
}
absl::StatusOr<bool> Coordinator::ShouldCheckpoint(absl::string_view job_id, uint64_t step) {
  return impl_->WithJob(job_id, [&](Job& job, const ci::CallContext& ctx) -> absl::StatusOr<bool> {
    return ci::ShouldCheckpoint(job, step, ctx.now);
  });
}
absl::StatusOr<LedgerView> Coordinator::GetLedger(absl::string_view job_id) {
  return impl_->WithJob(job_id, [](Job& job, const ci::CallContext&) -> absl::StatusOr<LedgerView> {
    return ci::LedgerViewOf(job);
  });
}
absl::Status Coordinator::CommitCheckpoint(absl::string_view job_id, absl::string_view worker_id,
                                           uint64_t step, absl::Span<const TensorToSave> tensors,
                                           absl::Span<const BlobToSave> blobs) {
  return impl_->uploads().Commit(job_id, worker_id, step, tensors, blobs);
}
absl::StatusOr<std::unique_ptr<CheckpointWriter>> Coordinator::BeginCheckpoint(
    absl::string_view job_id, absl::string_view worker_id, uint64_t step) {
  return impl_->uploads().Begin(job_id, worker_id, step);
}
absl::StatusOr<std::unique_ptr<CheckpointPartWriter>> Coordinator::BeginCheckpointPart(
    absl::string_view job_id, absl::string_view worker_id, uint64_t step, uint32_t part,
    uint32_t parts) {
  return impl_->uploads().BeginPart(job_id, worker_id, step, part, parts);
}
CheckpointStore* Coordinator::checkpoints() { return impl_->checkpoints(); }
absl::Status Coordinator::Tick() {
  return impl_->ForEachJob([](const Job&) {});
}

}  // namespace potluck
