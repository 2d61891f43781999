// The bytes potluck's TCP collectives put on the wire: frame headers and the
// link handshake. docs/collectives-wire.md describes the same for people.
#ifndef POTLUCK_COLLECTIVES_INTERNAL_WIRE_H_
#define POTLUCK_COLLECTIVES_INTERNAL_WIRE_H_

#include <array>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace potluck::collectives_internal {

// Frame header, 16 bytes, little-endian:
//   0  u16 magic 0x4C50 ("PL")   2  u8 version (1)   3  u8 kind (1 = data)
//   4  u32 payload length         8  u64 tag
inline constexpr uint16_t kFrameMagic = 0x4C50;
inline constexpr uint8_t kWireVersion = 1;
inline constexpr uint8_t kFrameData = 1;
inline constexpr size_t kFrameHeaderBytes = 16;
// No frame carries more: algorithms cut buffers into segments well below it.
inline constexpr uint64_t kMaxFramePayloadBytes = uint64_t{1} << 30;

using FrameHeaderBytes = std::array<char, kFrameHeaderBytes>;

FrameHeaderBytes EncodeFrameHeader(uint32_t payload_bytes, uint64_t tag);
// Checks a received header against the frame the receiver expects next;
// kDataLoss naming `from` and what differs.
absl::Status CheckFrameHeader(const FrameHeaderBytes& header, uint64_t expected_payload_bytes,
                              uint64_t expected_tag, absl::string_view from);

// Handshake, run on every new link before any data flows (client = the rank
// that connects, server = the rank that accepts):
//   client -> server  HELLO     "PLHI" u32 version, u64 generation, u32 rank,
//                               u32 world size, 32-byte nonce_c     (56 bytes)
//   server -> client  CHALLENGE "PLCH" 32-byte nonce_s, 32-byte mac_s (68 bytes)
//   client -> server  RESPONSE  "PLRS" 32-byte mac_c                  (36 bytes)
//   server -> client  OK        "PLOK"                                (4 bytes)
// mac_s = HMAC-SHA256(secret, "potluck-server" | generation | server rank |
// client rank | nonce_c | nonce_s), mac_c likewise with "potluck-client" and
// the ranks and nonces swapped. Each side proves it knows the generation's
// secret without sending it; a failure closes the link.
inline constexpr size_t kNonceBytes = 32;
inline constexpr size_t kMacBytes = 32;
inline constexpr size_t kHelloBytes = 56;
inline constexpr size_t kChallengeBytes = 68;
inline constexpr size_t kResponseBytes = 36;
inline constexpr size_t kOkBytes = 4;

using Nonce = std::array<uint8_t, kNonceBytes>;
using Mac = std::array<uint8_t, kMacBytes>;

struct Hello {
  uint64_t generation = 0;
  uint32_t rank = 0;
  uint32_t world_size = 0;
  Nonce nonce{};
};

std::string EncodeHello(const Hello& hello);
// kDataLoss for a message that is not a version-1 HELLO.
absl::StatusOr<Hello> DecodeHello(absl::string_view bytes);

Nonce RandomNonce();
Mac HandshakeMac(absl::string_view secret, bool server, uint64_t generation, uint32_t from_rank,
                 uint32_t to_rank, const Nonce& first, const Nonce& second);
// Constant-time comparison.
bool MacEquals(const Mac& a, const uint8_t* b);

}  // namespace potluck::collectives_internal

#endif  // POTLUCK_COLLECTIVES_INTERNAL_WIRE_H_
