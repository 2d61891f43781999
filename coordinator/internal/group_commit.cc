#include "coordinator/internal/group_commit.h"

#include "common/status.h"
#include "rocksdb/write_batch.h"

namespace potluck::coordinator_internal {

GroupCommit::GroupCommit(StateDb* db) : db_(db) {
  committer_ = std::thread([this] { CommitLoop(); });
}

GroupCommit::~GroupCommit() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  committer_.join();
}

absl::StatusOr<uint64_t> GroupCommit::Queue(std::vector<StateWrite> puts) {
  absl::MutexLock lock(&mu_);
  if (!error_.ok()) return error_;
  if (puts.empty()) return queued_ticket_;
  for (auto& put : puts) queued_puts_.push_back(std::move(put));
  return ++queued_ticket_;
}

absl::Status GroupCommit::AwaitDurable(uint64_t ticket) {
  absl::MutexLock lock(&mu_);
  // A CondVar, not Await(Condition): conditions would be re-evaluated for
  // every waiter at every unlock, and each queued write unlocks.
  while (error_.ok() && durable_ticket_ < ticket) commit_done_.Wait(&mu_);
  return error_;
}

void GroupCommit::OnDurable(uint64_t ticket, std::function<void(const absl::Status&)> done) {
  absl::Status status;
  {
    absl::MutexLock lock(&mu_);
    if (error_.ok() && durable_ticket_ < ticket) {
      on_durable_.emplace(ticket, std::move(done));
      return;
    }
    status = error_;
  }
  done(status);
}

uint64_t GroupCommit::LastTicket() {
  absl::MutexLock lock(&mu_);
  return queued_ticket_;
}

void GroupCommit::CommitLoop() {
  absl::MutexLock lock(&mu_);
  for (;;) {
    auto work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return !queued_puts_.empty() || stopping_;
    };
    mu_.Await(absl::Condition(&work));
    if (queued_puts_.empty()) return;  // stopping, and everything is written
    std::vector<StateWrite> puts;
    puts.swap(queued_puts_);
    const uint64_t through = queued_ticket_;
    mu_.Unlock();
    rocksdb::WriteBatch batch;
    for (const auto& [key, value] : puts) {
      if (value.has_value()) {
        batch.Put(key, *value);
      } else {
        batch.Delete(key);
      }
    }
    const absl::Status written = db_->Write(&batch);
    mu_.Lock();
    if (written.ok()) {
      durable_ticket_ = through;
    } else if (error_.ok()) {
      // Memory is ahead of disk: every later call fails until a reopen.
      error_ = Annotate(written, "state write failed; the coordinator must be reopened");
    }
    commit_done_.SignalAll();
    std::vector<std::function<void(const absl::Status&)>> ready;
    const auto end = error_.ok() ? on_durable_.upper_bound(durable_ticket_) : on_durable_.end();
    for (auto it = on_durable_.begin(); it != end; ++it) ready.push_back(std::move(it->second));
    on_durable_.erase(on_durable_.begin(), end);
    const absl::Status status = error_;
    mu_.Unlock();
    for (auto& done : ready) done(status);
    mu_.Lock();
  }
}

}  // namespace potluck::coordinator_internal
