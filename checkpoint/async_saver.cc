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
  Pending& pending = pending_;
  pending = Pending{};
  pending.job_id = std::string(job_id);
  pending.step = step;
  if (buffers_.size() < tensors.size()) buffers_.resize(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorView& source = tensors[i].data;
    std::vector<char>& buffer = buffers_[i];
    buffer.resize(source.size_bytes());
    if (source.size_bytes() > 0) std::memcpy(buffer.data(), source.data(), source.size_bytes());
    pending.tensors.push_back({tensors[i].name,
                               TensorView(buffer.data(), source.dtype(), source.count()),
                               tensors[i].shape});
  }
  for (const BlobToSave& blob : blobs) pending.blob_bytes.emplace_back(blob.bytes);
  for (size_t i = 0; i < blobs.size(); ++i) {
    pending.blobs.push_back({blobs[i].name, pending.blob_bytes[i]});
  }
  pending.records.assign(records.begin(), records.end());
  in_flight_ = true;
  return absl::OkStatus();
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
    // Start() does not touch pending_ or buffers_ while in_flight_, so the
    // save can run without the lock.
    const Pending& pending = pending_;
    mu_.Unlock();
    const absl::Status status =
        store_->Save(pending.job_id, pending.step, pending.tensors, pending.blobs, pending.records);
    mu_.Lock();
    last_status_ = status;
    collected_ = status.ok();
    in_flight_ = false;
  }
}

}  // namespace potluck
