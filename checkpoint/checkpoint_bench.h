// The checkpoint benchmark behind `potluck bench checkpoint`: saves and loads
// a realistic mix of tensors and, in the same run and the same directory,
// the baselines it must be measured against (raw sequential write+fsync and
// read of the same bytes, and optionally another library such as
// torch::save/torch::load). Rounds interleave potluck and the baselines, so a
// noisy disk slows both alike; results are medians over rounds.
//
// Thread-safety: one benchmark at a time per directory.
#ifndef POTLUCK_CHECKPOINT_CHECKPOINT_BENCH_H_
#define POTLUCK_CHECKPOINT_CHECKPOINT_BENCH_H_

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

#include "checkpoint/checkpoint_store.h"

namespace potluck {

// Seconds to save `tensors` to `path` (synced to disk) and to load them back
// with the page cache dropped in between.
using SaveLoadBaseline = std::function<absl::StatusOr<std::pair<double, double>>(
    absl::Span<const TensorToSave> tensors, const std::string& path)>;

struct CheckpointBenchOptions {
  uint64_t total_bytes = uint64_t{1} << 30;
  int rounds = 3;
  std::string dir;  // where files go; must exist
  // Another library's save/load of the same tensors (empty: none).
  SaveLoadBaseline other;
  std::string other_name;  // e.g. "torch"
};

// Seconds, for one round or as medians over rounds.
struct CheckpointBenchTimes {
  double save_s = 0, load_s = 0, raw_write_s = 0, raw_read_s = 0;
  double async_stall_s = 0;     // how long AsyncCheckpointSaver::Start blocked the caller
  double async_snapshot_s = 0;  // Start until the state was copied (WaitForSnapshot)
  double other_save_s = 0, other_load_s = 0;
};

struct CheckpointBenchResult {
  uint64_t bytes = 0;
  int tensors = 0;
  bool has_other = false;
  std::vector<CheckpointBenchTimes> rounds;
  CheckpointBenchTimes median;
};

absl::StatusOr<CheckpointBenchResult> RunCheckpointBench(const CheckpointBenchOptions& options);

// Drops `path`'s pages (a file, or every file in a directory) from the page
// cache, so the next read comes from the disk. Files must be synced.
void DropFromPageCache(const std::string& path);

}  // namespace potluck

#endif  // POTLUCK_CHECKPOINT_CHECKPOINT_BENCH_H_
