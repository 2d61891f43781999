// The TCP transport: one authenticated TCP connection between every pair of
// ranks of a generation, found through a RendezvousStore.
//
// Each rank listens on an ephemeral port of `bind_host` (or on the
// TcpListener it keeps across generations), publishes
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

// A listening socket a rank keeps for its whole life. A worker gives the
// coordinator its endpoint once, at join; holding the socket between
// generations keeps that port its own (a port released and bound again can
// be taken meanwhile by any process's outgoing connection).
class TcpListener {
 public:
  // Binds `bind_host`:`port` (0 = an ephemeral port) and listens.
  static absl::StatusOr<std::unique_ptr<TcpListener>> Open(const std::string& bind_host,
                                                           int port = 0);
  ~TcpListener();
  TcpListener(const TcpListener&) = delete;
  TcpListener& operator=(const TcpListener&) = delete;

  int port() const { return port_; }
  int fd() const { return fd_; }

 private:
  TcpListener(int fd, int port) : fd_(fd), port_(port) {}
  int fd_;
  int port_;
};

struct TcpTransportOptions {
  int rank = 0;
  int world_size = 1;
  uint64_t generation = 0;
  // The generation's shared secret (from the coordinator); must not be empty.
  std::string secret;
  std::string bind_host = "127.0.0.1";
  // The address peers connect to; empty = bind_host.
  std::string advertise_host;
  // Accept on this socket (borrowed; it stays open) instead of opening an
  // ephemeral one for this generation. Connections left in its backlog by an
  // earlier generation fail the handshake and are dropped.
  TcpListener* listener = nullptr;
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
