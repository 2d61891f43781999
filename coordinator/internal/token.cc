#include "coordinator/internal/token.h"

#include <vector>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace potluck::coordinator_internal {
namespace {

constexpr char kPrefix[] = "plk1";
constexpr size_t kMaxTokenBytes = 512;

std::string Hmac(absl::string_view key, absl::string_view message) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(message.data()), message.size(), digest, &length);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), static_cast<size_t>(length)));
}

std::string Payload(const TokenFields& fields) {
  return absl::StrCat(kPrefix, ":", fields.job_id, ":", fields.expiry_unix_s, ":", fields.token_id);
}

}  // namespace

std::string SignToken(absl::string_view key, const TokenFields& fields) {
  const std::string payload = Payload(fields);
  return absl::StrCat(payload, ":", Hmac(key, payload));
}

absl::StatusOr<TokenFields> ParseSignedToken(absl::string_view key, absl::string_view token) {
  if (token.empty()) return absl::UnauthenticatedError("no token given");
  if (token.size() > kMaxTokenBytes) {
    return absl::UnauthenticatedError(
        absl::StrCat("malformed token: ", token.size(), " bytes, at most ", kMaxTokenBytes));
  }
  std::vector<absl::string_view> parts = absl::StrSplit(token, ':');
  TokenFields fields;
  if (parts.size() != 5 || parts[0] != kPrefix || parts[1].empty() || parts[3].empty() ||
      !absl::SimpleAtoi(parts[2], &fields.expiry_unix_s)) {
    return absl::UnauthenticatedError(
        "malformed token: expected plk1:<job>:<expiry>:<id>:<signature>");
  }
  fields.job_id = std::string(parts[1]);
  fields.token_id = std::string(parts[3]);
  const std::string expected = Hmac(key, Payload(fields));
  if (parts[4].size() != expected.size() ||
      CRYPTO_memcmp(parts[4].data(), expected.data(), expected.size()) != 0) {
    return absl::UnauthenticatedError(
        absl::StrCat("token ", fields.token_id, " has a wrong signature"));
  }
  return fields;
}

absl::StatusOr<std::string> RandomBytes(size_t bytes) {
  std::string out(bytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(bytes)) != 1) {
    return absl::InternalError("OpenSSL RAND_bytes failed");
  }
  return out;
}

absl::StatusOr<std::string> RandomHex(size_t bytes) {
  auto random = RandomBytes(bytes);
  if (!random.ok()) return random.status();
  return absl::BytesToHexString(*random);
}

}  // namespace potluck::coordinator_internal
