#include "coordinator/internal/member_secret.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "common/status.h"
#include "coordinator/internal/token.h"

namespace potluck::coordinator_internal {

namespace {

constexpr size_t kSecretBytes = 32;

std::string Sha256(absl::string_view bytes) {
  std::string digest(SHA256_DIGEST_LENGTH, '\0');
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(),
         reinterpret_cast<unsigned char*>(digest.data()));
  return digest;
}

}  // namespace

absl::StatusOr<IssuedSecret> IssueMemberSecret() {
  IssuedSecret issued;
  ASSIGN_OR_RETURN(issued.secret, RandomHex(kSecretBytes));
  issued.hash = Sha256(issued.secret);
  return issued;
}

bool SecretMatches(absl::string_view stored_hash, absl::string_view secret) {
  if (stored_hash.size() != SHA256_DIGEST_LENGTH) return false;
  const std::string hash = Sha256(secret);
  return CRYPTO_memcmp(hash.data(), stored_hash.data(), hash.size()) == 0;
}

}  // namespace potluck::coordinator_internal
