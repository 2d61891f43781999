// CompressedAllReduce for backends whose library has no codecs (MPI, NCCL
// through host staging), built from the backend's own AllReduce and
// AllGather: every rank encodes its whole contribution once (with its error
// feedback), the encoded contributions are all-gathered, and every rank
// decodes all of them and adds them in rank order in float32. Every rank
// adds the same bytes in the same order with plain float additions, so all
// end with the same bits, on any host.
//
// Bytes: each rank receives (world_size - 1) encoded contributions, against
// the ring's ~2 * (world_size - 1) / world_size whole buffers: int8 sends
// less than an uncompressed ring (4 bytes per element) up to 7 ranks.
//
// Host (CPU) float32 buffers only; the arguments are checked as
// Communicator::CompressedAllReduce documents them.
#ifndef POTLUCK_COLLECTIVES_INTERNAL_GATHERED_COMPRESSION_H_
#define POTLUCK_COLLECTIVES_INTERNAL_GATHERED_COMPRESSION_H_

#include "absl/status/status.h"
#include "absl/time/time.h"

#include "collectives/codec.h"
#include "collectives/communicator.h"

namespace potluck::collectives_internal {

absl::Status GatheredCompressedAllReduce(Communicator& comm, TensorView data, ReduceOp op,
                                         WireCodec codec, ErrorFeedback* feedback,
                                         absl::Time deadline, double weight);

}  // namespace potluck::collectives_internal

#endif  // POTLUCK_COLLECTIVES_INTERNAL_GATHERED_COMPRESSION_H_
