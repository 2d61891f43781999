// Datasets: byte-level token shards prepared from text, and the manifest the
// coordinator's shard ledger is built from.
//
// `potluck data prepare` turns text files into shards of `shard_tokens`
// tokens, one token per byte (vocabulary 256, no tokenizer to download), and
// holds out the tail of the corpus as a validation split. Without inputs it
// uses the built-in corpus: every file under /usr/share/common-licenses,
// which every Debian machine has, in name order (docs/data-format.md).
//
// Thread-safety: stateless functions; a Dataset is a value.
#ifndef POTLUCK_DATA_DATASET_H_
#define POTLUCK_DATA_DATASET_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace potluck {

inline constexpr char kDefaultCorpusDir[] = "/usr/share/common-licenses";
inline constexpr char kManifestFile[] = "manifest.json";

struct ShardInfo {
  std::string file;  // relative to the dataset directory
  uint64_t tokens = 0;
  uint64_t checksum = 0;
};

struct Dataset {
  std::string dir;
  uint32_t token_bytes = 1;
  uint32_t vocab_size = 256;
  std::vector<ShardInfo> train;
  std::vector<ShardInfo> validation;
  std::vector<std::string> sources;

  uint64_t train_tokens() const;
};

struct PrepareOptions {
  std::vector<std::string> inputs;  // empty: the built-in corpus
  std::string out_dir;
  uint64_t shard_tokens = 1 << 20;
  double validation_fraction = 0.05;
};

// Writes the shards and manifest.json into out_dir (created if needed).
absl::StatusOr<Dataset> PrepareDataset(const PrepareOptions& options);

// Reads dir/manifest.json; kDataLoss naming the field for a malformed one.
absl::StatusOr<Dataset> LoadDataset(const std::string& dir);

// The built-in corpus's files, in the order they are concatenated.
absl::StatusOr<std::vector<std::string>> DefaultCorpusFiles();

}  // namespace potluck

#endif  // POTLUCK_DATA_DATASET_H_
