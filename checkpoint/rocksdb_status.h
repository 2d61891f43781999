// The one conversion of RocksDB statuses into absl::Status, for every
// component that keeps a RocksDB database (the checkpoint store, the
// coordinator's state), so that the same failure has the same code wherever
// it happens:
//   NotFound -> kNotFound          Corruption -> kDataLoss
//   NoSpace -> kResourceExhausted  InvalidArgument -> kInvalidArgument
//   NotSupported -> kUnimplemented TimedOut -> kDeadlineExceeded
//   Aborted -> kAborted            IOError, Busy, TryAgain -> kUnavailable
//   anything else -> kInternal
// The message is "context: <RocksDB's text>".
//
// Thread-safety: stateless; safe from any thread.
#ifndef POTLUCK_CHECKPOINT_ROCKSDB_STATUS_H_
#define POTLUCK_CHECKPOINT_ROCKSDB_STATUS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

#include "rocksdb/status.h"

namespace potluck {

absl::Status FromRocksDb(const rocksdb::Status& status, absl::string_view context);

// The result of rocksdb::DB::Open on `dir`. A database whose LOCK file is
// held (by another process or another open in this one) is kUnavailable
// tagged Failure::kStoreLocked; the lock is asked of the kernel, not read
// from RocksDB's message.
absl::Status FromRocksDbOpen(const rocksdb::Status& status, const std::string& dir,
                             absl::string_view context);

}  // namespace potluck

#endif  // POTLUCK_CHECKPOINT_ROCKSDB_STATUS_H_
