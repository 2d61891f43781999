#include "worker/compute_threads.h"

#include <dlfcn.h>

#include <algorithm>
#include <thread>

#include <torch/torch.h>

#include "absl/strings/str_cat.h"

namespace potluck {

namespace {

// OpenBLAS's C entry points, looked up at run time: libtorch loads whichever
// libblas.so.3 Debian's alternatives point at, which may not be OpenBLAS.
using SetThreadsFn = void (*)(int);
using GetThreadsFn = int (*)();
using GetConfigFn = char* (*)();

template <typename Fn>
Fn LookUp(const char* symbol) {
  return reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, symbol));
}

}  // namespace

int ThreadsPerWorker(int workers_on_host) {
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::max(1, cores / std::max(1, workers_on_host));
}

ComputeThreads CurrentComputeThreads() {
  ComputeThreads current;
  current.torch_threads = torch::get_num_threads();
  auto get_threads = LookUp<GetThreadsFn>("openblas_get_num_threads");
  auto get_config = LookUp<GetConfigFn>("openblas_get_config");
  if (get_threads != nullptr) {
    current.blas_threads = get_threads();
    current.blas_library = get_config != nullptr ? get_config() : "OpenBLAS";
  } else if (LookUp<void*>("dgemm_") != nullptr) {
    current.blas_library = "reference BLAS (slow: install libopenblas0-pthread)";
    current.blas_is_reference = true;
  } else {
    current.blas_library = "none found";
  }
  return current;
}

absl::StatusOr<ComputeThreads> ConfigureComputeThreads(int threads) {
  if (threads < 1) {
    return absl::InvalidArgumentError(absl::StrCat("compute threads must be >= 1, got ", threads));
  }
  torch::set_num_threads(threads);
  if (auto set_threads = LookUp<SetThreadsFn>("openblas_set_num_threads")) set_threads(threads);
  return CurrentComputeThreads();
}

}  // namespace potluck
