// For tests that need a GPU: skips the test, visibly, where there is none.
//
//   TEST(NcclCommunicator, AllReduces) {
//     POTLUCK_SKIP_WITHOUT_GPU(2);
//     ...
//   }
#ifndef POTLUCK_COMMON_GPU_TEST_UTIL_H_
#define POTLUCK_COMMON_GPU_TEST_UTIL_H_

#include <gtest/gtest.h>

#include "common/gpu.h"

#define POTLUCK_SKIP_WITHOUT_GPU(min_devices)                                                \
  do {                                                                                       \
    if (::potluck::CudaDeviceCount() < (min_devices)) {                                      \
      GTEST_SKIP() << "needs " << (min_devices) << " GPU(s); " << ::potluck::DescribeGpus(); \
    }                                                                                        \
  } while (false)

#endif  // POTLUCK_COMMON_GPU_TEST_UTIL_H_
