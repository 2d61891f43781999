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
#include "cli/worker_command.h"
#include "common/gpu.h"

namespace potluck {

namespace {

constexpr int kExitUsage = 1;

int RunVersion(bool json) {
  if (json) {
    const nlohmann::json info = {
        {"version", kPotluckVersion},      {"commit", kPotluckCommit},
        {"build_type", kPotluckBuildType}, {"compiler", kPotluckCompiler},
        {"with_torch", kPotluckWithTorch}, {"with_cuda", kPotluckWithCuda},
        {"with_mpi", kPotluckWithMpi},     {"with_gloo", kPotluckWithGloo},
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
                      kPotluckWithCuda ? "on" : "off", ", mpi ", kPotluckWithMpi ? "on" : "off",
                      ", gloo ", kPotluckWithGloo ? "on" : "off", ")");
}

int RunCli(int argc, char** argv) {
  CLI::App app{
      "potluck pools volunteer GPUs and CPUs into one training run.\n"
      "Run 'potluck COMMAND --help' for a command's options.",
      "potluck"};
  app.require_subcommand(1);
  app.set_version_flag("--version", VersionLine());

  std::vector<std::string> known = {"version"};
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

  int worker_exit_code = kExitUsage;
  CLI::App* worker = AddWorkerCommand(&app, &worker_exit_code);
  known.push_back("worker");
  int local_exit_code = kExitUsage;
  CLI::App* local = AddLocalCommand(&app, &local_exit_code);
  known.push_back("local");

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
  if (worker->parsed()) return worker_exit_code;
  if (local->parsed()) return local_exit_code;
  return kExitUsage;  // unreachable: require_subcommand(1)
}

}  // namespace potluck
