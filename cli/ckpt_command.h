// `potluck ckpt ls|show|verify|export|import DIR ...`: checkpoint stores from
// the command line, with human output or --json.
//
// Thread-safety: call from one thread.
#ifndef POTLUCK_CLI_CKPT_COMMAND_H_
#define POTLUCK_CLI_CKPT_COMMAND_H_

#include <CLI/CLI.hpp>

namespace potluck {

// Adds the `ckpt` subcommand to `app`. When it runs, its exit code (0, or 2
// when the command failed) is stored in *exit_code, which must outlive `app`.
CLI::App* AddCkptCommand(CLI::App* app, int* exit_code);

}  // namespace potluck

#endif  // POTLUCK_CLI_CKPT_COMMAND_H_
