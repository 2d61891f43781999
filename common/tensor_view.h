// TensorView: a non-owning view of one flat buffer (pointer, dtype, element
// count, device). collectives/, checkpoint/ and coordinator/ speak only in
// TensorViews, so they build and test without the model engine.
//
// Ownership: a TensorView never owns its memory; whoever made it keeps the
// buffer alive and unmoved while the view is in use.
// Thread-safety: a view is a value; concurrent access to the bytes it points
// at is the owner's to coordinate.
#ifndef POTLUCK_COMMON_TENSOR_VIEW_H_
#define POTLUCK_COMMON_TENSOR_VIEW_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

#include "common/check.h"
#include "common/dtype.h"

namespace potluck {

// Where a buffer lives.
struct Device {
  enum class Type : uint8_t { kCpu = 0, kCuda = 1 };
  Type type = Type::kCpu;
  int index = 0;  // the CUDA ordinal; 0 for the CPU

  static constexpr Device Cpu() { return Device{}; }
  static constexpr Device Cuda(int ordinal) { return Device{Type::kCuda, ordinal}; }
  bool is_cpu() const { return type == Type::kCpu; }
  // "cpu" or "cuda:N".
  std::string ToString() const;
  friend bool operator==(const Device&, const Device&) = default;
};

// Parses "cpu", "cuda" (ordinal 0) or "cuda:N".
absl::StatusOr<Device> ParseDevice(absl::string_view text);

class TensorView {
 public:
  TensorView() = default;
  TensorView(void* data, DType dtype, size_t count, Device device = Device::Cpu())
      : data_(data), dtype_(dtype), count_(count), device_(device) {}

  // A view of a typed host array.
  template <typename T>
  static TensorView Of(T* data, size_t count) {
    return TensorView(data, DTypeOf<T>(), count);
  }

  void* data() const { return data_; }
  DType dtype() const { return dtype_; }
  size_t count() const { return count_; }
  Device device() const { return device_; }
  size_t size_bytes() const { return count_ * DTypeSize(dtype_); }
  bool empty() const { return count_ == 0; }

  // The data as T*; T must match the dtype (a mismatch is a bug).
  template <typename T>
  T* data_as() const {
    POTLUCK_CHECK(DTypeOf<T>() == dtype_)
        << "view of " << DTypeName(dtype_) << " read as " << DTypeName(DTypeOf<T>());
    return static_cast<T*>(data_);
  }

  // Elements [offset, offset + count) of this view; the range must fit.
  TensorView Slice(size_t offset, size_t count) const {
    POTLUCK_CHECK(offset <= count_ && count <= count_ - offset)
        << "slice [" << offset << ", +" << count << ") of " << count_ << " elements";
    return TensorView(static_cast<uint8_t*>(data_) + offset * DTypeSize(dtype_), dtype_, count,
                      device_);
  }

 private:
  void* data_ = nullptr;
  DType dtype_ = DType::kFloat32;
  size_t count_ = 0;
  Device device_;
};

}  // namespace potluck

#endif  // POTLUCK_COMMON_TENSOR_VIEW_H_
