// Checksums for chunks on disk and frames on the wire: 64-bit XXH3 (xxHash
// 0.8, from Debian's libxxhash), which runs at memory speed.
//
// The value of Checksum64 for given bytes is part of the checkpoint and wire
// formats: it must never change for the same input (seed 0).
//
// Thread-safety: Checksum64 is safe from any thread; a Checksummer is a value
// owned by one thread at a time.
#ifndef POTLUCK_COMMON_CHECKSUM_H_
#define POTLUCK_COMMON_CHECKSUM_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/strings/string_view.h"

struct XXH3_state_s;

namespace potluck {

uint64_t Checksum64(const void* data, size_t size);
inline uint64_t Checksum64(absl::string_view bytes) {
  return Checksum64(bytes.data(), bytes.size());
}

// Incremental form: Update() over any split of the input gives the same
// Digest() as one Checksum64() over all of it.
class Checksummer {
 public:
  Checksummer();
  ~Checksummer();
  Checksummer(Checksummer&&) noexcept;
  Checksummer& operator=(Checksummer&&) noexcept;

  void Update(const void* data, size_t size);
  void Update(absl::string_view bytes) { Update(bytes.data(), bytes.size()); }
  uint64_t Digest() const;
  void Reset();

 private:
  struct StateDeleter {
    void operator()(XXH3_state_s* state) const;
  };
  std::unique_ptr<XXH3_state_s, StateDeleter> state_;
};

}  // namespace potluck

#endif  // POTLUCK_COMMON_CHECKSUM_H_
