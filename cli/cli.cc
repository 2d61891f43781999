#include "cli/cli.h"

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"

#include "cli/bench_command.h"
#include "cli/build_info.h"
#include "cli/ckpt_command.h"
#include "cli/coordinator_command.h"
#include "cli/data_command.h"
#include "cli/sample_command.h"
#include "common/gpu.h"

namespace potluck {

namespace {

constexpr int kExitUsage = 1;
constexpr int kExitNotAvailable = 3;

// A subcommand whose implementation lands with a later issue.
struct Planned {
  const char* name;
  const char* summary;
  const char* issue;
};

int NotYetAvailable(const Planned& planned) {
  std::cerr << "potluck " << planned.name << ": not yet available (" << planned.issue
            << " builds it)\n";
  return kExitNotAvailable;
}

int RunVersion(bool json) {
  if (json) {
    const nlohmann::json info = {
        {"version", kPotluckVersion},      {"commit", kPotluckCommit},
        {"build_type", kPotluckBuildType}, {"compiler", kPotluckCompiler},
        {"with_torch", kPotluckWithTorch}, {"with_cuda", kPotluckWithCuda},
        {"gpus", DescribeGpus()},
    };
    std::cout << info.dump(2) << "\n";
  } else {
    std::cout << VersionLine() << "\n" << kPotluckCompiler << "\n" << DescribeGpus() << "\n";
  }
  return 0;
}

}  // namespace

std::string VersionLine() {
  return absl::StrCat("potluck ", kPotluckVersion, " (commit ", kPotluckCommit, ", ",
                      kPotluckBuildType, ", torch ", kPotluckWithTorch ? "on" : "off", ", cuda ",
                      kPotluckWithCuda ? "on" : "off", ")");
}

int RunCli(int argc, char** argv) {
  CLI::App app{
      "potluck pools volunteer GPUs and CPUs into one training run.\n"
      "Run 'potluck COMMAND --help' for a command's options.",
      "potluck"};
  app.require_subcommand(1);
  app.set_version_flag("--version", VersionLine());

  // Subcommands that later issues implement. Their flags are declared where
  // the interface is already decided, so --help shows what is coming.
  const std::vector<Planned> planned = {
      {"worker", "Join a job as a worker and train", "issue 7"},
      {"local", "Train a small GPT on this machine: embedded coordinator + N workers", "issue 7"},
  };
  std::vector<std::string> known = {"version"};
  std::vector<CLI::App*> planned_commands;
  for (const Planned& p : planned) {
    planned_commands.push_back(app.add_subcommand(p.name, p.summary));
    known.push_back(p.name);
  }
  int coordinator_exit_code = kExitUsage;
  CLI::App* coordinator = AddCoordinatorCommand(&app, &coordinator_exit_code);
  known.push_back("coordinator");
  int job_exit_code = kExitUsage;
  CLI::App* job = AddJobCommand(&app, &job_exit_code);
  known.push_back("job");
  int token_exit_code = kExitUsage;
  CLI::App* token = AddTokenCommand(&app, &token_exit_code);
  known.push_back("token");
  int ckpt_exit_code = kExitUsage;
  CLI::App* ckpt = AddCkptCommand(&app, &ckpt_exit_code);
  known.push_back("ckpt");
  int data_exit_code = kExitUsage;
  CLI::App* data = AddDataCommand(&app, &data_exit_code);
  known.push_back("data");
  int sample_exit_code = kExitUsage;
  CLI::App* sample = AddSampleCommand(&app, &sample_exit_code);
  known.push_back("sample");
  int bench_exit_code = kExitUsage;
  CLI::App* bench = AddBenchCommand(&app, &bench_exit_code);
  known.push_back("bench");
  CLI::App* version = app.add_subcommand("version", "Print the version and build configuration");
  bool version_json = false;
  version->add_flag("--json", version_json, "Machine-readable output");

  // Flags already fixed by the design (see README and the issues).
  int local_workers = 3;
  int local_steps = 0;
  std::string local_dir = "potluck-local";
  CLI::App* local = planned_commands[1];
  local->add_option("--workers", local_workers, "Worker processes to start")
      ->check(CLI::Range(1, 64));
  local->add_option("--steps", local_steps, "Optimizer steps (0 = the job's default)")
      ->check(CLI::NonNegativeNumber);
  local->add_option("--dir", local_dir, "State directory; run again with the same one to resume");
  std::string worker_coordinator, worker_token, worker_state_dir, worker_backend = "tcp",
                                                                  worker_device = "cpu";
  CLI::App* worker = planned_commands[0];
  worker->add_option("--coordinator", worker_coordinator, "Coordinator address, host:port");
  worker->add_option("--token", worker_token, "Join token for the job");
  worker->add_option("--state-dir", worker_state_dir, "Where the worker keeps its id and cache");
  worker->add_option("--backend", worker_backend, "Collectives backend")
      ->check(CLI::IsMember({"tcp", "mpi", "nccl"}));
  worker->add_option("--device", worker_device, "cpu or cuda:N");

  // CLI11 reports an unknown subcommand as an unexpected argument, and an
  // unknown flag before the subcommand as a missing subcommand; name the
  // offending word instead.
  if (argc > 1) {
    const absl::string_view first = argv[1];
    const bool is_flag = first[0] == '-';
    const bool known_flag = first == "-h" || first == "--help" || first == "--version";
    const bool known_command = std::find(known.begin(), known.end(), first) != known.end();
    if ((is_flag && !known_flag) || (!is_flag && !known_command)) {
      std::cerr << "potluck: unknown " << (is_flag ? "option" : "command") << " '" << first << "'\n"
                << "commands: " << absl::StrJoin(known, ", ") << "\n"
                << "Run 'potluck --help' for more.\n";
      return kExitUsage;
    }
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    const int code = app.exit(error);
    return code == 0 ? 0 : kExitUsage;
  }

  if (version->parsed()) return RunVersion(version_json);
  if (coordinator->parsed()) return coordinator_exit_code;
  if (job->parsed()) return job_exit_code;
  if (token->parsed()) return token_exit_code;
  if (ckpt->parsed()) return ckpt_exit_code;
  if (bench->parsed()) return bench_exit_code;
  if (data->parsed()) return data_exit_code;
  if (sample->parsed()) return sample_exit_code;
  for (size_t i = 0; i < planned.size(); ++i) {
    if (planned_commands[i]->parsed()) return NotYetAvailable(planned[i]);
  }
  return kExitUsage;  // unreachable: require_subcommand(1)
}

}  // namespace potluck
