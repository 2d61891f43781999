#include "cli/internal/child_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "absl/time/clock.h"

#include "common/status.h"

namespace potluck::cli_internal {

std::vector<nlohmann::json> ChildProcess::ReadLines() {
  std::vector<nlohmann::json> lines;
  char chunk[4096];
  ssize_t n;
  while (out >= 0 && (n = read(out, chunk, sizeof(chunk))) > 0) buffer.append(chunk, n);
  size_t newline;
  while ((newline = buffer.find('\n')) != std::string::npos) {
    nlohmann::json j = nlohmann::json::parse(buffer.substr(0, newline), nullptr, false);
    buffer.erase(0, newline + 1);
    if (j.is_object()) lines.push_back(std::move(j));
  }
  return lines;
}

bool ChildProcess::Reap() {
  if (!running) return true;
  if (waitpid(pid, &status, WNOHANG) != pid) return false;
  running = false;
  return true;
}

absl::StatusOr<ChildProcess> SpawnSelf(const std::vector<std::string>& args,
                                       const std::string& log) {
  ChildProcess child;
  child.log = log;
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) return ErrnoStatus(errno, "pipe");
  std::vector<std::string> argv_strings = {"potluck"};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  child.started = absl::Now();
  const pid_t pid = fork();
  if (pid < 0) return ErrnoStatus(errno, "fork");
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    dup2(pipe_fds[1], STDOUT_FILENO);
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) dup2(fd, STDERR_FILENO);
    std::vector<char*> argv;
    for (const std::string& s : argv_strings) argv.push_back(const_cast<char*>(s.c_str()));
    argv.push_back(nullptr);
    execv("/proc/self/exe", argv.data());
    _exit(127);
  }
  close(pipe_fds[1]);
  fcntl(pipe_fds[0], F_SETFL, O_NONBLOCK);
  child.pid = pid;
  child.out = pipe_fds[0];
  return child;
}

}  // namespace potluck::cli_internal
