// End to end, as processes: a real `potluck coordinator`, real `potluck
// worker`s over the TCP backend on loopback, faults by signal. Each test
// checks what must hold afterwards: every survivor holds the same model
// (state digests), and the committed ledger counts every trained sample
// exactly once.
#include <signal.h>

#include <atomic>
#include <cmath>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

#include "data/dataset.h"
#include "tests/worker_e2e_util.h"

namespace potluck {
namespace {

using ::testing::HasSubstr;
using testing_util::WorkerProcess;

class WorkerE2eTest : public testing_util::WorkerE2eFixture {
 protected:
  void ResumeAtAnotherWorldSize(uint64_t units, uint64_t checkpoint_every);
};

TEST_F(WorkerE2eTest, SigkilledWorkerLeavesSurvivorsIdenticalAndEverySampleCountedOnce) {
  StartCoordinator(0, 60);
  std::vector<std::unique_ptr<WorkerProcess>> workers;
  for (int i = 0; i < 3; ++i) workers.push_back(StartWorker(i));
  bool killed = false;
  auto digests = Drive(workers, [&](int, const nlohmann::json& line) {
    if (!killed && line.value("step", 0) >= 15 && line.value("world", 0) == 3) {
      workers[2]->Kill();
      killed = true;
    }
  });
  ASSERT_TRUE(killed);
  ExpectExited(workers, {0, 1});
  ASSERT_EQ(digests.count(0), 1u);
  ASSERT_EQ(digests.count(1), 1u);
  EXPECT_EQ(digests[0], digests[1]);
  EXPECT_EQ(world_at_step_.size(), 60u);
  EXPECT_EQ(world_at_step_.rbegin()->second, 2);
  ExpectLedgerCountsEverySampleOnce(60);
}

// A worker joining mid-run ends with the same model. The run is paused
// while the joiner starts (however long a loaded machine takes), and
// resumed once the coordinator lists it: the join is an event the test
// waits for, not a race between a process start and the last step.
TEST_F(WorkerE2eTest, JoinerMidRunEndsWithTheSameModel) {
  StartCoordinator(0, 60);
  std::vector<std::unique_ptr<WorkerProcess>> workers;
  for (int i = 0; i < 2; ++i) workers.push_back(StartWorker(i));
  bool started = false;
  std::atomic<bool> resumed{false};
  std::thread resumer;
  auto digests = Drive(workers, [&](int, const nlohmann::json& line) {
    if (started || line.value("step", 0) < 5) return;
    ASSERT_TRUE(admin_->PauseJob(admin_token_, "e2e").ok());
    workers.push_back(StartWorker(2));
    started = true;
    resumer = ResumeOnceListed(3, &resumed);
  });
  if (resumer.joinable()) resumer.join();
  ASSERT_TRUE(resumed) << workers.back()->LogTail();
  ExpectExited(workers, {0, 1, 2});
  ASSERT_EQ(digests.size(), 3u);
  EXPECT_EQ(digests[0], digests[1]);
  EXPECT_EQ(digests[0], digests[2]);
  EXPECT_EQ(world_at_step_.rbegin()->second, 3);

  // A volunteer arriving after the end is told so and exits 0.
  std::unique_ptr<WorkerProcess> late = StartWorker(3);
  int code = -1;
  const absl::Time give_up = absl::Now() + absl::Seconds(60);
  while (!late->Exited(&code) && absl::Now() < give_up) absl::SleepFor(absl::Milliseconds(50));
  bool told = false;
  for (const auto& line : late->Poll()) told = told || line.value("job_finished", false);
  EXPECT_EQ(code, 0) << late->LogTail();
  EXPECT_TRUE(told) << late->LogTail();
  EXPECT_THAT(late->LogTail(), HasSubstr("is already finished"));
  ExpectLedgerCountsEverySampleOnce(60);
}

TEST_F(WorkerE2eTest, CoordinatorSigkilledAndRestartedLosesNothingCommitted) {
  StartCoordinator(0, 60);
  const std::string port = address_.substr(address_.rfind(':') + 1);
  std::vector<std::unique_ptr<WorkerProcess>> workers;
  for (int i = 0; i < 2; ++i) workers.push_back(StartWorker(i));
  bool restarted = false;
  auto digests = Drive(workers, [&](int, const nlohmann::json& line) {
    if (!restarted && line.value("step", 0) >= 12) {
      coordinator_->Signal(SIGKILL);
      absl::SleepFor(absl::Seconds(1));
      StartCoordinator(std::stoi(port), 0);
      restarted = true;
    }
  });
  ASSERT_TRUE(restarted);
  ExpectExited(workers, {0, 1});
  ASSERT_EQ(digests.size(), 2u);
  EXPECT_EQ(digests[0], digests[1]);
  ExpectLedgerCountsEverySampleOnce(60);
}

// Everything (workers and coordinator) SIGKILLed mid-run and started again
// from the last checkpoint with the same world size ends bitwise equal to a
// run that was never interrupted: which rank reads which data depends only
// on the ranks and the ledger, and the Trainer resumes exactly.
TEST_F(WorkerE2eTest, RunStoppedAndRestartedEndsBitwiseEqualToAnUninterruptedOne) {
  constexpr uint64_t kSteps = 24;
  StartCoordinator(0, kSteps, true, /*min_workers=*/2);
  std::vector<std::unique_ptr<WorkerProcess>> workers;
  for (int i = 0; i < 2; ++i) workers.push_back(StartWorker(i));
  auto reference = Drive(workers, [](int, const nlohmann::json&) {});
  ASSERT_EQ(reference.size(), 2u);
  ASSERT_EQ(reference[0], reference[1]);
  coordinator_->Signal(SIGTERM);

  run_ = "-interrupted";
  StartCoordinator(0, kSteps, true, /*min_workers=*/2);
  workers.clear();
  for (int i = 0; i < 2; ++i) workers.push_back(StartWorker(i));
  const uint64_t killed_at = KillEverythingAtStep(workers, 13);
  ASSERT_GT(killed_at, 0u);
  uint64_t committed_step = 0;
  CommittedSequences(&committed_step);
  EXPECT_GT(committed_step, 0u);
  EXPECT_LT(committed_step, killed_at);

  StartCoordinator(0, 0);  // the same directory: a restart
  workers.clear();
  for (int i = 0; i < 2; ++i) workers.push_back(StartWorker(i));
  auto resumed = Drive(workers, [](int, const nlohmann::json&) {});
  ExpectExited(workers, {0, 1});
  ASSERT_EQ(resumed.size(), 2u);
  EXPECT_EQ(resumed[0], reference[0]);
  EXPECT_EQ(resumed[1], reference[0]);
}

// A run killed after a group of three checkpointed, resumed by two workers:
// the group of two starts from that checkpoint (not from a state one of
// them kept), the data is split anew, and every sample is still trained
// exactly once. `units` are steps, or rounds in DiLoCo mode.
void WorkerE2eTest::ResumeAtAnotherWorldSize(uint64_t units, uint64_t checkpoint_every) {
  StartCoordinator(0, diloco_inner_steps_ > 0 ? units * diloco_inner_steps_ : units, true,
                   /*min_workers=*/2);
  // Held until all three have joined: a slow start cannot leave the group of
  // three too little time.
  ASSERT_TRUE(admin_->PauseJob(admin_token_, "e2e").ok());
  std::vector<std::unique_ptr<WorkerProcess>> workers;
  for (int i = 0; i < 3; ++i) workers.push_back(StartWorker(i));
  std::atomic<bool> resumed{false};
  std::thread resumer = ResumeOnceListed(3, &resumed);
  uint64_t first_of_three = 0;
  bool killed = false;
  Drive(workers, [&](int, const nlohmann::json& line) {
    if (killed || !line.contains("world")) return;
    const auto it = world_at_step_.rbegin();
    if (it == world_at_step_.rend() || it->second != 3) return;
    if (first_of_three == 0) first_of_three = it->first;
    // Past two checkpoints of the group of three: one of them is committed.
    if (it->first >= first_of_three + 2 * checkpoint_every) {
      for (auto& worker : workers) worker->Kill();
      coordinator_->Signal(SIGKILL);
      killed = true;
    }
  });
  resumer.join();
  ASSERT_TRUE(resumed);
  ASSERT_TRUE(killed) << "no group of three trained long enough";
  uint64_t checkpoint = 0;
  CommittedSequences(&checkpoint);
  ASSERT_GT(checkpoint, first_of_three);
  ASSERT_EQ(world_at_step_[checkpoint], 3) << "the checkpoint at " << checkpoint;

  StartCoordinator(0, 0);
  workers.clear();
  for (int i = 0; i < 2; ++i) workers.push_back(StartWorker(i));
  std::map<int, nlohmann::json> first_group;
  std::map<int, std::string> shared;
  auto digests = Drive(workers, [&](int i, const nlohmann::json& line) {
    if (line.value("event", "") == "group" && !first_group.contains(i)) first_group[i] = line;
    if (line.contains("shared_digest")) shared[i] = line["shared_digest"];
  });
  ExpectExited(workers, {0, 1});
  ASSERT_EQ(first_group.size(), 2u);
  for (const auto& [i, group] : first_group) {
    EXPECT_EQ(group["world"], 2) << group.dump();
    EXPECT_TRUE(group["from_checkpoint"].get<bool>()) << group.dump();
    EXPECT_EQ(group["resume_step"], checkpoint) << group.dump();
  }
  // DiLoCo: the shared (outer) state is one model; inner models differ.
  std::map<int, std::string>& same = diloco_inner_steps_ > 0 ? shared : digests;
  ASSERT_EQ(same.size(), 2u);
  EXPECT_EQ(same[0], same[1]);
  EXPECT_EQ(world_at_step_.rbegin()->second, 2);
  EXPECT_EQ(world_at_step_.size(), units);
  ExpectLedgerCountsEverySampleOnce(units);
}

TEST_F(WorkerE2eTest, RunResumedWithAnotherWorldSizeTrainsEverySampleOnce) {
  ResumeAtAnotherWorldSize(/*units=*/40, /*checkpoint_every=*/5);
}

// The same in DiLoCo mode with an int8 outer exchange: the outer state (its
// momentum and error feedback included) resumes at another world size.
TEST_F(WorkerE2eTest, DilocoRunResumedWithAnotherWorldSizeTrainsEverySampleOnce) {
  diloco_inner_steps_ = 3;
  diloco_codec_ = v1::WIRE_CODEC_INT8;
  ResumeAtAnotherWorldSize(/*units=*/16, /*checkpoint_every=*/3);
}

// Ctrl-C on a worker: it leaves the job at once (the coordinator holds it
// dead because it left, while its lease would still be running) and exits
// 0 with its digest; the other finishes with every sample once.
TEST_F(WorkerE2eTest, InterruptedWorkerLeavesAtOnceAndTheOtherFinishes) {
  constexpr uint64_t kSteps = 30;
  StartCoordinator(0, kSteps);
  std::vector<std::unique_ptr<WorkerProcess>> workers;
  for (int i = 0; i < 2; ++i) workers.push_back(StartWorker(i));
  absl::Time interrupted = absl::InfiniteFuture();
  std::vector<v1::WorkerInfo> when_it_said_done;
  std::string interrupted_id;
  auto digests = Drive(workers, [&](int i, const nlohmann::json& line) {
    if (i == 1 && line.contains("done")) {
      interrupted_id = line["worker"];
      auto listed = admin_->ListWorkers("e2e");
      ASSERT_TRUE(listed.ok()) << listed.status();
      when_it_said_done = *listed;
    }
    if (interrupted == absl::InfiniteFuture() && line.value("world", 0) == 2 &&
        line.value("step", uint64_t{0}) >= 8) {
      workers[1]->Signal(SIGINT);
      interrupted = absl::Now();
    }
  });
  ASSERT_NE(interrupted, absl::InfiniteFuture());
  ExpectExited(workers, {0, 1});
  ASSERT_FALSE(interrupted_id.empty()) << workers[1]->LogTail();
  EXPECT_EQ(digests.count(1), 1u);
  bool found = false;
  for (const v1::WorkerInfo& worker : when_it_said_done) {
    if (worker.worker_id() != interrupted_id) continue;
    found = true;
    EXPECT_EQ(worker.phase(), v1::WorkerInfo::PHASE_DEAD) << worker.DebugString();
    EXPECT_EQ(worker.dead_reason(), "left") << worker.DebugString();
  }
  EXPECT_TRUE(found) << interrupted_id;
  EXPECT_EQ(world_at_step_.size(), kSteps);
  EXPECT_EQ(world_at_step_.rbegin()->second, 1);
  ExpectLedgerCountsEverySampleOnce(kSteps);
}

// A coordinator serving TLS: workers given its CA (--tls-ca) train to the
// end. (A client trusting another CA is refused: service_test's TlsTest.)
TEST_F(WorkerE2eTest, WorkersTrustingTheCoordinatorsCaTrainOverTls) {
  constexpr uint64_t kSteps = 12;
  tls_cert_ = MakeTlsCertificate("coordinator");
  StartCoordinator(0, kSteps, true, /*min_workers=*/2);
  std::vector<std::unique_ptr<WorkerProcess>> workers;
  for (int i = 0; i < 2; ++i) workers.push_back(StartWorker(i));
  auto digests = Drive(workers, [](int, const nlohmann::json&) {});
  ExpectExited(workers, {0, 1});
  ASSERT_EQ(digests.count(0), 1u);
  EXPECT_EQ(digests[0], digests[1]);
  EXPECT_EQ(world_at_step_.size(), kSteps);
  ExpectLedgerCountsEverySampleOnce(kSteps);
}

// A worker whose gradients turn NaN is caught before its step is applied
// anywhere and leaves; the others redo the step without it and end with
// the same, finite model.
TEST_F(WorkerE2eTest, WorkerWithNaNGradientsIsRemovedWithoutCorruptingTheOthers) {
  constexpr uint64_t kSteps = 30;
  StartCoordinator(0, kSteps);
  std::vector<std::unique_ptr<WorkerProcess>> workers;
  for (int i = 0; i < 2; ++i) workers.push_back(StartWorker(i));
  workers.push_back(StartWorker(2, "", {"--fault-nan-from-step", "12"}));
  double last_loss = 0;
  auto digests = Drive(workers, [&](int, const nlohmann::json& line) {
    if (line.contains("loss")) last_loss = line["loss"];
  });
  ExpectExited(workers, {2}, 2);
  EXPECT_THAT(workers[2]->LogTail(), HasSubstr("this worker's own"));
  ExpectExited(workers, {0, 1});
  ASSERT_EQ(digests.count(0), 1u);
  ASSERT_EQ(digests.count(1), 1u);
  EXPECT_EQ(digests[0], digests[1]);
  EXPECT_TRUE(std::isfinite(last_loss));
  EXPECT_EQ(world_at_step_.rbegin()->second, 2);
  EXPECT_EQ(world_at_step_.size(), kSteps);
  ExpectLedgerCountsEverySampleOnce(kSteps);
}

// DiLoCo through the runtime: three workers exchange only at round ends
// (every 4 inner steps); one is SIGKILLed mid-run. The survivors roll back
// to the last round checkpoint, finish every round, end with the same outer
// model, and the ledger counts every sample of the surviving rounds once.
TEST_F(WorkerE2eTest, DilocoRunSurvivesAKilledWorkerWithEverySampleOnce) {
  diloco_inner_steps_ = 4;
  constexpr uint64_t kRounds = 10;
  StartCoordinator(0, kRounds * 4, true, /*min_workers=*/2);
  // Held until all three have joined, so the group of three trains from the
  // start, however long one takes to start.
  ASSERT_TRUE(admin_->PauseJob(admin_token_, "e2e").ok());
  std::vector<std::unique_ptr<WorkerProcess>> workers;
  for (int i = 0; i < 3; ++i) workers.push_back(StartWorker(i));
  std::atomic<bool> resumed{false};
  std::thread resumer = ResumeOnceListed(3, &resumed);
  bool killed = false;
  uint64_t rounds_of_three = 0;
  std::map<int, std::string> shared;
  Drive(workers, [&](int i, const nlohmann::json& line) {
    if (line.contains("shared_digest")) shared[i] = line["shared_digest"];
    if (line.value("round_ended", false) && line["world"] == 3) rounds_of_three = line["rounds"];
    // Mid-round, once the group of three has ended round 4.
    if (!killed && rounds_of_three >= 4 && !line.value("round_ended", true)) {
      workers[2]->Kill();
      killed = true;
    }
  });
  resumer.join();
  ASSERT_TRUE(resumed);
  ASSERT_TRUE(killed);
  ExpectExited(workers, {0, 1});
  ASSERT_EQ(shared.count(0), 1u);
  ASSERT_EQ(shared.count(1), 1u);
  EXPECT_EQ(shared[0], shared[1]);
  EXPECT_EQ(world_at_step_.size(), kRounds);
  EXPECT_EQ(world_at_step_.rbegin()->second, 2);
  ExpectLedgerCountsEverySampleOnce(kRounds);
}

// DiLoCo across an epoch's end: a worker whose slot runs dry ends its rounds
// early and takes part in the exchanges with nothing, the group moves to the
// next epoch together, and every sample is counted once.
TEST_F(WorkerE2eTest, DilocoRunCrossesAnEpochWithEverySampleOnce) {
  diloco_inner_steps_ = 8;
  // Two workers read 8 sequences per inner step between them.
  const uint64_t rounds = (EpochSequences() * 3 / 2) / (8 * diloco_inner_steps_) + 1;
  StartCoordinator(0, rounds * diloco_inner_steps_, true, /*min_workers=*/2);
  std::vector<std::unique_ptr<WorkerProcess>> workers;
  for (int i = 0; i < 2; ++i) workers.push_back(StartWorker(i));
  std::map<int, std::string> shared;
  Drive(workers, [&](int i, const nlohmann::json& line) {
    if (line.contains("shared_digest")) shared[i] = line["shared_digest"];
  });
  ExpectExited(workers, {0, 1});
  ASSERT_EQ(shared.size(), 2u);
  EXPECT_EQ(shared[0], shared[1]);
  EXPECT_EQ(world_at_step_.size(), rounds);
  EXPECT_GT(TrainedSequences(), EpochSequences());
  ExpectLedgerCountsEverySampleOnce(rounds);
}

// DiLoCo rounds bounded by time, not steps: each worker ends its round when
// the limit passes, after however many inner steps it managed (they differ),
// and the exchanges still pair up; a worker is SIGKILLed and the survivors
// finish with the same outer model and every sample counted once.
TEST_F(WorkerE2eTest, DilocoRoundsEndedByTimeStillPairUpAndCountEverySampleOnce) {
  diloco_inner_steps_ = 1000;
  diloco_time_limit_ms_ = 150;
  constexpr uint64_t kRounds = 12;
  StartCoordinator(0, kRounds * 1000, true, /*min_workers=*/2);
  std::vector<std::unique_ptr<WorkerProcess>> workers;
  for (int i = 0; i < 3; ++i) workers.push_back(StartWorker(i));
  std::map<int, uint64_t> inner_steps;  // per worker, at its last line
  std::map<int, std::string> shared;
  bool killed = false;
  Drive(workers, [&](int i, const nlohmann::json& line) {
    if (line.contains("shared_digest")) shared[i] = line["shared_digest"];
    if (line.contains("step") && !line.contains("done")) inner_steps[i] = line["step"];
    if (!killed && line.value("rounds", uint64_t{0}) >= 5 && line["world"] == 3) {
      workers[2]->Kill();
      killed = true;
    }
  });
  ASSERT_TRUE(killed);
  ExpectExited(workers, {0, 1});
  ASSERT_EQ(shared.size(), 2u);
  EXPECT_EQ(shared[0], shared[1]);
  EXPECT_LT(inner_steps[0], kRounds * 1000);  // rounds ended by time
  EXPECT_EQ(world_at_step_.size(), kRounds);
  ExpectLedgerCountsEverySampleOnce(kRounds);
}

// Issue 16: `job pause` stops every member after one common step (its state
// committed there) and nothing trains while paused; `job resume` trains on to
// the end with every sample counted once.
TEST_F(WorkerE2eTest, PausedJobWaitsAtOneStepAndResumesToTheEnd) {
  StartCoordinator(0, 60);
  std::vector<std::unique_ptr<WorkerProcess>> workers;
  for (int i = 0; i < 2; ++i) workers.push_back(StartWorker(i));
  std::atomic<uint64_t> last_step{0};
  uint64_t paused_at = 0;
  uint64_t held_at = 0, committed_while_paused = 0;
  v1::JobState state_while_paused = v1::JOB_STATE_UNSPECIFIED;
  std::thread resumer;
  auto digests = Drive(workers, [&](int, const nlohmann::json& line) {
    const uint64_t step = line.value("step", uint64_t{0});
    if (step > last_step) last_step = step;
    if (paused_at > 0 || line.value("world", 0) != 2 || step < 10) return;
    ASSERT_TRUE(admin_->PauseJob(admin_token_, "e2e").ok());
    paused_at = step;
    resumer = std::thread([&] {
      absl::SleepFor(absl::Seconds(2));
      const uint64_t settled = last_step;
      absl::SleepFor(absl::Seconds(2));  // nothing may train meanwhile
      held_at = last_step;
      EXPECT_EQ(held_at, settled) << "a paused job trained on";
      auto job = admin_->GetJob("e2e");
      ASSERT_TRUE(job.ok()) << job.status();
      state_while_paused = job->state();
      committed_while_paused = job->committed_step();
      EXPECT_TRUE(admin_->ResumeJob(admin_token_, "e2e").ok());
    });
  });
  resumer.join();
  EXPECT_EQ(state_while_paused, v1::JOB_STATE_PAUSED);
  // Members are at most a step apart: they wait after the step after the
  // furthest one's last, and its state is committed there.
  EXPECT_GE(held_at, paused_at);
  EXPECT_LE(held_at, paused_at + 2);
  EXPECT_EQ(committed_while_paused, held_at);
  ExpectExited(workers, {0, 1});
  ASSERT_EQ(digests.count(0), 1u);
  ASSERT_EQ(digests.count(1), 1u);
  EXPECT_EQ(digests[0], digests[1]);
  // Nobody was lost to the pause: both trained every step after it.
  for (const auto& [step, world] : world_at_step_) {
    if (step > paused_at) {
      EXPECT_EQ(world, 2) << "step " << step;
    }
  }
  ExpectLedgerCountsEverySampleOnce(60);
}

// `job cancel` reaches the workers through the calls they already make:
// they leave and exit 0 saying so, within seconds.
TEST_F(WorkerE2eTest, CancelledJobsWorkersLeaveAndExitZeroSayingWhy) {
  StartCoordinator(0, 100000);
  std::vector<std::unique_ptr<WorkerProcess>> workers;
  for (int i = 0; i < 2; ++i) workers.push_back(StartWorker(i));
  absl::Time cancelled = absl::InfiniteFuture();
  Drive(
      workers,
      [&](int, const nlohmann::json& line) {
        if (cancelled != absl::InfiniteFuture() || line.value("step", 0) < 5) return;
        ASSERT_TRUE(admin_->CancelJob(admin_token_, "e2e").ok());
        cancelled = absl::Now();
      },
      absl::Seconds(90));
  ASSERT_NE(cancelled, absl::InfiniteFuture());
  EXPECT_LT(absl::Now() - cancelled, absl::Seconds(20));
  ExpectExited(workers, {0, 1}, 0);
  for (int i = 0; i < 2; ++i) {
    EXPECT_THAT(workers[i]->LogTail(), HasSubstr("job e2e was cancelled")) << i;
  }
  auto job = admin_->GetJob("e2e");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(job->live_workers(), 0u);
}

// Issue 16: the README's own data, `data prepare` with its default shard
// size, is one train file. Every member of a group of 2, 3 or 4 trains a
// full share of every step: the ledger leases ranges of the file, not the
// whole file (before, rank 1 of two read nothing).
TEST_F(WorkerE2eTest, GroupsOfTwoToFourOnADatasetOfOneFileEachTrainAFullShareOfEveryStep) {
  PrepareOptions prepare;
  prepare.inputs = {dir_ + "/corpus.txt"};
  prepare.out_dir = dir_ + "/one-file";
  auto dataset = PrepareDataset(prepare);
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  ASSERT_EQ(dataset->train.size(), 1u);
  dataset_ = *dataset;
  for (int world = 2; world <= 4; ++world) {
    SCOPED_TRACE(absl::StrCat(world, " workers"));
    run_ = absl::StrCat("-w", world);
    samples_at_step_.clear();
    world_at_step_.clear();
    generation_at_step_.clear();
    StartCoordinator(0, 20, /*open=*/true, /*min_workers=*/world);
    std::vector<std::unique_ptr<WorkerProcess>> workers;
    for (int i = 0; i < world; ++i) workers.push_back(StartWorker(i));
    std::map<uint64_t, std::set<int64_t>> training_ranks;  // step -> ranks that read data
    auto digests = Drive(workers, [&](int, const nlohmann::json& line) {
      if (line.contains("step") && line.value("tokens_per_s", 0.0) > 0) {
        training_ranks[line["step"]].insert(line["rank"].get<int64_t>());
      }
    });
    for (int i = 0; i < world; ++i) ExpectExited(workers, {i});
    ASSERT_EQ(digests.size(), static_cast<size_t>(world));
    for (const auto& [index, digest] : digests) EXPECT_EQ(digest, digests[0]) << index;
    ASSERT_EQ(samples_at_step_.size(), 20u);
    for (const auto& [step, samples] : samples_at_step_) {
      EXPECT_EQ(world_at_step_[step], world) << "step " << step;
      // Each member's share: SequencesPerStep (global batch 8, micro-batch
      // 4) is one micro-batch of 4 in groups of 2 to 4.
      EXPECT_EQ(samples, 4 * world) << "step " << step;
      EXPECT_EQ(training_ranks[step].size(), static_cast<size_t>(world))
          << "step " << step << ": every member read data";
    }
    ExpectLedgerCountsEverySampleOnce(20);
  }
}

// Issue 16: `data prepare` run again in place after the submit. The job
// trains on the data it was submitted with or not at all: the worker stops
// at once, naming the shard, instead of training on other bytes.
TEST_F(WorkerE2eTest, AShardChangedAfterTheSubmitIsRefusedByName) {
  StartCoordinator(0, 20);
  {
    std::ofstream text(dir_ + "/corpus.txt");
    for (int i = 0; i < 2000; ++i) text << "another corpus, line " << i << "\n";
  }
  PrepareOptions prepare;
  prepare.inputs = {dir_ + "/corpus.txt"};
  prepare.out_dir = dataset_.dir;
  prepare.shard_tokens = 3000;
  ASSERT_TRUE(PrepareDataset(prepare).ok());
  std::vector<std::unique_ptr<WorkerProcess>> workers;
  workers.push_back(StartWorker(0));
  bool trained = false;
  Drive(
      workers, [&](int, const nlohmann::json& line) { trained = trained || line.contains("step"); },
      absl::Seconds(60));
  ExpectExited(workers, {0}, 2);
  EXPECT_FALSE(trained) << "a step was trained on data the job was not submitted with";
  EXPECT_THAT(workers[0]->LogTail(), HasSubstr("is not the data job e2e was submitted with"));
  EXPECT_THAT(workers[0]->LogTail(), HasSubstr("train-0000"));
  // The job says so (to its members and the admin), and keeps its place.
  auto job = admin_->GetJob("e2e");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(job->live_workers(), 0u);
  EXPECT_THAT(job->problem(), HasSubstr("(dataset_changed)"));
  EXPECT_THAT(job->problem(), HasSubstr("is not the data job e2e was submitted with"));
}

TEST_F(WorkerE2eTest, WorkerWithAWrongTokenIsRefused) {
  StartCoordinator(0, 4, /*open=*/false);
  auto other = admin_->CreateToken(admin_token_, "e2e", absl::Hours(1));
  ASSERT_TRUE(other.ok()) << other.status();
  std::string forged = *other;
  forged.back() = forged.back() == '0' ? '1' : '0';
  std::vector<std::unique_ptr<WorkerProcess>> workers;
  workers.push_back(StartWorker(0, forged));
  Drive(
      workers, [](int, const nlohmann::json&) {}, absl::Seconds(60));
  ExpectExited(workers, {0}, 2);
  EXPECT_THAT(workers[0]->LogTail(), HasSubstr("UNAUTHENTICATED"));
}

}  // namespace
}  // namespace potluck
