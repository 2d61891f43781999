// The collectives backends a worker can train over, as WorkerRuntime hooks
// (WorkerOptions.connect_data): what `potluck worker --backend mpi|nccl`
// plugs in. TCP needs none: it is the runtime's own group.
//
// - MPI ("static MPI", for clusters: mpirun or srun starts the workers; only
//   in builds with MPI, POTLUCK_WITH_MPI). The
//   generation must be exactly this MPI job: as many members as processes
//   (set the job's access.min_workers to that number, so the group forms
//   whole), each rank renumbered to its place in the coordinator's view. An
//   MPI collective cannot be cancelled, so any failure of one tears the whole
//   MPI job down (AbortMpiJob); resubmitted, the job resumes from its last
//   checkpoint.
// - NCCL, on GPU `device`: rank 0's NCCL id reaches the others over the TCP
//   group, and host buffers are staged through the GPU (the model computes on
//   the CPU: Debian's libtorch has no CUDA). Without CUDA in the build or a
//   GPU, connecting fails with kFailedPrecondition naming why.
//
// Thread-safety: the hooks are called by the runtime's training thread.
#ifndef POTLUCK_WORKER_BACKENDS_H_
#define POTLUCK_WORKER_BACKENDS_H_

#include "worker/runtime.h"
#ifdef POTLUCK_WITH_MPI  // defined for users of potluck::collectives_mpi
#include "collectives/mpi_communicator.h"
#endif

namespace potluck {

using ConnectDataFn = decltype(WorkerOptions::connect_data);

#ifdef POTLUCK_WITH_MPI
// `mpi` is not owned and must outlive every communicator the hook makes.
ConnectDataFn MpiDataBackend(const MpiRuntime* mpi);
#endif

ConnectDataFn NcclDataBackend(int device);

}  // namespace potluck

#endif  // POTLUCK_WORKER_BACKENDS_H_
