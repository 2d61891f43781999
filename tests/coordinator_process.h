// Runs `potluck coordinator` as a child process for the end-to-end and
// SIGKILL suites: starts it on 127.0.0.1:0, learns its port from the line it
// prints, and stops or kills it.
#ifndef POTLUCK_TESTS_COORDINATOR_PROCESS_H_
#define POTLUCK_TESTS_COORDINATOR_PROCESS_H_

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace potluck {

class CoordinatorProcess {
 public:
  CoordinatorProcess() = default;
  CoordinatorProcess(const CoordinatorProcess&) = delete;
  CoordinatorProcess& operator=(const CoordinatorProcess&) = delete;
  ~CoordinatorProcess() {
    if (pid_ > 0) Signal(SIGKILL);
  }

  // Starts `binary coordinator --listen 127.0.0.1:0 --data-dir DIR EXTRA...`
  // and waits up to `timeout` for "listening on ADDR". Returns "" on success,
  // else what went wrong (with what the child printed).
  std::string Start(const std::string& binary, const std::string& data_dir,
                    const std::vector<std::string>& extra = {},
                    absl::Duration timeout = absl::Seconds(20)) {
    int out[2];
    if (pipe2(out, O_CLOEXEC) != 0) return "pipe failed";
    std::vector<std::string> args = {binary,  "coordinator", "--listen",
                                     listen_, "--data-dir",  data_dir};
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], STDOUT_FILENO);
      std::vector<char*> argv;
      for (std::string& arg : args) argv.push_back(arg.data());
      argv.push_back(nullptr);
      execv(binary.c_str(), argv.data());
      _exit(127);
    }
    close(out[1]);
    out_ = out[0];
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      pollfd fd{out_, POLLIN, 0};
      if (poll(&fd, 1, 100) <= 0) continue;
      char buffer[4096];
      const ssize_t n = read(out_, buffer, sizeof(buffer));
      if (n <= 0) return absl::StrCat("the coordinator exited: ", printed_);
      printed_.append(buffer, n);
      const size_t at = printed_.find("listening on ");
      if (at != std::string::npos) {
        const size_t end = printed_.find(' ', at + 13);
        if (end != std::string::npos) {
          address_ = printed_.substr(at + 13, end - at - 13);
          return "";
        }
      }
    }
    return absl::StrCat("no 'listening on' within ", absl::FormatDuration(timeout), ": ", printed_);
  }

  // Sends `signal` and waits for the exit; returns the exit code, or 128 +
  // the signal that ended it.
  int Signal(int signal) {
    if (pid_ <= 0) return -1;
    kill(pid_, signal);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    // What it printed after the address line.
    char buffer[4096];
    ssize_t n;
    while ((n = read(out_, buffer, sizeof(buffer))) > 0) printed_.append(buffer, n);
    close(out_);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  // Where the next Start listens (default 127.0.0.1:0: a free port).
  void set_listen(const std::string& listen) { listen_ = listen; }
  const std::string& address() const { return address_; }
  const std::string& printed() const { return printed_; }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  std::string listen_ = "127.0.0.1:0";
  std::string address_;
  std::string printed_;
};

// A copy of a stopped or killed coordinator's directory, to inspect with the
// library: Coordinator::Open reconciles what it finds (a killed run gets a
// rollback generation written), so opening the directory itself would change
// what the next real restart sees. Returns the copy's path, DIR.inspected
// (replaced if it exists).
inline std::string CopyForInspection(const std::string& dir) {
  const std::string copy = dir + ".inspected";
  std::filesystem::remove_all(copy);
  std::filesystem::copy(dir, copy, std::filesystem::copy_options::recursive);
  return copy;
}

}  // namespace potluck

#endif  // POTLUCK_TESTS_COORDINATOR_PROCESS_H_
