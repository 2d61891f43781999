#include "worker/compute_threads.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

namespace potluck {
namespace {

TEST(ComputeThreads, RejectsZeroThreads) {
  EXPECT_EQ(ConfigureComputeThreads(0).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ComputeThreads, SharesCoresBetweenWorkers) {
  EXPECT_GE(ThreadsPerWorker(1), 1);
  EXPECT_EQ(ThreadsPerWorker(1000), 1);
  EXPECT_LE(ThreadsPerWorker(2), ThreadsPerWorker(1));
}

// install-deps.sh brings OpenBLAS; with the reference BLAS a small GPT trains
// ~8x slower, so a machine that lost it must fail here, not just run slowly.
TEST(ComputeThreads, TorchRunsOnOpenBlasWithTheThreadsWeSet) {
  // Make sure libtorch has loaded its BLAS before looking for it.
  const torch::Tensor product = torch::ones({64, 64}).matmul(torch::ones({64, 64}));
  EXPECT_FLOAT_EQ(product[0][0].item<float>(), 64.0f);

  auto configured = ConfigureComputeThreads(1);
  ASSERT_TRUE(configured.ok()) << configured.status();
  EXPECT_EQ(configured->torch_threads, 1);
  EXPECT_FALSE(configured->blas_is_reference) << configured->blas_library;
  EXPECT_NE(configured->blas_library.find("OpenBLAS"), std::string::npos)
      << configured->blas_library;
  EXPECT_EQ(configured->blas_threads, 1);

  configured = ConfigureComputeThreads(2);
  ASSERT_TRUE(configured.ok());
  EXPECT_EQ(configured->torch_threads, 2);
  EXPECT_EQ(configured->blas_threads, 2);
  EXPECT_EQ(CurrentComputeThreads().torch_threads, 2);
}

}  // namespace
}  // namespace potluck
