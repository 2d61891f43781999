#include "collectives/fusion.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace potluck {

absl::Status FusedAllReduce(Communicator& communicator, absl::Span<const TensorView> tensors,
                            ReduceOp op, absl::Time deadline, std::vector<char>& scratch,
                            double weight) {
  if (tensors.empty()) return absl::OkStatus();
  const DType dtype = tensors[0].dtype();
  size_t count = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (tensors[i].dtype() != dtype || !tensors[i].device().is_cpu()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "fused all-reduce: tensor ", i, " is ", DTypeName(tensors[i].dtype()), " on ",
          tensors[i].device().ToString(), "; all must be host ", DTypeName(dtype)));
    }
    count += tensors[i].count();
  }
  const size_t element = DTypeSize(dtype);
  scratch.resize(count * element);
  char* cursor = scratch.data();
  for (const TensorView& tensor : tensors) {
    if (tensor.size_bytes() > 0) std::memcpy(cursor, tensor.data(), tensor.size_bytes());
    cursor += tensor.size_bytes();
  }
  const absl::Status status =
      communicator.AllReduce(TensorView(scratch.data(), dtype, count), op, deadline, weight);
  if (!status.ok()) return status;  // the caller's tensors are left untouched
  cursor = scratch.data();
  for (const TensorView& tensor : tensors) {
    if (tensor.size_bytes() > 0) std::memcpy(tensor.data(), cursor, tensor.size_bytes());
    cursor += tensor.size_bytes();
  }
  return absl::OkStatus();
}

}  // namespace potluck
