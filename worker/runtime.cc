// WorkerRuntime: the public face of the worker; the parts are in
// worker/internal/ (see runtime.h and docs/architecture.md).
#include "worker/runtime.h"

#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

#include "collectives/tcp_transport.h"
#include "common/status.h"
#include "data/dataset.h"
#include "worker/compute_threads.h"
#include "worker/internal/session.h"
#include "worker/internal/shard_cursor.h"
#include "worker/internal/step_loop.h"

namespace potluck {

namespace v1 = potluck::v1;
using worker_internal::Session;
using worker_internal::SessionOptions;
using worker_internal::StepLoop;

namespace {

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

}  // namespace

class WorkerRuntime::Impl {
 public:
  Impl(CoordinatorClient* client, WorkerOptions options)
      : client_(client), options_(std::move(options)) {}

  ~Impl() {
    if (session_ != nullptr) session_->StopHeartbeats();
  }

  absl::Status Init() {
    if (options_.state_dir.empty()) return absl::InvalidArgumentError("state_dir is required");
    if (options_.clock == nullptr) return absl::InvalidArgumentError("clock is required");
    ASSIGN_OR_RETURN(worker_id_, LoadOrCreateWorkerId(options_.state_dir));
    ASSIGN_OR_RETURN(listener_, TcpListener::Open(options_.bind_host));
    const std::string host =
        options_.advertise_host.empty() ? options_.bind_host : options_.advertise_host;
    SessionOptions session;
    session.job_id = options_.job_id;
    session.token = options_.token;
    session.worker_id = worker_id_;
    session.endpoint = absl::StrCat(host, ":", listener_->port());
    session.heartbeat_interval = options_.heartbeat_interval;
    session.outage_tolerance = options_.outage_tolerance;
    session.clock = options_.clock;
    session_ = std::make_unique<Session>(client_, std::move(session));
    return absl::OkStatus();
  }

  absl::Status Run() {
    RETURN_IF_ERROR(ConfigureComputeThreads(options_.threads).status());
    ASSIGN_OR_RETURN(v1::JobStatus job,
                     session_->Retry([&] { return client_->GetJob(options_.job_id); }));
    if (job.state() == v1::JOB_STATE_FINISHED) return FoundFinished();
    session_->SetFinalStep(options_.max_steps > 0 ? options_.max_steps : job.spec().max_steps());
    if (session_->FinalStep() == 0) {
      return absl::InvalidArgumentError("the job has no max_steps; pass one");
    }
    ASSIGN_OR_RETURN(
        dataset_, worker_internal::OpenJobDataset(session_.get(), job.spec(), options_.state_dir));
    loop_ = std::make_unique<StepLoop>(session_.get(), &options_, listener_.get(), job.spec(),
                                       &dataset_);
    RETURN_IF_ERROR(loop_->Init());

    absl::StatusOr<WorkerStatus> joined = session_->Join();
    // (The job finished since GetJob: kOutOfRange, "no more data".)
    if (joined.status().code() == absl::StatusCode::kOutOfRange) return FoundFinished();
    RETURN_IF_ERROR(joined.status());
    session_->StartHeartbeats([this] { loop_->AbortGroup(); });

    absl::Status result = loop_->Run();
    session_->StopHeartbeats();
    loop_->DropGroup();
    if (loop_->leave() || session_->cancelled()) {
      // A failure that is the job's (its data changed) shows in its status.
      (void)client_->Leave(options_.job_id, worker_id_,
                           {FailureOf(result), std::string(result.message())});
    }
    if (result.ok() && session_->cancelled()) {
      std::cerr << "worker " << worker_id_ << ": job " << options_.job_id
                << " was cancelled; leaving\n";
    }
    return result;
  }

  void Stop() { session_->Stop(); }
  bool found_finished() const { return found_finished_; }
  const std::string& worker_id() const { return worker_id_; }
  const Trainer* trainer() const { return loop_ != nullptr ? loop_->trainer() : nullptr; }
  Model* model() { return loop_ != nullptr ? loop_->model() : nullptr; }
  uint64_t state_repairs() const { return loop_ != nullptr ? loop_->state_repairs() : 0; }

 private:
  // The job finished before this worker joined: nothing to train.
  absl::Status FoundFinished() {
    found_finished_ = true;
    return absl::OkStatus();
  }

  CoordinatorClient* const client_;  // not owned
  const WorkerOptions options_;
  std::string worker_id_;
  // Held for the worker's life: the endpoint it joined with stays its own.
  std::unique_ptr<TcpListener> listener_;
  std::unique_ptr<Session> session_;
  Dataset dataset_;
  std::unique_ptr<StepLoop> loop_;
  bool found_finished_ = false;
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
bool WorkerRuntime::found_finished() const { return impl_->found_finished(); }
uint64_t WorkerRuntime::step() const {
  return impl_->trainer() != nullptr ? impl_->trainer()->step() : 0;
}
uint64_t WorkerRuntime::rounds() const {
  return impl_->trainer() != nullptr ? impl_->trainer()->rounds() : 0;
}
uint64_t WorkerRuntime::StateDigest() const {
  return impl_->trainer() != nullptr ? impl_->trainer()->StateDigest() : 0;
}
uint64_t WorkerRuntime::SharedDigest() const {
  return impl_->trainer() != nullptr ? impl_->trainer()->OuterDigest() : 0;
}
uint64_t WorkerRuntime::state_repairs() const { return impl_->state_repairs(); }
Model* WorkerRuntime::model() { return impl_->model(); }

}  // namespace potluck
