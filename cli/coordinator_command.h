// `potluck coordinator`, `potluck job ...` and `potluck token ...`: running a
// coordinator and administering it.
//
// Tokens and jobs are managed through the running coordinator (--coordinator
// ADDR, with the admin token from --admin-token or <data-dir>/admin.token),
// because its state database admits one process at a time. `token create` and
// `token revoke` also work offline, on --data-dir alone, while no coordinator
// runs on that directory (a running one is named in the error).
//
// Thread-safety: call from one thread.
#ifndef POTLUCK_CLI_COORDINATOR_COMMAND_H_
#define POTLUCK_CLI_COORDINATOR_COMMAND_H_

#include <string>

#include <CLI/CLI.hpp>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace potluck {

struct CoordinatorCommandArgs {
  std::string listen = "127.0.0.1:7070";
  std::string data_dir;
  std::string tls_cert_file;
  std::string tls_key_file;
  int lease_seconds = 10;
  int max_message_bytes = 8 << 20;
  uint64_t max_checkpoint_bytes = uint64_t{256} << 30;  // one upload, all parts
  uint64_t max_spool_bytes = 0;  // every upload in progress together; 0: no fixed limit
};

// Serves until SIGINT or SIGTERM, then drains and shuts down. Prints
// "listening on HOST:PORT" (the chosen port for port 0) once it serves. On
// first start writes an admin token to <data-dir>/admin.token (mode 0600).
absl::Status RunCoordinatorServer(const CoordinatorCommandArgs& args);

// The subcommands; their exit codes go to *exit_code, which must outlive `app`.
CLI::App* AddCoordinatorCommand(CLI::App* app, int* exit_code);
CLI::App* AddJobCommand(CLI::App* app, int* exit_code);
CLI::App* AddTokenCommand(CLI::App* app, int* exit_code);

}  // namespace potluck

#endif  // POTLUCK_CLI_COORDINATOR_COMMAND_H_
