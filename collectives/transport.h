// Transport: moves framed bytes between the ranks of one generation. The
// collective algorithms are written against it, so tests can wrap it to inject
// faults, and other links (several sockets per peer, RDMA) can replace TCP.
//
// Every message is a frame: a 16-byte header (magic, version, kind, payload
// length, tag; docs/collectives-wire.md) and the payload. The receiver knows
// the length and tag it expects and reads the payload straight into its own
// buffer, so a frame never makes it allocate; a header that does not match is
// kDataLoss.
//
// Thread-safety: Exchange is called from one thread at a time. Abort() and
// Close() may be called from any thread.
#ifndef POTLUCK_COLLECTIVES_TRANSPORT_H_
#define POTLUCK_COLLECTIVES_TRANSPORT_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace potluck {

// One step of an algorithm: frames sent to one peer and frames received from
// one peer, progressed together so neither side of a ring waits on the other.
struct ExchangeSpec {
  int send_peer = -1;  // -1: send nothing
  std::vector<absl::Span<const char>> send;
  int recv_peer = -1;  // -1: receive nothing
  std::vector<absl::Span<char>> recv;
  // Frame i in either direction carries tag first_tag + i.
  uint64_t first_tag = 0;
  // Called once received frame i is complete, before later frames are read
  // (so every received frame may use the same scratch buffer). An error ends
  // the exchange with that error (e.g. kDataLoss for a frame that decodes to
  // nonsense).
  std::function<absl::Status(size_t frame)> on_received;
  // Sent frame i may go only after received frame i arrived (forwarding
  // what was just received, as in a broadcast chain).
  bool send_after_receive = false;
};

class Transport {
 public:
  virtual ~Transport() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // Runs one exchange to completion, or fails: kUnavailable (a peer closed or
  // reset its link), kDeadlineExceeded, kDataLoss (a bad frame), kAborted.
  virtual absl::Status Exchange(const ExchangeSpec& spec, absl::Time deadline) = 0;
  // Makes a pending and every later Exchange return kAborted.
  virtual void Abort() = 0;
  // Shuts every link down, so peers waiting on this rank fail at once.
  virtual void Close() = 0;
};

}  // namespace potluck

#endif  // POTLUCK_COLLECTIVES_TRANSPORT_H_
