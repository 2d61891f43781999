#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

#include "collectives/internal/checks.h"
#include "collectives/internal/reduce.h"
#include "collectives/tcp_communicator.h"
#include "common/status.h"

namespace potluck {

namespace {

namespace cw = collectives_internal;

// Elements [begin, begin + count) of a buffer.
struct Range {
  size_t begin = 0;
  size_t count = 0;
};

// Block b of `count` elements cut into `parts` near-equal blocks.
Range BlockOf(size_t count, int parts, int b) {
  const size_t base = count / parts, extra = count % parts;
  const size_t ub = static_cast<size_t>(b);
  return {ub * base + std::min(ub, extra), base + (ub < extra ? 1 : 0)};
}

class TransportCommunicator final : public Communicator {
 public:
  TransportCommunicator(std::unique_ptr<Transport> transport, uint64_t generation,
                        const AlgorithmOptions& options)
      : transport_(std::move(transport)), generation_(generation), options_(options) {}

  ~TransportCommunicator() override { transport_->Close(); }

  int rank() const override { return transport_->rank(); }
  int world_size() const override { return transport_->world_size(); }
  uint64_t generation() const override { return generation_; }
  absl::string_view backend() const override { return "tcp"; }

  void Abort() override {
    aborted_ = true;
    transport_->Abort();
  }

  absl::Status AllReduce(TensorView data, ReduceOp op, absl::Time deadline,
                         double weight) override {
    RETURN_IF_ERROR(CheckUsable(data, "AllReduce"));
    if (op != ReduceOp::kSum && !cw::IsFloatingPoint(data.dtype())) {
      return absl::InvalidArgumentError(
          absl::StrCat("AllReduce of ", DTypeName(data.dtype()), " supports only a sum"));
    }
    ASSIGN_OR_RETURN(const double divisor, Prepare(data, op, deadline, weight, "AllReduce"));
    if (world_size() > 1 && !data.empty()) {
      const uint64_t tag = NextTag();
      const absl::Status status = data.size_bytes() <= options_.small_message_bytes
                                      ? SmallAllReduce(data, deadline, tag)
                                      : RingAllReduce(data, deadline, tag);
      RETURN_IF_ERROR(Finish(status, "AllReduce"));
    }
    if (op != ReduceOp::kSum) cw::Scale(data.dtype(), data.data(), data.count(), 1.0 / divisor);
    return absl::OkStatus();
  }

  absl::Status CompressedAllReduce(TensorView data, ReduceOp op, WireCodec codec,
                                   ErrorFeedback* feedback, absl::Time deadline,
                                   double weight) override {
    RETURN_IF_ERROR(CheckUsable(data, "CompressedAllReduce"));
    if (data.dtype() != DType::kFloat32) {
      return absl::InvalidArgumentError(
          absl::StrCat("CompressedAllReduce takes float32, not ", DTypeName(data.dtype())));
    }
    if (feedback != nullptr && feedback->count() != data.count()) {
      return absl::InvalidArgumentError(absl::StrCat("error feedback for ", feedback->count(),
                                                     " elements, data of ", data.count()));
    }
    if (codec == WireCodec::kNone) return AllReduce(data, op, deadline, weight);
    ASSIGN_OR_RETURN(const double divisor,
                     Prepare(data, op, deadline, weight, "CompressedAllReduce"));
    if (world_size() > 1 && !data.empty()) {
      RETURN_IF_ERROR(Finish(EncodedRingAllReduce(data, codec, feedback, deadline, NextTag()),
                             "CompressedAllReduce"));
    }
    if (op != ReduceOp::kSum) cw::Scale(data.dtype(), data.data(), data.count(), 1.0 / divisor);
    return absl::OkStatus();
  }

  absl::Status ReduceScatter(TensorView data, ReduceOp op, absl::Time deadline) override {
    RETURN_IF_ERROR(CheckUsable(data, "ReduceScatter"));
    RETURN_IF_ERROR(CheckBlocks(data, "ReduceScatter"));
    if (op == ReduceOp::kWeightedAverage ||
        (op == ReduceOp::kAverage && !cw::IsFloatingPoint(data.dtype()))) {
      return absl::InvalidArgumentError("ReduceScatter supports sum, and average of floats");
    }
    if (world_size() > 1) {
      RETURN_IF_ERROR(Finish(RingReduceScatter(data, deadline, NextTag()), "ReduceScatter"));
    }
    if (op == ReduceOp::kAverage) {
      const Range own = BlockOf(data.count(), world_size(), rank());
      cw::Scale(data.dtype(), Element(data, own.begin), own.count, 1.0 / world_size());
    }
    return absl::OkStatus();
  }

  absl::Status AllGather(TensorView data, absl::Time deadline) override {
    RETURN_IF_ERROR(CheckUsable(data, "AllGather"));
    RETURN_IF_ERROR(CheckBlocks(data, "AllGather"));
    if (world_size() == 1) return absl::OkStatus();
    return Finish(RingAllGather(data, deadline, NextTag()), "AllGather");
  }

  absl::Status Broadcast(TensorView data, int root, absl::Time deadline) override {
    RETURN_IF_ERROR(CheckUsable(data, "Broadcast"));
    if (root < 0 || root >= world_size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("Broadcast from rank ", root, " of ", world_size()));
    }
    if (world_size() == 1 || data.empty()) return absl::OkStatus();
    return Finish(ChainBroadcast(data, root, deadline, NextTag()), "Broadcast");
  }

  absl::Status Barrier(absl::Time deadline) override {
    int64_t token = 1;
    RETURN_IF_ERROR(CheckUsable(TensorView::Of(&token, 1), "Barrier"));
    if (world_size() == 1) return absl::OkStatus();
    RETURN_IF_ERROR(
        Finish(SmallAllReduce(TensorView::Of(&token, 1), deadline, NextTag()), "Barrier"));
    if (token != world_size()) {
      return Finish(absl::DataLossError(absl::StrCat("barrier counted ", token, " ranks")),
                    "Barrier");
    }
    return absl::OkStatus();
  }

 private:
  // Each collective gets 2^32 tags; within it, step s frame k is s * 2^20 + k.
  uint64_t NextTag() { return ++operations_ << 32; }
  static uint64_t StepTag(uint64_t tag, int step) { return tag + (uint64_t(step) << 20); }

  static char* Element(TensorView data, size_t index) {
    return static_cast<char*>(data.data()) + index * DTypeSize(data.dtype());
  }

  absl::Status CheckUsable(TensorView data, absl::string_view call) {
    if (aborted_) return absl::AbortedError(absl::StrCat(call, ": the communicator was aborted"));
    if (!first_error_.ok()) {
      return cw::DeadCommunicatorError(call, first_error_);
    }
    if (!data.device().is_cpu()) {
      return absl::InvalidArgumentError(absl::StrCat(
          call, ": the TCP backend takes host buffers, not ", data.device().ToString()));
    }
    return absl::OkStatus();
  }

  absl::Status CheckBlocks(TensorView data, absl::string_view call) const {
    return cw::EqualBlockCount(data.count(), world_size(), call).status();
  }

  // After an error the communicator is dead: links are shut so every other
  // rank fails fast instead of waiting for its deadline.
  absl::Status Finish(absl::Status status, absl::string_view call) {
    if (status.ok()) return status;
    status =
        Annotate(status, absl::StrCat(call, " on rank ", rank(), ", generation ", generation_));
    if (first_error_.ok()) first_error_ = status;
    transport_->Close();
    return status;
  }

  size_t SegmentElements(DType dtype) const {
    return std::max<size_t>(1, options_.segment_bytes / DTypeSize(dtype));
  }

  // Frames of one block: `segments` spans of at most SegmentElements.
  std::vector<absl::Span<char>> Frames(TensorView data, Range block, size_t segments) const {
    const size_t segment = SegmentElements(data.dtype());
    const size_t element = DTypeSize(data.dtype());
    std::vector<absl::Span<char>> frames;
    for (size_t k = 0; k < segments; ++k) {
      const size_t begin = std::min(block.count, k * segment);
      const size_t end = std::min(block.count, (k + 1) * segment);
      frames.emplace_back(Element(data, block.begin + begin), (end - begin) * element);
    }
    return frames;
  }

  static std::vector<absl::Span<const char>> Const(const std::vector<absl::Span<char>>& frames) {
    return std::vector<absl::Span<const char>>(frames.begin(), frames.end());
  }

  size_t SegmentsPerBlock(TensorView data) const {
    const size_t largest = BlockOf(data.count(), world_size(), 0).count;
    return std::max<size_t>(
        1, (largest + SegmentElements(data.dtype()) - 1) / SegmentElements(data.dtype()));
  }

  // What the sum is divided by afterwards: world_size for an average, the
  // agreed total weight for a weighted one (the data is scaled by this
  // rank's weight first).
  absl::StatusOr<double> Prepare(TensorView data, ReduceOp op, absl::Time deadline, double weight,
                                 absl::string_view call) {
    if (op != ReduceOp::kWeightedAverage) return double(world_size());
    double total_weight = weight;
    RETURN_IF_ERROR(
        Finish(SmallAllReduce(TensorView::Of(&total_weight, 1), deadline, NextTag()), call));
    if (!(total_weight > 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("weighted average with total weight ", total_weight));
    }
    cw::Scale(data.dtype(), data.data(), data.count(), weight);
    return total_weight;
  }

  // The ring with every segment encoded on the wire. Reduce-scatter: each
  // rank encodes each block it sends once (so each element once, which is
  // what error feedback needs) and adds what it receives, decoded, in
  // float32. Then the owner of each block encodes the reduced block once,
  // decodes it into place itself, and the all-gather forwards those exact
  // bytes, which every rank decodes the same way.
  absl::Status EncodedRingAllReduce(TensorView data, WireCodec codec, ErrorFeedback* feedback,
                                    absl::Time deadline, uint64_t tag) {
    const int n = world_size(), r = rank();
    const int next = (r + 1) % n, prev = (r + n - 1) % n;
    float* values = data.data_as<float>();
    const size_t segment = SegmentElements(DType::kFloat32);
    const size_t segments = SegmentsPerBlock(data);
    auto segment_of = [&](int block, size_t k) {
      const Range whole = BlockOf(data.count(), n, block);
      const size_t begin = std::min(whole.count, k * segment);
      const size_t end = std::min(whole.count, (k + 1) * segment);
      return Range{whole.begin + begin, end - begin};
    };
    // Frames of `block` laid out back to back in `buffer` (resized to fit).
    auto frames_of = [&](int block, std::vector<char>& buffer) {
      size_t total = 0;
      for (size_t k = 0; k < segments; ++k)
        total += EncodedBytes(codec, segment_of(block, k).count);
      buffer.resize(total);
      std::vector<absl::Span<char>> frames;
      char* cursor = buffer.data();
      for (size_t k = 0; k < segments; ++k) {
        const size_t bytes = EncodedBytes(codec, segment_of(block, k).count);
        frames.emplace_back(cursor, bytes);
        cursor += bytes;
      }
      return frames;
    };
    auto encode = [&](int block, std::vector<char>& buffer) {
      std::vector<absl::Span<char>> frames = frames_of(block, buffer);
      for (size_t k = 0; k < segments; ++k) {
        const Range part = segment_of(block, k);
        if (feedback != nullptr) {
          feedback->Encode(codec, values + part.begin, part.begin, part.count, frames[k].data());
        } else {
          Encode(codec, values + part.begin, part.count, frames[k].data());
        }
      }
      return frames;
    };
    auto receive = [&](int block, std::vector<absl::Span<char>>& frames, bool add) {
      return [&, block, add](size_t k) -> absl::Status {
        const Range part = segment_of(block, k);
        RETURN_IF_ERROR(Annotate(ValidateEncoded(codec, frames[k].data(), part.count),
                                 absl::StrCat("a segment from rank ", prev)));
        if (add) {
          DecodeAdd(codec, frames[k].data(), part.count, values + part.begin);
        } else {
          Decode(codec, frames[k].data(), part.count, values + part.begin);
        }
        return absl::OkStatus();
      };
    };

    std::vector<char> sending, receiving;
    for (int step = 0; step < n - 1; ++step) {
      const int send_block = (r - step - 1 + 2 * n) % n;
      const int recv_block = (r - step - 2 + 2 * n) % n;
      ExchangeSpec spec;
      spec.send_peer = next;
      spec.send = Const(encode(send_block, sending));
      spec.recv_peer = prev;
      std::vector<absl::Span<char>> frames = frames_of(recv_block, receiving);
      spec.recv = frames;
      spec.on_received = receive(recv_block, frames, /*add=*/true);
      spec.first_tag = StepTag(tag, step);
      RETURN_IF_ERROR(transport_->Exchange(spec, deadline));
    }
    // This rank's reduced block: encoded once, and decoded here too, so the
    // owner holds exactly what everyone else will.
    std::vector<absl::Span<char>> own = encode(r, sending);
    for (size_t k = 0; k < segments; ++k) {
      const Range part = segment_of(r, k);
      Decode(codec, own[k].data(), part.count, values + part.begin);
    }
    for (int step = 0; step < n - 1; ++step) {
      const int send_block = (r - step + n) % n;
      const int recv_block = (r - step - 1 + 2 * n) % n;
      ExchangeSpec spec;
      spec.send_peer = next;
      spec.send = Const(frames_of(send_block, sending));  // the bytes as they arrived
      spec.recv_peer = prev;
      std::vector<absl::Span<char>> frames = frames_of(recv_block, receiving);
      spec.recv = frames;
      spec.on_received = receive(recv_block, frames, /*add=*/false);
      spec.first_tag = StepTag(tag, n + step);
      RETURN_IF_ERROR(transport_->Exchange(spec, deadline));
      std::swap(sending, receiving);
    }
    return absl::OkStatus();
  }

  absl::Status RingReduceScatter(TensorView data, absl::Time deadline, uint64_t tag) {
    const int n = world_size(), r = rank();
    const int next = (r + 1) % n, prev = (r + n - 1) % n;
    const size_t segments = SegmentsPerBlock(data);
    const size_t element = DTypeSize(data.dtype());
    scratch_.resize(SegmentElements(data.dtype()) * element);
    // Step s sends block r-s-1 and receives block r-s-2, adding into it; after
    // n-1 steps block r holds every rank's contribution.
    for (int step = 0; step < n - 1; ++step) {
      const Range send_block = BlockOf(data.count(), n, (r - step - 1 + 2 * n) % n);
      const Range recv_block = BlockOf(data.count(), n, (r - step - 2 + 2 * n) % n);
      const std::vector<absl::Span<char>> targets = Frames(data, recv_block, segments);
      ExchangeSpec spec;
      spec.send_peer = next;
      spec.send = Const(Frames(data, send_block, segments));
      spec.recv_peer = prev;
      for (const absl::Span<char>& target : targets) {
        spec.recv.emplace_back(scratch_.data(), target.size());
      }
      spec.first_tag = StepTag(tag, step);
      spec.on_received = [&](size_t frame) {
        cw::ReduceSum(data.dtype(), targets[frame].data(), scratch_.data(),
                      targets[frame].size() / element);
        return absl::OkStatus();
      };
      RETURN_IF_ERROR(transport_->Exchange(spec, deadline));
    }
    return absl::OkStatus();
  }

  absl::Status RingAllGather(TensorView data, absl::Time deadline, uint64_t tag) {
    const int n = world_size(), r = rank();
    const int next = (r + 1) % n, prev = (r + n - 1) % n;
    const size_t segments = SegmentsPerBlock(data);
    // Step s forwards block r-s and receives block r-s-1 straight into place.
    for (int step = 0; step < n - 1; ++step) {
      ExchangeSpec spec;
      spec.send_peer = next;
      spec.send = Const(Frames(data, BlockOf(data.count(), n, (r - step + n) % n), segments));
      spec.recv_peer = prev;
      spec.recv = Frames(data, BlockOf(data.count(), n, (r - step - 1 + 2 * n) % n), segments);
      spec.first_tag = StepTag(tag, step);
      RETURN_IF_ERROR(transport_->Exchange(spec, deadline));
    }
    return absl::OkStatus();
  }

  absl::Status RingAllReduce(TensorView data, absl::Time deadline, uint64_t tag) {
    RETURN_IF_ERROR(RingReduceScatter(data, deadline, tag));
    return RingAllGather(data, deadline, StepTag(tag, world_size()));
  }

  // Recursive doubling. Ranks past the largest power of two first fold their
  // data into a partner and get the result back at the end. Partners add each
  // other's sums (a + b and b + a are the same bits), so all ranks agree.
  absl::Status SmallAllReduce(TensorView data, absl::Time deadline, uint64_t tag) {
    const int n = world_size(), r = rank();
    int power = 1;
    while (power * 2 <= n) power *= 2;
    const size_t bytes = data.size_bytes();
    char* buffer = static_cast<char*>(data.data());
    scratch_.resize(bytes);
    auto exchange = [&](int send_peer, int recv_peer, int step, bool reduce) {
      ExchangeSpec spec;
      spec.send_peer = send_peer;
      if (send_peer >= 0) spec.send.emplace_back(buffer, bytes);
      spec.recv_peer = recv_peer;
      if (recv_peer >= 0) spec.recv.emplace_back(reduce ? scratch_.data() : buffer, bytes);
      spec.first_tag = StepTag(tag, step);
      RETURN_IF_ERROR(transport_->Exchange(spec, deadline));
      // Only now: the buffer may still have been on its way out until the
      // exchange completed.
      if (reduce) cw::ReduceSum(data.dtype(), buffer, scratch_.data(), data.count());
      return absl::OkStatus();
    };
    if (r >= power) {
      RETURN_IF_ERROR(exchange(r - power, -1, 0, false));
      return exchange(-1, r - power, 1000, false);
    }
    if (r + power < n) RETURN_IF_ERROR(exchange(-1, r + power, 0, true));
    int step = 1;
    for (int mask = 1; mask < power; mask <<= 1, ++step) {
      // Sending the buffer while the partner's sum lands in scratch, then adding.
      RETURN_IF_ERROR(exchange(r ^ mask, r ^ mask, step, true));
    }
    if (r + power < n) RETURN_IF_ERROR(exchange(r + power, -1, 1000, false));
    return absl::OkStatus();
  }

  // A chain root -> root+1 -> ...: each rank forwards a segment as soon as
  // it has it, so the whole chain streams.
  absl::Status ChainBroadcast(TensorView data, int root, absl::Time deadline, uint64_t tag) {
    const int n = world_size();
    const int position = (rank() - root + n) % n;
    const Range all{0, data.count()};
    const size_t segments =
        (data.count() + SegmentElements(data.dtype()) - 1) / SegmentElements(data.dtype());
    const std::vector<absl::Span<char>> frames = Frames(data, all, segments);
    ExchangeSpec spec;
    spec.first_tag = tag;
    if (position > 0) {
      spec.recv_peer = (rank() - 1 + n) % n;
      spec.recv = frames;
    }
    if (position < n - 1) {
      spec.send_peer = (rank() + 1) % n;
      spec.send = Const(frames);
      spec.send_after_receive = position > 0;
    }
    return transport_->Exchange(spec, deadline);
  }

  const std::unique_ptr<Transport> transport_;
  const uint64_t generation_;
  const AlgorithmOptions options_;
  std::atomic<bool> aborted_{false};
  absl::Status first_error_;  // the error that killed this communicator
  uint64_t operations_ = 0;
  std::vector<char> scratch_;
};

}  // namespace

std::unique_ptr<Communicator> NewTransportCommunicator(std::unique_ptr<Transport> transport,
                                                       uint64_t generation,
                                                       const AlgorithmOptions& options) {
  return std::make_unique<TransportCommunicator>(std::move(transport), generation, options);
}

absl::StatusOr<std::unique_ptr<Communicator>> ConnectTcpCommunicator(
    RendezvousStore* store, const TcpTransportOptions& options, absl::Time deadline,
    const AlgorithmOptions& algorithms) {
  ASSIGN_OR_RETURN(std::unique_ptr<Transport> transport,
                   ConnectTcpTransport(store, options, deadline));
  return NewTransportCommunicator(std::move(transport), options.generation, algorithms);
}

}  // namespace potluck
