#include "collectives/group.h"

#include "absl/strings/str_cat.h"

#include "common/status.h"

namespace potluck {

EndpointStore::EndpointStore(uint64_t generation, const std::vector<std::string>& endpoints) {
  for (size_t rank = 0; rank < endpoints.size(); ++rank) {
    endpoints_[absl::StrCat("potluck/", generation, "/", rank)] = endpoints[rank];
  }
}

absl::Status EndpointStore::Set(absl::string_view, absl::string_view) {
  return absl::OkStatus();  // every endpoint is known up front
}

absl::StatusOr<std::string> EndpointStore::Get(absl::string_view key, absl::Time) {
  auto it = endpoints_.find(key);
  if (it == endpoints_.end()) return absl::NotFoundError(absl::StrCat("no endpoint for ", key));
  return it->second;
}

absl::StatusOr<std::unique_ptr<Communicator>> ConnectGroup(const GroupSpec& spec) {
  const int world_size = static_cast<int>(spec.endpoints.size());
  if (spec.rank < 0 || spec.rank >= world_size) {
    return absl::InvalidArgumentError(absl::StrCat("generation ", spec.generation, ": rank ",
                                                   spec.rank, " of ", world_size, " endpoints"));
  }
  if (spec.secret.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("generation ", spec.generation, ": the group has no link secret"));
  }
  TcpTransportOptions transport;
  transport.rank = spec.rank;
  transport.world_size = world_size;
  transport.generation = spec.generation;
  transport.secret = spec.secret;
  transport.bind_host = spec.bind_host;
  transport.advertise_host = spec.advertise_host;
  transport.listener = spec.listener;
  EndpointStore store(spec.generation, spec.endpoints);
  return ConnectTcpCommunicator(&store, transport, spec.deadline, spec.algorithms);
}

}  // namespace potluck
