#include "data/dataset.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

#include "common/status.h"
#include "data/token_shard.h"

namespace potluck {

namespace {

namespace fs = std::filesystem;

absl::Status WriteShards(const std::string& dir, const std::string& prefix,
                         const std::vector<uint32_t>& tokens, uint64_t begin, uint64_t end,
                         uint64_t shard_tokens, std::vector<ShardInfo>* shards) {
  uint64_t stop = begin;
  for (uint64_t start = begin, index = 0; start < end; start = stop, ++index) {
    stop = std::min(end, start + shard_tokens);
    // A last piece shorter than half a shard joins this one: no tiny shard
    // that a job's sequences could not fill.
    if (end - stop < shard_tokens / 2) stop = end;
    ShardInfo shard;
    shard.file = absl::StrFormat("%s-%05d.tok", prefix, index);
    shard.tokens = stop - start;
    ASSIGN_OR_RETURN(shard.checksum,
                     WriteTokenShard(absl::StrCat(dir, "/", shard.file),
                                     absl::MakeConstSpan(tokens.data() + start, stop - start), 1));
    shards->push_back(shard);
  }
  return absl::OkStatus();
}

nlohmann::json ShardsJson(const std::vector<ShardInfo>& shards) {
  nlohmann::json out = nlohmann::json::array();
  for (const ShardInfo& shard : shards) {
    out.push_back({{"file", shard.file},
                   {"tokens", shard.tokens},
                   {"checksum", absl::StrFormat("%016x", shard.checksum)}});
  }
  return out;
}

// A manifest field of the wrong type reads as missing: nlohmann's value()
// would throw out of LoadDataset instead (found by fuzz/dataset_fuzzer.cc).
std::string StringField(const nlohmann::json& json, const char* key) {
  const auto it = json.find(key);
  return it != json.end() && it->is_string() ? it->get<std::string>() : "";
}

uint64_t UnsignedField(const nlohmann::json& json, const char* key) {
  const auto it = json.find(key);
  return it != json.end() && it->is_number_unsigned() ? it->get<uint64_t>() : 0;
}

absl::StatusOr<std::vector<ShardInfo>> ParseShards(const nlohmann::json& json, const char* field,
                                                   const std::string& where) {
  if (!json.contains(field) || !json[field].is_array()) {
    return absl::DataLossError(absl::StrCat(where, ": '", field, "' must be an array"));
  }
  std::vector<ShardInfo> shards;
  for (const nlohmann::json& entry : json[field]) {
    if (!entry.is_object() || !entry.contains("file") || !entry["file"].is_string() ||
        !entry.contains("tokens") || !entry["tokens"].is_number_unsigned() ||
        !entry.contains("checksum") || !entry["checksum"].is_string()) {
      return absl::DataLossError(
          absl::StrCat(where, ": every '", field, "' entry needs file, tokens and checksum"));
    }
    ShardInfo shard;
    shard.file = entry["file"].get<std::string>();
    if (shard.file.find('/') != std::string::npos || shard.file.rfind("..", 0) == 0) {
      return absl::DataLossError(absl::StrCat(where, ": shard file '", shard.file,
                                              "' must be a plain name in the dataset directory"));
    }
    shard.tokens = entry["tokens"].get<uint64_t>();
    if (!absl::SimpleHexAtoi(entry["checksum"].get<std::string>(), &shard.checksum)) {
      return absl::DataLossError(
          absl::StrCat(where, ": shard '", shard.file, "' has a bad checksum"));
    }
    shards.push_back(shard);
  }
  return shards;
}

}  // namespace

uint64_t Dataset::train_tokens() const {
  uint64_t total = 0;
  for (const ShardInfo& shard : train) total += shard.tokens;
  return total;
}

absl::StatusOr<std::vector<std::string>> DefaultCorpusFiles() {
  std::vector<std::string> files;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(kDefaultCorpusDir, error)) {
    if (entry.is_regular_file()) files.push_back(entry.path().string());
  }
  if (error || files.empty()) {
    return absl::NotFoundError(absl::StrCat("the built-in corpus needs the files in ",
                                            kDefaultCorpusDir, " (Debian's base-files)"));
  }
  std::sort(files.begin(), files.end());
  return files;
}

absl::StatusOr<Dataset> PrepareDataset(const PrepareOptions& options) {
  if (options.shard_tokens == 0 || !(options.validation_fraction >= 0) ||
      options.validation_fraction >= 1) {
    return absl::InvalidArgumentError(
        "shard_tokens must be positive and validation_fraction in [0, 1)");
  }
  Dataset dataset;
  dataset.dir = options.out_dir;
  if (options.inputs.empty()) {
    ASSIGN_OR_RETURN(dataset.sources, DefaultCorpusFiles());
  } else {
    dataset.sources = options.inputs;
  }
  std::vector<uint32_t> tokens;
  for (const std::string& source : dataset.sources) {
    std::ifstream in(source, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot read input ", source));
    std::ostringstream text;
    text << in.rdbuf();
    for (unsigned char byte : text.str()) tokens.push_back(byte);
    tokens.push_back('\n');  // files never run into each other
  }
  std::error_code error;
  fs::create_directories(options.out_dir, error);
  if (error)
    return absl::UnavailableError(
        absl::StrCat("creating ", options.out_dir, ": ", error.message()));
  const uint64_t validation = static_cast<uint64_t>(tokens.size() * options.validation_fraction);
  const uint64_t split = tokens.size() - validation;
  RETURN_IF_ERROR(WriteShards(options.out_dir, "train", tokens, 0, split, options.shard_tokens,
                              &dataset.train));
  RETURN_IF_ERROR(WriteShards(options.out_dir, "validation", tokens, split, tokens.size(),
                              options.shard_tokens, &dataset.validation));
  const nlohmann::json manifest = {
      {"format", "potluck-dataset"},        {"version", 1},
      {"token_bytes", dataset.token_bytes}, {"vocab_size", dataset.vocab_size},
      {"train", ShardsJson(dataset.train)}, {"validation", ShardsJson(dataset.validation)},
      {"sources", dataset.sources}};
  std::ofstream out(absl::StrCat(options.out_dir, "/", kManifestFile), std::ios::trunc);
  out << manifest.dump(2) << "\n";
  if (!out)
    return absl::UnavailableError(absl::StrCat("writing the manifest in ", options.out_dir));
  return dataset;
}

absl::StatusOr<Dataset> LoadDataset(const std::string& dir) {
  const std::string path = absl::StrCat(dir, "/", kManifestFile);
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("no dataset manifest at ", path));
  const nlohmann::json json = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object() ||
      StringField(json, "format") != "potluck-dataset") {
    return absl::DataLossError(absl::StrCat(path, " is not a potluck dataset manifest"));
  }
  if (UnsignedField(json, "version") != 1) {
    return absl::DataLossError(absl::StrCat(path, ": unsupported manifest version"));
  }
  const uint64_t token_bytes = UnsignedField(json, "token_bytes");
  const uint64_t vocab_size = UnsignedField(json, "vocab_size");
  if (token_bytes != 1 || vocab_size == 0 || vocab_size > 256) {
    return absl::DataLossError(absl::StrCat(path, ": token_bytes/vocab_size out of range"));
  }
  Dataset dataset;
  dataset.dir = dir;
  dataset.token_bytes = static_cast<uint32_t>(token_bytes);
  dataset.vocab_size = static_cast<uint32_t>(vocab_size);
  ASSIGN_OR_RETURN(dataset.train, ParseShards(json, "train", path));
  ASSIGN_OR_RETURN(dataset.validation, ParseShards(json, "validation", path));
  if (json.contains("sources") && json["sources"].is_array()) {
    for (const auto& source : json["sources"]) {
      if (source.is_string()) dataset.sources.push_back(source.get<std::string>());
    }
  }
  return dataset;
}

}  // namespace potluck
