#include "checkpoint/async_saver.h"

#include <cstring>

#include "absl/strings/str_cat.h"

#include "common/status.h"

namespace potluck {

AsyncCheckpointSaver::AsyncCheckpointSaver(CheckpointStore* store)
    : store_(store), thread_([this] { Run(); }) {}

AsyncCheckpointSaver::~AsyncCheckpointSaver() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

absl::Status AsyncCheckpointSaver::Start(absl::string_view job_id, uint64_t step,
                                         absl::Span<const TensorToSave> tensors,
                                         absl::Span<const BlobToSave> blobs,
                                         absl::Span<const Record> records) {
  for (const TensorToSave& tensor : tensors) {
    if (!tensor.data.device().is_cpu()) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", tensor.name, "' is on ",
                                                     tensor.data.device().ToString(),
                                                     ": copy it to host memory first"));
    }
  }
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](bool* in_flight) { return !*in_flight; }, &in_flight_));
  if (!collected_) {
    collected_ = true;
    return Annotate(last_status_, "the previous checkpoint save failed");
  }
  pending_ = Pending{};
  pending_.job_id = std::string(job_id);
  pending_.step = step;
  pending_.tensors.assign(tensors.begin(), tensors.end());
  for (const BlobToSave& blob : blobs) pending_.blob_bytes.emplace_back(blob.bytes);
  for (size_t i = 0; i < blobs.size(); ++i) {
    pending_.blobs.push_back({blobs[i].name, pending_.blob_bytes[i]});
  }
  pending_.records.assign(records.begin(), records.end());
  snapshot_taken_ = false;
  in_flight_ = true;
  return absl::OkStatus();
}

void AsyncCheckpointSaver::WaitForSnapshot() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(&snapshot_taken_));
}

absl::Status AsyncCheckpointSaver::Wait() {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](bool* in_flight) { return !*in_flight; }, &in_flight_));
  collected_ = true;
  return last_status_;
}

bool AsyncCheckpointSaver::InFlight() const {
  absl::MutexLock lock(&mu_);
  return in_flight_;
}

void AsyncCheckpointSaver::Run() {
  absl::MutexLock lock(&mu_);
  while (true) {
    mu_.Await(absl::Condition(
        +[](AsyncCheckpointSaver* self)
             ABSL_NO_THREAD_SAFETY_ANALYSIS { return self->in_flight_ || self->stopping_; },
        this));
    if (!in_flight_) return;  // stopping with nothing left to save
    mu_.Unlock();
    // The snapshot: copy the caller's tensors, then let the caller go on.
    if (buffers_.size() < pending_.tensors.size()) buffers_.resize(pending_.tensors.size());
    for (size_t i = 0; i < pending_.tensors.size(); ++i) {
      TensorToSave& tensor = pending_.tensors[i];
      std::vector<char>& buffer = buffers_[i];
      buffer.resize(tensor.data.size_bytes());
      if (!buffer.empty()) std::memcpy(buffer.data(), tensor.data.data(), buffer.size());
      tensor.data = TensorView(buffer.data(), tensor.data.dtype(), tensor.data.count());
    }
    mu_.Lock();
    snapshot_taken_ = true;
    mu_.Unlock();
    const absl::Status status = store_->Save(pending_.job_id, pending_.step, pending_.tensors,
                                             pending_.blobs, pending_.records);
    mu_.Lock();
    last_status_ = status;
    collected_ = status.ok();
    in_flight_ = false;
  }
}

}  // namespace potluck
