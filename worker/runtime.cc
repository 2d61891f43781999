#include "worker/runtime.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"

#include "collectives/rendezvous.h"
#include "collectives/tcp_communicator.h"
#include "collectives/tcp_transport.h"
#include "common/failure.h"
#include "common/status.h"
#include "data/dataset.h"
#include "data/token_shard.h"
#include "worker/compute_threads.h"
#include "worker/data_feed.h"
#include "worker/model_io.h"
#include "worker/trainer.h"

namespace potluck {

namespace v1 = potluck::v1;

namespace {

constexpr absl::Duration kPoll = absl::Milliseconds(20);

// The endpoints of a formed generation as the TCP transport's rendezvous
// store: every member listens on the port it advertised when it joined.
class ViewStore final : public RendezvousStore {
 public:
  explicit ViewStore(const GroupView& view) {
    for (const GroupMember& m : view.members) {
      endpoints_[absl::StrCat("potluck/", view.generation, "/", m.rank)] = m.endpoint;
    }
  }
  absl::Status Set(absl::string_view, absl::string_view) override { return absl::OkStatus(); }
  absl::StatusOr<std::string> Get(absl::string_view key, absl::Time) override {
    auto it = endpoints_.find(std::string(key));
    if (it == endpoints_.end()) return absl::NotFoundError(absl::StrCat("no endpoint for ", key));
    return it->second;
  }

 private:
  std::map<std::string, std::string> endpoints_;
};

absl::StatusOr<std::string> LoadOrCreateWorkerId(const std::string& state_dir) {
  std::error_code error;
  std::filesystem::create_directories(state_dir, error);
  if (error)
    return absl::InternalError(absl::StrCat("creating ", state_dir, ": ", error.message()));
  const std::string path = state_dir + "/worker_id";
  std::ifstream in(path);
  std::string id;
  if (in >> id && !id.empty()) return id;
  std::random_device device;
  id = absl::StrFormat("w-%08x%08x", device(), device());
  const std::string temp = path + ".tmp";
  {
    std::ofstream out(temp);
    out << id << "\n";
    if (!out) return ErrnoStatus(errno, absl::StrCat("writing ", temp));
  }
  std::filesystem::rename(temp, path, error);
  if (error) return absl::InternalError(absl::StrCat("renaming ", temp, ": ", error.message()));
  return id;
}

bool IsCommunicationError(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kDataLoss:
      return true;
    default:
      return false;
  }
}

// A shard this worker holds, with a read position that only becomes real
// when the step that read it succeeds.
struct HeldShard {
  uint32_t id = 0;
  std::string name;
  uint64_t size = 0;
  uint64_t offset = 0;
  const TokenShard* tokens = nullptr;  // owned by the runtime's cache
};

}  // namespace

class WorkerRuntime::Impl {
 public:
  Impl(CoordinatorClient* client, WorkerOptions options)
      : client_(client), options_(std::move(options)) {}

  ~Impl() { StopHeartbeats(); }

  absl::Status Init() {
    if (options_.state_dir.empty()) return absl::InvalidArgumentError("state_dir is required");
    ASSIGN_OR_RETURN(worker_id_, LoadOrCreateWorkerId(options_.state_dir));
    ASSIGN_OR_RETURN(listener_, TcpListener::Open(options_.bind_host));
    return absl::OkStatus();
  }

  absl::Status Run() {
    RETURN_IF_ERROR(ConfigureComputeThreads(options_.threads).status());
    ASSIGN_OR_RETURN(v1::JobStatus job, Retry([&] { return client_->GetJob(options_.job_id); }));
    if (job.state() == v1::JOB_STATE_FINISHED) return FoundFinished();
    job_ = job.spec();
    max_steps_ = options_.max_steps > 0 ? options_.max_steps : job_.max_steps();
    if (max_steps_ == 0) return absl::InvalidArgumentError("the job has no max_steps; pass one");
    RETURN_IF_ERROR(OpenDataset());
    RETURN_IF_ERROR(FreshModel());
    if (Diloco()) {
      // max_steps counts inner steps; the group stops after the round that
      // reaches them (with a round time limit, rounds may hold fewer).
      const uint64_t h = trainer_->config().inner_steps;
      max_rounds_ = (max_steps_ + h - 1) / h;
    }

    const std::string host =
        options_.advertise_host.empty() ? options_.bind_host : options_.advertise_host;
    JoinRequest join{options_.job_id, options_.token, worker_id_,
                     absl::StrCat(host, ":", listener_->port())};
    absl::StatusOr<WorkerStatus> joined = Retry([&] { return client_->Join(join); });
    // (The job finished since GetJob: kOutOfRange, "no more data".)
    if (joined.status().code() == absl::StatusCode::kOutOfRange) return FoundFinished();
    ASSIGN_OR_RETURN(WorkerStatus status, std::move(joined));
    generation_ = status.generation;
    latest_generation_ = status.generation;
    heartbeat_ = std::thread([this] { Heartbeats(); });

    absl::Status result = Loop();
    StopHeartbeats();
    DropComms();
    if (leave_) (void)client_->Leave(options_.job_id, worker_id_);
    return result;
  }

  void Stop() { stop_ = true; }
  bool found_finished() const { return found_finished_; }

  const std::string& worker_id() const { return worker_id_; }
  uint64_t step() const { return trainer_ ? trainer_->step() : 0; }
  uint64_t rounds() const { return trainer_ ? trainer_->rounds() : 0; }
  uint64_t StateDigest() const { return trainer_ ? trainer_->StateDigest() : 0; }
  uint64_t SharedDigest() const { return trainer_ ? trainer_->OuterDigest() : 0; }
  Model* model() { return model_.get(); }

 private:
  // Retries `call` on kUnavailable with backoff, up to the outage tolerance.
  template <typename Call>
  auto Retry(Call call) -> decltype(call()) {
    absl::Duration backoff = absl::Milliseconds(50);
    const absl::Time give_up = absl::Now() + options_.outage_tolerance;
    while (true) {
      auto result = call();
      if (result.ok() || result.status().code() != absl::StatusCode::kUnavailable ||
          absl::Now() >= give_up || stop_) {
        return result;
      }
      absl::SleepFor(backoff);
      backoff = std::min(backoff * 2, absl::Seconds(2));
    }
  }

  // The job finished before this worker joined: nothing to train.
  absl::Status FoundFinished() {
    found_finished_ = true;
    return absl::OkStatus();
  }

  absl::Status OpenDataset() {
    // The coordinator's dataset directory when this machine can read it (a
    // shared filesystem, or `potluck local`); otherwise fetched files, kept
    // in the state directory.
    std::filesystem::path dir(job_.dataset().manifest());
    if (dir.filename() == kManifestFile) dir = dir.parent_path();
    auto local = LoadDataset(dir.string());
    if (local.ok()) {
      dataset_ = *local;
      return absl::OkStatus();
    }
    const std::string cache = absl::StrCat(options_.state_dir, "/cache/", options_.job_id);
    std::filesystem::create_directories(cache);
    ASSIGN_OR_RETURN(std::string manifest, Retry([&] {
                       return client_->FetchDatasetFile(options_.job_id, kManifestFile);
                     }));
    RETURN_IF_ERROR(WriteFile(cache + "/" + kManifestFile, manifest));
    ASSIGN_OR_RETURN(dataset_, LoadDataset(cache));
    for (const auto* split : {&dataset_.train, &dataset_.validation}) {
      for (const ShardInfo& shard : *split) {
        const std::string path = cache + "/" + shard.file;
        // A cached shard that verifies is kept; TokenShard::Open checks it.
        if (TokenShard::Open(path, dataset_.vocab_size).ok()) continue;
        ASSIGN_OR_RETURN(std::string bytes, Retry([&] {
                           return client_->FetchDatasetFile(options_.job_id, shard.file);
                         }));
        RETURN_IF_ERROR(WriteFile(path, bytes));
        RETURN_IF_ERROR(TokenShard::Open(path, dataset_.vocab_size).status());
      }
    }
    return absl::OkStatus();
  }

  static absl::Status WriteFile(const std::string& path, const std::string& bytes) {
    const std::string temp = path + ".tmp";
    {
      std::ofstream out(temp, std::ios::binary);
      out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
      if (!out) return ErrnoStatus(errno, absl::StrCat("writing ", temp));
    }
    std::error_code error;
    std::filesystem::rename(temp, path, error);
    if (error) return absl::InternalError(absl::StrCat("renaming ", temp, ": ", error.message()));
    return absl::OkStatus();
  }

  absl::StatusOr<const TokenShard*> Shard(const std::string& name) {
    auto it = shards_.find(name);
    if (it != shards_.end()) return it->second.get();
    ASSIGN_OR_RETURN(auto shard, TokenShard::Open(dataset_.dir + "/" + name, dataset_.vocab_size));
    return (shards_[name] = std::move(shard)).get();
  }

  absl::Status FreshModel() {
    trainer_.reset();
    ASSIGN_OR_RETURN(model_, CreateJobModel(job_));
    ASSIGN_OR_RETURN(TrainingConfig config, TrainingConfigFromJob(job_, max_steps_));
    TrainerOptions trainer_options;
    trainer_options.collective_timeout = options_.collective_timeout;
    ASSIGN_OR_RETURN(trainer_, Trainer::Create(model_.get(), config, trainer_options));
    return absl::OkStatus();
  }

  void Heartbeats() {
    while (!heartbeat_stop_.WaitForNotificationWithTimeout(options_.heartbeat_interval)) {
      auto status = client_->Heartbeat(options_.job_id, worker_id_);
      if (status.ok()) {
        coordinator_seen_ = absl::Now();
        NoteGeneration(status->generation);
        if (status->generation != generation_.load()) AbortComm();
      } else if (status.status().code() == absl::StatusCode::kFailedPrecondition ||
                 status.status().code() == absl::StatusCode::kNotFound) {
        must_rejoin_ = true;  // the coordinator counts this worker dead
        AbortComm();
      }
    }
  }

  // Records when a newer generation was first heard of.
  void NoteGeneration(uint64_t generation) {
    absl::MutexLock lock(&heard_mu_);
    if (generation > latest_generation_.load()) {
      latest_generation_ = generation;
      heard_at_ = absl::Now();
    }
  }

  void StopHeartbeats() {
    if (!heartbeat_.joinable()) return;
    heartbeat_stop_.Notify();
    heartbeat_.join();
  }

  void AbortComm() {
    absl::MutexLock lock(&comm_mu_);
    if (data_comm_ != nullptr) data_comm_->Abort();
    if (comm_ != nullptr) comm_->Abort();
  }

  // Aborts and destroys the generation's communicators (the data one first:
  // it may lean on the TCP one).
  void DropComms() {
    AbortComm();
    absl::MutexLock lock(&comm_mu_);
    data_comm_.reset();
    comm_.reset();
  }

  absl::Status Loop() {
    bool need_group = true;
    while (true) {
      if (stop_) {
        leave_ = true;
        return absl::OkStatus();
      }
      if (must_rejoin_) {
        must_rejoin_ = false;
        // Counted dead, this worker lost its lease and its uncommitted
        // reports went with the rollback that removed it: it rejoins with
        // nothing of its own (a joiner gets the group's state).
        held_.reset();
        pending_.clear();
        const std::string host =
            options_.advertise_host.empty() ? options_.bind_host : options_.advertise_host;
        JoinRequest join{options_.job_id, options_.token, worker_id_,
                         absl::StrCat(host, ":", listener_->port())};
        ASSIGN_OR_RETURN(WorkerStatus status, Retry([&] { return client_->Join(join); }));
        latest_generation_ = status.generation;
        need_group = true;
      }
      if (need_group || latest_generation_.load() != generation_.load()) {
        absl::Status formed = FormGroup();
        if (!formed.ok()) {
          if (backend_unusable_) return formed;
          if (stop_) continue;
          if (!IsCommunicationError(formed) && formed.code() != absl::StatusCode::kNotFound) {
            return formed;
          }
          std::cerr << "worker " << worker_id_ << ": forming generation " << generation_
                    << " failed (" << formed << "); retrying\n";
          WaitForNewGeneration();
          continue;
        }
        need_group = false;
      }
      if (Done()) {
        const absl::Status finished = Finish();
        // The group changed before the last step was committed: regroup (a
        // rollback resumes below max_steps) and train on.
        if (finished.code() != absl::StatusCode::kAborted) return finished;
        need_group = true;
        continue;
      }
      absl::Status stepped = Diloco() ? InnerStepOnce() : StepOnce();
      if (stepped.ok()) continue;
      if (FailedBecause(stepped, Failure::kOwnStateNotFinite)) {
        leave_ = true;  // the others regroup without this worker at once
        return stepped;
      }
      if (!IsCommunicationError(stepped)) return stepped;
      // A peer vanished or the generation changed: wait for the coordinator's
      // new group, then redo the step there.
      if (stepped.code() != absl::StatusCode::kAborted) {
        std::cerr << "worker " << worker_id_ << ": step " << trainer_->step() + 1
                  << " failed in generation " << generation_ << " (" << stepped << ")\n";
      }
      WaitForNewGeneration();
      need_group = true;
    }
  }

  // Waits until the coordinator announces another generation, or a lease's
  // worth of time (then the same generation is formed again: the failure was
  // a transient one).
  void WaitForNewGeneration() {
    const absl::Time until = absl::Now() + absl::Seconds(15);
    while (!stop_ && !must_rejoin_ && latest_generation_.load() == generation_.load() &&
           absl::Now() < until) {
      absl::SleepFor(kPoll * 5);
    }
  }

  absl::Status FormGroup() {
    DropComms();
    uint64_t generation = latest_generation_.load();
    GroupView view;
    while (true) {
      if (stop_) return absl::CancelledError("stopping");
      auto r = client_->Rendezvous(options_.job_id, worker_id_, generation);
      if (!r.ok()) {
        const absl::StatusCode code = r.status().code();
        if (code == absl::StatusCode::kUnavailable) {
          absl::SleepFor(kPoll * 10);
          continue;
        }
        if (FailedBecause(r.status(), Failure::kWaitingForAdmission)) {
          // In the join window: admitted at the group's next step boundary.
          absl::SleepFor(kPoll * 5);
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
        absl::SleepFor(kPoll);
        continue;
      }
      view = r->view;
      break;
    }
    generation_ = view.generation;
    latest_generation_ = std::max(latest_generation_.load(), view.generation);
    rank_ = -1;
    for (const GroupMember& m : view.members) {
      if (m.worker_id == worker_id_) rank_ = static_cast<int>(m.rank);
    }
    if (rank_ < 0) return absl::NotFoundError("this worker is not in the group view");
    world_ = static_cast<int>(view.members.size());

    TcpTransportOptions transport;
    transport.rank = rank_;
    transport.world_size = world_;
    transport.generation = view.generation;
    transport.secret = view.secret;
    transport.bind_host = options_.bind_host;
    transport.advertise_host = options_.advertise_host;
    transport.listener = listener_.get();
    ViewStore store(view);
    const absl::Time deadline = absl::Now() + options_.collective_timeout;
    ASSIGN_OR_RETURN(auto links, ConnectTcpTransport(&store, transport, deadline));
    {
      absl::MutexLock lock(&comm_mu_);
      comm_ = NewTransportCommunicator(std::move(links), view.generation);
    }
    if (options_.connect_data) {
      auto data = options_.connect_data(view, rank_, Comm(), deadline);
      if (!data.ok()) {
        // A backend that cannot work here (no GPU, a group that is not the
        // MPI job) will not work in the next generation either.
        const absl::StatusCode code = data.status().code();
        backend_unusable_ = code == absl::StatusCode::kFailedPrecondition ||
                            code == absl::StatusCode::kInvalidArgument;
        return data.status();
      }
      absl::MutexLock lock(&comm_mu_);
      data_comm_ = *std::move(data);
    }

    // The group's state: the committed checkpoint after a rollback, rank 0's
    // otherwise (it adds only joiners, and members hold the live model).
    Communicator* comm = Comm();
    if (view.from_checkpoint) {
      // The rolled-back lineage's reads and reports are void: the ledger
      // reverted to the checkpoint, and AcquireShard says where to resume.
      held_.reset();
      pending_.clear();
      auto reader = client_->OpenCheckpoint(options_.job_id, view.resume_step);
      if (reader.ok()) {
        RETURN_IF_ERROR(trainer_->Restore(reader->get()));
      } else if (reader.status().code() == absl::StatusCode::kNotFound && view.resume_step == 0) {
        RETURN_IF_ERROR(FreshModel());
      } else {
        return Annotate(reader.status(), absl::StrCat("loading step ", view.resume_step));
      }
    } else if (!Diloco()) {
      RETURN_IF_ERROR(trainer_->BroadcastState(DataComm(), 0, Deadline()));
    }
    out_of_data_ = false;  // the slots may have changed: look again
    round_samples_ = 0;
    // Invariant 3: every member compares what members share (OuterDigest:
    // all of it in sync mode) with the others', and takes the state of the
    // member furthest on when they differ (in sync mode every member is at
    // the same step, so that is rank 0). In diloco mode members keep their
    // own inner progress while they agree; a joiner, or a member that missed
    // the end of a round exchange others completed, gets the leader's state,
    // which holds every member's work of that round.
    std::vector<int64_t> shared(2 * world_);
    shared[2 * rank_] = static_cast<int64_t>(trainer_->OuterDigest());
    shared[2 * rank_ + 1] = static_cast<int64_t>(BoundaryStep());
    RETURN_IF_ERROR(comm->AllGather(TensorView::Of(shared.data(), shared.size()), Deadline()));
    int leader = 0;
    bool agree = true;
    for (int r = 1; r < world_; ++r) {
      if (shared[2 * r + 1] > shared[2 * leader + 1]) leader = r;
      agree = agree && shared[2 * r] == shared[0];
    }
    if (!agree) {
      if (!Diloco() || view.from_checkpoint) {
        std::cerr << "worker " << worker_id_ << ": generation " << view.generation
                  << ": the members' states differ; re-broadcasting from rank " << leader << "\n";
      }
      RETURN_IF_ERROR(trainer_->BroadcastState(DataComm(), leader, Deadline()));
    }
    ASSIGN_OR_RETURN(v1::JobStatus job, Retry([&] { return client_->GetJob(options_.job_id); }));
    RETURN_IF_ERROR(AgreeOnEpoch(job.epoch()));
    if (options_.on_group) {
      WorkerGroupEvent event;
      event.generation = view.generation;
      event.rank = rank_;
      event.world_size = world_;
      event.from_checkpoint = view.from_checkpoint;
      event.resume_step = view.resume_step;
      {
        absl::MutexLock lock(&heard_mu_);
        event.heard = heard_at_;
      }
      event.formed = absl::Now();
      options_.on_group(event);
    }
    return absl::OkStatus();
  }

  absl::Time Deadline() const { return absl::Now() + options_.collective_timeout; }

  // The epoch the group reads from: the newest any member saw. Members move
  // to the next epoch together, at a step where none of them has data left,
  // so which member reads which shard never depends on when each one heard
  // of the rollover.
  absl::Status AgreeOnEpoch(uint64_t seen) {
    std::vector<int64_t> epochs(world_);
    epochs[rank_] = static_cast<int64_t>(seen);
    RETURN_IF_ERROR(Comm()->AllGather(TensorView::Of(epochs.data(), epochs.size()), Deadline()));
    epoch_ = static_cast<uint64_t>(*std::max_element(epochs.begin(), epochs.end()));
    return absl::OkStatus();
  }

  bool Diloco() const { return job_.mode() == v1::SYNC_MODE_DILOCO; }
  // The step the coordinator counts: steps in sync mode, rounds in diloco
  // mode (a round's inner steps are each worker's own business).
  uint64_t BoundaryStep() const { return Diloco() ? trainer_->rounds() : trainer_->step(); }
  bool Done() const {
    return Diloco() ? trainer_->rounds() >= max_rounds_ : trainer_->step() >= max_steps_;
  }

  // The current communicator. Only the training thread replaces it, so the
  // pointer stays valid on that thread without holding the lock.
  Communicator* Comm() {
    absl::MutexLock lock(&comm_mu_);
    return comm_.get();
  }
  // Where the trainer's collectives run.
  Communicator* DataComm() {
    absl::MutexLock lock(&comm_mu_);
    return data_comm_ != nullptr ? data_comm_.get() : comm_.get();
  }

  // What one step reads: the held shard's cursor after it (the caller keeps
  // it once the step is applied), the offset reached per shard touched, and
  // the micro-batches (the job's global batch split over the group), and
  // whether it read short because the coordinator could not be reached (not
  // because this worker's slot has no pending shard).
  struct StepData {
    std::optional<HeldShard> cursor;
    std::vector<std::pair<uint32_t, uint64_t>> touched;
    std::vector<Batch> batches;
    bool unreachable = false;
  };

  // Reads up to `sequences` sequences into one batch of `data`, leasing a
  // shard when none is held. Advances its cursor (the caller commits it
  // when the step is applied) and records the offset reached per shard.
  // Sets *step_done when this step must read no further: the slot has no
  // pending shard, the coordinator is unreachable, or a shard was finished
  // (the coordinator releases it only when the step's report arrives, so
  // leasing again now would hand the same shard back).
  absl::Status Read(int64_t sequences, StepData* data, bool* step_done) {
    std::optional<HeldShard>* cursor = &data->cursor;
    std::vector<std::pair<uint32_t, uint64_t>>* touched = &data->touched;
    std::vector<Batch>* out = &data->batches;
    const uint32_t context = job_.model().gpt().context_length();
    const int64_t width = context + 1;
    std::vector<uint32_t> tokens;
    int64_t got = 0;
    while (got < sequences) {
      if (!cursor->has_value()) {
        auto lease = client_->AcquireShard(options_.job_id, worker_id_);
        if (!lease.ok()) {
          const absl::StatusCode code = lease.status().code();
          data->unreachable = code == absl::StatusCode::kUnavailable;
          if (code == absl::StatusCode::kResourceExhausted || data->unreachable) {
            *step_done = true;
            break;
          }
          return lease.status();
        }
        if (lease->epoch > epoch_) {
          // The next epoch's: read at the group's next epoch boundary. The
          // coordinator keeps the lease for this worker meanwhile.
          *step_done = true;
          break;
        }
        ASSIGN_OR_RETURN(const TokenShard* shard, Shard(lease->name));
        *cursor = HeldShard{lease->shard, lease->name, lease->size, lease->offset, shard};
      }
      HeldShard& held = **cursor;
      if (held.offset + width > held.size) {
        // Leased at its tail (a shard shorter than one sequence): nothing to
        // train, so report it finished at once and lease another.
        RETURN_IF_ERROR(FlushReports());
        auto reported = client_->ReportProgress(Report(held.id, held.size, BoundaryStep() + 1));
        if (!reported.ok()) {
          if (reported.status().code() == absl::StatusCode::kUnavailable) {
            data->unreachable = true;
            *step_done = true;
            break;
          }
          return Annotate(reported.status(), "reporting a finished shard");
        }
        cursor->reset();
        held_.reset();
        continue;
      }
      tokens.resize(static_cast<size_t>((got + 1) * width));
      RETURN_IF_ERROR(held.tokens->Read(
          held.offset, absl::MakeSpan(tokens).subspan(static_cast<size_t>(got * width), width)));
      held.offset += context;
      ++got;
      // What remains after the last whole sequence is shorter than one: the
      // shard is finished with this step (its report says offset = size).
      // The coordinator releases it only when that report arrives after the
      // step, so this step reads no further.
      const bool finished = held.offset + width > held.size;
      const uint64_t reported = finished ? held.size : held.offset;
      if (touched->empty() || touched->back().first != held.id) {
        touched->emplace_back(held.id, reported);
      } else {
        touched->back().second = reported;
      }
      if (finished) {
        cursor->reset();
        *step_done = true;
        break;
      }
    }
    if (got == 0) return absl::OkStatus();
    torch::Tensor all = torch::from_blob(tokens.data(), {got * width}, torch::kInt32)
                            .to(torch::kLong)
                            .view({got, width});
    out->push_back(
        Batch{all.narrow(1, 0, context).contiguous(), all.narrow(1, 1, context).contiguous()});
    return absl::OkStatus();
  }

  absl::StatusOr<StepData> ReadStep() {
    const int64_t micro = job_.batch().micro_batch_size() > 0 ? job_.batch().micro_batch_size() : 8;
    const int64_t global = job_.batch().global_batch_size();
    const int64_t accumulation = std::max<int64_t>(1, global / (micro * world_));
    StepData data;
    data.cursor = held_;
    bool step_done = false;
    for (int64_t i = 0; i < accumulation && !step_done; ++i) {
      RETURN_IF_ERROR(Read(micro, &data, &step_done));
    }
    return data;
  }

  absl::Status StepOnce() {
    const absl::Time start = absl::Now();
    const uint64_t step = trainer_->step() + 1;
    ASSIGN_OR_RETURN(StepData data, ReadStep());
    auto& [cursor, touched, batches, unreachable] = data;
    int64_t samples = 0;
    for (const Batch& b : batches) samples += b.samples();

    double total = static_cast<double>(samples);
    Communicator* comm = Comm();
    RETURN_IF_ERROR(comm->AllReduce(TensorView::Of(&total, 1), ReduceOp::kSum, Deadline()));
    if (total == 0) return EndOfEpoch();

    if (options_.fault_nan_from_step > 0 && step >= options_.fault_nan_from_step) {
      torch::NoGradGuard no_grad;
      model_->trainable().values().narrow(0, 0, 1).fill_(std::nan(""));
    }
    ASSIGN_OR_RETURN(TrainStepResult result, trainer_->Step(batches, DataComm(), rank_));
    held_ = cursor;  // the step happened: its reads count
    for (const auto& [shard, offset] : touched) pending_.push_back(Report(shard, offset, step));
    // The step is applied whatever the coordinator answers (a regroup is
    // handled by the caller), so it is shown either way.
    const absl::Status ended = ReportAndEndStep(step);
    double validation_loss = std::numeric_limits<double>::quiet_NaN();
    if (rank_ == 0 && job_.eval_every_steps() > 0 && step % job_.eval_every_steps() == 0) {
      ASSIGN_OR_RETURN(validation_loss, ValidationLoss());
    }
    ShowStep(start, result, static_cast<int64_t>(total), validation_loss);
    return ended;
  }

  // diloco: one inner step on this worker's data, with no collective; the
  // step that ends a round (its H-th inner step, the round's time limit, or
  // no data left in this worker's slot) runs the exchange, and then the
  // round is a step boundary: the members sum what they trained in it and
  // how many ran out of data (all of them: the epoch's end), and EndStep
  // the round. Progress reports carry the round they belong to.
  absl::Status InnerStepOnce() {
    const absl::Time start = absl::Now();
    const uint64_t round = trainer_->rounds() + 1;
    StepData data;
    if (!out_of_data_ && !trainer_->exchange_pending()) {
      ASSIGN_OR_RETURN(data, ReadStep());
    }
    auto& [cursor, touched, batches, unreachable] = data;
    TrainStepResult result;
    if (trainer_->exchange_pending()) {
      // The round's exchange failed and the group formed again as it was:
      // redo the exchange (every member does), then end the round.
      ASSIGN_OR_RETURN(result, trainer_->FinishRound(DataComm()));
    } else if (batches.empty() && unreachable && !trainer_->RoundOutOfTime()) {
      // No shard, and the coordinator cannot be reached to lease one: wait
      // for it (within the outage tolerance) rather than take this worker's
      // slot for dry, then try again.
      RETURN_IF_ERROR(CheckOutage());
      absl::SleepFor(absl::Milliseconds(200));
      return absl::OkStatus();
    } else if (batches.empty()) {
      // Nothing left in this worker's slot (or, with the coordinator away,
      // the round's time is up): it ends its round now and takes part in
      // the exchange with what it trained (others may train on). Only a dry
      // slot stays dry until the epoch's end.
      out_of_data_ = !unreachable;
      ASSIGN_OR_RETURN(result, trainer_->FinishRound(DataComm()));
    } else {
      if (options_.fault_nan_from_step > 0 &&
          trainer_->step() + 1 >= options_.fault_nan_from_step) {
        torch::NoGradGuard no_grad;
        model_->trainable().values().narrow(0, 0, 1).fill_(std::nan(""));
      }
      const uint64_t before = trainer_->step();
      absl::StatusOr<TrainStepResult> stepped = trainer_->Step(batches, DataComm(), rank_);
      if (trainer_->step() > before) {
        // The inner step is applied, even when the round's exchange after
        // it failed (it is redone after the regroup): its reads count.
        held_ = cursor;
        for (const Batch& b : batches) round_samples_ += b.samples();
        for (const auto& [shard, offset] : touched) {
          pending_.push_back(Report(shard, offset, round));
        }
      }
      if (!stepped.ok()) return stepped.status();
      result = *stepped;
    }
    if (!result.exchanged) {
      // Mid-round: the reports go now (the coordinator releases a finished
      // shard only then), the round's EndStep comes at its end.
      const absl::Status flushed = FlushReports();
      if (!flushed.ok() && flushed.code() != absl::StatusCode::kUnavailable) return flushed;
      if (!flushed.ok()) RETURN_IF_ERROR(CheckOutage());
      ShowStep(start, result, 0, std::numeric_limits<double>::quiet_NaN());
      return absl::OkStatus();
    }
    // The round's end, for every member.
    std::vector<double> sums = {static_cast<double>(round_samples_), out_of_data_ ? 1.0 : 0.0};
    RETURN_IF_ERROR(
        Comm()->AllReduce(TensorView::Of(sums.data(), sums.size()), ReduceOp::kSum, Deadline()));
    round_samples_ = 0;
    // (An empty round, nobody having trained in it, did not count.)
    const uint64_t ended_round = BoundaryStep();
    const bool epoch_done = static_cast<int>(sums[1]) == world_;
    const absl::Status ended = epoch_done ? EndOfEpoch() : ReportAndEndStep(ended_round);
    if (epoch_done && ended.ok()) out_of_data_ = false;
    double validation_loss = std::numeric_limits<double>::quiet_NaN();
    if (rank_ == 0 && job_.eval_every_steps() > 0 && ended_round % job_.eval_every_steps() == 0 &&
        sums[0] > 0) {
      ASSIGN_OR_RETURN(validation_loss, ValidationLoss());
    }
    if (sums[0] == 0) result.exchanged = false;  // shown as no round's end
    ShowStep(start, result, static_cast<int64_t>(sums[0]), validation_loss);
    return ended;
  }

  // Calls on_step. `group_samples`: what the whole group trained in the
  // step (sync) or the round that just ended (diloco; 0 mid-round).
  void ShowStep(absl::Time start, const TrainStepResult& result, int64_t group_samples,
                double validation_loss) {
    if (!options_.on_step) return;
    WorkerProgress progress;
    progress.step = trainer_->step();
    progress.max_steps = max_steps_;
    progress.rounds = trainer_->rounds();
    progress.round_ended = Diloco() && result.exchanged;
    progress.loss = result.loss;
    progress.rank = rank_;
    progress.world_size = world_;
    progress.generation = generation_;
    progress.group_samples = group_samples;
    progress.validation_loss = validation_loss;
    const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
    progress.tokens_per_s =
        seconds > 0 ? result.samples * job_.model().gpt().context_length() / seconds : 0;
    options_.on_step(progress);
  }

  // The loss on the start of the validation split (the same sequences every
  // time, so the numbers compare across steps and runs).
  absl::StatusOr<double> ValidationLoss() {
    if (validation_.empty()) {
      ASSIGN_OR_RETURN(auto feed, DataFeed::Open(dataset_, DataFeed::Split::kValidation,
                                                 job_.model().gpt().context_length()));
      const int64_t sequences = std::min<int64_t>(
          job_.eval_sequences() > 0 ? job_.eval_sequences() : 64, feed->sequences_per_epoch());
      for (int64_t left = sequences; left > 0; left -= 16) {
        ASSIGN_OR_RETURN(Batch batch, feed->Next(std::min<int64_t>(16, left)));
        validation_.push_back(std::move(batch));
      }
    }
    return trainer_->Evaluate(validation_);
  }

  ProgressReport Report(uint32_t shard, uint64_t offset, uint64_t step) const {
    ProgressReport report;
    report.job_id = options_.job_id;
    report.worker_id = worker_id_;
    report.request_id =
        absl::StrCat(worker_id_, "-g", generation_.load(), "-s", step, "-", shard, "-", offset);
    report.generation = generation_;
    report.shard = shard;
    report.offset = offset;
    report.step = step;
    return report;
  }

  // Sends the buffered reports in order; kUnavailable (kept for later) when
  // the coordinator cannot be reached.
  absl::Status FlushReports() {
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

  // Flushes the buffered reports and ends `step`; during an outage keeps
  // them for later (training goes on). Uploads the step's checkpoint when
  // this worker is rank 0 and the coordinator asks.
  absl::Status ReportAndEndStep(uint64_t step) {
    while (!pending_.empty()) {
      auto reported = client_->ReportProgress(pending_.front());
      if (reported.ok()) {
        pending_.pop_front();
        continue;
      }
      if (reported.status().code() == absl::StatusCode::kUnavailable) return CheckOutage();
      if (reported.status().code() == absl::StatusCode::kAborted) {
        pending_.clear();  // rolled back: the new generation resumes elsewhere
        return reported.status();
      }
      return Annotate(reported.status(), "reporting progress");
    }
    auto ended = client_->EndStep(options_.job_id, worker_id_, step);
    if (!ended.ok()) {
      if (ended.status().code() == absl::StatusCode::kUnavailable) return CheckOutage();
      return Annotate(ended.status(), absl::StrCat("ending step ", step));
    }
    coordinator_seen_ = absl::Now();
    NoteGeneration(ended->generation);
    if (ended->job_state == v1::JOB_STATE_CANCELLED) {
      stop_ = true;
      return absl::OkStatus();
    }
    if (ended->should_checkpoint) RETURN_IF_ERROR(Upload(step));
    if (ended->regroup) return absl::AbortedError("the coordinator made a new generation");
    return absl::OkStatus();
  }

  absl::Status CheckOutage() {
    if (absl::Now() - coordinator_seen_.load() > options_.outage_tolerance) {
      return absl::UnavailableError(absl::StrCat("the coordinator has been unreachable for over ",
                                                 absl::FormatDuration(options_.outage_tolerance)));
    }
    return absl::OkStatus();  // keep training; the reports wait
  }

  // Uploads this member's part of the step's state: every member sends a
  // 1/world_size slice of it, so none uploads the whole model (members hold
  // the same state). The coordinator accepts a part once every member has
  // ended the step; they do so right after their own step, so retry.
  absl::Status Upload(uint64_t step) {
    const absl::Time give_up = absl::Now() + options_.collective_timeout;
    const auto part = static_cast<uint32_t>(rank_);
    const auto parts = static_cast<uint32_t>(world_);
    while (true) {
      auto writer = client_->BeginCheckpointPart(options_.job_id, worker_id_, step, part, parts);
      absl::Status status = writer.status();
      if (writer.ok()) {
        status = WriteTrainingCheckpointPart(writer->get(), job_, *trainer_, part, parts);
        if (status.ok()) status = (*writer)->Finish().status();
      }
      if (status.ok() || status.code() == absl::StatusCode::kAlreadyExists) {
        return absl::OkStatus();
      }
      const bool retry = status.code() == absl::StatusCode::kFailedPrecondition ||
                         status.code() == absl::StatusCode::kAborted;
      if (!retry || absl::Now() >= give_up || latest_generation_.load() != generation_.load()) {
        // Not fatal: the next checkpoint will do. Training goes on.
        std::cerr << "worker " << worker_id_ << ": checkpoint of step " << step
                  << " not committed: " << status << "\n";
        return absl::OkStatus();
      }
      absl::SleepFor(kPoll);
    }
  }

  // Nobody has data: the epoch's shards are all consumed. The epoch rolls
  // over when a checkpoint commits them, so rank 0 commits this step; the
  // others wait for that commit, then the group moves to the next epoch
  // together (or stops: the job's last epoch is done).
  absl::Status EndOfEpoch() {
    const uint64_t step = BoundaryStep();
    RETURN_IF_ERROR(ReportAndEndStep(step));
    RETURN_IF_ERROR(Upload(step));
    const absl::Time give_up = Deadline();
    while (true) {
      ASSIGN_OR_RETURN(v1::JobStatus job, Retry([&] { return client_->GetJob(options_.job_id); }));
      if (job.state() == v1::JOB_STATE_FINISHED || job.state() == v1::JOB_STATE_CANCELLED) {
        stop_ = true;
        leave_ = false;
        return absl::OkStatus();
      }
      if (latest_generation_.load() != generation_.load()) {
        return absl::AbortedError("the group changed at the epoch's end");
      }
      // Not committed in time (rank 0's upload gave up): agree on what is
      // known; the next step finds no data again and retries the commit.
      if (job.committed_step() >= step || stop_ || absl::Now() >= give_up) {
        return AgreeOnEpoch(job.epoch());
      }
      absl::SleepFor(kPoll * 5);
    }
  }

  // max_steps reached: rank 0 commits the last step, the others wait for
  // that commit, then everyone leaves.
  absl::Status Finish() {
    const uint64_t step = BoundaryStep();
    // A member that finished first has left, which makes a new generation:
    // that regroup signal is no reason to stop when the step is committed.
    const absl::Status ended = ReportAndEndStep(step);
    if (!ended.ok() && ended.code() != absl::StatusCode::kAborted) return ended;
    RETURN_IF_ERROR(Upload(step));
    const absl::Time give_up = absl::Now() + options_.collective_timeout;
    while (absl::Now() < give_up && !stop_) {
      auto job = client_->GetJob(options_.job_id);
      if (job.ok() && job->committed_step() >= step) break;
      if (latest_generation_.load() != generation_.load()) {
        return absl::AbortedError("the group changed before the last step was committed");
      }
      absl::SleepFor(kPoll * 5);
    }
    leave_ = true;
    return absl::OkStatus();
  }

  CoordinatorClient* const client_;  // not owned
  const WorkerOptions options_;
  std::string worker_id_;
  // Held for the worker's life: the endpoint it joined with stays its own.
  std::unique_ptr<TcpListener> listener_;
  v1::JobSpec job_;
  uint64_t max_steps_ = 0;
  uint64_t max_rounds_ = 0;  // diloco
  Dataset dataset_;
  std::map<std::string, std::unique_ptr<TokenShard>> shards_;
  std::vector<Batch> validation_;  // built at the first evaluation
  std::unique_ptr<Model> model_;
  std::unique_ptr<Trainer> trainer_;

  std::atomic<uint64_t> generation_{0};         // the one this worker trains in
  std::atomic<uint64_t> latest_generation_{0};  // the newest it has heard of
  std::atomic<bool> stop_{false};
  std::atomic<bool> must_rejoin_{false};
  std::atomic<absl::Time> coordinator_seen_{absl::Now()};
  absl::Mutex heard_mu_;
  absl::Time heard_at_ ABSL_GUARDED_BY(heard_mu_) = absl::Now();
  bool leave_ = false;
  bool backend_unusable_ = false;  // connect_data failed for good
  int rank_ = 0;
  int world_ = 1;
  uint64_t epoch_ = 0;  // the group's, see AgreeOnEpoch
  std::optional<HeldShard> held_;
  // diloco: this worker found no data in its slot this epoch, and the
  // sequences it trained in the current round.
  bool out_of_data_ = false;
  bool found_finished_ = false;
  int64_t round_samples_ = 0;
  std::deque<ProgressReport> pending_;

  // The heartbeat thread aborts comm_ under comm_mu_; the training thread
  // replaces it under comm_mu_ and uses it through Comm().
  absl::Mutex comm_mu_;
  std::unique_ptr<Communicator> comm_ ABSL_GUARDED_BY(comm_mu_);       // TCP
  std::unique_ptr<Communicator> data_comm_ ABSL_GUARDED_BY(comm_mu_);  // connect_data's
  std::thread heartbeat_;
  absl::Notification heartbeat_stop_;
};

absl::StatusOr<std::unique_ptr<WorkerRuntime>> WorkerRuntime::Create(CoordinatorClient* client,
                                                                     WorkerOptions options) {
  auto impl = std::make_unique<Impl>(client, std::move(options));
  RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<WorkerRuntime>(new WorkerRuntime(std::move(impl)));
}

WorkerRuntime::WorkerRuntime(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
WorkerRuntime::~WorkerRuntime() = default;
absl::Status WorkerRuntime::Run() { return impl_->Run(); }
void WorkerRuntime::Stop() { impl_->Stop(); }
const std::string& WorkerRuntime::worker_id() const { return impl_->worker_id(); }
uint64_t WorkerRuntime::step() const { return impl_->step(); }
bool WorkerRuntime::found_finished() const { return impl_->found_finished(); }
uint64_t WorkerRuntime::rounds() const { return impl_->rounds(); }
uint64_t WorkerRuntime::StateDigest() const { return impl_->StateDigest(); }
uint64_t WorkerRuntime::SharedDigest() const { return impl_->SharedDigest(); }
Model* WorkerRuntime::model() { return impl_->model(); }

}  // namespace potluck
