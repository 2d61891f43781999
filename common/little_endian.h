// Little-endian integers in byte strings: the fixed-width fields of every
// potluck file and wire header (checkpoint frames, data files, token shards,
// collectives frames and handshakes).
//
// Thread-safety: stateless.
#ifndef POTLUCK_COMMON_LITTLE_ENDIAN_H_
#define POTLUCK_COMMON_LITTLE_ENDIAN_H_

#include <cstdint>
#include <string>

namespace potluck {

// Appends the low `bytes` bytes of `value` to `out`, least significant first.
inline void AppendLittleEndian(std::string* out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

// Reads a `bytes`-wide little-endian unsigned integer at `in`.
inline uint64_t ReadLittleEndian(const char* in, int bytes) {
  uint64_t value = 0;
  for (int i = 0; i < bytes; ++i) {
    value |= static_cast<uint64_t>(static_cast<uint8_t>(in[i])) << (8 * i);
  }
  return value;
}

}  // namespace potluck

#endif  // POTLUCK_COMMON_LITTLE_ENDIAN_H_
