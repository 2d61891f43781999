#include "coordinator/stream_watch.h"

#include <algorithm>

#include <grpcpp/server_context.h>

#include "absl/time/clock.h"

namespace potluck {

StreamWatch::StreamWatch(absl::Duration idle_limit)
    : idle_limit_(idle_limit), scanner_([this] { Scan(); }) {}

StreamWatch::~StreamWatch() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  scanner_.join();
}

void StreamWatch::Scan() {
  const absl::Duration every =
      std::clamp(idle_limit_ / 4, absl::Milliseconds(10), absl::Seconds(1));
  absl::MutexLock lock(&mu_);
  while (!mu_.AwaitWithTimeout(absl::Condition(&stop_), every)) {
    const absl::Time now = absl::Now();
    for (auto& [context, entry] : streams_) {
      if (!entry.timed_out && now - entry.last > idle_limit_) {
        entry.timed_out = true;
        context->TryCancel();  // the handler's next Read returns false
      }
    }
  }
}

StreamWatch::Watched::Watched(StreamWatch* watch, grpc::ServerContext* context)
    : watch_(watch), context_(context) {
  absl::MutexLock lock(&watch_->mu_);
  watch_->streams_[context_] = Entry{absl::Now(), false};
}

StreamWatch::Watched::~Watched() {
  absl::MutexLock lock(&watch_->mu_);
  watch_->streams_.erase(context_);
}

void StreamWatch::Watched::Touch() {
  absl::MutexLock lock(&watch_->mu_);
  watch_->streams_[context_].last = absl::Now();
}

bool StreamWatch::Watched::timed_out() const {
  absl::MutexLock lock(&watch_->mu_);
  auto it = watch_->streams_.find(context_);
  return it != watch_->streams_.end() && it->second.timed_out;
}

}  // namespace potluck
