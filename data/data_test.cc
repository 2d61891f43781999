#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "data/dataset.h"
#include "data/token_shard.h"

namespace potluck {
namespace {

namespace fs = std::filesystem;

class DataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::path(::testing::TempDir()) / "data-XXXXXX").string();
    dir_ = mkdtemp(pattern.data());
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }
  std::string dir_;
};

TEST_F(DataTest, ShardRoundTripsEveryWidth) {
  for (uint32_t width : {1u, 2u, 4u}) {
    std::vector<uint32_t> tokens = {0, 1, 200, 255};
    if (width > 1) tokens.push_back(65535);
    if (width > 2) tokens.push_back(4000000000u);
    const std::string path = Path("w" + std::to_string(width) + ".tok");
    ASSERT_TRUE(WriteTokenShard(path, tokens, width).ok());
    auto shard = TokenShard::Open(path);
    ASSERT_TRUE(shard.ok()) << shard.status();
    std::vector<uint32_t> back(tokens.size());
    ASSERT_TRUE((*shard)->Read(0, absl::MakeSpan(back)).ok());
    EXPECT_EQ(back, tokens);
    EXPECT_EQ(fs::file_size(path), kTokenShardHeaderBytes + tokens.size() * width);
  }
  EXPECT_EQ(WriteTokenShard(Path("x.tok"), {256}, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Malformed shards name the file and never hand out a byte.
TEST_F(DataTest, MalformedShardsAreRejectedNamingTheFile) {
  const std::string path = Path("good.tok");
  ASSERT_TRUE(WriteTokenShard(path, std::vector<uint32_t>(1000, 7), 1).ok());
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto write = [&](const std::string& name, const std::string& contents) {
    std::ofstream(Path(name), std::ios::binary) << contents;
    return Path(name);
  };
  std::string bad_magic = bytes;
  bad_magic[0] = 'X';
  std::string flipped = bytes;
  flipped[500] ^= 1;
  const struct {
    std::string file;
    absl::StatusCode code;
    const char* reason;
  } cases[] = {
      {write("magic.tok", bad_magic), absl::StatusCode::kDataLoss, "bad magic"},
      {write("short.tok", bytes.substr(0, 600)), absl::StatusCode::kDataLoss, "promises"},
      {write("header.tok", bytes.substr(0, 10)), absl::StatusCode::kDataLoss, "bad magic"},
      {write("flipped.tok", flipped), absl::StatusCode::kDataLoss, "checksum"},
  };
  for (const auto& c : cases) {
    const auto shard = TokenShard::Open(c.file);
    EXPECT_EQ(shard.status().code(), c.code) << c.file << ": " << shard.status();
    EXPECT_NE(shard.status().message().find(c.file), absl::string_view::npos) << shard.status();
    EXPECT_NE(shard.status().message().find(c.reason), absl::string_view::npos) << shard.status();
  }
  const auto vocabulary = TokenShard::Open(path, /*vocab_size=*/5);
  EXPECT_EQ(vocabulary.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(vocabulary.status().message().find("vocabulary"), absl::string_view::npos);
}

// A reader restarted at a saved cursor serves exactly what the original
// would have served next: training resumes on the same tokens.
TEST_F(DataTest, SequenceReaderResumesAtItsCursor) {
  std::vector<uint32_t> tokens(1000);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = i % 251;
  ASSERT_TRUE(WriteTokenShard(Path("s.tok"), tokens, 1).ok());
  auto shard = *TokenShard::Open(Path("s.tok"));
  SequenceReader first(shard.get(), 64);
  std::vector<uint32_t> sequence(65);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(first.Next(absl::MakeSpan(sequence)).ok());
  const uint64_t saved = first.cursor();
  EXPECT_EQ(saved, 5u * 64);
  std::vector<std::vector<uint32_t>> expected, resumed;
  while (first.HasNext()) {
    ASSERT_TRUE(first.Next(absl::MakeSpan(sequence)).ok());
    expected.push_back(sequence);
  }
  SequenceReader second(shard.get(), 64, saved);
  while (second.HasNext()) {
    ASSERT_TRUE(second.Next(absl::MakeSpan(sequence)).ok());
    resumed.push_back(sequence);
  }
  EXPECT_EQ(resumed, expected);
  EXPECT_FALSE(expected.empty());
  // Targets are the inputs shifted by one.
  EXPECT_EQ(expected[0][1], tokens[saved + 1]);
}

TEST_F(DataTest, PreparesTheBuiltInCorpusWithAValidationSplit) {
  auto files = DefaultCorpusFiles();
  if (!files.ok()) GTEST_SKIP() << files.status();
  PrepareOptions options;
  options.out_dir = Path("corpus");
  options.shard_tokens = 50000;
  auto prepared = PrepareDataset(options);
  ASSERT_TRUE(prepared.ok()) << prepared.status();
  EXPECT_EQ(prepared->sources, *files);
  auto loaded = LoadDataset(options.out_dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->vocab_size, 256u);
  EXPECT_GT(loaded->train.size(), 1u);
  EXPECT_EQ(loaded->validation.size(), 1u);
  uint64_t corpus_bytes = 0;
  for (const std::string& file : *files) corpus_bytes += fs::file_size(file) + 1;
  uint64_t validation_tokens = 0;
  for (const ShardInfo& shard : loaded->validation) validation_tokens += shard.tokens;
  EXPECT_EQ(loaded->train_tokens() + validation_tokens, corpus_bytes);
  EXPECT_NEAR(double(validation_tokens) / corpus_bytes, 0.05, 0.001);
  for (const ShardInfo& info : loaded->train) {
    auto shard = TokenShard::Open(options.out_dir + "/" + info.file, loaded->vocab_size);
    ASSERT_TRUE(shard.ok()) << shard.status();
    EXPECT_EQ((*shard)->size(), info.tokens);
    EXPECT_EQ((*shard)->checksum(), info.checksum);
    // A short last piece is folded into the shard before it.
    EXPECT_GE(info.tokens, 25000u);
    EXPECT_LT(info.tokens, 75000u);
  }
}

TEST_F(DataTest, MalformedManifestIsDataLossNamingTheProblem) {
  fs::create_directories(Path("m"));
  std::ofstream(Path("m/manifest.json"))
      << R"({"format":"potluck-dataset","version":1,"token_bytes":1,"vocab_size":256,
            "train":[{"file":"../../etc/passwd","tokens":1,"checksum":"00"}],"validation":[]})";
  auto loaded = LoadDataset(Path("m"));
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(loaded.status().message().find("plain name"), absl::string_view::npos)
      << loaded.status();
  EXPECT_EQ(LoadDataset(Path("nothing")).status().code(), absl::StatusCode::kNotFound);
  // A field of the wrong type is data loss, not an exception out of the JSON
  // library (fuzz/corpus/dataset/regress-format-is-a-number).
  for (const char* manifest : {R"({"format": 2})", R"({"format":"potluck-dataset","version":"1"})",
                               R"({"format":"potluck-dataset","version":1,"token_bytes":-1})",
                               R"({"format":"potluck-dataset","version":1,"token_bytes":1,
                                   "vocab_size":4294967552,"train":[],"validation":[]})"}) {
    std::ofstream(Path("m/manifest.json"), std::ios::trunc) << manifest;
    EXPECT_EQ(LoadDataset(Path("m")).status().code(), absl::StatusCode::kDataLoss) << manifest;
  }
}

}  // namespace
}  // namespace potluck
