#include "coordinator/internal/membership.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

#include "common/failure.h"
#include "common/status.h"
#include "coordinator/internal/token.h"

namespace potluck::coordinator_internal {
namespace {

int64_t ToUnixMs(absl::Time time) { return absl::ToUnixMillis(time); }

// What a leaving member may say about itself: kept with the job, shown to
// its members and the admin.
constexpr size_t kMaxLeaveReasonBytes = 512;

// `text` with every byte that is not printable ASCII as '?', cut to `limit`.
std::string Printable(absl::string_view text, size_t limit) {
  std::string out(text.substr(0, limit));
  for (char& c : out) {
    if (!absl::ascii_isprint(static_cast<unsigned char>(c))) c = '?';
  }
  if (text.size() > limit) out += "...";
  return out;
}

}  // namespace

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

absl::Status EvaluateExpiries(Job& job, const CallContext& ctx) {
  const absl::Time now = ctx.now;
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
      now >= job.gen_created + ctx.rendezvous_timeout) {
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
  if (lost_member) return Regroup(job, /*rollback=*/true, 0, ctx);
  return absl::OkStatus();
}

absl::StatusOr<Worker*> LiveWorker(Job& job, absl::string_view worker_id, const CallContext& ctx) {
  auto it = job.workers.find(worker_id);
  if (it == job.workers.end()) {
    return absl::NotFoundError(absl::StrCat("worker ", worker_id, " is not in job ", job.id()));
  }
  Worker& worker = it->second;
  if (!worker.alive()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "worker ", worker_id, " is dead (", worker.record.dead_reason(), "); join again"));
  }
  worker.lease_expiry = ctx.now + ctx.lease;
  worker.called_since_join = true;
  // Shorter than a restart's grace lease, so it may come first.
  job.next_lease_check = std::min(job.next_lease_check, worker.lease_expiry);
  return &worker;
}

absl::StatusOr<Worker*> Member(Job& job, absl::string_view worker_id, const CallContext& ctx) {
  ASSIGN_OR_RETURN(Worker * worker, LiveWorker(job, worker_id, ctx));
  if (!worker->member()) {
    return WithFailure(absl::FailedPreconditionError(
                           absl::StrCat("worker ", worker_id, " waits in the join window of job ",
                                        job.id(), " (generation ", job.gen.number(), ")")),
                       Failure::kWaitingForAdmission);
  }
  return worker;
}

void MarkDead(Job& job, Worker& worker, absl::string_view reason) {
  worker.record.set_phase(cs::WORKER_PHASE_DEAD);
  worker.record.set_dead_reason(std::string(reason));
  job.ledger.Release(worker.record.worker_id());
  job.TouchWorker(worker);
}

absl::Status CheckTokenCap(const Job& job, absl::string_view token_id,
                           absl::string_view worker_id) {
  const uint32_t configured = job.record.spec().access().max_workers_per_token();
  const uint32_t cap = configured > 0 ? configured : kDefaultWorkersPerToken;
  uint32_t live = 0;
  for (const auto& [id, worker] : job.workers) {
    if (worker.alive() && id != worker_id && worker.record.token_id() == token_id) ++live;
  }
  if (live < cap) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(
      "join token ", token_id, " already has ", live, " live workers in job ", job.id(),
      ", its cap (access.max_workers_per_token): one must leave or lapse first"));
}

std::string LiveMemberTokenId(const Job& job, absl::string_view worker_id, const CallContext& ctx) {
  const auto it = job.workers.find(worker_id);
  if (it == job.workers.end() || !it->second.alive() || it->second.lease_expiry <= ctx.now) {
    return "";
  }
  return it->second.record.token_id();
}

bool Admissible(const Worker& worker) {
  return worker.record.phase() == cs::WORKER_PHASE_WAITING && worker.called_since_join;
}

bool HasJoiners(const Job& job) {
  return std::any_of(job.workers.begin(), job.workers.end(),
                     [](const auto& entry) { return Admissible(entry.second); });
}

absl::Status Regroup(Job& job, bool rollback, uint64_t boundary_step, const CallContext& ctx) {
  ASSIGN_OR_RETURN(std::string secret, RandomBytes(kSecretBytes));
  const cs::GenerationRecord& old = job.gen;
  cs::GenerationRecord next;
  next.set_number(old.number() + 1);
  next.set_secret(std::move(secret));
  next.set_created_unix_ms(ToUnixMs(ctx.now));
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
      worker.progress_tokens = 0;
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
    if (Admissible(worker)) joiners.push_back(&worker);
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
  job.gen_created = ctx.now;
  job.arrived.clear();
  job.accusations.clear();
  job.record.set_regroup_at_step(0);
  job.dirty = true;
  return absl::OkStatus();
}

absl::StatusOr<WorkerStatus> Join(Job& job, const std::string& worker_id,
                                  const std::string& endpoint, const CallContext& ctx) {
  auto it = job.workers.find(worker_id);
  if (it != job.workers.end() && it->second.record.evicted()) {
    return absl::PermissionDeniedError(absl::StrCat("worker ", worker_id, " was evicted from job ",
                                                    job.id(),
                                                    " by its admin and may not join again"));
  }
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
  worker.record.set_endpoint(endpoint);
  worker.lease_expiry = ctx.now + ctx.lease;
  // Admitted only once it calls again (Rendezvous or Heartbeat): a Join
  // alone, a process that never comes, makes no generation wait for it.
  worker.called_since_join = false;
  job.next_lease_check = std::min(job.next_lease_check, worker.lease_expiry);
  job.TouchWorker(worker);
  if (rollback) RETURN_IF_ERROR(Regroup(job, /*rollback=*/true, 0, ctx));
  return StatusOf(job, worker);
}

absl::StatusOr<std::string> Evict(Job& job, absl::string_view worker_id, const CallContext& ctx) {
  auto it = job.workers.find(worker_id);
  if (it == job.workers.end()) {
    return absl::NotFoundError(absl::StrCat("worker ", worker_id, " is not in job ", job.id()));
  }
  Worker& worker = it->second;
  const bool was_member = worker.member();
  if (worker.alive()) MarkDead(job, worker, "evicted by the job's admin");
  worker.record.set_evicted(true);
  job.TouchWorker(worker);
  if (was_member) RETURN_IF_ERROR(Regroup(job, /*rollback=*/true, 0, ctx));
  return worker.record.token_id();
}

absl::StatusOr<WorkerStatus> Heartbeat(Job& job, absl::string_view worker_id,
                                       const CallContext& ctx) {
  ASSIGN_OR_RETURN(Worker * worker, LiveWorker(job, worker_id, ctx));
  return StatusOf(job, *worker);
}

absl::Status Leave(Job& job, absl::string_view worker_id, const LeaveReason& reason,
                   const CallContext& ctx) {
  ASSIGN_OR_RETURN(Worker * worker, LiveWorker(job, worker_id, ctx));
  const bool was_member = worker->member();
  if (reason.failure == Failure::kUnspecified && reason.message.empty()) {
    MarkDead(job, *worker, "left");
  } else {
    // The member's own words, bounded and printable: the job's members
    // and the admin read them in its status.
    const std::string said = absl::StrCat(
        "worker ", worker_id, " stopped after step ", worker->record.last_ended_step(), " (",
        FailureName(reason.failure), "): ", Printable(reason.message, kMaxLeaveReasonBytes));
    MarkDead(job, *worker, said);
    if (reason.failure == Failure::kDatasetChanged ||
        reason.failure == Failure::kCheckpointUnusable) {
      job.record.set_problem(said);
      job.dirty = true;
    }
  }
  if (was_member) return Regroup(job, /*rollback=*/true, 0, ctx);
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> ReportFailure(Job& job, absl::string_view reporter,
                                       absl::string_view failed, const CallContext& ctx) {
  if (reporter == failed) {
    return absl::InvalidArgumentError("a worker cannot report itself failed; Leave instead");
  }
  ASSIGN_OR_RETURN(Worker * by, LiveWorker(job, reporter, ctx));
  if (!by->member()) {
    return absl::PermissionDeniedError(
        absl::StrCat("worker ", reporter, " is not a member; only members report failures"));
  }
  auto it = job.workers.find(failed);
  if (it == job.workers.end()) {
    return absl::NotFoundError(absl::StrCat("worker ", failed, " is not in job ", job.id()));
  }
  if (!it->second.member()) return job.gen.number();
  // Evidence, not a verdict: one member's word cannot evict a healthy peer.
  // A majority of the accused's peers must agree (so never in a group of
  // two); otherwise the accused's own lease decides, as for any member.
  std::set<std::string>& reporters = job.accusations[std::string(failed)];
  reporters.insert(std::string(reporter));
  const size_t peers = static_cast<size_t>(std::max(job.gen.members_size() - 1, 0));
  if (reporters.size() >= 2 && 2 * reporters.size() > peers) {
    MarkDead(job, it->second,
             absl::StrCat("reported failed by ", reporters.size(), " of its ", peers,
                          " peers in generation ", job.gen.number()));
    RETURN_IF_ERROR(Regroup(job, /*rollback=*/true, 0, ctx));
  }
  return job.gen.number();
}

absl::StatusOr<RendezvousResult> Rendezvous(Job& job, absl::string_view worker_id,
                                            uint64_t generation, const CallContext& ctx) {
  ASSIGN_OR_RETURN(Worker * worker, LiveWorker(job, worker_id, ctx));
  if (generation > job.gen.number()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "generation ", generation, " does not exist yet (current: ", job.gen.number(), ")"));
  }
  RendezvousResult result;
  if (generation == job.gen.number() && !job.gen.formed() && HasJoiners(job)) {
    // Nobody trains in an unformed generation: admit the joiners now.
    RETURN_IF_ERROR(Regroup(job, /*rollback=*/false, 0, ctx));
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
    result.deadline = job.gen_created + ctx.rendezvous_timeout;
    return result;
  }
  if (worker->record.active_generation() != job.gen.number()) {
    worker->record.set_active_generation(job.gen.number());
    job.TouchWorker(*worker);
  }
  result.state = RendezvousResult::State::kReady;
  result.view = View(job);
  return result;
}

std::vector<WorkerView> ListWorkers(const Job& job) {
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
    if (worker.member()) view.rank = RankOf(job, id);
    out.push_back(std::move(view));
  }
  return out;
}

}  // namespace potluck::coordinator_internal
