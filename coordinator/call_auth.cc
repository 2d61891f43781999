#include "coordinator/call_auth.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

#include "common/status.h"
#include "coordinator/server.h"

namespace potluck {

namespace {

// The metadata value of `key`, or "".
std::string Metadata(const grpc::ServerContextBase* context, const char* key) {
  const auto& metadata = context->client_metadata();
  auto it = metadata.find(key);
  if (it == metadata.end()) return "";
  return std::string(it->second.data(), it->second.size());
}

}  // namespace

absl::Status CallAuth::AsMember(const grpc::ServerContextBase* context, absl::string_view job_id,
                                absl::string_view worker_id) const {
  const std::string caller = Metadata(context, kWorkerIdMetadata);
  if (caller.empty()) {
    return absl::UnauthenticatedError(
        absl::StrCat("a call as worker ", worker_id, " must carry its member credential (",
                     kWorkerIdMetadata, " and ", kMemberSecretMetadata, ")"));
  }
  if (caller != worker_id) {
    return absl::PermissionDeniedError(
        absl::StrCat("the credential of worker ", caller, " cannot speak for worker ", worker_id));
  }
  return core_->AuthenticateMember(job_id, worker_id, Metadata(context, kMemberSecretMetadata));
}

absl::Status CallAuth::AsMemberOrAdmin(const grpc::ServerContextBase* context,
                                       absl::string_view job_id) const {
  if (const std::string admin = Metadata(context, kAdminTokenMetadata); !admin.empty()) {
    return core_->VerifyAdminToken(admin);
  }
  const std::string caller = Metadata(context, kWorkerIdMetadata);
  if (caller.empty()) {
    return absl::UnauthenticatedError(
        absl::StrCat("only members of job ", job_id,
                     " and the admin may make this call: send a member ", "credential (",
                     kWorkerIdMetadata, ", ", kMemberSecretMetadata, ") or ", kAdminTokenMetadata));
  }
  return core_->AuthenticateMember(job_id, caller, Metadata(context, kMemberSecretMetadata));
}

absl::Status CallAuth::AsJoinerOrAdmin(const grpc::ServerContextBase* context,
                                       absl::string_view job_id) const {
  const absl::Status member_or_admin = AsMemberOrAdmin(context, job_id);
  if (member_or_admin.ok()) return member_or_admin;
  if (const std::string token = Metadata(context, kJoinTokenMetadata); !token.empty()) {
    return core_->VerifyToken(job_id, token);
  }
  ASSIGN_OR_RETURN(v1::JobStatus job, core_->GetJob(job_id));
  if (job.spec().access().open()) return absl::OkStatus();
  return absl::UnauthenticatedError(absl::StrCat(
      "only those who may join job ", job_id, " may read its spec and data: send its join token (",
      kJoinTokenMetadata, "), a member credential or the admin token"));
}

v1::JobStatus PublicSummary(const v1::JobStatus& job) {
  v1::JobStatus summary = job;
  v1::JobSpec spec;
  spec.set_job_id(job.spec().job_id());
  spec.set_description(job.spec().description());
  spec.set_max_steps(job.spec().max_steps());
  *summary.mutable_spec() = std::move(spec);
  summary.clear_problem();  // a member's words, which may name its paths
  return summary;
}

}  // namespace potluck
