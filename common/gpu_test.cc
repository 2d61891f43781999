#include "common/gpu.h"

#include <vector>

#include <gtest/gtest.h>

#include "common/gpu_test_util.h"

#ifdef POTLUCK_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace potluck {
namespace {

TEST(Gpu, DescriptionMatchesTheBuild) {
  const std::string description = DescribeGpus();
  if (!BuiltWithCuda()) {
    EXPECT_EQ(description, "cuda: not built");
    EXPECT_EQ(CudaDeviceCount(), 0);
  } else if (CudaDeviceCount() == 0) {
    EXPECT_NE(description.find("no device"), std::string::npos) << description;
  } else {
    EXPECT_NE(description.find("device"), std::string::npos) << description;
  }
}

// Proves the CUDA build links and runs: bytes go to device memory and back.
TEST(Gpu, CopiesThroughDeviceMemory) {
  POTLUCK_SKIP_WITHOUT_GPU(1);
#ifdef POTLUCK_WITH_CUDA
  std::vector<float> host(1 << 20);
  for (size_t i = 0; i < host.size(); ++i) host[i] = static_cast<float>(i);
  void* device = nullptr;
  ASSERT_EQ(cudaMalloc(&device, host.size() * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(device, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice),
            cudaSuccess);
  std::vector<float> back(host.size(), -1.0f);
  ASSERT_EQ(cudaMemcpy(back.data(), device, back.size() * sizeof(float), cudaMemcpyDeviceToHost),
            cudaSuccess);
  ASSERT_EQ(cudaFree(device), cudaSuccess);
  EXPECT_EQ(back, host);
#endif
}

}  // namespace
}  // namespace potluck
