#include "checkpoint/safetensors_interop.h"

#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "checkpoint/safetensors.h"

namespace potluck {
namespace {

class InteropTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (std::filesystem::path(::testing::TempDir()) / "interop-XXXXXX").string();
    dir_ = mkdtemp(pattern.data());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(InteropTest, ExportThenImportGivesTheSameTensors) {
  CheckpointOptions options;
  options.chunk_bytes = 1000;
  auto store = *CheckpointStore::Open(dir_ + "/store", options);
  std::vector<float> w(5000);
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(i) * 0.5f;
  std::vector<BFloat16> b(333);
  for (size_t i = 0; i < b.size(); ++i) b[i] = ToBFloat16(static_cast<float>(i));
  ASSERT_TRUE(store
                  ->Save("src", 12,
                         {{"layer.0.w", TensorView::Of(w.data(), w.size()), {50, 100}},
                          {"layer.0.b", TensorView::Of(b.data(), b.size())}},
                         {{"ledger", "not a tensor"}})
                  .ok());
  const std::string file = dir_ + "/model.safetensors";
  ASSERT_TRUE(ExportSafetensors(**store->OpenCheckpoint("src", 12), file).ok());

  auto exported = SafetensorsReader::Open(file);
  ASSERT_TRUE(exported.ok()) << exported.status();
  EXPECT_EQ((*exported)->entries().size(), 2u);  // the blob is not a tensor
  EXPECT_EQ((*exported)->metadata().at("potluck.job"), "src");
  EXPECT_EQ((*exported)->metadata().at("potluck.step"), "12");
  const SafetensorsEntry* entry = (*exported)->Find("layer.0.w");
  ASSERT_NE(entry, nullptr);
  EXPECT_EQ(entry->shape, (std::vector<int64_t>{50, 100}));

  ASSERT_TRUE(ImportSafetensors(file, *store, "seeded", 0).ok());
  auto reader = *store->OpenCheckpoint("seeded", 0);
  std::vector<float> loaded_w(w.size());
  ASSERT_TRUE(reader->ReadTensor("layer.0.w", TensorView::Of(loaded_w.data(), w.size())).ok());
  EXPECT_EQ(loaded_w, w);
  EXPECT_EQ(reader->info().Find("layer.0.w")->shape, (std::vector<int64_t>{50, 100}));
  std::vector<BFloat16> loaded_b(b.size());
  ASSERT_TRUE(reader->ReadTensor("layer.0.b", TensorView::Of(loaded_b.data(), b.size())).ok());
  for (size_t i = 0; i < b.size(); ++i) ASSERT_EQ(loaded_b[i].bits, b[i].bits);
}

TEST_F(InteropTest, ImportingAMalformedFileSavesNothing) {
  auto store = *CheckpointStore::Open(dir_ + "/store");
  const std::string file = dir_ + "/bad.safetensors";
  FILE* out = fopen(file.c_str(), "wb");
  const uint64_t header_bytes = 1000;  // past the end of the file
  fwrite(&header_bytes, sizeof(header_bytes), 1, out);
  fputs("{}", out);
  fclose(out);
  const absl::Status status = ImportSafetensors(file, *store, "j", 0);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(store->ListSteps("j")->empty());
}

}  // namespace
}  // namespace potluck
