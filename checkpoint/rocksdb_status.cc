#include "checkpoint/rocksdb_status.h"

#include <fcntl.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"

#include "common/failure.h"

namespace potluck {
namespace {

// Whether some open holds a lock on <dir>/LOCK (RocksDB's fcntl write lock).
// An open-file-description query conflicts with every other lock, including
// those of this process, so it sees a second open here as well.
bool LockHeld(const std::string& dir) {
  const std::string path = dir + "/LOCK";
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  struct flock query = {};
  query.l_type = F_WRLCK;
  query.l_whence = SEEK_SET;
  const bool held = ::fcntl(fd, F_OFD_GETLK, &query) == 0 && query.l_type != F_UNLCK;
  ::close(fd);
  return held;
}

}  // namespace

absl::Status FromRocksDb(const rocksdb::Status& status, absl::string_view context) {
  if (status.ok()) return absl::OkStatus();
  const std::string message = absl::StrCat(context, ": ", status.ToString());
  if (status.IsNotFound()) return absl::NotFoundError(message);
  if (status.IsCorruption()) return absl::DataLossError(message);
  if (status.IsNoSpace()) return absl::ResourceExhaustedError(message);
  if (status.IsInvalidArgument()) return absl::InvalidArgumentError(message);
  if (status.IsNotSupported()) return absl::UnimplementedError(message);
  if (status.IsTimedOut()) return absl::DeadlineExceededError(message);
  if (status.IsAborted()) return absl::AbortedError(message);
  if (status.IsIOError() || status.IsBusy() || status.IsTryAgain()) {
    return absl::UnavailableError(message);
  }
  return absl::InternalError(message);
}

absl::Status FromRocksDbOpen(const rocksdb::Status& status, const std::string& dir,
                             absl::string_view context) {
  if (status.ok()) return absl::OkStatus();
  if (status.IsIOError() && LockHeld(dir)) {
    return WithFailure(
        absl::UnavailableError(absl::StrCat(context, ": ", dir, " is in use by another process (",
                                            status.ToString(), ")")),
        Failure::kStoreLocked);
  }
  return FromRocksDb(status, context);
}

}  // namespace potluck
