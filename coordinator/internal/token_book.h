// TokenBook: the coordinator's record of the join and admin tokens it
// issued (token.h has their format): issues, revokes and verifies them
// against the signing key, the revocations and the clock. Private to
// coordinator/.
//
// Every change is written to the state database before it returns.
// Thread-safety: none; the facade calls it under its lock.
#ifndef POTLUCK_COORDINATOR_INTERNAL_TOKEN_BOOK_H_
#define POTLUCK_COORDINATOR_INTERNAL_TOKEN_BOOK_H_

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

#include "coordinator/internal/state.pb.h"
#include "coordinator/internal/state_db.h"

namespace potluck::coordinator_internal {

class TokenBook {
 public:
  // Reads the signing key (made on first use) and every token record.
  // `db` is not owned and must outlive the book.
  static absl::StatusOr<TokenBook> Load(StateDb* db);

  // A token for `job_id` (kAdminJob: an admin token) valid until now + ttl.
  absl::StatusOr<std::string> Create(absl::string_view job_id, absl::Duration ttl, absl::Time now);
  // By the token itself or its id; kNotFound for one not issued here.
  absl::Status Revoke(absl::string_view token_or_id);
  // The token's id if it admits to `job_id` now. kUnauthenticated:
  // malformed, wrong signature, unknown, revoked, expired;
  // kPermissionDenied: a token of another job (or an admin token used to
  // join, a join token used as admin). A token whose id is
  // `expiry_waived_for` is admitted past its expiry (never when revoked): a
  // live member rejoining on the token it joined with.
  absl::StatusOr<std::string> Verify(absl::string_view job_id, absl::string_view token,
                                     absl::Time now,
                                     absl::string_view expiry_waived_for = {}) const;
  // Whether the token with this id was revoked (false for an unknown id).
  bool Revoked(absl::string_view token_id) const;

 private:
  explicit TokenBook(StateDb* db) : db_(db) {}

  StateDb* db_;  // not owned
  std::string signing_key_;
  std::map<std::string, potluck::coordinator_state::TokenRecord, std::less<>> tokens_;
};

}  // namespace potluck::coordinator_internal

#endif  // POTLUCK_COORDINATOR_INTERNAL_TOKEN_BOOK_H_
