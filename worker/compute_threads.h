// How many threads a worker's math may use.
//
// libtorch runs matrix kernels on its own intra-op pool and hands the big
// GEMMs to the BLAS library, which keeps a thread pool of its own that
// torch::set_num_threads does not control (OpenBLAS reads
// OPENBLAS_NUM_THREADS once, at load). Several workers on one small machine
// must not each start a thread per core, so every worker process calls
// ConfigureComputeThreads once, before training, with its share of the cores.
//
// Thread-safety: call once per process from the main thread, before any
// libtorch work starts (libtorch fixes its inter-op pool at first use).
#ifndef POTLUCK_WORKER_COMPUTE_THREADS_H_
#define POTLUCK_WORKER_COMPUTE_THREADS_H_

#include <string>

#include "absl/status/statusor.h"

namespace potluck {

struct ComputeThreads {
  int torch_threads = 0;           // libtorch's intra-op pool, as it now reports
  int blas_threads = 0;            // OpenBLAS's pool as it now reports; 0 if not OpenBLAS
  std::string blas_library;        // e.g. "OpenBLAS 0.3.21 DYNAMIC_ARCH ... MAX_THREADS=64"
  bool blas_is_reference = false;  // true: the slow reference BLAS is loaded
};

// Threads for one of `workers_on_host` worker processes sharing this machine:
// an equal share of the cores, at least one.
int ThreadsPerWorker(int workers_on_host);

// Sets libtorch's and OpenBLAS's pools to `threads` and reports what is now in
// force. kInvalidArgument for threads < 1.
absl::StatusOr<ComputeThreads> ConfigureComputeThreads(int threads);

// What is in force now, without changing anything.
ComputeThreads CurrentComputeThreads();

}  // namespace potluck

#endif  // POTLUCK_WORKER_COMPUTE_THREADS_H_
