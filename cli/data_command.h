// `potluck data prepare`: byte-level token shards from text files (or the
// built-in corpus), with a validation split and a manifest.
//
// Thread-safety: call from one thread.
#ifndef POTLUCK_CLI_DATA_COMMAND_H_
#define POTLUCK_CLI_DATA_COMMAND_H_

#include <CLI/CLI.hpp>

namespace potluck {

// Adds the `data` subcommand to `app`; its exit code goes to *exit_code,
// which must outlive `app`.
CLI::App* AddDataCommand(CLI::App* app, int* exit_code);

}  // namespace potluck

#endif  // POTLUCK_CLI_DATA_COMMAND_H_
