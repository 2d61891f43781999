// ConnectGroup: one generation's TCP group from what the coordinator's view
// says about it, as one small spec and one call (gloo-style), so callers
// never fill TcpTransportOptions field by field.
//
// Every member listens on the endpoint it advertised (usually on a
// TcpListener it keeps for its whole life), so the rendezvous needs no store
// of its own: EndpointStore answers the transport's "potluck/<generation>/
// <rank>" lookups from the spec's endpoint list. The links authenticate with
// the generation's secret (collectives/internal/wire.h); a member that does
// not show up by `deadline` makes ConnectGroup fail with kDeadlineExceeded.
//
// This header knows nothing of the coordinator: the worker maps its
// GroupView onto a GroupSpec.
//
// Thread-safety: ConnectGroup is reentrant (ranks may be threads of one
// process); EndpointStore is immutable after construction.
#ifndef POTLUCK_COLLECTIVES_GROUP_H_
#define POTLUCK_COLLECTIVES_GROUP_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

#include "collectives/communicator.h"
#include "collectives/rendezvous.h"
#include "collectives/tcp_communicator.h"
#include "collectives/tcp_transport.h"

namespace potluck {

struct GroupSpec {
  uint64_t generation = 0;
  int rank = 0;
  // "host:port" of every member, by rank; the world size is its length.
  std::vector<std::string> endpoints;
  // The generation's shared secret; must not be empty.
  std::string secret;
  std::string bind_host = "127.0.0.1";
  std::string advertise_host;  // empty = bind_host
  // Accept on this socket (borrowed, stays open; nullptr = an ephemeral one).
  TcpListener* listener = nullptr;
  // Every member connected and authenticated by then, or kDeadlineExceeded.
  absl::Time deadline = absl::InfinitePast();
  AlgorithmOptions algorithms;
};

// Connects this rank to the group: kInvalidArgument for a spec that cannot
// describe a group (rank outside the endpoints, no secret), else as
// ConnectTcpCommunicator.
absl::StatusOr<std::unique_ptr<Communicator>> ConnectGroup(const GroupSpec& spec);

// The rendezvous store of a group whose endpoints are all known: Get answers
// from the list at once (kNotFound for any other key), Set is ignored.
class EndpointStore final : public RendezvousStore {
 public:
  EndpointStore(uint64_t generation, const std::vector<std::string>& endpoints);
  absl::Status Set(absl::string_view key, absl::string_view value) override;
  absl::StatusOr<std::string> Get(absl::string_view key, absl::Time deadline) override;

 private:
  std::map<std::string, std::string, std::less<>> endpoints_;
};

}  // namespace potluck

#endif  // POTLUCK_COLLECTIVES_GROUP_H_
