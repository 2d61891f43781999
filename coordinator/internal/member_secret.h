// Member credentials: every Join hands the worker a fresh random secret; the
// coordinator keeps only its SHA-256 (in the worker's record), so a restarted
// coordinator still knows its members and a copied data directory gives no
// one a live credential. Every later call proves the secret.
//
// Thread-safety: stateless functions.
#ifndef POTLUCK_COORDINATOR_INTERNAL_MEMBER_SECRET_H_
#define POTLUCK_COORDINATOR_INTERNAL_MEMBER_SECRET_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace potluck::coordinator_internal {

struct IssuedSecret {
  std::string secret;  // for the worker: 64 lowercase hex digits (256 bits)
  std::string hash;    // for the record: its SHA-256, 32 bytes
};

absl::StatusOr<IssuedSecret> IssueMemberSecret();

// Whether `secret` hashes to `stored_hash`, compared in constant time.
bool SecretMatches(absl::string_view stored_hash, absl::string_view secret);

}  // namespace potluck::coordinator_internal

#endif  // POTLUCK_COORDINATOR_INTERNAL_MEMBER_SECRET_H_
