// AsyncCheckpointSaver: checkpoints written while training goes on.
//
// Start() copies the state into host buffers the saver owns (the only time
// the caller waits) and returns; a background thread then writes it through
// the CheckpointStore. At most one save is in flight: Start() first waits for
// the previous one. Errors are never dropped: Wait() returns the last save's
// status, and a failure nobody collected is returned by the next Start()
// (which then starts nothing).
//
// Ownership: the store is not owned and must outlive the saver. Buffers are
// reused from one save to the next, so steady-state saves do not allocate.
// Thread-safety: all methods are thread-safe; the destructor waits for the
// save in flight.
#ifndef POTLUCK_CHECKPOINT_ASYNC_SAVER_H_
#define POTLUCK_CHECKPOINT_ASYNC_SAVER_H_

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"

#include "checkpoint/checkpoint_store.h"

namespace potluck {

class AsyncCheckpointSaver {
 public:
  explicit AsyncCheckpointSaver(CheckpointStore* store);
  ~AsyncCheckpointSaver();
  AsyncCheckpointSaver(const AsyncCheckpointSaver&) = delete;
  AsyncCheckpointSaver& operator=(const AsyncCheckpointSaver&) = delete;

  // Copies the state and schedules its save. Tensors must be on the CPU.
  absl::Status Start(absl::string_view job_id, uint64_t step,
                     absl::Span<const TensorToSave> tensors,
                     absl::Span<const BlobToSave> blobs = {},
                     absl::Span<const Record> records = {});
  // Blocks until no save is in flight and returns the last save's status.
  absl::Status Wait();
  bool InFlight() const;

 private:
  struct Pending {
    std::string job_id;
    uint64_t step = 0;
    std::vector<TensorToSave> tensors;  // views into buffers
    std::vector<std::string> blob_bytes;
    std::vector<BlobToSave> blobs;  // views into blob_bytes
    std::vector<Record> records;
  };

  void Run();

  CheckpointStore* const store_;  // not owned
  mutable absl::Mutex mu_;
  bool in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status last_status_ ABSL_GUARDED_BY(mu_);
  bool collected_ ABSL_GUARDED_BY(mu_) = true;
  Pending pending_ ABSL_GUARDED_BY(mu_);
  // Host copies of the tensors, reused across saves (written only while no
  // save is in flight).
  std::vector<std::vector<char>> buffers_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace potluck

#endif  // POTLUCK_CHECKPOINT_ASYNC_SAVER_H_
