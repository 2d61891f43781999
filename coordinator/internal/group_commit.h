// GroupCommit: "acknowledged = durable" at the cost of one synced RocksDB
// write per group of concurrent callers. Callers Queue() their writes (under
// the facade's lock, so writes queue in the order the state changed) and get
// a ticket; they then wait for it without any lock (AwaitDurable) or hand a
// callback that runs once it is durable (OnDurable). One committer thread
// writes whatever is queued as one batch, then the next.
//
// A failed write is sticky: memory is ahead of disk, so every later Queue
// and wait fails with it until the coordinator is reopened (which reloads
// what is on disk).
//
// Thread-safety: every method is thread-safe. Lock order: the facade's lock,
// then this one's; the committer writes holding neither, and calls the
// OnDurable callbacks holding neither.
#ifndef POTLUCK_COORDINATOR_INTERNAL_GROUP_COMMIT_H_
#define POTLUCK_COORDINATOR_INTERNAL_GROUP_COMMIT_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

#include "coordinator/internal/state_db.h"

namespace potluck::coordinator_internal {

class GroupCommit {
 public:
  // `db` is not owned and must outlive this object. Starts the committer.
  explicit GroupCommit(StateDb* db);
  // Writes what is queued, then stops the committer.
  ~GroupCommit();
  GroupCommit(const GroupCommit&) = delete;
  GroupCommit& operator=(const GroupCommit&) = delete;

  // Queues `writes` and returns their ticket (the last ticket if `writes` is
  // empty), or the sticky error of an earlier failed write.
  absl::StatusOr<uint64_t> Queue(std::vector<StateWrite> writes) ABSL_LOCKS_EXCLUDED(mu_);
  // Blocks until every write up to `ticket` is durable (or one failed).
  absl::Status AwaitDurable(uint64_t ticket) ABSL_LOCKS_EXCLUDED(mu_);
  // Calls `done` once every write up to `ticket` is durable (or failed):
  // inline if that is already so, else on the committer thread.
  void OnDurable(uint64_t ticket, std::function<void(const absl::Status&)> done)
      ABSL_LOCKS_EXCLUDED(mu_);
  // The last ticket handed out.
  uint64_t LastTicket() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void CommitLoop() ABSL_LOCKS_EXCLUDED(mu_);

  StateDb* const db_;  // not owned
  absl::Mutex mu_;
  std::vector<StateWrite> queued_puts_ ABSL_GUARDED_BY(mu_);
  uint64_t queued_ticket_ ABSL_GUARDED_BY(mu_) = 0;   // the last ticket handed out
  uint64_t durable_ticket_ ABSL_GUARDED_BY(mu_) = 0;  // written through here
  absl::CondVar commit_done_;                         // the committer finished a write
  std::multimap<uint64_t, std::function<void(const absl::Status&)>> on_durable_
      ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status error_ ABSL_GUARDED_BY(mu_);  // sticky
  std::thread committer_;
};

}  // namespace potluck::coordinator_internal

#endif  // POTLUCK_COORDINATOR_INTERNAL_GROUP_COMMIT_H_
