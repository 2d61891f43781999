#include "checkpoint/async_saver.h"

#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace potluck {
namespace {

class AsyncSaverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (std::filesystem::path(::testing::TempDir()) / "async-XXXXXX").string();
    dir_ = mkdtemp(pattern.data());
    store_ = std::move(*CheckpointStore::Open(dir_));
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }

  std::vector<float> Load(uint64_t step) {
    auto reader = *store_->OpenCheckpoint("j", step);
    std::vector<float> values(reader->info().Find("w")->count());
    EXPECT_TRUE(reader->ReadTensor("w", TensorView::Of(values.data(), values.size())).ok());
    return values;
  }

  std::string dir_;
  std::unique_ptr<CheckpointStore> store_;
};

TEST_F(AsyncSaverTest, SavesTheStateAsItWasAtStart) {
  AsyncCheckpointSaver saver(store_.get());
  std::vector<float> weights(1 << 20, 1.0f);
  std::string rng = "state-1";
  ASSERT_TRUE(saver
                  .Start("j", 1, {{"w", TensorView::Of(weights.data(), weights.size())}},
                         {{"rng", rng}}, {{"ledger", "L1"}})
                  .ok());
  rng = "state-2";  // blobs are copied by Start itself
  saver.WaitForSnapshot();
  std::fill(weights.begin(), weights.end(), 2.0f);  // the next optimizer step
  ASSERT_TRUE(saver.Wait().ok());
  EXPECT_FALSE(saver.InFlight());
  EXPECT_EQ(Load(1), std::vector<float>(1 << 20, 1.0f));
  EXPECT_EQ(*(*store_->OpenCheckpoint("j", 1))->ReadBlob("rng"), "state-1");
  EXPECT_EQ(**store_->GetRecord("ledger"), "L1");
}

TEST_F(AsyncSaverTest, BackToBackStartsSaveEachInOrder) {
  AsyncCheckpointSaver saver(store_.get());
  std::vector<float> weights(1 << 18);
  for (uint64_t step = 1; step <= 5; ++step) {
    std::fill(weights.begin(), weights.end(), static_cast<float>(step));
    ASSERT_TRUE(
        saver.Start("j", step, {{"w", TensorView::Of(weights.data(), weights.size())}}).ok());
    saver.WaitForSnapshot();  // before changing the weights
  }
  ASSERT_TRUE(saver.Wait().ok());
  EXPECT_EQ(*store_->ListSteps("j"), (std::vector<uint64_t>{1, 2, 3, 4, 5}));
  for (uint64_t step = 1; step <= 5; ++step) {
    EXPECT_EQ(Load(step), std::vector<float>(1 << 18, static_cast<float>(step)));
  }
}

TEST_F(AsyncSaverTest, FailureIsReportedByWaitOrTheNextStart) {
  std::vector<float> weights(16, 1.0f);
  const TensorToSave tensor{"w", TensorView::Of(weights.data(), weights.size()), {}};
  ASSERT_TRUE(store_->Save("j", 1, {tensor}).ok());
  AsyncCheckpointSaver saver(store_.get());

  ASSERT_TRUE(saver.Start("j", 1, {tensor}).ok());  // step 1 exists: this save will fail
  EXPECT_EQ(saver.Wait().code(), absl::StatusCode::kAlreadyExists);

  ASSERT_TRUE(saver.Start("j", 1, {tensor}).ok());
  // Not collected with Wait(): the next Start reports it and starts nothing.
  const absl::Status next = saver.Start("j", 2, {tensor});
  EXPECT_EQ(next.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_NE(next.message().find("previous checkpoint save failed"), absl::string_view::npos);
  EXPECT_FALSE(saver.InFlight());
  EXPECT_EQ(*store_->ListSteps("j"), std::vector<uint64_t>{1});
  ASSERT_TRUE(saver.Start("j", 2, {tensor}).ok());
  EXPECT_TRUE(saver.Wait().ok());
  EXPECT_EQ(*store_->ListSteps("j"), (std::vector<uint64_t>{1, 2}));
}

TEST_F(AsyncSaverTest, DestructorFinishesTheSaveInFlight) {
  std::vector<float> weights(1 << 20, 3.0f);
  {
    AsyncCheckpointSaver saver(store_.get());
    ASSERT_TRUE(saver.Start("j", 9, {{"w", TensorView::Of(weights.data(), weights.size())}}).ok());
  }
  EXPECT_EQ(Load(9), weights);
}

}  // namespace
}  // namespace potluck
