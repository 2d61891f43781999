// Who a gRPC call to the coordinator comes from (the metadata server.h
// names) and whether it may make the call: docs/security.md's matrix. The
// core decides every credential (Coordinator::AuthenticateMember,
// VerifyToken, VerifyAdminToken); this only reads the call's metadata and
// picks the rule. Private to the gRPC edge (server.cc).
//
// Thread-safety: thread-safe (the Coordinator is).
#ifndef POTLUCK_COORDINATOR_CALL_AUTH_H_
#define POTLUCK_COORDINATOR_CALL_AUTH_H_

#include <grpcpp/server_context.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

#include "coordinator/coordinator.h"
#include "potluck/v1/coordinator.pb.h"

namespace potluck {

class CallAuth {
 public:
  explicit CallAuth(Coordinator* core) : core_(core) {}

  // The call speaks for `worker_id` of `job_id`: its metadata names that
  // worker and carries the member secret of its last Join.
  // kUnauthenticated without (or with a wrong) credential,
  // kPermissionDenied for another worker's credential.
  absl::Status AsMember(const grpc::ServerContextBase* context, absl::string_view job_id,
                        absl::string_view worker_id) const;
  // A member of the job (the worker its metadata names) or the admin.
  absl::Status AsMemberOrAdmin(const grpc::ServerContextBase* context,
                               absl::string_view job_id) const;
  // Whoever may join the job: a holder of its join token (anyone, for an
  // open job), its members and the admin. They may read its whole spec and
  // its dataset, which a worker fetches before it joins.
  absl::Status AsJoinerOrAdmin(const grpc::ServerContextBase* context,
                               absl::string_view job_id) const;

 private:
  Coordinator* const core_;  // not owned
};

// What anyone may see of a job: its state and progress, and of its spec
// only the id, the description and max_steps (no dataset, no access, no
// problem).
v1::JobStatus PublicSummary(const v1::JobStatus& job);

}  // namespace potluck

#endif  // POTLUCK_COORDINATOR_CALL_AUTH_H_
