#include "collectives/internal/wire.h"

#include <cstring>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "absl/strings/str_cat.h"

#include "common/check.h"
#include "common/little_endian.h"

namespace potluck::collectives_internal {

FrameHeaderBytes EncodeFrameHeader(uint32_t payload_bytes, uint64_t tag) {
  std::string bytes;
  AppendLittleEndian(&bytes, kFrameMagic, 2);
  AppendLittleEndian(&bytes, kWireVersion, 1);
  AppendLittleEndian(&bytes, kFrameData, 1);
  AppendLittleEndian(&bytes, payload_bytes, 4);
  AppendLittleEndian(&bytes, tag, 8);
  FrameHeaderBytes header;
  std::memcpy(header.data(), bytes.data(), kFrameHeaderBytes);
  return header;
}

absl::Status CheckFrameHeader(const FrameHeaderBytes& header, uint64_t expected_payload_bytes,
                              uint64_t expected_tag, absl::string_view from) {
  const char* in = header.data();
  if (ReadLittleEndian(in, 2) != kFrameMagic || ReadLittleEndian(in + 2, 1) != kWireVersion ||
      ReadLittleEndian(in + 3, 1) != kFrameData) {
    return absl::DataLossError(absl::StrCat(from, " sent a frame with a bad header"));
  }
  const uint64_t length = ReadLittleEndian(in + 4, 4);
  const uint64_t tag = ReadLittleEndian(in + 8, 8);
  if (length != expected_payload_bytes || tag != expected_tag) {
    return absl::DataLossError(absl::StrCat(from, " sent frame ", tag, " of ", length,
                                            " bytes where frame ", expected_tag, " of ",
                                            expected_payload_bytes, " bytes was due"));
  }
  return absl::OkStatus();
}

std::string EncodeHello(const Hello& hello) {
  std::string bytes = "PLHI";
  AppendLittleEndian(&bytes, kWireVersion, 4);
  AppendLittleEndian(&bytes, hello.generation, 8);
  AppendLittleEndian(&bytes, hello.rank, 4);
  AppendLittleEndian(&bytes, hello.world_size, 4);
  bytes.append(reinterpret_cast<const char*>(hello.nonce.data()), kNonceBytes);
  POTLUCK_CHECK(bytes.size() == kHelloBytes);
  return bytes;
}

absl::StatusOr<Hello> DecodeHello(absl::string_view bytes) {
  if (bytes.size() != kHelloBytes || bytes.substr(0, 4) != "PLHI") {
    return absl::DataLossError("the peer's first message is not a potluck HELLO");
  }
  if (ReadLittleEndian(bytes.data() + 4, 4) != kWireVersion) {
    return absl::DataLossError(absl::StrCat("the peer speaks wire version ",
                                            ReadLittleEndian(bytes.data() + 4, 4), ", not ",
                                            kWireVersion));
  }
  Hello hello;
  hello.generation = ReadLittleEndian(bytes.data() + 8, 8);
  hello.rank = static_cast<uint32_t>(ReadLittleEndian(bytes.data() + 16, 4));
  hello.world_size = static_cast<uint32_t>(ReadLittleEndian(bytes.data() + 20, 4));
  std::memcpy(hello.nonce.data(), bytes.data() + 24, kNonceBytes);
  return hello;
}

Nonce RandomNonce() {
  Nonce nonce;
  POTLUCK_CHECK(RAND_bytes(nonce.data(), static_cast<int>(nonce.size())) == 1)
      << "OpenSSL could not produce random bytes";
  return nonce;
}

Mac HandshakeMac(absl::string_view secret, bool server, uint64_t generation, uint32_t from_rank,
                 uint32_t to_rank, const Nonce& first, const Nonce& second) {
  std::string message = server ? "potluck-server" : "potluck-client";
  AppendLittleEndian(&message, generation, 8);
  AppendLittleEndian(&message, from_rank, 4);
  AppendLittleEndian(&message, to_rank, 4);
  message.append(reinterpret_cast<const char*>(first.data()), first.size());
  message.append(reinterpret_cast<const char*>(second.data()), second.size());
  Mac mac;
  unsigned int mac_bytes = 0;
  POTLUCK_CHECK(HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
                     reinterpret_cast<const unsigned char*>(message.data()), message.size(),
                     mac.data(), &mac_bytes) != nullptr &&
                mac_bytes == kMacBytes);
  return mac;
}

bool MacEquals(const Mac& a, const uint8_t* b) {
  return CRYPTO_memcmp(a.data(), b, kMacBytes) == 0;
}

}  // namespace potluck::collectives_internal
