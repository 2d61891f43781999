// The authorization matrix of docs/security.md, asserted over real gRPC.
//
// Every method of the potluck.v1.Coordinator service is taken from the
// service's descriptor (so a new RPC without a row here fails the test) and
// called once by every role, each time against a fresh coordinator (a call
// that is allowed may change the job). A request is filled by field name
// from what the role holds, and sent as raw bytes through grpc::GenericStub,
// so unary and streaming methods are called alike.
#include <array>
#include <map>
#include <string>
#include <vector>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/dynamic_message.h>
#include <google/protobuf/message.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/support/byte_buffer.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

#include "coordinator/coordinator_test_util.h"
#include "coordinator/server.h"
#include "potluck/v1/coordinator.grpc.pb.h"

namespace potluck {
namespace {

namespace pb = google::protobuf;

// Columns of the matrix.
enum Role { kAnonymous, kTokenHolder, kOtherMember, kWaitingMember, kMember, kAdmin, kRoles };
constexpr std::array<const char*, kRoles> kRoleNames = {"anonymous",
                                                        "join-token holder",
                                                        "member b as member a",
                                                        "member waiting to be admitted",
                                                        "member of this generation",
                                                        "admin"};

// A cell: refused with this code, or let through.
enum class Expect {
  kUnauthenticated,     // no or a wrong credential
  kPermissionDenied,    // a valid credential that may not do this
  kFailedPrecondition,  // a member of the job, not of the generation
  kAllowed,             // past the door (the call's own result is its business)
  kSummary,             // allowed, but only the job's public summary
  kWhole,               // allowed, the whole job status (its dataset included)
};
constexpr Expect U = Expect::kUnauthenticated;
constexpr Expect D = Expect::kPermissionDenied;
constexpr Expect F = Expect::kFailedPrecondition;
constexpr Expect A = Expect::kAllowed;
constexpr Expect S = Expect::kSummary;
constexpr Expect W = Expect::kWhole;

// The matrix (docs/security.md says the same in words).
const std::map<std::string, std::array<Expect, kRoles>>& Matrix() {
  static const auto* matrix = new std::map<std::string, std::array<Expect, kRoles>>{
      //                      anon token other waiting member admin
      {"SubmitJob", {U, U, U, U, U, A}},
      {"GetJob", {S, W, W, W, W, W}},
      {"ListJobs", {S, W, W, W, W, W}},
      {"PauseJob", {U, U, U, U, U, A}},
      {"ResumeJob", {U, U, U, U, U, A}},
      {"CancelJob", {U, U, U, U, U, A}},
      {"ExtendJob", {U, U, U, U, U, A}},
      {"EvictWorker", {U, U, U, U, U, A}},
      {"CreateToken", {U, U, U, U, U, A}},
      {"RevokeToken", {U, U, U, U, U, A}},
      {"Drain", {U, U, U, U, U, A}},
      {"Join", {U, A, A, A, A, U}},
      {"Heartbeat", {U, U, D, A, A, U}},
      {"Leave", {U, U, D, A, A, U}},
      {"ReportFailure", {U, U, D, D, A, U}},
      {"Rendezvous", {U, U, D, F, A, U}},
      {"ListWorkers", {U, U, A, A, A, A}},
      {"AcquireShard", {U, U, D, F, A, U}},
      {"ReportProgress", {U, U, D, F, A, U}},
      {"EndStep", {U, U, D, F, A, U}},
      {"PutCheckpoint", {U, U, D, F, A, U}},
      {"GetCheckpointInfo", {U, U, A, A, A, A}},
      {"ReadCheckpointChunk", {U, U, A, A, A, A}},
      {"FetchDatasetFile", {U, A, A, A, A, A}},
  };
  return *matrix;
}

// What a role holds: its metadata and the values it puts in request fields.
struct Caller {
  std::vector<std::pair<std::string, std::string>> metadata;
  std::string worker_id;    // worker_id and reporter fields
  std::string join_token;   // the token field of Join
  std::string admin_token;  // admin_token fields
};

class AuthzTest : public testing_util::CoordinatorFixture {
 protected:
  // A fresh coordinator with job-1: members a and b in a formed generation,
  // c joined after it (waiting to be admitted), all with the same token.
  void FreshWorld() {
    server_.reset();
    coordinator_.reset();
    std::filesystem::remove_all(dir_);
    Reopen();
    auto admin = coordinator_->CreateAdminToken(absl::Hours(24));
    ASSERT_TRUE(admin.ok()) << admin.status();
    admin_ = *admin;
    Submit(Spec("job-1"), shards_);
    auto token = coordinator_->CreateToken("job-1", absl::Hours(1));
    ASSERT_TRUE(token.ok()) << token.status();
    token_ = *token;
    for (const char* worker : {"a", "b"}) {
      auto joined = coordinator_->Join({"job-1", token_, worker, "127.0.0.1:1"});
      ASSERT_TRUE(joined.ok()) << joined.status();
      secrets_[worker] = joined->member_secret;
    }
    Form("job-1", {"a", "b"});
    auto waiting = coordinator_->Join({"job-1", token_, "c", "127.0.0.1:2"});
    ASSERT_TRUE(waiting.ok()) << waiting.status();
    ASSERT_FALSE(waiting->member);
    secrets_["c"] = waiting->member_secret;
    generation_ = waiting->generation;
    auto server = CoordinatorServer::Start(coordinator_.get(), {});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }

  Caller As(Role role) {
    auto member = [&](const std::string& credential, const std::string& speaks_for) {
      return Caller{
          {{kWorkerIdMetadata, credential}, {kMemberSecretMetadata, secrets_[credential]}},
          speaks_for,
          token_,
          ""};
    };
    switch (role) {
      case kAnonymous:
        return Caller{{}, "a", "", ""};
      case kTokenHolder:
        return Caller{{{kJoinTokenMetadata, token_}}, "a", token_, ""};
      case kOtherMember:
        return member("b", "a");
      case kWaitingMember:
        return member("c", "c");
      case kMember:
        return member("a", "a");
      case kAdmin:
      case kRoles:
        break;
    }
    return Caller{{{kAdminTokenMetadata, admin_}}, "a", "", admin_};
  }

  // Sets the fields a call needs, by name, wherever they appear (a
  // PutCheckpoint's `begin` included).
  void Fill(pb::Message* message, const Caller& caller, bool is_join) {
    const pb::Descriptor* type = message->GetDescriptor();
    const pb::Reflection* reflection = message->GetReflection();
    auto set_string = [&](const char* name, const std::string& value) {
      const pb::FieldDescriptor* f = type->FindFieldByName(name);
      if (f != nullptr && f->cpp_type() == pb::FieldDescriptor::CPPTYPE_STRING) {
        reflection->SetString(message, f, value);
      }
    };
    auto set_uint = [&](const char* name, uint64_t value) {
      const pb::FieldDescriptor* f = type->FindFieldByName(name);
      if (f == nullptr) return;
      if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_UINT64) {
        reflection->SetUInt64(message, f, value);
      } else if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_UINT32) {
        reflection->SetUInt32(message, f, static_cast<uint32_t>(value));
      }
    };
    set_string("job_id", "job-1");
    // A Join names a new worker: joining as a member's id would be that
    // member's rejoin, a different question (docs/security.md).
    set_string("worker_id", is_join ? "newcomer" : caller.worker_id);
    set_string("reporter", caller.worker_id);
    set_string("failed", "b");
    set_string("token", caller.join_token);
    set_string("admin_token", caller.admin_token);
    set_string("endpoint", "127.0.0.1:3");
    set_string("request_id", "r-1");
    set_string("name", "manifest.json");
    set_string("token_or_id", "0000000000000000");
    set_string("entry", "w");
    set_uint("generation", generation_);
    set_uint("step", 1);
    set_uint("offset", 1);
    set_uint("ttl_seconds", 3600);
    set_uint("max_steps", 1000);
    if (const pb::FieldDescriptor* spec = type->FindFieldByName("spec")) {
      reflection->MutableMessage(message, spec)->CopyFrom(Spec("job-9"));
    }
    if (const pb::FieldDescriptor* begin = type->FindFieldByName("begin")) {
      Fill(reflection->MutableMessage(message, begin), caller, is_join);
    }
  }

  // Calls `method` as `caller`: one request message, then the half-close;
  // returns the status and the first response message's bytes.
  grpc::Status Call(const pb::MethodDescriptor* method, const Caller& caller,
                    std::string* response) {
    const pb::Message* prototype =
        pb::MessageFactory::generated_factory()->GetPrototype(method->input_type());
    std::unique_ptr<pb::Message> request(prototype->New());
    Fill(request.get(), caller, method->name() == "Join");
    auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                       grpc::InsecureChannelCredentials());
    grpc::GenericStub stub(channel);
    grpc::CompletionQueue cq;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    for (const auto& [key, value] : caller.metadata) context.AddMetadata(key, value);
    auto call = stub.PrepareCall(
        &context, absl::StrCat("/", method->service()->full_name(), "/", method->name()), &cq);
    auto await = [&](intptr_t tag) {
      void* got = nullptr;
      bool ok = false;
      EXPECT_TRUE(cq.Next(&got, &ok));
      EXPECT_EQ(got, reinterpret_cast<void*>(tag));
      return ok;
    };
    call->StartCall(reinterpret_cast<void*>(1));
    await(1);
    grpc::Slice slice(request->SerializeAsString());
    grpc::ByteBuffer out(&slice, 1);
    call->Write(out, reinterpret_cast<void*>(2));
    await(2);
    call->WritesDone(reinterpret_cast<void*>(3));
    await(3);
    for (bool first = true;; first = false) {
      grpc::ByteBuffer in;
      call->Read(&in, reinterpret_cast<void*>(4));
      if (!await(4)) break;
      if (!first) continue;
      std::vector<grpc::Slice> slices;
      EXPECT_TRUE(in.Dump(&slices).ok());
      for (const grpc::Slice& piece : slices) {
        response->append(reinterpret_cast<const char*>(piece.begin()), piece.size());
      }
    }
    grpc::Status status;
    call->Finish(&status, reinterpret_cast<void*>(5));
    await(5);
    cq.Shutdown();
    void* ignored = nullptr;
    bool ok = false;
    while (cq.Next(&ignored, &ok)) {
    }
    return status;
  }

  // Whether the jobs in a GetJob/ListJobs answer came with their dataset.
  static std::vector<bool> DatasetsShown(const pb::MethodDescriptor* method,
                                         const std::string& bytes) {
    std::vector<bool> shown;
    if (method->name() == "GetJob") {
      v1::GetJobResponse response;
      EXPECT_TRUE(response.ParseFromString(bytes));
      shown.push_back(response.job().spec().has_dataset());
    } else {
      v1::ListJobsResponse response;
      EXPECT_TRUE(response.ParseFromString(bytes));
      for (const v1::JobStatus& job : response.jobs()) shown.push_back(job.spec().has_dataset());
    }
    return shown;
  }

  std::unique_ptr<CoordinatorServer> server_;
  std::string token_;
  std::map<std::string, std::string> secrets_;
  uint64_t generation_ = 0;
};

TEST_F(AuthzTest, EveryMethodOfTheServiceFollowsTheMatrixForEveryRole) {
  const pb::ServiceDescriptor* service =
      pb::DescriptorPool::generated_pool()->FindServiceByName("potluck.v1.Coordinator");
  ASSERT_NE(service, nullptr);
  for (int m = 0; m < service->method_count(); ++m) {
    const pb::MethodDescriptor* method = service->method(m);
    auto row = Matrix().find(method->name());
    if (row == Matrix().end()) {
      ADD_FAILURE() << "rpc " << method->name()
                    << " has no row in the authorization matrix: add one here and in "
                       "docs/security.md";
      continue;
    }
    for (int role = 0; role < kRoles; ++role) {
      FreshWorld();
      if (HasFatalFailure()) return;
      std::string response;
      const grpc::Status status = Call(method, As(static_cast<Role>(role)), &response);
      const std::string where = absl::StrCat(method->name(), " as ", kRoleNames[role], ": ",
                                             status.error_code(), " ", status.error_message());
      switch (row->second[role]) {
        case Expect::kUnauthenticated:
          EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << where;
          break;
        case Expect::kPermissionDenied:
          EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED) << where;
          break;
        case Expect::kFailedPrecondition:
          EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << where;
          break;
        case Expect::kAllowed:
          EXPECT_NE(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << where;
          EXPECT_NE(status.error_code(), grpc::StatusCode::PERMISSION_DENIED) << where;
          break;
        case Expect::kSummary:
        case Expect::kWhole: {
          ASSERT_TRUE(status.ok()) << where;
          const std::vector<bool> shown = DatasetsShown(method, response);
          ASSERT_FALSE(shown.empty()) << where;
          for (bool dataset : shown) {
            EXPECT_EQ(dataset, row->second[role] == Expect::kWhole) << where;
          }
          break;
        }
      }
    }
  }
}

// The rows are the service's methods, no more: a removed RPC leaves no
// stale row behind.
TEST_F(AuthzTest, TheMatrixHasNoRowForAMethodTheServiceLacks) {
  const pb::ServiceDescriptor* service =
      pb::DescriptorPool::generated_pool()->FindServiceByName("potluck.v1.Coordinator");
  ASSERT_NE(service, nullptr);
  for (const auto& [name, cells] : Matrix()) {
    EXPECT_NE(service->FindMethodByName(name), nullptr) << name;
  }
}

}  // namespace
}  // namespace potluck
