// Token shards: the files training data lives in (docs/data-format.md).
//
// A shard is a 32-byte header (magic "PLTK", version, token width, token
// count, XXH3 of the token bytes) followed by the tokens, little-endian.
// Opening a shard checks everything the header promises, so a reader never
// serves a byte of a corrupt or truncated file; reads are by token offset,
// which is the cursor the coordinator's ledger records, so training resumes
// at exactly the token it stopped.
//
// Thread-safety: a TokenShard is immutable after Open; concurrent reads are safe.
#ifndef POTLUCK_DATA_TOKEN_SHARD_H_
#define POTLUCK_DATA_TOKEN_SHARD_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace potluck {

inline constexpr uint32_t kTokenShardVersion = 1;
inline constexpr size_t kTokenShardHeaderBytes = 32;

// Writes `tokens` as a shard of `token_bytes`-wide tokens (1, 2 or 4) to
// `path`, atomically (a temporary file renamed into place). Tokens must fit
// the width. Returns the checksum stored in the header.
absl::StatusOr<uint64_t> WriteTokenShard(const std::string& path, absl::Span<const uint32_t> tokens,
                                         uint32_t token_bytes);

class TokenShard {
 public:
  // Reads and verifies the whole shard: kDataLoss naming the file for a bad
  // magic, a truncated file or a checksum mismatch; kInvalidArgument for a
  // token at or past `vocab_size` (0 = no check) or an unknown width.
  static absl::StatusOr<std::unique_ptr<TokenShard>> Open(const std::string& path,
                                                          uint32_t vocab_size = 0);

  const std::string& path() const { return path_; }
  uint64_t size() const { return tokens_.size(); }
  uint64_t checksum() const { return checksum_; }

  // Tokens [offset, offset + out.size()); kOutOfRange past the end.
  absl::Status Read(uint64_t offset, absl::Span<uint32_t> out) const;

 private:
  TokenShard(std::string path, std::vector<uint32_t> tokens, uint64_t checksum)
      : path_(std::move(path)), tokens_(std::move(tokens)), checksum_(checksum) {}

  const std::string path_;
  const std::vector<uint32_t> tokens_;
  const uint64_t checksum_;
};

// Serves fixed-length training sequences from one shard: each is
// `sequence_length + 1` tokens (inputs, and targets shifted by one), the next
// starting `sequence_length` tokens later. The cursor is a token offset.
class SequenceReader {
 public:
  SequenceReader(const TokenShard* shard, uint32_t sequence_length, uint64_t cursor = 0)
      : shard_(shard), sequence_length_(sequence_length), cursor_(cursor) {}

  uint64_t cursor() const { return cursor_; }
  // Whether a whole sequence is left from the cursor.
  bool HasNext() const { return cursor_ + sequence_length_ + 1 <= shard_->size(); }
  // The next sequence into `out` (sequence_length + 1 tokens); advances the cursor.
  absl::Status Next(absl::Span<uint32_t> out);

 private:
  const TokenShard* shard_;  // not owned; outlives the reader
  const uint32_t sequence_length_;
  uint64_t cursor_;
};

}  // namespace potluck

#endif  // POTLUCK_DATA_TOKEN_SHARD_H_
