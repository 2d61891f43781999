#include "checkpoint/checkpoint_bench.h"

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

namespace potluck {
namespace {

namespace fs = std::filesystem;

// Only the fadvise method is exercised: drop_caches would empty the page
// cache of the whole (shared) machine from inside a unit test.
class CheckpointBenchCacheDropperTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::path(::testing::TempDir()) / "dropper-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { fs::remove_all(dir_); }

  void WriteFile(const fs::path& path) {
    fs::create_directories(path.parent_path());
    std::ofstream(path) << "bytes";
  }

  fs::path dir_;
};

TEST_F(CheckpointBenchCacheDropperTest, FadviseSaysWhyInItsDescription) {
  const CacheDropper dropper = CacheDropper::Fadvise("not root");
  EXPECT_EQ(dropper.method(), CacheDropper::Method::kFadvise);
  EXPECT_EQ(dropper.description(), "fadvise only (not root)");
}

TEST_F(CheckpointBenchCacheDropperTest, FadviseReachesEveryFileUnderADirectory) {
  WriteFile(dir_ / "store" / "CURRENT");
  WriteFile(dir_ / "store" / "data" / "job" / "00000000000000000001.chunks");
  EXPECT_TRUE(CacheDropper::Fadvise("test").Drop((dir_ / "store").string()).ok());
  WriteFile(dir_ / "other.bin");
  EXPECT_TRUE(CacheDropper::Fadvise("test").Drop((dir_ / "other.bin").string()).ok());
}

TEST_F(CheckpointBenchCacheDropperTest, FadviseOnAMissingFileIsNotFound) {
  EXPECT_EQ(CacheDropper::Fadvise("test").Drop((dir_ / "missing.bin").string()).code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace potluck
