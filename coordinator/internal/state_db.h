// StateDb: the coordinator's own RocksDB (<data_dir>/state) holding jobs,
// workers, generations, shards and tokens; docs/coordinator.md has the keys.
// Private to coordinator/. RocksDB errors are converted here, with the key or
// operation in the message.
//
// Thread-safety: thread-safe (RocksDB is); the Coordinator serialises writers.
#ifndef POTLUCK_COORDINATOR_INTERNAL_STATE_DB_H_
#define POTLUCK_COORDINATOR_INTERNAL_STATE_DB_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace rocksdb {
class DB;
class WriteBatch;
}  // namespace rocksdb

namespace potluck::coordinator_internal {

// The value of the `format` key; another value is refused.
inline constexpr char kStateFormat[] = "potluck-coordinator-state 1";

std::string JobKey(absl::string_view job_id);
std::string JobPrefix(absl::string_view job_id);  // "job/<job>/"
std::string GenerationKey(absl::string_view job_id);
std::string WorkerKey(absl::string_view job_id, absl::string_view worker_id);
std::string ShardKey(absl::string_view job_id, uint32_t shard);
std::string TokenKey(absl::string_view token_id);
inline constexpr char kSigningKeyKey[] = "key/signing";
// The CheckpointStore record committed with each checkpoint of the job.
std::string LedgerRecordKey(absl::string_view job_id);

// One key's write: a value to put, or nullopt to delete the key.
using StateWrite = std::pair<std::string, std::optional<std::string>>;

class StateDb {
 public:
  // Opens or creates the database in `dir` (its parent must exist).
  static absl::StatusOr<std::unique_ptr<StateDb>> Open(const std::string& dir, bool sync);
  ~StateDb();

  absl::StatusOr<std::optional<std::string>> Get(absl::string_view key);
  absl::Status Put(absl::string_view key, absl::string_view value);
  absl::Status Write(rocksdb::WriteBatch* batch);
  // Calls `visit` for every key starting with `prefix`, in key order.
  absl::Status Scan(
      absl::string_view prefix,
      const std::function<absl::Status(absl::string_view key, absl::string_view value)>& visit);

 private:
  StateDb(std::unique_ptr<rocksdb::DB> db, bool sync);
  std::unique_ptr<rocksdb::DB> db_;
  const bool sync_;
};

}  // namespace potluck::coordinator_internal

#endif  // POTLUCK_COORDINATOR_INTERNAL_STATE_DB_H_
