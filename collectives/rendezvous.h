// RendezvousStore: how the members of a generation find each other without
// MPI. Each member publishes its endpoint (and, for NCCL, rank 0 its unique
// id) under a key; the others wait for the keys they need. The coordinator
// implements it for real jobs; tests use the in-memory or file store.
//
// Thread-safety: implementations are thread-safe.
#ifndef POTLUCK_COLLECTIVES_RENDEZVOUS_H_
#define POTLUCK_COLLECTIVES_RENDEZVOUS_H_

#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

#include "common/clock.h"

namespace potluck {

class RendezvousStore {
 public:
  virtual ~RendezvousStore() = default;
  // Publishes `value` under `key`, replacing any earlier value.
  virtual absl::Status Set(absl::string_view key, absl::string_view value) = 0;
  // The value of `key`, waiting for it to be published until `deadline`
  // (then kDeadlineExceeded).
  virtual absl::StatusOr<std::string> Get(absl::string_view key, absl::Time deadline) = 0;
};

// Keys and values in this process's memory: for ranks that are threads.
class InMemoryRendezvousStore final : public RendezvousStore {
 public:
  explicit InMemoryRendezvousStore(Clock* clock = Clock::Real()) : clock_(clock) {}
  absl::Status Set(absl::string_view key, absl::string_view value) override;
  absl::StatusOr<std::string> Get(absl::string_view key, absl::Time deadline) override;

 private:
  Clock* const clock_;  // not owned
  absl::Mutex mu_;
  std::map<std::string, std::string, std::less<>> values_ ABSL_GUARDED_BY(mu_);
};

// One file per key in a directory every member can reach (a shared
// filesystem, or /tmp for processes on one machine). Writes are atomic
// (write to a temporary name, then rename); Get polls.
class FileRendezvousStore final : public RendezvousStore {
 public:
  explicit FileRendezvousStore(std::string dir) : dir_(std::move(dir)) {}
  absl::Status Set(absl::string_view key, absl::string_view value) override;
  absl::StatusOr<std::string> Get(absl::string_view key, absl::Time deadline) override;

 private:
  std::string PathOf(absl::string_view key) const;
  const std::string dir_;
};

}  // namespace potluck

#endif  // POTLUCK_COLLECTIVES_RENDEZVOUS_H_
