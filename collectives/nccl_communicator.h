// The NCCL backend: collectives on CUDA device buffers, one GPU per rank.
//
// Built when POTLUCK_WITH_CUDA is on (NCCL from /usr/local/cuda). Rank 0
// creates the NCCL unique id and publishes it in the RendezvousStore under
// "potluck/<generation>/nccl-id"; the others read it. Communicators are
// created non-blocking, and every wait (the group forming, each collective)
// polls NCCL's asynchronous error state and the CUDA stream against the
// call's deadline: at the deadline, or on Abort(), the communicator is
// aborted with ncclCommAbort, the call returns kDeadlineExceeded or
// kAborted, and the communicator is dead. NCCL errors are converted to
// Status here, with ncclGetLastError's text.
//
// Buffers must be on this communicator's device (TensorView device
// cuda:N). Thread-safety: as Communicator.
#ifndef POTLUCK_COLLECTIVES_NCCL_COMMUNICATOR_H_
#define POTLUCK_COLLECTIVES_NCCL_COMMUNICATOR_H_

#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

#include "collectives/communicator.h"
#include "collectives/rendezvous.h"

namespace potluck {

struct NcclOptions {
  int rank = 0;
  int world_size = 1;
  uint64_t generation = 0;
  int device = 0;  // CUDA ordinal
};

// Forms the group, or fails with kDeadlineExceeded when ranks are missing at
// `deadline`; kFailedPrecondition when built without CUDA or no GPU is there.
absl::StatusOr<std::unique_ptr<Communicator>> ConnectNcclCommunicator(RendezvousStore* store,
                                                                      const NcclOptions& options,
                                                                      absl::Time deadline);

// Takes host (CPU) buffers for `device_comm`, whose buffers live on GPU
// `device`: each call copies the buffer into a staging buffer on the device
// (kept at the largest size so far), runs there, and copies the result back;
// device buffers pass straight through. How a model computed on the CPU
// (Debian's libtorch has no CUDA) exchanges its gradients over NCCL. Costs
// two copies per call.
std::unique_ptr<Communicator> NewHostStagedCommunicator(std::unique_ptr<Communicator> device_comm,
                                                        int device);

}  // namespace potluck

#endif  // POTLUCK_COLLECTIVES_NCCL_COMMUNICATOR_H_
