#include "collectives/internal/gathered_compression.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/strings/str_cat.h"

#include "collectives/internal/reduce.h"
#include "common/status.h"

namespace potluck::collectives_internal {
namespace {

// Elements under one int8 scale: the TCP ring's default segment (1 MiB of
// float32), so both schemes lose about as much to quantization.
constexpr size_t kSegmentElements = size_t{1} << 18;

struct Segment {
  size_t begin = 0;  // first element
  size_t count = 0;
  size_t offset = 0;  // first byte within one rank's encoded contribution
};

std::vector<Segment> SegmentsOf(size_t count, WireCodec codec) {
  std::vector<Segment> segments;
  size_t offset = 0;
  for (size_t begin = 0; begin < count; begin += kSegmentElements) {
    const size_t n = std::min(kSegmentElements, count - begin);
    segments.push_back({begin, n, offset});
    offset += EncodedBytes(codec, n);
  }
  return segments;
}

}  // namespace

absl::Status GatheredCompressedAllReduce(Communicator& comm, TensorView data, ReduceOp op,
                                         WireCodec codec, ErrorFeedback* feedback,
                                         absl::Time deadline, double weight) {
  if (data.dtype() != DType::kFloat32) {
    return absl::InvalidArgumentError(
        absl::StrCat("CompressedAllReduce takes float32, not ", DTypeName(data.dtype())));
  }
  if (data.device() != Device::Cpu()) {
    return absl::InvalidArgumentError("CompressedAllReduce takes host buffers on this backend");
  }
  if (feedback != nullptr && feedback->count() != data.count()) {
    return absl::InvalidArgumentError(absl::StrCat("error feedback for ", feedback->count(),
                                                   " elements, data of ", data.count()));
  }
  if (codec == WireCodec::kNone) return comm.AllReduce(data, op, deadline, weight);
  const int world = comm.world_size();
  double divisor = world;
  if (op == ReduceOp::kWeightedAverage) {
    double total_weight = weight;
    RETURN_IF_ERROR(comm.AllReduce(TensorView::Of(&total_weight, 1), ReduceOp::kSum, deadline));
    if (!(total_weight > 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("weighted average with total weight ", total_weight));
    }
    Scale(data.dtype(), data.data(), data.count(), weight);
    divisor = total_weight;
  }
  if (world > 1 && !data.empty()) {
    float* values = data.data_as<float>();
    const std::vector<Segment> segments = SegmentsOf(data.count(), codec);
    const size_t block = segments.back().offset + EncodedBytes(codec, segments.back().count);
    std::vector<uint8_t> gathered(block * world);
    uint8_t* own = gathered.data() + block * comm.rank();
    for (const Segment& s : segments) {
      if (feedback != nullptr) {
        feedback->Encode(codec, values + s.begin, s.begin, s.count, own + s.offset);
      } else {
        Encode(codec, values + s.begin, s.count, own + s.offset);
      }
    }
    RETURN_IF_ERROR(comm.AllGather(TensorView::Of(gathered.data(), gathered.size()), deadline));
    std::vector<float> decoded(std::min(kSegmentElements, data.count()));
    for (int rank = 0; rank < world; ++rank) {
      const uint8_t* contribution = gathered.data() + block * rank;
      for (const Segment& s : segments) {
        RETURN_IF_ERROR(Annotate(ValidateEncoded(codec, contribution + s.offset, s.count),
                                 absl::StrCat("rank ", rank, "'s contribution")));
        float* out = rank == 0 ? values + s.begin : decoded.data();
        Decode(codec, contribution + s.offset, s.count, out);
        if (rank == 0) continue;
        for (size_t i = 0; i < s.count; ++i) values[s.begin + i] += decoded[i];
      }
    }
  }
  if (op != ReduceOp::kSum) Scale(data.dtype(), data.data(), data.count(), 1.0 / divisor);
  return absl::OkStatus();
}

}  // namespace potluck::collectives_internal
