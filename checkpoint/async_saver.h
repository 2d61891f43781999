// AsyncCheckpointSaver: checkpoints written while training goes on.
//
// Start() hands the state over and returns at once. A background thread
// first copies the tensors into host buffers the saver owns (the snapshot),
// then writes them through the CheckpointStore. The caller may keep reading
// the tensors (the next forward and backward pass) but must not change them
// until WaitForSnapshot() returns, i.e. before its next optimizer step; by
// then the copy has usually long finished, so the caller never waits for the
// copy or the disk. Blobs and records are small and are copied in Start().
//
// At most one save is in flight: Start() first waits for the previous one.
// Errors are never dropped: Wait() returns the last save's status, and a
// failure nobody collected is returned by the next Start() (which then starts
// nothing).
//
// Ownership: the store is not owned and must outlive the saver. Snapshot
// buffers are reused from one save to the next, so steady-state saves do not
// allocate. Thread-safety: all methods are thread-safe; the destructor waits
// for the save in flight.
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

  // Schedules a save of the state. Tensors must be on the CPU and stay
  // unchanged until WaitForSnapshot() returns.
  absl::Status Start(absl::string_view job_id, uint64_t step,
                     absl::Span<const TensorToSave> tensors,
                     absl::Span<const BlobToSave> blobs = {},
                     absl::Span<const Record> records = {});
  // Blocks until the tensors of the last Start() have been copied; after it
  // returns the caller may change them.
  void WaitForSnapshot();
  // Blocks until no save is in flight and returns the last save's status.
  absl::Status Wait();
  bool InFlight() const;

 private:
  struct Pending {
    std::string job_id;
    uint64_t step = 0;
    std::vector<TensorToSave> tensors;  // the caller's, until snapshotted
    std::vector<std::string> blob_bytes;
    std::vector<BlobToSave> blobs;  // views into blob_bytes
    std::vector<Record> records;
  };

  void Run();

  CheckpointStore* const store_;  // not owned
  mutable absl::Mutex mu_;
  bool in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool snapshot_taken_ ABSL_GUARDED_BY(mu_) = true;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status last_status_ ABSL_GUARDED_BY(mu_);
  bool collected_ ABSL_GUARDED_BY(mu_) = true;
  // Written by Start() only while no save is in flight, then read by the
  // background thread without the lock until in_flight_ is cleared.
  Pending pending_;
  std::vector<std::vector<char>> buffers_;  // the snapshot, reused across saves
  std::thread thread_;
};

}  // namespace potluck

#endif  // POTLUCK_CHECKPOINT_ASYNC_SAVER_H_
