#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include "potluck/v1/coordinator.pb.h"
#include "potluck/v1/job.pb.h"

namespace potluck {
namespace {

using google::protobuf::util::JsonParseOptions;
using google::protobuf::util::JsonStringToMessage;

// Job specs are written by people as JSON; the generated code maps them
// straight into the proto, in either field-name spelling.
TEST(JobSpecProto, ParsesFromJsonInBothSpellings) {
  v1::JobSpec spec;
  const auto status = JsonStringToMessage(R"({
      "job_id": "tiny-gpt",
      "mode": "SYNC_MODE_DILOCO",
      "model": {"gpt": {"vocabSize": 256, "layers": 2, "heads": 4, "width": 128}},
      "diloco": {"inner_steps": 50, "outerLearningRate": 0.7, "codec": "WIRE_CODEC_INT8"},
      "seed": "1234"})",
                                          &spec);
  ASSERT_TRUE(status.ok()) << status.ToString();
  EXPECT_EQ(spec.job_id(), "tiny-gpt");
  EXPECT_EQ(spec.mode(), v1::SYNC_MODE_DILOCO);
  EXPECT_EQ(spec.model().gpt().vocab_size(), 256u);
  EXPECT_EQ(spec.diloco().inner_steps(), 50u);
  EXPECT_FLOAT_EQ(spec.diloco().outer_learning_rate(), 0.7f);
  EXPECT_EQ(spec.diloco().codec(), v1::WIRE_CODEC_INT8);
  EXPECT_EQ(spec.seed(), 1234u);

  v1::JobSpec copy;
  ASSERT_TRUE(copy.ParseFromString(spec.SerializeAsString()));
  EXPECT_EQ(copy.SerializeAsString(), spec.SerializeAsString());
}

TEST(JobSpecProto, UnknownFieldIsRejectedByName) {
  v1::JobSpec spec;
  const auto status = JsonStringToMessage(R"({"job_id": "x", "modle": {}})", &spec);
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.ToString().find("modle"), std::string::npos) << status.ToString();
}

// The messages target (no gRPC) still carries the service's descriptor: the
// service lives in the same file as its request messages.
TEST(CoordinatorProto, ServiceDeclaresTheJobRpcs) {
  const auto* service =
      v1::SubmitJobRequest::descriptor()->file()->FindServiceByName("Coordinator");
  ASSERT_NE(service, nullptr);
  EXPECT_EQ(service->full_name(), "potluck.v1.Coordinator");
  EXPECT_NE(service->FindMethodByName("SubmitJob"), nullptr);
  EXPECT_NE(service->FindMethodByName("ListJobs"), nullptr);
}

}  // namespace
}  // namespace potluck
