// What the checkpoint store's parts share: the Database (RocksDB, the data
// files' file system, the one-writer slot) and the two halves of the store,
// the save path (writer.cc) and the load path (reader.cc), behind factory
// functions. Private to potluck::checkpoint; checkpoint_store.h is the contract.
#ifndef POTLUCK_CHECKPOINT_INTERNAL_STORE_PARTS_H_
#define POTLUCK_CHECKPOINT_INTERNAL_STORE_PARTS_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

#include "checkpoint/checkpoint_store.h"
#include "checkpoint/internal/format.h"
#include "checkpoint/rocksdb_status.h"
#include "common/status.h"
#include "rocksdb/db.h"
#include "rocksdb/file_system.h"
#include "rocksdb/options.h"
#include "rocksdb/write_batch.h"

namespace potluck::checkpoint_internal {

// The largest entry a manifest may declare (a bound on hostile sizes).
inline constexpr uint64_t kMaxEntryBytes = uint64_t{1} << 50;

// "checkpoint <job>@<step>", the prefix of every error about one checkpoint.
inline std::string Where(absl::string_view job_id, uint64_t step) {
  return absl::StrCat("checkpoint ", job_id, "@", step);
}

// The RocksDB instance holding manifests and records, the file system that
// holds the data files (RocksDB's, so one injected Env covers both), and the
// one-writer-at-a-time slot.
class Database {
 public:
  Database(std::unique_ptr<rocksdb::DB> db, std::string dir, CheckpointOptions options,
           std::shared_ptr<rocksdb::FileSystem> fs)
      : db_(std::move(db)), dir_(std::move(dir)), options_(options), fs_(std::move(fs)) {}

  rocksdb::DB* db() { return db_.get(); }
  rocksdb::FileSystem* fs() { return fs_.get(); }
  const CheckpointOptions& options() const { return options_; }

  std::string JobDataDir(absl::string_view job_id) const {
    return absl::StrCat(dir_, "/", kDataDir, "/", job_id);
  }
  std::string DataPath(absl::string_view job_id, uint64_t step) const {
    return absl::StrCat(JobDataDir(job_id), "/", DataFileName(step));
  }

  bool AcquireWriter() { return !writer_active_.exchange(true); }
  void ReleaseWriter() { writer_active_ = false; }

  absl::Status Write(rocksdb::WriteBatch* batch, bool sync, absl::string_view context) {
    rocksdb::WriteOptions write_options;
    write_options.sync = sync;
    return FromRocksDb(db_->Write(write_options, batch), context);
  }

  // Reads one key; kNotFound if absent.
  absl::Status Get(const rocksdb::Snapshot* snapshot, absl::string_view key,
                   rocksdb::PinnableSlice* value, absl::string_view context) {
    rocksdb::ReadOptions read_options;
    read_options.snapshot = snapshot;
    read_options.verify_checksums = true;
    return FromRocksDb(db_->Get(read_options, db_->DefaultColumnFamily(),
                                rocksdb::Slice(key.data(), key.size()), value),
                       context);
  }

  // Calls `visit(key, value)` for every key starting with `prefix`.
  template <typename Visit>
  absl::Status Scan(absl::string_view prefix, Visit visit) {
    rocksdb::ReadOptions read_options;
    read_options.verify_checksums = true;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read_options));
    for (it->Seek(rocksdb::Slice(prefix.data(), prefix.size())); it->Valid(); it->Next()) {
      const absl::string_view key(it->key().data(), it->key().size());
      if (key.substr(0, prefix.size()) != prefix) break;
      RETURN_IF_ERROR(visit(key, absl::string_view(it->value().data(), it->value().size())));
    }
    return FromRocksDb(it->status(), absl::StrCat("scanning ", prefix));
  }

  // Makes a directory's entries (a new or deleted data file) durable.
  absl::Status SyncDir(const std::string& path) {
    std::unique_ptr<rocksdb::FSDirectory> dir;
    RETURN_IF_ERROR(FromRocksDb(fs_->NewDirectory(path, rocksdb::IOOptions(), &dir, nullptr),
                                absl::StrCat("opening ", path)));
    return FromRocksDb(
        dir->FsyncWithDirOptions(rocksdb::IOOptions(), nullptr, rocksdb::DirFsyncOptions()),
        absl::StrCat("syncing ", path));
  }

 private:
  std::unique_ptr<rocksdb::DB> db_;
  const std::string dir_;
  const CheckpointOptions options_;
  const std::shared_ptr<rocksdb::FileSystem> fs_;
  std::atomic<bool> writer_active_{false};
};

// The save path (writer.cc): checks that (job, step) is new, takes the writer
// slot and creates the data file. The job id must be valid.
absl::StatusOr<std::unique_ptr<CheckpointWriter>> BeginWriter(Database* db,
                                                              absl::string_view job_id,
                                                              uint64_t step);

// The load path (reader.cc): reads and validates the manifest of a committed
// checkpoint and opens its data file. kNotFound if it does not exist. The job
// id must be valid.
absl::StatusOr<std::unique_ptr<CheckpointReader>> OpenReader(Database* db, absl::string_view job_id,
                                                             uint64_t step);

}  // namespace potluck::checkpoint_internal

#endif  // POTLUCK_CHECKPOINT_INTERNAL_STORE_PARTS_H_
