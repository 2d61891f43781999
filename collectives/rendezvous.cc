#include "collectives/rendezvous.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

#include "common/status.h"

namespace potluck {

namespace {

// Keys become file names: allow only characters that are safe in one.
absl::Status ValidateKey(absl::string_view key) {
  if (key.empty() || key.size() > 200) {
    return absl::InvalidArgumentError(
        absl::StrCat("rendezvous key '", key, "' must be 1-200 bytes"));
  }
  for (char c : key) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.' || c == '/';
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat("rendezvous key '", key, "' has a character outside [A-Za-z0-9._/-]"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status InMemoryRendezvousStore::Set(absl::string_view key, absl::string_view value) {
  RETURN_IF_ERROR(ValidateKey(key));
  absl::MutexLock lock(&mu_);
  values_[std::string(key)] = std::string(value);
  return absl::OkStatus();
}

absl::StatusOr<std::string> InMemoryRendezvousStore::Get(absl::string_view key,
                                                         absl::Time deadline) {
  RETURN_IF_ERROR(ValidateKey(key));
  absl::MutexLock lock(&mu_);
  auto present = [this, key]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return values_.find(key) != values_.end();
  };
  if (!clock_->AwaitWithDeadline(&mu_, absl::Condition(&present), deadline)) {
    return absl::DeadlineExceededError(absl::StrCat("rendezvous key '", key, "' never appeared"));
  }
  return values_.find(key)->second;
}

std::string FileRendezvousStore::PathOf(absl::string_view key) const {
  std::string name(key);
  for (char& c : name) {
    if (c == '/') c = '%';
  }
  return absl::StrCat(dir_, "/", name);
}

absl::Status FileRendezvousStore::Set(absl::string_view key, absl::string_view value) {
  RETURN_IF_ERROR(ValidateKey(key));
  const std::string path = PathOf(key);
  const std::string temp = absl::StrCat(path, ".tmp.", getpid());
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    out.write(value.data(), static_cast<std::streamsize>(value.size()));
    if (!out) return absl::UnavailableError(absl::StrCat("writing rendezvous file ", temp));
  }
  if (rename(temp.c_str(), path.c_str()) != 0) {
    return ErrnoStatus(errno, absl::StrCat("publishing rendezvous file ", path));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> FileRendezvousStore::Get(absl::string_view key, absl::Time deadline) {
  RETURN_IF_ERROR(ValidateKey(key));
  const std::string path = PathOf(key);
  while (true) {
    std::ifstream in(path, std::ios::binary);
    if (in) {
      std::ostringstream contents;
      contents << in.rdbuf();
      return contents.str();
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("rendezvous key '", key, "' never appeared in ", dir_));
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
}

}  // namespace potluck
