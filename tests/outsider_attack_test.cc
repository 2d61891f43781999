// Issue 15's attack, replayed: two `potluck worker` processes train a job
// that needs a join token, while an outsider on its own channel, holding no
// credential but knowing the members' worker ids, tries every call that used
// to be accepted without one. Each is refused, and the run ends as if the
// outsider had never been there: both members finish at full strength with
// the same model, and the ledger counts every trained sample once.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

#include "coordinator/server.h"
#include "potluck/v1/coordinator.grpc.pb.h"
#include "tests/worker_e2e_util.h"

namespace potluck {
namespace {

using testing_util::WorkerProcess;
using OutsiderAttackTest = testing_util::WorkerE2eFixture;

// Every call of the table, as an outsider: its status codes by call.
std::map<std::string, grpc::StatusCode> Attack(const std::string& address,
                                               const std::vector<std::string>& members,
                                               uint64_t generation, bool* saw_dataset) {
  auto stub =
      v1::Coordinator::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  std::map<std::string, grpc::StatusCode> codes;
  auto call = [&](const std::string& what, auto method, auto request, auto response) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    codes[what] = ((*stub).*method)(&context, request, &response).error_code();
  };
  auto stream = [&](const std::string& what, auto method, auto request) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    auto reader = ((*stub).*method)(&context, request);
    v1::DataPiece piece;
    while (reader->Read(&piece)) {
    }
    codes[what] = reader->Finish().error_code();
  };
  const std::string& victim = members[0];
  const std::string& other = members[1];

  v1::ListWorkersRequest list;
  list.set_job_id("e2e");
  call("ListWorkers", &v1::Coordinator::Stub::ListWorkers, list, v1::ListWorkersResponse());
  v1::RendezvousRequest rendezvous;
  rendezvous.set_job_id("e2e");
  rendezvous.set_worker_id(victim);
  rendezvous.set_generation(generation);
  call("Rendezvous", &v1::Coordinator::Stub::Rendezvous, rendezvous, v1::RendezvousResponse());
  v1::WorkerRequest as_victim;
  as_victim.set_job_id("e2e");
  as_victim.set_worker_id(victim);
  call("Heartbeat", &v1::Coordinator::Stub::Heartbeat, as_victim, v1::HeartbeatResponse());
  call("AcquireShard", &v1::Coordinator::Stub::AcquireShard, as_victim, v1::AcquireShardResponse());
  v1::ReportFailureRequest failure;
  failure.set_job_id("e2e");
  failure.set_reporter(victim);
  failure.set_failed(other);
  call("ReportFailure", &v1::Coordinator::Stub::ReportFailure, failure,
       v1::ReportFailureResponse());
  v1::ReportProgressRequest progress;
  progress.set_job_id("e2e");
  progress.set_worker_id(victim);
  progress.set_request_id("outsider-1");
  progress.set_generation(generation);
  progress.set_offset(1u << 30);
  progress.set_step(1000000000000000);
  call("ReportProgress", &v1::Coordinator::Stub::ReportProgress, progress,
       v1::ReportProgressResponse());
  v1::EndStepRequest end;
  end.set_job_id("e2e");
  end.set_worker_id(victim);
  end.set_step(1000000000000000);
  call("EndStep", &v1::Coordinator::Stub::EndStep, end, v1::EndStepResponse());
  v1::GetCheckpointInfoRequest info;
  info.set_job_id("e2e");
  info.set_latest(true);
  call("GetCheckpointInfo", &v1::Coordinator::Stub::GetCheckpointInfo, info,
       v1::GetCheckpointInfoResponse());
  v1::ReadCheckpointChunkRequest chunk;
  chunk.set_job_id("e2e");
  chunk.set_step(5);
  chunk.set_entry("trainer");
  stream("ReadCheckpointChunk", &v1::Coordinator::Stub::ReadCheckpointChunk, chunk);
  v1::FetchDatasetFileRequest file;
  file.set_job_id("e2e");
  file.set_name("manifest.json");
  stream("FetchDatasetFile", &v1::Coordinator::Stub::FetchDatasetFile, file);
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::PutCheckpointResponse response;
    auto writer = stub->PutCheckpoint(&context, &response);
    v1::PutCheckpointRequest begin;
    begin.mutable_begin()->set_job_id("e2e");
    begin.mutable_begin()->set_worker_id(victim);
    begin.mutable_begin()->set_step(1000);
    writer->Write(begin);
    writer->WritesDone();
    codes["PutCheckpoint"] = writer->Finish().error_code();
  }
  // Last, as it would end the attack: leaving as each member.
  for (const std::string& member : members) {
    v1::LeaveRequest leave;
    leave.set_job_id("e2e");
    leave.set_worker_id(member);
    call("Leave " + member, &v1::Coordinator::Stub::Leave, leave, v1::LeaveResponse());
  }
  // What anyone may read: the public summary, without the dataset's path.
  grpc::ClientContext context;
  v1::GetJobRequest get;
  get.set_job_id("e2e");
  v1::GetJobResponse job;
  codes["GetJob"] = stub->GetJob(&context, get, &job).error_code();
  *saw_dataset = job.job().spec().has_dataset();
  return codes;
}

TEST_F(OutsiderAttackTest, EveryCallWithoutACredentialIsRefusedAndTheRunEndsUntouched) {
  StartCoordinator(0, 60, /*open=*/false);
  auto token = admin_->CreateToken(admin_token_, "e2e", absl::Hours(1));
  ASSERT_TRUE(token.ok()) << token.status();
  std::vector<std::unique_ptr<WorkerProcess>> workers;
  for (int i = 0; i < 2; ++i) workers.push_back(StartWorker(i, *token));

  std::map<std::string, grpc::StatusCode> codes;
  bool attacked = false;
  bool saw_dataset = true;
  uint64_t attacked_at = 0;
  auto digests = Drive(workers, [&](int, const nlohmann::json& line) {
    if (attacked || line.value("world", 0) != 2 || line.value("step", 0) < 12) return;
    // The outsider knows the members' ids (the worst case: they leaked).
    auto listed = admin_->ListWorkers("e2e");
    ASSERT_TRUE(listed.ok()) << listed.status();
    std::vector<std::string> members;
    for (const v1::WorkerInfo& worker : *listed) members.push_back(worker.worker_id());
    ASSERT_EQ(members.size(), 2u);
    codes = Attack(address_, members, line.value("generation", uint64_t{0}), &saw_dataset);
    attacked = true;
    attacked_at = line.value("step", uint64_t{0});
  });
  ASSERT_TRUE(attacked);
  for (const auto& [what, code] : codes) {
    if (what == "GetJob") continue;
    EXPECT_EQ(code, grpc::StatusCode::UNAUTHENTICATED) << what;
  }
  EXPECT_EQ(codes["GetJob"], grpc::StatusCode::OK);
  EXPECT_FALSE(saw_dataset) << "an outsider read the job's dataset path";

  ExpectExited(workers, {0, 1});
  ASSERT_EQ(digests.count(0), 1u);
  ASSERT_EQ(digests.count(1), 1u);
  EXPECT_EQ(digests[0], digests[1]);
  // Nobody was evicted, nothing was rolled back by the outsider: both
  // members trained every step after the attack.
  for (const auto& [step, world] : world_at_step_) {
    if (step > attacked_at) {
      EXPECT_EQ(world, 2) << "step " << step;
    }
  }
  ExpectLedgerCountsEverySampleOnce(60);
}

}  // namespace
}  // namespace potluck
