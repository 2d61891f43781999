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

// tests/gpu/run.sh counts the GPUs with nvidia-smi: this process must see
// them all (a driver or runtime error reads as "no device" to the other
// tests, which would then skip).
TEST(Gpu, SeesEveryGpuTheMachineHas) {
  if (ExpectedGpus() == 0)
    GTEST_SKIP() << "POTLUCK_EXPECT_GPUS is not set (tests/gpu/run.sh sets it)";
  EXPECT_TRUE(BuiltWithCuda());
  EXPECT_GE(CudaDeviceCount(), ExpectedGpus()) << DescribeGpus();
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
