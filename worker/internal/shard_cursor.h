// ShardCursor: where this worker reads its training data.
//
// It holds the shard leased from the coordinator's ledger and a read
// position that becomes real only when the step that read it is applied:
// ReadStep works on a copy (StepData.cursor) and Commit keeps it, so a
// failed step puts the cursor back. It also keeps the group's epoch (the
// newest any member saw, see AgreeOnEpoch) and, in diloco mode, whether
// this worker's slot ran out of data this epoch: the epoch protocol ends the
// epoch when every member is out of data.
//
// Thread-safety: the training thread only.
#ifndef POTLUCK_WORKER_INTERNAL_SHARD_CURSOR_H_
#define POTLUCK_WORKER_INTERNAL_SHARD_CURSOR_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

#include "collectives/communicator.h"
#include "data/dataset.h"
#include "data/token_shard.h"
#include "potluck/v1/job.pb.h"
#include "worker/internal/session.h"
#include "worker/model.h"

namespace potluck {
namespace worker_internal {

// The job's dataset on this machine: the coordinator's directory when it can
// be read here (a shared filesystem, `potluck local`), otherwise the files
// fetched from the coordinator into `state_dir`/cache/<job>.
absl::StatusOr<Dataset> OpenJobDataset(Session* session, const v1::JobSpec& job,
                                       const std::string& state_dir);

// A shard (a range of a dataset file) this worker holds, with a read
// position counted from the range's first token.
struct HeldShard {
  uint32_t id = 0;
  std::string name;
  uint64_t size = 0;
  uint64_t offset = 0;
  uint64_t begin = 0;                  // the range's first token in the file
  const TokenShard* tokens = nullptr;  // owned by the cursor's cache
};

// What one step reads: the held shard's cursor after it (Commit keeps it
// once the step is applied), the offset reached per shard touched, the
// micro-batches (the job's global batch split over the group), and whether
// it read short because the coordinator could not be reached (not because
// this worker's slot has no pending shard).
struct StepData {
  std::optional<HeldShard> cursor;
  std::vector<std::pair<uint32_t, uint64_t>> touched;
  std::vector<Batch> batches;
  bool unreachable = false;
};

class ShardCursor {
 public:
  // `session` and `dataset` are not owned and must outlive the cursor.
  ShardCursor(Session* session, const Dataset* dataset, const v1::JobSpec& job);

  // Reads this worker's part of one step of a group of `world_size`.
  // `report_step` is the step a shard found finished at its tail is
  // reported with.
  absl::StatusOr<StepData> ReadStep(int world_size, uint64_t report_step);
  // The step that read `data` was applied: its reads count.
  void Commit(const StepData& data) { held_ = data.cursor; }
  // Forgets the held shard (a rollback or a rejoin voided the lease).
  void Drop() { held_.reset(); }

  // The epoch the group reads from: the newest any member saw. Members move
  // to the next epoch together, at a step where none of them has data left,
  // so which member reads which shard never depends on when each one heard
  // of the rollover.
  absl::Status AgreeOnEpoch(Communicator* comm, uint64_t seen, absl::Time deadline);
  uint64_t epoch() const { return epoch_; }

  // diloco: this worker's slot has no data left this epoch.
  bool out_of_data() const { return out_of_data_; }
  void set_out_of_data(bool out) { out_of_data_ = out; }

 private:
  absl::Status Read(int64_t sequences, uint64_t report_step, StepData* data, bool* step_done);
  absl::StatusOr<const TokenShard*> Shard(const std::string& name);

  Session* const session_;        // not owned
  const Dataset* const dataset_;  // not owned
  const uint32_t context_;
  const v1::JobSpec job_;
  std::map<std::string, std::unique_ptr<TokenShard>> shards_;
  std::optional<HeldShard> held_;
  uint64_t epoch_ = 0;
  bool out_of_data_ = false;
};

}  // namespace worker_internal
}  // namespace potluck

#endif  // POTLUCK_WORKER_INTERNAL_SHARD_CURSOR_H_
