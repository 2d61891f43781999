// SubmitJob: a spec is validated, stored once, and its ledger built from
// the dataset's manifest.
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "coordinator/coordinator.h"
#include "coordinator/coordinator_test_util.h"
#include "data/dataset.h"

namespace potluck {
namespace {

using ::testing::HasSubstr;

class SubmitJobTest : public testing_util::CoordinatorFixture {};

TEST_F(SubmitJobTest, InvalidSpecIsRefusedAndChangesNothing) {
  v1::JobSpec spec = Spec("job-1");
  spec.mutable_batch()->set_micro_batch_size(0);
  auto submitted = coordinator_->SubmitJob(admin_, spec);
  EXPECT_EQ(submitted.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(submitted.status().message(), HasSubstr("batch.micro_batch_size"));
  EXPECT_TRUE(coordinator_->ListJobs()->empty());
  Reopen();
  EXPECT_TRUE(coordinator_->ListJobs()->empty());
}

// Issue 16: a dataset a job could never train to its end is refused at
// submit, naming the shard or the numbers, instead of a job that never
// commits.
v1::JobSpec GptSpec(const std::string& job_id) {
  v1::JobSpec spec = testing_util::CoordinatorFixture::Spec(job_id);
  v1::GptSpec* gpt = spec.mutable_model()->mutable_gpt();
  gpt->set_vocab_size(256);
  gpt->set_context_length(32);
  gpt->set_layers(1);
  gpt->set_heads(2);
  gpt->set_width(32);
  return spec;
}

TEST_F(SubmitJobTest, AShardShorterThanOneSequenceIsRefusedByName) {
  shards_ = {{"train-00000.tok", 1000}, {"train-00001.tok", 10}};
  auto submitted = coordinator_->SubmitJob(admin_, GptSpec("job-1"));
  EXPECT_EQ(submitted.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(submitted.status().message(),
              HasSubstr("shard train-00001.tok holds 10 tokens, fewer than one sequence"));
  EXPECT_TRUE(coordinator_->ListJobs()->empty());
  // Exactly one sequence plus one token is enough.
  shards_ = {{"train-00000.tok", 1000}, {"train-00001.tok", 33}};
  EXPECT_TRUE(coordinator_->SubmitJob(admin_, GptSpec("job-1")).ok());
}

TEST_F(SubmitJobTest, ADatasetSmallerThanOneGlobalBatchIsRefused) {
  shards_ = {{"train-00000.tok", 19}};
  v1::JobSpec spec = GptSpec("job-1");
  spec.mutable_model()->mutable_gpt()->set_context_length(8);
  spec.set_max_steps(50);
  auto submitted = coordinator_->SubmitJob(admin_, spec);
  EXPECT_EQ(submitted.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(submitted.status().message(),
              HasSubstr("holds 2 sequences of context_length 8, fewer than one global batch"));
  EXPECT_TRUE(coordinator_->ListJobs()->empty());
}

// Issue 16: a dataset of one file still gives every member of a group its
// own data. The ledger leases ranges of one global batch of sequences
// (8 * 32 + 1 tokens here), the file's remainder in its last range.
TEST_F(SubmitJobTest, AFileIsLeasedInRangesSoEveryMemberOfAGroupHasData) {
  shards_ = {{"train-00000.tok", 3000, 77}};
  ASSERT_TRUE(coordinator_->SubmitJob(admin_, GptSpec("job-1")).ok());
  auto ledger = coordinator_->GetLedger("job-1");
  ASSERT_TRUE(ledger.ok()) << ledger.status();
  ASSERT_EQ(ledger->shards.size(), 11u);  // 3000 / 257
  uint64_t next = 0;
  for (const ShardView& shard : ledger->shards) {
    EXPECT_EQ(shard.name, "train-00000.tok");
    EXPECT_EQ(shard.begin, next);
    EXPECT_EQ(shard.size, shard.id + 1 < 11 ? 257u : 3000u - 10 * 257);
    next += shard.size;
  }
  EXPECT_EQ(next, 3000u);

  for (const char* worker : {"a", "b", "c"}) Join("job-1", worker);
  Form("job-1", {"a", "b", "c"});
  std::set<uint64_t> begins;
  for (const char* worker : {"a", "b", "c"}) {
    auto lease = coordinator_->AcquireShard("job-1", worker);
    ASSERT_TRUE(lease.ok()) << worker << ": " << lease.status();
    EXPECT_EQ(lease->name, "train-00000.tok");
    EXPECT_EQ(lease->checksum, 77u);
    EXPECT_EQ(lease->begin, ledger->shards[lease->shard].begin);
    begins.insert(lease->begin);
  }
  EXPECT_EQ(begins.size(), 3u) << "every member holds a range of its own";
}

TEST_F(SubmitJobTest, ResubmittingIsIdempotentAndAnotherSpecConflicts) {
  Submit(Spec("job-1"), shards_);
  EXPECT_TRUE(coordinator_->SubmitJob(admin_, Spec("job-1")).ok());
  v1::JobSpec other = Spec("job-1");
  other.set_seed(7);
  EXPECT_EQ(coordinator_->SubmitJob(admin_, other).status().code(),
            absl::StatusCode::kAlreadyExists);
  Submit(Spec("job-2"), shards_);
  auto jobs = coordinator_->ListJobs();
  ASSERT_TRUE(jobs.ok());
  ASSERT_EQ(jobs->size(), 2u);
  EXPECT_EQ((*jobs)[0].spec().job_id(), "job-1");
  EXPECT_EQ((*jobs)[1].state(), v1::JOB_STATE_RUNNING);
}

TEST_F(SubmitJobTest, LedgerIsBuiltFromTheDatasetManifest) {
  const std::filesystem::path corpus = dir_ / "corpus.txt";
  std::filesystem::create_directories(dir_);
  {
    std::ofstream out(corpus);
    for (int i = 0; i < 200; ++i) out << "line " << i << " of a small corpus\n";
  }
  PrepareOptions prepare;
  prepare.inputs = {corpus.string()};
  prepare.out_dir = (dir_ / "dataset").string();
  prepare.shard_tokens = 1000;
  auto dataset = PrepareDataset(prepare);
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  ASSERT_GT(dataset->train.size(), 2u);

  CoordinatorOptions options = Options();
  options.load_shards = nullptr;  // the default: read the manifest
  options.data_dir = (dir_ / "coordinator").string();
  auto coordinator = Coordinator::Open(options);
  ASSERT_TRUE(coordinator.ok()) << coordinator.status();
  const std::string admin = *(*coordinator)->CreateAdminToken(absl::Hours(1));
  v1::JobSpec spec = Spec("job-1");
  spec.mutable_dataset()->set_manifest((dir_ / "dataset" / kManifestFile).string());
  ASSERT_TRUE((*coordinator)->SubmitJob(admin, spec).ok());
  auto ledger = (*coordinator)->GetLedger("job-1");
  ASSERT_TRUE(ledger.ok());
  ASSERT_EQ(ledger->shards.size(), dataset->train.size());
  uint64_t tokens = 0;
  for (const ShardView& shard : ledger->shards) tokens += shard.size;
  EXPECT_EQ(tokens, dataset->train_tokens());
  EXPECT_EQ(ledger->shards[0].name, dataset->train[0].file);

  spec.set_job_id("job-2");
  spec.mutable_dataset()->set_manifest((dir_ / "missing").string());
  auto missing = (*coordinator)->SubmitJob(admin, spec);
  EXPECT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("dataset.manifest"));
}

}  // namespace
}  // namespace potluck
