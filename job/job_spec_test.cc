#include "job/job_spec.h"

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace potluck {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

v1::JobSpec ValidSpec() {
  v1::JobSpec spec;
  spec.set_job_id("ok");
  spec.mutable_model()->mutable_mlp()->set_input_dim(4);
  spec.mutable_model()->mutable_mlp()->set_num_classes(2);
  spec.mutable_dataset()->set_manifest("/data/ok");
  spec.mutable_optimizer()->set_learning_rate(0.01f);
  spec.set_mode(v1::SYNC_MODE_SYNC);
  spec.mutable_batch()->set_micro_batch_size(2);
  spec.mutable_batch()->set_global_batch_size(8);
  return spec;
}

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

TEST(JobSpec, AnyYamlParsesToTheSameSpecAsJson) {
  // Flow mappings, block and flow sequences, comments, camelCase keys.
  std::string yaml = kYaml;
  yaml.replace(yaml.find("batch: {micro_batch_size: 4}"), std::string::npos,
               "batch: {micro_batch_size: 4, global_batch_size: 32}\n"
               "checkpoint:\n  every_steps: 100\naccess: {open: false, max_workers: 16}\n");
  auto from_yaml = ParseJobSpecYaml(yaml);
  ASSERT_TRUE(from_yaml.ok()) << from_yaml.status();
  auto from_json = ParseJobSpecJson(kJson);
  ASSERT_TRUE(from_json.ok());
  EXPECT_EQ(from_yaml->DebugString(), from_json->DebugString());
}

// What a user writes in a job file, as a newcomer tried it: a flow mapping
// for the model and a folded block scalar for the description.
TEST(JobSpec, FlowMappingsFoldedScalarsAndAnchorsAreYamlToo) {
  auto spec = ParseJobSpecYaml(R"(job_id: folded
description: >
  a small GPT
  for the README
model:
  gpt: {vocab_size: 256, context_length: 64, layers: 2, heads: 2, width: 64}
defaults: &batch {micro_batch_size: 4, global_batch_size: 8}
)");
  // `defaults` is no JobSpec field: refused by name, after YAML parsed fine.
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(spec.status().message(), HasSubstr("defaults"));
  spec = ParseJobSpecYaml(R"(job_id: folded
description: >
  a small GPT
  for the README
model:
  gpt: {vocab_size: 256, context_length: 64, layers: 2, heads: 2, width: 64}
batch: &b {micro_batch_size: 4, global_batch_size: 8}
)");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->description(), "a small GPT for the README\n");
  EXPECT_EQ(spec->model().gpt().width(), 64u);
  EXPECT_EQ(spec->batch().global_batch_size(), 8u);
}

TEST(JobSpec, YamlScalarsQuotingAndErrorsNameTheLine) {
  auto json = YamlToJson(
      "model:\n  mlp:\n    hidden_dims:\n      - 64\n      - 32\n  lora:\n"
      "    targets: [attn.qkv, 'mlp.fc']\ndescription: 'it''s # not a comment'\n"
      "flag: true\nquoted: 'true'\nnothing: ~\n");
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_EQ(*json,
            R"({"description":"it's # not a comment","flag":true,"model":{"lora":{"targets":)"
            R"(["attn.qkv","mlp.fc"]},"mlp":{"hidden_dims":["64","32"]}},"nothing":null,)"
            R"("quoted":"true"})");
  EXPECT_THAT(YamlToJson("a:\n  b: [1, 2\nc: 3\n").status().message(), HasSubstr("YAML line"));
  EXPECT_THAT(YamlToJson("a: 1\nb:\n\tc: 2\n").status().message(), HasSubstr("line 3"));
  EXPECT_THAT(YamlToJson("a: 1\na: 2\n").status().message(),
              HasSubstr("line 2: duplicate key 'a'"));
  EXPECT_THAT(YamlToJson("- 1\n").status().message(), HasSubstr("must be a mapping"));
  // Bytes that are not UTF-8 are an error, not an exception out of the JSON
  // writer (fuzz/corpus/job_spec_yaml/regress-not-utf8).
  EXPECT_THAT(YamlToJson("description: \xdd\xdd\n").status().message(),
              HasSubstr("not valid UTF-8"));
  // A document nested past any JobSpec's depth is refused, not recursed into.
  EXPECT_THAT(
      YamlToJson("a: " + std::string(100, '[') + std::string(100, ']') + "\n").status().message(),
      HasSubstr("nested deeper"));
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

TEST(JobSpec, FinalStepIsMaxStepsOrItsRounds) {
  v1::JobSpec spec = ValidSpec();
  spec.set_max_steps(100);
  EXPECT_EQ(FinalStep(spec), 100u);
  spec.set_mode(v1::SYNC_MODE_DILOCO);
  spec.mutable_diloco()->set_inner_steps(30);
  EXPECT_EQ(FinalStep(spec), 4u);  // ceil(100 / 30)
  EXPECT_EQ(FinalStepFor(spec, 120), 4u);
  EXPECT_EQ(FinalStepFor(spec, 121), 5u);
  spec.set_max_steps(0);
  EXPECT_EQ(FinalStep(spec), 0u);
}

TEST(JobSpec, EveryInvalidFieldIsNamed) {
  v1::JobSpec spec;
  spec.set_job_id("Not A Valid Id!");
  spec.mutable_model()->mutable_gpt()->set_vocab_size(256);
  spec.mutable_model()->mutable_gpt()->set_heads(3);
  spec.mutable_model()->mutable_gpt()->set_width(64);
  spec.mutable_batch()->set_global_batch_size(8);
  spec.mutable_optimizer()->set_learning_rate(-1);
  const absl::Status status = ValidateJobSpec(spec);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  for (const char* field :
       {"job_id:", "model.gpt.context_length: must be > 0", "model.gpt.layers: must be > 0",
        "model.gpt.width: must be a multiple of model.gpt.heads (3)",
        "dataset.manifest: is required", "optimizer.learning_rate: must be >= 0",
        "mode:", "batch.micro_batch_size: must be > 0"}) {
    EXPECT_THAT(status.message(), HasSubstr(field));
  }
  EXPECT_THAT(status.message(), Not(HasSubstr("model.gpt.vocab_size")));
  EXPECT_THAT(status.message(), Not(HasSubstr("batch.global_batch_size")));

  v1::JobSpec no_model = ValidSpec();
  no_model.clear_model();
  EXPECT_THAT(ValidateJobSpec(no_model).message(),
              HasSubstr("model: one of model.gpt or model.mlp is required"));
  v1::JobSpec diloco = ValidSpec();
  diloco.set_mode(v1::SYNC_MODE_DILOCO);
  EXPECT_THAT(ValidateJobSpec(diloco).message(), HasSubstr("diloco.inner_steps"));

  // Zero fields take the defaults, the same for the coordinator and the
  // worker: one rule for both (they once disagreed on learning_rate 0).
  v1::JobSpec defaults = ValidSpec();
  defaults.mutable_optimizer()->clear_learning_rate();
  EXPECT_TRUE(ValidateJobSpec(defaults).ok()) << ValidateJobSpec(defaults);
  auto settings = ResolveJobSettings(defaults);
  ASSERT_TRUE(settings.ok());
  EXPECT_DOUBLE_EQ(settings->learning_rate, 1e-3);
  EXPECT_DOUBLE_EQ(settings->outer_learning_rate, 0.7);
  defaults.mutable_optimizer()->set_beta2(1.5);
  EXPECT_THAT(ValidateJobSpec(defaults).message(), HasSubstr("optimizer.beta2"));
  EXPECT_THAT(ResolveJobSettings(defaults).status().message(), HasSubstr("optimizer.beta2"));
}

}  // namespace
}  // namespace potluck
