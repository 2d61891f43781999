// potluck's own collectives: ring, recursive-doubling and chain algorithms
// written against the Transport interface, and their TCP flavour.
//
// - AllReduce: up to `small_message_bytes`, recursive doubling (log2 n
//   steps, each rank sends its whole buffer; lowest latency); above it, a
//   ring reduce-scatter then all-gather (each rank sends 2(n-1)/n of the
//   buffer; bandwidth-optimal), cut into `segment_bytes` frames that stream
//   while earlier ones are reduced, and received straight into the output in
//   the gather phase. Both orders make every rank compute the same bits.
// - ReduceScatter / AllGather: the two halves of the ring.
// - Broadcast: a pipelined chain from the root.
// - Barrier: a one-element recursive-doubling all-reduce.
//
// Thread-safety: as Communicator.
#ifndef POTLUCK_COLLECTIVES_TCP_COMMUNICATOR_H_
#define POTLUCK_COLLECTIVES_TCP_COMMUNICATOR_H_

#include <memory>

#include "absl/status/statusor.h"

#include "collectives/communicator.h"
#include "collectives/rendezvous.h"
#include "collectives/tcp_transport.h"
#include "collectives/transport.h"

namespace potluck {

struct AlgorithmOptions {
  size_t segment_bytes = 1 << 20;
  size_t small_message_bytes = 64 << 10;
};

// The algorithms over any transport (tests pass fault-injecting wrappers).
std::unique_ptr<Communicator> NewTransportCommunicator(std::unique_ptr<Transport> transport,
                                                       uint64_t generation,
                                                       const AlgorithmOptions& options = {});

// Connects a TCP group (see tcp_transport.h) and returns its communicator.
absl::StatusOr<std::unique_ptr<Communicator>> ConnectTcpCommunicator(
    RendezvousStore* store, const TcpTransportOptions& options, absl::Time deadline,
    const AlgorithmOptions& algorithms = {});

}  // namespace potluck

#endif  // POTLUCK_COLLECTIVES_TCP_COMMUNICATOR_H_
