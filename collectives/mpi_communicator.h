// The MPI backend of Communicator (OpenMPI 4.1), for potluck's "static MPI"
// mode: mpirun or srun fixes the job's members, and a job that fails is torn
// down, resubmitted and resumes from its last checkpoint.
//
// What it promises beyond communicator.h, and where MPI forces it to differ:
//
// - Isolation. A communicator works on its own MPI_Comm_idup of the one it is
//   made from, so its traffic never matches the caller's (or another
//   generation's). MPI errors on it are returned (MPI_ERRORS_RETURN) and
//   converted to absl::Status naming the call, the rank and the generation.
//   But OpenMPI 4.1 raises the error of a failed non-blocking collective
//   (when MPI_Test finds it) on MPI_COMM_WORLD's error handler: MpiRuntime
//   sets MPI_ERRORS_RETURN there too; under MPI_ERRORS_ARE_FATAL, the
//   default, such an error kills the job instead of returning.
// - Deadlines and Abort(). MPI collectives cannot time out and a started
//   non-blocking collective can be neither cancelled nor freed. Each call
//   starts the non-blocking form (MPI_Iallreduce, ...) and polls MPI_Test
//   until it completes, the deadline passes (kDeadlineExceeded) or Abort() is
//   called (kAborted). In the last two cases the request is abandoned, still
//   in flight: the communicator is dead and the MPI job itself must be torn
//   down (AbortMpiJob below, or let every rank exit); it cannot be repaired,
//   and MPI_Finalize may then wait for members that never arrive.
// - Caller buffers. Data is copied through a staging buffer the communicator
//   owns, so an abandoned request never reads or writes the caller's memory
//   after the call returns (the staging buffer is then kept until exit).
//   Cost: two memcpys per call, and a staging buffer kept at the size of the
//   largest call so far (twice the buffer for AllReduce).
// - Peers are not told. MPI has no way to close another member's links: when
//   one member gives up, the others fail at their own deadlines, not at once.
//   A member that dies is reported by OpenMPI's runtime killing the whole job,
//   not as kUnavailable.
// - Reductions. fp32/fp64/int use MPI's builtin MPI_SUM. fp16/bf16 use a
//   commutative MPI_Op on 16-bit units that adds two values in float and
//   rounds once to the 16-bit format (float has enough bits that this is the
//   correctly rounded 16-bit sum). Each partial sum is rounded, so a sum over
//   N ranks is off by at most about (N-1) * 2^-11 (fp16) or (N-1) * 2^-8
//   (bf16) times the sum of the magnitudes, and an fp16 sum overflows to
//   infinity above 65504. kAverage sums, then divides by world_size (correctly
//   rounded for up to 256 ranks). kWeightedAverage scales each rank's data by
//   weight / sum(weights) before summing, so large weights cannot overflow;
//   a rank of weight 0 contributes zeros whatever its data holds (NaN too).
//   Neither the builtin float sums nor ours are associative, so identical
//   bits on every rank rest on the algorithm: each of OpenMPI 4.1's
//   non-blocking allreduce algorithms either reduces an element in one place
//   and copies the result, or has partners combine the same two partial sums
//   (a + b on one, b + a on the other), which a commutative op (builtin or
//   ours) makes identical.
// - Limits. Buffers are CPU memory only, and a call's element count (per
//   block, for ReduceScatter/AllGather) must fit MPI's int. ReduceScatter
//   takes no weight, so kWeightedAverage is kInvalidArgument there. Any error,
//   a rejected argument included, leaves the communicator dead, as
//   communicator.h says.
//
// MPI initialization: create one MpiRuntime at the top of main, before any
// communicator, and destroy it after the last one. If something else
// initializes MPI instead, it must ask for MPI_THREAD_SERIALIZED at least,
// should set MPI_ERRORS_RETURN on MPI_COMM_WORLD (see Isolation), and must
// finalize after the last communicator is destroyed. Abort() makes no MPI call
// (it sets a flag the polling thread reads), so it needs no thread level of its
// own. Collectives may run on any thread, which needs MPI_THREAD_SERIALIZED;
// when MPI provides only that, this backend serializes its own MPI calls behind
// one process-wide mutex, and the caller must not make MPI calls of its own
// while a collective runs on another thread. With MPI_THREAD_MULTIPLE (what
// MpiRuntime asks for, and what Debian's OpenMPI provides) there is no such
// rule.
//
// Thread-safety: as communicator.h: one collective at a time per
// communicator; Abort() from any thread. Distinct communicators may be used
// from distinct threads concurrently.
#ifndef POTLUCK_COLLECTIVES_MPI_COMMUNICATOR_H_
#define POTLUCK_COLLECTIVES_MPI_COMMUNICATOR_H_

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

#include "collectives/communicator.h"
#include "common/clock.h"

namespace potluck {

// Initializes MPI on creation (MPI_Init_thread, asking for
// MPI_THREAD_MULTIPLE) and finalizes it on destruction, both on the main
// thread. At most one per process, created once: MPI cannot be initialized
// again after finalizing. It sets MPI_ERRORS_RETURN on MPI_COMM_WORLD, so
// other MPI code in the process gets error codes there instead of an abort.
class MpiRuntime {
 public:
  // kFailedPrecondition if MPI was already initialized or finalized, or if the
  // library provides less than MPI_THREAD_SERIALIZED (MPI is then finalized
  // again). `argc`/`argv` may be null.
  static absl::StatusOr<std::unique_ptr<MpiRuntime>> Init(int* argc, char*** argv);

  // MPI_Finalize. Destroy every communicator first. MPI_Finalize waits for
  // every member of the job: after a communicator died with a request in
  // flight, prefer AbortMpiJob().
  ~MpiRuntime();

  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  // Whether MPI provides MPI_THREAD_MULTIPLE (otherwise MPI_THREAD_SERIALIZED).
  bool thread_multiple() const { return thread_multiple_; }
  int world_rank() const { return world_rank_; }
  int world_size() const { return world_size_; }

 private:
  MpiRuntime(bool thread_multiple, int world_rank, int world_size)
      : thread_multiple_(thread_multiple), world_rank_(world_rank), world_size_(world_size) {}

  const bool thread_multiple_;
  const int world_rank_;
  const int world_size_;
};

// An MPI communicator named by its Fortran handle, MPI_Comm_c2f(comm): MPI's
// own integer name for a handle, which keeps <mpi.h> out of this header.
struct MpiCommHandle {
  int64_t fortran_handle = 0;
};

struct MpiCommunicatorOptions {
  // What deadlines are measured against. Not owned; outlives the
  // communicator. The pauses between polls are real time whatever the clock,
  // since MPI progresses in real time.
  Clock* clock = Clock::Real();
  // A call tests its request back to back for `spin_duration` (short
  // collectives finish with the least latency), then pauses `poll_interval`
  // between tests so that a long wait does not hold a core. OpenMPI makes
  // progress only inside MPI calls, so a longer interval slows long
  // operations down.
  absl::Duration spin_duration = absl::Microseconds(100);
  absl::Duration poll_interval = absl::Microseconds(50);
};

// A communicator over a duplicate of `comm` (which the caller keeps and may
// free at once), for generation `generation`. Collective over `comm`: every
// member calls it. kFailedPrecondition if MPI is not initialized (or
// finalized) or provides less than MPI_THREAD_SERIALIZED; kDeadlineExceeded if
// the others do not join by `deadline` (the half-made duplicate is kept until
// exit, and the job should be torn down). An error in the duplication itself
// is handled by `comm`'s own error handler (MPI_ERRORS_ARE_FATAL unless the
// caller changed it).
absl::StatusOr<std::unique_ptr<Communicator>> CreateMpiCommunicator(
    MpiCommHandle comm, uint64_t generation, absl::Time deadline,
    const MpiCommunicatorOptions& options = {});

// The same over MPI_COMM_WORLD: every process of the job is a member and its
// rank is its world rank.
absl::StatusOr<std::unique_ptr<Communicator>> CreateMpiWorldCommunicator(
    uint64_t generation, absl::Time deadline, const MpiCommunicatorOptions& options = {});

// The same over MPI_COMM_WORLD with its processes renumbered: the process
// that passes `rank` becomes that rank (each passes a distinct one in
// [0, world size)), for groups whose ranks come from elsewhere, e.g. the
// coordinator's generation view. MPI_Comm_split has no deadline: it returns
// once every process of the job has called it.
absl::StatusOr<std::unique_ptr<Communicator>> CreateMpiWorldCommunicatorRanked(
    int rank, uint64_t generation, absl::Time deadline, const MpiCommunicatorOptions& options = {});

// Tears the whole MPI job down (MPI_Abort on MPI_COMM_WORLD) after printing
// `reason` to stderr: the way out once a communicator is dead in static MPI
// mode. Never returns.
[[noreturn]] void AbortMpiJob(const absl::Status& reason);

}  // namespace potluck

#endif  // POTLUCK_COLLECTIVES_MPI_COMMUNICATOR_H_
