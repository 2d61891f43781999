#include "coordinator/job_spec.h"

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "coordinator/coordinator.h"
#include "coordinator/coordinator_test_util.h"
#include "data/dataset.h"

namespace potluck {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kJson[] = R"({
  "jobId": "tiny-gpt",
  "model": {"gpt": {"vocabSize": 256, "context_length": 64, "layers": 2, "heads": 2, "width": 64}},
  "dataset": {"manifest": "/data/tiny", "epochs": 2},
  "optimizer": {"learningRate": 0.001, "beta1": 0.9, "beta2": 0.95},
  "mode": "SYNC_MODE_DILOCO",
  "diloco": {"innerSteps": 50, "outerLearningRate": 0.7, "outerMomentum": 0.9, "codec": "WIRE_CODEC_INT8"},
  "batch": {"micro_batch_size": 4, "global_batch_size": 32},
  "checkpoint": {"everySteps": 100},
  "access": {"open": false, "maxWorkers": 16}
})";

constexpr char kYaml[] = R"(# the same job as kJson
job_id: tiny-gpt
model:
  gpt:
    vocab_size: 256
    contextLength: 64   # camelCase works too
    layers: 2
    heads: 2
    width: 64
dataset:
  manifest: "/data/tiny"
  epochs: 2
optimizer:
  learning_rate: 0.001
  beta1: 0.9
  beta2: 0.95
mode: SYNC_MODE_DILOCO
diloco:
  inner_steps: 50
  outer_learning_rate: 0.7
  outer_momentum: 0.9
  codec: WIRE_CODEC_INT8
batch: {micro_batch_size: 4}
)";

TEST(JobSpec, ParsesJsonInEitherCase) {
  auto spec = ParseJobSpecJson(kJson);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->job_id(), "tiny-gpt");
  EXPECT_EQ(spec->model().gpt().context_length(), 64u);
  EXPECT_EQ(spec->diloco().codec(), v1::WIRE_CODEC_INT8);
  EXPECT_EQ(spec->batch().micro_batch_size(), 4u);
  EXPECT_EQ(spec->access().max_workers(), 16u);
  EXPECT_TRUE(ValidateJobSpec(*spec).ok()) << ValidateJobSpec(*spec);
}

TEST(JobSpec, YamlSubsetParsesToTheSameSpec) {
  // kYaml ends with a flow mapping, which the subset refuses...
  auto refused = ParseJobSpecYaml(kYaml);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status().message(), HasSubstr("line 23"));
  // ...written as a block mapping it parses to what the JSON says.
  std::string yaml = kYaml;
  yaml.replace(yaml.find("batch: {micro_batch_size: 4}"), std::string::npos,
               "batch:\n  micro_batch_size: 4\n  global_batch_size: 32\n"
               "checkpoint:\n  every_steps: 100\naccess:\n  open: false\n  max_workers: 16\n");
  auto from_yaml = ParseJobSpecYaml(yaml);
  ASSERT_TRUE(from_yaml.ok()) << from_yaml.status();
  auto from_json = ParseJobSpecJson(kJson);
  ASSERT_TRUE(from_json.ok());
  EXPECT_EQ(from_yaml->DebugString(), from_json->DebugString());
}

TEST(JobSpec, YamlSequencesAndQuoting) {
  auto json = YamlToJson(
      "model:\n  mlp:\n    hidden_dims:\n      - 64\n      - 32\n  lora:\n"
      "    targets: [attn.qkv, 'mlp.fc']\ndescription: 'it''s # not a comment'\n");
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_EQ(*json,
            R"({"description":"it's # not a comment","model":{"lora":{"targets":["attn.qkv",)"
            R"("mlp.fc"]},"mlp":{"hidden_dims":["64","32"]}}})");
  EXPECT_THAT(YamlToJson("a:\n\tb: 1\n").status().message(), HasSubstr("line 2: tabs"));
  EXPECT_THAT(YamlToJson("a: 1\na: 2\n").status().message(), HasSubstr("duplicate key 'a'"));
  EXPECT_THAT(YamlToJson("a: &x 1\n").status().message(), HasSubstr("line 1: unsupported"));
  EXPECT_THAT(YamlToJson("- 1\n").status().message(), HasSubstr("must be a mapping"));
}

// The job files in deploy/jobs parse and pass validation as shipped.
TEST(JobSpec, ShippedJobFilesAreValid) {
  int files = 0;
  for (const auto& entry :
       std::filesystem::directory_iterator(std::string(POTLUCK_SOURCE_DIR) + "/deploy/jobs")) {
    std::ifstream in(entry.path());
    const std::string yaml((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto spec = ParseJobSpecYaml(yaml);
    ASSERT_TRUE(spec.ok()) << entry.path() << ": " << spec.status();
    EXPECT_TRUE(ValidateJobSpec(*spec).ok()) << entry.path() << ": " << ValidateJobSpec(*spec);
    ++files;
  }
  EXPECT_GE(files, 2);
}

TEST(JobSpec, UnknownJsonFieldIsNamed) {
  auto spec = ParseJobSpecJson(R"({"jobId": "x", "modle": {}})");
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(spec.status().message(), HasSubstr("modle"));
  EXPECT_THAT(ParseJobSpecJson(R"({"batch": {"microBatchSize": "many"}})").status().message(),
              HasSubstr("batch.micro_batch_size"));
}

TEST(JobSpec, EveryInvalidFieldIsNamed) {
  v1::JobSpec spec;
  spec.set_job_id("Not A Valid Id!");
  spec.mutable_model()->mutable_gpt()->set_vocab_size(256);
  spec.mutable_model()->mutable_gpt()->set_heads(3);
  spec.mutable_model()->mutable_gpt()->set_width(64);
  spec.mutable_batch()->set_global_batch_size(8);
  const absl::Status status = ValidateJobSpec(spec);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  for (const char* field :
       {"job_id:", "model.gpt.context_length: must be > 0", "model.gpt.layers: must be > 0",
        "model.gpt.width: must be a multiple of model.gpt.heads (3)",
        "dataset.manifest: is required", "optimizer.learning_rate: must be > 0",
        "mode:", "batch.micro_batch_size: must be > 0"}) {
    EXPECT_THAT(status.message(), HasSubstr(field));
  }
  EXPECT_THAT(status.message(), Not(HasSubstr("model.gpt.vocab_size")));
  EXPECT_THAT(status.message(), Not(HasSubstr("batch.global_batch_size")));

  v1::JobSpec no_model = testing_util::CoordinatorFixture::Spec("ok");
  no_model.clear_model();
  EXPECT_THAT(ValidateJobSpec(no_model).message(),
              HasSubstr("model: one of model.gpt or model.mlp is required"));
  v1::JobSpec diloco = testing_util::CoordinatorFixture::Spec("ok");
  diloco.set_mode(v1::SYNC_MODE_DILOCO);
  EXPECT_THAT(ValidateJobSpec(diloco).message(), HasSubstr("diloco.inner_steps"));
}

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
