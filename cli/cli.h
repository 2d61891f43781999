// The `potluck` command line: one binary, one subcommand per job a user has.
//
// main() only calls RunCli; everything a subcommand does is a library call
// that tests can make directly.
//
// Thread-safety: call from one thread (it parses argv and writes to stdio).
#ifndef POTLUCK_CLI_CLI_H_
#define POTLUCK_CLI_CLI_H_

#include <string>

namespace potluck {

// Parses `argv` and runs the chosen subcommand. Returns the process exit
// code: 0 on success, 1 on a usage error (unknown subcommand or flag, bad
// value), 2 when the command ran and failed, 3 when the subcommand is not
// available yet.
int RunCli(int argc, char** argv);

// "potluck 0.1.0 (commit abc1234, RelWithDebInfo, torch on, cuda on, mpi on, gloo on)".
std::string VersionLine();

}  // namespace potluck

#endif  // POTLUCK_CLI_CLI_H_
