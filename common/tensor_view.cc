#include "common/tensor_view.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace potluck {

std::string Device::ToString() const {
  return type == Type::kCpu ? std::string("cpu") : absl::StrCat("cuda:", index);
}

absl::StatusOr<Device> ParseDevice(absl::string_view text) {
  if (text == "cpu") return Device::Cpu();
  if (text == "cuda") return Device::Cuda(0);
  constexpr absl::string_view kCudaPrefix = "cuda:";
  int ordinal = -1;
  if (text.substr(0, kCudaPrefix.size()) == kCudaPrefix &&
      absl::SimpleAtoi(text.substr(kCudaPrefix.size()), &ordinal) && ordinal >= 0) {
    return Device::Cuda(ordinal);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("invalid device '", text, "': expected cpu, cuda or cuda:N"));
}

}  // namespace potluck
