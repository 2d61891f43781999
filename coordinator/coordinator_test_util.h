// A Coordinator on a SimulatedClock in a fresh directory, with helpers for
// the coordinator's tests; SingleJobFixture adds helpers for one job.
#ifndef POTLUCK_COORDINATOR_COORDINATOR_TEST_UTIL_H_
#define POTLUCK_COORDINATOR_COORDINATOR_TEST_UTIL_H_

#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "checkpoint/checkpoint_store.h"
#include "common/clock.h"
#include "common/failure.h"
#include "common/tensor_view.h"
#include "coordinator/coordinator.h"

namespace potluck::testing_util {

// Every worker polls Rendezvous through `client` (the Coordinator, or a
// CoordinatorClient over gRPC) as a worker does: it heartbeats, follows a
// newer generation when told of one and waits while not admitted, until
// the group is formed with all of them; returns the view.
template <typename Client>
GroupView FormGroup(Client& client, const std::string& job,
                    std::initializer_list<std::string> workers) {
  std::map<std::string, uint64_t> generation;
  for (const std::string& worker : workers) {
    auto status = client.Heartbeat(job, worker);
    EXPECT_TRUE(status.ok()) << worker << ": " << status.status();
    generation[worker] = status.ok() ? status->generation : 0;
  }
  for (int round = 0; round < 2 * static_cast<int>(workers.size()) + 4; ++round) {
    GroupView view;
    bool formed = true;
    for (const std::string& worker : workers) {
      auto result = client.Rendezvous(job, worker, generation[worker]);
      if (FailedBecause(result.status(), Failure::kWaitingForAdmission)) {
        formed = false;
        continue;
      }
      EXPECT_TRUE(result.ok()) << worker << ": " << result.status();
      if (!result.ok()) return {};
      if (result->state == RendezvousResult::State::kReady) {
        view = result->view;
      } else {
        formed = false;
        if (result->state == RendezvousResult::State::kSuperseded) {
          generation[worker] = result->generation;
        }
      }
    }
    if (formed) return view;
  }
  ADD_FAILURE() << "the group did not form";
  return {};
}

class CoordinatorFixture : public ::testing::Test {
 public:
  // A valid spec whose shards come from shards_ (not from its manifest).
  static v1::JobSpec Spec(const std::string& job_id) {
    v1::JobSpec spec;
    spec.set_job_id(job_id);
    spec.mutable_model()->mutable_mlp()->set_input_dim(4);
    spec.mutable_model()->mutable_mlp()->set_num_classes(2);
    spec.mutable_dataset()->set_manifest("unused: the test loads shards itself");
    spec.mutable_dataset()->set_epochs(1);
    spec.mutable_optimizer()->set_learning_rate(0.01f);
    spec.set_mode(v1::SYNC_MODE_SYNC);
    spec.mutable_batch()->set_micro_batch_size(2);
    spec.mutable_batch()->set_global_batch_size(8);
    return spec;
  }

 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::path(::testing::TempDir()) /
           (std::string("coord_") + info->test_suite_name() + "_" + info->name());
    std::filesystem::remove_all(dir_);
    Reopen();
    auto admin = coordinator_->CreateAdminToken(absl::Hours(24));
    ASSERT_TRUE(admin.ok()) << admin.status();
    admin_ = *admin;
  }
  void TearDown() override {
    coordinator_.reset();
    std::filesystem::remove_all(dir_);
  }

  CoordinatorOptions Options() {
    CoordinatorOptions options;
    options.data_dir = dir_.string();
    options.clock = &clock_;
    options.lease = absl::Seconds(10);
    options.rendezvous_timeout = absl::Seconds(30);
    options.restart_grace = absl::Seconds(20);
    options.sync_writes = false;
    if (max_checkpoint_bytes_ > 0) options.max_checkpoint_bytes = max_checkpoint_bytes_;
    options.max_spool_bytes = max_spool_bytes_;
    options.load_shards = [this](const v1::JobSpec&) -> absl::StatusOr<std::vector<ShardSpec>> {
      return shards_;
    };
    return options;
  }

  void Reopen() {
    coordinator_.reset();
    auto opened = Coordinator::Open(Options());
    ASSERT_TRUE(opened.ok()) << opened.status();
    coordinator_ = std::move(*opened);
  }

  void Submit(const v1::JobSpec& spec, std::vector<ShardSpec> shards) {
    shards_ = std::move(shards);
    auto submitted = coordinator_->SubmitJob(admin_, spec);
    ASSERT_TRUE(submitted.ok()) << submitted.status();
  }

  // Joins `worker` to job `job` with a fresh join token.
  void Join(const std::string& job, const std::string& worker) {
    auto token = coordinator_->CreateToken(job, absl::Hours(1));
    ASSERT_TRUE(token.ok()) << token.status();
    auto joined = coordinator_->Join({job, *token, worker, worker + ":7000"});
    ASSERT_TRUE(joined.ok()) << joined.status();
    EXPECT_EQ(joined->worker_id, worker);
  }

  // Every worker of `workers` forms the group of `job` (FormGroup).
  GroupView Form(const std::string& job, std::initializer_list<std::string> workers) {
    return FormGroup(*coordinator_, job, workers);
  }

  // `worker` comes to the rendezvous as a worker does: it polls, following
  // a newer generation while told of one (its first call after Join makes
  // it admissible, and the generation that admits it is made then).
  absl::StatusOr<RendezvousResult> Arrive(const std::string& job, const std::string& worker) {
    uint64_t generation = CurrentGeneration(job);
    for (int i = 0; i < 8; ++i) {
      auto result = coordinator_->Rendezvous(job, worker, generation);
      if (!result.ok() || result->state != RendezvousResult::State::kSuperseded) return result;
      generation = result->generation;
    }
    return absl::DeadlineExceededError("superseded over and over");
  }

  uint64_t CurrentGeneration(const std::string& job) {
    auto workers = coordinator_->ListWorkers(job);
    EXPECT_TRUE(workers.ok()) << workers.status();
    for (const WorkerView& worker : *workers) {
      if (worker.phase != WorkerView::Phase::kDead) {
        auto status = coordinator_->Heartbeat(job, worker.worker_id);
        EXPECT_TRUE(status.ok()) << status.status();
        return status->generation;
      }
    }
    ADD_FAILURE() << "no live worker in " << job;
    return 0;
  }

  // Advances time by `duration` in steps of `step`, heartbeating `workers`.
  void AdvanceWithHeartbeats(absl::Duration duration, std::initializer_list<std::string> workers,
                             const std::string& job = "job-1",
                             absl::Duration step = absl::Seconds(5)) {
    for (absl::Duration passed; passed < duration; passed += step) {
      clock_.AdvanceBy(std::min(step, duration - passed));
      for (const std::string& worker : workers) {
        auto status = coordinator_->Heartbeat(job, worker);
        EXPECT_TRUE(status.ok()) << worker << ": " << status.status();
      }
    }
  }

  WorkerView Find(const std::string& job, const std::string& worker) {
    auto workers = coordinator_->ListWorkers(job);
    EXPECT_TRUE(workers.ok()) << workers.status();
    for (const WorkerView& view : *workers) {
      if (view.worker_id == worker) return view;
    }
    ADD_FAILURE() << "no worker " << worker;
    return {};
  }

  SimulatedClock clock_;
  std::filesystem::path dir_;
  std::vector<ShardSpec> shards_ = {{"s0", 100}, {"s1", 100}, {"s2", 100}};
  std::unique_ptr<Coordinator> coordinator_;
  std::string admin_;
  uint64_t max_checkpoint_bytes_ = 0;  // 0: the default; Reopen() applies it
  uint64_t max_spool_bytes_ = 0;       // likewise
};

// A CoordinatorFixture with helpers for tests about one job, "job-1". The
// coordinator's own tests alias it as CoordinatorTest.
class SingleJobFixture : public CoordinatorFixture {
 protected:
  // job-1 with members `workers`, formed.
  GroupView Start(std::initializer_list<std::string> workers) {
    Submit(Spec("job-1"), shards_);
    for (const std::string& worker : workers) Join("job-1", worker);
    return Form("job-1", workers);
  }

  absl::StatusOr<ProgressResult> Report(const std::string& worker, const std::string& request_id,
                                        uint32_t shard, uint64_t offset, uint64_t step) {
    return coordinator_->ReportProgress(
        {"job-1", worker, request_id, CurrentGeneration("job-1"), shard, offset, step});
  }

  ShardView Shard(uint32_t index) {
    auto ledger = coordinator_->GetLedger("job-1");
    EXPECT_TRUE(ledger.ok()) << ledger.status();
    return ledger->shards.at(index);
  }

  absl::Status Commit(const std::string& worker, uint64_t step) {
    std::vector<float> weights = {1.0f, 2.0f, static_cast<float>(step)};
    return coordinator_->CommitCheckpoint(
        "job-1", worker, step,
        std::vector<TensorToSave>{{"w", TensorView::Of(weights.data(), weights.size()), {}}});
  }
};

}  // namespace potluck::testing_util

#endif  // POTLUCK_COORDINATOR_COORDINATOR_TEST_UTIL_H_
