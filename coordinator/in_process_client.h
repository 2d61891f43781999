// The coordinator as a CoordinatorClient in the same process (tests,
// `potluck local`'s embedded coordinator), and the dataset files a
// coordinator serves to its workers. Part of potluck::coordinator.
//
// Thread-safety: the client is as thread-safe as CoordinatorClient promises.
#ifndef POTLUCK_COORDINATOR_IN_PROCESS_CLIENT_H_
#define POTLUCK_COORDINATOR_IN_PROCESS_CLIENT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

#include "coordinator/client.h"
#include "coordinator/coordinator.h"
#include "potluck/v1/job.pb.h"

namespace potluck {

// A client that calls `coordinator` directly. Not owned: it must outlive the
// client.
std::unique_ptr<CoordinatorClient> NewInProcessClient(Coordinator* coordinator);

// The bytes of `name` in the dataset `job` trains on, for FetchDatasetFile
// implementations: "manifest.json" or a file its manifest lists.
absl::StatusOr<std::string> ReadDatasetFile(const v1::JobSpec& job, absl::string_view name);

}  // namespace potluck

#endif  // POTLUCK_COORDINATOR_IN_PROCESS_CLIENT_H_
