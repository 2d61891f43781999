// The gRPC edge: every call crosses a real loopback connection, and status
// codes, streams, bad input and TLS behave as server.h and grpc_client.h say.
#include <cstdlib>
#include <numeric>
#include <string>
#include <utility>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/support/byte_buffer.h>
#include <gtest/gtest.h>

#include "absl/synchronization/notification.h"

#include "common/failure.h"
#include "coordinator/coordinator_test_util.h"
#include "coordinator/grpc_client.h"
#include "coordinator/server.h"
#include "coordinator/tls_test_util.h"
#include "potluck/v1/coordinator.grpc.pb.h"

namespace potluck {
namespace {

class ServiceTest : public testing_util::CoordinatorFixture {
 protected:
  void SetUp() override {
    CoordinatorFixture::SetUp();
    StartServer({});
  }
  void TearDown() override {
    client_.reset();
    admin_client_.reset();
    server_.reset();
    CoordinatorFixture::TearDown();
  }

  void StartServer(CoordinatorServerOptions options, GrpcClientOptions client_options = {}) {
    client_.reset();
    admin_client_.reset();
    server_.reset();
    options.listen = "127.0.0.1:0";
    auto server = CoordinatorServer::Start(coordinator_.get(), options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    // By IP even with TLS (the certificate names IP:127.0.0.1 too): a minimal
    // system may have no resolver gRPC can ask about "localhost".
    address_ = absl::StrCat("127.0.0.1:", server_->port());
    auto client = NewGrpcClient(address_, client_options);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::move(*client);
    GrpcClientOptions admin_options = client_options;
    admin_options.admin_token = admin_;
    auto admin = NewGrpcAdmin(address_, admin_options);
    ASSERT_TRUE(admin.ok()) << admin.status();
    admin_client_ = std::move(*admin);
  }

  // Submits job-1 over gRPC and joins `workers` with a token made over gRPC.
  void SubmitAndJoin(std::initializer_list<std::string> workers) {
    auto job = admin_client_->SubmitJob(admin_, Spec("job-1"), "req-1");
    ASSERT_TRUE(job.ok()) << job.status();
    EXPECT_EQ(job->state(), v1::JOB_STATE_RUNNING);
    auto token = admin_client_->CreateToken(admin_, "job-1", absl::Hours(1));
    ASSERT_TRUE(token.ok()) << token.status();
    for (const std::string& worker : workers) {
      auto joined = client_->Join({"job-1", *token, worker, worker + ":7000"});
      ASSERT_TRUE(joined.ok()) << joined.status();
      EXPECT_EQ(joined->worker_id, worker);
    }
  }

  // job-1's group of `workers`, formed over gRPC (FormGroup).
  GroupView FormOverGrpc(std::initializer_list<std::string> workers) {
    return testing_util::FormGroup(*client_, "job-1", workers);
  }

  std::unique_ptr<CoordinatorServer> server_;
  std::string address_;
  std::unique_ptr<CoordinatorClient> client_;
  std::unique_ptr<CoordinatorAdmin> admin_client_;
};

TEST_F(ServiceTest, WorkerProtocolAndStreamedCheckpointRoundTrip) {
  SubmitAndJoin({"a", "b"});
  const GroupView view = FormOverGrpc({"a", "b"});
  ASSERT_EQ(view.members.size(), 2u);
  EXPECT_EQ(view.members[1].endpoint, "b:7000");
  EXPECT_EQ(view.secret.size(), 32u);

  auto lease_a = client_->AcquireShard("job-1", "a");
  ASSERT_TRUE(lease_a.ok()) << lease_a.status();
  auto lease_b = client_->AcquireShard("job-1", "b");
  ASSERT_TRUE(lease_b.ok()) << lease_b.status();
  EXPECT_NE(lease_a->shard, lease_b->shard);
  ProgressReport report{"job-1", "a", "r1", view.generation, lease_a->shard, 40, 1};
  auto progress = client_->ReportProgress(report);
  ASSERT_TRUE(progress.ok()) << progress.status();
  EXPECT_FALSE(progress->duplicate);
  EXPECT_EQ(progress->consumed_offset, 40u);
  auto replay = client_->ReportProgress(report);
  ASSERT_TRUE(replay.ok()) << replay.status();
  EXPECT_TRUE(replay->duplicate);
  EXPECT_EQ(replay->consumed_offset, 40u);
  for (const char* worker : {"a", "b"}) {
    auto ended = client_->EndStep("job-1", worker, 1);
    ASSERT_TRUE(ended.ok()) << ended.status();
    EXPECT_FALSE(ended->regroup);
  }

  // 3 MiB + 5 floats: several 1 MiB pieces on the wire, one store chunk.
  std::vector<float> weights((3 << 18) + 5);
  std::iota(weights.begin(), weights.end(), 0.0f);
  auto writer = client_->BeginCheckpoint("job-1", "a", 1);
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE((*writer)
                  ->BeginEntry("w", EntryKind::kTensor, DType::kFloat32,
                               {static_cast<int64_t>(weights.size())})
                  .ok());
  ASSERT_TRUE((*writer)->Append(weights.data(), weights.size() * sizeof(float)).ok());
  ASSERT_TRUE((*writer)->BeginEntry("rng", EntryKind::kBlob, DType::kUInt8, {5}).ok());
  ASSERT_TRUE((*writer)->Append("seed!", 5).ok());
  const absl::Status committed = (*writer)->Commit();
  ASSERT_TRUE(committed.ok()) << committed;

  auto job = client_->GetJob("job-1");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->committed_step(), 1u);
  auto reader = client_->OpenLatestCheckpoint("job-1");
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->info().step, 1u);
  std::vector<float> back(weights.size());
  ASSERT_TRUE((*reader)->ReadTensor("w", TensorView::Of(back.data(), back.size())).ok());
  EXPECT_EQ(back, weights);
  std::vector<float> slice(10);
  ASSERT_TRUE((*reader)->ReadSlice("w", 1000, TensorView::Of(slice.data(), slice.size())).ok());
  EXPECT_EQ(slice[0], 1000.0f);
  EXPECT_EQ(slice[9], 1009.0f);
  auto blob = (*reader)->ReadBlob("rng");
  ASSERT_TRUE(blob.ok()) << blob.status();
  EXPECT_EQ(*blob, "seed!");
  EXPECT_TRUE((*reader)->Verify().ok());
  EXPECT_EQ(client_->OpenCheckpoint("job-1", 7).status().code(), absl::StatusCode::kNotFound);

  auto ledger = coordinator_->GetLedger("job-1");
  ASSERT_TRUE(ledger.ok());
  EXPECT_EQ(ledger->shards[lease_a->shard].committed_offset, 40u);
  auto workers = admin_client_->ListWorkers("job-1");
  ASSERT_TRUE(workers.ok()) << workers.status();
  EXPECT_EQ(workers->size(), 2u);
}

TEST_F(ServiceTest, StatusCodesCrossTheWireUnchanged) {
  EXPECT_EQ(client_->GetJob("nope").status().code(), absl::StatusCode::kNotFound);
  const absl::Status wrong_admin =
      admin_client_->CreateToken("plk1:*:1:00:ff", "job-1", absl::Hours(1)).status();
  EXPECT_EQ(wrong_admin.code(), absl::StatusCode::kUnauthenticated) << wrong_admin;
  SubmitAndJoin({"a"});
  EXPECT_EQ(client_->Join({"job-1", "bad-token", "z", ""}).status().code(),
            absl::StatusCode::kUnauthenticated);
  auto join_token = admin_client_->CreateToken(admin_, "job-1", absl::Hours(1));
  ASSERT_TRUE(join_token.ok());
  EXPECT_EQ(admin_client_->SubmitJob(*join_token, Spec("job-2"), "r").status().code(),
            absl::StatusCode::kPermissionDenied);
  // Over the wire an unknown worker holds no credential: the service says
  // no more than that (the core would say kNotFound).
  EXPECT_EQ(client_->Heartbeat("job-1", "ghost").status().code(),
            absl::StatusCode::kUnauthenticated);
  v1::JobSpec invalid = Spec("job-3");
  invalid.mutable_batch()->set_micro_batch_size(0);
  const absl::Status bad_spec = admin_client_->SubmitJob(admin_, invalid, "r3").status();
  EXPECT_EQ(bad_spec.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad_spec.message().find("batch.micro_batch_size"), std::string::npos) << bad_spec;
  auto jobs = admin_client_->ListJobs();
  ASSERT_TRUE(jobs.ok());
  EXPECT_EQ(jobs->size(), 1u) << "a refused submit created a job";
  // A retried submit (same spec) returns the job instead of failing.
  auto again = admin_client_->SubmitJob(admin_, Spec("job-1"), "req-1");
  EXPECT_TRUE(again.ok()) << again.status();
}

TEST_F(ServiceTest, UnknownApiVersionIsRefusedAndChangesNothing) {
  auto channel = grpc::CreateChannel(address_, grpc::InsecureChannelCredentials());
  auto stub = v1::Coordinator::NewStub(channel);
  v1::SubmitJobRequest request;
  *request.mutable_spec() = Spec("job-v");
  request.set_admin_token(admin_);
  request.set_api_version(7);
  v1::SubmitJobResponse response;
  grpc::ClientContext context;
  const grpc::Status status = stub->SubmitJob(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(status.error_message().find("api_version 7 is not supported"), std::string::npos)
      << status.error_message();
  EXPECT_EQ(client_->GetJob("job-v").status().code(), absl::StatusCode::kNotFound);

  // The callback-API handlers check it too, before the core sees the report.
  SubmitAndJoin({"a"});
  const GroupView view = FormOverGrpc({"a"});
  auto lease = client_->AcquireShard("job-1", "a");
  ASSERT_TRUE(lease.ok()) << lease.status();
  v1::ReportProgressRequest report;
  report.set_job_id("job-1");
  report.set_worker_id("a");
  report.set_request_id("r1");
  report.set_generation(view.generation);
  report.set_shard(lease->shard);
  report.set_offset(10);
  report.set_step(1);
  report.set_api_version(2);
  v1::ReportProgressResponse progress;
  grpc::ClientContext progress_context;
  EXPECT_EQ(stub->ReportProgress(&progress_context, report, &progress).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  auto ledger = coordinator_->GetLedger("job-1");
  ASSERT_TRUE(ledger.ok());
  EXPECT_EQ(ledger->shards[lease->shard].consumed_offset, 0u) << "a refused report was applied";
}

TEST_F(ServiceTest, OversizedRequestIsRefusedAndChangesNothing) {
  CoordinatorServerOptions options;
  options.max_message_bytes = 64 << 10;
  options.piece_bytes = 16 << 10;
  StartServer(options);
  v1::JobSpec spec = Spec("job-big");
  spec.set_description(std::string(100 << 10, 'x'));
  const absl::Status status = admin_client_->SubmitJob(admin_, spec, "r").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_EQ(client_->GetJob("job-big").status().code(), absl::StatusCode::kNotFound);
}

// Issue 15: a stream that sends a valid `begin` and then nothing once held
// the coordinator's upload slot for as long as its client liked, and every
// member's checkpoint waited. Now only a commit takes the slot, and a quiet
// stream is ended after the idle limit, giving back its member's one open
// upload: the member's next upload commits.
TEST_F(ServiceTest, AnUploadThatGoesQuietIsEndedAndGivesItsRoomBack) {
  CoordinatorServerOptions options;
  options.upload_idle_timeout = absl::Milliseconds(300);
  StartServer(options);
  SubmitAndJoin({"a"});
  FormOverGrpc({"a"});
  ASSERT_TRUE(client_->EndStep("job-1", "a", 2).ok());
  auto quiet = client_->BeginCheckpoint("job-1", "a", 1);
  ASSERT_TRUE(quiet.ok()) << quiet.status();
  absl::SleepFor(absl::Seconds(1));  // past the idle limit, in real time
  const float weight = 1;
  absl::Status status = (*quiet)->BeginEntry("w", EntryKind::kTensor, DType::kFloat32, {1});
  if (status.ok()) status = (*quiet)->Append(&weight, sizeof(weight));
  if (status.ok()) status = (*quiet)->Commit();
  // The server cancelled the call: that is all gRPC lets a client see.
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled) << status;
  quiet->reset();

  auto writer = client_->BeginCheckpoint("job-1", "a", 2);
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE((*writer)->BeginEntry("w", EntryKind::kTensor, DType::kFloat32, {1}).ok());
  ASSERT_TRUE((*writer)->Append(&weight, sizeof(weight)).ok());
  const absl::Status committed = (*writer)->Commit();
  EXPECT_TRUE(committed.ok()) << committed;
}

TEST_F(ServiceTest, MalformedCheckpointStreamIsRefusedAndStoresNothing) {
  SubmitAndJoin({"a"});
  FormOverGrpc({"a"});
  ASSERT_TRUE(client_->EndStep("job-1", "a", 1).ok());
  auto channel = grpc::CreateChannel(address_, grpc::InsecureChannelCredentials());
  auto stub = v1::Coordinator::NewStub(channel);
  {  // data before begin
    grpc::ClientContext context;
    v1::PutCheckpointResponse response;
    auto stream = stub->PutCheckpoint(&context, &response);
    v1::PutCheckpointRequest message;
    message.set_data("xx");
    stream->Write(message);
    stream->WritesDone();
    const grpc::Status status = stream->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  }
  {  // more bytes than the entry declared
    auto writer = client_->BeginCheckpoint("job-1", "a", 1);
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->BeginEntry("w", EntryKind::kBlob, DType::kUInt8, {2}).ok());
    absl::Status status = (*writer)->Append("abc", 3);
    if (status.ok()) status = (*writer)->Commit();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  }
  {  // a stream that ends without commit
    auto writer = client_->BeginCheckpoint("job-1", "a", 1);
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->BeginEntry("w", EntryKind::kBlob, DType::kUInt8, {2}).ok());
    ASSERT_TRUE((*writer)->Append("ab", 2).ok());
  }
  EXPECT_EQ(client_->OpenLatestCheckpoint("job-1").status().code(), absl::StatusCode::kNotFound);
  // The store is usable afterwards: the abandoned writers were released.
  auto writer = client_->BeginCheckpoint("job-1", "a", 1);
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->BeginEntry("w", EntryKind::kBlob, DType::kUInt8, {2}).ok());
  ASSERT_TRUE((*writer)->Append("ab", 2).ok());
  const absl::Status committed = (*writer)->Commit();
  EXPECT_TRUE(committed.ok()) << committed;
}

TEST_F(ServiceTest, SplitUploadPartsStreamSideBySideAndJoinInOrder) {
  SubmitAndJoin({"a", "b"});
  FormOverGrpc({"a", "b"});
  for (const char* worker : {"a", "b"}) ASSERT_TRUE(client_->EndStep("job-1", worker, 1).ok());
  // 2 MiB + 3 floats, half from each member, both streams open at once.
  std::vector<float> weights((1 << 19) + 3);
  std::iota(weights.begin(), weights.end(), 0.0f);
  const uint64_t half = weights.size() / 2;
  auto part_a = client_->BeginCheckpointPart("job-1", "a", 1, 0, 2);
  ASSERT_TRUE(part_a.ok()) << part_a.status();
  auto part_b = client_->BeginCheckpointPart("job-1", "b", 1, 1, 2);
  ASSERT_TRUE(part_b.ok()) << part_b.status();
  const std::vector<int64_t> shape = {static_cast<int64_t>(weights.size())};
  ASSERT_TRUE(
      (*part_b)
          ->BeginSlice("w", EntryKind::kTensor, DType::kFloat32, shape, half, weights.size() - half)
          .ok());
  ASSERT_TRUE((*part_a)->BeginSlice("w", EntryKind::kTensor, DType::kFloat32, shape, 0, half).ok());
  ASSERT_TRUE((*part_b)->Append(weights.data() + half, (weights.size() - half) * 4).ok());
  ASSERT_TRUE((*part_a)->Append(weights.data(), half * 4).ok());
  ASSERT_TRUE((*part_a)->BeginSlice("rng", EntryKind::kBlob, DType::kUInt8, {5}, 0, 5).ok());
  ASSERT_TRUE((*part_a)->Append("seed!", 5).ok());

  auto first = (*part_b)->Finish();
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_FALSE(*first);
  EXPECT_EQ(client_->GetJob("job-1")->committed_step(), 0u);
  auto last = (*part_a)->Finish();
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_TRUE(*last);

  EXPECT_EQ(client_->GetJob("job-1")->committed_step(), 1u);
  auto reader = client_->OpenLatestCheckpoint("job-1");
  ASSERT_TRUE(reader.ok()) << reader.status();
  std::vector<float> back(weights.size());
  ASSERT_TRUE((*reader)->ReadTensor("w", TensorView::Of(back.data(), back.size())).ok());
  EXPECT_EQ(back, weights);
  EXPECT_EQ(*(*reader)->ReadBlob("rng"), "seed!");

  // Over gRPC a refusal arrives by the time the part is finished.
  auto empty_part = [&](const char* worker, uint64_t step, uint32_t part) {
    auto writer = client_->BeginCheckpointPart("job-1", worker, step, part, 2);
    return writer.ok() ? (*writer)->Finish().status() : writer.status();
  };
  EXPECT_EQ(empty_part("b", 2, 1).code(), absl::StatusCode::kFailedPrecondition);  // not ended
  for (const char* worker : {"a", "b"}) ASSERT_TRUE(client_->EndStep("job-1", worker, 2).ok());
  const absl::Status wrong_rank = empty_part("b", 2, 0);
  EXPECT_EQ(wrong_rank.code(), absl::StatusCode::kInvalidArgument) << wrong_rank;
  EXPECT_NE(wrong_rank.message().find("is rank 1 of 2"), absl::string_view::npos) << wrong_rank;
}

TEST_F(ServiceTest, DrainRefusesJoinsButKeepsServingMembers) {
  SubmitAndJoin({"a"});
  EXPECT_EQ(admin_client_->Drain("not-a-token").code(), absl::StatusCode::kUnauthenticated);
  ASSERT_TRUE(admin_client_->Drain(admin_).ok());
  EXPECT_TRUE(server_->draining());
  auto token = admin_client_->CreateToken(admin_, "job-1", absl::Hours(1));
  ASSERT_TRUE(token.ok());
  const absl::Status join = client_->Join({"job-1", *token, "late", ""}).status();
  EXPECT_EQ(join.code(), absl::StatusCode::kUnavailable) << join;
  EXPECT_TRUE(client_->Heartbeat("job-1", "a").ok());
}

TEST_F(ServiceTest, TokensRevokedOverGrpcStopWorking) {
  SubmitAndJoin({"a"});
  auto token = admin_client_->CreateToken(admin_, "job-1", absl::Hours(1));
  ASSERT_TRUE(token.ok());
  ASSERT_TRUE(admin_client_->RevokeToken(admin_, *token).ok());
  EXPECT_EQ(client_->Join({"job-1", *token, "b", ""}).status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(admin_client_->CreateToken(admin_, "job-9", absl::Hours(1)).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(ServiceTest, ExtendJobOverGrpcRaisesMaxSteps) {
  v1::JobSpec spec = Spec("job-2");
  spec.set_max_steps(10);
  ASSERT_TRUE(admin_client_->SubmitJob(admin_, spec, "req-2").ok());
  EXPECT_EQ(admin_client_->ExtendJob("not-a-token", "job-2", 20).status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(admin_client_->ExtendJob(admin_, "job-2", 10).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(admin_client_->ExtendJob(admin_, "job-9", 20).status().code(),
            absl::StatusCode::kNotFound);
  auto extended = admin_client_->ExtendJob(admin_, "job-2", 20);
  ASSERT_TRUE(extended.ok()) << extended.status();
  EXPECT_EQ(extended->spec().max_steps(), 20u);
  EXPECT_EQ(admin_client_->GetJob("job-2")->spec().max_steps(), 20u);
}

// The typed failure reason crosses the wire (v1::ErrorDetails).
TEST_F(ServiceTest, FailureReasonReachesTheWorker) {
  v1::JobSpec spec = Spec("job-3");
  spec.mutable_access()->set_min_workers(2);
  spec.mutable_access()->set_open(true);
  ASSERT_TRUE(admin_client_->SubmitJob(admin_, spec, "req-3").ok());
  auto joined = client_->Join({"job-3", "", "w1", "127.0.0.1:1"});
  ASSERT_TRUE(joined.ok()) << joined.status();
  // Not yet admitted (a generation admits a joiner once it calls again, at
  // a step boundary), w1 waits in the join window.
  const auto waiting = client_->AcquireShard("job-3", "w1");
  EXPECT_EQ(waiting.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(FailedBecause(waiting.status(), Failure::kWaitingForAdmission)) << waiting.status();
}

TEST_F(ServiceTest, HealthServiceAnswersServing) {
  auto channel = grpc::CreateChannel(address_, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::Slice empty;
  grpc::ByteBuffer request(&empty, 1);  // HealthCheckRequest{service: ""}
  grpc::ByteBuffer response;
  absl::Notification done;
  grpc::Status status;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                 [&](grpc::Status s) {
                   status = std::move(s);
                   done.Notify();
                 });
  done.WaitForNotification();
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& slice : slices) {
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  EXPECT_EQ(bytes, std::string("\x08\x01", 2));  // status: SERVING
}

// grpc.reflection.v1alpha: list_services names the coordinator, so stock
// tools (grpcurl, grpc_cli) can discover it. The messages are written by hand:
// Debian ships no generated reflection stubs.
TEST_F(ServiceTest, ReflectionListsTheCoordinatorService) {
  auto channel = grpc::CreateChannel(address_, grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto call = stub.PrepareCall(
      &context, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  auto step = [&](int tag) {
    void* got = nullptr;
    bool ok = false;
    EXPECT_TRUE(cq.Next(&got, &ok));
    EXPECT_EQ(got, reinterpret_cast<void*>(static_cast<intptr_t>(tag)));
    return ok;
  };
  auto tag = [](int n) { return reinterpret_cast<void*>(static_cast<intptr_t>(n)); };
  call->StartCall(tag(1));
  ASSERT_TRUE(step(1));
  const std::string request("\x3a\x01*", 3);  // list_services: "*"
  grpc::Slice slice(request);
  grpc::ByteBuffer out(&slice, 1);
  call->Write(out, tag(2));
  ASSERT_TRUE(step(2));
  grpc::ByteBuffer in;
  call->Read(&in, tag(3));
  ASSERT_TRUE(step(3));
  call->WritesDone(tag(4));
  step(4);
  grpc::Status status;
  call->Finish(&status, tag(5));
  step(5);
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(in.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& piece : slices) {
    bytes.append(reinterpret_cast<const char*>(piece.begin()), piece.size());
  }
  EXPECT_NE(bytes.find("potluck.v1.Coordinator"), std::string::npos) << bytes;
  EXPECT_NE(bytes.find("grpc.health.v1.Health"), std::string::npos) << bytes;
}

TEST(GrpcClient, UnreachableCoordinatorIsUnavailable) {
  GrpcClientOptions options;
  options.deadline = absl::Seconds(5);
  auto client = NewGrpcClient("127.0.0.1:1", options);
  ASSERT_TRUE(client.ok());
  const absl::Status status = (*client)->GetJob("job-1").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
}

// A self-signed pair made by the openssl command line, as a user would.
class TlsTest : public ServiceTest {
 protected:
  void SetUp() override {
    CoordinatorFixture::SetUp();
    cert_ = (dir_ / "cert.pem").string();
    key_ = (dir_ / "key.pem").string();
    other_cert_ = (dir_ / "other-cert.pem").string();
    // The coordinator's pair, and another one for the same names that a
    // client may wrongly trust.
    for (const auto& [key, cert] :
         {std::pair{key_, cert_}, std::pair{(dir_ / "other-key.pem").string(), other_cert_}}) {
      ASSERT_EQ(testing_util::MakeSelfSignedCertificate(cert, key), "");
    }
    CoordinatorServerOptions options;
    options.tls_cert_file = cert_;
    options.tls_key_file = key_;
    GrpcClientOptions client_options;
    client_options.tls_root_cert_file = cert_;
    StartServer(options, client_options);
  }
  std::string cert_, key_, other_cert_;
};

TEST_F(TlsTest, TrustedClientConnectsAndInsecureOrMistrustingClientsFailCleanly) {
  SubmitAndJoin({"a"});
  auto job = client_->GetJob("job-1");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->spec().job_id(), "job-1");

  GrpcClientOptions plaintext;
  plaintext.deadline = absl::Seconds(5);
  auto insecure = NewGrpcClient(address_, plaintext);
  ASSERT_TRUE(insecure.ok());
  const absl::Status status = (*insecure)->GetJob("job-1").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;

  // Trusting another CA, for the same names: the handshake fails.
  GrpcClientOptions other_ca;
  other_ca.deadline = absl::Seconds(5);
  other_ca.tls_root_cert_file = other_cert_;
  auto mistrusting = NewGrpcClient(address_, other_ca);
  ASSERT_TRUE(mistrusting.ok()) << mistrusting.status();
  const absl::Status refused = (*mistrusting)->GetJob("job-1").status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnavailable) << refused;

  GrpcClientOptions missing;
  missing.tls_root_cert_file = (dir_ / "nope.pem").string();
  EXPECT_EQ(NewGrpcClient(address_, missing).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace potluck
