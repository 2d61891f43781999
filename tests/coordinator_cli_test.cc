// `potluck coordinator`, `job` and `token` as a user runs them: a real
// coordinator process on 127.0.0.1:0, driven by the real binary.
#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "coordinator/tls_test_util.h"
#include "tests/coordinator_process.h"
#include "tests/run_potluck.h"

namespace potluck {
namespace {

class CoordinatorCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "/coord-cli-XXXXXX";
    dir_ = mkdtemp(pattern.data());
    std::ofstream(dir_ + "/in.txt") << std::string(20000, 'a');
    const CommandResult prepared = RunPotluck("data prepare --input " + dir_ + "/in.txt --out " +
                                              dir_ + "/set --shard-tokens 5000");
    ASSERT_EQ(prepared.exit_code, 0) << prepared.output;
    std::ofstream(dir_ + "/job.json") << R"({"job_id": "cli-job", "model": {"mlp": {"input_dim": 4,
        "num_classes": 2}}, "dataset": {"manifest": ")"
                                      << dir_ << R"(/set", "epochs": 1},
        "optimizer": {"learning_rate": 0.01}, "mode": "SYNC_MODE_SYNC",
        "batch": {"micro_batch_size": 2, "global_batch_size": 8}})";
    data_dir_ = dir_ + "/state";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string dir_;
  std::string data_dir_;
};

TEST_F(CoordinatorCliTest, SubmitListStatusTokenAndCleanShutdown) {
  CoordinatorProcess coordinator;
  const std::string started = coordinator.Start(POTLUCK_BINARY, data_dir_);
  ASSERT_EQ(started, "");
  const std::string at = " --coordinator " + coordinator.address();
  EXPECT_EQ(coordinator.address().rfind("127.0.0.1:", 0), 0u) << coordinator.address();
  EXPECT_NE(coordinator.address(), "127.0.0.1:0");

  struct stat info;
  ASSERT_EQ(stat((data_dir_ + "/admin.token").c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600u);

  CommandResult result = RunPotluck("job submit" + at + " --spec " + dir_ + "/job.json");
  EXPECT_EQ(result.exit_code, 1) << "no admin token given: a usage error\n" << result.output;

  result =
      RunPotluck("job submit" + at + " --data-dir " + data_dir_ + " --spec " + dir_ + "/job.json");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("submitted job cli-job (running)"), std::string::npos)
      << result.output;

  result = RunPotluck("job list" + at + " --json");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const nlohmann::json jobs = nlohmann::json::parse(result.output);
  ASSERT_EQ(jobs.size(), 1u) << result.output;
  EXPECT_EQ(jobs[0]["spec"]["job_id"], "cli-job");
  EXPECT_EQ(jobs[0]["state"], "JOB_STATE_RUNNING");

  // Anyone gets the public summary: no dataset path, no workers.
  result = RunPotluck("job status cli-job" + at + " --json");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  nlohmann::json summary = nlohmann::json::parse(result.output);
  EXPECT_FALSE(summary.contains("workers")) << result.output;
  EXPECT_FALSE(summary["spec"].contains("dataset")) << result.output;
  EXPECT_EQ(summary["state"], "JOB_STATE_RUNNING");
  // The admin gets the job's whole status and its workers.
  result = RunPotluck("job status cli-job" + at + " --data-dir " + data_dir_ + " --json");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  nlohmann::json whole = nlohmann::json::parse(result.output);
  EXPECT_EQ(whole["workers"].size(), 0u) << result.output;
  EXPECT_TRUE(whole["spec"].contains("dataset")) << result.output;
  result = RunPotluck("job status nope" + at);
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("NOT_FOUND"), std::string::npos) << result.output;

  result = RunPotluck("token create --job cli-job --ttl 1h" + at + " --data-dir " + data_dir_);
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(result.output.rfind("plk1:cli-job:", 0), 0u) << result.output;
  const std::string token = result.output.substr(0, result.output.find('\n'));
  result = RunPotluck("token revoke " + token + at + " --data-dir " + data_dir_);
  EXPECT_EQ(result.exit_code, 0) << result.output;
  // The revoked token admits nobody: a worker holding it is refused, saying why.
  result = RunPotluck("worker" + at + " --job cli-job --steps 5 --token " + token +
                      " --state-dir " + dir_ + "/revoked-worker");
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("was revoked"), std::string::npos) << result.output;

  // The state database is the running coordinator's: offline use is refused.
  result = RunPotluck("token create --job cli-job --data-dir " + data_dir_);
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("a coordinator is running"), std::string::npos) << result.output;

  std::ofstream(dir_ + "/bad.json") << R"({"job_id": "bad", "batch": {"micro_batch_size": 0}})";
  result =
      RunPotluck("job submit" + at + " --data-dir " + data_dir_ + " --spec " + dir_ + "/bad.json");
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("batch.micro_batch_size"), std::string::npos) << result.output;

  EXPECT_EQ(coordinator.Signal(SIGTERM), 0) << coordinator.printed();
  EXPECT_NE(coordinator.printed().find("shut down cleanly"), std::string::npos)
      << coordinator.printed();

  // Stopped, the data directory is the CLI's to use directly.
  result = RunPotluck("token create --job cli-job --ttl 2h --data-dir " + data_dir_);
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(result.output.rfind("plk1:cli-job:", 0), 0u) << result.output;
  result = RunPotluck("token create --job no-such-job --data-dir " + data_dir_);
  EXPECT_EQ(result.exit_code, 2) << result.output;

  // It restarts on the same directory with the job and the same admin token.
  CoordinatorProcess again;
  ASSERT_EQ(again.Start(POTLUCK_BINARY, data_dir_), "");
  result = RunPotluck("job list --coordinator " + again.address());
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("cli-job"), std::string::npos) << result.output;
  result =
      RunPotluck("job pause cli-job --coordinator " + again.address() + " --data-dir " + data_dir_);
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("paused"), std::string::npos) << result.output;
  // A job without max_steps has none to raise.
  result = RunPotluck("job extend cli-job --max-steps 50 --coordinator " + again.address() +
                      " --data-dir " + data_dir_);
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("has none"), std::string::npos) << result.output;
  EXPECT_EQ(again.Signal(SIGINT), 0) << again.printed();
}

TEST_F(CoordinatorCliTest, UnreachableCoordinatorFailsWithExitTwo) {
  const CommandResult result = RunPotluck("job list --coordinator 127.0.0.1:1");
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("UNAVAILABLE"), std::string::npos) << result.output;
}

TEST_F(CoordinatorCliTest, TlsCoordinatorServesTrustingClientsOnly) {
  const std::string cert = dir_ + "/cert.pem", key = dir_ + "/key.pem";
  ASSERT_EQ(testing_util::MakeSelfSignedCertificate(cert, key), "");
  CoordinatorProcess coordinator;
  ASSERT_EQ(coordinator.Start(POTLUCK_BINARY, data_dir_, {"--tls-cert", cert, "--tls-key", key}),
            "");
  EXPECT_NE(coordinator.printed().find("(TLS)"), std::string::npos) << coordinator.printed();
  CommandResult result =
      RunPotluck("job list --coordinator " + coordinator.address() + " --tls-ca " + cert);
  EXPECT_EQ(result.exit_code, 0) << result.output;
  result = RunPotluck("job list --coordinator " + coordinator.address());
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("UNAVAILABLE"), std::string::npos) << result.output;
  EXPECT_EQ(coordinator.Signal(SIGTERM), 0) << coordinator.printed();
}

}  // namespace
}  // namespace potluck
