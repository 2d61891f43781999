#include "coordinator/grpc_client.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <utility>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

#include "common/dtype.h"
#include "common/failure.h"
#include "common/status.h"
#include "coordinator/server.h"
#include "potluck/v1/coordinator.grpc.pb.h"

namespace potluck {

namespace {

using Stub = v1::Coordinator::Stub;

absl::Status FromGrpc(const grpc::Status& status, absl::string_view what) {
  if (status.ok()) return absl::OkStatus();
  absl::Status out(static_cast<absl::StatusCode>(status.error_code()),
                   absl::StrCat(what, ": ", status.error_message()));
  v1::ErrorDetails details;
  if (!status.error_details().empty() && details.ParseFromString(status.error_details())) {
    out = WithFailure(std::move(out), FailureFromNumber(details.failure()));
  }
  return out;
}

WorkerStatus FromProto(const v1::WorkerStatus& in) {
  WorkerStatus out;
  out.worker_id = in.worker_id();
  out.lease_expiry = absl::FromUnixMicros(in.lease_expiry_unix_micros());
  out.generation = in.generation();
  out.rollback_generation = in.rollback_generation();
  out.member = in.member();
  out.job_state = in.job_state();
  return out;
}

// The job and worker a request speaks for, where its message names them
// (the reporter of a ReportFailure); "" where it does not.
template <typename Request>
std::string JobOf(const Request& request) {
  if constexpr (requires { request.job_id(); }) {
    return request.job_id();
  } else {
    return "";
  }
}
template <typename Request>
std::string WorkerOf(const Request& request) {
  if constexpr (requires { request.worker_id(); }) {
    return request.worker_id();
  } else if constexpr (requires { request.reporter(); }) {
    return request.reporter();
  } else {
    return "";
  }
}

// What every call needs: the stub, the per-call deadline, the credentials.
struct Connection {
  Connection(std::unique_ptr<Stub> stub, GrpcClientOptions options)
      : stub(std::move(stub)), options(std::move(options)) {}

  std::unique_ptr<Stub> stub;
  const GrpcClientOptions options;

  // A Join's answer: later calls as that worker (and the job's reads) prove it.
  void Remember(const std::string& job_id, const std::string& worker_id, std::string secret) {
    absl::MutexLock lock(&mu_);
    secrets_[{job_id, worker_id}] = std::move(secret);
    last_worker_[job_id] = worker_id;
  }

  // A context for a call about `job_id` as `worker_id` ("": the worker
  // that last joined the job through this client, if any).
  std::unique_ptr<grpc::ClientContext> Context(const std::string& job_id = "",
                                               std::string worker_id = "") const {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(absl::ToChronoTime(absl::Now() + options.deadline));
    if (!options.admin_token.empty()) {
      context->AddMetadata(kAdminTokenMetadata, options.admin_token);
    }
    if (!options.join_token.empty()) context->AddMetadata(kJoinTokenMetadata, options.join_token);
    absl::MutexLock lock(&mu_);
    if (worker_id.empty()) {
      auto last = last_worker_.find(job_id);
      if (last == last_worker_.end()) return context;
      worker_id = last->second;
    }
    auto secret = secrets_.find({job_id, worker_id});
    if (secret != secrets_.end()) {
      context->AddMetadata(kWorkerIdMetadata, worker_id);
      context->AddMetadata(kMemberSecretMetadata, secret->second);
    }
    return context;
  }

  // A unary call: `method` is a Stub member function.
  template <typename Request, typename Response>
  absl::StatusOr<Response> Call(grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&,
                                                             Response*),
                                Request request, absl::string_view what) const {
    request.set_api_version(kCoordinatorApiVersion);
    Response response;
    auto context = Context(JobOf(request), WorkerOf(request));
    RETURN_IF_ERROR(FromGrpc(((*stub).*method)(context.get(), request, &response), what));
    return response;
  }

  // A server stream of DataPiece, concatenated; more than `max_bytes` is
  // kDataLoss (a server must not send more than it said).
  template <typename Request>
  absl::StatusOr<std::string> ReadPieces(std::unique_ptr<grpc::ClientReader<v1::DataPiece>> (
                                             Stub::*method)(grpc::ClientContext*, const Request&),
                                         Request request, uint64_t max_bytes,
                                         absl::string_view what) const {
    request.set_api_version(kCoordinatorApiVersion);
    auto context = Context(JobOf(request));
    std::unique_ptr<grpc::ClientReader<v1::DataPiece>> reader =
        ((*stub).*method)(context.get(), request);
    std::string bytes;
    v1::DataPiece piece;
    bool too_long = false;
    while (reader->Read(&piece)) {
      if (bytes.size() + piece.data().size() > max_bytes) {
        too_long = true;
        context->TryCancel();
        break;
      }
      bytes += piece.data();
    }
    const grpc::Status status = reader->Finish();
    if (too_long) {
      return absl::DataLossError(
          absl::StrCat(what, ": the server sent more than ", max_bytes, " bytes"));
    }
    RETURN_IF_ERROR(FromGrpc(status, what));
    return bytes;
  }

 private:
  mutable absl::Mutex mu_;
  std::map<std::pair<std::string, std::string>, std::string> secrets_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> last_worker_ ABSL_GUARDED_BY(mu_);
};

class RemoteCheckpointReader final : public CheckpointReader {
 public:
  RemoteCheckpointReader(const Connection* connection, CheckpointInfo info)
      : connection_(connection), info_(std::move(info)) {}

  const CheckpointInfo& info() const override { return info_; }

  absl::StatusOr<std::string> ReadChunk(absl::string_view name, uint32_t chunk) override {
    const EntryInfo* entry = info_.Find(name);
    if (entry == nullptr) {
      return absl::NotFoundError(
          absl::StrCat("checkpoint ", info_.job_id, "@", info_.step, " has no entry '", name, "'"));
    }
    if (chunk >= entry->num_chunks) {
      return absl::OutOfRangeError(
          absl::StrCat("entry '", name, "' has ", entry->num_chunks, " chunks; asked for ", chunk));
    }
    const uint64_t expected = std::min<uint64_t>(
        entry->chunk_bytes, entry->size_bytes - uint64_t{chunk} * entry->chunk_bytes);
    v1::ReadCheckpointChunkRequest request;
    request.set_job_id(info_.job_id);
    request.set_step(info_.step);
    request.set_entry(std::string(name));
    request.set_chunk(chunk);
    const std::string what = absl::StrCat("ReadCheckpointChunk ", info_.job_id, "@", info_.step,
                                          " '", name, "' chunk ", chunk);
    ASSIGN_OR_RETURN(std::string bytes,
                     connection_->ReadPieces(&Stub::ReadCheckpointChunk, request, expected, what));
    if (bytes.size() != expected) {
      return absl::DataLossError(
          absl::StrCat(what, ": got ", bytes.size(), " bytes, expected ", expected));
    }
    return bytes;
  }

  absl::Status ReadTensor(absl::string_view name, TensorView out) override {
    ASSIGN_OR_RETURN(const EntryInfo* entry, Tensor(name, out));
    if (out.count() != entry->count()) {
      return absl::InvalidArgumentError(absl::StrCat("entry '", name, "' holds ", entry->count(),
                                                     " elements, the buffer ", out.count()));
    }
    return ReadBytes(*entry, 0, entry->size_bytes, static_cast<char*>(out.data()));
  }

  absl::Status ReadSlice(absl::string_view name, uint64_t offset, TensorView out) override {
    ASSIGN_OR_RETURN(const EntryInfo* entry, Tensor(name, out));
    if (offset > entry->count() || out.count() > entry->count() - offset) {
      return absl::OutOfRangeError(absl::StrCat("slice [", offset, ", ", offset + out.count(),
                                                ") of '", name, "' (", entry->count(),
                                                " elements)"));
    }
    const uint64_t element = DTypeSize(entry->dtype);
    return ReadBytes(*entry, offset * element, out.count() * element,
                     static_cast<char*>(out.data()));
  }

  absl::StatusOr<std::string> ReadBlob(absl::string_view name) override {
    const EntryInfo* entry = info_.Find(name);
    if (entry == nullptr) return absl::NotFoundError(absl::StrCat("no entry '", name, "'"));
    if (entry->kind != EntryKind::kBlob) {
      return absl::InvalidArgumentError(absl::StrCat("entry '", name, "' is a tensor, not a blob"));
    }
    std::string bytes(entry->size_bytes, '\0');
    RETURN_IF_ERROR(ReadBytes(*entry, 0, entry->size_bytes, bytes.data()));
    return bytes;
  }

  absl::Status Verify() override {
    // The server verifies every chunk it reads; reading them all is the check.
    for (const EntryInfo& entry : info_.entries) {
      for (uint32_t chunk = 0; chunk < entry.num_chunks; ++chunk) {
        RETURN_IF_ERROR(ReadChunk(entry.name, chunk).status());
      }
    }
    return absl::OkStatus();
  }

 private:
  absl::StatusOr<const EntryInfo*> Tensor(absl::string_view name, const TensorView& out) {
    const EntryInfo* entry = info_.Find(name);
    if (entry == nullptr) return absl::NotFoundError(absl::StrCat("no entry '", name, "'"));
    if (entry->kind != EntryKind::kTensor || entry->dtype != out.dtype()) {
      return absl::InvalidArgumentError(
          absl::StrCat("entry '", name, "' is not a ", DTypeName(out.dtype()), " tensor"));
    }
    return entry;
  }

  // Bytes [begin, begin + size) of `entry` into `out`, chunk by chunk.
  absl::Status ReadBytes(const EntryInfo& entry, uint64_t begin, uint64_t size, char* out) {
    if (size == 0) return absl::OkStatus();
    const uint64_t chunk_bytes = entry.chunk_bytes;
    for (uint64_t chunk = begin / chunk_bytes; chunk * chunk_bytes < begin + size; ++chunk) {
      ASSIGN_OR_RETURN(std::string bytes, ReadChunk(entry.name, static_cast<uint32_t>(chunk)));
      const uint64_t chunk_begin = chunk * chunk_bytes;
      const uint64_t from = std::max(begin, chunk_begin);
      const uint64_t to = std::min(begin + size, chunk_begin + bytes.size());
      std::memcpy(out + (from - begin), bytes.data() + (from - chunk_begin), to - from);
    }
    return absl::OkStatus();
  }

  const Connection* const connection_;  // the client's; outlives this reader
  const CheckpointInfo info_;
};

// Both kinds of upload stream: a whole checkpoint (CheckpointWriter) or one
// part of a split one (CheckpointPartWriter).
class RemoteCheckpointWriter final : public CheckpointWriter, public CheckpointPartWriter {
 public:
  RemoteCheckpointWriter(const Connection* connection, std::string what, const std::string& job_id,
                         const std::string& worker_id)
      : connection_(connection),
        what_(std::move(what)),
        context_(connection->Context(job_id, worker_id)) {
    stream_ = connection_->stub->PutCheckpoint(context_.get(), &response_);
  }
  ~RemoteCheckpointWriter() override {
    if (!finished_) {
      context_->TryCancel();
      stream_->Finish().ok();
    }
  }

  absl::Status Send(v1::PutCheckpointRequest message) {
    RETURN_IF_ERROR(failed_);
    message.set_api_version(kCoordinatorApiVersion);
    if (!stream_->Write(message)) {
      // The server ended the stream: its status says why.
      finished_ = true;
      failed_ = FromGrpc(stream_->Finish(), what_);
      if (failed_.ok()) failed_ = absl::AbortedError(absl::StrCat(what_, ": stream closed"));
    }
    return failed_;
  }

  absl::Status BeginEntry(absl::string_view name, EntryKind kind, DType dtype,
                          std::vector<int64_t> shape) override {
    return SendEntry(name, kind, dtype, shape, std::nullopt);
  }

  absl::Status BeginSlice(absl::string_view name, EntryKind kind, DType dtype,
                          std::vector<int64_t> shape, uint64_t offset, uint64_t count) override {
    return SendEntry(name, kind, dtype, shape, std::make_pair(offset, count));
  }

  absl::Status Append(const void* data, size_t size_bytes) override {
    const char* bytes = static_cast<const char*>(data);
    const size_t piece = static_cast<size_t>(connection_->options.piece_bytes);
    for (size_t at = 0; at < size_bytes; at += piece) {
      v1::PutCheckpointRequest message;
      message.set_data(bytes + at, std::min(piece, size_bytes - at));
      RETURN_IF_ERROR(Send(std::move(message)));
    }
    return absl::OkStatus();
  }

  absl::Status Commit(absl::Span<const Record> records) override {
    v1::PutCheckpointRequest message;
    for (const Record& record : records) {
      auto* out = message.mutable_commit()->add_records();
      out->set_key(record.key);
      if (record.value.has_value()) {
        out->set_value(*record.value);
      } else {
        out->set_erase(true);
      }
    }
    message.mutable_commit();
    RETURN_IF_ERROR(Send(std::move(message)));
    stream_->WritesDone();
    finished_ = true;
    const absl::Status status = FromGrpc(stream_->Finish(), what_);
    failed_ = status.ok() ? absl::FailedPreconditionError(what_ + ": already committed") : status;
    return status;
  }

  absl::StatusOr<bool> Finish() override {
    RETURN_IF_ERROR(Commit({}));
    return response_.committed();
  }

 private:
  // `slice`: (offset, count) for a part of a split upload.
  absl::Status SendEntry(absl::string_view name, EntryKind kind, DType dtype,
                         const std::vector<int64_t>& shape,
                         std::optional<std::pair<uint64_t, uint64_t>> slice) {
    v1::PutCheckpointRequest message;
    v1::PutCheckpointRequest::Entry* entry = message.mutable_entry();
    entry->set_name(std::string(name));
    entry->set_blob(kind == EntryKind::kBlob);
    entry->set_dtype(static_cast<uint32_t>(dtype));
    for (int64_t dim : shape) entry->add_shape(dim);
    if (slice.has_value()) {
      entry->set_slice_offset(slice->first);
      entry->set_slice_count(slice->second);
    }
    return Send(std::move(message));
  }

  const Connection* const connection_;  // the client's; outlives this writer
  const std::string what_;
  std::unique_ptr<grpc::ClientContext> context_;
  v1::PutCheckpointResponse response_;
  std::unique_ptr<grpc::ClientWriter<v1::PutCheckpointRequest>> stream_;
  absl::Status failed_;
  bool finished_ = false;
};

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const std::string& address,
                                                           const GrpcClientOptions& options) {
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (options.tls_root_cert_file.empty()) {
    credentials = grpc::InsecureChannelCredentials();
  } else {
    std::ifstream in(options.tls_root_cert_file, std::ios::binary);
    if (!in) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot read the CA file ", options.tls_root_cert_file));
    }
    std::ostringstream pem;
    pem << in.rdbuf();
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = pem.str();
    credentials = grpc::SslCredentials(ssl);
  }
  if (options.piece_bytes < 1 || options.piece_bytes > options.max_message_bytes / 2) {
    return absl::InvalidArgumentError("piece_bytes must be 1 to half of max_message_bytes");
  }
  grpc::ChannelArguments arguments;
  arguments.SetMaxReceiveMessageSize(options.max_message_bytes);
  arguments.SetMaxSendMessageSize(options.max_message_bytes);
  const int backoff_ms = static_cast<int>(
      std::max<int64_t>(1, absl::ToInt64Milliseconds(options.max_reconnect_backoff)));
  arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, std::min(100, backoff_ms));
  arguments.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, std::min(100, backoff_ms));
  arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, backoff_ms);
  // A failed connection makes the channel resolve the name again, at most
  // this often (30 s by default): that, more than the backoff, kept a
  // restarted coordinator unseen for seconds.
  arguments.SetInt(GRPC_ARG_DNS_MIN_TIME_BETWEEN_RESOLUTIONS_MS, std::min(250, backoff_ms));
  return grpc::CreateCustomChannel(address, credentials, arguments);
}

class GrpcClient final : public CoordinatorClient, public CoordinatorAdmin {
 public:
  GrpcClient(std::shared_ptr<grpc::Channel> channel, const GrpcClientOptions& options)
      : connection_(v1::Coordinator::NewStub(channel), options) {}

  // ---- CoordinatorClient ----

  absl::StatusOr<v1::JobStatus> GetJob(absl::string_view job_id) override {
    v1::GetJobRequest request;
    request.set_job_id(std::string(job_id));
    ASSIGN_OR_RETURN(v1::GetJobResponse response,
                     connection_.Call(&Stub::GetJob, request, "GetJob"));
    return response.job();
  }
  absl::StatusOr<WorkerStatus> Join(const JoinRequest& in) override {
    v1::JoinRequest request;
    request.set_job_id(in.job_id);
    request.set_token(in.token);
    request.set_worker_id(in.worker_id);
    request.set_endpoint(in.endpoint);
    ASSIGN_OR_RETURN(v1::JoinResponse response, connection_.Call(&Stub::Join, request, "Join"));
    WorkerStatus status = FromProto(response.status());
    connection_.Remember(in.job_id, status.worker_id, response.member_secret());
    status.member_secret = response.member_secret();
    return status;
  }
  absl::StatusOr<WorkerStatus> Heartbeat(absl::string_view job_id,
                                         absl::string_view worker_id) override {
    ASSIGN_OR_RETURN(v1::HeartbeatResponse response,
                     connection_.Call(&Stub::Heartbeat, Worker(job_id, worker_id), "Heartbeat"));
    return FromProto(response.status());
  }
  absl::Status Leave(absl::string_view job_id, absl::string_view worker_id,
                     const LeaveReason& reason) override {
    v1::LeaveRequest request;
    request.set_job_id(std::string(job_id));
    request.set_worker_id(std::string(worker_id));
    request.set_failure(static_cast<int32_t>(reason.failure));
    request.set_reason(reason.message);
    return connection_.Call(&Stub::Leave, request, "Leave").status();
  }
  absl::StatusOr<uint64_t> ReportFailure(absl::string_view job_id, absl::string_view reporter,
                                         absl::string_view failed) override {
    v1::ReportFailureRequest request;
    request.set_job_id(std::string(job_id));
    request.set_reporter(std::string(reporter));
    request.set_failed(std::string(failed));
    ASSIGN_OR_RETURN(v1::ReportFailureResponse response,
                     connection_.Call(&Stub::ReportFailure, request, "ReportFailure"));
    return response.generation();
  }
  absl::StatusOr<RendezvousResult> Rendezvous(absl::string_view job_id, absl::string_view worker_id,
                                              uint64_t generation) override {
    v1::RendezvousRequest request;
    request.set_job_id(std::string(job_id));
    request.set_worker_id(std::string(worker_id));
    request.set_generation(generation);
    ASSIGN_OR_RETURN(v1::RendezvousResponse response,
                     connection_.Call(&Stub::Rendezvous, request, "Rendezvous"));
    RendezvousResult result;
    switch (response.state()) {
      case v1::RendezvousResponse::STATE_READY:
        result.state = RendezvousResult::State::kReady;
        break;
      case v1::RendezvousResponse::STATE_WAITING:
        result.state = RendezvousResult::State::kWaiting;
        break;
      case v1::RendezvousResponse::STATE_SUPERSEDED:
        result.state = RendezvousResult::State::kSuperseded;
        break;
      default:
        return absl::DataLossError("Rendezvous: the server sent no state");
    }
    result.generation = response.generation();
    result.deadline = absl::FromUnixMicros(response.deadline_unix_micros());
    const v1::GroupView& view = response.view();
    result.view.generation = view.generation();
    for (const v1::GroupMember& member : view.members()) {
      result.view.members.push_back({member.worker_id(), member.rank(), member.endpoint()});
    }
    result.view.secret = view.secret();
    result.view.resume_step = view.resume_step();
    result.view.from_checkpoint = view.from_checkpoint();
    return result;
  }
  absl::StatusOr<ShardLease> AcquireShard(absl::string_view job_id,
                                          absl::string_view worker_id) override {
    ASSIGN_OR_RETURN(
        v1::AcquireShardResponse response,
        connection_.Call(&Stub::AcquireShard, Worker(job_id, worker_id), "AcquireShard"));
    return ShardLease{response.shard(), response.name(),     response.size(), response.offset(),
                      response.epoch(), response.checksum(), response.begin()};
  }
  absl::StatusOr<ProgressResult> ReportProgress(const ProgressReport& report) override {
    v1::ReportProgressRequest request;
    request.set_job_id(report.job_id);
    request.set_worker_id(report.worker_id);
    request.set_request_id(report.request_id);
    request.set_generation(report.generation);
    request.set_shard(report.shard);
    request.set_offset(report.offset);
    request.set_step(report.step);
    ASSIGN_OR_RETURN(v1::ReportProgressResponse response,
                     connection_.Call(&Stub::ReportProgress, request, "ReportProgress"));
    return ProgressResult{response.duplicate(), response.consumed_offset(),
                          response.shard_finished()};
  }
  absl::StatusOr<StepResult> EndStep(absl::string_view job_id, absl::string_view worker_id,
                                     uint64_t step) override {
    v1::EndStepRequest request;
    request.set_job_id(std::string(job_id));
    request.set_worker_id(std::string(worker_id));
    request.set_step(step);
    ASSIGN_OR_RETURN(v1::EndStepResponse response,
                     connection_.Call(&Stub::EndStep, request, "EndStep"));
    return StepResult{response.generation(), response.regroup(), response.should_checkpoint(),
                      response.pause(), response.job_state()};
  }
  absl::StatusOr<std::unique_ptr<CheckpointWriter>> BeginCheckpoint(absl::string_view job_id,
                                                                    absl::string_view worker_id,
                                                                    uint64_t step) override {
    auto writer = std::make_unique<RemoteCheckpointWriter>(
        &connection_, absl::StrCat("PutCheckpoint ", job_id, "@", step), std::string(job_id),
        std::string(worker_id));
    v1::PutCheckpointRequest begin;
    begin.mutable_begin()->set_job_id(std::string(job_id));
    begin.mutable_begin()->set_worker_id(std::string(worker_id));
    begin.mutable_begin()->set_step(step);
    RETURN_IF_ERROR(writer->Send(std::move(begin)));
    return writer;
  }
  absl::StatusOr<std::unique_ptr<CheckpointPartWriter>> BeginCheckpointPart(
      absl::string_view job_id, absl::string_view worker_id, uint64_t step, uint32_t part,
      uint32_t parts) override {
    auto writer = std::make_unique<RemoteCheckpointWriter>(
        &connection_, absl::StrCat("PutCheckpoint ", job_id, "@", step, " part ", part),
        std::string(job_id), std::string(worker_id));
    v1::PutCheckpointRequest begin;
    begin.mutable_begin()->set_job_id(std::string(job_id));
    begin.mutable_begin()->set_worker_id(std::string(worker_id));
    begin.mutable_begin()->set_step(step);
    begin.mutable_begin()->set_part(part);
    begin.mutable_begin()->set_parts(parts);
    RETURN_IF_ERROR(writer->Send(std::move(begin)));
    return writer;
  }
  absl::StatusOr<std::unique_ptr<CheckpointReader>> OpenLatestCheckpoint(
      absl::string_view job_id) override {
    v1::GetCheckpointInfoRequest request;
    request.set_job_id(std::string(job_id));
    request.set_latest(true);
    return Open(request);
  }
  absl::StatusOr<std::unique_ptr<CheckpointReader>> OpenCheckpoint(absl::string_view job_id,
                                                                   uint64_t step) override {
    v1::GetCheckpointInfoRequest request;
    request.set_job_id(std::string(job_id));
    request.set_step(step);
    return Open(request);
  }
  absl::StatusOr<std::string> FetchDatasetFile(absl::string_view job_id,
                                               absl::string_view name) override {
    v1::FetchDatasetFileRequest request;
    request.set_job_id(std::string(job_id));
    request.set_name(std::string(name));
    constexpr uint64_t kMaxFileBytes = uint64_t{4} << 30;
    return connection_.ReadPieces(&Stub::FetchDatasetFile, request, kMaxFileBytes,
                                  absl::StrCat("FetchDatasetFile ", job_id, " ", name));
  }

  // ---- CoordinatorAdmin ----

  absl::StatusOr<v1::JobStatus> SubmitJob(absl::string_view admin_token, const v1::JobSpec& spec,
                                          absl::string_view request_id) override {
    v1::SubmitJobRequest request;
    *request.mutable_spec() = spec;
    request.set_admin_token(std::string(admin_token));
    request.set_request_id(std::string(request_id));
    ASSIGN_OR_RETURN(v1::SubmitJobResponse response,
                     connection_.Call(&Stub::SubmitJob, request, "SubmitJob"));
    return response.job();
  }
  absl::StatusOr<std::vector<v1::JobStatus>> ListJobs() override {
    ASSIGN_OR_RETURN(v1::ListJobsResponse response,
                     connection_.Call(&Stub::ListJobs, v1::ListJobsRequest(), "ListJobs"));
    return std::vector<v1::JobStatus>(response.jobs().begin(), response.jobs().end());
  }
  absl::StatusOr<std::vector<v1::WorkerInfo>> ListWorkers(absl::string_view job_id) override {
    v1::ListWorkersRequest request;
    request.set_job_id(std::string(job_id));
    ASSIGN_OR_RETURN(v1::ListWorkersResponse response,
                     connection_.Call(&Stub::ListWorkers, request, "ListWorkers"));
    return std::vector<v1::WorkerInfo>(response.workers().begin(), response.workers().end());
  }
  absl::StatusOr<v1::JobStatus> PauseJob(absl::string_view admin_token,
                                         absl::string_view job_id) override {
    return Control(&Stub::PauseJob, admin_token, job_id, "PauseJob");
  }
  absl::StatusOr<v1::JobStatus> ResumeJob(absl::string_view admin_token,
                                          absl::string_view job_id) override {
    return Control(&Stub::ResumeJob, admin_token, job_id, "ResumeJob");
  }
  absl::StatusOr<v1::JobStatus> CancelJob(absl::string_view admin_token,
                                          absl::string_view job_id) override {
    return Control(&Stub::CancelJob, admin_token, job_id, "CancelJob");
  }
  absl::StatusOr<v1::JobStatus> ExtendJob(absl::string_view admin_token, absl::string_view job_id,
                                          uint64_t max_steps) override {
    v1::ExtendJobRequest request;
    request.set_admin_token(std::string(admin_token));
    request.set_job_id(std::string(job_id));
    request.set_max_steps(max_steps);
    ASSIGN_OR_RETURN(v1::JobControlResponse response,
                     connection_.Call(&Stub::ExtendJob, request, "ExtendJob"));
    return response.job();
  }
  absl::StatusOr<v1::JobStatus> EvictWorker(absl::string_view admin_token, absl::string_view job_id,
                                            absl::string_view worker_id,
                                            bool revoke_token) override {
    v1::EvictWorkerRequest request;
    request.set_admin_token(std::string(admin_token));
    request.set_job_id(std::string(job_id));
    request.set_worker_id(std::string(worker_id));
    request.set_revoke_token(revoke_token);
    ASSIGN_OR_RETURN(v1::JobControlResponse response,
                     connection_.Call(&Stub::EvictWorker, request, "EvictWorker"));
    return response.job();
  }
  absl::StatusOr<std::string> CreateToken(absl::string_view admin_token, absl::string_view job_id,
                                          absl::Duration ttl) override {
    v1::CreateTokenRequest request;
    request.set_admin_token(std::string(admin_token));
    request.set_job_id(std::string(job_id));
    request.set_ttl_seconds(static_cast<uint64_t>(std::max<int64_t>(0, absl::ToInt64Seconds(ttl))));
    ASSIGN_OR_RETURN(v1::CreateTokenResponse response,
                     connection_.Call(&Stub::CreateToken, request, "CreateToken"));
    return response.token();
  }
  absl::Status RevokeToken(absl::string_view admin_token, absl::string_view token_or_id) override {
    v1::RevokeTokenRequest request;
    request.set_admin_token(std::string(admin_token));
    request.set_token_or_id(std::string(token_or_id));
    return connection_.Call(&Stub::RevokeToken, request, "RevokeToken").status();
  }
  absl::Status Drain(absl::string_view admin_token) override {
    v1::DrainRequest request;
    request.set_admin_token(std::string(admin_token));
    return connection_.Call(&Stub::Drain, request, "Drain").status();
  }

 private:
  static v1::WorkerRequest Worker(absl::string_view job_id, absl::string_view worker_id) {
    v1::WorkerRequest request;
    request.set_job_id(std::string(job_id));
    request.set_worker_id(std::string(worker_id));
    return request;
  }

  absl::StatusOr<v1::JobStatus> Control(grpc::Status (Stub::*method)(grpc::ClientContext*,
                                                                     const v1::JobControlRequest&,
                                                                     v1::JobControlResponse*),
                                        absl::string_view admin_token, absl::string_view job_id,
                                        absl::string_view what) {
    v1::JobControlRequest request;
    request.set_admin_token(std::string(admin_token));
    request.set_job_id(std::string(job_id));
    ASSIGN_OR_RETURN(v1::JobControlResponse response, connection_.Call(method, request, what));
    return response.job();
  }

  absl::StatusOr<std::unique_ptr<CheckpointReader>> Open(
      const v1::GetCheckpointInfoRequest& request) {
    ASSIGN_OR_RETURN(v1::GetCheckpointInfoResponse response,
                     connection_.Call(&Stub::GetCheckpointInfo, request, "GetCheckpointInfo"));
    CheckpointInfo info;
    info.job_id = response.job_id();
    info.step = response.step();
    info.created = absl::FromUnixMicros(response.created_unix_micros());
    info.total_bytes = response.total_bytes();
    for (const v1::CheckpointEntryInfo& in : response.entries()) {
      EntryInfo entry;
      entry.name = in.name();
      entry.kind = in.blob() ? EntryKind::kBlob : EntryKind::kTensor;
      if (in.dtype() > 255 || !IsValidDType(static_cast<uint8_t>(in.dtype())) ||
          in.chunk_bytes() == 0 || in.chunk_bytes() > uint32_t{1} << 30) {
        return absl::DataLossError(
            absl::StrCat("GetCheckpointInfo: entry '", in.name(), "' is malformed"));
      }
      entry.dtype = static_cast<DType>(in.dtype());
      entry.shape.assign(in.shape().begin(), in.shape().end());
      entry.size_bytes = in.size_bytes();
      entry.chunk_bytes = in.chunk_bytes();
      entry.num_chunks = in.num_chunks();
      info.entries.push_back(std::move(entry));
    }
    return std::make_unique<RemoteCheckpointReader>(&connection_, std::move(info));
  }

  Connection connection_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<CoordinatorClient>> NewGrpcClient(const std::string& address,
                                                                 const GrpcClientOptions& options) {
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel, MakeChannel(address, options));
  return std::make_unique<GrpcClient>(std::move(channel), options);
}

absl::StatusOr<std::unique_ptr<CoordinatorAdmin>> NewGrpcAdmin(const std::string& address,
                                                               const GrpcClientOptions& options) {
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel, MakeChannel(address, options));
  return std::make_unique<GrpcClient>(std::move(channel), options);
}

}  // namespace potluck
