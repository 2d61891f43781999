#include "data/token_shard.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

#include "common/checksum.h"
#include "common/little_endian.h"
#include "common/status.h"

namespace potluck {

namespace {

bool ValidWidth(uint32_t token_bytes) {
  return token_bytes == 1 || token_bytes == 2 || token_bytes == 4;
}

}  // namespace

absl::StatusOr<uint64_t> WriteTokenShard(const std::string& path, absl::Span<const uint32_t> tokens,
                                         uint32_t token_bytes) {
  if (!ValidWidth(token_bytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat("token width ", token_bytes, " is not 1, 2 or 4"));
  }
  std::string body;
  body.reserve(tokens.size() * token_bytes);
  const uint64_t limit =
      token_bytes == 4 ? (uint64_t{1} << 32) : (uint64_t{1} << (8 * token_bytes));
  for (uint32_t token : tokens) {
    if (token >= limit) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": token ", token, " does not fit in ", token_bytes, " bytes"));
    }
    AppendLittleEndian(&body, token, static_cast<int>(token_bytes));
  }
  const uint64_t checksum = Checksum64(body);
  std::string header = "PLTK";
  AppendLittleEndian(&header, kTokenShardVersion, 4);
  AppendLittleEndian(&header, token_bytes, 4);
  AppendLittleEndian(&header, 0, 4);
  AppendLittleEndian(&header, tokens.size(), 8);
  AppendLittleEndian(&header, checksum, 8);
  const std::string temp = path + ".tmp";
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    out.write(body.data(), static_cast<std::streamsize>(body.size()));
    if (!out) return absl::UnavailableError(absl::StrCat("writing ", temp));
  }
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    return ErrnoStatus(errno, absl::StrCat("renaming ", temp, " to ", path));
  }
  return checksum;
}

absl::StatusOr<std::unique_ptr<TokenShard>> TokenShard::Open(const std::string& path,
                                                             uint32_t vocab_size) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("token shard ", path, " cannot be opened"));
  std::ostringstream contents;
  contents << in.rdbuf();
  const std::string bytes = contents.str();
  if (bytes.size() < kTokenShardHeaderBytes || bytes.compare(0, 4, "PLTK") != 0) {
    return absl::DataLossError(absl::StrCat(path, ": not a potluck token shard (bad magic)"));
  }
  const uint64_t version = ReadLittleEndian(bytes.data() + 4, 4);
  const uint32_t token_bytes = static_cast<uint32_t>(ReadLittleEndian(bytes.data() + 8, 4));
  const uint64_t count = ReadLittleEndian(bytes.data() + 16, 8);
  const uint64_t checksum = ReadLittleEndian(bytes.data() + 24, 8);
  if (version != kTokenShardVersion) {
    return absl::DataLossError(absl::StrCat(path, ": token shard version ", version,
                                            " (this build reads ", kTokenShardVersion, ")"));
  }
  if (!ValidWidth(token_bytes)) {
    return absl::DataLossError(
        absl::StrCat(path, ": token width ", token_bytes, " is not 1, 2 or 4"));
  }
  const uint64_t body_bytes = bytes.size() - kTokenShardHeaderBytes;
  if (count > body_bytes / token_bytes || count * token_bytes != body_bytes) {
    return absl::DataLossError(absl::StrCat(path, ": the header promises ", count,
                                            " tokens, the file holds ", body_bytes, " bytes"));
  }
  const char* body = bytes.data() + kTokenShardHeaderBytes;
  if (Checksum64(body, body_bytes) != checksum) {
    return absl::DataLossError(absl::StrCat(path, ": checksum mismatch"));
  }
  std::vector<uint32_t> tokens(count);
  for (uint64_t i = 0; i < count; ++i) {
    tokens[i] = static_cast<uint32_t>(
        ReadLittleEndian(body + i * token_bytes, static_cast<int>(token_bytes)));
    if (vocab_size != 0 && tokens[i] >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": token ", tokens[i], " at ", i,
                                                     " is outside the vocabulary of ", vocab_size));
    }
  }
  return std::unique_ptr<TokenShard>(new TokenShard(path, std::move(tokens), checksum));
}

absl::Status TokenShard::Read(uint64_t offset, absl::Span<uint32_t> out) const {
  if (offset > tokens_.size() || out.size() > tokens_.size() - offset) {
    return absl::OutOfRangeError(absl::StrCat(path_, ": tokens [", offset, ", +", out.size(),
                                              ") are past its ", tokens_.size()));
  }
  std::memcpy(out.data(), tokens_.data() + offset, out.size() * sizeof(uint32_t));
  return absl::OkStatus();
}

absl::Status SequenceReader::Next(absl::Span<uint32_t> out) {
  if (out.size() != sequence_length_ + 1) {
    return absl::InvalidArgumentError(absl::StrCat("a sequence takes ", sequence_length_ + 1,
                                                   " tokens, the buffer ", out.size()));
  }
  RETURN_IF_ERROR(shard_->Read(cursor_, out));
  cursor_ += sequence_length_;
  return absl::OkStatus();
}

}  // namespace potluck
