// WorkerGroup: the communicators of the generation this worker trains in.
//
// Connect maps the coordinator's GroupView onto collectives' GroupSpec
// (collectives/group.h) for the TCP group, which carries the runtime's own
// small collectives, then makes the trainer's data communicator with
// WorkerOptions.connect_data when one is given.
//
// Thread-safety: the training thread connects, drops and uses the
// communicators; Abort() may be called from any thread (the heartbeat's,
// when the generation is over) and makes every pending collective return.
#ifndef POTLUCK_WORKER_INTERNAL_GROUP_H_
#define POTLUCK_WORKER_INTERNAL_GROUP_H_

#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

#include "collectives/communicator.h"
#include "collectives/tcp_transport.h"
#include "coordinator/types.h"
#include "worker/runtime.h"

namespace potluck {
namespace worker_internal {

class WorkerGroup {
 public:
  // `options` and `listener` are not owned and must outlive the group.
  WorkerGroup(const WorkerOptions* options, TcpListener* listener)
      : options_(options), listener_(listener) {}
  ~WorkerGroup() { Drop(); }

  // Connects this worker, `rank` of `view`, by `deadline`. Any earlier
  // generation's communicators must have been dropped.
  absl::Status Connect(const GroupView& view, int rank, absl::Time deadline);
  // A backend that cannot work here (no GPU, a group that is not the MPI
  // job): it will not work in the next generation either.
  bool backend_unusable() const { return backend_unusable_; }

  // Aborts the communicators (pending and later calls return kAborted).
  void Abort();
  // Aborts and destroys them, the data one first (it may lean on the TCP one).
  void Drop();

  // The TCP group. Only the training thread replaces it, so the pointer
  // stays valid on that thread without holding the lock.
  Communicator* control();
  // Where the trainer's collectives run: connect_data's, else the TCP group.
  Communicator* data();

 private:
  const WorkerOptions* const options_;  // not owned
  TcpListener* const listener_;         // not owned; the worker's for life
  bool backend_unusable_ = false;

  // The heartbeat thread aborts under mu_; the training thread replaces
  // the communicators under mu_.
  absl::Mutex mu_;
  std::unique_ptr<Communicator> control_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<Communicator> data_ ABSL_GUARDED_BY(mu_);
};

}  // namespace worker_internal
}  // namespace potluck

#endif  // POTLUCK_WORKER_INTERNAL_GROUP_H_
