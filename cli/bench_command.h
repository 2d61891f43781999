// `potluck bench ...`: benchmarks that print their figures beside same-run
// baselines.
//
// Thread-safety: call from one thread.
#ifndef POTLUCK_CLI_BENCH_COMMAND_H_
#define POTLUCK_CLI_BENCH_COMMAND_H_

#include <CLI/CLI.hpp>

namespace potluck {

// Adds the `bench` subcommand to `app`; its exit code goes to *exit_code,
// which must outlive `app`.
CLI::App* AddBenchCommand(CLI::App* app, int* exit_code);

}  // namespace potluck

#endif  // POTLUCK_CLI_BENCH_COMMAND_H_
