// Runs the real build/bin/potluck as a user would and checks exit codes and
// what it prints.
#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "tests/run_potluck.h"

namespace potluck {
namespace {

using Result = CommandResult;

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

TEST(Cli, DataPrepareWritesShardsAndAManifest) {
  std::string pattern = ::testing::TempDir() + "/data-cli-XXXXXX";
  const std::string dir = mkdtemp(pattern.data());
  const std::string input = dir + "/in.txt";
  FILE* file = fopen(input.c_str(), "w");
  for (int i = 0; i < 1000; ++i) fputs("the quick brown fox\n", file);
  fclose(file);
  const Result result = RunPotluck("data prepare --input " + input + " --out " + dir +
                                   "/set --shard-tokens 5000 --validation-fraction 0.1");
  EXPECT_EQ(result.exit_code, 0) << result.output;
  // 20001 bytes with the closing newline: 2000 held out, 18001 in 4 shards.
  EXPECT_NE(result.output.find("18001 training tokens in 4 shard(s), 2000 validation tokens"),
            std::string::npos)
      << result.output;
  EXPECT_NE(RunPotluck("data prepare --out " + dir + "/x --validation-fraction 0.9").exit_code, 0);
  std::filesystem::remove_all(dir);
}

TEST(Cli, CoordinatorWithoutDataDirIsAUsageError) {
  const Result result = RunPotluck("coordinator --listen 127.0.0.1:0");
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("--data-dir"), std::string::npos) << result.output;
}

}  // namespace
}  // namespace potluck
