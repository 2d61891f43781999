// Stores written by earlier versions of the format must stay readable.
//
// tests/data/checkpoint-v1/ was written by format version 1 with
//   POTLUCK_WRITE_CHECKPOINT_V1=$PWD/tests/data/checkpoint-v1
//       build/tests/checkpoint_test --gtest_filter=CheckpointFormat.*
// (then LOCK and LOG* removed). Never regenerate it for a new version: add a
// new directory and a new test instead.
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "checkpoint/checkpoint_store.h"

namespace potluck {
namespace {

namespace fs = std::filesystem;

constexpr char kJob[] = "compat";
constexpr uint64_t kStep = 7;

std::vector<float> Weights() {
  std::vector<float> w(12);
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(i) - 5.5f;
  return w;
}

std::vector<BFloat16> Half() {
  std::vector<BFloat16> h(5);
  for (size_t i = 0; i < h.size(); ++i) h[i] = ToBFloat16(static_cast<float>(i) / 4);
  return h;
}

std::vector<int32_t> Big() {
  std::vector<int32_t> big(20000);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<int32_t>(i * 7919);
  return big;
}

TEST(CheckpointFormat, ReadsAStoreWrittenByVersion1) {
  if (const char* out = std::getenv("POTLUCK_WRITE_CHECKPOINT_V1")) {
    CheckpointOptions options;
    options.chunk_bytes = 4096;  // "big" has 20 chunks, the last one short
    auto store = CheckpointStore::Open(out, options);
    ASSERT_TRUE(store.ok()) << store.status();
    std::vector<float> w = Weights();
    std::vector<BFloat16> h = Half();
    std::vector<int32_t> big = Big();
    ASSERT_TRUE((*store)
                    ->Save(kJob, kStep,
                           {{"w", TensorView::Of(w.data(), w.size()), {3, 4}},
                            {"h", TensorView::Of(h.data(), h.size())},
                            {"big", TensorView::Of(big.data(), big.size())}},
                           {{"ledger", "v1-ledger"}}, {{"compat/ledger", "at-7"}})
                    .ok());
    GTEST_SKIP() << "wrote a version 1 store to " << out;
  }
  const fs::path source = fs::path(POTLUCK_SOURCE_DIR) / "tests/data/checkpoint-v1";
  ASSERT_TRUE(fs::exists(source / "CURRENT")) << source;
  // RocksDB writes into a store it opens: read a copy, never the checked-in files.
  std::string pattern = (fs::path(::testing::TempDir()) / "compat-XXXXXX").string();
  const fs::path copy = fs::path(mkdtemp(pattern.data())) / "store";
  fs::copy(source, copy, fs::copy_options::recursive);

  {
    auto store = CheckpointStore::Open(copy.string());
    ASSERT_TRUE(store.ok()) << store.status();
    EXPECT_EQ(*(*store)->ListJobs(), std::vector<std::string>{kJob});
    auto reader = (*store)->OpenLatest(kJob);
    ASSERT_TRUE(reader.ok()) << reader.status();
    EXPECT_EQ((*reader)->info().step, kStep);
    EXPECT_TRUE((*reader)->Verify().ok());
    const EntryInfo* w_info = (*reader)->info().Find("w");
    ASSERT_NE(w_info, nullptr);
    EXPECT_EQ(w_info->shape, (std::vector<int64_t>{3, 4}));
    EXPECT_EQ(w_info->num_chunks, 1u);
    EXPECT_EQ((*reader)->info().Find("big")->num_chunks, 20u);
    std::vector<float> w(12);
    ASSERT_TRUE((*reader)->ReadTensor("w", TensorView::Of(w.data(), w.size())).ok());
    EXPECT_EQ(w, Weights());
    std::vector<BFloat16> h(5);
    ASSERT_TRUE((*reader)->ReadTensor("h", TensorView::Of(h.data(), h.size())).ok());
    for (size_t i = 0; i < h.size(); ++i) EXPECT_EQ(h[i].bits, Half()[i].bits);
    std::vector<int32_t> big(20000);
    ASSERT_TRUE((*reader)->ReadTensor("big", TensorView::Of(big.data(), big.size())).ok());
    EXPECT_EQ(big, Big());
    EXPECT_EQ(*(*reader)->ReadBlob("ledger"), "v1-ledger");
    EXPECT_EQ(**(*store)->GetRecord("compat/ledger"), "at-7");
  }
  fs::remove_all(copy.parent_path());
}

}  // namespace
}  // namespace potluck
