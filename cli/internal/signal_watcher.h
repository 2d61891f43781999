// SignalWatcher: turns SIGINT and SIGTERM into calls on a thread of its own,
// where a command may do what is not async-signal-safe (leave the job,
// drain a server).
//
// A handler, not a blocked signal mask: threads that libraries start before
// main (OpenBLAS's pool) do not inherit a mask set in main, and the kernel
// may deliver a process's signal to any thread that does not block it; its
// default action would kill the process before it left or drained. The
// handler only writes the signal's number to a pipe, which the thread reads.
//
// Thread-safety: Handle may be called from any thread.
#ifndef POTLUCK_CLI_INTERNAL_SIGNAL_WATCHER_H_
#define POTLUCK_CLI_INTERNAL_SIGNAL_WATCHER_H_

#include <functional>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace potluck::cli_internal {

class SignalWatcher {
 public:
  // Installs the handlers: one watcher per process at a time. Until Handle
  // is called, a signal exits the process at once with 128 + its number.
  SignalWatcher();
  // Restores the default actions.
  ~SignalWatcher();
  SignalWatcher(const SignalWatcher&) = delete;
  SignalWatcher& operator=(const SignalWatcher&) = delete;

  // Calls `on_signal` with each later signal's number, on the watcher's
  // thread; an empty function ignores them.
  void Handle(std::function<void(int signal_number)> on_signal);

 private:
  int pipe_[2] = {-1, -1};
  absl::Mutex mu_;
  bool handled_ ABSL_GUARDED_BY(mu_) = false;
  std::function<void(int)> on_signal_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace potluck::cli_internal

#endif  // POTLUCK_CLI_INTERNAL_SIGNAL_WATCHER_H_
