#include "coordinator/server.h"

#include <atomic>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

#include "common/dtype.h"
#include "common/failure.h"
#include "common/status.h"
#include "coordinator/call_auth.h"
#include "coordinator/in_process_client.h"
#include "coordinator/stream_watch.h"
#include "potluck/v1/coordinator.grpc.pb.h"

namespace potluck {

namespace {

// absl and gRPC share the canonical codes, number for number; a failure
// reason travels in the details (v1::ErrorDetails).
grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  std::string details;
  if (const Failure failure = FailureOf(status); failure != Failure::kUnspecified) {
    v1::ErrorDetails error;
    error.set_failure(static_cast<int32_t>(failure));
    details = error.SerializeAsString();
  }
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()),
                      details);
}

// Returns the gRPC form of `expr` (an absl::Status) if it is not OK.
#define RETURN_GRPC(expr)                                                \
  do {                                                                   \
    const ::absl::Status potluck_grpc_status_ = (expr);                  \
    if (!potluck_grpc_status_.ok()) return ToGrpc(potluck_grpc_status_); \
  } while (false)

template <typename Request>
absl::Status CheckVersion(const Request& request) {
  if (request.api_version() == 0 || request.api_version() == kCoordinatorApiVersion) {
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "api_version ", request.api_version(), " is not supported by this coordinator (it speaks ",
      kCoordinatorApiVersion, "); upgrade the coordinator or use an older client"));
}

void ToProto(const WorkerStatus& in, v1::WorkerStatus* out) {
  out->set_worker_id(in.worker_id);
  out->set_lease_expiry_unix_micros(absl::ToUnixMicros(in.lease_expiry));
  out->set_generation(in.generation);
  out->set_rollback_generation(in.rollback_generation);
  out->set_member(in.member);
  out->set_job_state(in.job_state);
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read ", path));
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

// Sends `bytes` as DataPiece messages of at most `piece_bytes`.
grpc::Status WritePieces(absl::string_view bytes, int piece_bytes,
                         grpc::ServerWriter<v1::DataPiece>* writer) {
  v1::DataPiece piece;
  size_t at = 0;
  do {
    const size_t n = std::min(bytes.size() - at, static_cast<size_t>(piece_bytes));
    piece.set_data(std::string(bytes.substr(at, n)));
    if (!writer->Write(piece)) return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
    at += n;
  } while (at < bytes.size());
  return grpc::Status::OK;
}

// The hot calls (Heartbeat, AcquireShard, ReportProgress) use gRPC's
// callback API and the core's *Async forms: a call waiting for its group
// commit holds no thread. The rest are synchronous handlers.
using ServiceBase =
    v1::Coordinator::WithCallbackMethod_Heartbeat<v1::Coordinator::WithCallbackMethod_AcquireShard<
        v1::Coordinator::WithCallbackMethod_ReportProgress<v1::Coordinator::Service>>>;

class Service final : public ServiceBase {
 public:
  Service(Coordinator* core, const CoordinatorServerOptions& options)
      : core_(core),
        auth_(core),
        piece_bytes_(options.piece_bytes),
        upload_watch_(options.upload_idle_timeout) {}

  void Drain() { draining_.store(true); }
  bool draining() const { return draining_.load(); }

  // ---- jobs and administration ----

  grpc::Status SubmitJob(grpc::ServerContext*, const v1::SubmitJobRequest* request,
                         v1::SubmitJobResponse* response) override {
    RETURN_GRPC(CheckVersion(*request));
    if (draining()) return ToGrpc(absl::UnavailableError("the coordinator is draining"));
    // The core treats a resubmitted identical spec as the retry it is, so
    // request_id needs no state of its own here.
    auto job = core_->SubmitJob(request->admin_token(), request->spec());
    if (!job.ok()) return ToGrpc(job.status());
    *response->mutable_job() = *std::move(job);
    return grpc::Status::OK;
  }
  // Anyone gets a job's public summary; its members and the admin the whole
  // status (the spec with its dataset).
  grpc::Status GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request,
                      v1::GetJobResponse* response) override {
    RETURN_GRPC(CheckVersion(*request));
    auto job = core_->GetJob(request->job_id());
    if (!job.ok()) return ToGrpc(job.status());
    *response->mutable_job() = auth_.AsJoinerOrAdmin(context, request->job_id()).ok()
                                   ? *std::move(job)
                                   : PublicSummary(*job);
    return grpc::Status::OK;
  }
  grpc::Status ListJobs(grpc::ServerContext* context, const v1::ListJobsRequest* request,
                        v1::ListJobsResponse* response) override {
    RETURN_GRPC(CheckVersion(*request));
    auto jobs = core_->ListJobs();
    if (!jobs.ok()) return ToGrpc(jobs.status());
    for (v1::JobStatus& job : *jobs) {
      const bool whole = auth_.AsJoinerOrAdmin(context, job.spec().job_id()).ok();
      *response->add_jobs() = whole ? std::move(job) : PublicSummary(job);
    }
    return grpc::Status::OK;
  }
  grpc::Status PauseJob(grpc::ServerContext*, const v1::JobControlRequest* request,
                        v1::JobControlResponse* response) override {
    return Control(*request, response, &Coordinator::PauseJob);
  }
  grpc::Status ResumeJob(grpc::ServerContext*, const v1::JobControlRequest* request,
                         v1::JobControlResponse* response) override {
    return Control(*request, response, &Coordinator::ResumeJob);
  }
  grpc::Status CancelJob(grpc::ServerContext*, const v1::JobControlRequest* request,
                         v1::JobControlResponse* response) override {
    return Control(*request, response, &Coordinator::CancelJob);
  }
  grpc::Status ExtendJob(grpc::ServerContext*, const v1::ExtendJobRequest* request,
                         v1::JobControlResponse* response) override {
    RETURN_GRPC(CheckVersion(*request));
    auto job = core_->ExtendJob(request->admin_token(), request->job_id(), request->max_steps());
    if (!job.ok()) return ToGrpc(job.status());
    *response->mutable_job() = *std::move(job);
    return grpc::Status::OK;
  }
  grpc::Status EvictWorker(grpc::ServerContext*, const v1::EvictWorkerRequest* request,
                           v1::JobControlResponse* response) override {
    RETURN_GRPC(CheckVersion(*request));
    auto job = core_->EvictWorker(request->admin_token(), request->job_id(), request->worker_id(),
                                  request->revoke_token());
    if (!job.ok()) return ToGrpc(job.status());
    *response->mutable_job() = *std::move(job);
    return grpc::Status::OK;
  }
  grpc::Status CreateToken(grpc::ServerContext*, const v1::CreateTokenRequest* request,
                           v1::CreateTokenResponse* response) override {
    RETURN_GRPC(CheckVersion(*request));
    RETURN_GRPC(core_->VerifyAdminToken(request->admin_token()));
    if (request->ttl_seconds() == 0 || request->ttl_seconds() > 10ull * 365 * 24 * 3600) {
      return ToGrpc(absl::InvalidArgumentError("ttl_seconds: must be 1 to 10 years' worth"));
    }
    RETURN_GRPC(core_->GetJob(request->job_id()).status());
    auto token = core_->CreateToken(request->job_id(),
                                    absl::Seconds(static_cast<int64_t>(request->ttl_seconds())));
    if (!token.ok()) return ToGrpc(token.status());
    response->set_token(*std::move(token));
    return grpc::Status::OK;
  }
  grpc::Status RevokeToken(grpc::ServerContext*, const v1::RevokeTokenRequest* request,
                           v1::RevokeTokenResponse*) override {
    RETURN_GRPC(CheckVersion(*request));
    RETURN_GRPC(core_->VerifyAdminToken(request->admin_token()));
    return ToGrpc(core_->RevokeToken(request->token_or_id()));
  }
  grpc::Status Drain(grpc::ServerContext*, const v1::DrainRequest* request,
                     v1::DrainResponse*) override {
    RETURN_GRPC(CheckVersion(*request));
    RETURN_GRPC(core_->VerifyAdminToken(request->admin_token()));
    Drain();
    return grpc::Status::OK;
  }

  // ---- membership ----

  grpc::Status Join(grpc::ServerContext*, const v1::JoinRequest* request,
                    v1::JoinResponse* response) override {
    RETURN_GRPC(CheckVersion(*request));
    if (draining()) {
      return ToGrpc(absl::UnavailableError("the coordinator is draining: it admits no workers"));
    }
    auto status = core_->Join(
        {request->job_id(), request->token(), request->worker_id(), request->endpoint()});
    if (!status.ok()) return ToGrpc(status.status());
    ToProto(*status, response->mutable_status());
    response->set_member_secret(status->member_secret);
    return grpc::Status::OK;
  }
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* context,
                                      const v1::WorkerRequest* request,
                                      v1::HeartbeatResponse* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    if (const absl::Status refused = CheckWorkerCall(context, *request); !refused.ok()) {
      reactor->Finish(ToGrpc(refused));
      return reactor;
    }
    core_->HeartbeatAsync(request->job_id(), request->worker_id(),
                          [reactor, response](absl::StatusOr<WorkerStatus> status) {
                            if (status.ok()) ToProto(*status, response->mutable_status());
                            reactor->Finish(ToGrpc(status.status()));
                          });
    return reactor;
  }
  grpc::Status Leave(grpc::ServerContext* context, const v1::LeaveRequest* request,
                     v1::LeaveResponse*) override {
    RETURN_GRPC(CheckWorkerCall(context, *request));
    return ToGrpc(core_->Leave(request->job_id(), request->worker_id(),
                               {FailureFromNumber(request->failure()), request->reason()}));
  }
  grpc::Status ReportFailure(grpc::ServerContext* context, const v1::ReportFailureRequest* request,
                             v1::ReportFailureResponse* response) override {
    RETURN_GRPC(CheckVersion(*request));
    RETURN_GRPC(auth_.AsMember(context, request->job_id(), request->reporter()));
    auto generation =
        core_->ReportFailure(request->job_id(), request->reporter(), request->failed());
    if (!generation.ok()) return ToGrpc(generation.status());
    response->set_generation(*generation);
    return grpc::Status::OK;
  }
  grpc::Status Rendezvous(grpc::ServerContext* context, const v1::RendezvousRequest* request,
                          v1::RendezvousResponse* response) override {
    RETURN_GRPC(CheckWorkerCall(context, *request));
    auto result = core_->Rendezvous(request->job_id(), request->worker_id(), request->generation());
    if (!result.ok()) return ToGrpc(result.status());
    switch (result->state) {
      case RendezvousResult::State::kReady:
        response->set_state(v1::RendezvousResponse::STATE_READY);
        break;
      case RendezvousResult::State::kWaiting:
        response->set_state(v1::RendezvousResponse::STATE_WAITING);
        break;
      case RendezvousResult::State::kSuperseded:
        response->set_state(v1::RendezvousResponse::STATE_SUPERSEDED);
        break;
    }
    response->set_generation(result->generation);
    response->set_deadline_unix_micros(absl::ToUnixMicros(result->deadline));
    v1::GroupView* view = response->mutable_view();
    view->set_generation(result->view.generation);
    for (const GroupMember& member : result->view.members) {
      v1::GroupMember* out = view->add_members();
      out->set_worker_id(member.worker_id);
      out->set_rank(member.rank);
      out->set_endpoint(member.endpoint);
    }
    view->set_secret(result->view.secret);
    view->set_resume_step(result->view.resume_step);
    view->set_from_checkpoint(result->view.from_checkpoint);
    return grpc::Status::OK;
  }
  grpc::Status ListWorkers(grpc::ServerContext* context, const v1::ListWorkersRequest* request,
                           v1::ListWorkersResponse* response) override {
    RETURN_GRPC(CheckVersion(*request));
    RETURN_GRPC(auth_.AsMemberOrAdmin(context, request->job_id()));
    auto workers = core_->ListWorkers(request->job_id());
    if (!workers.ok()) return ToGrpc(workers.status());
    for (const WorkerView& worker : *workers) {
      v1::WorkerInfo* out = response->add_workers();
      out->set_worker_id(worker.worker_id);
      out->set_endpoint(worker.endpoint);
      switch (worker.phase) {
        case WorkerView::Phase::kWaiting:
          out->set_phase(v1::WorkerInfo::PHASE_WAITING);
          break;
        case WorkerView::Phase::kMember:
          out->set_phase(v1::WorkerInfo::PHASE_MEMBER);
          break;
        case WorkerView::Phase::kDead:
          out->set_phase(v1::WorkerInfo::PHASE_DEAD);
          break;
      }
      out->set_dead_reason(worker.dead_reason);
      out->set_lease_expiry_unix_micros(absl::ToUnixMicros(worker.lease_expiry));
      out->set_rank(worker.rank);
    }
    return grpc::Status::OK;
  }

  // ---- data and steps ----

  grpc::ServerUnaryReactor* AcquireShard(grpc::CallbackServerContext* context,
                                         const v1::WorkerRequest* request,
                                         v1::AcquireShardResponse* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    if (const absl::Status refused = CheckWorkerCall(context, *request); !refused.ok()) {
      reactor->Finish(ToGrpc(refused));
      return reactor;
    }
    core_->AcquireShardAsync(request->job_id(), request->worker_id(),
                             [reactor, response](absl::StatusOr<ShardLease> lease) {
                               if (lease.ok()) {
                                 response->set_shard(lease->shard);
                                 response->set_name(lease->name);
                                 response->set_size(lease->size);
                                 response->set_offset(lease->offset);
                                 response->set_begin(lease->begin);
                                 response->set_epoch(lease->epoch);
                                 response->set_checksum(lease->checksum);
                               }
                               reactor->Finish(ToGrpc(lease.status()));
                             });
    return reactor;
  }
  grpc::ServerUnaryReactor* ReportProgress(grpc::CallbackServerContext* context,
                                           const v1::ReportProgressRequest* request,
                                           v1::ReportProgressResponse* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    if (const absl::Status refused = CheckWorkerCall(context, *request); !refused.ok()) {
      reactor->Finish(ToGrpc(refused));
      return reactor;
    }
    ProgressReport report;
    report.job_id = request->job_id();
    report.worker_id = request->worker_id();
    report.request_id = request->request_id();
    report.generation = request->generation();
    report.shard = request->shard();
    report.offset = request->offset();
    report.step = request->step();
    core_->ReportProgressAsync(report, [reactor, response](absl::StatusOr<ProgressResult> result) {
      if (result.ok()) {
        response->set_duplicate(result->duplicate);
        response->set_consumed_offset(result->consumed_offset);
        response->set_shard_finished(result->shard_finished);
      }
      reactor->Finish(ToGrpc(result.status()));
    });
    return reactor;
  }
  grpc::Status EndStep(grpc::ServerContext* context, const v1::EndStepRequest* request,
                       v1::EndStepResponse* response) override {
    RETURN_GRPC(CheckWorkerCall(context, *request));
    auto result = core_->EndStep(request->job_id(), request->worker_id(), request->step());
    if (!result.ok()) return ToGrpc(result.status());
    response->set_generation(result->generation);
    response->set_regroup(result->regroup);
    response->set_should_checkpoint(result->should_checkpoint);
    response->set_pause(result->pause);
    response->set_job_state(result->job_state);
    return grpc::Status::OK;
  }

  // ---- checkpoints and data files ----

  grpc::Status PutCheckpoint(grpc::ServerContext* context,
                             grpc::ServerReader<v1::PutCheckpointRequest>* reader,
                             v1::PutCheckpointResponse* response) override {
    StreamWatch::Watched watched(&upload_watch_, context);
    v1::PutCheckpointRequest message;
    if (!reader->Read(&message)) {
      if (watched.timed_out()) return IdleTimeout();
      return ToGrpc(absl::InvalidArgumentError("PutCheckpoint: empty stream"));
    }
    RETURN_GRPC(CheckVersion(message));
    if (!message.has_begin()) {
      return ToGrpc(absl::InvalidArgumentError("PutCheckpoint: the first message must be 'begin'"));
    }
    const v1::PutCheckpointRequest::Begin begin = message.begin();
    RETURN_GRPC(auth_.AsMember(context, begin.job_id(), begin.worker_id()));
    if (begin.parts() > 0) return PutCheckpointPart(context, reader, begin, watched, response);
    // Spooled by the core while it streams in; only its commit takes the
    // upload slot (below).
    auto writer = core_->BeginCheckpoint(begin.job_id(), begin.worker_id(), begin.step());
    if (!writer.ok()) return ToGrpc(writer.status());
    return ReadUpload(
        reader, begin, watched,
        [&](const v1::PutCheckpointRequest::Entry& entry) {
          return (*writer)->BeginEntry(entry.name(), KindOf(entry),
                                       static_cast<DType>(entry.dtype()), ShapeOf(entry));
        },
        [&](const std::string& data) { return (*writer)->Append(data.data(), data.size()); },
        [&](const v1::PutCheckpointRequest::Commit& commit) {
          std::vector<Record> records;
          for (const auto& record : commit.records()) {
            records.push_back(
                {record.key(), record.erase() ? std::nullopt : std::optional(record.value())});
          }
          // The checkpoint store takes one commit at a time (for every
          // job): wait for the one before rather than fail.
          UploadSlot slot(this, context);
          if (!slot.acquired()) return SlotTimeout(begin);
          RETURN_GRPC((*writer)->Commit(records));
          response->set_step(begin.step());
          response->set_committed(true);
          return grpc::Status::OK;
        });
  }
  grpc::Status GetCheckpointInfo(grpc::ServerContext* context,
                                 const v1::GetCheckpointInfoRequest* request,
                                 v1::GetCheckpointInfoResponse* response) override {
    RETURN_GRPC(CheckVersion(*request));
    RETURN_GRPC(auth_.AsMemberOrAdmin(context, request->job_id()));
    auto reader = request->latest()
                      ? core_->checkpoints()->OpenLatest(request->job_id())
                      : core_->checkpoints()->OpenCheckpoint(request->job_id(), request->step());
    if (!reader.ok()) return ToGrpc(reader.status());
    const CheckpointInfo& info = (*reader)->info();
    response->set_job_id(info.job_id);
    response->set_step(info.step);
    response->set_created_unix_micros(absl::ToUnixMicros(info.created));
    response->set_total_bytes(info.total_bytes);
    for (const EntryInfo& entry : info.entries) {
      v1::CheckpointEntryInfo* out = response->add_entries();
      out->set_name(entry.name);
      out->set_blob(entry.kind == EntryKind::kBlob);
      out->set_dtype(static_cast<uint32_t>(entry.dtype));
      for (int64_t dim : entry.shape) out->add_shape(dim);
      out->set_size_bytes(entry.size_bytes);
      out->set_chunk_bytes(entry.chunk_bytes);
      out->set_num_chunks(entry.num_chunks);
    }
    return grpc::Status::OK;
  }
  grpc::Status ReadCheckpointChunk(grpc::ServerContext* context,
                                   const v1::ReadCheckpointChunkRequest* request,
                                   grpc::ServerWriter<v1::DataPiece>* writer) override {
    RETURN_GRPC(CheckVersion(*request));
    RETURN_GRPC(auth_.AsMemberOrAdmin(context, request->job_id()));
    auto reader = core_->checkpoints()->OpenCheckpoint(request->job_id(), request->step());
    if (!reader.ok()) return ToGrpc(reader.status());
    auto chunk = (*reader)->ReadChunk(request->entry(), request->chunk());
    if (!chunk.ok()) return ToGrpc(chunk.status());
    return WritePieces(*chunk, piece_bytes_, writer);
  }
  grpc::Status FetchDatasetFile(grpc::ServerContext* context,
                                const v1::FetchDatasetFileRequest* request,
                                grpc::ServerWriter<v1::DataPiece>* writer) override {
    RETURN_GRPC(CheckVersion(*request));
    RETURN_GRPC(auth_.AsJoinerOrAdmin(context, request->job_id()));
    auto job = core_->GetJob(request->job_id());
    if (!job.ok()) return ToGrpc(job.status());
    auto bytes = ReadDatasetFile(job->spec(), request->name());
    if (!bytes.ok()) return ToGrpc(bytes.status());
    return WritePieces(*bytes, piece_bytes_, writer);
  }

 private:
  // A worker's own call (its request names the job and the worker).
  template <typename Request>
  absl::Status CheckWorkerCall(const grpc::ServerContextBase* context, const Request& request) {
    RETURN_IF_ERROR(CheckVersion(request));
    return auth_.AsMember(context, request.job_id(), request.worker_id());
  }

  // A split upload's part: spooled by the core while it streams in (parts
  // of one checkpoint arrive side by side); only the part that completes
  // the set needs the store, so only its commit takes the upload slot.
  grpc::Status PutCheckpointPart(grpc::ServerContext* context,
                                 grpc::ServerReader<v1::PutCheckpointRequest>* reader,
                                 const v1::PutCheckpointRequest::Begin& begin,
                                 StreamWatch::Watched& watched,
                                 v1::PutCheckpointResponse* response) {
    auto writer = core_->BeginCheckpointPart(begin.job_id(), begin.worker_id(), begin.step(),
                                             begin.part(), begin.parts());
    if (!writer.ok()) return ToGrpc(writer.status());
    return ReadUpload(
        reader, begin, watched,
        [&](const v1::PutCheckpointRequest::Entry& entry) {
          return (*writer)->BeginSlice(entry.name(), KindOf(entry),
                                       static_cast<DType>(entry.dtype()), ShapeOf(entry),
                                       entry.slice_offset(), entry.slice_count());
        },
        [&](const std::string& data) { return (*writer)->Append(data.data(), data.size()); },
        [&](const v1::PutCheckpointRequest::Commit& commit) {
          if (commit.records_size() > 0) {
            return ToGrpc(absl::InvalidArgumentError(
                "PutCheckpoint: a part of a split upload carries no records"));
          }
          UploadSlot slot(this, context);
          if (!slot.acquired()) return SlotTimeout(begin);
          auto committed = (*writer)->Finish();
          if (!committed.ok()) return ToGrpc(committed.status());
          response->set_step(begin.step());
          response->set_committed(*committed);
          return grpc::Status::OK;
        });
  }

  // The rest of a PutCheckpoint stream after `begin`: each entry, its bytes,
  // then the commit, whose answer ends the call.
  template <typename OnEntry, typename OnData, typename OnCommit>
  grpc::Status ReadUpload(grpc::ServerReader<v1::PutCheckpointRequest>* reader,
                          const v1::PutCheckpointRequest::Begin& begin,
                          StreamWatch::Watched& watched, OnEntry on_entry, OnData on_data,
                          OnCommit on_commit) {
    v1::PutCheckpointRequest message;
    while (reader->Read(&message)) {
      watched.Touch();
      RETURN_GRPC(CheckVersion(message));
      switch (message.part_case()) {
        case v1::PutCheckpointRequest::kEntry:
          RETURN_GRPC(CheckDType(message.entry()));
          RETURN_GRPC(on_entry(message.entry()));
          break;
        case v1::PutCheckpointRequest::kData:
          RETURN_GRPC(on_data(message.data()));
          break;
        case v1::PutCheckpointRequest::kCommit:
          return on_commit(message.commit());
        default:
          return ToGrpc(absl::InvalidArgumentError(
              "PutCheckpoint: after 'begin' only 'entry', 'data' and 'commit' may follow"));
      }
    }
    if (watched.timed_out()) return IdleTimeout();
    return StreamEndedEarly(begin);
  }

  static EntryKind KindOf(const v1::PutCheckpointRequest::Entry& entry) {
    return entry.blob() ? EntryKind::kBlob : EntryKind::kTensor;
  }
  static std::vector<int64_t> ShapeOf(const v1::PutCheckpointRequest::Entry& entry) {
    return std::vector<int64_t>(entry.shape().begin(), entry.shape().end());
  }
  static absl::Status CheckDType(const v1::PutCheckpointRequest::Entry& entry) {
    if (IsValidDType(entry.dtype() > 255 ? 255 : static_cast<uint8_t>(entry.dtype()))) {
      return absl::OkStatus();
    }
    return absl::InvalidArgumentError(absl::StrCat("PutCheckpoint: entry '", entry.name(),
                                                   "' has unknown dtype ", entry.dtype()));
  }
  static grpc::Status SlotTimeout(const v1::PutCheckpointRequest::Begin& begin) {
    return ToGrpc(absl::DeadlineExceededError(
        absl::StrCat("PutCheckpoint ", begin.job_id(), "@", begin.step(),
                     ": another checkpoint upload held the store until the deadline")));
  }
  // The handler's answer to a stream the watch cancelled (the client sees
  // only CANCELLED; this is what the server's own log and tests see).
  grpc::Status IdleTimeout() const {
    return ToGrpc(
        absl::DeadlineExceededError(absl::StrCat("PutCheckpoint: the stream sent nothing for ",
                                                 absl::FormatDuration(upload_watch_.idle_limit()),
                                                 "; it was ended and nothing of it is kept")));
  }
  static grpc::Status StreamEndedEarly(const v1::PutCheckpointRequest::Begin& begin) {
    return ToGrpc(
        absl::AbortedError(absl::StrCat("PutCheckpoint: the stream of step ", begin.step(),
                                        " ended without 'commit'; nothing was stored")));
  }

  // One PutCheckpoint stream owns the checkpoint store at a time.
  class UploadSlot {
   public:
    UploadSlot(Service* service, grpc::ServerContext* context) : service_(service) {
      const absl::Time call_deadline = absl::FromChrono(context->deadline());
      const absl::Time deadline = std::min(call_deadline, absl::Now() + absl::Minutes(10));
      absl::MutexLock lock(&service_->upload_mu_);
      acquired_ = service_->upload_mu_.AwaitWithDeadline(
          absl::Condition(
              +[](bool* busy) { return !*busy; }, &service_->upload_busy_),
          deadline);
      if (acquired_) service_->upload_busy_ = true;
    }
    ~UploadSlot() {
      if (!acquired_) return;
      absl::MutexLock lock(&service_->upload_mu_);
      service_->upload_busy_ = false;
    }
    bool acquired() const { return acquired_; }

   private:
    Service* const service_;  // outlives the slot (a handler's local)
    bool acquired_ = false;
  };

  grpc::Status Control(const v1::JobControlRequest& request, v1::JobControlResponse* response,
                       absl::Status (Coordinator::*op)(absl::string_view, absl::string_view)) {
    RETURN_GRPC(CheckVersion(request));
    RETURN_GRPC((core_->*op)(request.admin_token(), request.job_id()));
    auto job = core_->GetJob(request.job_id());
    if (!job.ok()) return ToGrpc(job.status());
    *response->mutable_job() = *std::move(job);
    return grpc::Status::OK;
  }

  Coordinator* const core_;  // not owned; outlives the server
  const CallAuth auth_;
  const int piece_bytes_;
  std::atomic<bool> draining_{false};
  StreamWatch upload_watch_;
  absl::Mutex upload_mu_;
  bool upload_busy_ ABSL_GUARDED_BY(upload_mu_) = false;
};

class GrpcCoordinatorServer final : public CoordinatorServer {
 public:
  GrpcCoordinatorServer(std::unique_ptr<Service> service, std::unique_ptr<grpc::Server> server,
                        int port)
      : service_(std::move(service)), server_(std::move(server)), port_(port) {}
  ~GrpcCoordinatorServer() override { Shutdown(absl::ZeroDuration()); }

  int port() const override { return port_; }
  void Drain() override { service_->Drain(); }
  bool draining() const override { return service_->draining(); }
  void Shutdown(absl::Duration grace) override {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
    server_->GetHealthCheckService()->SetServingStatus(false);
    server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
    server_->Wait();
  }

 private:
  const std::unique_ptr<Service> service_;
  const std::unique_ptr<grpc::Server> server_;
  const int port_;
  absl::Mutex mu_;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

absl::StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(
    Coordinator* coordinator, const CoordinatorServerOptions& options) {
  std::shared_ptr<grpc::ServerCredentials> credentials;
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError("TLS needs both a certificate and a key file");
  }
  if (options.tls_cert_file.empty()) {
    credentials = grpc::InsecureServerCredentials();
  } else {
    ASSIGN_OR_RETURN(std::string cert, ReadFile(options.tls_cert_file));
    ASSIGN_OR_RETURN(std::string key, ReadFile(options.tls_key_file));
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({std::move(key), std::move(cert)});
    credentials = grpc::SslServerCredentials(ssl);
  }
  if (options.max_message_bytes < 1024 || options.piece_bytes < 1 ||
      options.piece_bytes > options.max_message_bytes / 2) {
    return absl::InvalidArgumentError(
        "max_message_bytes must be >= 1024 and piece_bytes at most half of it");
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  auto service = std::make_unique<Service>(coordinator, options);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(options.listen, credentials, &port);
  builder.RegisterService(service.get());
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen));
  }
  return std::make_unique<GrpcCoordinatorServer>(std::move(service), std::move(server), port);
}

}  // namespace potluck
