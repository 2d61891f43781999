// Communicator: the collectives of one generation of a group.
//
// Every member (rank 0..world_size-1) calls the same collectives in the same
// order on buffers of the same dtype and element count; the calls work in
// place on contiguous buffers. Each call takes a deadline: a member that
// vanished turns into kUnavailable, one that stalls into kDeadlineExceeded, a
// peer that sends garbage into kDataLoss, all within the deadline; nothing
// waits forever.
//
// A communicator lives for exactly one generation. After any error it is
// dead: it closes its links (so the other members fail fast too) and every
// later call returns kFailedPrecondition naming the first error. It is never
// repaired; the group regroups and builds a new one.
//
// Thread-safety: collectives are called from one thread at a time. Abort()
// may be called from any thread at any time: every pending and future call
// then returns kAborted promptly.
#ifndef POTLUCK_COLLECTIVES_COMMUNICATOR_H_
#define POTLUCK_COLLECTIVES_COMMUNICATOR_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

#include "collectives/codec.h"
#include "common/tensor_view.h"

namespace potluck {

enum class ReduceOp {
  kSum,
  kAverage,          // sum / world_size
  kWeightedAverage,  // sum(weight_r * x_r) / sum(weight_r): contributions of different sizes
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual uint64_t generation() const = 0;
  // The library the collectives run on: "tcp", "mpi" or "nccl" (what a
  // worker reports, so a test checks the backend in use, not a flag).
  virtual absl::string_view backend() const = 0;

  // Reduces `data` across all ranks; every rank ends with the same bits.
  // `weight` is this rank's weight for kWeightedAverage (e.g. samples it
  // trained on; all weights 0 is kInvalidArgument) and ignored otherwise.
  // Integer dtypes support kSum only.
  virtual absl::Status AllReduce(TensorView data, ReduceOp op, absl::Time deadline,
                                 double weight = 1.0) = 0;

  // AllReduce of float32 `data` sent on the wire with `codec` (fp16, bf16,
  // or int8 with a per-segment scale), adding in float32. `feedback`, sized
  // to data.count(), carries each element's quantization error into the
  // next call (nullptr: none). All ranks end with the same bits: on TCP each
  // segment's owner encodes the reduced segment once and every rank decodes
  // those same bytes; MPI and NCCL (host buffers) all-gather every rank's
  // encoded contribution and add them in rank order
  // (internal/gathered_compression.h). The default returns kUnimplemented.
  virtual absl::Status CompressedAllReduce(TensorView data, ReduceOp op, WireCodec codec,
                                           ErrorFeedback* feedback, absl::Time deadline,
                                           double weight = 1.0) {
    (void)data, (void)op, (void)codec, (void)feedback, (void)deadline, (void)weight;
    return absl::UnimplementedError("this backend has no wire codecs");
  }

  // `data` holds world_size equal blocks (its count must divide evenly). On
  // return block `rank()` holds the reduction of every rank's block `rank()`;
  // the other blocks are left in an unspecified state.
  virtual absl::Status ReduceScatter(TensorView data, ReduceOp op, absl::Time deadline) = 0;

  // `data` holds world_size equal blocks, block `rank()` being this rank's
  // contribution. On return every block holds its rank's contribution.
  virtual absl::Status AllGather(TensorView data, absl::Time deadline) = 0;

  // Copies `root`'s `data` to every rank.
  virtual absl::Status Broadcast(TensorView data, int root, absl::Time deadline) = 0;

  // Returns once every rank has entered the barrier.
  virtual absl::Status Barrier(absl::Time deadline) = 0;

  // Makes every pending and future call return kAborted. Any thread.
  virtual void Abort() = 0;
};

}  // namespace potluck

#endif  // POTLUCK_COLLECTIVES_COMMUNICATOR_H_
