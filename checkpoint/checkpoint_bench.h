// The checkpoint benchmark behind `potluck bench checkpoint`: saves and loads
// a realistic mix of tensors and, in the same run and the same directory,
// the baselines it must be measured against (raw sequential write+fsync and
// read of the same bytes, and optionally another library such as
// torch::save/torch::load). Rounds interleave potluck and the baselines, so a
// noisy disk slows both alike; results are medians over rounds.
//
// Every timed read starts cold, and by the same method for every contender
// (CacheDropper): the whole page cache is dropped when the process may write
// /proc/sys/vm/drop_caches; otherwise each file the contender reads (every
// file under a store's directory) is synced and fadvise(DONTNEED)-ed, which
// the output says, since that is weaker (pages another process maps stay).
//
// Thread-safety: one benchmark at a time per directory.
#ifndef POTLUCK_CHECKPOINT_CHECKPOINT_BENCH_H_
#define POTLUCK_CHECKPOINT_CHECKPOINT_BENCH_H_

#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

#include "checkpoint/checkpoint_store.h"

namespace potluck {

// Makes the next read of `path` (a file, or every file under a directory)
// come from the disk. Files must be closed.
using DropCache = std::function<absl::Status(const std::string& path)>;

// Seconds to save `tensors` to `path` (synced to disk) and to load them back,
// calling `drop_cache(path)` in between (and nothing else that evicts pages,
// so every contender starts its read equally cold).
using SaveLoadBaseline = std::function<absl::StatusOr<std::pair<double, double>>(
    absl::Span<const TensorToSave> tensors, const std::string& path, const DropCache& drop_cache)>;

// How the benchmark empties the page cache before each timed read. Chosen
// once per run, so every contender of every round gets the same treatment.
class CacheDropper {
 public:
  enum class Method { kDropCaches, kFadvise };

  // drop_caches when running as root with /proc/sys/vm/drop_caches writable
  // (a trial drop succeeds), else fadvise, with the reason in description().
  static CacheDropper Detect();
  static CacheDropper Fadvise(std::string reason);

  // drop_caches: sync(2), then "3" to /proc/sys/vm/drop_caches (the whole
  // cache, `path` included). fadvise: fsync and POSIX_FADV_DONTNEED every
  // regular file at or under `path`.
  absl::Status Drop(const std::string& path) const;

  Method method() const { return method_; }
  // For the output: "dropped (drop_caches)", "fadvise only (not root)", ...
  const std::string& description() const { return description_; }

 private:
  CacheDropper(Method method, std::string description)
      : method_(method), description_(std::move(description)) {}
  Method method_;
  std::string description_;
};

struct CheckpointBenchOptions {
  uint64_t total_bytes = uint64_t{1} << 30;
  int rounds = 3;
  std::string dir;  // where files go; must exist
  // Another library's save/load of the same tensors (empty: none).
  SaveLoadBaseline other;
  std::string other_name;  // e.g. "torch"
  // How reads are made cold; default: CacheDropper::Detect().
  std::optional<CacheDropper> cache_dropper;
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
  std::string caches;  // CacheDropper::description() of the method used
  std::vector<CheckpointBenchTimes> rounds;
  CheckpointBenchTimes median;
};

absl::StatusOr<CheckpointBenchResult> RunCheckpointBench(const CheckpointBenchOptions& options);

}  // namespace potluck

#endif  // POTLUCK_CHECKPOINT_CHECKPOINT_BENCH_H_
