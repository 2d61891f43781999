// StreamWatch: ends client streams that go quiet. A PutCheckpoint stream
// that sends `begin` and then nothing would otherwise hold its spooled
// bytes and its member's one open upload for as long as the client likes;
// the watch cancels any watched stream idle for longer than its limit.
//
// Thread-safety: thread-safe. One background thread scans the watched
// streams a few times per limit.
#ifndef POTLUCK_COORDINATOR_STREAM_WATCH_H_
#define POTLUCK_COORDINATOR_STREAM_WATCH_H_

#include <map>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace grpc {
class ServerContext;
}

namespace potluck {

class StreamWatch {
 public:
  explicit StreamWatch(absl::Duration idle_limit);
  ~StreamWatch();
  StreamWatch(const StreamWatch&) = delete;
  StreamWatch& operator=(const StreamWatch&) = delete;

  // Watches one stream while it exists: Touch() on every message; once it
  // was idle past the limit the stream is cancelled and timed_out() says so.
  class Watched {
   public:
    Watched(StreamWatch* watch, grpc::ServerContext* context);
    ~Watched();
    Watched(const Watched&) = delete;
    Watched& operator=(const Watched&) = delete;
    void Touch();
    bool timed_out() const;

   private:
    StreamWatch* const watch_;  // not owned
    grpc::ServerContext* const context_;
  };

  absl::Duration idle_limit() const { return idle_limit_; }

 private:
  struct Entry {
    absl::Time last;
    bool timed_out = false;
  };
  void Scan();

  const absl::Duration idle_limit_;
  mutable absl::Mutex mu_;
  std::map<grpc::ServerContext*, Entry> streams_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread scanner_;
};

}  // namespace potluck

#endif  // POTLUCK_COORDINATOR_STREAM_WATCH_H_
