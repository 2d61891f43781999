// Whether this process can use a GPU.
//
// potluck builds its CUDA/NCCL code wherever the toolkit is installed, but
// most machines that build it (CI included) have no GPU; code and tests ask
// here before touching one.
//
// Thread-safety: safe from any thread.
#ifndef POTLUCK_COMMON_GPU_H_
#define POTLUCK_COMMON_GPU_H_

#include <string>

namespace potluck {

// True when this binary was built with CUDA support (POTLUCK_WITH_CUDA).
bool BuiltWithCuda();

// The number of CUDA devices this process can use: 0 when built without
// CUDA, when no driver is loaded, or when no device is visible.
int CudaDeviceCount();

// One line for logs and `potluck version`: "cuda: 1 device (NVIDIA H100...)",
// "cuda: built in, no device (...)" or "cuda: not built".
std::string DescribeGpus();

}  // namespace potluck

#endif  // POTLUCK_COMMON_GPU_H_
