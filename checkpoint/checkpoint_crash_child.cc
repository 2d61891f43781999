// The victim of CheckpointStoreCrash: saves checkpoint after checkpoint into
// a store until it is SIGKILLed, reporting on a pipe each step it begins to
// save (the step with kBeganBit set) and each step it committed.
//
//   checkpoint_crash_child DIR FIRST_STEP REPORT_FD
//
// It is a separate program, not a fork of the test: RocksDB's background
// threads do not survive fork(), so a forked child of a process that has used
// RocksDB would hang in its first flush.
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "checkpoint/checkpoint_store.h"

int main(int argc, char** argv) {
  if (argc != 4) return 2;
  const std::string dir = argv[1];
  const uint64_t first_step = std::strtoull(argv[2], nullptr, 10);
  const int report_fd = std::atoi(argv[3]);
  potluck::CheckpointOptions options;
  options.chunk_bytes = 64 << 10;
  auto store = potluck::CheckpointStore::Open(dir, options);
  if (!store.ok()) return 3;
  constexpr size_t kFloats = 1 << 17;
  constexpr uint64_t kBeganBit = uint64_t{1} << 63;  // as in checkpoint_store_test.cc
  for (uint64_t step = first_step;; ++step) {
    std::vector<float> a(kFloats), b(kFloats);
    for (size_t i = 0; i < kFloats; ++i) {
      a[i] = static_cast<float>((i * 2654435761u + step) % 100003);
      b[i] = static_cast<float>((i * 2654435761u + step + 1000) % 100003);
    }
    const uint64_t began = step | kBeganBit;
    if (write(report_fd, &began, sizeof(began)) != sizeof(began)) return 6;
    const absl::Status saved = (*store)->Save("crash", step,
                                              {{"a", potluck::TensorView::Of(a.data(), kFloats)},
                                               {"b", potluck::TensorView::Of(b.data(), kFloats)}},
                                              {}, {{"latest", std::to_string(step)}});
    if (!saved.ok()) return 4;
    if (!(*store)->ApplyRetention("crash", {.keep_last = 3}).ok()) return 5;
    if (write(report_fd, &step, sizeof(step)) != sizeof(step)) return 6;
  }
}
