// torch::save / torch::load of the tensors a checkpoint holds: the same-run
// baseline `potluck bench checkpoint` measures the checkpoint store against.
//
// Thread-safety: safe from any thread (no shared state).
#ifndef POTLUCK_WORKER_TORCH_BASELINE_H_
#define POTLUCK_WORKER_TORCH_BASELINE_H_

#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

#include "checkpoint/checkpoint_bench.h"
#include "checkpoint/checkpoint_store.h"

namespace potluck {

// Seconds for torch::save of `tensors` to `path` plus fsync, and for
// torch::load back after `drop_cache(path)`. Checks that
// the loaded tensors equal the saved ones.
absl::StatusOr<std::pair<double, double>> TorchSaveLoadSeconds(
    absl::Span<const TensorToSave> tensors, const std::string& path, const DropCache& drop_cache);

}  // namespace potluck

#endif  // POTLUCK_WORKER_TORCH_BASELINE_H_
