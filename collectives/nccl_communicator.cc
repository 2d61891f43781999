#include "collectives/nccl_communicator.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <atomic>
#include <cstring>
#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

#include "collectives/internal/checks.h"
#include "collectives/internal/gathered_compression.h"
#include "common/gpu.h"
#include "common/status.h"

namespace potluck {

namespace {

namespace cw = collectives_internal;

absl::Status FromCuda(cudaError_t error, absl::string_view what) {
  if (error == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": CUDA error ", cudaGetErrorString(error)));
}

// NCCL results at the lowest layer: a remote or system failure is
// kUnavailable, a usage error kInvalidArgument, the rest kInternal.
absl::Status FromNccl(ncclResult_t result, ncclComm_t comm, absl::string_view what) {
  if (result == ncclSuccess) return absl::OkStatus();
  std::string message = absl::StrCat(what, ": ", ncclGetErrorString(result));
  if (comm != nullptr) {
    const char* last = ncclGetLastError(comm);
    if (last != nullptr && *last != '\0') absl::StrAppend(&message, " (", last, ")");
  }
  switch (result) {
    case ncclRemoteError:
    case ncclSystemError:
      return absl::UnavailableError(message);
    case ncclInvalidArgument:
    case ncclInvalidUsage:
      return absl::InvalidArgumentError(message);
    default:
      return absl::InternalError(message);
  }
}

absl::StatusOr<ncclDataType_t> NcclType(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return ncclFloat32;
    case DType::kFloat16:
      return ncclFloat16;
    case DType::kBFloat16:
      return ncclBfloat16;
    case DType::kFloat64:
      return ncclFloat64;
    case DType::kInt32:
      return ncclInt32;
    case DType::kInt64:
      return ncclInt64;
    case DType::kUInt8:
      return ncclUint8;
    case DType::kInt8:
      return ncclInt8;
  }
  return absl::InvalidArgumentError("unknown dtype");
}

bool IsFloat(DType dtype) {
  return dtype == DType::kFloat32 || dtype == DType::kFloat16 || dtype == DType::kBFloat16 ||
         dtype == DType::kFloat64;
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, cudaStream_t stream, const NcclOptions& options,
                   double* scratch)
      : comm_(comm), stream_(stream), options_(options), scratch_(scratch) {}

  ~NcclCommunicator() override {
    cudaSetDevice(options_.device);
    // A clean teardown flushes, then frees; anything else aborts.
    bool clean = first_error_.ok() && !aborted_;
    if (clean) {
      ncclResult_t state = ncclCommFinalize(comm_);
      const absl::Time give_up = absl::Now() + absl::Seconds(10);
      while (state == ncclInProgress && absl::Now() < give_up) {
        absl::SleepFor(absl::Microseconds(100));
        ncclCommGetAsyncError(comm_, &state);
      }
      clean = state == ncclSuccess;
    }
    if (clean) {
      ncclCommDestroy(comm_);
    } else {
      ncclCommAbort(comm_);
    }
    cudaFree(scratch_);
    cudaStreamDestroy(stream_);
  }

  int rank() const override { return options_.rank; }
  int world_size() const override { return options_.world_size; }
  uint64_t generation() const override { return options_.generation; }
  absl::string_view backend() const override { return "nccl"; }

  void Abort() override { aborted_ = true; }

  absl::Status AllReduce(TensorView data, ReduceOp op, absl::Time deadline,
                         double weight) override {
    ASSIGN_OR_RETURN(const ncclDataType_t type, Check(data, "AllReduce"));
    if (op != ReduceOp::kSum && !IsFloat(data.dtype())) {
      return absl::InvalidArgumentError("AllReduce of an integer dtype supports only a sum");
    }
    if (op == ReduceOp::kWeightedAverage) {
      // The weights' sum first, then a pre-multiplied sum with weight / total.
      double total = weight;
      RETURN_IF_ERROR(
          Finish(FromCuda(cudaMemcpy(scratch_, &total, sizeof(double), cudaMemcpyHostToDevice),
                          "staging the weight"),
                 "AllReduce"));
      RETURN_IF_ERROR(Run("AllReduce(weights)", deadline, [&] {
        return ncclAllReduce(scratch_, scratch_, 1, ncclFloat64, ncclSum, comm_, stream_);
      }));
      RETURN_IF_ERROR(
          Finish(FromCuda(cudaMemcpy(&total, scratch_, sizeof(double), cudaMemcpyDeviceToHost),
                          "reading the total weight"),
                 "AllReduce"));
      if (!(total > 0)) {
        return absl::InvalidArgumentError(
            absl::StrCat("weighted average with total weight ", total));
      }
      // The scalar must have the reduction's own type.
      const double factor = weight / total;
      union {
        float f32;
        double f64;
        uint16_t bits;
      } scalar{};
      if (data.dtype() == DType::kFloat64) {
        scalar.f64 = factor;
      } else if (data.dtype() == DType::kFloat16) {
        scalar.bits = FloatToHalfBits(static_cast<float>(factor));
      } else if (data.dtype() == DType::kBFloat16) {
        scalar.bits = FloatToBFloat16Bits(static_cast<float>(factor));
      } else {
        scalar.f32 = static_cast<float>(factor);
      }
      ncclRedOp_t premul;
      RETURN_IF_ERROR(Finish(
          FromNccl(ncclRedOpCreatePreMulSum(&premul, &scalar, type, ncclScalarHostImmediate, comm_),
                   comm_, "creating the weighted sum"),
          "AllReduce"));
      const absl::Status status = Run("AllReduce", deadline, [&] {
        return ncclAllReduce(data.data(), data.data(), data.count(), type, premul, comm_, stream_);
      });
      ncclRedOpDestroy(premul, comm_);
      return status;
    }
    const ncclRedOp_t nccl_op = op == ReduceOp::kAverage ? ncclAvg : ncclSum;
    return Run("AllReduce", deadline, [&] {
      return ncclAllReduce(data.data(), data.data(), data.count(), type, nccl_op, comm_, stream_);
    });
  }

  absl::Status ReduceScatter(TensorView data, ReduceOp op, absl::Time deadline) override {
    ASSIGN_OR_RETURN(const ncclDataType_t type, Check(data, "ReduceScatter"));
    RETURN_IF_ERROR(CheckBlocks(data, "ReduceScatter"));
    if (op == ReduceOp::kWeightedAverage || (op == ReduceOp::kAverage && !IsFloat(data.dtype()))) {
      return absl::InvalidArgumentError("ReduceScatter supports sum, and average of floats");
    }
    const size_t block = data.count() / world_size();
    return Run("ReduceScatter", deadline, [&] {
      return ncclReduceScatter(data.data(), data.Slice(block * rank(), block).data(), block, type,
                               op == ReduceOp::kAverage ? ncclAvg : ncclSum, comm_, stream_);
    });
  }

  absl::Status AllGather(TensorView data, absl::Time deadline) override {
    ASSIGN_OR_RETURN(const ncclDataType_t type, Check(data, "AllGather"));
    RETURN_IF_ERROR(CheckBlocks(data, "AllGather"));
    const size_t block = data.count() / world_size();
    return Run("AllGather", deadline, [&] {
      return ncclAllGather(data.Slice(block * rank(), block).data(), data.data(), block, type,
                           comm_, stream_);
    });
  }

  absl::Status Broadcast(TensorView data, int root, absl::Time deadline) override {
    ASSIGN_OR_RETURN(const ncclDataType_t type, Check(data, "Broadcast"));
    if (root < 0 || root >= world_size()) {
      return absl::InvalidArgumentError(absl::StrCat("Broadcast from rank ", root));
    }
    return Run("Broadcast", deadline, [&] {
      return ncclBroadcast(data.data(), data.data(), data.count(), type, root, comm_, stream_);
    });
  }

  absl::Status Barrier(absl::Time deadline) override {
    RETURN_IF_ERROR(Usable("Barrier"));
    return Run("Barrier", deadline, [&] {
      return ncclAllReduce(scratch_, scratch_, 1, ncclFloat64, ncclSum, comm_, stream_);
    });
  }

 private:
  absl::Status Usable(absl::string_view call) const {
    if (aborted_) return absl::AbortedError(absl::StrCat(call, ": the communicator was aborted"));
    if (!first_error_.ok()) {
      return cw::DeadCommunicatorError(call, first_error_);
    }
    return absl::OkStatus();
  }

  absl::StatusOr<ncclDataType_t> Check(TensorView data, absl::string_view call) const {
    RETURN_IF_ERROR(Usable(call));
    if (data.device() != Device::Cuda(options_.device)) {
      return absl::InvalidArgumentError(absl::StrCat(call, ": the buffer is on ",
                                                     data.device().ToString(), ", this rank uses ",
                                                     Device::Cuda(options_.device).ToString()));
    }
    return NcclType(data.dtype());
  }

  absl::Status CheckBlocks(TensorView data, absl::string_view call) const {
    return cw::EqualBlockCount(data.count(), world_size(), call).status();
  }

  absl::Status Finish(absl::Status status, absl::string_view call) {
    if (status.ok()) return status;
    status = Annotate(
        status, absl::StrCat(call, " on rank ", rank(), ", generation ", options_.generation));
    if (first_error_.ok()) first_error_ = status;
    ncclCommAbort(comm_);
    aborted_ = true;
    return status;
  }

  // Enqueues a collective and waits for it like a watchdog would: the stream
  // finishing, NCCL reporting an error, the deadline, or Abort().
  template <typename Enqueue>
  absl::Status Run(absl::string_view call, absl::Time deadline, Enqueue enqueue) {
    RETURN_IF_ERROR(Usable(call));
    cudaSetDevice(options_.device);
    const ncclResult_t queued = enqueue();
    if (queued != ncclSuccess && queued != ncclInProgress) {
      return Finish(FromNccl(queued, comm_, call), call);
    }
    while (true) {
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async);
      if (async != ncclSuccess && async != ncclInProgress) {
        return Finish(FromNccl(async, comm_, call), call);
      }
      const cudaError_t done = cudaStreamQuery(stream_);
      if (done == cudaSuccess && async == ncclSuccess) return absl::OkStatus();
      if (done != cudaSuccess && done != cudaErrorNotReady) {
        return Finish(FromCuda(done, call), call);
      }
      if (aborted_) return Finish(absl::AbortedError("the communicator was aborted"), call);
      if (absl::Now() >= deadline) {
        return Finish(absl::DeadlineExceededError("the collective did not finish by its deadline"),
                      call);
      }
      absl::SleepFor(absl::Microseconds(20));
    }
  }

  const ncclComm_t comm_;
  const cudaStream_t stream_;
  const NcclOptions options_;
  double* const scratch_;  // one device double, owned (barrier and weights)
  std::atomic<bool> aborted_{false};
  absl::Status first_error_;
};

// Host buffers through a device communicator: each call copies the buffer
// to a staging buffer on the device, runs there, and copies the result back.
class HostStagedCommunicator final : public Communicator {
 public:
  HostStagedCommunicator(std::unique_ptr<Communicator> inner, int device)
      : inner_(std::move(inner)), device_(device) {}
  ~HostStagedCommunicator() override {
    if (staging_ != nullptr) {
      cudaSetDevice(device_);
      cudaFree(staging_);
    }
  }

  int rank() const override { return inner_->rank(); }
  int world_size() const override { return inner_->world_size(); }
  uint64_t generation() const override { return inner_->generation(); }
  absl::string_view backend() const override { return inner_->backend(); }
  void Abort() override { inner_->Abort(); }

  absl::Status AllReduce(TensorView data, ReduceOp op, absl::Time deadline,
                         double weight) override {
    return Staged(data, "AllReduce", [&](TensorView on_device) {
      return inner_->AllReduce(on_device, op, deadline, weight);
    });
  }
  // Host buffers: encoded on the host and all-gathered through the device
  // (internal/gathered_compression.h); NCCL has no codecs.
  absl::Status CompressedAllReduce(TensorView data, ReduceOp op, WireCodec codec,
                                   ErrorFeedback* feedback, absl::Time deadline,
                                   double weight) override {
    return collectives_internal::GatheredCompressedAllReduce(*this, data, op, codec, feedback,
                                                             deadline, weight);
  }
  absl::Status ReduceScatter(TensorView data, ReduceOp op, absl::Time deadline) override {
    return Staged(data, "ReduceScatter", [&](TensorView on_device) {
      return inner_->ReduceScatter(on_device, op, deadline);
    });
  }
  absl::Status AllGather(TensorView data, absl::Time deadline) override {
    return Staged(data, "AllGather",
                  [&](TensorView on_device) { return inner_->AllGather(on_device, deadline); });
  }
  absl::Status Broadcast(TensorView data, int root, absl::Time deadline) override {
    return Staged(data, "Broadcast", [&](TensorView on_device) {
      return inner_->Broadcast(on_device, root, deadline);
    });
  }
  absl::Status Barrier(absl::Time deadline) override { return inner_->Barrier(deadline); }

 private:
  template <typename Call>
  absl::Status Staged(TensorView data, absl::string_view call, Call run) {
    if (data.device() != Device::Cpu()) return run(data);
    RETURN_IF_ERROR(FromCuda(cudaSetDevice(device_), "cudaSetDevice"));
    if (data.size_bytes() > staging_bytes_) {
      if (staging_ != nullptr) cudaFree(staging_);
      staging_ = nullptr;
      staging_bytes_ = 0;
      RETURN_IF_ERROR(
          FromCuda(cudaMalloc(&staging_, data.size_bytes()), absl::StrCat(call, ": staging")));
      staging_bytes_ = data.size_bytes();
    }
    // A copy from pageable memory may return before its DMA is done: the
    // collective runs on NCCL's own stream, so wait for the device first.
    RETURN_IF_ERROR(FromCuda(
        cudaMemcpy(staging_, data.data(), data.size_bytes(), cudaMemcpyHostToDevice), call));
    RETURN_IF_ERROR(FromCuda(cudaDeviceSynchronize(), call));
    RETURN_IF_ERROR(run(TensorView(staging_, data.dtype(), data.count(), Device::Cuda(device_))));
    return FromCuda(cudaMemcpy(data.data(), staging_, data.size_bytes(), cudaMemcpyDeviceToHost),
                    call);
  }

  const std::unique_ptr<Communicator> inner_;
  const int device_;
  void* staging_ = nullptr;
  size_t staging_bytes_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> ConnectNcclCommunicator(RendezvousStore* store,
                                                                      const NcclOptions& options,
                                                                      absl::Time deadline) {
  RETURN_IF_ERROR(collectives_internal::ValidateRank(options.rank, options.world_size));
  if (CudaDeviceCount() <= options.device) {
    return absl::FailedPreconditionError(absl::StrCat("NCCL rank ", options.rank, " needs GPU ",
                                                      options.device, "; ", DescribeGpus()));
  }
  const std::string key = absl::StrCat("potluck/", options.generation, "/nccl-id");
  ncclUniqueId id;
  if (options.rank == 0) {
    RETURN_IF_ERROR(FromNccl(ncclGetUniqueId(&id), nullptr, "ncclGetUniqueId"));
    RETURN_IF_ERROR(store->Set(
        key, absl::BytesToHexString(absl::string_view(id.internal, sizeof(id.internal)))));
  } else {
    ASSIGN_OR_RETURN(const std::string hex, store->Get(key, deadline));
    const std::string bytes = absl::HexStringToBytes(hex);
    if (bytes.size() != sizeof(id.internal)) {
      return absl::DataLossError(absl::StrCat("the NCCL id under ", key, " is malformed"));
    }
    std::memcpy(id.internal, bytes.data(), sizeof(id.internal));
  }
  RETURN_IF_ERROR(FromCuda(cudaSetDevice(options.device), "cudaSetDevice"));
  cudaStream_t stream;
  RETURN_IF_ERROR(
      FromCuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "creating the stream"));
  double* scratch = nullptr;
  if (absl::Status allocated = FromCuda(cudaMalloc(&scratch, sizeof(double)), "cudaMalloc");
      !allocated.ok()) {
    cudaStreamDestroy(stream);
    return allocated;
  }
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // so a missing rank cannot hang us: we poll and abort
  ncclComm_t comm = nullptr;
  ncclResult_t result =
      ncclCommInitRankConfig(&comm, options.world_size, id, options.rank, &config);
  while (result == ncclInProgress) {
    if (absl::Now() >= deadline) break;
    absl::SleepFor(absl::Milliseconds(1));
    ncclCommGetAsyncError(comm, &result);
  }
  if (result != ncclSuccess) {
    const absl::Status status =
        result == ncclInProgress
            ? absl::DeadlineExceededError(absl::StrCat("NCCL rank ", options.rank,
                                                       " of generation ", options.generation,
                                                       ": the group did not form by the deadline"))
            : FromNccl(result, comm, "ncclCommInitRankConfig");
    if (comm != nullptr) ncclCommAbort(comm);
    cudaFree(scratch);
    cudaStreamDestroy(stream);
    return status;
  }
  return std::unique_ptr<Communicator>(new NcclCommunicator(comm, stream, options, scratch));
}

}  // namespace potluck

namespace potluck {

std::unique_ptr<Communicator> NewHostStagedCommunicator(std::unique_ptr<Communicator> device_comm,
                                                        int device) {
  return std::make_unique<HostStagedCommunicator>(std::move(device_comm), device);
}

}  // namespace potluck
