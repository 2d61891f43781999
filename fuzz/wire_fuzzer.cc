// What a peer sends on a TCP collectives link (collectives/internal/wire.h,
// collectives/codec.h): the frame header, the HELLO that opens the handshake,
// and the encoded segments of a compressed all-reduce. Input: 16 bytes of
// header, 8 of expected payload length, 8 of expected tag, then the rest,
// read as a HELLO and as a segment of the codec its first byte names.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "collectives/codec.h"
#include "collectives/internal/wire.h"
#include "common/check.h"
#include "fuzz/fuzz_util.h"

namespace cw = potluck::collectives_internal;

namespace {

void Segment(const uint8_t* data, size_t size) {
  if (size == 0 || !potluck::IsValidWireCodec(data[0])) return;
  const auto codec = static_cast<potluck::WireCodec>(data[0]);
  ++data;
  --size;
  size_t count = 0;
  while (count < 4096 && potluck::EncodedBytes(codec, count + 1) <= size) ++count;
  if (potluck::EncodedBytes(codec, count) > size) return;  // an int8 segment without its scale
  if (!potluck::ValidateEncoded(codec, data, count).ok()) return;
  std::vector<float> out(count);
  potluck::Decode(codec, data, count, out.data());
  potluck::DecodeAdd(codec, data, count, out.data());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < cw::kFrameHeaderBytes + 16) return 0;
  cw::FrameHeaderBytes header;
  std::memcpy(header.data(), data, header.size());
  uint64_t payload = 0;
  uint64_t tag = 0;
  std::memcpy(&payload, data + 16, 8);
  std::memcpy(&tag, data + 24, 8);
  if (cw::CheckFrameHeader(header, payload, tag, "fuzz").ok()) {
    POTLUCK_CHECK(payload <= UINT32_MAX &&
                  cw::EncodeFrameHeader(static_cast<uint32_t>(payload), tag) == header);
  }
  if (payload <= UINT32_MAX) {
    const auto encoded = cw::EncodeFrameHeader(static_cast<uint32_t>(payload), tag);
    POTLUCK_CHECK(cw::CheckFrameHeader(encoded, payload, tag, "fuzz").ok());
  }
  data += 32;
  size -= 32;
  const absl::string_view rest = potluck::fuzz::AsBytes(data, size);
  if (auto hello = cw::DecodeHello(rest); hello.ok()) {
    POTLUCK_CHECK(cw::EncodeHello(*hello) == rest) << "a HELLO that does not encode back";
  }
  Segment(data, size);
  return 0;
}
