#include "worker/data_feed.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

#include "common/status.h"

namespace potluck {

absl::StatusOr<std::unique_ptr<DataFeed>> DataFeed::Open(const Dataset& dataset, Split split,
                                                         uint32_t context_length) {
  if (context_length == 0) return absl::InvalidArgumentError("context_length must be > 0");
  const auto& infos = split == Split::kTrain ? dataset.train : dataset.validation;
  std::vector<std::unique_ptr<TokenShard>> shards;
  for (const ShardInfo& info : infos) {
    ASSIGN_OR_RETURN(auto shard,
                     TokenShard::Open(dataset.dir + "/" + info.file, dataset.vocab_size));
    shards.push_back(std::move(shard));
  }
  std::unique_ptr<DataFeed> feed(new DataFeed(std::move(shards), context_length));
  if (feed->sequences_per_epoch_ == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("the ", split == Split::kTrain ? "training" : "validation", " split of ",
                     dataset.dir, " holds no sequence of ", context_length + 1, " tokens"));
  }
  return feed;
}

DataFeed::DataFeed(std::vector<std::unique_ptr<TokenShard>> shards, uint32_t context_length)
    : shards_(std::move(shards)), context_length_(context_length) {
  for (const auto& shard : shards_) {
    if (shard->size() > context_length_) {
      sequences_per_epoch_ += (shard->size() - 1) / context_length_;
    }
  }
}

bool DataFeed::FitsSequence(const DataCursor& c) const {
  return c.shard < shards_.size() && c.offset + context_length_ + 1 <= shards_[c.shard]->size();
}

absl::StatusOr<Batch> DataFeed::Next(int64_t sequences) {
  if (sequences <= 0) return absl::InvalidArgumentError("a batch needs at least one sequence");
  const int64_t width = context_length_ + 1;
  std::vector<uint32_t> tokens(static_cast<size_t>(sequences * width));
  for (int64_t s = 0; s < sequences; ++s) {
    while (!FitsSequence(cursor_)) {
      cursor_.offset = 0;
      if (++cursor_.shard >= shards_.size()) {
        cursor_.shard = 0;
        ++cursor_.epoch;
      }
    }
    SequenceReader reader(shards_[cursor_.shard].get(), context_length_, cursor_.offset);
    RETURN_IF_ERROR(reader.Next(absl::MakeSpan(tokens).subspan(s * width, width)));
    cursor_.offset = reader.cursor();
  }
  torch::Tensor all = torch::from_blob(tokens.data(), {sequences * width}, torch::kInt32)
                          .to(torch::kLong)
                          .view({sequences, width});
  return Batch{all.narrow(1, 0, width - 1).contiguous(), all.narrow(1, 1, width - 1).contiguous()};
}

absl::Status DataFeed::Seek(const DataCursor& cursor) {
  if (cursor.shard > shards_.size() ||
      (cursor.shard < shards_.size() && cursor.offset > shards_[cursor.shard]->size())) {
    return absl::OutOfRangeError(absl::StrCat("cursor shard ", cursor.shard, " offset ",
                                              cursor.offset, " is past the data"));
  }
  cursor_ = cursor;
  return absl::OkStatus();
}

std::string DataFeed::CursorToJson(const DataCursor& c) {
  return nlohmann::json{{"epoch", c.epoch}, {"shard", c.shard}, {"offset", c.offset}}.dump();
}

absl::StatusOr<DataCursor> DataFeed::CursorFromJson(const std::string& text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  DataCursor c;
  try {
    c.epoch = j.at("epoch").get<uint64_t>();
    c.shard = j.at("shard").get<uint32_t>();
    c.offset = j.at("offset").get<uint64_t>();
  } catch (const nlohmann::json::exception& e) {
    return absl::DataLossError(absl::StrCat("data cursor '", text, "': ", e.what()));
  }
  return c;
}

}  // namespace potluck
