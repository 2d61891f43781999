#include "common/checksum.h"

#include <xxhash.h>

#include "common/check.h"

namespace potluck {

uint64_t Checksum64(const void* data, size_t size) { return XXH3_64bits(data, size); }

void Checksummer::StateDeleter::operator()(XXH3_state_s* state) const { XXH3_freeState(state); }

Checksummer::Checksummer() : state_(XXH3_createState()) {
  POTLUCK_CHECK(state_ != nullptr) << "out of memory for an XXH3 state";
  Reset();
}

Checksummer::~Checksummer() = default;
Checksummer::Checksummer(Checksummer&&) noexcept = default;
Checksummer& Checksummer::operator=(Checksummer&&) noexcept = default;

void Checksummer::Update(const void* data, size_t size) {
  POTLUCK_CHECK(XXH3_64bits_update(state_.get(), data, size) == XXH_OK);
}

uint64_t Checksummer::Digest() const { return XXH3_64bits_digest(state_.get()); }

void Checksummer::Reset() { POTLUCK_CHECK(XXH3_64bits_reset(state_.get()) == XXH_OK); }

}  // namespace potluck
