#include "cli/internal/signal_watcher.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <utility>

namespace potluck::cli_internal {
namespace {

// The write end of the watcher's pipe: all the handler touches.
std::atomic<int> signal_pipe{-1};

extern "C" void ForwardSignal(int signal_number) {
  const unsigned char byte = static_cast<unsigned char>(signal_number);
  const int fd = signal_pipe.load();
  if (fd >= 0) (void)!write(fd, &byte, 1);
}

}  // namespace

SignalWatcher::SignalWatcher() {
  if (pipe2(pipe_, O_CLOEXEC) != 0) return;  // the default actions stay
  signal_pipe = pipe_[1];
  struct sigaction action = {};
  action.sa_handler = ForwardSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  thread_ = std::thread([this] {
    unsigned char signal_number = 0;
    // 0 is the destructor's wake-up: no signal has that number.
    while (read(pipe_[0], &signal_number, 1) == 1 && signal_number != 0) {
      absl::MutexLock lock(&mu_);
      if (!handled_) std::_Exit(128 + signal_number);
      if (on_signal_) on_signal_(signal_number);
    }
  });
}

SignalWatcher::~SignalWatcher() {
  if (!thread_.joinable()) return;
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  const unsigned char stop = 0;
  (void)!write(pipe_[1], &stop, 1);
  thread_.join();
  signal_pipe = -1;
  close(pipe_[0]);
  close(pipe_[1]);
}

void SignalWatcher::Handle(std::function<void(int)> on_signal) {
  absl::MutexLock lock(&mu_);
  handled_ = true;
  on_signal_ = std::move(on_signal);
}

}  // namespace potluck::cli_internal
