// Checkpoint uploads: the bytes of a commit, whole from memory (Commit),
// streamed by one member (Begin), or in parts, one per member (BeginPart).
// A streamed upload, whole or a part, is spooled to disk as it arrives
// (parts.h) and takes the checkpoint store only to commit: the whole one at
// its Commit, a split one when its last part is in. Every form adds the
// ledger snapshot to the same write batch as the model (commits.h).
// Private to coordinator/.
//
// What an upload may take: its bytes and the metadata of its entries count
// against CoordinatorOptions.max_checkpoint_bytes, everything spooled
// together against the spool quota (SpoolQuota), and a member has one
// streamed upload open at a time.
//
// Who may upload what: a whole checkpoint comes from rank 0 of the
// generation only, a split one from every member (part = rank), and either
// must have the layout of the job's committed checkpoints (layout.h); the
// parts of a split one must agree on it (LayoutOfParts). So one member
// cannot replace the group's checkpoint with its own.
//
// Thread-safety: thread-safe. Writers are used by one thread at a time and
// must not outlive the Uploads. No lock is held while bytes are written.
#ifndef POTLUCK_COORDINATOR_INTERNAL_UPLOADS_H_
#define POTLUCK_COORDINATOR_INTERNAL_UPLOADS_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"

#include "checkpoint/checkpoint_store.h"
#include "coordinator/internal/commits.h"
#include "coordinator/internal/layout.h"
#include "coordinator/internal/parts.h"

namespace potluck::coordinator_internal {

// The two halves of a commit that need the facade's lock (commits.h).
class CommitGate {
 public:
  virtual ~CommitGate() = default;
  virtual absl::StatusOr<PendingCommit> PrepareCommit(absl::string_view job_id,
                                                      absl::string_view worker_id, uint64_t step,
                                                      bool snapshot) = 0;
  virtual absl::Status FinishCommit(absl::string_view job_id, const PendingCommit& pending,
                                    absl::Status stored) = 0;
};

class Uploads {
 public:
  // Not owned: `gate` and `store` outlive this object. Parts are spooled
  // under `spool_dir`.
  Uploads(CommitGate* gate, CheckpointStore* store, std::string spool_dir, uint64_t max_bytes,
          uint64_t max_spool_bytes)
      : gate_(gate),
        store_(store),
        spool_dir_(spool_dir),
        max_bytes_(max_bytes),
        quota_(std::move(spool_dir), max_spool_bytes) {}

  // Coordinator::CommitCheckpoint, BeginCheckpoint and BeginCheckpointPart.
  absl::Status Commit(absl::string_view job_id, absl::string_view worker_id, uint64_t step,
                      absl::Span<const TensorToSave> tensors, absl::Span<const BlobToSave> blobs);
  absl::StatusOr<std::unique_ptr<CheckpointWriter>> Begin(absl::string_view job_id,
                                                          absl::string_view worker_id,
                                                          uint64_t step);
  absl::StatusOr<std::unique_ptr<CheckpointPartWriter>> BeginPart(absl::string_view job_id,
                                                                  absl::string_view worker_id,
                                                                  uint64_t step, uint32_t part,
                                                                  uint32_t parts);

  // A part is in (its writer's Finish): keeps it, and commits the checkpoint
  // when it completes the set. True when it did.
  absl::StatusOr<bool> HandInPart(const std::string& job_id, const std::string& worker_id,
                                  uint64_t step, uint32_t part, uint32_t parts,
                                  std::unique_ptr<SpooledPart> spooled);
  // A whole streamed upload is in (its writer's Commit): commits it.
  absl::Status CommitWhole(const std::string& job_id, const std::string& worker_id, uint64_t step,
                           std::unique_ptr<SpooledPart> spooled, absl::Span<const Record> records);
  // A member's streamed upload ended (its writer is gone).
  void EndUpload(const std::string& job_id, const std::string& worker_id);
  const SpoolQuota& quota() const { return quota_; }

  uint64_t max_bytes() const { return max_bytes_; }

  // kInvalidArgument unless `layout` may be job `job_id`'s checkpoint of
  // `step`: CheckLayout against its latest committed checkpoint.
  absl::Status CheckLayoutOf(absl::string_view job_id, const Layout& layout, uint64_t step);

 private:
  // Registers a member's streamed upload (kResourceExhausted when it has
  // one open) and spools it to a new file.
  absl::StatusOr<std::unique_ptr<SpooledPart>> StartUpload(absl::string_view job_id,
                                                           absl::string_view worker_id,
                                                           uint64_t step, uint32_t part);
  // Stores the checkpoint `parts` make up, with `records` and the ledger's.
  absl::Status StoreJoined(const std::string& job_id, const std::string& worker_id, uint64_t step,
                           absl::Span<const SpooledPart* const> parts,
                           absl::Span<const Record> records);

  CommitGate* const gate_;        // not owned
  CheckpointStore* const store_;  // not owned
  const std::string spool_dir_;
  const uint64_t max_bytes_;
  SpoolQuota quota_;

  // Per job, the parts in so far of one (step, generation).
  struct PartSet {
    uint64_t step = 0;
    uint64_t generation = 0;
    std::vector<std::unique_ptr<SpooledPart>> parts;  // by part number; null: not in
  };
  absl::Mutex mu_;
  std::map<std::string, PartSet, std::less<>> part_sets_ ABSL_GUARDED_BY(mu_);
  std::set<std::pair<std::string, std::string>> open_uploads_ ABSL_GUARDED_BY(mu_);  // job, worker
  std::atomic<uint64_t> spool_counter_{0};
};

}  // namespace potluck::coordinator_internal

#endif  // POTLUCK_COORDINATOR_INTERNAL_UPLOADS_H_
