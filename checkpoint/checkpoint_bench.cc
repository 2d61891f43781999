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
  if (fd < 0) return ErrnoToStatus(errno, absl::StrCat("creating ", path));
  for (const TensorToSave& tensor : tensors) {
    const char* bytes = static_cast<const char*>(tensor.data.data());
    for (size_t done = 0; done < tensor.data.size_bytes();) {
      const ssize_t n =
          write(fd, bytes + done, std::min(kIoBytes, tensor.data.size_bytes() - done));
      if (n < 0) {
        close(fd);
        return ErrnoToStatus(errno, absl::StrCat("writing ", path));
      }
      done += static_cast<size_t>(n);
    }
  }
  if (fsync(fd) != 0 || close(fd) != 0) return ErrnoToStatus(errno, absl::StrCat("syncing ", path));
  return SecondsSince(start);
}

absl::StatusOr<double> RawRead(const std::string& path, std::vector<std::vector<float>>& out) {
  const absl::Time start = absl::Now();
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, absl::StrCat("opening ", path));
  for (auto& tensor : out) {
    char* bytes = reinterpret_cast<char*>(tensor.data());
    const size_t size = tensor.size() * sizeof(float);
    for (size_t done = 0; done < size;) {
      const ssize_t n = read(fd, bytes + done, std::min(kIoBytes, size - done));
      if (n <= 0) {
        close(fd);
        return n < 0 ? ErrnoToStatus(errno, absl::StrCat("reading ", path))
                     : absl::DataLossError(absl::StrCat(path, " is short"));
      }
      done += static_cast<size_t>(n);
    }
  }
  close(fd);
  return SecondsSince(start);
}

}  // namespace

void DropFromPageCache(const std::string& path) {
  std::vector<fs::path> files;
  if (fs::is_directory(path)) {
    for (const auto& entry : fs::recursive_directory_iterator(path)) {
      if (entry.is_regular_file()) files.push_back(entry.path());
    }
  } else {
    files.push_back(path);
  }
  for (const fs::path& file : files) {
    const int fd = open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    fdatasync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
  }
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

  std::vector<double> save, load, raw_write, raw_read, stall, snapshot, other_save, other_load;
  for (int round = 0; round < options.rounds; ++round) {
    const std::string raw_path = absl::StrCat(options.dir, "/raw.bin");
    ASSIGN_OR_RETURN(const double raw_write_s, RawWrite(raw_path, tensors));
    raw_write.push_back(raw_write_s);
    DropFromPageCache(raw_path);
    ASSIGN_OR_RETURN(const double raw_read_s, RawRead(raw_path, loaded));
    raw_read.push_back(raw_read_s);
    fs::remove(raw_path);

    const std::string store_dir = absl::StrCat(options.dir, "/store");
    fs::remove_all(store_dir);
    {
      ASSIGN_OR_RETURN(std::unique_ptr<CheckpointStore> store, CheckpointStore::Open(store_dir));
      const absl::Time start = absl::Now();
      RETURN_IF_ERROR(store->Save("bench", 1, tensors));
      save.push_back(SecondsSince(start));
    }
    DropFromPageCache(store_dir);
    {
      const absl::Time start = absl::Now();
      ASSIGN_OR_RETURN(std::unique_ptr<CheckpointStore> store, CheckpointStore::Open(store_dir));
      ASSIGN_OR_RETURN(std::unique_ptr<CheckpointReader> reader, store->OpenLatest("bench"));
      for (size_t i = 0; i < tensors.size(); ++i) {
        RETURN_IF_ERROR(reader->ReadTensor(tensors[i].name,
                                           TensorView::Of(loaded[i].data(), loaded[i].size())));
      }
      load.push_back(SecondsSince(start));
      if (loaded != data) return absl::InternalError("loaded tensors differ from the saved ones");
    }
    fs::remove_all(store_dir);

    // Async saves, steady state: one saver, its snapshot buffers warm.
    ASSIGN_OR_RETURN(std::unique_ptr<CheckpointStore> store, CheckpointStore::Open(store_dir));
    {
      AsyncCheckpointSaver saver(store.get());
      RETURN_IF_ERROR(saver.Start("bench", 1, tensors));  // warms the buffers
      RETURN_IF_ERROR(saver.Wait());
      const absl::Time start = absl::Now();
      RETURN_IF_ERROR(saver.Start("bench", 2, tensors));
      stall.push_back(SecondsSince(start));
      saver.WaitForSnapshot();  // as if the next step changed the weights at once
      snapshot.push_back(SecondsSince(start));
      RETURN_IF_ERROR(saver.Wait());
    }
    store.reset();
    fs::remove_all(store_dir);

    if (options.other) {
      const std::string other_path = absl::StrCat(options.dir, "/other.bin");
      ASSIGN_OR_RETURN(const auto seconds, options.other(tensors, other_path));
      other_save.push_back(seconds.first);
      other_load.push_back(seconds.second);
      fs::remove(other_path);
    }
  }
  result.save_s = Median(save);
  result.load_s = Median(load);
  result.raw_write_s = Median(raw_write);
  result.raw_read_s = Median(raw_read);
  result.async_stall_s = Median(stall);
  result.async_snapshot_s = Median(snapshot);
  if (result.has_other) {
    result.other_save_s = Median(other_save);
    result.other_load_s = Median(other_load);
  }
  return result;
}

}  // namespace potluck
