// Join and admin tokens (coordinator/internal/token.h), as a caller presents
// them. The first byte picks what the rest is:
//   0      a token, checked against a fixed key (a forgery must fail);
//   other  three fields separated by NUL bytes (job, expiry, token id), which
//          are signed and parsed back: what parses must be what was signed.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

#include "common/check.h"
#include "coordinator/internal/token.h"
#include "fuzz/fuzz_util.h"

namespace {

namespace ci = potluck::coordinator_internal;

const std::string& Key() {
  static const std::string* const key = new std::string(ci::kSigningKeyBytes, 'k');
  return *key;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const absl::string_view rest = potluck::fuzz::AsBytes(data + 1, size - 1);
  if (data[0] == 0) {
    (void)ci::ParseSignedToken(Key(), rest);
    return 0;
  }
  const std::vector<absl::string_view> parts = absl::StrSplit(rest, absl::ByChar('\0'));
  ci::TokenFields fields;
  if (parts.size() != 3 || !absl::SimpleAtoi(parts[1], &fields.expiry_unix_s)) return 0;
  fields.job_id = std::string(parts[0]);
  fields.token_id = std::string(parts[2]);
  const std::string token = ci::SignToken(Key(), fields);
  const auto parsed = ci::ParseSignedToken(Key(), token);
  // What SignToken cannot encode (a ':' in a field, an empty field, a token
  // over the size limit) must fail to parse; everything else must come back.
  if (!parsed.ok()) return 0;
  POTLUCK_CHECK(parsed->job_id == fields.job_id && parsed->token_id == fields.token_id &&
                parsed->expiry_unix_s == fields.expiry_unix_s)
      << "token " << token << " parsed into other fields";
  std::string tampered = token;
  tampered.back() = tampered.back() == '0' ? '1' : '0';
  POTLUCK_CHECK(!ci::ParseSignedToken(Key(), tampered).ok()) << "tampered " << tampered;
  return 0;
}
