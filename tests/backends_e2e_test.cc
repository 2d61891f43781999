// End to end over the other collectives backends, as processes: `potluck
// worker --backend mpi` under mpirun (static MPI) and `--backend nccl` on
// GPUs, around a real `potluck coordinator`. Each test checks what must hold
// afterwards: the ranks hold one model, the backend in use is the one asked
// for, and the committed ledger counts every trained sample exactly once.
#include <signal.h>

#include <cmath>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

#include "common/gpu.h"
#include "common/gpu_test_util.h"
#include "tests/worker_e2e_util.h"

namespace potluck {
namespace {

using ::testing::HasSubstr;
using testing_util::WorkerProcess;

class BackendsE2eTest : public testing_util::WorkerE2eFixture {
 protected:
  // Starts the two-rank MPI job again and drives it to the end: its ranks
  // end identical and the ledger counts every sample of `steps` once.
  void ResumeMpiJobToTheEnd(uint64_t steps) {
    std::vector<std::unique_ptr<WorkerProcess>> job;
    job.push_back(StartMpiWorkers(2));
    std::vector<std::string> digests;
    Drive(job, [&](int, const nlohmann::json& line) {
      if (line.contains("digest")) digests.push_back(line["digest"]);
    });
    ExpectExited(job, {0});
    ASSERT_EQ(digests.size(), 2u) << job[0]->LogTail();
    EXPECT_EQ(digests[0], digests[1]);
    EXPECT_EQ(world_at_step_.rbegin()->second, 2);
    ExpectLedgerCountsEverySampleOnce(steps);
  }
};

// Static MPI: two ranks under mpirun train as one group with their gradients
// on MPI; the whole job is SIGKILLed (mpirun and its ranks, and the
// coordinator), started again, and resumes from the last checkpoint: the
// ranks end identical and every sample is trained once.
TEST_F(BackendsE2eTest, MpiBackendTrainsAsOneGroupAndResumesAfterTheJobIsKilled) {
  constexpr uint64_t kSteps = 24;
  StartCoordinator(0, kSteps, true, /*min_workers=*/2);
  std::vector<std::unique_ptr<WorkerProcess>> job;
  job.push_back(StartMpiWorkers(2));
  std::set<std::string> backends;
  uint64_t killed_at = 0;
  Drive(job, [&](int, const nlohmann::json& line) {
    if (line.contains("backend")) backends.insert(line["backend"].get<std::string>());
    if (killed_at == 0 && line.value("step", uint64_t{0}) >= 13) {
      killed_at = line["step"];
      coordinator_->Signal(SIGKILL);
      KillProcessesOfThisTest();
    }
  });
  ASSERT_GT(killed_at, 0u) << job[0]->LogTail();
  EXPECT_EQ(backends, std::set<std::string>{"mpi"});

  StartCoordinator(0, 0);  // the same directory: a restart
  job.clear();
  ResumeMpiJobToTheEnd(kSteps);
}

// Static MPI: a rank that dies takes the whole MPI job down promptly (an MPI
// collective cannot be cancelled, so no rank is left waiting on it), and the
// job started again resumes and finishes with the ranks identical and every
// sample trained once.
TEST_F(BackendsE2eTest, MpiJobIsTornDownWhenOneRankDiesAndResumes) {
  constexpr uint64_t kSteps = 24;
  StartCoordinator(0, kSteps, true, /*min_workers=*/2);
  std::vector<std::unique_ptr<WorkerProcess>> job;
  job.push_back(StartMpiWorkers(2));
  absl::Time killed_at = absl::InfiniteFuture();
  Drive(
      job,
      [&](int, const nlohmann::json& line) {
        if (killed_at != absl::InfiniteFuture() || line.value("step", uint64_t{0}) < 8) return;
        const std::vector<pid_t> ranks = ProcessesOfThisTest(/*ranks_only=*/true);
        ASSERT_EQ(ranks.size(), 2u);
        kill(ranks[1], SIGKILL);
        killed_at = absl::Now();
      },
      absl::Seconds(90));
  ASSERT_NE(killed_at, absl::InfiniteFuture()) << job[0]->LogTail();
  int code = 0;
  ASSERT_TRUE(job[0]->Exited(&code)) << "mpirun still runs";
  EXPECT_NE(code, 0);
  EXPECT_LT(absl::Now() - killed_at, absl::Seconds(30));
  EXPECT_TRUE(ProcessesOfThisTest(/*ranks_only=*/true).empty()) << "a rank outlived the job";

  job.clear();
  ResumeMpiJobToTheEnd(kSteps);
}

// DiLoCo with an int8 outer exchange on MPI, which has no codecs of its own
// (the encoded contributions are all-gathered): the ranks end with one outer
// model, every sample trained once.
TEST_F(BackendsE2eTest, MpiBackendRunsDilocoWithAnInt8OuterExchange) {
  diloco_inner_steps_ = 4;
  diloco_codec_ = v1::WIRE_CODEC_INT8;
  constexpr uint64_t kRounds = 6;
  StartCoordinator(0, kRounds * 4, true, /*min_workers=*/2);
  std::vector<std::unique_ptr<WorkerProcess>> job;
  job.push_back(StartMpiWorkers(2));
  std::set<std::string> backends;
  std::vector<std::string> shared;
  Drive(job, [&](int, const nlohmann::json& line) {
    if (line.contains("backend")) backends.insert(line["backend"].get<std::string>());
    if (line.contains("shared_digest")) shared.push_back(line["shared_digest"]);
  });
  ExpectExited(job, {0});
  EXPECT_EQ(backends, std::set<std::string>{"mpi"});
  ASSERT_EQ(shared.size(), 2u) << job[0]->LogTail();
  EXPECT_EQ(shared[0], shared[1]);
  EXPECT_EQ(world_at_step_.size(), kRounds);
  ExpectLedgerCountsEverySampleOnce(kRounds);
}

// Without a GPU, --backend nccl fails at once, naming why, instead of
// retrying generation after generation.
TEST_F(BackendsE2eTest, NcclBackendWithoutAGpuExitsNamingWhy) {
  if (CudaDeviceCount() > 0) GTEST_SKIP() << "a GPU is present: " << DescribeGpus();
  StartCoordinator(0, 4);
  std::vector<std::unique_ptr<WorkerProcess>> workers;
  workers.push_back(StartWorker(0, "", {"--backend", "nccl", "--device", "cuda:0"}));
  Drive(
      workers, [](int, const nlohmann::json&) {}, absl::Seconds(60));
  ExpectExited(workers, {0}, 2);
  EXPECT_THAT(workers[0]->LogTail(),
              BuiltWithCuda() ? HasSubstr("needs GPU 0") : HasSubstr("has no CUDA"));
  // And --device alone is refused: the model computes on the CPU.
  workers.push_back(StartWorker(1, "", {"--device", "cuda:0"}));
  Drive(
      workers, [](int, const nlohmann::json&) {}, absl::Seconds(30));
  ExpectExited(workers, {1}, 1);
  EXPECT_THAT(workers[1]->LogTail(), HasSubstr("picks the GPU of --backend nccl"));
}

// On a machine with two GPUs (tests/gpu/run.sh): two workers exchange their
// gradients with NCCL, one GPU each, end identical with every sample counted
// once, and train as a TCP group does: the same job over TCP gives the same
// losses, step by step, up to the rounding of a different summation order.
TEST_F(BackendsE2eTest, NcclBackendTrainsTwoWorkersOnTwoGpusAsTcpDoes) {
  POTLUCK_SKIP_WITHOUT_GPU(2);
  constexpr uint64_t kSteps = 12;
  std::map<std::string, std::map<uint64_t, double>> loss;  // backend -> step -> rank 0's
  for (const std::string backend : {"tcp", "nccl"}) {
    SCOPED_TRACE(backend);
    run_ = "-" + backend;
    world_at_step_.clear();
    samples_at_step_.clear();
    generation_at_step_.clear();
    StartCoordinator(0, kSteps, true, /*min_workers=*/2);
    std::vector<std::unique_ptr<WorkerProcess>> workers;
    for (int i = 0; i < 2; ++i) {
      workers.push_back(StartWorker(i, "",
                                    backend == "tcp"
                                        ? std::vector<std::string>{}
                                        : std::vector<std::string>{"--backend", "nccl", "--device",
                                                                   absl::StrCat("cuda:", i)}));
    }
    std::set<std::string> reported;
    auto digests = Drive(workers, [&](int, const nlohmann::json& line) {
      if (line.contains("backend")) reported.insert(line["backend"].get<std::string>());
      if (line.contains("loss") && line.value("rank", -1) == 0 && line["world"] == 2) {
        loss[backend][line["step"]] = line["loss"];
      }
    });
    ExpectExited(workers, {0, 1});
    EXPECT_EQ(reported, std::set<std::string>{backend});
    ASSERT_EQ(digests.size(), 2u);
    EXPECT_EQ(digests[0], digests[1]);
    ExpectLedgerCountsEverySampleOnce(kSteps);
  }
  ASSERT_FALSE(loss["nccl"].empty());
  for (const auto& [step, nccl_loss] : loss["nccl"]) {
    if (!loss["tcp"].contains(step)) continue;
    EXPECT_NEAR(nccl_loss, loss["tcp"][step], 1e-3 * std::fabs(loss["tcp"][step]))
        << "step " << step;
  }
}

}  // namespace
}  // namespace potluck
