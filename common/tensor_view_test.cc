#include "common/tensor_view.h"

#include <vector>

#include <gtest/gtest.h>

namespace potluck {
namespace {

TEST(TensorView, DescribesATypedBuffer) {
  std::vector<float> values(10, 1.0f);
  const TensorView view = TensorView::Of(values.data(), values.size());
  EXPECT_EQ(view.dtype(), DType::kFloat32);
  EXPECT_EQ(view.count(), 10u);
  EXPECT_EQ(view.size_bytes(), 40u);
  EXPECT_TRUE(view.device().is_cpu());
  EXPECT_EQ(view.data_as<float>(), values.data());
  EXPECT_FALSE(view.empty());
  EXPECT_TRUE(TensorView().empty());
}

TEST(TensorView, SliceOffsetsByElements) {
  std::vector<BFloat16> values(8);
  const TensorView view = TensorView::Of(values.data(), values.size());
  const TensorView slice = view.Slice(3, 4);
  EXPECT_EQ(slice.data_as<BFloat16>(), values.data() + 3);
  EXPECT_EQ(slice.count(), 4u);
  EXPECT_EQ(slice.size_bytes(), 8u);
  EXPECT_EQ(view.Slice(8, 0).count(), 0u);
}

TEST(TensorViewDeathTest, MisuseIsABug) {
  std::vector<float> values(4);
  const TensorView view = TensorView::Of(values.data(), values.size());
  EXPECT_DEATH(view.data_as<int32_t>(), "float32 read as int32");
  EXPECT_DEATH(view.Slice(2, 3), "slice");
}

TEST(Device, ParsesAndPrints) {
  EXPECT_EQ(*ParseDevice("cpu"), Device::Cpu());
  EXPECT_EQ(*ParseDevice("cuda"), Device::Cuda(0));
  EXPECT_EQ(*ParseDevice("cuda:3"), Device::Cuda(3));
  EXPECT_EQ(Device::Cuda(3).ToString(), "cuda:3");
  EXPECT_EQ(Device::Cpu().ToString(), "cpu");
  for (const char* bad : {"gpu", "cuda:", "cuda:-1", "cuda:x", ""}) {
    const auto parsed = ParseDevice(bad);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace potluck
