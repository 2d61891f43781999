// CoordinatorServer: the coordinator's gRPC service (proto/potluck/v1/
// coordinator.proto) on a listening address, with gRPC server reflection and
// the standard health service. The service only translates messages and
// calls the plain core (coordinator.h); absl status codes map 1:1 to gRPC
// codes. No gRPC header is needed to use it.
//
// Bad input gets a clear status and changes nothing: a request whose
// api_version is not 0 or 1 is kFailedPrecondition, a message larger than
// max_message_bytes is kResourceExhausted (gRPC's own check), a malformed
// field (a PutCheckpoint stream out of order, a bad id) kInvalidArgument.
//
// Thread-safety: all methods are thread-safe. The Coordinator must outlive
// the server.
#ifndef POTLUCK_COORDINATOR_SERVER_H_
#define POTLUCK_COORDINATOR_SERVER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

#include "coordinator/coordinator.h"

namespace potluck {

// The api_version this build speaks (requests may leave it 0).
inline constexpr uint32_t kCoordinatorApiVersion = 1;

// Who a call comes from, in gRPC metadata (no request grows a credential
// field): a worker sends its id and the member secret its Join returned; the
// admin may send its token on the reads it may make. Who may call what:
// docs/security.md.
inline constexpr char kWorkerIdMetadata[] = "potluck-worker-id";
inline constexpr char kMemberSecretMetadata[] = "potluck-member-secret";
inline constexpr char kAdminTokenMetadata[] = "potluck-admin-token";
inline constexpr char kJoinTokenMetadata[] = "potluck-join-token";

struct CoordinatorServerOptions {
  std::string listen = "127.0.0.1:0";  // host:port; port 0 picks a free one
  // PEM files; both empty = plaintext (insecure).
  std::string tls_cert_file;
  std::string tls_key_file;
  // The largest request or response message, in bytes. Checkpoint bytes and
  // dataset files travel in pieces of at most piece_bytes, so no message
  // ever holds a whole model.
  int max_message_bytes = 8 << 20;
  int piece_bytes = 1 << 20;
  // A checkpoint upload that sends nothing for this long is ended
  // (kDeadlineExceeded) and nothing of it is kept.
  absl::Duration upload_idle_timeout = absl::Seconds(60);
};

class CoordinatorServer {
 public:
  // Starts serving `coordinator` (not owned). kUnavailable if the address
  // cannot be bound, kInvalidArgument for unreadable TLS files.
  static absl::StatusOr<std::unique_ptr<CoordinatorServer>> Start(
      Coordinator* coordinator, const CoordinatorServerOptions& options);
  virtual ~CoordinatorServer() = default;

  // The port it listens on (the chosen one when the options said 0).
  virtual int port() const = 0;
  // Refuses new Joins and SubmitJobs with kUnavailable from now on; the
  // workers already in keep being served (the Drain RPC does the same).
  virtual void Drain() = 0;
  virtual bool draining() const = 0;
  // Stops accepting calls; calls in flight get `grace` to finish before they
  // are cancelled. Idempotent; the destructor calls it with no grace.
  virtual void Shutdown(absl::Duration grace) = 0;
};

}  // namespace potluck

#endif  // POTLUCK_COORDINATOR_SERVER_H_
