// NCCL tests need a GPU (n for an n-rank group) and skip, visibly, without
// one; tests/gpu/run.sh runs them on a machine that has GPUs. The backend runs
// the conformance suite (collectives/testing/conformance.h) as ranks as
// threads, one GPU each, through host staging (how workers use it).
#include "collectives/nccl_communicator.h"

#include <cuda_runtime_api.h>

#include <memory>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

#include "collectives/testing/conformance.h"
#include "common/gpu_test_util.h"
#include "common/status.h"

namespace potluck {
namespace {

absl::Time In(absl::Duration duration) { return absl::Now() + duration; }

class NcclBackend final : public ThreadGroupBackend {
 public:
  std::string name() const override { return "nccl"; }
  // nccl_communicator.h: every wait polls NCCL's error state against the
  // deadline; NCCL does not report a member that went away, so the others
  // end at their deadline, NCCL aborted. (Not yet run on two GPUs here.)
  DocumentedBehaviour documented() const override {
    DocumentedBehaviour documented;
    documented.peer_vanished = absl::StatusCode::kDeadlineExceeded;
    documented.peer_vanished_before_deadline = false;
    return documented;
  }
  std::string CannotRun(int world_size) const override {
    // Where run.sh says the GPUs are there, run: a driver that cannot use
    // them fails the test instead of skipping it (common/gpu_test_util.h).
    if (CudaDeviceCount() >= world_size || ExpectedGpus() >= world_size) return "";
    return absl::StrCat("needs ", world_size, " GPU(s) (one per rank); ", DescribeGpus());
  }

 protected:
  absl::StatusOr<std::unique_ptr<Communicator>> Connect(RendezvousStore* store, int rank,
                                                        int world_size,
                                                        uint64_t generation) override {
    NcclOptions options;
    options.rank = rank;
    options.world_size = world_size;
    options.generation = generation;
    options.device = rank;
    ASSIGN_OR_RETURN(std::unique_ptr<Communicator> comm,
                     ConnectNcclCommunicator(store, options, In(absl::Seconds(60))));
    return NewHostStagedCommunicator(std::move(comm), rank);
  }
};

INSTANTIATE_TEST_SUITE_P(Nccl, CommunicatorConformance,
                         ::testing::ValuesIn(ConformanceCases(std::make_shared<NcclBackend>(),
                                                              {1, 2, 4})),
                         ConformanceCaseName);
INSTANTIATE_TEST_SUITE_P(Nccl, CommunicatorConformanceFaults,
                         ::testing::ValuesIn(ConformanceCases(std::make_shared<NcclBackend>(),
                                                              {2})),
                         ConformanceCaseName);

// A float buffer on a GPU.
class DeviceFloats {
 public:
  DeviceFloats(int device, const std::vector<float>& values)
      : device_(device), count_(values.size()) {
    cudaSetDevice(device);
    EXPECT_EQ(cudaMalloc(&data_, count_ * sizeof(float)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(data_, values.data(), count_ * sizeof(float), cudaMemcpyHostToDevice),
              cudaSuccess);
  }
  ~DeviceFloats() { cudaFree(data_); }
  TensorView view() const {
    return TensorView(data_, DType::kFloat32, count_, Device::Cuda(device_));
  }
  std::vector<float> Read() const {
    std::vector<float> out(count_);
    cudaSetDevice(device_);
    EXPECT_EQ(cudaMemcpy(out.data(), data_, count_ * sizeof(float), cudaMemcpyDeviceToHost),
              cudaSuccess);
    return out;
  }

 private:
  const int device_;
  const size_t count_;
  void* data_ = nullptr;
};

TEST(NcclCommunicator, WithoutAGpuIsAClearError) {
  if (CudaDeviceCount() > 0) GTEST_SKIP() << "a GPU is present; " << DescribeGpus();
  InMemoryRendezvousStore store;
  auto communicator = ConnectNcclCommunicator(&store, {}, In(absl::Seconds(1)));
  EXPECT_EQ(communicator.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(communicator.status().message().find("needs GPU 0"), absl::string_view::npos);
}

TEST(NcclCommunicator, OneRankRunsEveryCollectiveOnTheDevice) {
  POTLUCK_SKIP_WITHOUT_GPU(1);
  InMemoryRendezvousStore store;
  auto communicator = ConnectNcclCommunicator(&store, {}, In(absl::Seconds(60)));
  ASSERT_TRUE(communicator.ok()) << communicator.status();
  DeviceFloats data(0, {1, 2, 3, 4});
  ASSERT_TRUE((*communicator)->AllReduce(data.view(), ReduceOp::kSum, In(absl::Seconds(30))).ok());
  EXPECT_EQ(data.Read(), (std::vector<float>{1, 2, 3, 4}));
  ASSERT_TRUE((*communicator)
                  ->AllReduce(data.view(), ReduceOp::kWeightedAverage, In(absl::Seconds(30)), 2.0)
                  .ok());
  EXPECT_EQ(data.Read(), (std::vector<float>{1, 2, 3, 4})) << "after the weighted average";
  ASSERT_TRUE((*communicator)->Broadcast(data.view(), 0, In(absl::Seconds(30))).ok());
  ASSERT_TRUE((*communicator)->AllGather(data.view(), In(absl::Seconds(30))).ok());
  ASSERT_TRUE(
      (*communicator)->ReduceScatter(data.view(), ReduceOp::kSum, In(absl::Seconds(30))).ok());
  ASSERT_TRUE((*communicator)->Barrier(In(absl::Seconds(30))).ok());
  EXPECT_EQ(data.Read(), (std::vector<float>{1, 2, 3, 4}));
  std::vector<float> host(4);
  EXPECT_EQ((*communicator)
                ->AllReduce(TensorView::Of(host.data(), 4), ReduceOp::kSum, In(absl::Seconds(1)))
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(NcclCommunicator, HostStagedTakesHostBuffersAndGrowsItsStaging) {
  POTLUCK_SKIP_WITHOUT_GPU(1);
  InMemoryRendezvousStore store;
  auto device_comm = ConnectNcclCommunicator(&store, {}, In(absl::Seconds(60)));
  ASSERT_TRUE(device_comm.ok()) << device_comm.status();
  std::unique_ptr<Communicator> staged = NewHostStagedCommunicator(*std::move(device_comm), 0);
  std::vector<float> small = {1, 2, 3};
  ASSERT_TRUE(staged
                  ->AllReduce(TensorView::Of(small.data(), small.size()), ReduceOp::kAverage,
                              In(absl::Seconds(30)))
                  .ok());
  EXPECT_EQ(small, (std::vector<float>{1, 2, 3}));
  std::vector<double> large(1 << 18);
  for (size_t i = 0; i < large.size(); ++i) large[i] = static_cast<double>(i);
  const std::vector<double> before = large;
  ASSERT_TRUE(
      staged->Broadcast(TensorView::Of(large.data(), large.size()), 0, In(absl::Seconds(30))).ok());
  EXPECT_EQ(large, before);
  DeviceFloats on_device(0, {5, 6});  // device buffers pass straight through
  ASSERT_TRUE(staged->AllReduce(on_device.view(), ReduceOp::kSum, In(absl::Seconds(30))).ok());
  EXPECT_EQ(on_device.Read(), (std::vector<float>{5, 6}));
}

// The watchdog: a rank that never shows up turns into kDeadlineExceeded at
// the deadline, and NCCL is aborted instead of hanging in its bootstrap.
TEST(NcclCommunicator, MissingRankIsDeadlineExceeded) {
  POTLUCK_SKIP_WITHOUT_GPU(1);
  InMemoryRendezvousStore store;
  NcclOptions options;
  options.world_size = 2;
  options.generation = 5;
  const absl::Time start = absl::Now();
  auto communicator = ConnectNcclCommunicator(&store, options, start + absl::Seconds(3));
  EXPECT_EQ(communicator.status().code(), absl::StatusCode::kDeadlineExceeded)
      << communicator.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(8));
}

}  // namespace
}  // namespace potluck
