#include "coordinator/internal/ledger.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace potluck::coordinator_internal {

namespace cs = potluck::coordinator_state;

ShardLedger::ShardLedger(std::vector<Shard> shards, uint64_t epoch)
    : shards_(std::move(shards)), epoch_(epoch) {}

absl::StatusOr<uint32_t> ShardLedger::Acquire(absl::string_view worker, uint32_t slot,
                                              uint32_t slots) {
  if (slots == 0 || slot >= slots) {
    return absl::InvalidArgumentError(
        absl::StrCat("slot ", slot, " of ", slots, " does not exist"));
  }
  int best = -1;
  for (size_t i = 0; i < shards_.size(); ++i) {
    const Shard& shard = shards_[i];
    if (shard.holder == worker) return static_cast<uint32_t>(i);
    if (i % slots != slot || !shard.holder.empty() || shard.consumed >= shard.size) continue;
    // Partly committed shards first, so a dead worker's remainder is finished
    // before fresh shards are opened.
    if (best < 0 || (shard.committed > 0 && shards_[best].committed == 0)) {
      best = static_cast<int>(i);
    }
  }
  if (best < 0) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "no pending shard for slot ", slot, " of ", slots, " in epoch ", epoch_,
        ": its shards are leased, or consumed and waiting for a checkpoint; retry later"));
  }
  Shard& shard = shards_[best];
  shard.holder = std::string(worker);
  shard.lease_from = shard.consumed;
  dirty_.insert(best);
  return static_cast<uint32_t>(best);
}

absl::Status ShardLedger::Report(uint32_t index, absl::string_view worker, uint64_t offset,
                                 uint64_t step) {
  if (index >= shards_.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("shard ", index, " does not exist (the ledger has ", shards_.size(), ")"));
  }
  Shard& shard = shards_[index];
  if (shard.holder.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("shard ", index, " is not leased to worker ", worker));
  }
  if (shard.holder != worker) {
    return absl::PermissionDeniedError(
        absl::StrCat("shard ", index, " is leased to another worker, not ", worker));
  }
  if (offset > shard.size) {
    return absl::OutOfRangeError(absl::StrCat("offset ", offset, " is past the end of shard ",
                                              index, " (", shard.size, ")"));
  }
  if (offset < shard.consumed) {
    return absl::FailedPreconditionError(
        absl::StrCat("offset ", offset, " of shard ", index, " is behind its consumed offset ",
                     shard.consumed, ": offsets only move forward"));
  }
  if (!shard.progress.empty() && step < shard.progress.back().step) {
    return absl::FailedPreconditionError(absl::StrCat("step ", step, " for shard ", index,
                                                      " is behind its last reported step ",
                                                      shard.progress.back().step));
  }
  if (offset == shard.consumed) return absl::OkStatus();
  if (!shard.progress.empty() && shard.progress.back().step == step) {
    shard.progress.back().offset = offset;
  } else {
    shard.progress.push_back({step, offset});
  }
  shard.consumed = offset;
  if (shard.consumed == shard.size) shard.holder.clear();
  dirty_.insert(index);
  return absl::OkStatus();
}

void ShardLedger::Release(absl::string_view worker) {
  for (size_t i = 0; i < shards_.size(); ++i) {
    if (shards_[i].holder == worker) {
      shards_[i].holder.clear();
      dirty_.insert(i);
    }
  }
}

void ShardLedger::ReleaseAll() {
  for (size_t i = 0; i < shards_.size(); ++i) {
    if (shards_[i].holder.empty()) continue;
    shards_[i].holder.clear();
    dirty_.insert(i);
  }
}

void ShardLedger::RevertUncommitted() {
  for (size_t i = 0; i < shards_.size(); ++i) {
    Shard& shard = shards_[i];
    if (shard.consumed == shard.committed && shard.progress.empty() &&
        (shard.holder.empty() || shard.lease_from == shard.committed)) {
      continue;
    }
    shard.consumed = shard.committed;
    shard.progress.clear();
    shard.lease_from = shard.committed;
    dirty_.insert(i);
  }
}

bool ShardLedger::AllConsumed() const {
  return std::all_of(shards_.begin(), shards_.end(),
                     [](const Shard& shard) { return shard.consumed == shard.size; });
}

bool ShardLedger::HasUncommitted() const {
  return std::any_of(shards_.begin(), shards_.end(),
                     [](const Shard& shard) { return shard.consumed != shard.committed; });
}

cs::LedgerSnapshot ShardLedger::SnapshotAt(uint64_t step, uint64_t epochs) const {
  cs::LedgerSnapshot snapshot;
  snapshot.set_step(step);
  snapshot.set_epoch(epoch_);
  bool complete = !shards_.empty();
  for (const Shard& shard : shards_) {
    uint64_t offset = shard.committed;
    for (const Progress& progress : shard.progress) {
      if (progress.step <= step) offset = std::max(offset, progress.offset);
    }
    snapshot.add_committed_offsets(offset);
    complete = complete && offset == shard.size;
  }
  if (complete) {
    snapshot.set_epoch(epoch_ + 1);
    for (auto& offset : *snapshot.mutable_committed_offsets()) offset = 0;
    snapshot.set_finished(epoch_ + 1 >= std::max<uint64_t>(epochs, 1));
  }
  return snapshot;
}

void ShardLedger::ApplyCommitted(const cs::LedgerSnapshot& snapshot) {
  if (snapshot.epoch() > epoch_) {
    epoch_ = snapshot.epoch();
    for (size_t i = 0; i < shards_.size(); ++i) {
      Shard& shard = shards_[i];
      shard.committed = shard.consumed = shard.lease_from = 0;
      shard.holder.clear();
      shard.progress.clear();
      dirty_.insert(i);
    }
    return;
  }
  for (size_t i = 0;
       i < shards_.size() && i < static_cast<size_t>(snapshot.committed_offsets_size()); ++i) {
    Shard& shard = shards_[i];
    const uint64_t committed = std::max(shard.committed, snapshot.committed_offsets(i));
    auto first_kept = std::find_if(shard.progress.begin(), shard.progress.end(),
                                   [&](const Progress& p) { return p.step > snapshot.step(); });
    if (committed == shard.committed && first_kept == shard.progress.begin()) continue;
    shard.committed = committed;
    shard.consumed = std::max(shard.consumed, committed);
    shard.progress.erase(shard.progress.begin(), first_kept);
    dirty_.insert(i);
  }
}

absl::Status ShardLedger::ResetTo(const cs::LedgerSnapshot& snapshot) {
  if (static_cast<size_t>(snapshot.committed_offsets_size()) != shards_.size()) {
    return absl::DataLossError(absl::StrCat("the ledger record of step ", snapshot.step(), " has ",
                                            snapshot.committed_offsets_size(),
                                            " shards, the job has ", shards_.size()));
  }
  for (size_t i = 0; i < shards_.size(); ++i) {
    if (snapshot.committed_offsets(i) > shards_[i].size) {
      return absl::DataLossError(absl::StrCat("the ledger record of step ", snapshot.step(),
                                              " puts shard ", i, " past its end"));
    }
    if (snapshot.epoch() != epoch_) shards_[i].holder.clear();
    shards_[i].committed = snapshot.committed_offsets(i);
    dirty_.insert(i);
  }
  epoch_ = snapshot.epoch();
  // Reverting may also lower consumed; a shard at its end stays released.
  for (Shard& shard : shards_) {
    shard.consumed = shard.committed;
    shard.progress.clear();
    shard.lease_from = shard.committed;
    if (shard.committed == shard.size) shard.holder.clear();
  }
  return absl::OkStatus();
}

void ShardLedger::MarkAllDirty() {
  for (size_t i = 0; i < shards_.size(); ++i) dirty_.insert(i);
}

std::set<uint32_t> ShardLedger::TakeDirty() { return std::exchange(dirty_, {}); }

cs::ShardRecord ShardLedger::ToRecord(const Shard& shard) {
  cs::ShardRecord record;
  record.set_name(shard.name);
  record.set_size(shard.size);
  record.set_checksum(shard.checksum);
  record.set_committed_offset(shard.committed);
  record.set_consumed_offset(shard.consumed);
  record.set_holder(shard.holder);
  record.set_lease_from_offset(shard.lease_from);
  record.set_begin(shard.begin);
  for (const Progress& progress : shard.progress) {
    cs::ProgressRecord* out = record.add_progress();
    out->set_step(progress.step);
    out->set_offset(progress.offset);
  }
  return record;
}

Shard ShardLedger::FromRecord(const cs::ShardRecord& record) {
  Shard shard;
  shard.name = record.name();
  shard.size = record.size();
  shard.checksum = record.checksum();
  shard.committed = record.committed_offset();
  shard.consumed = record.consumed_offset();
  shard.holder = record.holder();
  shard.lease_from = record.lease_from_offset();
  shard.begin = record.begin();
  for (const cs::ProgressRecord& progress : record.progress()) {
    shard.progress.push_back({progress.step(), progress.offset()});
  }
  return shard;
}

}  // namespace potluck::coordinator_internal
