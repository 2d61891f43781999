// A `potluck` subcommand run as a child process whose stdout (JSON lines)
// comes back on a pipe and whose stderr goes to a log file: how `potluck
// local` and `potluck bench recovery` run their workers.
#ifndef POTLUCK_CLI_INTERNAL_CHILD_PROCESS_H_
#define POTLUCK_CLI_INTERNAL_CHILD_PROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"

namespace potluck::cli_internal {

struct ChildProcess {
  pid_t pid = -1;
  int out = -1;  // its stdout, non-blocking
  std::string buffer;
  std::string log;
  bool running = true;
  int status = 0;  // from waitpid, once it exited
  absl::Time started;

  // Reads what is there and returns the complete JSON object lines.
  std::vector<nlohmann::json> ReadLines();
  // Reaps it if it exited; returns true if it is no longer running.
  bool Reap();
};

// Runs this binary (/proc/self/exe) with `args` (argv[1...]); the child gets
// SIGTERM when this process dies.
absl::StatusOr<ChildProcess> SpawnSelf(const std::vector<std::string>& args,
                                       const std::string& log);

}  // namespace potluck::cli_internal

#endif  // POTLUCK_CLI_INTERNAL_CHILD_PROCESS_H_
