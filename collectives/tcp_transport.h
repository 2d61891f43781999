// The TCP transport: one authenticated TCP connection between every pair of
// ranks of a generation, found through a RendezvousStore.
//
// Each rank listens on an ephemeral port of `bind_host`, publishes
// "potluck/<generation>/<rank>" -> "host:port", connects to every lower rank
// and accepts every higher one. Every link runs the HMAC handshake of
// collectives/internal/wire.h before any data flows: a peer without the
// generation's secret, or from another generation, is refused and the group
// keeps waiting for the real one until the deadline.
//
// Thread-safety: as Transport.
#ifndef POTLUCK_COLLECTIVES_TCP_TRANSPORT_H_
#define POTLUCK_COLLECTIVES_TCP_TRANSPORT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

#include "collectives/rendezvous.h"
#include "collectives/transport.h"

namespace potluck {

struct TcpTransportOptions {
  int rank = 0;
  int world_size = 1;
  uint64_t generation = 0;
  // The generation's shared secret (from the coordinator); must not be empty.
  std::string secret;
  std::string bind_host = "127.0.0.1";
  // The address peers connect to; empty = bind_host.
  std::string advertise_host;
  // The port to listen on; 0 = an ephemeral one. A worker that advertised
  // its endpoint to the coordinator before the group formed listens on that
  // port every generation.
  int listen_port = 0;
  // How long one incoming connection may take to authenticate.
  absl::Duration handshake_timeout = absl::Seconds(5);
};

// Connects this rank to every other one; fails with kDeadlineExceeded naming
// the ranks still missing at `deadline`.
absl::StatusOr<std::unique_ptr<Transport>> ConnectTcpTransport(RendezvousStore* store,
                                                               const TcpTransportOptions& options,
                                                               absl::Time deadline);

}  // namespace potluck

#endif  // POTLUCK_COLLECTIVES_TCP_TRANSPORT_H_
