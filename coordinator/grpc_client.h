// The CoordinatorClient (client.h) over gRPC, and the administrative calls
// the command line makes. No gRPC header is needed to use them.
//
// A client remembers the member secret of each Join it makes and proves it
// on that worker's later calls, and on its job's reads (coordinator/server.h
// names the metadata; docs/security.md who may call what).
//
// Errors keep their canonical codes across the network: the server's status
// comes back 1:1, an unreachable coordinator is kUnavailable, a call past
// its deadline kDeadlineExceeded. Checkpoints stream: a reader fetches one
// verified chunk at a time, a writer sends its bytes in pieces, so no
// message ever holds a whole model.
//
// Thread-safety: clients are thread-safe; a checkpoint reader or writer is
// used by one thread at a time and must not outlive its client.
#ifndef POTLUCK_COORDINATOR_GRPC_CLIENT_H_
#define POTLUCK_COORDINATOR_GRPC_CLIENT_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

#include "coordinator/client.h"
#include "potluck/v1/coordinator.pb.h"

namespace potluck {

struct GrpcClientOptions {
  // PEM file of the CA (or the self-signed certificate) to trust; empty =
  // plaintext, which a TLS server refuses (the call fails kUnavailable).
  std::string tls_root_cert_file;
  absl::Duration deadline = absl::Seconds(10);  // per call (per stream)
  int max_message_bytes = 8 << 20;
  int piece_bytes = 1 << 20;  // checkpoint bytes per PutCheckpoint message
  // The longest wait between attempts to reach a coordinator that went away
  // (its name is resolved again at most every 250 ms). gRPC's defaults
  // (backoff growing to 2 minutes, a name resolved at most every 30 s) kept
  // workers from seeing a restarted coordinator for ~10 s; now 0.1-0.7 s.
  absl::Duration max_reconnect_backoff = absl::Seconds(1);
  // Sent with every call (metadata), for the reads the admin may make that
  // take no token field: the whole job status, ListWorkers, checkpoints.
  std::string admin_token;
  // Sent with every call, likewise: a worker may read its job's spec and
  // data before it joins (and so before it holds a member secret).
  std::string join_token;
};

// The administrative calls (SubmitJob, tokens, Drain need an admin token).
class CoordinatorAdmin {
 public:
  virtual ~CoordinatorAdmin() = default;
  virtual absl::StatusOr<v1::JobStatus> SubmitJob(absl::string_view admin_token,
                                                  const v1::JobSpec& spec,
                                                  absl::string_view request_id) = 0;
  virtual absl::StatusOr<v1::JobStatus> GetJob(absl::string_view job_id) = 0;
  virtual absl::StatusOr<std::vector<v1::JobStatus>> ListJobs() = 0;
  virtual absl::StatusOr<std::vector<v1::WorkerInfo>> ListWorkers(absl::string_view job_id) = 0;
  virtual absl::StatusOr<v1::JobStatus> PauseJob(absl::string_view admin_token,
                                                 absl::string_view job_id) = 0;
  virtual absl::StatusOr<v1::JobStatus> ResumeJob(absl::string_view admin_token,
                                                  absl::string_view job_id) = 0;
  virtual absl::StatusOr<v1::JobStatus> CancelJob(absl::string_view admin_token,
                                                  absl::string_view job_id) = 0;
  virtual absl::StatusOr<v1::JobStatus> ExtendJob(absl::string_view admin_token,
                                                  absl::string_view job_id, uint64_t max_steps) = 0;
  virtual absl::StatusOr<v1::JobStatus> EvictWorker(absl::string_view admin_token,
                                                    absl::string_view job_id,
                                                    absl::string_view worker_id,
                                                    bool revoke_token) = 0;
  virtual absl::StatusOr<std::string> CreateToken(absl::string_view admin_token,
                                                  absl::string_view job_id, absl::Duration ttl) = 0;
  virtual absl::Status RevokeToken(absl::string_view admin_token,
                                   absl::string_view token_or_id) = 0;
  virtual absl::Status Drain(absl::string_view admin_token) = 0;
};

// Neither connects yet: the first call does, and fails kUnavailable if the
// coordinator cannot be reached. kInvalidArgument for an unreadable CA file.
absl::StatusOr<std::unique_ptr<CoordinatorClient>> NewGrpcClient(
    const std::string& address, const GrpcClientOptions& options = {});
absl::StatusOr<std::unique_ptr<CoordinatorAdmin>> NewGrpcAdmin(
    const std::string& address, const GrpcClientOptions& options = {});

}  // namespace potluck

#endif  // POTLUCK_COORDINATOR_GRPC_CLIENT_H_
