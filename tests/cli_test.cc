// Runs the real build/bin/potluck as a user would and checks exit codes and
// what it prints.
#include <array>
#include <cstdio>
#include <string>

#include <gtest/gtest.h>
#include <sys/wait.h>

namespace potluck {
namespace {

struct Result {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

Result RunPotluck(const std::string& args) {
  const std::string command = std::string(POTLUCK_BINARY) + " " + args + " 2>&1";
  Result result;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0)
    result.output.append(buffer.data(), n);
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

TEST(Cli, HelpListsEverySubcommand) {
  const Result result = RunPotluck("--help");
  EXPECT_EQ(result.exit_code, 0) << result.output;
  for (const char* command :
       {"coordinator", "worker", "local", "job", "token", "ckpt", "data", "bench", "version"}) {
    EXPECT_NE(result.output.find(command), std::string::npos) << command << "\n" << result.output;
  }
}

TEST(Cli, EverySubcommandHasHelp) {
  for (const char* command :
       {"coordinator", "worker", "local", "job", "token", "ckpt", "data", "bench", "version"}) {
    const Result result = RunPotluck(std::string(command) + " --help");
    EXPECT_EQ(result.exit_code, 0) << command << "\n" << result.output;
    EXPECT_NE(result.output.find("Usage"), std::string::npos) << command << "\n" << result.output;
  }
}

TEST(Cli, UnknownCommandFailsNamingIt) {
  const Result result = RunPotluck("nosuch");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("unknown command 'nosuch'"), std::string::npos) << result.output;
}

TEST(Cli, UnknownFlagFailsNamingIt) {
  Result result = RunPotluck("version --frobnicate");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("--frobnicate"), std::string::npos) << result.output;
  result = RunPotluck("--frobnicate");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("--frobnicate"), std::string::npos) << result.output;
}

TEST(Cli, BadFlagValueFailsNamingTheFlag) {
  const Result result = RunPotluck("worker --backend carrier-pigeon");
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.output.find("--backend"), std::string::npos) << result.output;
}

TEST(Cli, NoCommandIsAUsageError) {
  const Result result = RunPotluck("");
  EXPECT_EQ(result.exit_code, 1) << result.output;
}

TEST(Cli, VersionReportsTheBuild) {
  Result result = RunPotluck("version");
  EXPECT_EQ(result.exit_code, 0);
  EXPECT_EQ(result.output.rfind("potluck 0.", 0), 0u) << result.output;
  EXPECT_NE(result.output.find("cuda:"), std::string::npos) << result.output;
  result = RunPotluck("version --json");
  EXPECT_EQ(result.exit_code, 0);
  EXPECT_NE(result.output.find("\"with_torch\""), std::string::npos) << result.output;
}

TEST(Cli, PlannedCommandsSayTheyAreNotAvailableYet) {
  const Result result = RunPotluck("coordinator");
  EXPECT_EQ(result.exit_code, 3) << result.output;
  EXPECT_NE(result.output.find("not yet available"), std::string::npos) << result.output;
}

}  // namespace
}  // namespace potluck
