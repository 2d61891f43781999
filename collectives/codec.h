// Wire codecs for the all-reduce: how a segment of float32 values travels
// between ranks, as it is or compressed.
//
// A ring all-reduce moves segments of a float32 buffer from rank to rank. With
// a codec other than kNone a segment travels compressed and arrives lossy, but
// arithmetic stays in float32: the receiver decodes and adds into its float32
// buffer (DecodeAdd). Every rank must end with the same bits, so the owner of a
// reduced segment encodes it once, the all-gather forwards those bytes
// unchanged, and every rank decodes them with Decode (the owner too, into its
// own buffer). Decode is a pure function of the bytes: each element is one
// exact bit conversion or one IEEE float32 multiply (q * scale), which gives
// the same bits on every host. (For kInt8, DecodeAdd's acc + q * scale may be
// compiled into one fused multiply-add on targets that have one: aarch64, or
// x86 built with -march. Its bits may then differ between kinds of host, which
// is harmless: it is the reduce-scatter's step, where one rank computes each
// partial sum, never the all-gather's.)
//
// Encoded layouts, in host byte order (potluck runs on little-endian hosts):
//   kNone      count float32, the bits unchanged              4 * count bytes
//   kFloat16   count IEEE binary16 (FloatToHalfBits)          2 * count bytes
//   kBFloat16  count bfloat16 (FloatToBFloat16Bits)           2 * count bytes
//   kInt8      float32 scale, then count int8 q               4 + count bytes
//              element i is q[i] * scale
// fp16 and bf16 round to nearest even (common/dtype.h). fp16 keeps ~3
// significant digits but overflows: |x| >= 65520 becomes +-infinity; bf16
// keeps float32's range with ~2 digits.
//
// kInt8: scale = max|x| / 127 (one ulp less where 127 * scale would overflow)
// and q = round-half-even(x / scale), clamped to [-127, 127] (-128 is never
// sent); each element is off by at most scale / 2 (plus float rounding), and
// zero decodes to +0. Two kinds of segment are special:
//   - max|x| < 127 * FLT_MIN (~1.5e-36), all zeros included: scale 0 and all
//     q 0, so the segment decodes to zeros. (Keeps the scale a normal float;
//     with ErrorFeedback what was dropped is sent later.)
//   - any NaN or infinity: scale NaN (bits 0x7fc00000) and all q 0, so every
//     element decodes to NaN. A non-finite gradient never turns into finite
//     numbers; which element it was, and an infinity's sign, are lost. A
//     training loop that skips steps with non-finite gradients sees it.
//
// Encoded buffers need no alignment (int8 segments may be packed back to
// back); float buffers are ordinary float arrays. Input and output must not
// overlap. Encode, Decode, DecodeAdd and ErrorFeedback::Encode never allocate.
//
// Thread-safety: the free functions are stateless and safe from any thread.
// An ErrorFeedback is used by one thread at a time, except that Encode calls
// on disjoint element ranges may run concurrently.
#ifndef POTLUCK_COLLECTIVES_CODEC_H_
#define POTLUCK_COLLECTIVES_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace potluck {

// The values may travel in a handshake: never renumber, only append.
enum class WireCodec : uint8_t { kNone = 0, kFloat16 = 1, kBFloat16 = 2, kInt8 = 3 };

// "none", "fp16", "bf16", "int8".
absl::string_view WireCodecName(WireCodec codec);
// Inverse of WireCodecName; kInvalidArgument naming anything else.
absl::StatusOr<WireCodec> ParseWireCodec(absl::string_view name);
// Whether a byte read from the network names a WireCodec.
bool IsValidWireCodec(uint8_t value);

// Bytes on the wire for `count` float32 elements.
size_t EncodedBytes(WireCodec codec, size_t count);

// Writes in[0, count) to `out`, EncodedBytes(codec, count) bytes.
void Encode(WireCodec codec, const float* in, size_t count, void* out);
// Overwrites out[0, count) with the decoded elements.
void Decode(WireCodec codec, const void* in, size_t count, float* out);
// acc[i] += decoded element i, for i in [0, count).
void DecodeAdd(WireCodec codec, const void* in, size_t count, float* acc);

// Checks a segment received from the network before it is decoded: rejects,
// with kDataLoss naming the problem, bytes that Encode never writes. For kInt8:
// a scale that is not 0, the NaN above, or a float s >= FLT_MIN with 127 * s
// finite; a q of -128; a nonzero q under a scale of 0 or NaN.
// Every byte pattern is a valid kNone, kFloat16 or kBFloat16 segment.
// `in` holds EncodedBytes(codec, count) bytes.
absl::Status ValidateEncoded(WireCodec codec, const void* in, size_t count);

// Error feedback for a lossy codec, over one buffer that is all-reduced again
// and again (a gradient): remembers per element what its last encoding lost
// (the residual) and adds it to the element the next time it is encoded. Over
// many calls nothing is lost: the running sum of what was sent differs from
// the running sum of the inputs by the current residual only, at most half a
// quantization step per element.
//
// A rank keeps one per buffer and encodes each element once per all-reduce
// with it; in a ring that is every segment it sends in the reduce-scatter and
// the segment it owns at the start of the all-gather. (Then it Decodes its own
// bytes into its buffer like everyone else.) The elements received from
// others are not fed back: their senders' residuals carry their losses.
//
// A residual that would not be finite (a NaN or infinite element or segment,
// an fp16 overflow) is stored as 0: such a step is lost anyway and must not
// poison the steps after it.
class ErrorFeedback {
 public:
  // Residuals for `count` elements, all zero.
  explicit ErrorFeedback(size_t count);

  size_t count() const { return residual_.size(); }
  // Zeroes every residual (e.g. after a skipped step or a regroup).
  void Reset();
  // residual()[i]: what element i's last encoding lost.
  absl::Span<const float> residual() const { return residual_; }
  // The residuals to write, e.g. when a checkpoint restores them so a resumed
  // run sends exactly the bytes an uninterrupted one would.
  absl::Span<float> mutable_residual() { return absl::MakeSpan(residual_); }

  // Encodes v[i] = data[i] + residual()[offset + i] for i in [0, count) into
  // `out` (EncodedBytes(codec, count) bytes) and sets those residuals to
  // v[i] - (element i decoded from `out`). `data` is not modified.
  // [offset, offset + count) must lie within count().
  void Encode(WireCodec codec, const float* data, size_t offset, size_t count, void* out);

 private:
  std::vector<float> residual_;
};

}  // namespace potluck

#endif  // POTLUCK_COLLECTIVES_CODEC_H_
