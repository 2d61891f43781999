// `potluck worker` (join a job and train) and `potluck local` (an embedded
// coordinator and N worker processes on this machine: the main job).
//
// Thread-safety: call from one thread.
#ifndef POTLUCK_CLI_WORKER_COMMAND_H_
#define POTLUCK_CLI_WORKER_COMMAND_H_

#include <CLI/CLI.hpp>

namespace potluck {

// Add the subcommands to `app`; their exit codes go to *exit_code, which
// must outlive `app`.
CLI::App* AddWorkerCommand(CLI::App* app, int* exit_code);
CLI::App* AddLocalCommand(CLI::App* app, int* exit_code);

}  // namespace potluck

#endif  // POTLUCK_CLI_WORKER_COMMAND_H_
