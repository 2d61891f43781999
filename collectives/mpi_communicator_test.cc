// Tests of the MPI Communicator backend. Run under mpirun; every rank runs
// every test, in the same order:
//
//   mpirun --oversubscribe --mca mpi_yield_when_idle 1 -np 4 mpi_communicator_test
//
// (as root, with OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 set).
//
// Any world size works; tests that need two ranks skip, visibly, on one. A
// failure on any rank fails that test on every rank (see TearDown), so rank
// 0's summary is the job's; the other ranks print only their failures.
//
// Values are chosen so that sums are exact in every dtype (bf16 included) for
// up to 8 ranks, so most tests compare exact values.
#include "collectives/mpi_communicator.h"

// MPI's C API only: OpenMPI's deprecated C++ bindings (mpicxx.h) do not
// compile warning-free.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

#include "collectives/testing/conformance.h"
#include "collectives/testing/values.h"
#include "common/clock.h"
#include "common/dtype.h"
#include "common/tensor_view.h"

namespace potluck {
namespace {

// Far enough away that only a real hang reaches it, even oversubscribed.
absl::Time Deadline() { return absl::Now() + absl::Seconds(60); }

int WorldRank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

int WorldSize() {
  int size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

// The helpers below use MPI directly on MPI_COMM_WORLD, independently of the
// code under test.

bool TrueOnEveryRank(bool value) {
  int mine = value ? 1 : 0;
  int all = 0;
  MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
  return all != 0;
}

bool SameBytesOnEveryRank(const void* data, size_t bytes, MPI_Comm comm = MPI_COMM_WORLD) {
  int members = 0;
  MPI_Comm_size(comm, &members);
  std::vector<uint8_t> all(bytes * static_cast<size_t>(members));
  MPI_Allgather(data, static_cast<int>(bytes), MPI_BYTE, all.data(), static_cast<int>(bytes),
                MPI_BYTE, comm);
  for (size_t offset = bytes; offset < all.size(); offset += bytes) {
    if (std::memcmp(all.data(), all.data() + offset, bytes) != 0) return false;
  }
  return true;
}

std::vector<int64_t> AllGatherInt64(int64_t value) {
  std::vector<int64_t> all(static_cast<size_t>(WorldSize()));
  MPI_Allgather(&value, 1, MPI_INT64_T, all.data(), 1, MPI_INT64_T, MPI_COMM_WORLD);
  return all;
}

// A pseudo-random value in [-1, 1) for (rank, i): inputs whose sums round.
double RandomValue(int rank, size_t i) {
  uint64_t x = (static_cast<uint64_t>(rank) << 40) ^ i;
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  x ^= x >> 31;
  return static_cast<double>(x >> 11) * std::ldexp(1.0, -52) - 1.0;
}

// --- Fixtures.

class MpiCommunicatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto comm = CreateMpiWorldCommunicator(++generation_, Deadline());
    ASSERT_TRUE(comm.ok()) << comm.status();
    comm_ = std::move(comm).value();
  }

  // Keeps rank 0's summary honest: a failure anywhere fails the test on every
  // rank. Also keeps the ranks in step between tests.
  void TearDown() override {
    EXPECT_TRUE(TrueOnEveryRank(!HasFailure())) << "this test failed on another rank";
  }

  // A second communicator over MPI_COMM_WORLD, to order ranks around one that
  // is left stalled on purpose.
  std::unique_ptr<Communicator> MakeControlCommunicator() {
    auto comm = CreateMpiWorldCommunicator(++generation_, Deadline());
    EXPECT_TRUE(comm.ok()) << comm.status();
    return comm.ok() ? std::move(comm).value() : nullptr;
  }

  static uint64_t generation_;
  std::unique_ptr<Communicator> comm_;
};

uint64_t MpiCommunicatorTest::generation_ = 0;

class DTypeNames {
 public:
  template <typename T>
  static std::string GetName(int) {
    return std::string(DTypeName(DTypeOf<T>()));
  }
};

template <typename T>
class MpiCommunicatorAllDTypesTest : public MpiCommunicatorTest {
 protected:
  void SetUp() override {
    if (WorldSize() > kMaxRanksForExactSums) {
      GTEST_SKIP() << "the exact-value inputs hold for up to " << kMaxRanksForExactSums << " ranks";
    }
    MpiCommunicatorTest::SetUp();
  }
};

template <typename T>
class MpiCommunicatorFloatTest : public MpiCommunicatorAllDTypesTest<T> {};
using FloatDTypes = ::testing::Types<float, Float16, BFloat16, double>;
TYPED_TEST_SUITE(MpiCommunicatorFloatTest, FloatDTypes, DTypeNames);

// --- Averages (floating point only).

TYPED_TEST(MpiCommunicatorFloatTest, AllReduceAverageIsTheSumDividedByWorldSize) {
  using T = TypeParam;
  constexpr size_t kCount = 259;
  std::vector<T> data(kCount);
  std::vector<double> expected(kCount);
  for (size_t i = 0; i < kCount; ++i) {
    data[i] = Make<T>(InputValue<T>(WorldRank(), i));
    // The correctly rounded quotient of the exact sum.
    expected[i] = AsDouble(Make<T>(SumOverRanks<T>(WorldSize(), i) / WorldSize()));
  }
  ASSERT_EQ(
      this->comm_->AllReduce(TensorView::Of(data.data(), kCount), ReduceOp::kAverage, Deadline()),
      absl::OkStatus());
  EXPECT_TRUE(ValuesAre(data, 0, expected, WorldRank()));
  EXPECT_TRUE(SameBytesOnEveryRank(data.data(), kCount * sizeof(T)));
}

TYPED_TEST(MpiCommunicatorFloatTest, ReduceScatterAverageIsTheBlockSumDividedByWorldSize) {
  using T = TypeParam;
  constexpr size_t kBlock = 23;
  const size_t count = kBlock * static_cast<size_t>(WorldSize());
  std::vector<T> data(count);
  for (size_t i = 0; i < count; ++i) data[i] = Make<T>(InputValue<T>(WorldRank(), i));
  ASSERT_EQ(this->comm_->ReduceScatter(TensorView::Of(data.data(), count), ReduceOp::kAverage,
                                       Deadline()),
            absl::OkStatus());
  const size_t begin = static_cast<size_t>(WorldRank()) * kBlock;
  std::vector<double> expected(kBlock);
  for (size_t j = 0; j < kBlock; ++j) {
    expected[j] = AsDouble(Make<T>(SumOverRanks<T>(WorldSize(), begin + j) / WorldSize()));
  }
  EXPECT_TRUE(ValuesAre(data, begin, expected, WorldRank()));
}

TYPED_TEST(MpiCommunicatorFloatTest, WeightedAverageIgnoresZeroWeightRanksEvenIfTheyHoldNaN) {
  using T = TypeParam;
  constexpr size_t kCount = 64;
  const int heavy = WorldSize() - 1;
  std::vector<T> data(kCount);
  std::vector<double> expected(kCount);
  for (size_t i = 0; i < kCount; ++i) {
    data[i] = Make<T>(WorldRank() == heavy ? InputValue<T>(heavy, i) : std::nan(""));
    expected[i] = InputValue<T>(heavy, i);
  }
  const double weight = WorldRank() == heavy ? 3.5 : 0.0;
  ASSERT_EQ(this->comm_->AllReduce(TensorView::Of(data.data(), kCount), ReduceOp::kWeightedAverage,
                                   Deadline(), weight),
            absl::OkStatus());
  EXPECT_TRUE(ValuesAre(data, 0, expected, WorldRank()));
}

TYPED_TEST(MpiCommunicatorFloatTest, AllReduceOfInexactSumsIsBitIdenticalOnEveryRank) {
  using T = TypeParam;
  // Large enough (>= 64 KiB) that OpenMPI may pick its large-message
  // algorithms rather than reduce-then-broadcast.
  constexpr size_t kCount = size_t{1} << 16;
  std::vector<T> data(kCount);
  std::vector<double> bound(kCount);  // sum of magnitudes, for the error bound
  std::vector<double> reference(kCount);
  for (size_t i = 0; i < kCount; ++i) {
    data[i] = Make<T>(RandomValue(WorldRank(), i));
    for (int rank = 0; rank < WorldSize(); ++rank) {
      const double value = AsDouble(Make<T>(RandomValue(rank, i)));
      reference[i] += value;
      bound[i] += std::fabs(value);
    }
  }
  ASSERT_EQ(this->comm_->AllReduce(TensorView::Of(data.data(), kCount), ReduceOp::kSum, Deadline()),
            absl::OkStatus());
  EXPECT_TRUE(SameBytesOnEveryRank(data.data(), kCount * sizeof(T)));
  size_t outside = 0;
  for (size_t i = 0; i < kCount; ++i) {
    // N-1 additions, each rounding by at most one unit of roundoff.
    // (The second term covers fp16's subnormals, spaced 2^-24 = u * 2^-13.)
    const double tolerance =
        WorldSize() * UnitRoundoff<T>() * bound[i] + UnitRoundoff<T>() * std::ldexp(1.0, -13);
    if (std::fabs(AsDouble(data[i]) - reference[i]) > tolerance) ++outside;
  }
  EXPECT_EQ(outside, 0u);
}

// --- The conformance suite (collectives/testing/conformance.h).

// A group of the first `world_size` processes of the job, over a
// communicator split from MPI_COMM_WORLD; the other processes wait. Groups of
// up to 4 run under `mpirun -np 4`; larger ones skip, visibly.
class MpiRankContext final : public RankContext {
 public:
  MpiRankContext(MPI_Comm group, std::unique_ptr<Communicator> comm)
      : group_(group), comm_(std::move(comm)) {}
  int rank() const override { return comm_->rank(); }
  int world_size() const override { return comm_->world_size(); }
  Communicator& comm() override { return *comm_; }
  void Sync() override { MPI_Barrier(group_); }
  bool SameBytesOnEveryRank(const void* data, size_t bytes) override {
    return potluck::SameBytesOnEveryRank(data, bytes, group_);
  }
  void Vanish() override { ADD_FAILURE() << "an MPI member cannot vanish in-process"; }

 private:
  const MPI_Comm group_;  // not owned: RunGroup's, freed after this is gone
  std::unique_ptr<Communicator> comm_;
};

class MpiBackend final : public ConformanceBackend {
 public:
  std::string name() const override { return "mpi"; }
  // mpi_communicator.h: "Peers are not told" and "Deadlines and Abort()".
  DocumentedBehaviour documented() const override {
    DocumentedBehaviour documented;
    documented.peer_vanished_not_testable =
        "a member that dies is reported by OpenMPI's runtime killing the whole job, not as "
        "kUnavailable, and one that gives up is not told to the others, which fail at their "
        "own deadlines (StalledPeerIsDeadlineExceededNotAHang)";
    documented.peers_complete_abandoned_calls = true;
    return documented;
  }
  std::string CannotRun(int world_size) const override {
    if (world_size <= WorldSize()) return "";
    return absl::StrCat("mpirun started ", WorldSize(), " process(es); run with -np ", world_size);
  }
  void RunGroup(int world_size, const std::function<void(RankContext&)>& body) override {
    const bool member = WorldRank() < world_size;
    MPI_Comm group = MPI_COMM_NULL;
    MPI_Comm_split(MPI_COMM_WORLD, member ? 0 : MPI_UNDEFINED, WorldRank(), &group);
    std::unique_ptr<MpiRankContext> context;
    if (member) {
      auto comm = CreateMpiCommunicator({MPI_Comm_c2f(group)}, ++generation_, Deadline());
      if (comm.ok()) {
        context = std::make_unique<MpiRankContext>(group, *std::move(comm));
        body(*context);
      } else {
        ADD_FAILURE() << "rank " << WorldRank() << ": " << comm.status();
      }
    }
    // As MpiCommunicatorTest's TearDown: a failure anywhere fails every rank.
    EXPECT_TRUE(TrueOnEveryRank(!::testing::Test::HasFailure()))
        << "this test failed on another rank";
    context.reset();
    if (group != MPI_COMM_NULL) MPI_Comm_free(&group);
  }

 private:
  uint64_t generation_ = 10000;  // apart from MpiCommunicatorTest's
};

INSTANTIATE_TEST_SUITE_P(Mpi, CommunicatorConformance,
                         ::testing::ValuesIn(ConformanceCases(std::make_shared<MpiBackend>(),
                                                              {1, 2, 3, 4})),
                         ConformanceCaseName);
INSTANTIATE_TEST_SUITE_P(Mpi, CommunicatorConformanceFaults,
                         ::testing::ValuesIn(ConformanceCases(std::make_shared<MpiBackend>(),
                                                              {2, 3})),
                         ConformanceCaseName);

// --- 16-bit rounding, on pairs of ranks so that the sum is a single addition.

TEST_F(MpiCommunicatorTest, SixteenBitSumsRoundToNearestEven) {
  MPI_Comm pair;
  ASSERT_EQ(MPI_Comm_split(MPI_COMM_WORLD, WorldRank() / 2, WorldRank(), &pair), MPI_SUCCESS);
  auto comm = CreateMpiCommunicator({MPI_Comm_c2f(pair)}, 1000, Deadline());
  MPI_Comm_free(&pair);
  ASSERT_TRUE(comm.ok()) << comm.status();
  if ((*comm)->world_size() < 2) return;  // the odd rank out has no partner
  const bool first = (*comm)->rank() == 0;
  // Element 0: 1 + ulp plus half an ulp ties between odd and even: up.
  // Element 1: 1 + 2 ulp plus half an ulp ties between even and odd: down.
  // Truncation fails element 0, rounding half up fails element 1.
  for (const int mantissa_bits : {10, 7}) {  // fp16, bf16
    const double ulp = std::ldexp(1.0, -mantissa_bits);
    const std::vector<double> mine =
        first ? std::vector<double>{1 + ulp, 1 + 2 * ulp} : std::vector<double>{ulp / 2, ulp / 2};
    const std::vector<double> expected = {1 + 2 * ulp, 1 + 2 * ulp};
    if (mantissa_bits == 10) {
      std::vector<Float16> data = {Make<Float16>(mine[0]), Make<Float16>(mine[1])};
      ASSERT_EQ((*comm)->AllReduce(TensorView::Of(data.data(), 2), ReduceOp::kSum, Deadline()),
                absl::OkStatus());
      EXPECT_TRUE(ValuesAre(data, 0, expected, WorldRank())) << "float16";
    } else {
      std::vector<BFloat16> data = {Make<BFloat16>(mine[0]), Make<BFloat16>(mine[1])};
      ASSERT_EQ((*comm)->AllReduce(TensorView::Of(data.data(), 2), ReduceOp::kSum, Deadline()),
                absl::OkStatus());
      EXPECT_TRUE(ValuesAre(data, 0, expected, WorldRank())) << "bfloat16";
    }
  }
}

// --- Initialization, identity and sub-communicators.

TEST_F(MpiCommunicatorTest, SecondMpiRuntimeIsFailedPrecondition) {
  auto runtime = MpiRuntime::Init(nullptr, nullptr);  // main already initialized MPI
  EXPECT_EQ(runtime.status().code(), absl::StatusCode::kFailedPrecondition) << runtime.status();
}

TEST_F(MpiCommunicatorTest, ReportsWorldRankSizeAndGeneration) {
  EXPECT_EQ(comm_->rank(), WorldRank());
  EXPECT_EQ(comm_->world_size(), WorldSize());
  EXPECT_EQ(comm_->generation(), generation_);
}

TEST_F(MpiCommunicatorTest, SplitCommunicatorKeepsWorkingAfterCallerFreesItsHandle) {
  MPI_Comm half;
  ASSERT_EQ(MPI_Comm_split(MPI_COMM_WORLD, WorldRank() % 2, WorldRank(), &half), MPI_SUCCESS);
  auto comm = CreateMpiCommunicator({MPI_Comm_c2f(half)}, 77, Deadline());
  MPI_Comm_free(&half);  // the communicator works on its own duplicate
  ASSERT_TRUE(comm.ok()) << comm.status();
  const int members = (WorldSize() - WorldRank() % 2 + 1) / 2;
  EXPECT_EQ((*comm)->world_size(), members);
  EXPECT_EQ((*comm)->rank(), WorldRank() / 2);
  EXPECT_EQ((*comm)->generation(), 77u);
  int64_t value = WorldRank();
  ASSERT_EQ((*comm)->AllReduce(TensorView::Of(&value, 1), ReduceOp::kSum, Deadline()),
            absl::OkStatus());
  int64_t expected = 0;
  for (int rank = WorldRank() % 2; rank < WorldSize(); rank += 2) expected += rank;
  EXPECT_EQ(value, expected);
}

TEST_F(MpiCommunicatorTest, ZeroElementCallsSucceed) {
  TensorView empty(nullptr, DType::kFloat32, 0);
  EXPECT_EQ(comm_->AllReduce(empty, ReduceOp::kAverage, Deadline()), absl::OkStatus());
  EXPECT_EQ(comm_->ReduceScatter(empty, ReduceOp::kSum, Deadline()), absl::OkStatus());
  EXPECT_EQ(comm_->AllGather(empty, Deadline()), absl::OkStatus());
  EXPECT_EQ(comm_->Broadcast(empty, 0, Deadline()), absl::OkStatus());
}

TEST_F(MpiCommunicatorTest, BarrierReturnsOnlyAfterEveryRankEntered) {
  // Rank r enters 40 ms * r late. The ranks share one machine's clock.
  absl::SleepFor(absl::Milliseconds(40) * WorldRank());
  const int64_t entered = absl::ToUnixNanos(absl::Now());
  ASSERT_EQ(comm_->Barrier(Deadline()), absl::OkStatus());
  const int64_t left = absl::ToUnixNanos(absl::Now());
  const std::vector<int64_t> entries = AllGatherInt64(entered);
  for (int64_t entry : entries) EXPECT_GE(left, entry);
}

// --- Rejected arguments: kInvalidArgument on every rank, then dead.

TEST_F(MpiCommunicatorTest, NonDivisibleReduceScatterIsInvalidArgumentThenDead) {
  if (WorldSize() == 1) GTEST_SKIP() << "every count divides into one block";
  std::vector<float> data(static_cast<size_t>(WorldSize()) * 3 + 1);
  const absl::Status status =
      comm_->ReduceScatter(TensorView::Of(data.data(), data.size()), ReduceOp::kSum, Deadline());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("equal blocks"), absl::string_view::npos) << status;
  // After any error the communicator is dead, naming the first error.
  const absl::Status later = comm_->Barrier(Deadline());
  EXPECT_EQ(later.code(), absl::StatusCode::kFailedPrecondition) << later;
  EXPECT_NE(later.message().find("equal blocks"), absl::string_view::npos) << later;
}

TEST_F(MpiCommunicatorTest, NonDivisibleAllGatherIsInvalidArgument) {
  if (WorldSize() == 1) GTEST_SKIP() << "every count divides into one block";
  std::vector<int32_t> data(static_cast<size_t>(WorldSize()) + 1);
  const absl::Status status =
      comm_->AllGather(TensorView::Of(data.data(), data.size()), Deadline());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
}

TEST_F(MpiCommunicatorTest, BroadcastRootOutOfRangeIsInvalidArgument) {
  float value = 1;
  const absl::Status status = comm_->Broadcast(TensorView::Of(&value, 1), WorldSize(), Deadline());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
}

TEST_F(MpiCommunicatorTest, NegativeRootIsInvalidArgument) {
  float value = 1;
  const absl::Status status = comm_->Broadcast(TensorView::Of(&value, 1), -1, Deadline());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
}

TEST_F(MpiCommunicatorTest, CudaBufferIsInvalidArgument) {
  float value = 1;  // never dereferenced: the device is checked first
  const TensorView on_gpu(&value, DType::kFloat32, 1, Device::Cuda(0));
  const absl::Status status = comm_->AllReduce(on_gpu, ReduceOp::kSum, Deadline());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("cuda:0"), absl::string_view::npos) << status;
}

TEST_F(MpiCommunicatorTest, IntegerAverageIsInvalidArgument) {
  int32_t value = 1;
  const absl::Status status =
      comm_->AllReduce(TensorView::Of(&value, 1), ReduceOp::kAverage, Deadline());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
}

TEST_F(MpiCommunicatorTest, IntegerWeightedAverageIsInvalidArgument) {
  int64_t value = 1;
  const absl::Status status =
      comm_->AllReduce(TensorView::Of(&value, 1), ReduceOp::kWeightedAverage, Deadline(), 2.0);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
}

TEST_F(MpiCommunicatorTest, ReduceScatterWeightedAverageIsInvalidArgument) {
  std::vector<float> data(static_cast<size_t>(WorldSize()));
  const absl::Status status = comm_->ReduceScatter(TensorView::Of(data.data(), data.size()),
                                                   ReduceOp::kWeightedAverage, Deadline());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
}

TEST_F(MpiCommunicatorTest, AllZeroWeightsAreInvalidArgumentOnEveryRank) {
  float value = 1;
  const absl::Status status =
      comm_->AllReduce(TensorView::Of(&value, 1), ReduceOp::kWeightedAverage, Deadline(), 0.0);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_EQ(value, 1.0f);  // untouched
}

TEST_F(MpiCommunicatorTest, NegativeWeightOnOneRankIsInvalidArgumentOnEveryRank) {
  const double weight = WorldRank() == WorldSize() - 1 ? -1.0 : 1.0;
  double value = 1;
  const absl::Status status =
      comm_->AllReduce(TensorView::Of(&value, 1), ReduceOp::kWeightedAverage, Deadline(), weight);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("1 rank(s)"), absl::string_view::npos) << status;
}

// --- MPI's own errors, converted.

// Members that disagree on a count are a bug in the caller; MPI notices on
// the receiving side (MPI_ERR_TRUNCATE), which arrives as kDataLoss naming
// the call and the rank. Pairs of ranks, so no rank waits on a failed one.
TEST_F(MpiCommunicatorTest, BroadcastLargerThanReceiversBufferIsDataLoss) {
  MPI_Comm pair;
  ASSERT_EQ(MPI_Comm_split(MPI_COMM_WORLD, WorldRank() / 2, WorldRank(), &pair), MPI_SUCCESS);
  auto comm = CreateMpiCommunicator({MPI_Comm_c2f(pair)}, 2000, Deadline());
  MPI_Comm_free(&pair);
  ASSERT_TRUE(comm.ok()) << comm.status();
  if ((*comm)->world_size() < 2) return;  // the odd rank out has no partner
  const bool root = (*comm)->rank() == 0;
  std::vector<int32_t> data(root ? 8 : 4, 7);
  const absl::Status status = (*comm)->Broadcast(TensorView::Of(data.data(), data.size()), 0,
                                                 absl::Now() + absl::Seconds(10));
  if (root) {
    EXPECT_EQ(status, absl::OkStatus());
  } else {
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
    EXPECT_NE(status.message().find("Broadcast(int32 x 4, root 0) on rank 1 of 2"),
              absl::string_view::npos)
        << status;
  }
}

// --- Deadlines and Abort().

TEST_F(MpiCommunicatorTest, DeadlinePassedOnInjectedClockFailsBeforeStarting) {
  SimulatedClock clock;
  MpiCommunicatorOptions options;
  options.clock = &clock;
  auto comm = CreateMpiWorldCommunicator(500, clock.Now() + absl::Seconds(1), options);
  ASSERT_TRUE(comm.ok()) << comm.status();
  const absl::Time deadline = clock.Now() + absl::Seconds(1);
  ASSERT_EQ((*comm)->Barrier(deadline), absl::OkStatus());
  clock.AdvanceBy(absl::Seconds(2));  // every rank, so no rank starts the next barrier
  const absl::Status status = (*comm)->Barrier(deadline);
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
  const absl::Status later = (*comm)->Barrier(clock.Now() + absl::Seconds(60));
  EXPECT_EQ(later.code(), absl::StatusCode::kFailedPrecondition) << later;
  EXPECT_NE(later.message().find("DEADLINE_EXCEEDED"), absl::string_view::npos) << later;
}

// Rank 0 enters an AllReduce that the others join only after a second
// communicator tells them rank 0 has given up: rank 0 must time out, and its
// abandoned request must not write into its buffer afterwards.
TEST_F(MpiCommunicatorTest, StalledPeersMakeDeadlineExceededThenDead) {
  if (WorldSize() == 1) GTEST_SKIP() << "needs a second rank to stall";
  std::unique_ptr<Communicator> control = MakeControlCommunicator();
  ASSERT_NE(control, nullptr);
  std::vector<float> data(64, static_cast<float>(WorldRank() + 1));
  const TensorView view = TensorView::Of(data.data(), data.size());
  if (WorldRank() == 0) {
    const absl::Duration timeout = absl::Milliseconds(300);
    const absl::Time start = absl::Now();
    const absl::Status status = comm_->AllReduce(view, ReduceOp::kSum, start + timeout);
    const absl::Duration waited = absl::Now() - start;
    EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
    EXPECT_GE(waited, timeout);
    EXPECT_LT(waited, absl::Seconds(20));
    const absl::Status later = comm_->Barrier(Deadline());
    EXPECT_EQ(later.code(), absl::StatusCode::kFailedPrecondition) << later;
    EXPECT_NE(later.message().find("DEADLINE_EXCEEDED"), absl::string_view::npos) << later;
    ASSERT_EQ(control->Barrier(Deadline()), absl::OkStatus());  // others may now join
    ASSERT_EQ(control->Barrier(Deadline()), absl::OkStatus());  // others have finished
    for (float value : data) ASSERT_EQ(value, 1.0f);
  } else {
    ASSERT_EQ(control->Barrier(Deadline()), absl::OkStatus());
    // Completes against rank 0's abandoned request, which MPI progresses
    // whenever rank 0 calls into MPI.
    EXPECT_EQ(comm_->AllReduce(view, ReduceOp::kSum, Deadline()), absl::OkStatus());
    const float size = static_cast<float>(WorldSize());
    EXPECT_EQ(data[0], size * (size + 1) / 2);
    ASSERT_EQ(control->Barrier(Deadline()), absl::OkStatus());
  }
}

// Ranks other than 0 print only their failures, tagged with their rank.
class FailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit FailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", rank_,
                 result.file_name() != nullptr ? result.file_name() : "?", result.line_number(),
                 result.summary());
  }

 private:
  const int rank_;
};

}  // namespace
}  // namespace potluck

// Runs the tests with MPI initialized by MpiRuntime (MPI_THREAD_MULTIPLE), or,
// given --thread_serialized, as the header's rule for MPI initialized by
// someone else says (MPI_THREAD_SERIALIZED, MPI_ERRORS_RETURN on
// MPI_COMM_WORLD): the backend's serialized-calls path.
int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  // Listing the tests (CTest's discovery does, without mpirun) needs no MPI.
  if (GTEST_FLAG_GET(list_tests)) return RUN_ALL_TESTS();
  bool thread_serialized = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--thread_serialized") == 0) thread_serialized = true;
  }
  std::unique_ptr<potluck::MpiRuntime> runtime;
  if (thread_serialized) {
    int provided = MPI_THREAD_SINGLE;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
    if (provided != MPI_THREAD_SERIALIZED) {
      std::fprintf(stderr, "asked for MPI_THREAD_SERIALIZED, got thread level %d\n", provided);
      MPI_Finalize();
      return 1;
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  } else {
    auto initialized = potluck::MpiRuntime::Init(&argc, &argv);
    if (!initialized.ok()) {
      std::fprintf(stderr, "%s\n", initialized.status().ToString().c_str());
      return 1;
    }
    runtime = std::move(initialized).value();
  }
  if (potluck::WorldRank() != 0) {
    ::testing::TestEventListeners& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new potluck::FailurePrinter(potluck::WorldRank()));
  }
  const int result = RUN_ALL_TESTS();
  if (runtime != nullptr) {
    runtime.reset();  // MPI_Finalize
  } else {
    MPI_Finalize();
  }
  return result;
}
