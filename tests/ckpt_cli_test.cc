// `potluck ckpt ...` against stores made through the library.
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "checkpoint/checkpoint_store.h"
#include "tests/run_potluck.h"

namespace potluck {
namespace {

namespace fs = std::filesystem;

class CkptCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::path(::testing::TempDir()) / "ckpt-cli-XXXXXX").string();
    root_ = mkdtemp(pattern.data());
    store_dir_ = root_ + "/store";
    auto store = *CheckpointStore::Open(store_dir_);
    weights_.resize(1 << 16);
    for (size_t i = 0; i < weights_.size(); ++i) weights_[i] = static_cast<float>(i);
    for (uint64_t step : {10, 20}) {
      ASSERT_TRUE(store
                      ->Save("tiny", step,
                             {{"w", TensorView::Of(weights_.data(), weights_.size()), {256, 256}}},
                             {{"ledger", "L"}})
                      .ok());
    }
  }
  void TearDown() override { fs::remove_all(root_); }

  std::string root_, store_dir_;
  std::vector<float> weights_;
};

TEST_F(CkptCliTest, LsAndShowDescribeTheStore) {
  CommandResult result = RunPotluck("ckpt ls " + store_dir_ + " --json");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto listed = nlohmann::json::parse(result.output);
  ASSERT_EQ(listed.size(), 2u);
  EXPECT_EQ(listed[1]["job"], "tiny");
  EXPECT_EQ(listed[1]["step"], 20);
  EXPECT_EQ(listed[1]["bytes"], weights_.size() * 4 + 1);

  result = RunPotluck("ckpt show " + store_dir_ + " --json");  // the latest of the only job
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto shown = nlohmann::json::parse(result.output);
  EXPECT_EQ(shown["step"], 20);
  EXPECT_EQ(shown["entries"][0]["name"], "w");
  EXPECT_EQ(shown["entries"][0]["shape"], nlohmann::json::array({256, 256}));
  EXPECT_EQ(shown["entries"][1]["kind"], "blob");

  result = RunPotluck("ckpt show " + store_dir_ + " --step 10");
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("step 10"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("[256,256]"), std::string::npos) << result.output;

  result = RunPotluck("ckpt show " + store_dir_ + " --step 11");
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.output.find("tiny@11 does not exist"), std::string::npos) << result.output;
}

TEST_F(CkptCliTest, VerifyPassesThenFailsOnCorruptionNamingTheCheckpoint) {
  CommandResult result = RunPotluck("ckpt verify " + store_dir_);
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("tiny@10: ok"), std::string::npos) << result.output;
  for (const auto& file : fs::recursive_directory_iterator(store_dir_)) {
    if (file.path().extension() != ".chunks") continue;
    std::fstream blob(file.path(), std::ios::in | std::ios::out | std::ios::binary);
    blob.seekp(static_cast<std::streamoff>(fs::file_size(file.path()) / 2));
    blob.write("garbage!", 8);
  }
  result = RunPotluck("ckpt verify " + store_dir_ + " --json");
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("\"ok\":false"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("failed verification"), std::string::npos) << result.output;
}

TEST_F(CkptCliTest, ExportThenImportRoundTripsThroughSafetensors) {
  const std::string file = root_ + "/tiny.safetensors";
  CommandResult result = RunPotluck("ckpt export " + store_dir_ + " --job tiny --out " + file);
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const std::string other = root_ + "/other";
  result = RunPotluck("ckpt import " + other + " --job seeded --step 0 --in " + file);
  ASSERT_EQ(result.exit_code, 0) << result.output;
  auto store = *CheckpointStore::Open(other);
  auto reader = *store->OpenLatest("seeded");
  std::vector<float> loaded(weights_.size());
  ASSERT_TRUE(reader->ReadTensor("w", TensorView::Of(loaded.data(), loaded.size())).ok());
  EXPECT_EQ(loaded, weights_);
  reader.reset();
  store.reset();  // the CLI needs the store's lock

  result =
      RunPotluck("ckpt import " + other + " --job seeded --step 1 --in " + store_dir_ + "/CURRENT");
  EXPECT_EQ(result.exit_code, 2) << result.output;
  EXPECT_NE(result.output.find("INVALID_ARGUMENT"), std::string::npos) << result.output;
}

TEST_F(CkptCliTest, MissingArgumentsAreUsageErrors) {
  EXPECT_EQ(RunPotluck("ckpt").exit_code, 1);
  EXPECT_EQ(RunPotluck("ckpt ls").exit_code, 1);
  EXPECT_EQ(RunPotluck("ckpt export " + store_dir_).exit_code, 1);  // --out is required
  const CommandResult result = RunPotluck("ckpt ls " + root_ + "/nope");
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.output.find("does not exist"), std::string::npos) << result.output;
}

}  // namespace
}  // namespace potluck
