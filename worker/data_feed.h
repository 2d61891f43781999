// DataFeed: batches of training sequences from a prepared dataset's token
// shards, read in order from a cursor (shard, token offset) that a checkpoint
// stores, so a resumed run reads exactly the sequences an uninterrupted one
// would.
//
// Each sequence is context_length + 1 tokens: inputs, and the targets shifted
// by one. A shard's tail shorter than a sequence is skipped; after the last
// shard the feed starts the next epoch at the first. (Under a coordinator the
// shard ledger assigns shards instead; this feed serves one process training
// alone, tests, benchmarks and the validation split.)
//
// Thread-safety: one thread at a time.
#ifndef POTLUCK_WORKER_DATA_FEED_H_
#define POTLUCK_WORKER_DATA_FEED_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

#include "data/dataset.h"
#include "data/token_shard.h"
#include "worker/model.h"

namespace potluck {

struct DataCursor {
  uint64_t epoch = 0;
  uint32_t shard = 0;   // index into the split's shard list
  uint64_t offset = 0;  // token offset in that shard
  friend bool operator==(const DataCursor&, const DataCursor&) = default;
};

class DataFeed {
 public:
  enum class Split { kTrain, kValidation };

  // Opens (and verifies) every shard of `split`. kInvalidArgument if no shard
  // holds a whole sequence; the shards' own errors name the file.
  static absl::StatusOr<std::unique_ptr<DataFeed>> Open(const Dataset& dataset, Split split,
                                                        uint32_t context_length);

  // The next `sequences` sequences as a GPT batch, inputs and targets (B,T)
  // int64.
  absl::StatusOr<Batch> Next(int64_t sequences);

  // Sequences per epoch.
  uint64_t sequences_per_epoch() const { return sequences_per_epoch_; }
  const DataCursor& cursor() const { return cursor_; }
  // Moves the cursor; kOutOfRange for a position past the data.
  absl::Status Seek(const DataCursor& cursor);

  // The cursor as a small JSON text (for a checkpoint blob), and back.
  static std::string CursorToJson(const DataCursor& cursor);
  static absl::StatusOr<DataCursor> CursorFromJson(const std::string& json);

 private:
  DataFeed(std::vector<std::unique_ptr<TokenShard>> shards, uint32_t context_length);
  bool FitsSequence(const DataCursor& cursor) const;

  std::vector<std::unique_ptr<TokenShard>> shards_;
  const uint32_t context_length_;
  uint64_t sequences_per_epoch_ = 0;
  DataCursor cursor_;
};

}  // namespace potluck

#endif  // POTLUCK_WORKER_DATA_FEED_H_
