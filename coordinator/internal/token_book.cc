#include "coordinator/internal/token_book.h"

#include <optional>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

#include "checkpoint/checkpoint_store.h"
#include "common/status.h"
#include "coordinator/internal/token.h"
#include "job/job_spec.h"

namespace potluck::coordinator_internal {

namespace cs = ::potluck::coordinator_state;

absl::StatusOr<TokenBook> TokenBook::Load(StateDb* db) {
  TokenBook book(db);
  ASSIGN_OR_RETURN(std::optional<std::string> key, db->Get(kSigningKeyKey));
  if (!key.has_value()) {
    ASSIGN_OR_RETURN(std::string fresh, RandomBytes(kSigningKeyBytes));
    RETURN_IF_ERROR(db->Put(kSigningKeyKey, fresh));
    key = std::move(fresh);
  }
  book.signing_key_ = *key;
  RETURN_IF_ERROR(db->Scan("tok/", [&](absl::string_view k, absl::string_view value) {
    cs::TokenRecord record;
    if (!record.ParseFromArray(value.data(), static_cast<int>(value.size()))) {
      return absl::DataLossError(absl::StrCat("state key ", k, " does not parse"));
    }
    book.tokens_[std::string(k.substr(4))] = record;
    return absl::OkStatus();
  }));
  return book;
}

absl::StatusOr<std::string> TokenBook::Create(absl::string_view job_id, absl::Duration ttl,
                                              absl::Time now) {
  if (job_id != kAdminJob) RETURN_IF_ERROR(Annotate(potluck::ValidateJobId(job_id), "job_id"));
  if (ttl <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("ttl: must be > 0, got ", absl::FormatDuration(ttl)));
  }
  ASSIGN_OR_RETURN(std::string token_id, RandomHex(8));
  TokenFields fields{std::string(job_id), absl::ToUnixSeconds(now + ttl), token_id};
  cs::TokenRecord record;
  record.set_job_id(fields.job_id);
  record.set_expiry_unix_s(fields.expiry_unix_s);
  RETURN_IF_ERROR(db_->Put(TokenKey(token_id), record.SerializeAsString()));
  tokens_[token_id] = record;
  return SignToken(signing_key_, fields);
}

absl::Status TokenBook::Revoke(absl::string_view token_or_id) {
  std::string token_id(token_or_id);
  if (absl::StrContains(token_or_id, ':')) {
    ASSIGN_OR_RETURN(TokenFields fields, ParseSignedToken(signing_key_, token_or_id));
    token_id = fields.token_id;
  }
  auto it = tokens_.find(token_id);
  if (it == tokens_.end()) {
    return absl::NotFoundError(absl::StrCat("token ", token_id, " was not issued here"));
  }
  cs::TokenRecord record = it->second;
  record.set_revoked(true);
  RETURN_IF_ERROR(db_->Put(TokenKey(token_id), record.SerializeAsString()));
  it->second = record;
  return absl::OkStatus();
}

bool TokenBook::Revoked(absl::string_view token_id) const {
  auto it = tokens_.find(token_id);
  return it != tokens_.end() && it->second.revoked();
}

absl::StatusOr<std::string> TokenBook::Verify(absl::string_view job_id, absl::string_view token,
                                              absl::Time now,
                                              absl::string_view expiry_waived_for) const {
  ASSIGN_OR_RETURN(TokenFields fields, ParseSignedToken(signing_key_, token));
  auto it = tokens_.find(fields.token_id);
  if (it == tokens_.end()) {
    return absl::UnauthenticatedError(
        absl::StrCat("token ", fields.token_id, " is unknown to this coordinator"));
  }
  if (it->second.revoked()) {
    return absl::UnauthenticatedError(absl::StrCat("token ", fields.token_id, " was revoked"));
  }
  const absl::Time expiry = absl::FromUnixSeconds(fields.expiry_unix_s);
  if (now >= expiry && fields.token_id != expiry_waived_for) {
    return absl::UnauthenticatedError(absl::StrCat("token ", fields.token_id, " expired at ",
                                                   absl::FormatTime(expiry, absl::UTCTimeZone())));
  }
  if (fields.job_id != job_id) {
    if (job_id == kAdminJob) {
      return absl::PermissionDeniedError(absl::StrCat("token ", fields.token_id,
                                                      " is a join token for job ", fields.job_id,
                                                      ", not an admin token"));
    }
    if (fields.job_id == kAdminJob) {
      return absl::PermissionDeniedError(absl::StrCat(
          "token ", fields.token_id, " is an admin token, not a join token for job ", job_id));
    }
    return absl::PermissionDeniedError(
        absl::StrCat("token ", fields.token_id, " is for job ", fields.job_id, ", not ", job_id));
  }
  return fields.token_id;
}

}  // namespace potluck::coordinator_internal
