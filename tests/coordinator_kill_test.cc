// The coordinator process is SIGKILLed at random (seeded) moments while
// workers stream progress reports and checkpoint commits to it over gRPC.
// After every kill the data directory is opened with the library and
// checked, then the coordinator restarts on it:
// - every checkpoint commit acknowledged to a worker is in the store, with
//   the bytes the worker sent;
// - the ledger counts each sample at most once: the committed offsets sum to
//   exactly the sample count inside the latest checkpoint's model, and never
//   exceed what the workers reported;
// - it comes back serving (the next round's workers join and train).
#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

#include "coordinator/coordinator.h"
#include "coordinator/grpc_client.h"
#include "tests/coordinator_process.h"
#include "tests/run_potluck.h"

namespace potluck {
namespace {

constexpr int kKillsPerSeed = 16;  // two seeds: 32 kills in the suite
constexpr uint64_t kSamplesPerStep = 13;
const char* const kJobs[] = {"kill-a", "kill-b"};

struct JobHistory {
  std::mutex mu;
  std::map<uint64_t, uint64_t> acked;  // step -> samples in the committed model
  uint64_t reported = 0;               // samples sent in progress reports, all incarnations
};

std::string Bytes(uint64_t value) { return std::string(reinterpret_cast<char*>(&value), 8); }

uint64_t Value(const std::string& bytes) {
  uint64_t value = 0;
  if (bytes.size() == 8) std::memcpy(&value, bytes.data(), 8);
  return value;
}

bool NetworkError(const absl::Status& status) {
  return status.code() == absl::StatusCode::kUnavailable ||
         status.code() == absl::StatusCode::kDeadlineExceeded ||
         status.code() == absl::StatusCode::kCancelled;
}

// One worker incarnation: joins, resumes from the generation's checkpoint,
// then trains step after step (lease, report, end the step, commit) until the
// coordinator goes away. Returns a description of any other error.
std::string RunWorker(const std::string& address, const std::string& job, JobHistory& history,
                      int incarnation, std::atomic<int>& steps_done) {
  GrpcClientOptions options;
  options.deadline = absl::Seconds(5);
  auto client = NewGrpcClient(address, options);
  if (!client.ok()) return client.status().ToString();
  CoordinatorClient& c = **client;
  const std::string worker = "w-" + job;
  auto fail = [&](const absl::Status& status, absl::string_view what) -> std::string {
    return NetworkError(status) ? "" : absl::StrCat(job, " ", what, ": ", status.ToString());
  };
  auto joined = c.Join({job, "", worker, "127.0.0.1:1"});
  if (!joined.ok()) return fail(joined.status(), "Join");
  uint64_t generation = joined->generation;
  GroupView view;
  for (;;) {
    auto result = c.Rendezvous(job, worker, generation);
    if (!result.ok()) return fail(result.status(), "Rendezvous");
    if (result->state == RendezvousResult::State::kReady) {
      view = result->view;
      break;
    }
    generation = result->generation;
    absl::SleepFor(absl::Milliseconds(5));
  }
  uint64_t samples = 0;  // the "model": how many samples it has trained on
  if (view.resume_step > 0) {
    auto reader = c.OpenCheckpoint(job, view.resume_step);
    if (!reader.ok()) return fail(reader.status(), "OpenCheckpoint");
    auto blob = (*reader)->ReadBlob("samples");
    if (!blob.ok()) return fail(blob.status(), "ReadBlob");
    samples = Value(*blob);
  }
  for (uint64_t step = view.resume_step + 1;; ++step) {
    auto lease = c.AcquireShard(job, worker);
    if (!lease.ok()) return fail(lease.status(), "AcquireShard");
    const uint64_t n = std::min(kSamplesPerStep, lease->size - lease->offset);
    {
      std::lock_guard<std::mutex> lock(history.mu);
      history.reported += n;
    }
    auto progress = c.ReportProgress({job, worker, absl::StrCat(incarnation, "-", step),
                                      view.generation, lease->shard, lease->offset + n, step});
    if (!progress.ok()) return fail(progress.status(), "ReportProgress");
    samples += n;
    auto ended = c.EndStep(job, worker, step);
    if (!ended.ok()) return fail(ended.status(), "EndStep");
    auto writer = c.BeginCheckpoint(job, worker, step);
    if (!writer.ok()) return fail(writer.status(), "BeginCheckpoint");
    const std::string model = Bytes(samples);
    absl::Status status = (*writer)->BeginEntry("samples", EntryKind::kBlob, DType::kUInt8, {8});
    if (status.ok()) status = (*writer)->Append(model.data(), model.size());
    if (status.ok()) status = (*writer)->Commit();
    if (!status.ok()) return fail(status, absl::StrCat("commit of step ", step));
    {
      std::lock_guard<std::mutex> lock(history.mu);
      history.acked[step] = samples;
    }
    steps_done.fetch_add(1);
  }
}

class CoordinatorKillTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "/coord-kill-XXXXXX";
    dir_ = mkdtemp(pattern.data());
    std::ofstream(dir_ + "/in.txt") << std::string(400000, 'k');
    const CommandResult prepared = RunPotluck("data prepare --input " + dir_ + "/in.txt --out " +
                                              dir_ + "/set --shard-tokens 20000");
    ASSERT_EQ(prepared.exit_code, 0) << prepared.output;
    data_dir_ = dir_ + "/state";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Spec(const std::string& job) {
    return absl::StrCat(R"({"job_id": ")", job, R"(", "model": {"mlp": {"input_dim": 4,
        "num_classes": 2}}, "dataset": {"manifest": ")",
                        dir_, R"(/set", "epochs": 1}, "optimizer": {"learning_rate": 0.01},
        "mode": "SYNC_MODE_SYNC", "batch": {"micro_batch_size": 2, "global_batch_size": 8},
        "checkpoint": {"keep_last": 100000}, "access": {"open": true}})");
  }

  // Opens a copy of the killed coordinator's directory with the library
  // (the restart must see the directory as the SIGKILL left it) and checks
  // the invariants against what the workers saw.
  void Verify(int round) {
    CoordinatorOptions options;
    options.data_dir = CopyForInspection(data_dir_);
    auto coordinator = Coordinator::Open(options);
    ASSERT_TRUE(coordinator.ok()) << "round " << round << ": " << coordinator.status();
    for (const char* job : kJobs) {
      JobHistory& history = histories_[job];
      auto ledger = (*coordinator)->GetLedger(job);
      ASSERT_TRUE(ledger.ok()) << ledger.status();
      uint64_t committed = 0;
      for (const ShardView& shard : ledger->shards) committed += shard.committed_offset;
      std::lock_guard<std::mutex> lock(history.mu);
      EXPECT_LE(committed, history.reported) << "round " << round << " " << job;
      uint64_t model_samples = 0;
      auto latest = (*coordinator)->checkpoints()->OpenLatest(job);
      if (latest.ok()) {
        EXPECT_EQ((*latest)->info().step, ledger->committed_step) << "round " << round;
        auto blob = (*latest)->ReadBlob("samples");
        ASSERT_TRUE(blob.ok()) << blob.status();
        model_samples = Value(*blob);
      } else {
        EXPECT_EQ(latest.status().code(), absl::StatusCode::kNotFound);
      }
      EXPECT_EQ(committed, model_samples)
          << "round " << round << " " << job << ": the ledger and the model disagree";
      for (const auto& [step, samples] : history.acked) {
        auto reader = (*coordinator)->checkpoints()->OpenCheckpoint(job, step);
        ASSERT_TRUE(reader.ok()) << "round " << round << " " << job << ": acknowledged step "
                                 << step << " lost: " << reader.status();
        auto blob = (*reader)->ReadBlob("samples");
        ASSERT_TRUE(blob.ok()) << blob.status();
        EXPECT_EQ(Value(*blob), samples) << job << " step " << step;
      }
      if (ledger->committed_step > 0) ++jobs_with_commits_;
    }
  }

  std::string dir_;
  std::string data_dir_;
  std::map<std::string, JobHistory> histories_;
  int jobs_with_commits_ = 0;
};

TEST_P(CoordinatorKillTest, AcknowledgedCommitsSurviveAndNoSampleCountsTwice) {
  std::mt19937 random(GetParam());
  std::uniform_int_distribution<int> kill_after_ms(30, 350);
  for (const char* job : kJobs) {
    std::ofstream(dir_ + "/" + job + ".json") << Spec(job);
    histories_[job];
  }
  int total_steps = 0;
  for (int round = 0; round < kKillsPerSeed; ++round) {
    CoordinatorProcess coordinator;
    ASSERT_EQ(coordinator.Start(POTLUCK_BINARY, data_dir_, {"--lease-seconds", "30"}), "")
        << "round " << round;
    if (round == 0) {
      for (const char* job : kJobs) {
        const CommandResult submitted = RunPotluck(
            absl::StrCat("job submit --coordinator ", coordinator.address(), " --data-dir ",
                         data_dir_, " --spec ", dir_, "/", job, ".json"));
        ASSERT_EQ(submitted.exit_code, 0) << submitted.output;
      }
    }
    std::atomic<int> steps{0};
    std::vector<std::string> errors(std::size(kJobs));
    std::vector<std::thread> workers;
    for (size_t i = 0; i < std::size(kJobs); ++i) {
      workers.emplace_back([&, i] {
        errors[i] = RunWorker(coordinator.address(), kJobs[i], histories_[kJobs[i]], round, steps);
      });
    }
    absl::SleepFor(absl::Milliseconds(kill_after_ms(random)));
    EXPECT_EQ(coordinator.Signal(SIGKILL), 128 + SIGKILL);
    for (std::thread& worker : workers) worker.join();
    for (const std::string& error : errors) EXPECT_EQ(error, "") << "round " << round;
    total_steps += steps.load();
    Verify(round);
    if (HasFatalFailure()) return;
  }
  // The suite proves something only if work was acknowledged between kills.
  EXPECT_GT(total_steps, kKillsPerSeed) << "too few steps were acknowledged";
  EXPECT_GT(jobs_with_commits_, kKillsPerSeed) << "too few rounds saw committed checkpoints";
  std::cout << "seed " << GetParam() << ": " << kKillsPerSeed << " kills, " << total_steps
            << " acknowledged steps\n";
}

INSTANTIATE_TEST_SUITE_P(Seeds, CoordinatorKillTest, ::testing::Values(1, 2));

}  // namespace
}  // namespace potluck
