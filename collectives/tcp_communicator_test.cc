#include "collectives/tcp_communicator.h"

#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

#include "collectives/fusion.h"
#include "collectives/testing/conformance.h"
#include "collectives/testing/values.h"

namespace potluck {
namespace {

constexpr char kSecret[] = "generation-secret";

absl::Time In(absl::Duration duration) { return absl::Now() + duration; }

// Ranks as threads over loopback TCP, each group a new generation.
class TcpBackend final : public ThreadGroupBackend {
 public:
  explicit TcpBackend(AlgorithmOptions algorithms = {}) : algorithms_(algorithms) {}
  std::string name() const override { return "tcp"; }
  // tcp_communicator.h: a vanished member's links close, so the others fail
  // with kUnavailable at once; nothing is left pending after a deadline.
  DocumentedBehaviour documented() const override { return {}; }
  std::string CannotRun(int) const override { return ""; }

 protected:
  absl::StatusOr<std::unique_ptr<Communicator>> Connect(RendezvousStore* store, int rank,
                                                        int world_size,
                                                        uint64_t generation) override {
    TcpTransportOptions options;
    options.rank = rank;
    options.world_size = world_size;
    options.generation = generation;
    options.secret = kSecret;
    return ConnectTcpCommunicator(store, options, In(absl::Seconds(20)), algorithms_);
  }

 private:
  const AlgorithmOptions algorithms_;
};

INSTANTIATE_TEST_SUITE_P(Tcp, CommunicatorConformance,
                         ::testing::ValuesIn(ConformanceCases(std::make_shared<TcpBackend>(),
                                                              {1, 2, 3, 4, 5, 8})),
                         ConformanceCaseName);
INSTANTIATE_TEST_SUITE_P(Tcp, CommunicatorConformanceFaults,
                         ::testing::ValuesIn(ConformanceCases(std::make_shared<TcpBackend>(),
                                                              {2, 3})),
                         ConformanceCaseName);

// The TCP-only tests below: algorithm options, lengths around the
// algorithms' thresholds, codecs, fusion, an injected transport fault.
void RunGroup(int world_size, const std::function<void(Communicator&)>& body,
              AlgorithmOptions algorithms = {}) {
  TcpBackend(algorithms).RunGroup(world_size, [&](RankContext& context) { body(context.comm()); });
}

struct Shape {
  int world_size;
  size_t count;
};

class AllReduceTest : public ::testing::TestWithParam<Shape> {};

// Exact small integers, so every dtype (bfloat16 too) can represent the sum.
template <typename T>
void CheckSum(const Shape& shape, AlgorithmOptions algorithms) {
  RunGroup(
      shape.world_size,
      [&](Communicator& communicator) {
        std::vector<T> data(shape.count);
        for (size_t i = 0; i < data.size(); ++i) {
          data[i] = Make<T>((communicator.rank() + 1) * double(i % 7 + 1));
        }
        ASSERT_TRUE(communicator
                        .AllReduce(TensorView::Of(data.data(), data.size()), ReduceOp::kSum,
                                   In(absl::Seconds(20)))
                        .ok());
        const double ranks = shape.world_size * (shape.world_size + 1) / 2.0;
        for (size_t i = 0; i < data.size(); ++i) {
          ASSERT_EQ(AsDouble(data[i]), ranks * double(i % 7 + 1))
              << DTypeName(DTypeOf<T>()) << " element " << i << " rank " << communicator.rank();
        }
      },
      algorithms);
}

TEST_P(AllReduceTest, SumsEveryDType) {
  AlgorithmOptions small_segments;
  small_segments.segment_bytes = 4096;  // many frames per block: exercises the pipeline
  CheckSum<float>(GetParam(), small_segments);
  CheckSum<double>(GetParam(), {});
  CheckSum<int32_t>(GetParam(), small_segments);
  CheckSum<int64_t>(GetParam(), {});
  CheckSum<Float16>(GetParam(), small_segments);
  CheckSum<BFloat16>(GetParam(), {});
}

// Random floats: the sum depends on the order of additions, and every rank
// must still end with the same bits.
TEST_P(AllReduceTest, EveryRankEndsWithTheSameBits) {
  const Shape shape = GetParam();
  std::vector<std::vector<float>> results(shape.world_size);
  RunGroup(shape.world_size, [&](Communicator& communicator) {
    std::mt19937 rng(communicator.rank() + 1);
    std::normal_distribution<float> normal;
    std::vector<float> data(shape.count);
    for (float& value : data) value = normal(rng);
    ASSERT_TRUE(communicator
                    .AllReduce(TensorView::Of(data.data(), data.size()), ReduceOp::kAverage,
                               In(absl::Seconds(20)))
                    .ok());
    results[communicator.rank()] = data;
  });
  for (int rank = 1; rank < shape.world_size; ++rank) {
    ASSERT_EQ(std::memcmp(results[rank].data(), results[0].data(), shape.count * sizeof(float)), 0)
        << "rank " << rank;
  }
}

INSTANTIATE_TEST_SUITE_P(WorldSizesAndLengths, AllReduceTest,
                         ::testing::Values(Shape{1, 100}, Shape{2, 1}, Shape{2, 1000},
                                           Shape{2, 100000}, Shape{3, 5}, Shape{3, 100003},
                                           Shape{4, 1000}, Shape{4, 300000}, Shape{5, 17},
                                           Shape{5, 70001}, Shape{8, 3}, Shape{8, 80000}),
                         [](const ::testing::TestParamInfo<Shape>& test) {
                           return absl::StrCat("n", test.param.world_size, "_count",
                                               test.param.count);
                         });

// Every rank's input, regenerated anywhere from the rank alone.
std::vector<float> RankInput(int rank, size_t count) {
  std::mt19937 rng(100 + rank);
  std::normal_distribution<float> normal(0.0f, 1.0f + rank);
  std::vector<float> values(count);
  for (float& value : values) value = normal(rng);
  return values;
}

class CompressedAllReduceTest : public ::testing::TestWithParam<WireCodec> {};

// Lossy on the wire, but every rank ends with the same bits, close to the
// exact sum; and with error feedback, repeating the all-reduce averages the
// quantization error away.
TEST_P(CompressedAllReduceTest, IsBitIdenticalEverywhereAndCloseToTheExactSum) {
  constexpr int kRanks = 4;
  constexpr size_t kCount = 100003;
  constexpr int kRounds = 20;
  const WireCodec codec = GetParam();
  std::vector<double> exact(kCount, 0.0), scale(kCount, 0.0);
  for (int rank = 0; rank < kRanks; ++rank) {
    const std::vector<float> input = RankInput(rank, kCount);
    for (size_t i = 0; i < kCount; ++i) {
      exact[i] += input[i];
      scale[i] += std::fabs(input[i]);
    }
  }
  const double magnitude = *std::max_element(scale.begin(), scale.end());
  std::vector<std::vector<float>> first(kRanks);
  std::vector<std::vector<double>> mean(kRanks, std::vector<double>(kCount, 0.0));
  AlgorithmOptions algorithms;
  algorithms.segment_bytes = 16 << 10;  // many segments, each with its own int8 scale
  RunGroup(
      kRanks,
      [&](Communicator& communicator) {
        ErrorFeedback feedback(kCount);
        for (int round = 0; round < kRounds; ++round) {
          std::vector<float> data = RankInput(communicator.rank(), kCount);
          ASSERT_TRUE(communicator
                          .CompressedAllReduce(TensorView::Of(data.data(), kCount), ReduceOp::kSum,
                                               codec, &feedback, In(absl::Seconds(20)))
                          .ok());
          if (round == 0) first[communicator.rank()] = data;
          for (size_t i = 0; i < kCount; ++i) mean[communicator.rank()][i] += data[i] / kRounds;
        }
      },
      algorithms);
  double first_error = 0, mean_error = 0;
  for (size_t i = 0; i < kCount; ++i) {
    first_error = std::max(first_error, std::fabs(first[0][i] - exact[i]));
    mean_error = std::max(mean_error, std::fabs(mean[0][i] - exact[i]));
  }
  for (int rank = 1; rank < kRanks; ++rank) {
    ASSERT_EQ(std::memcmp(first[rank].data(), first[0].data(), kCount * sizeof(float)), 0)
        << "rank " << rank << " differs from rank 0";
  }
  const double tolerance = codec == WireCodec::kInt8 ? 0.05 : 0.01;
  EXPECT_LT(first_error, tolerance * magnitude) << WireCodecName(codec);
  EXPECT_LT(mean_error, 0.5 * first_error) << "error feedback did not pay back what was lost";
}

INSTANTIATE_TEST_SUITE_P(Codecs, CompressedAllReduceTest,
                         ::testing::Values(WireCodec::kFloat16, WireCodec::kBFloat16,
                                           WireCodec::kInt8),
                         [](const ::testing::TestParamInfo<WireCodec>& test) {
                           return std::string(WireCodecName(test.param));
                         });

// Hundreds of small tensors in one collective give the same sums as one
// collective each.
TEST(TcpCommunicator, FusedAllReduceMatchesOneCallPerTensor) {
  RunGroup(3, [](Communicator& communicator) {
    std::vector<std::vector<float>> fused(300), separate(300);
    for (size_t t = 0; t < fused.size(); ++t) {
      fused[t].assign(t % 17 + 1, float(communicator.rank() + 1) * float(t + 1));
      separate[t] = fused[t];
    }
    std::vector<TensorView> views;
    for (auto& tensor : fused) views.push_back(TensorView::Of(tensor.data(), tensor.size()));
    std::vector<char> scratch;
    ASSERT_TRUE(
        FusedAllReduce(communicator, views, ReduceOp::kAverage, In(absl::Seconds(20)), scratch)
            .ok());
    for (auto& tensor : separate) {
      ASSERT_TRUE(communicator
                      .AllReduce(TensorView::Of(tensor.data(), tensor.size()), ReduceOp::kAverage,
                                 In(absl::Seconds(20)))
                      .ok());
    }
    EXPECT_EQ(fused, separate);
    std::vector<double> other_dtype(3);
    views.push_back(TensorView::Of(other_dtype.data(), 3));
    EXPECT_EQ(
        FusedAllReduce(communicator, views, ReduceOp::kSum, In(absl::Seconds(1)), scratch).code(),
        absl::StatusCode::kInvalidArgument);
  });
}

// Frames of 1000 bytes: the chain pipelines many of them.
TEST(TcpCommunicator, BroadcastPipelinesSmallSegmentsFromEveryRoot) {
  AlgorithmOptions small_segments;
  small_segments.segment_bytes = 1000;
  RunGroup(
      4,
      [](Communicator& communicator) {
        for (int root = 0; root < 4; ++root) {
          std::vector<float> data(12345, communicator.rank() == root ? float(root) + 0.5f : -1.0f);
          ASSERT_TRUE(
              communicator
                  .Broadcast(TensorView::Of(data.data(), data.size()), root, In(absl::Seconds(20)))
                  .ok());
          for (float value : data) ASSERT_EQ(value, float(root) + 0.5f);
        }
        std::vector<float> data(4);
        EXPECT_EQ(
            communicator.Broadcast(TensorView::Of(data.data(), 4), 4, In(absl::Seconds(1))).code(),
            absl::StatusCode::kInvalidArgument);
      },
      small_segments);
}

// Wraps a transport and kills it on its `die_at`-th exchange, as a crashed
// NIC or process would: links shut, an error for the caller.
class DyingTransport final : public Transport {
 public:
  DyingTransport(std::unique_ptr<Transport> inner, int die_at)
      : inner_(std::move(inner)), die_at_(die_at) {}
  int rank() const override { return inner_->rank(); }
  int world_size() const override { return inner_->world_size(); }
  absl::Status Exchange(const ExchangeSpec& spec, absl::Time deadline) override {
    if (++exchanges_ >= die_at_) {
      inner_->Close();
      return absl::UnavailableError("injected: this rank's transport died");
    }
    return inner_->Exchange(spec, deadline);
  }
  void Abort() override { inner_->Abort(); }
  void Close() override { inner_->Close(); }

 private:
  std::unique_ptr<Transport> inner_;
  const int die_at_;
  int exchanges_ = 0;
};

TEST(TcpCommunicatorFaults, TransportDyingMidAllReduceFailsEveryRankWithinTheDeadline) {
  constexpr int kRanks = 4;
  InMemoryRendezvousStore store;
  std::vector<absl::Status> results(kRanks);
  std::vector<absl::Duration> took(kRanks);
  std::vector<std::thread> ranks;
  // Long enough that a loaded machine cannot push the exchanges before the
  // injected death past it: only the death may end the call.
  const absl::Duration timeout = absl::Seconds(30);
  // The others must notice the dead links (kUnavailable), not wait out the
  // deadline: well inside it, yet far more than a loaded machine needs.
  const absl::Duration promptly = timeout / 3;
  for (int rank = 0; rank < kRanks; ++rank) {
    ranks.emplace_back([&, rank] {
      TcpTransportOptions options;
      options.rank = rank;
      options.world_size = kRanks;
      options.generation = 7;
      options.secret = kSecret;
      auto transport = ConnectTcpTransport(&store, options, In(absl::Seconds(20)));
      ASSERT_TRUE(transport.ok()) << transport.status();
      std::unique_ptr<Transport> wrapped = std::move(*transport);
      if (rank == 2) wrapped = std::make_unique<DyingTransport>(std::move(wrapped), 3);
      AlgorithmOptions algorithms;
      algorithms.segment_bytes = 64 << 10;
      auto communicator = NewTransportCommunicator(std::move(wrapped), 7, algorithms);
      std::vector<float> data(4 << 20, 1.0f);  // 16 MiB: many frames in flight
      const absl::Time start = absl::Now();
      results[rank] = communicator->AllReduce(TensorView::Of(data.data(), data.size()),
                                              ReduceOp::kSum, start + timeout);
      took[rank] = absl::Now() - start;
      // Dead from now on, naming the first error.
      const absl::Status again =
          communicator->AllReduce(TensorView::Of(data.data(), 1), ReduceOp::kSum, In(timeout));
      EXPECT_EQ(again.code(), absl::StatusCode::kFailedPrecondition) << again;
    });
  }
  for (std::thread& rank : ranks) rank.join();
  for (int rank = 0; rank < kRanks; ++rank) {
    EXPECT_EQ(results[rank].code(), absl::StatusCode::kUnavailable)
        << "rank " << rank << ": " << results[rank];
    EXPECT_LT(took[rank], promptly) << "rank " << rank;
  }
  EXPECT_NE(results[2].message().find("injected"), absl::string_view::npos);
}

}  // namespace
}  // namespace potluck
