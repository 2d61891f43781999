#include "common/gpu.h"

#include "absl/strings/str_cat.h"

#ifdef POTLUCK_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace potluck {

#ifdef POTLUCK_WITH_CUDA

bool BuiltWithCuda() { return true; }

int CudaDeviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return count;
}

std::string DescribeGpus() {
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess) {
    cudaGetLastError();
    return absl::StrCat("cuda: built in, no device (", cudaGetErrorString(error), ")");
  }
  if (count == 0) return "cuda: built in, no device";
  cudaDeviceProp properties{};
  std::string name = "unknown";
  if (cudaGetDeviceProperties(&properties, 0) == cudaSuccess) name = properties.name;
  return absl::StrCat("cuda: ", count, count == 1 ? " device (" : " devices (", name, ")");
}

#else

bool BuiltWithCuda() { return false; }
int CudaDeviceCount() { return 0; }
std::string DescribeGpus() { return "cuda: not built"; }

#endif

}  // namespace potluck
