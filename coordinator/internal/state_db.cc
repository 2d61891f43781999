#include "coordinator/internal/state_db.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

#include "checkpoint/rocksdb_status.h"
#include "common/status.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "rocksdb/write_batch.h"

namespace potluck::coordinator_internal {
namespace {

rocksdb::Slice ToSlice(absl::string_view s) { return rocksdb::Slice(s.data(), s.size()); }

}  // namespace

std::string JobKey(absl::string_view job_id) { return absl::StrCat("job/", job_id); }
std::string JobPrefix(absl::string_view job_id) { return absl::StrCat("job/", job_id, "/"); }
std::string GenerationKey(absl::string_view job_id) { return absl::StrCat("job/", job_id, "/gen"); }
std::string WorkerKey(absl::string_view job_id, absl::string_view worker_id) {
  return absl::StrCat("job/", job_id, "/w/", worker_id);
}
std::string ShardKey(absl::string_view job_id, uint32_t shard) {
  return absl::StrFormat("job/%s/s/%010u", job_id, shard);
}
std::string TokenKey(absl::string_view token_id) { return absl::StrCat("tok/", token_id); }
std::string LedgerRecordKey(absl::string_view job_id) {
  return absl::StrCat("coordinator/v1/", job_id, "/ledger");
}

StateDb::StateDb(std::unique_ptr<rocksdb::DB> db, bool sync) : db_(std::move(db)), sync_(sync) {}
StateDb::~StateDb() = default;

absl::StatusOr<std::unique_ptr<StateDb>> StateDb::Open(const std::string& dir, bool sync) {
  rocksdb::Options options;
  options.create_if_missing = true;
  // As in the checkpoint store: a damaged log record is kDataLoss, never a
  // silent rollback (which could, say, un-revoke a token); only an
  // incomplete last record (a write a power cut interrupted) is dropped.
  options.paranoid_checks = true;
  options.wal_recovery_mode = rocksdb::WALRecoveryMode::kTolerateCorruptedTailRecords;
  rocksdb::DB* raw = nullptr;
  RETURN_IF_ERROR(
      FromRocksDbOpen(rocksdb::DB::Open(options, dir, &raw), dir, "opening the coordinator state"));
  std::unique_ptr<StateDb> db(new StateDb(std::unique_ptr<rocksdb::DB>(raw), sync));
  ASSIGN_OR_RETURN(std::optional<std::string> format, db->Get("format"));
  if (!format.has_value()) {
    RETURN_IF_ERROR(db->Put("format", kStateFormat));
  } else if (*format != kStateFormat) {
    return absl::FailedPreconditionError(absl::StrCat(dir, " holds coordinator state in format '",
                                                      *format, "', this build reads '",
                                                      kStateFormat, "'"));
  }
  return db;
}

absl::StatusOr<std::optional<std::string>> StateDb::Get(absl::string_view key) {
  std::string value;
  const rocksdb::Status status = db_->Get(rocksdb::ReadOptions(), ToSlice(key), &value);
  if (status.IsNotFound()) return std::nullopt;
  RETURN_IF_ERROR(FromRocksDb(status, absl::StrCat("reading ", key)));
  return value;
}

absl::Status StateDb::Put(absl::string_view key, absl::string_view value) {
  rocksdb::WriteBatch batch;
  batch.Put(ToSlice(key), ToSlice(value));
  return Write(&batch);
}

absl::Status StateDb::Write(rocksdb::WriteBatch* batch) {
  rocksdb::WriteOptions options;
  options.sync = sync_;
  return FromRocksDb(db_->Write(options, batch),
                     absl::StrCat("writing ", batch->Count(), " coordinator state keys"));
}

absl::Status StateDb::Scan(
    absl::string_view prefix,
    const std::function<absl::Status(absl::string_view, absl::string_view)>& visit) {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek(ToSlice(prefix)); it->Valid(); it->Next()) {
    const absl::string_view key(it->key().data(), it->key().size());
    if (key.substr(0, prefix.size()) != prefix) break;
    RETURN_IF_ERROR(visit(key, absl::string_view(it->value().data(), it->value().size())));
  }
  return FromRocksDb(it->status(), absl::StrCat("scanning ", prefix));
}

}  // namespace potluck::coordinator_internal
