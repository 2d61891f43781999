#include "worker/torch_baseline.h"

#include <fcntl.h>
#include <unistd.h>

#include <vector>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

#include "checkpoint/checkpoint_bench.h"
#include "common/status.h"

namespace potluck {

absl::StatusOr<std::pair<double, double>> TorchSaveLoadSeconds(
    absl::Span<const TensorToSave> tensors, const std::string& path, const DropCache& drop_cache) {
  std::vector<torch::Tensor> originals;
  for (const TensorToSave& tensor : tensors) {
    if (tensor.data.dtype() != DType::kFloat32) {
      return absl::InvalidArgumentError("the torch baseline takes float32 tensors");
    }
    // from_blob: no copy, so torch::save reads the same memory potluck saves.
    originals.push_back(torch::from_blob(
        tensor.data.data(), {static_cast<int64_t>(tensor.data.count())}, torch::kFloat32));
  }
  try {
    const absl::Time save_start = absl::Now();
    torch::save(originals, path);
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) return ErrnoStatus(errno, absl::StrCat("syncing ", path));
    close(fd);
    const double save_s = absl::ToDoubleSeconds(absl::Now() - save_start);
    RETURN_IF_ERROR(drop_cache(path));
    const absl::Time load_start = absl::Now();
    std::vector<torch::Tensor> loaded;
    torch::load(loaded, path);
    const double load_s = absl::ToDoubleSeconds(absl::Now() - load_start);
    if (loaded.size() != originals.size()) return absl::InternalError("torch::load lost tensors");
    for (size_t i = 0; i < loaded.size(); ++i) {
      if (!torch::equal(loaded[i], originals[i])) {
        return absl::InternalError(absl::StrCat("torch::load changed tensor ", i));
      }
    }
    return std::make_pair(save_s, load_s);
  } catch (const c10::Error& error) {
    return absl::InternalError(absl::StrCat("torch: ", error.what_without_backtrace()));
  }
}

}  // namespace potluck
