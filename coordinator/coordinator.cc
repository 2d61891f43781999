#include "coordinator/coordinator.h"

#include <algorithm>
#include <atomic>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <system_error>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "google/protobuf/util/message_differencer.h"

#include "common/failure.h"
#include "common/status.h"
#include "coordinator/internal/ledger.h"
#include "coordinator/internal/parts.h"
#include "coordinator/internal/state.pb.h"
#include "coordinator/internal/state_db.h"
#include "coordinator/internal/token.h"
#include "coordinator/job_spec.h"
#include "data/dataset.h"
#include "rocksdb/write_batch.h"

namespace potluck {
namespace {

namespace ci = coordinator_internal;
namespace cs = coordinator_state;

constexpr size_t kMaxRecentRequests = 256;
constexpr size_t kSecretBytes = 32;
constexpr size_t kMaxIdBytes = 64;

int64_t ToUnixMs(absl::Time time) { return absl::ToUnixMillis(time); }

absl::Status ValidateWorkerId(absl::string_view id) {
  if (id.empty() || id.size() > kMaxIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("worker_id: must be 1-", kMaxIdBytes, " characters, got ", id.size()));
  }
  for (const char c : id) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') {
      return absl::InvalidArgumentError(
          absl::StrCat("worker_id: '", id, "' may only hold [A-Za-z0-9._-]"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<ShardSpec>> LoadShardsFromManifest(const v1::JobSpec& spec) {
  std::filesystem::path path(spec.dataset().manifest());
  if (path.filename() == kManifestFile) path = path.parent_path();
  auto dataset = LoadDataset(path.string());
  if (!dataset.ok()) return Annotate(dataset.status(), "dataset.manifest");
  std::vector<ShardSpec> shards;
  for (const ShardInfo& shard : dataset->train) shards.push_back({shard.file, shard.tokens});
  return shards;
}

// A progress report as applied, kept by its request id to spot replays.
struct RecentReport {
  uint32_t shard = 0;
  uint64_t offset = 0;
  uint64_t step = 0;
};

struct Worker {
  cs::WorkerRecord record;
  absl::Time lease_expiry = absl::InfinitePast();
  // The last kMaxRecentRequests reports' ids. Not persisted: a replay only
  // matters within the generation it was made in, and a restart, like any
  // rollback, voids every earlier generation's reports.
  absl::flat_hash_map<std::string, RecentReport> recent;
  std::deque<std::string> recent_order;  // oldest first

  bool alive() const { return record.phase() != cs::WORKER_PHASE_DEAD; }
  bool member() const { return record.phase() == cs::WORKER_PHASE_MEMBER; }
};

struct Job {
  cs::JobRecord record;
  std::map<std::string, Worker, std::less<>> workers;
  cs::GenerationRecord gen;
  std::set<std::string, std::less<>> arrived;  // at the current generation's rendezvous
  absl::Time gen_created;
  ci::ShardLedger ledger;
  bool commit_in_progress = false;
  // EndStep's checkpoint answers for the last few steps (memory only: a
  // restart rolls the group back anyway).
  std::map<uint64_t, bool> checkpoint_answers;
  // No alive worker's lease ends before this: Evaluate skips its scan until
  // then (every lease set lowers it if it ends sooner).
  absl::Time next_lease_check = absl::InfinitePast();
  // The group-commit ticket of the last write of the record and generation:
  // a call that reads them waits for it, so nobody acts on a generation
  // that a crash could still take back.
  uint64_t state_ticket = 0;
  // What Flush must write.
  bool dirty = false;  // record and generation
  std::set<std::string> dirty_workers;

  const std::string& id() const { return record.spec().job_id(); }
  void TouchWorker(const Worker& worker) { dirty_workers.insert(worker.record.worker_id()); }
};

int MinWorkers(const Job& job) {
  return std::max<int>(1, static_cast<int>(job.record.spec().access().min_workers()));
}

}  // namespace

class Coordinator::Impl {
 public:
  Impl(CoordinatorOptions options, std::unique_ptr<ci::StateDb> db,
       std::unique_ptr<CheckpointStore> checkpoints)
      : options_(std::move(options)), db_(std::move(db)), checkpoints_(std::move(checkpoints)) {
    committer_ = std::thread([this] { CommitLoop(); });
  }
  ~Impl() {
    {
      absl::MutexLock lock(&commit_mu_);
      stopping_ = true;
    }
    committer_.join();
  }

  absl::Status Load();
  // Waits until every queued state write is durable.
  absl::Status SyncAll() { return AwaitDurable(LastTicket()); }

  // ---- jobs ----
  absl::StatusOr<v1::JobStatus> SubmitJob(absl::string_view admin_token, const v1::JobSpec& spec);
  absl::StatusOr<v1::JobStatus> GetJob(absl::string_view job_id) {
    return WithJob(job_id,
                   [&](Job& job) -> absl::StatusOr<v1::JobStatus> { return JobStatusOf(job); });
  }
  absl::StatusOr<std::vector<v1::JobStatus>> ListJobs();
  absl::Status SetJobState(absl::string_view admin_token, absl::string_view job_id,
                           v1::JobState to);
  absl::StatusOr<v1::JobStatus> ExtendJob(absl::string_view admin_token, absl::string_view job_id,
                                          uint64_t max_steps);

  // ---- tokens ----
  absl::StatusOr<std::string> CreateToken(absl::string_view job_id, absl::Duration ttl);
  absl::Status RevokeToken(absl::string_view token_or_id);
  absl::Status VerifyToken(absl::string_view job_id, absl::string_view token) {
    absl::MutexLock lock(&mu_);
    return VerifyTokenLocked(job_id, token);
  }

  // ---- membership ----
  absl::StatusOr<WorkerStatus> Join(const JoinRequest& request);
  absl::StatusOr<WorkerStatus> Heartbeat(
      absl::string_view job_id, absl::string_view worker_id,
      std::function<void(absl::StatusOr<WorkerStatus>)> done = nullptr) {
    return WithJob(
        job_id,
        [&](Job& job) -> absl::StatusOr<WorkerStatus> {
          ASSIGN_OR_RETURN(Worker * worker, LiveWorker(job, worker_id));
          return StatusOf(job, *worker);
        },
        std::move(done));
  }
  absl::Status Leave(absl::string_view job_id, absl::string_view worker_id);
  absl::StatusOr<uint64_t> ReportFailure(absl::string_view job_id, absl::string_view reporter,
                                         absl::string_view failed);
  absl::StatusOr<RendezvousResult> Rendezvous(absl::string_view job_id, absl::string_view worker_id,
                                              uint64_t generation);
  absl::StatusOr<std::vector<WorkerView>> ListWorkers(absl::string_view job_id);

  // ---- data and steps ----
  absl::StatusOr<ShardLease> AcquireShard(
      absl::string_view job_id, absl::string_view worker_id,
      std::function<void(absl::StatusOr<ShardLease>)> done = nullptr);
  absl::StatusOr<ProgressResult> ReportProgress(
      const ProgressReport& report,
      std::function<void(absl::StatusOr<ProgressResult>)> done = nullptr);
  absl::StatusOr<StepResult> EndStep(absl::string_view job_id, absl::string_view worker_id,
                                     uint64_t step);
  absl::StatusOr<bool> ShouldCheckpoint(absl::string_view job_id, uint64_t step) {
    return WithJob(job_id, [&](Job& job) -> absl::StatusOr<bool> {
      return ShouldCheckpointLocked(job, step);
    });
  }
  absl::StatusOr<LedgerView> GetLedger(absl::string_view job_id);

  // ---- checkpoints ----
  struct PendingCommit {
    cs::LedgerSnapshot snapshot;
    uint64_t rollback_generation = 0;
    uint64_t generation = 0;  // the group's, and the worker's rank and size in it
    uint32_t rank = 0;
    uint32_t world_size = 0;
  };
  // Checks that `worker` may commit `step`; with `snapshot`, also takes the
  // ledger as of `step` and marks the job as committing.
  absl::StatusOr<PendingCommit> PrepareCommit(absl::string_view job_id, absl::string_view worker_id,
                                              uint64_t step, bool snapshot);
  // Ends what PrepareCommit(snapshot=true) began; applies the snapshot if
  // `stored` is OK.
  absl::Status FinishCommit(absl::string_view job_id, const PendingCommit& pending,
                            absl::Status stored);
  absl::Status CommitCheckpoint(absl::string_view job_id, absl::string_view worker_id,
                                uint64_t step, absl::Span<const TensorToSave> tensors,
                                absl::Span<const BlobToSave> blobs);
  absl::StatusOr<std::unique_ptr<CheckpointWriter>> BeginCheckpoint(absl::string_view job_id,
                                                                    absl::string_view worker_id,
                                                                    uint64_t step);
  absl::StatusOr<std::unique_ptr<CheckpointPartWriter>> BeginCheckpointPart(
      absl::string_view job_id, absl::string_view worker_id, uint64_t step, uint32_t part,
      uint32_t parts);
  // A part is in (the writer's Finish): keeps it, and commits the checkpoint
  // when it completes the set. True when it did.
  absl::StatusOr<bool> HandInPart(const std::string& job_id, const std::string& worker_id,
                                  uint64_t step, uint32_t part, uint32_t parts,
                                  std::unique_ptr<ci::SpooledPart> spooled);
  CheckpointStore* checkpoints() { return checkpoints_.get(); }
  absl::Status Tick();

 private:
  absl::Time Now() const { return options_.clock->Now(); }

  // Runs `op` on the job under the lock, after evaluating expiries, then
  // persists what changed. `op` returns absl::Status or absl::StatusOr<T>.
  // With `done`, returns at once and passes the result to `done` once it is
  // durable (on the committer thread, or inline).
  template <typename Op>
  auto WithJob(absl::string_view job_id, Op&& op,
               std::function<void(decltype(op(std::declval<Job&>())))> done = nullptr)
      -> decltype(op(std::declval<Job&>())) {
    using Result = decltype(op(std::declval<Job&>()));
    uint64_t ticket = 0;
    Result result = [&]() -> Result {
      absl::MutexLock lock(&mu_);
      RETURN_IF_ERROR(broken_);
      ASSIGN_OR_RETURN(Job * job, FindJob(job_id));
      RETURN_IF_ERROR(Evaluate(*job));
      Result answer = op(*job);
      ASSIGN_OR_RETURN(ticket, Flush(*job));
      return answer;
    }();
    // Acknowledged = durable: wait (without the lock) for the group commit.
    if (done) {
      OnDurable(ticket, [result, done = std::move(done)](const absl::Status& durable) {
        if (durable.ok()) {
          done(result);
        } else {
          done(durable);
        }
      });
      return result;
    }
    RETURN_IF_ERROR(AwaitDurable(ticket));
    return result;
  }

  // Blocks until every write up to `ticket` is in the state database (one
  // synced RocksDB write per group of concurrent callers: group commit).
  absl::Status AwaitDurable(uint64_t ticket) ABSL_LOCKS_EXCLUDED(mu_, commit_mu_);
  // Calls `done` once every write up to `ticket` is durable (or failed):
  // inline if that is already so, else on the committer thread.
  void OnDurable(uint64_t ticket, std::function<void(const absl::Status&)> done)
      ABSL_LOCKS_EXCLUDED(mu_, commit_mu_);
  // The committer thread: writes what is queued, one synced batch at a time.
  void CommitLoop() ABSL_LOCKS_EXCLUDED(commit_mu_);
  uint64_t LastTicket() ABSL_LOCKS_EXCLUDED(commit_mu_) {
    absl::MutexLock lock(&commit_mu_);
    return queued_ticket_;
  }

  absl::StatusOr<Job*> FindJob(absl::string_view job_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Evaluate(Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Queues what changed in `job` for the group commit. Returns the ticket
  // to await: of this write, or of the job's last record write if nothing
  // changed.
  absl::StatusOr<uint64_t> Flush(Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The live worker, its lease renewed; kNotFound / kFailedPrecondition.
  absl::StatusOr<Worker*> LiveWorker(Job& job, absl::string_view worker_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<Worker*> Member(Job& job, absl::string_view worker_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void MarkDead(Job& job, Worker& worker, absl::string_view reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Makes the next generation: the live members, then the joiners in join
  // order. A rollback reverts the ledger to its committed state.
  absl::Status Regroup(Job& job, bool rollback, uint64_t boundary_step)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool HasJoiners(const Job& job) const;
  bool ShouldCheckpointLocked(const Job& job, uint64_t step) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether committing `snapshot` finishes the job: its last epoch ended,
  // or it is of the job's final step.
  static bool CompletedBy(const Job& job, const cs::LedgerSnapshot& snapshot);
  absl::Status VerifyTokenLocked(absl::string_view job_id, absl::string_view token)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status RequireRunning(const Job& job) const;
  v1::JobStatus JobStatusOf(const Job& job) const;
  WorkerStatus StatusOf(const Job& job, const Worker& worker) const;
  GroupView View(const Job& job) const;

  const CoordinatorOptions options_;
  const std::unique_ptr<ci::StateDb> db_;
  const std::unique_ptr<CheckpointStore> checkpoints_;

  absl::Mutex mu_;
  std::string signing_key_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, cs::TokenRecord, std::less<>> tokens_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::unique_ptr<Job>, std::less<>> jobs_ ABSL_GUARDED_BY(mu_);
  // A failed state write: memory is ahead of disk, so every later call fails
  // until the coordinator is reopened (it then reloads what is on disk).
  absl::Status broken_ ABSL_GUARDED_BY(mu_);

  // The group commit. Lock order: mu_, then commit_mu_; the committer
  // writes holding neither.
  absl::Mutex commit_mu_ ABSL_ACQUIRED_AFTER(mu_);
  std::vector<std::pair<std::string, std::string>> queued_puts_ ABSL_GUARDED_BY(commit_mu_);
  uint64_t queued_ticket_ ABSL_GUARDED_BY(commit_mu_) = 0;   // the last ticket handed out
  uint64_t durable_ticket_ ABSL_GUARDED_BY(commit_mu_) = 0;  // written through here
  absl::CondVar commit_done_;                                // the committer finished a write
  std::multimap<uint64_t, std::function<void(const absl::Status&)>> on_durable_
      ABSL_GUARDED_BY(commit_mu_);
  bool stopping_ ABSL_GUARDED_BY(commit_mu_) = false;
  std::thread committer_;
  absl::Status commit_error_ ABSL_GUARDED_BY(commit_mu_);  // sticky

  // Split uploads: per job, the parts in so far of one (step, generation).
  struct PartSet {
    uint64_t step = 0;
    uint64_t generation = 0;
    std::vector<std::unique_ptr<ci::SpooledPart>> parts;  // by part number; null: not in
  };
  absl::Mutex parts_mu_ ABSL_ACQUIRED_AFTER(mu_);
  std::map<std::string, PartSet, std::less<>> part_sets_ ABSL_GUARDED_BY(parts_mu_);
  std::atomic<uint64_t> spool_counter_{0};
};

// ---- helpers ------------------------------------------------------------------

absl::StatusOr<Job*> Coordinator::Impl::FindJob(absl::string_view job_id) {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return absl::NotFoundError(absl::StrCat("job ", job_id, " not found"));
  return it->second.get();
}

absl::Status Coordinator::Impl::Evaluate(Job& job) {
  const absl::Time now = Now();
  bool lost_member = false;
  if (now >= job.next_lease_check) {
    absl::Time next = absl::InfiniteFuture();
    for (auto& [id, worker] : job.workers) {
      if (worker.alive() && worker.lease_expiry <= now) {
        lost_member = lost_member || worker.member();
        MarkDead(job, worker,
                 absl::StrCat("lease expired at ", absl::FormatTime(worker.lease_expiry)));
      } else if (worker.alive()) {
        next = std::min(next, worker.lease_expiry);
      }
    }
    job.next_lease_check = next;
  }
  // A generation whose members all came but are too few waits for joiners;
  // one that some member missed is given up at its deadline.
  if (job.gen.members_size() > 0 && !job.gen.formed() &&
      job.arrived.size() < static_cast<size_t>(job.gen.members_size()) &&
      now >= job.gen_created + options_.rendezvous_timeout) {
    for (const std::string& id : job.gen.members()) {
      Worker& worker = job.workers.at(id);
      if (worker.member() && !job.arrived.contains(id)) {
        MarkDead(job, worker,
                 absl::StrCat("missed the rendezvous of generation ", job.gen.number()));
        lost_member = true;
      }
    }
    lost_member = true;  // a generation whose deadline passed is never formed
  }
  if (lost_member) return Regroup(job, /*rollback=*/true, 0);
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> Coordinator::Impl::Flush(Job& job) {
  std::vector<std::pair<std::string, std::string>> puts;
  const bool record_changed = job.dirty;
  if (job.dirty) {
    job.record.set_epoch(job.ledger.epoch());
    puts.emplace_back(ci::JobKey(job.id()), job.record.SerializeAsString());
    puts.emplace_back(ci::GenerationKey(job.id()), job.gen.SerializeAsString());
  }
  for (const std::string& id : job.dirty_workers) {
    puts.emplace_back(ci::WorkerKey(job.id(), id), job.workers.at(id).record.SerializeAsString());
  }
  for (const uint32_t shard : job.ledger.TakeDirty()) {
    puts.emplace_back(ci::ShardKey(job.id(), shard),
                      ci::ShardLedger::ToRecord(job.ledger.shards()[shard]).SerializeAsString());
  }
  job.dirty = false;
  job.dirty_workers.clear();
  absl::MutexLock lock(&commit_mu_);
  if (!commit_error_.ok()) {
    broken_ = commit_error_;
    return commit_error_;
  }
  if (puts.empty()) return job.state_ticket;
  // Queued in lock order of mu_, so the group commit writes them in the
  // order the state changed.
  for (auto& put : puts) queued_puts_.push_back(std::move(put));
  const uint64_t ticket = ++queued_ticket_;
  if (record_changed) job.state_ticket = ticket;
  return ticket;
}

absl::Status Coordinator::Impl::AwaitDurable(uint64_t ticket) {
  absl::MutexLock lock(&commit_mu_);
  // A CondVar, not Await(Condition): conditions would be re-evaluated for
  // every waiter at every unlock, and each queued write unlocks.
  while (commit_error_.ok() && durable_ticket_ < ticket) commit_done_.Wait(&commit_mu_);
  return commit_error_;
}

void Coordinator::Impl::OnDurable(uint64_t ticket, std::function<void(const absl::Status&)> done) {
  absl::Status status;
  {
    absl::MutexLock lock(&commit_mu_);
    if (commit_error_.ok() && durable_ticket_ < ticket) {
      on_durable_.emplace(ticket, std::move(done));
      return;
    }
    status = commit_error_;
  }
  done(status);
}

void Coordinator::Impl::CommitLoop() {
  absl::MutexLock lock(&commit_mu_);
  for (;;) {
    auto work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(commit_mu_) {
      return !queued_puts_.empty() || stopping_;
    };
    commit_mu_.Await(absl::Condition(&work));
    if (queued_puts_.empty()) return;  // stopping, and everything is written
    std::vector<std::pair<std::string, std::string>> puts;
    puts.swap(queued_puts_);
    const uint64_t through = queued_ticket_;
    commit_mu_.Unlock();
    rocksdb::WriteBatch batch;
    for (const auto& [key, value] : puts) batch.Put(key, value);
    const absl::Status written = db_->Write(&batch);
    commit_mu_.Lock();
    if (written.ok()) {
      durable_ticket_ = through;
    } else if (commit_error_.ok()) {
      // Memory is ahead of disk: every later call fails until a reopen.
      commit_error_ = Annotate(written, "state write failed; the coordinator must be reopened");
    }
    commit_done_.SignalAll();
    std::vector<std::function<void(const absl::Status&)>> ready;
    const auto end =
        commit_error_.ok() ? on_durable_.upper_bound(durable_ticket_) : on_durable_.end();
    for (auto it = on_durable_.begin(); it != end; ++it) ready.push_back(std::move(it->second));
    on_durable_.erase(on_durable_.begin(), end);
    const absl::Status status = commit_error_;
    commit_mu_.Unlock();
    for (auto& done : ready) done(status);
    commit_mu_.Lock();
  }
}

absl::StatusOr<Worker*> Coordinator::Impl::LiveWorker(Job& job, absl::string_view worker_id) {
  auto it = job.workers.find(worker_id);
  if (it == job.workers.end()) {
    return absl::NotFoundError(absl::StrCat("worker ", worker_id, " is not in job ", job.id()));
  }
  Worker& worker = it->second;
  if (!worker.alive()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "worker ", worker_id, " is dead (", worker.record.dead_reason(), "); join again"));
  }
  worker.lease_expiry = Now() + options_.lease;
  // Shorter than a restart's grace lease, so it may come first.
  job.next_lease_check = std::min(job.next_lease_check, worker.lease_expiry);
  return &worker;
}

absl::StatusOr<Worker*> Coordinator::Impl::Member(Job& job, absl::string_view worker_id) {
  ASSIGN_OR_RETURN(Worker * worker, LiveWorker(job, worker_id));
  if (!worker->member()) {
    return WithFailure(absl::FailedPreconditionError(
                           absl::StrCat("worker ", worker_id, " waits in the join window of job ",
                                        job.id(), " (generation ", job.gen.number(), ")")),
                       Failure::kWaitingForAdmission);
  }
  return worker;
}

void Coordinator::Impl::MarkDead(Job& job, Worker& worker, absl::string_view reason) {
  worker.record.set_phase(cs::WORKER_PHASE_DEAD);
  worker.record.set_dead_reason(std::string(reason));
  job.ledger.Release(worker.record.worker_id());
  job.TouchWorker(worker);
}

bool Coordinator::Impl::HasJoiners(const Job& job) const {
  return std::any_of(job.workers.begin(), job.workers.end(), [](const auto& entry) {
    return entry.second.record.phase() == cs::WORKER_PHASE_WAITING;
  });
}

absl::Status Coordinator::Impl::Regroup(Job& job, bool rollback, uint64_t boundary_step) {
  ASSIGN_OR_RETURN(std::string secret, ci::RandomBytes(kSecretBytes));
  const cs::GenerationRecord& old = job.gen;
  cs::GenerationRecord next;
  next.set_number(old.number() + 1);
  next.set_secret(std::move(secret));
  next.set_created_unix_ms(ToUnixMs(Now()));
  if (rollback || old.members_size() == 0) {
    rollback = true;
    next.set_from_checkpoint(true);
    next.set_resume_step(job.record.committed_step());
    job.ledger.RevertUncommitted();
    job.ledger.ReleaseAll();  // the new group leases by its own ranks
    job.record.set_rollback_generation(next.number());
    // The reverted reports' ids go too: a replay of one carries a rolled-back
    // generation and is refused as such.
    for (auto& [id, worker] : job.workers) {
      worker.recent.clear();
      worker.recent_order.clear();
    }
  } else if (!old.formed()) {  // nobody trained in `old`: start where it would have
    next.set_from_checkpoint(old.from_checkpoint());
    next.set_resume_step(old.resume_step());
  } else {
    next.set_resume_step(boundary_step);
  }
  for (const std::string& id : old.members()) {
    Worker& worker = job.workers.at(id);
    if (!worker.member()) continue;
    next.add_members(id);
    next.add_endpoints(worker.record.endpoint());
    if (rollback) {
      worker.record.set_last_ended_step(next.resume_step());
      job.TouchWorker(worker);
    }
  }
  std::vector<Worker*> joiners;
  for (auto& [id, worker] : job.workers) {
    if (worker.record.phase() == cs::WORKER_PHASE_WAITING) joiners.push_back(&worker);
  }
  std::sort(joiners.begin(), joiners.end(), [](const Worker* a, const Worker* b) {
    return a->record.join_seq() < b->record.join_seq();
  });
  for (Worker* worker : joiners) {
    worker->record.set_phase(cs::WORKER_PHASE_MEMBER);
    worker->record.set_last_ended_step(next.resume_step());
    next.add_members(worker->record.worker_id());
    next.add_endpoints(worker->record.endpoint());
    job.TouchWorker(*worker);
  }
  job.gen = std::move(next);
  job.gen_created = Now();
  job.arrived.clear();
  job.record.set_regroup_at_step(0);
  job.dirty = true;
  return absl::OkStatus();
}

bool Coordinator::Impl::ShouldCheckpointLocked(const Job& job, uint64_t step) const {
  if (step <= job.record.committed_step()) return false;
  const v1::CheckpointPolicy& policy = job.record.spec().checkpoint();
  if (policy.every_steps() > 0 && step % policy.every_steps() == 0) return true;
  const absl::Time last = absl::FromUnixMillis(job.record.last_checkpoint_unix_ms());
  if (policy.every_seconds() > 0 && Now() - last >= absl::Seconds(policy.every_seconds())) {
    return true;
  }
  // The epoch cannot roll over before its last shards are committed.
  return job.ledger.AllConsumed() && job.ledger.HasUncommitted();
}

bool Coordinator::Impl::CompletedBy(const Job& job, const cs::LedgerSnapshot& snapshot) {
  if (job.record.state() == v1::JOB_STATE_CANCELLED) return false;
  const uint64_t final_step = FinalStep(job.record.spec());
  return snapshot.finished() || (final_step > 0 && snapshot.step() >= final_step);
}

absl::Status Coordinator::Impl::RequireRunning(const Job& job) const {
  if (job.record.state() == v1::JOB_STATE_RUNNING) return absl::OkStatus();
  if (job.record.state() == v1::JOB_STATE_FINISHED) {
    return absl::OutOfRangeError(absl::StrCat("job ", job.id(), " is finished: no more data"));
  }
  return absl::FailedPreconditionError(
      absl::StrCat("job ", job.id(), " is ", JobStateName(job.record.state())));
}

v1::JobStatus Coordinator::Impl::JobStatusOf(const Job& job) const {
  v1::JobStatus status;
  *status.mutable_spec() = job.record.spec();
  status.set_state(job.record.state());
  status.set_committed_step(job.record.committed_step());
  status.set_epoch(job.ledger.epoch());
  uint32_t live = 0;
  for (const auto& [id, worker] : job.workers) live += worker.alive() ? 1 : 0;
  status.set_live_workers(live);
  return status;
}

WorkerStatus Coordinator::Impl::StatusOf(const Job& job, const Worker& worker) const {
  WorkerStatus status;
  status.worker_id = worker.record.worker_id();
  status.lease_expiry = worker.lease_expiry;
  status.generation = job.gen.number();
  status.member = worker.member();
  status.job_state = job.record.state();
  return status;
}

GroupView Coordinator::Impl::View(const Job& job) const {
  GroupView view;
  view.generation = job.gen.number();
  for (int i = 0; i < job.gen.members_size(); ++i) {
    view.members.push_back({job.gen.members(i), static_cast<uint32_t>(i), job.gen.endpoints(i)});
  }
  view.secret = job.gen.secret();
  view.resume_step = job.gen.resume_step();
  view.from_checkpoint = job.gen.from_checkpoint();
  return view;
}

// ---- jobs ---------------------------------------------------------------------

absl::StatusOr<v1::JobStatus> Coordinator::Impl::SubmitJob(absl::string_view admin_token,
                                                           const v1::JobSpec& spec) {
  {
    absl::MutexLock lock(&mu_);
    RETURN_IF_ERROR(broken_);
    RETURN_IF_ERROR(VerifyTokenLocked(ci::kAdminJob, admin_token));
  }
  RETURN_IF_ERROR(ValidateJobSpec(spec));
  {
    absl::MutexLock lock(&mu_);
    auto it = jobs_.find(spec.job_id());
    if (it != jobs_.end()) {
      if (google::protobuf::util::MessageDifferencer::Equals(it->second->record.spec(), spec)) {
        return JobStatusOf(*it->second);
      }
      return absl::AlreadyExistsError(
          absl::StrCat("job_id: job ", spec.job_id(), " exists with another spec"));
    }
  }
  // Reading the dataset's manifest is file I/O: done without the lock.
  ASSIGN_OR_RETURN(std::vector<ShardSpec> shard_specs, options_.load_shards
                                                           ? options_.load_shards(spec)
                                                           : LoadShardsFromManifest(spec));
  if (shard_specs.empty()) {
    return absl::InvalidArgumentError("dataset.manifest: the dataset has no train shards");
  }
  std::vector<ci::Shard> shards;
  for (const ShardSpec& shard_spec : shard_specs) {
    if (shard_spec.size == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("dataset.manifest: shard ", shard_spec.name, " is empty"));
    }
    ci::Shard shard;
    shard.name = shard_spec.name;
    shard.size = shard_spec.size;
    shards.push_back(std::move(shard));
  }
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(broken_);
  if (jobs_.contains(spec.job_id())) {
    return absl::AlreadyExistsError(absl::StrCat("job_id: job ", spec.job_id(), " exists"));
  }
  auto job = std::make_unique<Job>();
  *job->record.mutable_spec() = spec;
  job->record.set_state(v1::JOB_STATE_RUNNING);
  job->record.set_last_checkpoint_unix_ms(ToUnixMs(Now()));
  job->ledger = ci::ShardLedger(std::move(shards), 0);
  job->ledger.MarkAllDirty();
  job->gen_created = Now();
  job->dirty = true;
  Job& added = *job;
  jobs_.emplace(spec.job_id(), std::move(job));
  const absl::StatusOr<uint64_t> ticket = Flush(added);
  if (!ticket.ok()) {
    jobs_.erase(spec.job_id());
    return ticket.status();
  }
  v1::JobStatus status = JobStatusOf(added);
  mu_.Unlock();
  const absl::Status durable = AwaitDurable(*ticket);
  mu_.Lock();
  RETURN_IF_ERROR(durable);
  return status;
}

absl::StatusOr<std::vector<v1::JobStatus>> Coordinator::Impl::ListJobs() {
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(broken_);
  std::vector<v1::JobStatus> out;
  uint64_t ticket = 0;
  for (auto& [id, job] : jobs_) {
    RETURN_IF_ERROR(Evaluate(*job));
    ASSIGN_OR_RETURN(const uint64_t flushed, Flush(*job));
    ticket = std::max(ticket, flushed);
    out.push_back(JobStatusOf(*job));
  }
  mu_.Unlock();
  const absl::Status durable = AwaitDurable(ticket);
  mu_.Lock();
  RETURN_IF_ERROR(durable);
  return out;
}

absl::Status Coordinator::Impl::SetJobState(absl::string_view admin_token, absl::string_view job_id,
                                            v1::JobState to) {
  {
    absl::MutexLock lock(&mu_);
    RETURN_IF_ERROR(VerifyTokenLocked(ci::kAdminJob, admin_token));
  }
  return WithJob(job_id, [&](Job& job) -> absl::Status {
    const v1::JobState from = job.record.state();
    if (from == to) return absl::OkStatus();
    const bool terminal = from == v1::JOB_STATE_CANCELLED || from == v1::JOB_STATE_FINISHED;
    if (terminal || (to == v1::JOB_STATE_RUNNING && from != v1::JOB_STATE_PAUSED)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "job ", job.id(), " is ", JobStateName(from), "; cannot make it ", JobStateName(to)));
    }
    job.record.set_state(to);
    job.dirty = true;
    return absl::OkStatus();
  });
}

absl::StatusOr<v1::JobStatus> Coordinator::Impl::ExtendJob(absl::string_view admin_token,
                                                           absl::string_view job_id,
                                                           uint64_t max_steps) {
  {
    absl::MutexLock lock(&mu_);
    RETURN_IF_ERROR(VerifyTokenLocked(ci::kAdminJob, admin_token));
  }
  return WithJob(job_id, [&](Job& job) -> absl::StatusOr<v1::JobStatus> {
    const uint64_t current = job.record.spec().max_steps();
    if (current == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "max_steps: job ", job.id(), " has none: it runs until its epochs are trained"));
    }
    if (max_steps <= current) {
      return absl::InvalidArgumentError(absl::StrCat(
          "max_steps: job ", job.id(), " already runs to ", current, "; got ", max_steps));
    }
    const uint64_t epochs = std::max<uint64_t>(job.record.spec().dataset().epochs(), 1);
    if (job.record.state() == v1::JOB_STATE_CANCELLED || job.ledger.epoch() >= epochs) {
      return absl::FailedPreconditionError(absl::StrCat(
          "job ", job.id(),
          job.ledger.epoch() >= epochs ? " has trained all its epochs" : " is cancelled",
          "; it cannot be extended"));
    }
    job.record.mutable_spec()->set_max_steps(max_steps);
    if (job.record.state() == v1::JOB_STATE_FINISHED) job.record.set_state(v1::JOB_STATE_RUNNING);
    job.dirty = true;
    return JobStatusOf(job);
  });
}

// ---- tokens -------------------------------------------------------------------

absl::StatusOr<std::string> Coordinator::Impl::CreateToken(absl::string_view job_id,
                                                           absl::Duration ttl) {
  if (job_id != ci::kAdminJob) RETURN_IF_ERROR(Annotate(ValidateJobId(job_id), "job_id"));
  if (ttl <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("ttl: must be > 0, got ", absl::FormatDuration(ttl)));
  }
  ASSIGN_OR_RETURN(std::string token_id, ci::RandomHex(8));
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(broken_);
  ci::TokenFields fields{std::string(job_id), absl::ToUnixSeconds(Now() + ttl), token_id};
  cs::TokenRecord record;
  record.set_job_id(fields.job_id);
  record.set_expiry_unix_s(fields.expiry_unix_s);
  RETURN_IF_ERROR(db_->Put(ci::TokenKey(token_id), record.SerializeAsString()));
  tokens_[token_id] = record;
  return ci::SignToken(signing_key_, fields);
}

absl::Status Coordinator::Impl::RevokeToken(absl::string_view token_or_id) {
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(broken_);
  std::string token_id(token_or_id);
  if (absl::StrContains(token_or_id, ':')) {
    ASSIGN_OR_RETURN(ci::TokenFields fields, ci::ParseSignedToken(signing_key_, token_or_id));
    token_id = fields.token_id;
  }
  auto it = tokens_.find(token_id);
  if (it == tokens_.end()) {
    return absl::NotFoundError(absl::StrCat("token ", token_id, " was not issued here"));
  }
  cs::TokenRecord record = it->second;
  record.set_revoked(true);
  RETURN_IF_ERROR(db_->Put(ci::TokenKey(token_id), record.SerializeAsString()));
  it->second = record;
  return absl::OkStatus();
}

absl::Status Coordinator::Impl::VerifyTokenLocked(absl::string_view job_id,
                                                  absl::string_view token) {
  ASSIGN_OR_RETURN(ci::TokenFields fields, ci::ParseSignedToken(signing_key_, token));
  auto it = tokens_.find(fields.token_id);
  if (it == tokens_.end()) {
    return absl::UnauthenticatedError(
        absl::StrCat("token ", fields.token_id, " is unknown to this coordinator"));
  }
  if (it->second.revoked()) {
    return absl::UnauthenticatedError(absl::StrCat("token ", fields.token_id, " was revoked"));
  }
  const absl::Time expiry = absl::FromUnixSeconds(fields.expiry_unix_s);
  if (Now() >= expiry) {
    return absl::UnauthenticatedError(absl::StrCat("token ", fields.token_id, " expired at ",
                                                   absl::FormatTime(expiry, absl::UTCTimeZone())));
  }
  if (fields.job_id != job_id) {
    if (job_id == ci::kAdminJob) {
      return absl::PermissionDeniedError(absl::StrCat("token ", fields.token_id,
                                                      " is a join token for job ", fields.job_id,
                                                      ", not an admin token"));
    }
    if (fields.job_id == ci::kAdminJob) {
      return absl::PermissionDeniedError(absl::StrCat(
          "token ", fields.token_id, " is an admin token, not a join token for job ", job_id));
    }
    return absl::PermissionDeniedError(
        absl::StrCat("token ", fields.token_id, " is for job ", fields.job_id, ", not ", job_id));
  }
  return absl::OkStatus();
}

// ---- membership ---------------------------------------------------------------

absl::StatusOr<WorkerStatus> Coordinator::Impl::Join(const JoinRequest& request) {
  std::string worker_id = request.worker_id;
  if (worker_id.empty()) {
    ASSIGN_OR_RETURN(std::string suffix, ci::RandomHex(8));
    worker_id = absl::StrCat("w-", suffix);
  }
  RETURN_IF_ERROR(ValidateWorkerId(worker_id));
  if (request.endpoint.size() > 256) {
    return absl::InvalidArgumentError("endpoint: at most 256 characters");
  }
  return WithJob(request.job_id, [&](Job& job) -> absl::StatusOr<WorkerStatus> {
    RETURN_IF_ERROR(RequireRunning(job));
    if (!job.record.spec().access().open()) {
      RETURN_IF_ERROR(VerifyTokenLocked(job.id(), request.token));
    }
    auto it = job.workers.find(worker_id);
    const uint32_t max_workers = job.record.spec().access().max_workers();
    if (max_workers > 0 && (it == job.workers.end() || !it->second.alive())) {
      uint32_t live = 0;
      for (const auto& [id, other] : job.workers) live += other.alive() ? 1 : 0;
      if (live >= max_workers) {
        return absl::ResourceExhaustedError(
            absl::StrCat("job ", job.id(), " has its maximum of ", max_workers, " workers"));
      }
    }
    bool rollback = false;
    if (it == job.workers.end()) {
      it = job.workers.emplace(worker_id, Worker()).first;
      it->second.record.set_worker_id(worker_id);
    } else if (it->second.member()) {
      // The member's previous process is gone (or this is a retried Join
      // after its admission, which looks the same): its work since the last
      // checkpoint is lost.
      MarkDead(job, it->second, "joined again: its previous process is gone");
      rollback = true;
    }
    Worker& worker = it->second;
    if (worker.record.phase() != cs::WORKER_PHASE_WAITING) {
      worker.record.set_phase(cs::WORKER_PHASE_WAITING);
      worker.record.clear_dead_reason();
      worker.record.set_join_seq(job.record.next_join_seq());
      job.record.set_next_join_seq(job.record.next_join_seq() + 1);
      job.dirty = true;
    }
    worker.record.set_endpoint(request.endpoint);
    worker.lease_expiry = Now() + options_.lease;
    job.next_lease_check = std::min(job.next_lease_check, worker.lease_expiry);
    job.TouchWorker(worker);
    if (rollback) {
      RETURN_IF_ERROR(Regroup(job, /*rollback=*/true, 0));
    } else if (job.gen.members_size() == 0 || !job.gen.formed()) {
      RETURN_IF_ERROR(Regroup(job, /*rollback=*/false, 0));
    }
    return StatusOf(job, worker);
  });
}

absl::Status Coordinator::Impl::Leave(absl::string_view job_id, absl::string_view worker_id) {
  return WithJob(job_id, [&](Job& job) -> absl::Status {
    ASSIGN_OR_RETURN(Worker * worker, LiveWorker(job, worker_id));
    const bool was_member = worker->member();
    MarkDead(job, *worker, "left");
    if (was_member) return Regroup(job, /*rollback=*/true, 0);
    return absl::OkStatus();
  });
}

absl::StatusOr<uint64_t> Coordinator::Impl::ReportFailure(absl::string_view job_id,
                                                          absl::string_view reporter,
                                                          absl::string_view failed) {
  return WithJob(job_id, [&](Job& job) -> absl::StatusOr<uint64_t> {
    if (reporter == failed) {
      return absl::InvalidArgumentError("a worker cannot report itself failed; Leave instead");
    }
    ASSIGN_OR_RETURN(Worker * by, LiveWorker(job, reporter));
    if (!by->member()) {
      return absl::PermissionDeniedError(
          absl::StrCat("worker ", reporter, " is not a member; only members report failures"));
    }
    auto it = job.workers.find(failed);
    if (it == job.workers.end()) {
      return absl::NotFoundError(absl::StrCat("worker ", failed, " is not in job ", job.id()));
    }
    if (it->second.member()) {
      MarkDead(job, it->second,
               absl::StrCat("reported failed by ", reporter, " in generation ", job.gen.number()));
      RETURN_IF_ERROR(Regroup(job, /*rollback=*/true, 0));
    }
    return job.gen.number();
  });
}

absl::StatusOr<RendezvousResult> Coordinator::Impl::Rendezvous(absl::string_view job_id,
                                                               absl::string_view worker_id,
                                                               uint64_t generation) {
  return WithJob(job_id, [&](Job& job) -> absl::StatusOr<RendezvousResult> {
    ASSIGN_OR_RETURN(Worker * worker, LiveWorker(job, worker_id));
    if (generation > job.gen.number()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "generation ", generation, " does not exist yet (current: ", job.gen.number(), ")"));
    }
    RendezvousResult result;
    if (generation == job.gen.number() && !job.gen.formed() && HasJoiners(job)) {
      // Nobody trains in an unformed generation: admit the joiners now.
      RETURN_IF_ERROR(Regroup(job, /*rollback=*/false, 0));
    }
    result.generation = job.gen.number();
    if (generation < job.gen.number()) {
      result.state = RendezvousResult::State::kSuperseded;
      return result;
    }
    if (!worker->member()) {
      return WithFailure(absl::FailedPreconditionError(
                             absl::StrCat("worker ", worker_id, " is not a member of generation ",
                                          generation, " (it waits in the join window)")),
                         Failure::kWaitingForAdmission);
    }
    if (!job.arrived.contains(worker_id)) {
      job.arrived.insert(std::string(worker_id));
      if (job.arrived.size() == static_cast<size_t>(job.gen.members_size()) &&
          job.gen.members_size() >= MinWorkers(job)) {
        job.gen.set_formed(true);
        job.dirty = true;
      }
    }
    if (!job.gen.formed()) {
      result.state = RendezvousResult::State::kWaiting;
      result.deadline = job.gen_created + options_.rendezvous_timeout;
      return result;
    }
    if (worker->record.active_generation() != job.gen.number()) {
      worker->record.set_active_generation(job.gen.number());
      job.TouchWorker(*worker);
    }
    result.state = RendezvousResult::State::kReady;
    result.view = View(job);
    return result;
  });
}

absl::StatusOr<std::vector<WorkerView>> Coordinator::Impl::ListWorkers(absl::string_view job_id) {
  return WithJob(job_id, [&](Job& job) -> absl::StatusOr<std::vector<WorkerView>> {
    std::vector<WorkerView> out;
    for (const auto& [id, worker] : job.workers) {
      WorkerView view;
      view.worker_id = id;
      view.endpoint = worker.record.endpoint();
      view.phase = worker.member()  ? WorkerView::Phase::kMember
                   : worker.alive() ? WorkerView::Phase::kWaiting
                                    : WorkerView::Phase::kDead;
      view.dead_reason = worker.record.dead_reason();
      view.lease_expiry = worker.lease_expiry;
      for (int i = 0; i < job.gen.members_size(); ++i) {
        if (worker.member() && job.gen.members(i) == id) view.rank = i;
      }
      out.push_back(std::move(view));
    }
    return out;
  });
}

// ---- data and steps -------------------------------------------------------------

absl::StatusOr<ShardLease> Coordinator::Impl::AcquireShard(
    absl::string_view job_id, absl::string_view worker_id,
    std::function<void(absl::StatusOr<ShardLease>)> done) {
  return WithJob(
      job_id,
      [&](Job& job) -> absl::StatusOr<ShardLease> {
        ASSIGN_OR_RETURN(Worker * worker, Member(job, worker_id));
        RETURN_IF_ERROR(RequireRunning(job));
        int rank = 0;
        while (rank < job.gen.members_size() && job.gen.members(rank) != worker_id) ++rank;
        if (rank == job.gen.members_size()) {
          return absl::FailedPreconditionError(
              absl::StrCat("worker ", worker_id, " is not in generation ", job.gen.number()));
        }
        ASSIGN_OR_RETURN(uint32_t index, job.ledger.Acquire(worker->record.worker_id(), rank,
                                                            job.gen.members_size()));
        const ci::Shard& shard = job.ledger.shards()[index];
        return ShardLease{index, shard.name, shard.size, shard.consumed, job.ledger.epoch()};
      },
      std::move(done));
}

absl::StatusOr<ProgressResult> Coordinator::Impl::ReportProgress(
    const ProgressReport& report, std::function<void(absl::StatusOr<ProgressResult>)> done) {
  return WithJob(
      report.job_id,
      [&](Job& job) -> absl::StatusOr<ProgressResult> {
        ASSIGN_OR_RETURN(Worker * worker, Member(job, report.worker_id));
        if (job.record.state() == v1::JOB_STATE_CANCELLED) return RequireRunning(job);
        if (report.request_id.empty() || report.request_id.size() > kMaxIdBytes) {
          return absl::InvalidArgumentError(
              absl::StrCat("request_id: must be 1-", kMaxIdBytes, " characters"));
        }
        if (report.generation < job.record.rollback_generation()) {
          return absl::AbortedError(absl::StrCat(
              "generation ", report.generation, " was rolled back by generation ",
              job.record.rollback_generation(), ": resume from step ", job.gen.resume_step()));
        }
        if (report.generation > job.gen.number()) {
          return absl::InvalidArgumentError(
              absl::StrCat("generation ", report.generation,
                           " does not exist yet (current: ", job.gen.number(), ")"));
        }
        if (auto it = worker->recent.find(report.request_id); it != worker->recent.end()) {
          const RecentReport& recent = it->second;
          if (recent.shard != report.shard || recent.offset != report.offset ||
              recent.step != report.step) {
            return absl::InvalidArgumentError(absl::StrCat(
                "request_id ", report.request_id, " was used for another report (shard ",
                recent.shard, ", offset ", recent.offset, ", step ", recent.step, ")"));
          }
          ProgressResult result;
          result.duplicate = true;
          if (report.shard < job.ledger.shards().size()) {
            result.consumed_offset = job.ledger.shards()[report.shard].consumed;
          }
          return result;
        }
        if (report.step <= worker->record.last_ended_step()) {
          return absl::FailedPreconditionError(absl::StrCat(
              "worker ", report.worker_id, " already ended step ", worker->record.last_ended_step(),
              "; progress for step ", report.step, " comes too late"));
        }
        RETURN_IF_ERROR(
            job.ledger.Report(report.shard, report.worker_id, report.offset, report.step));
        worker->recent[report.request_id] = {report.shard, report.offset, report.step};
        worker->recent_order.push_back(report.request_id);
        if (worker->recent_order.size() > kMaxRecentRequests) {
          worker->recent.erase(worker->recent_order.front());
          worker->recent_order.pop_front();
        }
        const ci::Shard& shard = job.ledger.shards()[report.shard];
        ProgressResult result;
        result.consumed_offset = shard.consumed;
        result.shard_finished = shard.consumed == shard.size;
        return result;
      },
      std::move(done));
}

absl::StatusOr<StepResult> Coordinator::Impl::EndStep(absl::string_view job_id,
                                                      absl::string_view worker_id, uint64_t step) {
  return WithJob(job_id, [&](Job& job) -> absl::StatusOr<StepResult> {
    ASSIGN_OR_RETURN(Worker * worker, Member(job, worker_id));
    // A worker still in a rolled-back generation ended a step of a lineage
    // that no longer counts: it learns to regroup, and nothing is recorded.
    const bool rolled_back = worker->record.active_generation() < job.record.rollback_generation();
    if (!rolled_back && step > worker->record.last_ended_step()) {
      worker->record.set_last_ended_step(step);
      job.TouchWorker(*worker);
      if (job.gen.formed() && HasJoiners(job)) {
        // Members of a formed generation are at most a step apart, so the
        // boundary is the step after the first report: everyone reaches it.
        if (job.record.regroup_at_step() == 0) {
          job.record.set_regroup_at_step(step + 1);
          job.dirty = true;
        } else if (step >= job.record.regroup_at_step()) {
          RETURN_IF_ERROR(Regroup(job, /*rollback=*/false, step));
        }
      }
    }
    StepResult result;
    result.generation = job.gen.number();
    result.regroup = worker->record.active_generation() != job.gen.number();
    auto answer = job.checkpoint_answers.find(step);
    if (answer == job.checkpoint_answers.end()) {
      answer = job.checkpoint_answers.emplace(step, ShouldCheckpointLocked(job, step)).first;
      while (job.checkpoint_answers.size() > 8) {
        job.checkpoint_answers.erase(job.checkpoint_answers.begin());
      }
    }
    result.should_checkpoint = answer->second && step > job.record.committed_step();
    result.job_state = job.record.state();
    return result;
  });
}

absl::StatusOr<LedgerView> Coordinator::Impl::GetLedger(absl::string_view job_id) {
  return WithJob(job_id, [&](Job& job) -> absl::StatusOr<LedgerView> {
    LedgerView view;
    view.epoch = job.ledger.epoch();
    view.committed_step = job.record.committed_step();
    const auto& shards = job.ledger.shards();
    for (uint32_t i = 0; i < shards.size(); ++i) {
      const ci::Shard& shard = shards[i];
      ShardView out;
      out.id = i;
      out.name = shard.name;
      out.size = shard.size;
      out.committed_offset = shard.committed;
      out.consumed_offset = shard.consumed;
      out.holder = shard.holder;
      out.lease_from_offset = shard.lease_from;
      if (shard.committed == shard.size) {
        out.state = ShardView::State::kDone;
      } else if (!shard.holder.empty()) {
        out.state = ShardView::State::kLeased;
        out.lease_until = job.workers.at(shard.holder).lease_expiry;
      } else if (shard.consumed == shard.size) {
        out.state = ShardView::State::kConsumed;
      }
      view.shards.push_back(std::move(out));
    }
    return view;
  });
}

// ---- checkpoints --------------------------------------------------------------------

absl::StatusOr<Coordinator::Impl::PendingCommit> Coordinator::Impl::PrepareCommit(
    absl::string_view job_id, absl::string_view worker_id, uint64_t step, bool snapshot) {
  return WithJob(job_id, [&](Job& job) -> absl::StatusOr<PendingCommit> {
    ASSIGN_OR_RETURN(Worker * worker, Member(job, worker_id));
    (void)worker;
    PendingCommit pending;
    pending.generation = job.gen.number();
    pending.world_size = static_cast<uint32_t>(job.gen.members_size());
    for (int i = 0; i < job.gen.members_size(); ++i) {
      if (job.gen.members(i) == worker_id) pending.rank = static_cast<uint32_t>(i);
    }
    if (job.record.state() == v1::JOB_STATE_CANCELLED) return RequireRunning(job);
    if (job.commit_in_progress) {
      return absl::AbortedError(
          absl::StrCat("another checkpoint of job ", job.id(), " is being committed"));
    }
    if (step <= job.record.committed_step()) {
      return absl::AlreadyExistsError(absl::StrCat("step ", step, " is not after job ", job.id(),
                                                   "'s committed step ",
                                                   job.record.committed_step()));
    }
    std::vector<std::string> behind;
    for (const std::string& id : job.gen.members()) {
      if (job.workers.at(id).record.last_ended_step() < step) behind.push_back(id);
    }
    if (!behind.empty()) {
      return absl::FailedPreconditionError(absl::StrCat("members ", absl::StrJoin(behind, ", "),
                                                        " have not ended step ", step, " yet"));
    }
    if (snapshot) {
      pending.snapshot = job.ledger.SnapshotAt(step, job.record.spec().dataset().epochs());
      pending.rollback_generation = job.record.rollback_generation();
      job.commit_in_progress = true;
    }
    return pending;
  });
}

absl::Status Coordinator::Impl::FinishCommit(absl::string_view job_id, const PendingCommit& pending,
                                             absl::Status stored) {
  RetentionPolicy retention;
  uint64_t ticket = 0;
  {
    absl::MutexLock lock(&mu_);
    ASSIGN_OR_RETURN(Job * job, FindJob(job_id));
    job->commit_in_progress = false;
    RETURN_IF_ERROR(stored);
    // The checkpoint is committed: memory follows, whatever happened meanwhile.
    job->ledger.ApplyCommitted(pending.snapshot);
    job->record.set_committed_step(pending.snapshot.step());
    job->record.set_last_checkpoint_unix_ms(ToUnixMs(Now()));
    if (CompletedBy(*job, pending.snapshot)) job->record.set_state(v1::JOB_STATE_FINISHED);
    job->dirty = true;
    if (job->record.rollback_generation() != pending.rollback_generation) {
      // A rollback generation was made during the commit, from the older
      // checkpoint: make a new one that resumes from this one.
      RETURN_IF_ERROR(Regroup(*job, /*rollback=*/true, 0));
    }
    RETURN_IF_ERROR(broken_);
    ASSIGN_OR_RETURN(ticket, Flush(*job));
    const v1::CheckpointPolicy& policy = job->record.spec().checkpoint();
    retention.keep_last = std::max<uint32_t>(policy.keep_last(), 1);
    retention.keep_every = policy.keep_every();
  }
  RETURN_IF_ERROR(AwaitDurable(ticket));
  const auto deleted = checkpoints_->ApplyRetention(job_id, retention);
  if (!deleted.ok()) {
    return Annotate(deleted.status(), absl::StrCat("step ", pending.snapshot.step(),
                                                   " committed, but retention failed"));
  }
  return absl::OkStatus();
}

absl::Status Coordinator::Impl::CommitCheckpoint(absl::string_view job_id,
                                                 absl::string_view worker_id, uint64_t step,
                                                 absl::Span<const TensorToSave> tensors,
                                                 absl::Span<const BlobToSave> blobs) {
  ASSIGN_OR_RETURN(PendingCommit pending, PrepareCommit(job_id, worker_id, step, true));
  const Record ledger{ci::LedgerRecordKey(job_id), pending.snapshot.SerializeAsString()};
  const absl::Status stored =
      checkpoints_->Save(job_id, step, tensors, blobs, absl::MakeConstSpan(&ledger, 1));
  return FinishCommit(job_id, pending, stored);
}

namespace {

// Counts an upload's bytes against CoordinatorOptions.max_checkpoint_bytes;
// once over, the upload stays refused.
class UploadBudget {
 public:
  UploadBudget(uint64_t max_bytes, uint64_t step) : max_bytes_(max_bytes), step_(step) {}
  absl::Status Take(size_t bytes) {
    if (status_.ok() && bytes > max_bytes_ - used_) status_ = Exceeded(max_bytes_, step_);
    if (status_.ok()) used_ += bytes;
    return status_;
  }
  const absl::Status& status() const { return status_; }

  static absl::Status Exceeded(uint64_t max_bytes, uint64_t step) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the checkpoint of step ", step, " is over the coordinator's limit of ",
                     max_bytes, " bytes (--max-checkpoint-bytes); nothing is committed"));
  }

 private:
  const uint64_t max_bytes_;
  const uint64_t step_;
  uint64_t used_ = 0;
  absl::Status status_;
};

// A CheckpointWriter whose Commit adds the ledger record, under the
// coordinator's checks.
class LedgerCommittingWriter final : public CheckpointWriter {
 public:
  LedgerCommittingWriter(Coordinator::Impl* impl, std::string job_id, std::string worker_id,
                         uint64_t step, uint64_t max_bytes, std::unique_ptr<CheckpointWriter> inner)
      : impl_(impl),
        job_id_(std::move(job_id)),
        worker_id_(std::move(worker_id)),
        step_(step),
        budget_(max_bytes, step),
        inner_(std::move(inner)) {}

  absl::Status BeginEntry(absl::string_view name, EntryKind kind, DType dtype,
                          std::vector<int64_t> shape) override {
    return inner_->BeginEntry(name, kind, dtype, std::move(shape));
  }
  absl::Status Append(const void* data, size_t size_bytes) override {
    RETURN_IF_ERROR(budget_.Take(size_bytes));
    return inner_->Append(data, size_bytes);
  }
  absl::Status Commit(absl::Span<const Record> records) override;

 private:
  Coordinator::Impl* const impl_;  // not owned; outlives the writer (the store's rule)
  const std::string job_id_;
  const std::string worker_id_;
  const uint64_t step_;
  UploadBudget budget_;
  std::unique_ptr<CheckpointWriter> inner_;
};

}  // namespace

absl::Status LedgerCommittingWriter::Commit(absl::Span<const Record> records) {
  RETURN_IF_ERROR(budget_.status());
  for (const Record& record : records) {
    if (absl::StartsWith(record.key, "coordinator/")) {
      return absl::InvalidArgumentError(
          absl::StrCat("record key ", record.key, " is reserved for the coordinator"));
    }
  }
  ASSIGN_OR_RETURN(Coordinator::Impl::PendingCommit pending,
                   impl_->PrepareCommit(job_id_, worker_id_, step_, true));
  std::vector<Record> all(records.begin(), records.end());
  all.push_back({ci::LedgerRecordKey(job_id_), pending.snapshot.SerializeAsString()});
  return impl_->FinishCommit(job_id_, pending, inner_->Commit(all));
}

absl::StatusOr<std::unique_ptr<CheckpointWriter>> Coordinator::Impl::BeginCheckpoint(
    absl::string_view job_id, absl::string_view worker_id, uint64_t step) {
  RETURN_IF_ERROR(PrepareCommit(job_id, worker_id, step, false).status());
  ASSIGN_OR_RETURN(std::unique_ptr<CheckpointWriter> inner, checkpoints_->BeginSave(job_id, step));
  return std::make_unique<LedgerCommittingWriter>(this, std::string(job_id), std::string(worker_id),
                                                  step, options_.max_checkpoint_bytes,
                                                  std::move(inner));
}

namespace {

// A part of a split upload: spooled as it arrives, handed to the coordinator
// at Finish.
class PartUploadWriter final : public CheckpointPartWriter {
 public:
  PartUploadWriter(Coordinator::Impl* impl, std::string job_id, std::string worker_id,
                   uint64_t step, uint32_t part, uint32_t parts, uint64_t max_bytes,
                   std::unique_ptr<ci::SpooledPart> spooled)
      : impl_(impl),
        job_id_(std::move(job_id)),
        worker_id_(std::move(worker_id)),
        step_(step),
        part_(part),
        parts_(parts),
        budget_(max_bytes, step),
        spooled_(std::move(spooled)) {}

  absl::Status BeginSlice(absl::string_view name, EntryKind kind, DType dtype,
                          std::vector<int64_t> shape, uint64_t offset, uint64_t count) override {
    RETURN_IF_ERROR(Usable());
    return spooled_->BeginSlice(name, kind, dtype, std::move(shape), offset, count);
  }
  absl::Status Append(const void* data, size_t size_bytes) override {
    RETURN_IF_ERROR(Usable());
    RETURN_IF_ERROR(budget_.Take(size_bytes));
    return spooled_->Append(data, size_bytes);
  }
  absl::StatusOr<bool> Finish() override {
    RETURN_IF_ERROR(Usable());
    RETURN_IF_ERROR(budget_.status());
    RETURN_IF_ERROR(spooled_->Close());
    return impl_->HandInPart(job_id_, worker_id_, step_, part_, parts_, std::move(spooled_));
  }

 private:
  absl::Status Usable() const {
    if (spooled_ != nullptr) return absl::OkStatus();
    return absl::FailedPreconditionError(
        absl::StrCat("part ", part_, " of step ", step_, " was handed in already"));
  }

  Coordinator::Impl* const impl_;  // not owned; outlives the writer
  const std::string job_id_;
  const std::string worker_id_;
  const uint64_t step_;
  const uint32_t part_;
  const uint32_t parts_;
  UploadBudget budget_;
  std::unique_ptr<ci::SpooledPart> spooled_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<CheckpointPartWriter>> Coordinator::Impl::BeginCheckpointPart(
    absl::string_view job_id, absl::string_view worker_id, uint64_t step, uint32_t part,
    uint32_t parts) {
  ASSIGN_OR_RETURN(PendingCommit check, PrepareCommit(job_id, worker_id, step, false));
  if (parts != check.world_size || part != check.rank) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint part ", part, " of ", parts, ": worker ", worker_id, " is rank ",
                     check.rank, " of ", check.world_size, " in generation ", check.generation));
  }
  const std::string path = absl::StrCat(options_.data_dir, "/uploads/", job_id, ".", step, ".",
                                        part, ".", spool_counter_.fetch_add(1));
  ASSIGN_OR_RETURN(std::unique_ptr<ci::SpooledPart> spooled, ci::SpooledPart::Create(path));
  return std::make_unique<PartUploadWriter>(this, std::string(job_id), std::string(worker_id), step,
                                            part, parts, options_.max_checkpoint_bytes,
                                            std::move(spooled));
}

absl::StatusOr<bool> Coordinator::Impl::HandInPart(const std::string& job_id,
                                                   const std::string& worker_id, uint64_t step,
                                                   uint32_t part, uint32_t parts,
                                                   std::unique_ptr<ci::SpooledPart> spooled) {
  ASSIGN_OR_RETURN(PendingCommit check, PrepareCommit(job_id, worker_id, step, false));
  if (parts != check.world_size || part != check.rank) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint part ", part, " of ", parts, ": the group changed; worker ",
                     worker_id, " is now rank ", check.rank, " of ", check.world_size));
  }
  std::vector<std::unique_ptr<ci::SpooledPart>> all;
  {
    absl::MutexLock lock(&parts_mu_);
    PartSet& set = part_sets_[job_id];
    if (set.step != step || set.generation != check.generation || set.parts.size() != parts) {
      set = PartSet{step, check.generation, {}};
      set.parts.resize(parts);
    }
    set.parts[part] = std::move(spooled);
    for (const auto& p : set.parts) {
      if (p == nullptr) return false;  // the others are still on their way
    }
    all = std::move(set.parts);
    part_sets_.erase(job_id);
  }
  std::vector<const ci::SpooledPart*> views;
  uint64_t total = 0;
  for (const auto& p : all) {
    views.push_back(p.get());
    total += p->bytes();
  }
  if (total > options_.max_checkpoint_bytes) {
    return UploadBudget::Exceeded(options_.max_checkpoint_bytes, step);  // the set is dropped
  }

  const absl::Status committed = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(PendingCommit pending, PrepareCommit(job_id, worker_id, step, true));
    const absl::Status stored = [&]() -> absl::Status {
      ASSIGN_OR_RETURN(std::unique_ptr<CheckpointWriter> writer,
                       checkpoints_->BeginSave(job_id, step));
      RETURN_IF_ERROR(ci::JoinParts(views, writer.get()));
      const Record ledger{ci::LedgerRecordKey(job_id), pending.snapshot.SerializeAsString()};
      return writer->Commit(absl::MakeConstSpan(&ledger, 1));
    }();
    return FinishCommit(job_id, pending, stored);
  }();
  if (!committed.ok() && committed.code() != absl::StatusCode::kInvalidArgument) {
    // Not the parts' fault (another commit was running, say): keep the
    // others, so that this part sent again completes the set.
    absl::MutexLock lock(&parts_mu_);
    PartSet& set = part_sets_[job_id];
    if (set.parts.empty()) {
      all[part].reset();
      set = PartSet{step, check.generation, std::move(all)};
    }
  }
  RETURN_IF_ERROR(committed);
  return true;
}

absl::Status Coordinator::Impl::Tick() {
  uint64_t ticket = 0;
  {
    absl::MutexLock lock(&mu_);
    RETURN_IF_ERROR(broken_);
    for (auto& [id, job] : jobs_) {
      RETURN_IF_ERROR(Evaluate(*job));
      ASSIGN_OR_RETURN(const uint64_t flushed, Flush(*job));
      ticket = std::max(ticket, flushed);
    }
  }
  return AwaitDurable(ticket);
}

// ---- loading and reconciling ------------------------------------------------------

absl::Status Coordinator::Impl::Load() {
  absl::MutexLock lock(&mu_);
  ASSIGN_OR_RETURN(std::optional<std::string> key, db_->Get(ci::kSigningKeyKey));
  if (!key.has_value()) {
    ASSIGN_OR_RETURN(std::string fresh, ci::RandomBytes(ci::kSigningKeyBytes));
    RETURN_IF_ERROR(db_->Put(ci::kSigningKeyKey, fresh));
    key = std::move(fresh);
  }
  signing_key_ = *key;
  RETURN_IF_ERROR(db_->Scan("tok/", [&](absl::string_view k, absl::string_view value) {
    cs::TokenRecord record;
    if (!record.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
      return absl::DataLossError(absl::StrCat("state key ", k, " does not parse"));
    }
    tokens_[std::string(k.substr(4))] = record;
    return absl::OkStatus();
  }));

  struct Loaded {
    std::optional<cs::JobRecord> record;
    cs::GenerationRecord gen;
    std::vector<cs::WorkerRecord> workers;
    std::map<uint32_t, ci::Shard> shards;
  };
  std::map<std::string, Loaded> loaded;
  RETURN_IF_ERROR(db_->Scan("job/", [&](absl::string_view k, absl::string_view value) {
    const std::vector<std::string> parts = absl::StrSplit(k.substr(4), '/');
    const auto corrupt = [&] {
      return absl::DataLossError(absl::StrCat("state key ", k, " does not parse"));
    };
    Loaded& job = loaded[parts[0]];
    const int size = static_cast<int>(value.size());
    if (parts.size() == 1) {
      job.record.emplace();
      if (!job.record->ParseFromArray(value.data(), size)) return corrupt();
    } else if (parts.size() == 2 && parts[1] == "gen") {
      if (!job.gen.ParseFromArray(value.data(), size)) return corrupt();
    } else if (parts.size() == 3 && parts[1] == "w") {
      if (!job.workers.emplace_back().ParseFromArray(value.data(), size)) return corrupt();
    } else if (parts.size() == 3 && parts[1] == "s") {
      uint32_t index = 0;
      cs::ShardRecord shard;
      if (!absl::SimpleAtoi(parts[2], &index) || !shard.ParseFromArray(value.data(), size)) {
        return corrupt();
      }
      job.shards[index] = ci::ShardLedger::FromRecord(shard);
    } else {
      return corrupt();
    }
    return absl::OkStatus();
  }));

  const absl::Time now = Now();
  for (auto& [job_id, parts] : loaded) {
    if (!parts.record.has_value()) {
      return absl::DataLossError(absl::StrCat("job ", job_id, " has state but no job record"));
    }
    auto job = std::make_unique<Job>();
    job->record = std::move(*parts.record);
    job->gen = std::move(parts.gen);
    job->gen_created = now;
    std::vector<ci::Shard> shards;
    for (auto& [index, shard] : parts.shards) {
      if (index != shards.size()) {
        return absl::DataLossError(
            absl::StrCat("job ", job_id, ": shard ", shards.size(), " is missing from the state"));
      }
      shards.push_back(std::move(shard));
    }
    job->ledger = ci::ShardLedger(std::move(shards), job->record.epoch());
    for (cs::WorkerRecord& record : parts.workers) {
      Worker worker;
      worker.record = std::move(record);
      // The grace period: every live worker gets a fresh lease from now.
      worker.lease_expiry = now + options_.restart_grace;
      job->workers.emplace(worker.record.worker_id(), std::move(worker));
    }
    // The checkpoint store's record is the truth about committed progress: it
    // committed with the model, while the state database may lag it by one
    // commit (a crash between the two writes) and holds uncommitted reports.
    ASSIGN_OR_RETURN(std::optional<std::string> committed,
                     checkpoints_->GetRecord(ci::LedgerRecordKey(job_id)));
    if (committed.has_value()) {
      cs::LedgerSnapshot snapshot;
      if (!snapshot.ParseFromString(*committed)) {
        return absl::DataLossError(
            absl::StrCat("job ", job_id, ": the ledger record does not parse"));
      }
      ASSIGN_OR_RETURN(std::vector<uint64_t> steps, checkpoints_->ListSteps(job_id));
      if (std::find(steps.begin(), steps.end(), snapshot.step()) == steps.end()) {
        return absl::DataLossError(absl::StrCat("job ", job_id, ": the ledger record is of step ",
                                                snapshot.step(),
                                                ", whose checkpoint is not in the store"));
      }
      RETURN_IF_ERROR(Annotate(job->ledger.ResetTo(snapshot), absl::StrCat("job ", job_id)));
      job->record.set_committed_step(snapshot.step());
      if (CompletedBy(*job, snapshot)) job->record.set_state(v1::JOB_STATE_FINISHED);
    } else {
      job->ledger.RevertUncommitted();
    }
    job->dirty = true;
    bool had_members = false;
    for (auto& [id, worker] : job->workers) had_members = had_members || worker.member();
    if (had_members || HasJoiners(*job)) {
      // Uncommitted progress was reverted: the group resumes from the checkpoint.
      RETURN_IF_ERROR(Regroup(*job, /*rollback=*/true, 0));
    }
    Job& added = *job;
    jobs_.emplace(job_id, std::move(job));
    RETURN_IF_ERROR(Flush(added).status());
  }
  return absl::OkStatus();
}

// ---- Coordinator ---------------------------------------------------------------------

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
  if (error)
    return ErrnoStatus(error.value(), absl::StrCat("creating ", (dir / "uploads").string()));
  auto impl = std::make_unique<Impl>(std::move(options), std::move(db), std::move(checkpoints));
  RETURN_IF_ERROR(impl->Load());
  RETURN_IF_ERROR(impl->SyncAll());
  return std::unique_ptr<Coordinator>(new Coordinator(std::move(impl)));
}

Coordinator::Coordinator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Coordinator::~Coordinator() = default;

absl::StatusOr<v1::JobStatus> Coordinator::SubmitJob(absl::string_view admin_token,
                                                     const v1::JobSpec& spec) {
  return impl_->SubmitJob(admin_token, spec);
}
absl::StatusOr<v1::JobStatus> Coordinator::GetJob(absl::string_view job_id) {
  return impl_->GetJob(job_id);
}
absl::StatusOr<std::vector<v1::JobStatus>> Coordinator::ListJobs() { return impl_->ListJobs(); }
absl::Status Coordinator::PauseJob(absl::string_view admin_token, absl::string_view job_id) {
  return impl_->SetJobState(admin_token, job_id, v1::JOB_STATE_PAUSED);
}
absl::Status Coordinator::ResumeJob(absl::string_view admin_token, absl::string_view job_id) {
  return impl_->SetJobState(admin_token, job_id, v1::JOB_STATE_RUNNING);
}
absl::Status Coordinator::CancelJob(absl::string_view admin_token, absl::string_view job_id) {
  return impl_->SetJobState(admin_token, job_id, v1::JOB_STATE_CANCELLED);
}
absl::StatusOr<v1::JobStatus> Coordinator::ExtendJob(absl::string_view admin_token,
                                                     absl::string_view job_id, uint64_t max_steps) {
  return impl_->ExtendJob(admin_token, job_id, max_steps);
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
  return impl_->VerifyToken(ci::kAdminJob, token);
}
absl::StatusOr<WorkerStatus> Coordinator::Join(const JoinRequest& request) {
  return impl_->Join(request);
}
absl::StatusOr<WorkerStatus> Coordinator::Heartbeat(absl::string_view job_id,
                                                    absl::string_view worker_id) {
  return impl_->Heartbeat(job_id, worker_id);
}
absl::Status Coordinator::Leave(absl::string_view job_id, absl::string_view worker_id) {
  return impl_->Leave(job_id, worker_id);
}
absl::StatusOr<uint64_t> Coordinator::ReportFailure(absl::string_view job_id,
                                                    absl::string_view reporter,
                                                    absl::string_view failed) {
  return impl_->ReportFailure(job_id, reporter, failed);
}
absl::StatusOr<RendezvousResult> Coordinator::Rendezvous(absl::string_view job_id,
                                                         absl::string_view worker_id,
                                                         uint64_t generation) {
  return impl_->Rendezvous(job_id, worker_id, generation);
}
absl::StatusOr<std::vector<WorkerView>> Coordinator::ListWorkers(absl::string_view job_id) {
  return impl_->ListWorkers(job_id);
}
absl::StatusOr<ShardLease> Coordinator::AcquireShard(absl::string_view job_id,
                                                     absl::string_view worker_id) {
  return impl_->AcquireShard(job_id, worker_id);
}
void Coordinator::HeartbeatAsync(absl::string_view job_id, absl::string_view worker_id,
                                 std::function<void(absl::StatusOr<WorkerStatus>)> done) {
  // The answer goes to `done`; the returned copy is not needed.
  (void)impl_->Heartbeat(job_id, worker_id, std::move(done));
}
void Coordinator::AcquireShardAsync(absl::string_view job_id, absl::string_view worker_id,
                                    std::function<void(absl::StatusOr<ShardLease>)> done) {
  // The answer goes to `done`; the returned copy is not needed.
  (void)impl_->AcquireShard(job_id, worker_id, std::move(done));
}
void Coordinator::ReportProgressAsync(const ProgressReport& report,
                                      std::function<void(absl::StatusOr<ProgressResult>)> done) {
  // The answer goes to `done`; the returned copy is not needed.
  (void)impl_->ReportProgress(report, std::move(done));
}
absl::StatusOr<ProgressResult> Coordinator::ReportProgress(const ProgressReport& report) {
  return impl_->ReportProgress(report);
}
absl::StatusOr<StepResult> Coordinator::EndStep(absl::string_view job_id,
                                                absl::string_view worker_id, uint64_t step) {
  return impl_->EndStep(job_id, worker_id, step);
}
absl::StatusOr<bool> Coordinator::ShouldCheckpoint(absl::string_view job_id, uint64_t step) {
  return impl_->ShouldCheckpoint(job_id, step);
}
absl::StatusOr<LedgerView> Coordinator::GetLedger(absl::string_view job_id) {
  return impl_->GetLedger(job_id);
}
absl::Status Coordinator::CommitCheckpoint(absl::string_view job_id, absl::string_view worker_id,
                                           uint64_t step, absl::Span<const TensorToSave> tensors,
                                           absl::Span<const BlobToSave> blobs) {
  return impl_->CommitCheckpoint(job_id, worker_id, step, tensors, blobs);
}
absl::StatusOr<std::unique_ptr<CheckpointWriter>> Coordinator::BeginCheckpoint(
    absl::string_view job_id, absl::string_view worker_id, uint64_t step) {
  return impl_->BeginCheckpoint(job_id, worker_id, step);
}
absl::StatusOr<std::unique_ptr<CheckpointPartWriter>> Coordinator::BeginCheckpointPart(
    absl::string_view job_id, absl::string_view worker_id, uint64_t step, uint32_t part,
    uint32_t parts) {
  return impl_->BeginCheckpointPart(job_id, worker_id, step, part, parts);
}
CheckpointStore* Coordinator::checkpoints() { return impl_->checkpoints(); }
absl::Status Coordinator::Tick() { return impl_->Tick(); }

}  // namespace potluck
