#include "checkpoint/checkpoint_bench.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

#include "checkpoint/async_saver.h"
#include "common/status.h"

namespace potluck {

namespace {

namespace fs = std::filesystem;

constexpr size_t kIoBytes = 8 << 20;
constexpr char kDropCachesPath[] = "/proc/sys/vm/drop_caches";

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

double SecondsSince(absl::Time start) { return absl::ToDoubleSeconds(absl::Now() - start); }

// A model-like mix: four large tensors hold 90% of the bytes, 256 small
// ones (norms, biases) the rest.
std::vector<std::vector<float>> MakeTensors(uint64_t total_bytes) {
  const uint64_t floats = total_bytes / sizeof(float);
  std::vector<std::vector<float>> tensors;
  for (int i = 0; i < 4; ++i) tensors.emplace_back(floats * 9 / 40);
  for (int i = 0; i < 256; ++i) tensors.emplace_back(std::max<uint64_t>(1, floats / 10 / 256));
  uint32_t state = 12345;
  for (auto& tensor : tensors) {
    for (float& value : tensor) {
      state = state * 1664525u + 1013904223u;
      value = static_cast<float>(state >> 8) / 16777216.0f - 0.5f;
    }
  }
  return tensors;
}

absl::StatusOr<double> RawWrite(const std::string& path, absl::Span<const TensorToSave> tensors) {
  const absl::Time start = absl::Now();
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("creating ", path));
  for (const TensorToSave& tensor : tensors) {
    const char* bytes = static_cast<const char*>(tensor.data.data());
    for (size_t done = 0; done < tensor.data.size_bytes();) {
      const ssize_t n =
          write(fd, bytes + done, std::min(kIoBytes, tensor.data.size_bytes() - done));
      if (n < 0) {
        close(fd);
        return ErrnoStatus(errno, absl::StrCat("writing ", path));
      }
      done += static_cast<size_t>(n);
    }
  }
  if (fsync(fd) != 0 || close(fd) != 0) return ErrnoStatus(errno, absl::StrCat("syncing ", path));
  return SecondsSince(start);
}

absl::StatusOr<double> RawRead(const std::string& path, std::vector<std::vector<float>>& out) {
  const absl::Time start = absl::Now();
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("opening ", path));
  for (auto& tensor : out) {
    char* bytes = reinterpret_cast<char*>(tensor.data());
    const size_t size = tensor.size() * sizeof(float);
    for (size_t done = 0; done < size;) {
      const ssize_t n = read(fd, bytes + done, std::min(kIoBytes, size - done));
      if (n <= 0) {
        close(fd);
        return n < 0 ? ErrnoStatus(errno, absl::StrCat("reading ", path))
                     : absl::DataLossError(absl::StrCat(path, " is short"));
      }
      done += static_cast<size_t>(n);
    }
  }
  close(fd);
  return SecondsSince(start);
}

}  // namespace

CacheDropper CacheDropper::Fadvise(std::string reason) {
  return CacheDropper(Method::kFadvise, absl::StrCat("fadvise only (", reason, ")"));
}

CacheDropper CacheDropper::Detect() {
  if (geteuid() != 0) return Fadvise("not root");
  if (access(kDropCachesPath, W_OK) != 0) {
    return Fadvise(absl::StrCat(kDropCachesPath, " not writable"));
  }
  CacheDropper dropper(Method::kDropCaches, "dropped (drop_caches)");
  // Root in a container may see the file writable and still be refused.
  const absl::Status trial = dropper.Drop(kDropCachesPath);
  if (!trial.ok()) return Fadvise(std::string(trial.message()));
  return dropper;
}

absl::Status CacheDropper::Drop(const std::string& path) const {
  if (method_ == Method::kDropCaches) {
    sync();  // drop_caches drops only clean pages
    const int fd = open(kDropCachesPath, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoStatus(errno, absl::StrCat("opening ", kDropCachesPath));
    const bool written = write(fd, "3", 1) == 1;
    const int write_errno = errno;
    close(fd);
    if (!written) return ErrnoStatus(write_errno, absl::StrCat("writing ", kDropCachesPath));
    return absl::OkStatus();
  }
  std::vector<fs::path> files;
  std::error_code error;
  if (fs::is_directory(path, error)) {
    for (const auto& entry : fs::recursive_directory_iterator(path, error)) {
      if (entry.is_regular_file()) files.push_back(entry.path());
    }
    if (error) return absl::InternalError(absl::StrCat("listing ", path, ": ", error.message()));
  } else {
    files.push_back(path);  // open() says what is wrong with it, if anything
  }
  for (const fs::path& file : files) {
    const int fd = open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoStatus(errno, absl::StrCat("opening ", file.string()));
    // DONTNEED skips dirty pages: write them back first.
    const bool dropped = fsync(fd) == 0 && posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0;
    const int drop_errno = errno;
    close(fd);
    if (!dropped) return ErrnoStatus(drop_errno, absl::StrCat("dropping ", file.string()));
  }
  return absl::OkStatus();
}

absl::StatusOr<CheckpointBenchResult> RunCheckpointBench(const CheckpointBenchOptions& options) {
  if (options.rounds < 1) return absl::InvalidArgumentError("rounds must be at least 1");
  std::vector<std::vector<float>> data = MakeTensors(options.total_bytes);
  std::vector<std::vector<float>> loaded;
  std::vector<TensorToSave> tensors;
  CheckpointBenchResult result;
  for (size_t i = 0; i < data.size(); ++i) {
    tensors.push_back({absl::StrCat("t", i), TensorView::Of(data[i].data(), data[i].size()), {}});
    loaded.emplace_back(data[i].size());
    result.bytes += data[i].size() * sizeof(float);
  }
  result.tensors = static_cast<int>(tensors.size());
  result.has_other = static_cast<bool>(options.other);
  const CacheDropper dropper = options.cache_dropper.value_or(CacheDropper::Detect());
  result.caches = dropper.description();
  const DropCache drop_cache = [&dropper](const std::string& path) { return dropper.Drop(path); };

  const std::string raw_path = absl::StrCat(options.dir, "/raw.bin");
  const std::string store_dir = absl::StrCat(options.dir, "/store");
  const std::string other_path = absl::StrCat(options.dir, "/other.bin");

  auto raw = [&](CheckpointBenchTimes& times) -> absl::Status {
    ASSIGN_OR_RETURN(times.raw_write_s, RawWrite(raw_path, tensors));
    RETURN_IF_ERROR(dropper.Drop(raw_path));
    ASSIGN_OR_RETURN(times.raw_read_s, RawRead(raw_path, loaded));
    fs::remove(raw_path);
    return absl::OkStatus();
  };
  auto potluck = [&](CheckpointBenchTimes& times) -> absl::Status {
    fs::remove_all(store_dir);
    {
      ASSIGN_OR_RETURN(std::unique_ptr<CheckpointStore> store, CheckpointStore::Open(store_dir));
      const absl::Time start = absl::Now();
      RETURN_IF_ERROR(store->Save("bench", 1, tensors));
      times.save_s = SecondsSince(start);
    }
    RETURN_IF_ERROR(dropper.Drop(store_dir));
    const absl::Time start = absl::Now();
    ASSIGN_OR_RETURN(std::unique_ptr<CheckpointStore> store, CheckpointStore::Open(store_dir));
    ASSIGN_OR_RETURN(std::unique_ptr<CheckpointReader> reader, store->OpenLatest("bench"));
    for (size_t i = 0; i < tensors.size(); ++i) {
      RETURN_IF_ERROR(
          reader->ReadTensor(tensors[i].name, TensorView::Of(loaded[i].data(), loaded[i].size())));
    }
    times.load_s = SecondsSince(start);
    if (loaded != data) return absl::InternalError("loaded tensors differ from the saved ones");
    // Async saves, steady state: one saver, its snapshot buffers warm.
    AsyncCheckpointSaver saver(store.get());
    RETURN_IF_ERROR(saver.Start("bench", 2, tensors));
    RETURN_IF_ERROR(saver.Wait());
    const absl::Time async_start = absl::Now();
    RETURN_IF_ERROR(saver.Start("bench", 3, tensors));
    times.async_stall_s = SecondsSince(async_start);
    saver.WaitForSnapshot();  // as if the very next thing changed the weights
    times.async_snapshot_s = SecondsSince(async_start);
    RETURN_IF_ERROR(saver.Wait());
    reader.reset();
    store.reset();
    fs::remove_all(store_dir);
    return absl::OkStatus();
  };
  auto other = [&](CheckpointBenchTimes& times) -> absl::Status {
    if (!options.other) return absl::OkStatus();
    ASSIGN_OR_RETURN(const auto seconds, options.other(tensors, other_path, drop_cache));
    times.other_save_s = seconds.first;
    times.other_load_s = seconds.second;
    fs::remove(other_path);
    return absl::OkStatus();
  };

  for (int round = 0; round < options.rounds; ++round) {
    CheckpointBenchTimes times;
    // Rotate who goes first, so no one always inherits the previous run's
    // writeback or a cold start.
    for (int i = 0; i < 3; ++i) {
      switch ((round + i) % 3) {
        case 0:
          RETURN_IF_ERROR(raw(times));
          break;
        case 1:
          RETURN_IF_ERROR(potluck(times));
          break;
        default:
          RETURN_IF_ERROR(other(times));
          break;
      }
    }
    result.rounds.push_back(times);
  }
  auto median = [&](double CheckpointBenchTimes::*field) {
    std::vector<double> values;
    for (const CheckpointBenchTimes& times : result.rounds) values.push_back(times.*field);
    return Median(values);
  };
  for (double CheckpointBenchTimes::*field :
       {&CheckpointBenchTimes::save_s, &CheckpointBenchTimes::load_s,
        &CheckpointBenchTimes::raw_write_s, &CheckpointBenchTimes::raw_read_s,
        &CheckpointBenchTimes::async_stall_s, &CheckpointBenchTimes::async_snapshot_s,
        &CheckpointBenchTimes::other_save_s, &CheckpointBenchTimes::other_load_s}) {
    result.median.*field = median(field);
  }
  return result;
}

}  // namespace potluck
