// Runs build/bin/potluck as a user would, for tests of the command line.
#ifndef POTLUCK_TESTS_RUN_POTLUCK_H_
#define POTLUCK_TESTS_RUN_POTLUCK_H_

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace potluck {

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// Runs `potluck ARGS` through the shell; POTLUCK_BINARY is set by CMake.
inline CommandResult RunPotluck(const std::string& args) {
  const std::string command = std::string(POTLUCK_BINARY) + " " + args + " 2>&1";
  CommandResult result;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) {
    result.output.append(buffer.data(), n);
  }
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

}  // namespace potluck

#endif  // POTLUCK_TESTS_RUN_POTLUCK_H_
