#include "collectives/testing/conformance.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

#include "collectives/codec.h"
#include "collectives/testing/values.h"
#include "common/dtype.h"
#include "common/tensor_view.h"

namespace potluck {
namespace {

// Far enough away that only a real hang reaches it, even oversubscribed.
absl::Time Far() { return absl::Now() + absl::Seconds(60); }

// A reusable barrier for the threads of one group. Every wait has a deadline:
// a member that never arrives fails the test instead of hanging it.
class ThreadBarrier {
 public:
  explicit ThreadBarrier(int count) : count_(count) {}

  // False when the others did not all arrive by `deadline`.
  bool Wait(absl::Time deadline) {
    absl::MutexLock lock(&mu_);
    const uint64_t phase = phase_;
    if (++arrived_ == count_) {
      arrived_ = 0;
      ++phase_;
      released_.SignalAll();
      return true;
    }
    while (phase_ == phase) {
      if (released_.WaitWithDeadline(&mu_, deadline)) return phase_ != phase;
    }
    return true;
  }

 private:
  const int count_;
  absl::Mutex mu_;
  absl::CondVar released_;
  int arrived_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t phase_ ABSL_GUARDED_BY(mu_) = 0;
};

class ThreadRank final : public RankContext {
 public:
  ThreadRank(int rank, int world_size, ThreadBarrier* barrier, std::vector<std::string>* slots,
             std::unique_ptr<Communicator> comm)
      : rank_(rank),
        world_size_(world_size),
        barrier_(barrier),
        slots_(slots),
        comm_(std::move(comm)) {}

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  Communicator& comm() override { return *comm_; }
  void Sync() override {
    if (!barrier_->Wait(Far())) ADD_FAILURE() << "rank " << rank_ << ": Sync() timed out";
  }
  bool SameBytesOnEveryRank(const void* data, size_t bytes) override {
    (*slots_)[rank_].assign(static_cast<const char*>(data), bytes);
    Sync();  // every slot written
    bool same = true;
    for (const std::string& slot : *slots_) same = same && slot == (*slots_)[0];
    Sync();  // every slot read before the next call writes again
    return same;
  }
  void Vanish() override { comm_.reset(); }

 private:
  const int rank_;
  const int world_size_;
  ThreadBarrier* const barrier_;           // not owned: the group's, outlives this
  std::vector<std::string>* const slots_;  // not owned: one per rank, the group's
  std::unique_ptr<Communicator> comm_;
};

// Calls `check.template operator()<T>()` for every dtype.
template <typename Check>
void ForEveryDType(const Check& check) {
  check.template operator()<float>();
  check.template operator()<Float16>();
  check.template operator()<BFloat16>();
  check.template operator()<double>();
  check.template operator()<int32_t>();
  check.template operator()<int64_t>();
  check.template operator()<uint8_t>();
  check.template operator()<int8_t>();
}

template <typename Check>
void ForEveryFloatDType(const Check& check) {
  check.template operator()<float>();
  check.template operator()<Float16>();
  check.template operator()<BFloat16>();
  check.template operator()<double>();
}

// One element count below the backends' small-message paths and one far
// above them (many segments, every rank's block several frames long).
constexpr size_t kCounts[] = {1031, 100003};

}  // namespace

void ThreadGroupBackend::RunGroup(int world_size, const std::function<void(RankContext&)>& body) {
  uint64_t generation;
  {
    absl::MutexLock lock(&mu_);
    generation = ++generation_;
  }
  InMemoryRendezvousStore store;
  ThreadBarrier barrier(world_size);
  std::vector<std::string> slots(world_size);
  absl::BlockingCounter finished(world_size);
  absl::Notification all_finished;
  std::vector<std::thread> ranks;
  for (int rank = 0; rank < world_size; ++rank) {
    ranks.emplace_back([&, rank] {
      absl::StatusOr<std::unique_ptr<Communicator>> comm =
          Connect(&store, rank, world_size, generation);
      if (comm.ok()) {
        ThreadRank context(rank, world_size, &barrier, &slots, *std::move(comm));
        body(context);
        finished.DecrementCount();
        // Communicators die together, as a job tears its group down.
        all_finished.WaitForNotification();
      } else {
        ADD_FAILURE() << name() << " rank " << rank << ": " << comm.status();
        finished.DecrementCount();
      }
    });
  }
  finished.Wait();
  all_finished.Notify();
  for (std::thread& rank : ranks) rank.join();
}

std::vector<ConformanceCase> ConformanceCases(std::shared_ptr<ConformanceBackend> backend,
                                              const std::vector<int>& world_sizes) {
  std::vector<ConformanceCase> cases;
  for (int world_size : world_sizes) cases.push_back({backend, world_size});
  return cases;
}

std::string ConformanceCaseName(const ::testing::TestParamInfo<ConformanceCase>& info) {
  return absl::StrCat(info.param.backend->name(), "_n", info.param.world_size);
}

void PrintTo(const ConformanceCase& conformance_case, std::ostream* os) {
  *os << conformance_case.backend->name() << ", " << conformance_case.world_size << " ranks";
}

void CommunicatorConformance::SetUp() {
  const std::string why = backend().CannotRun(world_size());
  if (!why.empty()) GTEST_SKIP() << backend().name() << ", " << world_size() << " ranks: " << why;
}

// --- Results.

TEST_P(CommunicatorConformance, AllReduceSumIsExactAndIdenticalInEveryDType) {
  RunGroup([](RankContext& ctx) {
    ForEveryDType([&]<typename T>() {
      for (size_t count : kCounts) {
        std::vector<T> data(count);
        std::vector<double> expected(count);
        for (size_t i = 0; i < count; ++i) {
          data[i] = Make<T>(InputValue<T>(ctx.rank(), i));
          expected[i] = SumOverRanks<T>(ctx.world_size(), i);
        }
        ASSERT_EQ(ctx.comm().AllReduce(TensorView::Of(data.data(), count), ReduceOp::kSum, Far()),
                  absl::OkStatus());
        EXPECT_TRUE(ValuesAre(data, 0, expected, ctx.rank()));
        EXPECT_TRUE(ctx.SameBytesOnEveryRank(data.data(), count * sizeof(T)));
      }
    });
  });
}

// The sum divided by the world size, within a rounding or two of the exact
// quotient (backends may divide or multiply by 1/n), the same bits everywhere.
TEST_P(CommunicatorConformance, AllReduceAverageIsTheSumOverWorldSize) {
  RunGroup([](RankContext& ctx) {
    ForEveryFloatDType([&]<typename T>() {
      const size_t count = kCounts[1];
      std::vector<T> data(count);
      for (size_t i = 0; i < count; ++i) data[i] = Make<T>(InputValue<T>(ctx.rank(), i));
      ASSERT_EQ(ctx.comm().AllReduce(TensorView::Of(data.data(), count), ReduceOp::kAverage, Far()),
                absl::OkStatus());
      for (size_t i = 0; i < count; ++i) {
        const double exact = SumOverRanks<T>(ctx.world_size(), i) / ctx.world_size();
        ASSERT_NEAR(AsDouble(data[i]), exact, 2 * UnitRoundoff<T>() * std::fabs(exact))
            << DTypeName(DTypeOf<T>()) << " element " << i << " rank " << ctx.rank();
      }
      EXPECT_TRUE(ctx.SameBytesOnEveryRank(data.data(), count * sizeof(T)));
    });
  });
}

TEST_P(CommunicatorConformance, WeightedAverageWeighsEachRanksContribution) {
  RunGroup([](RankContext& ctx) {
    ForEveryFloatDType([&]<typename T>() {
      const size_t count = kCounts[0];
      auto weight_of = [](int rank) { return static_cast<double>(rank + 1); };
      double total_weight = 0;
      for (int rank = 0; rank < ctx.world_size(); ++rank) total_weight += weight_of(rank);
      std::vector<T> data(count);
      for (size_t i = 0; i < count; ++i) data[i] = Make<T>(InputValue<T>(ctx.rank(), i));
      ASSERT_EQ(ctx.comm().AllReduce(TensorView::Of(data.data(), count), ReduceOp::kWeightedAverage,
                                     Far(), weight_of(ctx.rank())),
                absl::OkStatus());
      // A rounding when scaling, one per addition, one to the format, on
      // magnitudes below 8.
      const double tolerance = (ctx.world_size() + 2) * UnitRoundoff<T>() * 8.0;
      for (size_t i = 0; i < count; ++i) {
        double expected = 0;
        for (int rank = 0; rank < ctx.world_size(); ++rank) {
          expected += weight_of(rank) / total_weight * InputValue<T>(rank, i);
        }
        ASSERT_NEAR(AsDouble(data[i]), expected, tolerance)
            << DTypeName(DTypeOf<T>()) << " element " << i << " rank " << ctx.rank();
      }
      EXPECT_TRUE(ctx.SameBytesOnEveryRank(data.data(), count * sizeof(T)));
    });
  });
}

// Lossy on the wire, but every rank ends with the same bits, close to the
// exact result, for a sum and for a weighted average with unequal weights;
// with error feedback, repeating the call averages the quantization error
// away.
TEST_P(CommunicatorConformance, CompressedAllReduceIsIdenticalEverywhereAndCloseToExact) {
  RunGroup([](RankContext& ctx) {
    constexpr size_t kCount = 300007;  // more than one int8 scale's segment
    constexpr int kRounds = 8;
    auto input = [](int rank, size_t i) {
      return static_cast<float>(std::sin(0.001 * static_cast<double>(i) * (rank + 1) + rank));
    };
    auto weight_of = [](int rank) { return rank + 1.0; };
    double total_weight = 0;
    for (int rank = 0; rank < ctx.world_size(); ++rank) total_weight += weight_of(rank);
    for (WireCodec codec : {WireCodec::kFloat16, WireCodec::kBFloat16, WireCodec::kInt8}) {
      for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kWeightedAverage}) {
        const std::string what =
            absl::StrCat(WireCodecName(codec), op == ReduceOp::kSum ? " sum" : " weighted average");
        std::vector<double> exact(kCount, 0.0);
        for (size_t i = 0; i < kCount; ++i) {
          for (int rank = 0; rank < ctx.world_size(); ++rank) {
            const double share = op == ReduceOp::kSum ? 1.0 : weight_of(rank) / total_weight;
            exact[i] += share * input(rank, i);
          }
        }
        const double magnitude = op == ReduceOp::kSum ? ctx.world_size() : 1.0;
        ErrorFeedback feedback(kCount);
        std::vector<double> mean(kCount, 0.0);
        double first_error = 0;
        for (int round = 0; round < kRounds; ++round) {
          std::vector<float> data(kCount);
          for (size_t i = 0; i < kCount; ++i) data[i] = input(ctx.rank(), i);
          ASSERT_EQ(ctx.comm().CompressedAllReduce(TensorView::Of(data.data(), kCount), op, codec,
                                                   &feedback, Far(), weight_of(ctx.rank())),
                    absl::OkStatus())
              << what;
          if (round == 0) {
            EXPECT_TRUE(ctx.SameBytesOnEveryRank(data.data(), kCount * sizeof(float))) << what;
            for (size_t i = 0; i < kCount; ++i) {
              first_error = std::max(first_error, std::fabs(data[i] - exact[i]));
            }
          }
          for (size_t i = 0; i < kCount; ++i) mean[i] += data[i] / double{kRounds};
        }
        double mean_error = 0;
        for (size_t i = 0; i < kCount; ++i) {
          mean_error = std::max(mean_error, std::fabs(mean[i] - exact[i]));
        }
        EXPECT_LT(first_error, 0.02 * magnitude) << what << ", rank " << ctx.rank();
        if (ctx.world_size() > 1) {
          EXPECT_GT(first_error, 0.0) << what << ": nothing was lost on the wire?";
          EXPECT_LT(mean_error, 0.5 * first_error)
              << what << ": error feedback did not pay back what was lost";
        }
      }
    }
  });
}

TEST_P(CommunicatorConformance, ReduceScatterLeavesEachRankTheSumOfItsBlock) {
  RunGroup([](RankContext& ctx) {
    ForEveryDType([&]<typename T>() {
      for (size_t block : {size_t{37}, size_t{30011}}) {
        const size_t count = block * static_cast<size_t>(ctx.world_size());
        std::vector<T> data(count);
        for (size_t i = 0; i < count; ++i) data[i] = Make<T>(InputValue<T>(ctx.rank(), i));
        ASSERT_EQ(
            ctx.comm().ReduceScatter(TensorView::Of(data.data(), count), ReduceOp::kSum, Far()),
            absl::OkStatus());
        const size_t begin = static_cast<size_t>(ctx.rank()) * block;
        std::vector<double> expected(block);
        for (size_t j = 0; j < block; ++j)
          expected[j] = SumOverRanks<T>(ctx.world_size(), begin + j);
        EXPECT_TRUE(ValuesAre(data, begin, expected, ctx.rank()));
      }
    });
  });
}

TEST_P(CommunicatorConformance, AllGatherGivesEveryRankEveryBlock) {
  RunGroup([](RankContext& ctx) {
    ForEveryDType([&]<typename T>() {
      for (size_t block : {size_t{29}, size_t{33331}}) {
        const size_t count = block * static_cast<size_t>(ctx.world_size());
        std::vector<T> data(count, Make<T>(99));  // the other ranks' blocks: overwritten
        const size_t own = static_cast<size_t>(ctx.rank()) * block;
        for (size_t j = 0; j < block; ++j) data[own + j] = Make<T>(InputValue<T>(ctx.rank(), j));
        ASSERT_EQ(ctx.comm().AllGather(TensorView::Of(data.data(), count), Far()),
                  absl::OkStatus());
        std::vector<double> expected(count);
        for (size_t i = 0; i < count; ++i) {
          expected[i] = InputValue<T>(static_cast<int>(i / block), i % block);
        }
        EXPECT_TRUE(ValuesAre(data, 0, expected, ctx.rank()));
      }
    });
  });
}

TEST_P(CommunicatorConformance, BroadcastCopiesEachRootsBuffer) {
  RunGroup([](RankContext& ctx) {
    ForEveryDType([&]<typename T>() {
      for (int root = 0; root < ctx.world_size(); ++root) {
        for (size_t count : kCounts) {
          std::vector<T> data(count);
          std::vector<double> expected(count);
          for (size_t i = 0; i < count; ++i) {
            data[i] = Make<T>(InputValue<T>(ctx.rank(), i));
            expected[i] = InputValue<T>(root, i);
          }
          ASSERT_EQ(ctx.comm().Broadcast(TensorView::Of(data.data(), count), root, Far()),
                    absl::OkStatus());
          EXPECT_TRUE(ValuesAre(data, 0, expected, ctx.rank())) << "root " << root;
        }
      }
    });
  });
}

TEST_P(CommunicatorConformance, BarrierWaitsForTheLastRank) {
  const absl::Duration late = absl::Milliseconds(300);
  RunGroup([&](RankContext& ctx) {
    ctx.Sync();
    const absl::Time start = absl::Now();
    if (ctx.rank() == ctx.world_size() - 1) absl::SleepFor(late);
    ASSERT_EQ(ctx.comm().Barrier(Far()), absl::OkStatus());
    EXPECT_GE(absl::Now() - start, late - absl::Milliseconds(50))
        << "rank " << ctx.rank() << " left the barrier before the last rank entered it";
  });
}

// Each bad call in a group of its own: backends may leave a communicator dead
// after any error, a rejected argument included (mpi_communicator.h).
TEST_P(CommunicatorConformance, BadArgumentsAreInvalidArgumentOnEveryRank) {
  RunGroup([](RankContext& ctx) {
    std::vector<float> data(4);
    const absl::Status status =
        ctx.comm().Broadcast(TensorView::Of(data.data(), 4), ctx.world_size(), Far());
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << "root out of range: " << status;
  });
  RunGroup([](RankContext& ctx) {
    std::vector<int32_t> data(4, 1);
    const absl::Status status =
        ctx.comm().AllReduce(TensorView::Of(data.data(), 4), ReduceOp::kAverage, Far());
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << "int32 average: " << status;
  });
  RunGroup([](RankContext& ctx) {
    std::vector<float> data(4, 1.0f);
    const absl::Status status = ctx.comm().AllReduce(TensorView::Of(data.data(), 4),
                                                     ReduceOp::kWeightedAverage, Far(), 0.0);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << "all weights 0: " << status;
  });
  if (world_size() == 1) return;  // every count divides into one block
  RunGroup([](RankContext& ctx) {
    std::vector<float> data(static_cast<size_t>(ctx.world_size()) * 3 + 1);
    const absl::Status status =
        ctx.comm().ReduceScatter(TensorView::Of(data.data(), data.size()), ReduceOp::kSum, Far());
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << "uneven blocks: " << status;
  });
}

TEST_P(CommunicatorConformance, AbortBeforeAnyCallMakesEveryCallAborted) {
  RunGroup([](RankContext& ctx) {
    Communicator& comm = ctx.comm();
    comm.Abort();
    std::vector<float> data(static_cast<size_t>(ctx.world_size()), 1.0f);
    const TensorView view = TensorView::Of(data.data(), data.size());
    EXPECT_EQ(comm.AllReduce(view, ReduceOp::kSum, Far()).code(), absl::StatusCode::kAborted);
    EXPECT_EQ(comm.ReduceScatter(view, ReduceOp::kSum, Far()).code(), absl::StatusCode::kAborted);
    EXPECT_EQ(comm.AllGather(view, Far()).code(), absl::StatusCode::kAborted);
    EXPECT_EQ(comm.Broadcast(view, 0, Far()).code(), absl::StatusCode::kAborted);
    EXPECT_EQ(comm.Barrier(Far()).code(), absl::StatusCode::kAborted);
  });
}

// --- Faults. Rank 0 is the one that waits; the others hold back (Sync)
// until it is done.

TEST_P(CommunicatorConformanceFaults, StalledPeerIsDeadlineExceededNotAHang) {
  const DocumentedBehaviour documented = backend().documented();
  RunGroup([&](RankContext& ctx) {
    std::vector<float> data(1000, 1.0f);
    const TensorView view = TensorView::Of(data.data(), data.size());
    if (ctx.rank() == 0) {
      const absl::Duration timeout = absl::Milliseconds(500);
      const absl::Time start = absl::Now();
      const absl::Status status = ctx.comm().AllReduce(view, ReduceOp::kSum, start + timeout);
      const absl::Duration took = absl::Now() - start;
      EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
      EXPECT_GE(took, timeout);
      EXPECT_LT(took, timeout + absl::Seconds(10));  // not a hang, even on a loaded machine
      // Dead from now on, naming the first error, without waiting for anyone.
      const absl::Status later = ctx.comm().Barrier(Far());
      EXPECT_EQ(later.code(), absl::StatusCode::kFailedPrecondition) << later;
      EXPECT_NE(later.message().find("DEADLINE_EXCEEDED"), absl::string_view::npos) << later;
    }
    ctx.Sync();
    if (ctx.rank() != 0 && documented.peers_complete_abandoned_calls) {
      EXPECT_EQ(ctx.comm().AllReduce(view, ReduceOp::kSum, Far()), absl::OkStatus());
    }
  });
}

TEST_P(CommunicatorConformanceFaults, AbortFromAnotherThreadEndsAPendingCall) {
  const DocumentedBehaviour documented = backend().documented();
  RunGroup([&](RankContext& ctx) {
    std::vector<float> data(1000, 1.0f);
    const TensorView view = TensorView::Of(data.data(), data.size());
    if (ctx.rank() == 0) {
      Communicator& comm = ctx.comm();
      std::thread aborter([&comm] {
        absl::SleepFor(absl::Milliseconds(200));
        comm.Abort();
      });
      const absl::Time start = absl::Now();
      const absl::Status status = comm.AllReduce(view, ReduceOp::kSum, Far());
      const absl::Duration took = absl::Now() - start;
      aborter.join();
      EXPECT_EQ(status.code(), absl::StatusCode::kAborted) << status;
      EXPECT_LT(took, absl::Seconds(5)) << "long after Abort(), though before the deadline";
      EXPECT_EQ(comm.Barrier(Far()).code(), absl::StatusCode::kAborted);
    }
    ctx.Sync();
    if (ctx.rank() != 0 && documented.peers_complete_abandoned_calls) {
      EXPECT_EQ(ctx.comm().AllReduce(view, ReduceOp::kSum, Far()), absl::OkStatus());
    }
  });
}

TEST_P(CommunicatorConformanceFaults, VanishedPeerFailsTheOthersWithinABoundedTime) {
  const DocumentedBehaviour documented = backend().documented();
  if (!documented.peer_vanished_not_testable.empty()) {
    GTEST_SKIP() << backend().name() << " documents: " << documented.peer_vanished_not_testable;
  }
  RunGroup([&](RankContext& ctx) {
    const bool vanishing = ctx.rank() == ctx.world_size() - 1;
    if (vanishing) ctx.Vanish();
    ctx.Sync();  // it is gone before the others call
    if (vanishing) return;
    std::vector<float> data(1000, 1.0f);
    const absl::Duration timeout = absl::Seconds(5);
    const absl::Time start = absl::Now();
    const absl::Status status = ctx.comm().AllReduce(TensorView::Of(data.data(), data.size()),
                                                     ReduceOp::kSum, start + timeout);
    const absl::Duration took = absl::Now() - start;
    EXPECT_EQ(status.code(), documented.peer_vanished) << "rank " << ctx.rank() << ": " << status;
    if (documented.peer_vanished_before_deadline) {
      EXPECT_LT(took, timeout / 2) << "rank " << ctx.rank() << " waited for its deadline";
    } else {
      EXPECT_LT(took, timeout + absl::Seconds(3)) << "rank " << ctx.rank();
    }
  });
}

}  // namespace potluck
