// ShardLedger: one job's shards for the current epoch, and the rule that makes
// data exactly-once (private to coordinator/).
//
// Per shard, two watermarks: `committed` (the offset a committed checkpoint
// counts as trained; only CommitAt moves it) and `consumed` (the offset the
// holder reported, >= committed). Progress reported for step s stays in the
// shard's `progress` list until a checkpoint at step >= s commits it. The
// committed offsets are what counts: RevertUncommitted() brings every shard
// back to them, and a shard is done when committed == size.
//
// Thread-safety: none; the Coordinator guards it with its mutex. No I/O: the
// caller persists the shards named by TakeDirty().
#ifndef POTLUCK_COORDINATOR_INTERNAL_LEDGER_H_
#define POTLUCK_COORDINATOR_INTERNAL_LEDGER_H_

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

#include "coordinator/internal/state.pb.h"

namespace potluck::coordinator_internal {

struct Progress {
  uint64_t step = 0;
  uint64_t offset = 0;
};

// One lease unit of the ledger: the range [begin, begin + size) of the
// dataset file `name` (a job splits its files into ranges, see jobs.h).
// Offsets below count from `begin`.
struct Shard {
  std::string name;
  uint64_t begin = 0;
  uint64_t size = 0;
  uint64_t checksum = 0;  // the manifest's at submit (0: not known)
  uint64_t committed = 0;
  uint64_t consumed = 0;
  std::string holder;  // empty: not leased
  uint64_t lease_from = 0;
  std::vector<Progress> progress;  // uncommitted reports, ascending step and offset
};

class ShardLedger {
 public:
  ShardLedger() = default;
  ShardLedger(std::vector<Shard> shards, uint64_t epoch);

  uint64_t epoch() const { return epoch_; }
  const std::vector<Shard>& shards() const { return shards_; }

  // The shard `worker` holds (it keeps one at a time) or, failing that, leases
  // the next pending shard of its slot: a group of `slots` members splits the
  // shards by index modulo `slots`, and the member of rank `slot` takes its
  // own, partly committed ones first, then by index. So which member reads
  // which data depends only on the ranks and the ledger, never on who asks
  // first: a run resumed from a checkpoint with the same world size reads
  // what the uninterrupted run read. The lease starts at the shard's
  // consumed offset. kResourceExhausted when the slot has no pending shard (the
  // others' may still have some: at an epoch's end a member can idle for up
  // to one shard's worth of steps).
  absl::StatusOr<uint32_t> Acquire(absl::string_view worker, uint32_t slot = 0, uint32_t slots = 1);

  // Moves `shard`'s consumed offset to `offset` for `step`. kInvalidArgument
  // for an unknown shard, kPermissionDenied when another worker holds it,
  // kFailedPrecondition when nobody does, kOutOfRange past the shard's end,
  // kFailedPrecondition for an offset or step behind what was reported. A
  // shard consumed to its end is released.
  absl::Status Report(uint32_t shard, absl::string_view worker, uint64_t offset, uint64_t step);

  // Drops `worker`'s lease; its shard becomes pending again.
  void Release(absl::string_view worker);
  // Drops every lease (a group formed anew leases by its new ranks).
  void ReleaseAll();

  // consumed = committed on every shard and every uncommitted report is
  // forgotten; leases stay with their holders, restarting at committed.
  void RevertUncommitted();

  // True when no shard can be leased because all are consumed to their end
  // (some maybe not committed yet).
  bool AllConsumed() const;
  bool HasUncommitted() const;

  // The ledger as a checkpoint at `step` would commit it: every report for a
  // step <= `step` counts. If that completes every shard the snapshot is of
  // the next epoch with all offsets 0, and `finished` once epoch == epochs.
  potluck::coordinator_state::LedgerSnapshot SnapshotAt(uint64_t step, uint64_t epochs) const;

  // Applies a committed snapshot: committed offsets rise to it (never fall),
  // reports for steps <= its step are dropped, a rollover resets the shards.
  void ApplyCommitted(const potluck::coordinator_state::LedgerSnapshot& snapshot);

  // Replaces the committed state (restart: the checkpoint store's record is
  // the source of truth), then reverts everything uncommitted.
  absl::Status ResetTo(const potluck::coordinator_state::LedgerSnapshot& snapshot);

  void MarkAllDirty();
  // The indices of shards changed since the last call.
  std::set<uint32_t> TakeDirty();

  static potluck::coordinator_state::ShardRecord ToRecord(const Shard& shard);
  static Shard FromRecord(const potluck::coordinator_state::ShardRecord& record);

 private:
  std::vector<Shard> shards_;
  uint64_t epoch_ = 0;
  std::set<uint32_t> dirty_;
};

}  // namespace potluck::coordinator_internal

#endif  // POTLUCK_COORDINATOR_INTERNAL_LEDGER_H_
