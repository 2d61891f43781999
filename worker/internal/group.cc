#include "worker/internal/group.h"

#include <string>
#include <utility>
#include <vector>

#include "collectives/group.h"
#include "common/status.h"

namespace potluck {
namespace worker_internal {

absl::Status WorkerGroup::Connect(const GroupView& view, int rank, absl::Time deadline) {
  GroupSpec spec;
  spec.generation = view.generation;
  spec.rank = rank;
  spec.endpoints.resize(view.members.size());
  for (const GroupMember& m : view.members) {
    if (m.rank >= view.members.size()) {
      return absl::InvalidArgumentError("the group view's ranks are not 0..n-1");
    }
    spec.endpoints[m.rank] = m.endpoint;
  }
  spec.secret = view.secret;
  spec.bind_host = options_->bind_host;
  spec.advertise_host = options_->advertise_host;
  spec.listener = listener_;
  spec.deadline = deadline;
  ASSIGN_OR_RETURN(std::unique_ptr<Communicator> control, ConnectGroup(spec));
  {
    absl::MutexLock lock(&mu_);
    control_ = std::move(control);
  }
  if (options_->connect_data) {
    auto data = options_->connect_data(view, rank, this->control(), deadline);
    if (!data.ok()) {
      const absl::StatusCode code = data.status().code();
      backend_unusable_ = code == absl::StatusCode::kFailedPrecondition ||
                          code == absl::StatusCode::kInvalidArgument;
      return data.status();
    }
    absl::MutexLock lock(&mu_);
    data_ = *std::move(data);
  }
  return absl::OkStatus();
}

void WorkerGroup::Abort() {
  absl::MutexLock lock(&mu_);
  if (data_ != nullptr) data_->Abort();
  if (control_ != nullptr) control_->Abort();
}

void WorkerGroup::Drop() {
  Abort();
  absl::MutexLock lock(&mu_);
  data_.reset();
  control_.reset();
}

Communicator* WorkerGroup::control() {
  absl::MutexLock lock(&mu_);
  return control_.get();
}

Communicator* WorkerGroup::data() {
  absl::MutexLock lock(&mu_);
  return data_ != nullptr ? data_.get() : control_.get();
}

}  // namespace worker_internal
}  // namespace potluck
