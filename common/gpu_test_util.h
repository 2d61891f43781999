// For tests that need a GPU: skips the test, visibly, where there is none.
// Where the machine is known to have GPUs (tests/gpu/run.sh sets
// POTLUCK_EXPECT_GPUS from nvidia-smi), a test that cannot see enough of
// them fails instead: a broken driver must not pass as "no GPU here".
//
//   TEST(NcclCommunicator, AllReduces) {
//     POTLUCK_SKIP_WITHOUT_GPU(2);
//     ...
//   }
#ifndef POTLUCK_COMMON_GPU_TEST_UTIL_H_
#define POTLUCK_COMMON_GPU_TEST_UTIL_H_

#include <cstdlib>

#include <gtest/gtest.h>

#include "common/gpu.h"

namespace potluck {

// POTLUCK_EXPECT_GPUS, or 0 when unset.
inline int ExpectedGpus() {
  const char* expected = std::getenv("POTLUCK_EXPECT_GPUS");
  return expected == nullptr ? 0 : std::atoi(expected);
}

}  // namespace potluck

#define POTLUCK_SKIP_WITHOUT_GPU(min_devices)                                                \
  do {                                                                                       \
    if (::potluck::CudaDeviceCount() < (min_devices)) {                                      \
      if (::potluck::ExpectedGpus() >= (min_devices)) {                                      \
        GTEST_FAIL() << "POTLUCK_EXPECT_GPUS=" << ::potluck::ExpectedGpus()                  \
                     << " but this process sees " << ::potluck::DescribeGpus();              \
      }                                                                                      \
      GTEST_SKIP() << "needs " << (min_devices) << " GPU(s); " << ::potluck::DescribeGpus(); \
    }                                                                                        \
  } while (false)

#endif  // POTLUCK_COMMON_GPU_TEST_UTIL_H_
