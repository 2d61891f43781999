// Join and admin tokens: "plk1:<job>:<expiry unix s>:<token id>:<HMAC-SHA256
// hex>", signed with the coordinator's key over everything before the last
// ':'. The admin token's job is "*". Private to coordinator/; revocation and
// expiry are checked by the Coordinator against its records and clock.
//
// Thread-safety: stateless functions.
#ifndef POTLUCK_COORDINATOR_INTERNAL_TOKEN_H_
#define POTLUCK_COORDINATOR_INTERNAL_TOKEN_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace potluck::coordinator_internal {

inline constexpr char kAdminJob[] = "*";
inline constexpr size_t kSigningKeyBytes = 32;

struct TokenFields {
  std::string job_id;
  int64_t expiry_unix_s = 0;
  std::string token_id;
};

std::string SignToken(absl::string_view key, const TokenFields& fields);

// Parses `token` and checks its signature (in constant time). kUnauthenticated
// for a malformed token or a wrong signature; expiry, revocation and the job
// are for the caller to check.
absl::StatusOr<TokenFields> ParseSignedToken(absl::string_view key, absl::string_view token);

// `bytes` cryptographically random bytes (OpenSSL RAND_bytes).
absl::StatusOr<std::string> RandomBytes(size_t bytes);
// `bytes` random bytes as lowercase hex.
absl::StatusOr<std::string> RandomHex(size_t bytes);

}  // namespace potluck::coordinator_internal

#endif  // POTLUCK_COORDINATOR_INTERNAL_TOKEN_H_
