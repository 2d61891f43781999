#include <gtest/gtest.h>

#include "potluck/v1/coordinator.pb.h"

namespace potluck {
namespace {

// Leave took a WorkerRequest before it could say why a worker leaves: the
// two messages share their field numbers, so a worker of either release
// and a coordinator of the other still understand each other.
TEST(CoordinatorProto, LeaveRequestIsWireCompatibleWithTheWorkerRequestItReplaced) {
  v1::WorkerRequest old_request;
  old_request.set_job_id("j1");
  old_request.set_worker_id("w-1");
  old_request.set_api_version(1);
  v1::LeaveRequest leave;
  ASSERT_TRUE(leave.ParseFromString(old_request.SerializeAsString()));
  EXPECT_EQ(leave.job_id(), "j1");
  EXPECT_EQ(leave.worker_id(), "w-1");
  EXPECT_EQ(leave.api_version(), 1u);
  EXPECT_EQ(leave.failure(), 0);  // no reason given
  EXPECT_EQ(leave.reason(), "");

  leave.set_failure(6);
  leave.set_reason("shard changed");
  v1::WorkerRequest back;
  ASSERT_TRUE(back.ParseFromString(leave.SerializeAsString()));
  EXPECT_EQ(back.job_id(), "j1");
  EXPECT_EQ(back.worker_id(), "w-1");
  EXPECT_EQ(back.api_version(), 1u);
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
