// The MPI backend's low layer: serializing MPI calls when MPI allows one at a
// time, converting MPI error codes to absl::Status, and waiting for a
// non-blocking request against a deadline and an abort flag. Private to
// potluck_collectives_mpi; collectives/mpi_communicator.h has the contract.
#ifndef POTLUCK_COLLECTIVES_INTERNAL_MPI_PROGRESS_H_
#define POTLUCK_COLLECTIVES_INTERNAL_MPI_PROGRESS_H_

// MPI's C API only: OpenMPI's deprecated C++ bindings (mpicxx.h) do not
// compile warning-free.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <atomic>
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

#include "collectives/mpi_communicator.h"

namespace potluck::mpi_internal {

// Holds one process-wide mutex for its scope when `serialize` is true, i.e.
// when MPI allows one MPI call at a time in the whole process.
class MpiCallGuard {
 public:
  explicit MpiCallGuard(bool serialize);
  ~MpiCallGuard();
  MpiCallGuard(const MpiCallGuard&) = delete;
  MpiCallGuard& operator=(const MpiCallGuard&) = delete;

 private:
  absl::Mutex* const mutex_;  // the process-wide mutex, or null when MPI is fully thread-safe
};

// Keeps `memory` allocated, and reachable (so leak checkers stay quiet), until
// the process exits: a request abandoned in flight cannot be cancelled.
// Thread-safe.
void KeepForever(std::shared_ptr<void> memory);

// "context: <MPI's message>" with the canonical code for `error_code`'s class.
absl::Status MpiErrorToStatus(int error_code, absl::string_view context, bool serialize);

// Tests `request` until it completes (OK), `deadline` passes
// (kDeadlineExceeded), `*aborted` turns true (kAborted; `aborted` may be null)
// or MPI reports an error. On any error the request may still be in flight:
// whatever it reads or writes must stay allocated for good.
absl::Status PollRequest(MPI_Request* request, absl::Time deadline,
                         const std::atomic<bool>* aborted, const MpiCommunicatorOptions& options,
                         bool serialize, absl::string_view context);

}  // namespace potluck::mpi_internal

#endif  // POTLUCK_COLLECTIVES_INTERNAL_MPI_PROGRESS_H_
