// Workers as threads around an in-process coordinator: the runtime's
// protocol end to end (the multi-process suites are in tests/).
#include "worker/runtime.h"

#include <atomic>
#include <cmath>
#include <fstream>
#include <iterator>
#include <map>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"

#include "common/failure.h"
#include "common/status.h"
#include "coordinator/in_process_client.h"
#include "data/dataset.h"
#include "worker/model_io.h"
#include "worker/test_util.h"
#include "worker/trainer.h"

namespace potluck {
namespace {

constexpr uint32_t kContext = 16;
constexpr int64_t kMicro = 4;

std::string ReadFileOrDie(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// What a worker's client does wrong in a test.
struct ClientFaults {
  // The first lease_blips AcquireShard calls find the coordinator
  // unreachable (a blip while leasing).
  int lease_blips = 0;
  // The job's dataset is not on this machine: the manifest path the job
  // names is elsewhere, so the worker fetches the files from the
  // coordinator.
  bool remote_data = false;
  // Fetches of this file arrive with one byte flipped: the first
  // `corrupt_fetches` of them.
  std::string corrupt_file;
  int corrupt_fetches = 0;
};

// A part of a split upload that the coordinator accepted.
struct LandedPart {
  uint64_t step = 0;
  uint32_t parts = 0;
  uint64_t bytes = 0;
};

// Forwards a checkpoint part; once the coordinator accepted it, calls
// `landed` with its bytes.
class CountingPartWriter final : public CheckpointPartWriter {
 public:
  CountingPartWriter(std::unique_ptr<CheckpointPartWriter> inner,
                     std::function<void(uint64_t bytes)> landed)
      : inner_(std::move(inner)), landed_(std::move(landed)) {}
  absl::Status BeginSlice(absl::string_view name, EntryKind kind, DType dtype,
                          std::vector<int64_t> shape, uint64_t offset, uint64_t count) override {
    return inner_->BeginSlice(name, kind, dtype, std::move(shape), offset, count);
  }
  absl::Status Append(const void* data, size_t size_bytes) override {
    bytes_ += size_bytes;
    return inner_->Append(data, size_bytes);
  }
  absl::StatusOr<bool> Finish() override {
    absl::StatusOr<bool> finished = inner_->Finish();
    if (finished.ok()) landed_(bytes_);
    return finished;
  }

 private:
  const std::unique_ptr<CheckpointPartWriter> inner_;
  const std::function<void(uint64_t)> landed_;
  uint64_t bytes_ = 0;
};

// Forwards to `inner`, with `faults`; counts the files fetched and the
// checkpoint bytes uploaded.
class FaultyClient final : public CoordinatorClient {
 public:
  FaultyClient(std::unique_ptr<CoordinatorClient> inner, ClientFaults faults)
      : inner_(std::move(inner)), faults_(std::move(faults)), failures_(faults_.lease_blips) {}

  // The parts of split uploads the coordinator accepted, and how many whole
  // uploads there were.
  std::vector<LandedPart> landed_parts() {
    absl::MutexLock lock(&mu_);
    return landed_parts_;
  }
  int whole_uploads() const { return whole_uploads_; }

  // How many times each file was fetched.
  std::map<std::string, int> fetched() {
    absl::MutexLock lock(&mu_);
    return fetched_;
  }

  absl::StatusOr<ShardLease> AcquireShard(absl::string_view job_id,
                                          absl::string_view worker_id) override {
    if (failures_.fetch_sub(1) > 0) return absl::UnavailableError("simulated: unreachable");
    return inner_->AcquireShard(job_id, worker_id);
  }
  absl::StatusOr<v1::JobStatus> GetJob(absl::string_view job_id) override {
    ASSIGN_OR_RETURN(v1::JobStatus job, inner_->GetJob(job_id));
    if (faults_.remote_data) {
      job.mutable_spec()->mutable_dataset()->set_manifest("/nonexistent/on/this/worker");
    }
    return job;
  }
  absl::StatusOr<WorkerStatus> Join(const JoinRequest& request) override {
    return inner_->Join(request);
  }
  absl::StatusOr<WorkerStatus> Heartbeat(absl::string_view job_id,
                                         absl::string_view worker_id) override {
    return inner_->Heartbeat(job_id, worker_id);
  }
  absl::Status Leave(absl::string_view job_id, absl::string_view worker_id,
                     const LeaveReason& reason) override {
    return inner_->Leave(job_id, worker_id, reason);
  }
  absl::StatusOr<uint64_t> ReportFailure(absl::string_view job_id, absl::string_view reporter,
                                         absl::string_view failed) override {
    return inner_->ReportFailure(job_id, reporter, failed);
  }
  absl::StatusOr<RendezvousResult> Rendezvous(absl::string_view job_id, absl::string_view worker_id,
                                              uint64_t generation) override {
    return inner_->Rendezvous(job_id, worker_id, generation);
  }
  absl::StatusOr<ProgressResult> ReportProgress(const ProgressReport& report) override {
    return inner_->ReportProgress(report);
  }
  absl::StatusOr<StepResult> EndStep(absl::string_view job_id, absl::string_view worker_id,
                                     uint64_t step) override {
    return inner_->EndStep(job_id, worker_id, step);
  }
  absl::StatusOr<std::unique_ptr<CheckpointWriter>> BeginCheckpoint(absl::string_view job_id,
                                                                    absl::string_view worker_id,
                                                                    uint64_t step) override {
    ++whole_uploads_;
    return inner_->BeginCheckpoint(job_id, worker_id, step);
  }
  absl::StatusOr<std::unique_ptr<CheckpointPartWriter>> BeginCheckpointPart(
      absl::string_view job_id, absl::string_view worker_id, uint64_t step, uint32_t part,
      uint32_t parts) override {
    ASSIGN_OR_RETURN(std::unique_ptr<CheckpointPartWriter> writer,
                     inner_->BeginCheckpointPart(job_id, worker_id, step, part, parts));
    return std::make_unique<CountingPartWriter>(std::move(writer), [=, this](uint64_t bytes) {
      absl::MutexLock lock(&mu_);
      landed_parts_.push_back({step, parts, bytes});
    });
  }
  absl::StatusOr<std::unique_ptr<CheckpointReader>> OpenLatestCheckpoint(
      absl::string_view job_id) override {
    return inner_->OpenLatestCheckpoint(job_id);
  }
  absl::StatusOr<std::unique_ptr<CheckpointReader>> OpenCheckpoint(absl::string_view job_id,
                                                                   uint64_t step) override {
    return inner_->OpenCheckpoint(job_id, step);
  }
  absl::StatusOr<std::string> FetchDatasetFile(absl::string_view job_id,
                                               absl::string_view name) override {
    ASSIGN_OR_RETURN(std::string bytes, inner_->FetchDatasetFile(job_id, name));
    absl::MutexLock lock(&mu_);
    const int fetches = ++fetched_[std::string(name)];
    if (name == faults_.corrupt_file && fetches <= faults_.corrupt_fetches && !bytes.empty()) {
      bytes[bytes.size() / 2] ^= 0x10;
    }
    return bytes;
  }

 private:
  std::unique_ptr<CoordinatorClient> inner_;
  const ClientFaults faults_;
  std::atomic<int> failures_;
  std::atomic<int> whole_uploads_{0};
  absl::Mutex mu_;
  std::map<std::string, int> fetched_ ABSL_GUARDED_BY(mu_);
  std::vector<LandedPart> landed_parts_ ABSL_GUARDED_BY(mu_);
};

class RuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::set_num_threads(1);
    dir_ = FreshTempDir("run");
    {
      std::ofstream text(dir_ + "/corpus.txt");
      for (int i = 0; i < 300; ++i) text << "worker " << i << " trains on line " << i * 3 << "\n";
    }
    PrepareOptions prepare;
    prepare.inputs = {dir_ + "/corpus.txt"};
    prepare.out_dir = dir_ + "/data";
    prepare.shard_tokens = 2000;
    auto dataset = PrepareDataset(prepare);
    ASSERT_TRUE(dataset.ok()) << dataset.status();
    dataset_ = *dataset;
    CoordinatorOptions options;
    options.data_dir = dir_ + "/coordinator";
    options.lease = absl::Seconds(2);
    options.rendezvous_timeout = absl::Seconds(10);
    auto coordinator = Coordinator::Open(options);
    ASSERT_TRUE(coordinator.ok()) << coordinator.status();
    coordinator_ = std::move(*coordinator);
    auto admin = coordinator_->CreateAdminToken(absl::Hours(1));
    ASSERT_TRUE(admin.ok());
    job_.set_job_id("rt");
    job_.set_seed(3);
    job_.set_mode(v1::SYNC_MODE_SYNC);
    job_.mutable_optimizer()->set_learning_rate(3e-3);
    *job_.mutable_model() = TinyGptSpec(256, kContext, 1, 2, 16);
    job_.mutable_dataset()->set_manifest(dataset_.dir);
    job_.mutable_dataset()->set_epochs(5);
    job_.mutable_batch()->set_micro_batch_size(kMicro);
    job_.mutable_batch()->set_global_batch_size(12);
    job_.mutable_checkpoint()->set_every_steps(4);
    job_.mutable_checkpoint()->set_keep_last(3);
    job_.mutable_access()->set_open(true);
    job_.set_max_steps(12);
    job_.set_eval_every_steps(4);
    job_.set_eval_sequences(8);
    auto submitted = coordinator_->SubmitJob(*admin, job_);
    ASSERT_TRUE(submitted.ok()) << submitted.status();
  }

  WorkerOptions Options(int index) {
    WorkerOptions options;
    options.job_id = job_.job_id();
    options.state_dir = absl::StrCat(dir_, "/worker", index);
    options.heartbeat_interval = absl::Milliseconds(200);
    options.collective_timeout = absl::Seconds(10);
    return options;
  }

  // Sequences the committed ledger counts as trained.
  uint64_t CommittedSequences() {
    auto ledger = coordinator_->GetLedger(job_.job_id());
    EXPECT_TRUE(ledger.ok());
    uint64_t sequences = 0;
    for (const ShardView& shard : ledger->shards) {
      const uint64_t o = shard.committed_offset;
      // A finished shard's tail (shorter than a sequence) was skipped.
      sequences += o == shard.size ? (shard.size - 1) / kContext : o / kContext;
    }
    return sequences;
  }

  // Each step of the surviving lineage, from any member: a redone step
  // comes from a newer generation, which wins (a member may die before it
  // reports, and threads interleave).
  void Record(const WorkerProgress& p) {
    absl::MutexLock lock(&mu_);
    auto it = steps_.find(p.step);
    if (it != steps_.end() && it->second.generation > p.generation) return;
    steps_[p.step] = p;
  }
  uint64_t TrainedSequences() {
    absl::MutexLock lock(&mu_);
    uint64_t sequences = 0;
    for (const auto& [step, p] : steps_) sequences += p.group_samples;
    return sequences;
  }

  // Runs `count` workers on threads to the end; `on_step(index, progress)`
  // is called beside the recording; `faults[i]`: what worker i's client
  // does wrong (its FaultyClient is left in clients_[i]). Returns each
  // worker's Run() status.
  std::vector<absl::Status> RunWorkers(
      int count, std::vector<std::unique_ptr<WorkerRuntime>>* workers,
      const std::function<void(int, const WorkerProgress&)>& on_step = nullptr,
      const std::vector<ClientFaults>& faults = {}) {
    std::vector<std::unique_ptr<CoordinatorClient>>& clients = clients_;
    for (int i = 0; i < count; ++i) {
      clients.push_back(std::make_unique<FaultyClient>(
          NewInProcessClient(coordinator_.get()),
          i < static_cast<int>(faults.size()) ? faults[i] : ClientFaults{}));
      WorkerOptions options = Options(i);
      options.on_step = [this, i, on_step](const WorkerProgress& p) {
        if (on_step) on_step(i, p);
        Record(p);
      };
      auto worker = WorkerRuntime::Create(clients.back().get(), options);
      EXPECT_TRUE(worker.ok()) << worker.status();
      if (!worker.ok()) return {};
      workers->push_back(std::move(*worker));
    }
    std::vector<absl::Status> results(count);
    std::vector<std::thread> threads;
    for (int i = 0; i < count; ++i) {
      threads.emplace_back([&, i] { results[i] = (*workers)[i]->Run(); });
    }
    for (auto& t : threads) t.join();
    return results;
  }

  absl::Mutex mu_;
  std::map<uint64_t, WorkerProgress> steps_ ABSL_GUARDED_BY(mu_);
  std::string dir_;
  Dataset dataset_;
  std::unique_ptr<Coordinator> coordinator_;
  v1::JobSpec job_;
  std::vector<std::unique_ptr<CoordinatorClient>> clients_;  // FaultyClients, by worker
};

// Issue 15: a committed checkpoint the job's model cannot load (here one
// member's junk, committed as the job's first checkpoint before anyone
// else joined). Restoring it fails the same way every time: the worker
// stops at once, naming the checkpoint, instead of retrying forever.
TEST_F(RuntimeTest, ACommittedCheckpointThatCannotBeRestoredStopsTheWorkerNamingIt) {
  auto joined = coordinator_->Join({job_.job_id(), "", "mallory", "127.0.0.1:1"});
  ASSERT_TRUE(joined.ok()) << joined.status();
  uint64_t generation = joined->generation;
  for (int i = 0; i < 4; ++i) {  // admitted, then formed alone
    auto met = coordinator_->Rendezvous(job_.job_id(), "mallory", generation);
    ASSERT_TRUE(met.ok()) << met.status();
    if (met->state == RendezvousResult::State::kReady) break;
    generation = met->generation;
  }
  ASSERT_TRUE(coordinator_->EndStep(job_.job_id(), "mallory", 4).ok());
  std::vector<uint8_t> junk = {1, 2, 3};
  ASSERT_TRUE(coordinator_
                  ->CommitCheckpoint(job_.job_id(), "mallory", 4,
                                     std::vector<TensorToSave>{
                                         {"junk", TensorView::Of(junk.data(), junk.size()), {}}})
                  .ok());
  ASSERT_TRUE(coordinator_->Leave(job_.job_id(), "mallory").ok());

  std::vector<std::unique_ptr<WorkerRuntime>> workers;
  const absl::Time start = absl::Now();
  const std::vector<absl::Status> results = RunWorkers(1, &workers);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_TRUE(FailedBecause(results[0], Failure::kCheckpointUnusable)) << results[0];
  EXPECT_THAT(results[0].message(), ::testing::HasSubstr("committed checkpoint of step 4"));
  EXPECT_THAT(results[0].message(), ::testing::HasSubstr("no trainer state"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(30)) << "retried instead of stopping";
}

TEST_F(RuntimeTest, ThreeWorkersTrainTheSameModelAndTheLedgerCountsEverySampleOnce) {
  constexpr int kWorkers = 3;
  std::vector<std::unique_ptr<WorkerRuntime>> workers;
  std::atomic<int> evaluations{0};
  const std::vector<absl::Status> results =
      RunWorkers(kWorkers, &workers, [&](int, const WorkerProgress& p) {
        if (std::isnan(p.validation_loss)) return;
        EXPECT_EQ(p.rank, 0);
        EXPECT_EQ(p.step % 4, 0u);
        EXPECT_GT(p.validation_loss, 0.0);
        EXPECT_LT(p.validation_loss, 10.0);
        ++evaluations;
      });
  ASSERT_EQ(results.size(), static_cast<size_t>(kWorkers));
  EXPECT_GE(evaluations.load(), 3);
  for (int i = 0; i < kWorkers; ++i) {
    ASSERT_TRUE(results[i].ok()) << "worker " << i << ": " << results[i];
    EXPECT_EQ(workers[i]->step(), 12u);
    EXPECT_EQ(workers[i]->StateDigest(), workers[0]->StateDigest()) << "worker " << i;
  }
  auto job = coordinator_->GetJob("rt");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->committed_step(), 12u);
  // Every sequence the 12 steps trained is counted, once.
  EXPECT_EQ(CommittedSequences(), TrainedSequences());
  EXPECT_GE(CommittedSequences(), 12u * 8);

  // No volunteer sends the whole model: a checkpoint taken by the group of
  // three went up as a split upload, each member sending about a third
  // (rank 0 adds the small blobs), and the parts tile it exactly.
  std::map<uint64_t, std::vector<uint64_t>> split_by_three;  // step -> each part's bytes
  for (int i = 0; i < kWorkers; ++i) {
    FaultyClient& client = *static_cast<FaultyClient*>(clients_[i].get());
    EXPECT_EQ(client.whole_uploads(), 0) << "worker " << i;
    for (const LandedPart& part : client.landed_parts()) {
      if (part.parts == 3) split_by_three[part.step].push_back(part.bytes);
    }
  }
  ASSERT_TRUE(split_by_three.contains(12)) << "the last checkpoint was not the group of three's";
  for (const auto& [step, parts] : split_by_three) {
    auto checkpoint = coordinator_->checkpoints()->OpenCheckpoint("rt", step);
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
    const uint64_t checkpoint_bytes = (*checkpoint)->info().total_bytes;
    ASSERT_EQ(parts.size(), 3u) << "step " << step << ": " << absl::StrJoin(parts, " ");
    EXPECT_EQ(parts[0] + parts[1] + parts[2], checkpoint_bytes) << "step " << step;
    for (uint64_t bytes : parts) {
      EXPECT_LT(bytes, checkpoint_bytes * 2 / 5)
          << "step " << step << ": one member sent " << bytes << " of " << checkpoint_bytes;
    }
  }
}

// `job extend` while the workers run: they learn it at the commit of the old
// final step (the coordinator's one decision, the same for every member),
// train on to the new one, and end as one model with every sample counted
// once. Before, running workers read max_steps once and stopped at the old
// end, leaving the job running with nobody in it.
TEST_F(RuntimeTest, AJobExtendedWhileItRunsIsTrainedToItsNewFinalStep) {
  constexpr int kWorkers = 2;
  const std::string admin = *coordinator_->CreateAdminToken(absl::Hours(1));
  std::vector<std::unique_ptr<WorkerRuntime>> workers;
  std::atomic<bool> extended{false};
  const std::vector<absl::Status> results =
      RunWorkers(kWorkers, &workers, [&](int, const WorkerProgress& p) {
        if (p.step == 6 && !extended.exchange(true)) {
          auto status = coordinator_->ExtendJob(admin, "rt", 20);
          EXPECT_TRUE(status.ok()) << status.status();
        }
      });
  ASSERT_EQ(results.size(), static_cast<size_t>(kWorkers));
  EXPECT_TRUE(extended.load());
  for (int i = 0; i < kWorkers; ++i) {
    ASSERT_TRUE(results[i].ok()) << "worker " << i << ": " << results[i];
    EXPECT_EQ(workers[i]->step(), 20u) << "worker " << i;
    EXPECT_EQ(workers[i]->StateDigest(), workers[0]->StateDigest()) << "worker " << i;
  }
  auto job = coordinator_->GetJob("rt");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->committed_step(), 20u);
  EXPECT_EQ(job->state(), v1::JOB_STATE_FINISHED);
  EXPECT_EQ(CommittedSequences(), TrainedSequences());
}

TEST_F(RuntimeTest, AWorkerThatLeavesMidRunIsRegroupedAroundAndNothingCountsTwice) {
  constexpr int kWorkers = 3;
  std::vector<std::unique_ptr<WorkerRuntime>> workers;
  const std::vector<absl::Status> results =
      RunWorkers(kWorkers, &workers, [&](int i, const WorkerProgress& p) {
        if (i == 0 && p.step == 6) workers[2]->Stop();
      });
  ASSERT_EQ(results.size(), static_cast<size_t>(kWorkers));
  for (int i = 0; i < kWorkers; ++i) EXPECT_TRUE(results[i].ok()) << i << ": " << results[i];
  EXPECT_EQ(workers[0]->step(), 12u);
  EXPECT_EQ(workers[1]->step(), 12u);
  EXPECT_EQ(workers[0]->StateDigest(), workers[1]->StateDigest());
  EXPECT_LT(workers[2]->step(), 12u);

  {
    absl::MutexLock lock(&mu_);
    ASSERT_EQ(steps_.size(), 12u);
    EXPECT_EQ(steps_.rbegin()->second.world_size, 2);
  }
  EXPECT_EQ(CommittedSequences(), TrainedSequences());
}

// Invariant 3 at checkpoint time: one member's parameters drift (as
// different hardware can make them) after step 6. Before the checkpoint of
// step 8 the members compare state digests, find the mismatch, and take
// rank 0's state; the repair is counted on every member. Without that
// agreement the drift would survive to the end and into the checkpoints,
// whose parts the members upload from their own copies.
TEST_F(RuntimeTest, AMemberWhoseStateDriftedIsRepairedFromRankZeroBeforeTheCheckpoint) {
  constexpr int kWorkers = 3;
  std::vector<std::unique_ptr<WorkerRuntime>> workers;
  std::atomic<bool> perturbed{false};
  std::atomic<uint64_t> perturbed_digest{0};
  const std::vector<absl::Status> results =
      RunWorkers(kWorkers, &workers, [&](int i, const WorkerProgress& p) {
        if (p.rank != 1 || p.step != 6 || perturbed.exchange(true)) return;
        torch::NoGradGuard no_grad;
        workers[i]->model()->trainable().values().narrow(0, 0, 1).add_(0.5);
        perturbed_digest = workers[i]->StateDigest();
      });
  ASSERT_EQ(results.size(), static_cast<size_t>(kWorkers));
  ASSERT_TRUE(perturbed.load());
  for (int i = 0; i < kWorkers; ++i) {
    ASSERT_TRUE(results[i].ok()) << "worker " << i << ": " << results[i];
    EXPECT_EQ(workers[i]->step(), 12u);
    EXPECT_GE(workers[i]->state_repairs(), 1u) << "worker " << i;
  }
  for (int i = 1; i < kWorkers; ++i) {
    EXPECT_EQ(workers[i]->StateDigest(), workers[0]->StateDigest()) << "worker " << i;
  }
  // The committed checkpoint of the last step is the members' one model.
  auto reader = coordinator_->checkpoints()->OpenCheckpoint(job_.job_id(), 12);
  ASSERT_TRUE(reader.ok()) << reader.status();
  auto model = CreateJobModel(job_);
  ASSERT_TRUE(model.ok()) << model.status();
  auto config = TrainingConfigFromJob(job_, 12);
  ASSERT_TRUE(config.ok()) << config.status();
  auto trainer = Trainer::Create(model->get(), *config);
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  ASSERT_TRUE((*trainer)->Restore(reader->get()).ok());
  EXPECT_EQ((*trainer)->StateDigest(), workers[0]->StateDigest());
  EXPECT_EQ(CommittedSequences(), TrainedSequences());
}

// DiLoCo: a worker that finds the coordinator unreachable when it leases
// its first shard waits for it and then trains its slot, instead of taking
// the slot for dry and exchanging with weight 0 for the rest of the epoch.
TEST_F(RuntimeTest, DilocoWorkerWaitsOutACoordinatorBlipWhileLeasingAndTrainsItsSlot) {
  auto admin = coordinator_->CreateAdminToken(absl::Hours(1));
  ASSERT_TRUE(admin.ok());
  job_.set_job_id("rd");
  job_.set_mode(v1::SYNC_MODE_DILOCO);
  job_.mutable_diloco()->set_inner_steps(2);
  job_.mutable_diloco()->set_outer_learning_rate(0.7);
  job_.mutable_diloco()->set_outer_momentum(0.9);
  job_.mutable_batch()->set_global_batch_size(8);
  auto submitted = coordinator_->SubmitJob(*admin, job_);
  ASSERT_TRUE(submitted.ok()) << submitted.status();

  constexpr int kWorkers = 2;
  std::vector<std::unique_ptr<WorkerRuntime>> workers;
  const std::vector<absl::Status> results =
      RunWorkers(kWorkers, &workers, nullptr, {{}, {.lease_blips = 3}});
  ASSERT_EQ(results.size(), static_cast<size_t>(kWorkers));
  for (int i = 0; i < kWorkers; ++i) {
    ASSERT_TRUE(results[i].ok()) << "worker " << i << ": " << results[i];
    // 6 rounds of 2 inner steps each, the blipped worker's included.
    EXPECT_EQ(workers[i]->step(), 12u) << "worker " << i;
    EXPECT_EQ(workers[i]->SharedDigest(), workers[0]->SharedDigest()) << "worker " << i;
  }
  EXPECT_EQ(CommittedSequences(), TrainedSequences());
  EXPECT_EQ(CommittedSequences(), 12u * 8);
}

// A volunteer without the job's files fetches them from the coordinator
// into its cache, verifying each shard's checksum: a shard that arrives
// damaged once is fetched again, and the group trains to the end with one
// model and every sample counted once; the cached shards are the job's
// bytes.
TEST_F(RuntimeTest, AWorkerWithoutTheDataFetchesItVerifiedFromTheCoordinator) {
  const std::string shard = dataset_.train.front().file;
  std::vector<std::unique_ptr<WorkerRuntime>> workers;
  const std::vector<absl::Status> results =
      RunWorkers(2, &workers, nullptr,
                 {{.remote_data = true, .corrupt_file = shard, .corrupt_fetches = 1}, {}});
  ASSERT_EQ(results.size(), 2u);
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(results[i].ok()) << "worker " << i << ": " << results[i];
  EXPECT_EQ(workers[0]->StateDigest(), workers[1]->StateDigest());
  EXPECT_EQ(CommittedSequences(), TrainedSequences());

  const std::map<std::string, int> fetched =
      static_cast<FaultyClient*>(clients_[0].get())->fetched();
  EXPECT_EQ(fetched.at(std::string(kManifestFile)), 1);
  EXPECT_EQ(fetched.at(shard), 2) << "the damaged copy was kept";
  for (const auto* split : {&dataset_.train, &dataset_.validation}) {
    for (const ShardInfo& info : *split) {
      EXPECT_EQ(ReadFileOrDie(absl::StrCat(dir_, "/worker0/cache/rt/", info.file)),
                ReadFileOrDie(absl::StrCat(dataset_.dir, "/", info.file)))
          << info.file;
    }
  }
  EXPECT_TRUE(static_cast<FaultyClient*>(clients_[1].get())->fetched().empty())
      << "a worker with the data fetched it";
}

// A shard that arrives damaged every time is never trained on: the worker
// stops, naming the file and the checksum, and reports nothing.
TEST_F(RuntimeTest, AShardThatAlwaysArrivesDamagedStopsTheWorkerNamingIt) {
  const std::string shard = dataset_.train.front().file;
  std::vector<std::unique_ptr<WorkerRuntime>> workers;
  const std::vector<absl::Status> results = RunWorkers(
      1, &workers, nullptr, {{.remote_data = true, .corrupt_file = shard, .corrupt_fetches = 100}});
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].code(), absl::StatusCode::kDataLoss) << results[0];
  EXPECT_THAT(results[0].message(), ::testing::HasSubstr(shard));
  EXPECT_EQ(TrainedSequences(), 0u);
  EXPECT_EQ(CommittedSequences(), 0u);
}

}  // namespace
}  // namespace potluck
