// The MPI backend's lifecycle: MPI initialization (MpiRuntime), creating a
// communicator over a duplicate of an MPI_Comm and destroying it, and tearing
// the job down. The collectives themselves are in
// internal/mpi_collectives.cc, the polling and error conversion under them in
// internal/mpi_progress.cc.
#include "collectives/mpi_communicator.h"

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

#include "collectives/internal/mpi_communicator_impl.h"
#include "collectives/internal/mpi_progress.h"
#include "collectives/internal/mpi_reduce.h"
#include "common/check.h"
#include "common/dtype.h"
#include "common/status.h"

namespace potluck {

namespace mpi_internal {

MpiCommunicator::~MpiCommunicator() {
  // A request abandoned in flight may still use the communicator and the
  // ops (and the staging buffer, already kept aside): never free them.
  if (abandoned_request_) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;  // too late to free anything; MPI has let go of it all
  MpiCallGuard guard(serialize_);
  MPI_Op_free(&float16_sum_);
  MPI_Op_free(&bfloat16_sum_);
  MPI_Comm_free(&comm_);
}

}  // namespace mpi_internal

namespace {

using mpi_internal::KeepForever;
using mpi_internal::MpiCallGuard;
using mpi_internal::MpiCommunicator;
using mpi_internal::MpiErrorToStatus;
using mpi_internal::PollRequest;

// Checks that MPI is usable by a communicator; sets `*serialize` when MPI
// provides only MPI_THREAD_SERIALIZED.
absl::Status CheckMpiReady(bool* serialize) {
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (finalized) return absl::FailedPreconditionError("MPI was already finalized");
  if (!initialized) {
    return absl::FailedPreconditionError("MPI is not initialized: create an MpiRuntime first");
  }
  int provided = MPI_THREAD_SINGLE;
  MPI_Query_thread(&provided);
  if (provided < MPI_THREAD_SERIALIZED) {
    return absl::FailedPreconditionError(
        absl::StrCat("MPI was initialized with thread level ", provided,
                     "; the MPI backend needs MPI_THREAD_SERIALIZED or MPI_THREAD_MULTIPLE"));
  }
  *serialize = provided < MPI_THREAD_MULTIPLE;
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Communicator>> CreateOnComm(MPI_Comm parent, uint64_t generation,
                                                           absl::Time deadline,
                                                           const MpiCommunicatorOptions& options,
                                                           bool serialize) {
  const std::string context =
      absl::StrCat("creating the MPI communicator of generation ", generation);
  POTLUCK_CHECK(options.clock != nullptr) << "MpiCommunicatorOptions::clock is null";
  if (options.clock->Now() >= deadline) {
    return absl::DeadlineExceededError(absl::StrCat(context, ": the deadline already passed"));
  }
  // MPI writes the duplicate's handle when the request completes, which may
  // be after we gave up on it: it lives on the heap until we know.
  auto duplicate = std::make_shared<MPI_Comm>(MPI_COMM_NULL);
  MPI_Request request = MPI_REQUEST_NULL;
  int rc;
  {
    MpiCallGuard guard(serialize);
    rc = MPI_Comm_idup(parent, duplicate.get(), &request);
  }
  if (rc != MPI_SUCCESS) {
    return MpiErrorToStatus(rc, absl::StrCat(context, ": MPI_Comm_idup"), serialize);
  }
  absl::Status status = PollRequest(&request, deadline, /*aborted=*/nullptr, options, serialize,
                                    absl::StrCat(context, ": MPI_Comm_idup"));
  if (!status.ok()) {
    KeepForever(std::move(duplicate));
    return status;
  }
  MPI_Comm comm = *duplicate;

  int rank = 0;
  int size = 0;
  MPI_Op float16_sum = MPI_OP_NULL;
  MPI_Op bfloat16_sum = MPI_OP_NULL;
  {
    MpiCallGuard guard(serialize);
    rc = MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_rank(comm, &rank);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_size(comm, &size);
    if (rc == MPI_SUCCESS) {
      std::string name = absl::StrCat("potluck generation ", generation);
      rc = MPI_Comm_set_name(comm, name.c_str());
    }
    if (rc == MPI_SUCCESS) {
      rc = MPI_Op_create(&mpi_internal::SumFloat16InFloat, /*commute=*/1, &float16_sum);
    }
    if (rc == MPI_SUCCESS) {
      rc = MPI_Op_create(&mpi_internal::SumBFloat16InFloat, /*commute=*/1, &bfloat16_sum);
    }
    if (rc != MPI_SUCCESS) {
      if (float16_sum != MPI_OP_NULL) MPI_Op_free(&float16_sum);
      MPI_Comm_free(&comm);
    }
  }
  if (rc != MPI_SUCCESS) return MpiErrorToStatus(rc, context, serialize);
  return std::make_unique<MpiCommunicator>(comm, rank, size, generation, serialize, float16_sum,
                                           bfloat16_sum, options);
}

}  // namespace

absl::StatusOr<std::unique_ptr<MpiRuntime>> MpiRuntime::Init(int* argc, char*** argv) {
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (finalized) {
    return absl::FailedPreconditionError(
        "MPI was already finalized; it cannot be initialized twice in one process");
  }
  if (initialized) {
    return absl::FailedPreconditionError(
        "MPI is already initialized; whoever initialized it also finalizes it");
  }
  int provided = MPI_THREAD_SINGLE;
  const int rc = MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided);
  if (rc != MPI_SUCCESS) return MpiErrorToStatus(rc, "MPI_Init_thread", /*serialize=*/false);
  if (provided < MPI_THREAD_SERIALIZED) {
    MPI_Finalize();
    return absl::FailedPreconditionError(
        absl::StrCat("MPI provides thread level ", provided,
                     "; potluck needs MPI_THREAD_SERIALIZED or MPI_THREAD_MULTIPLE"));
  }
  // OpenMPI 4.1 reports a failed non-blocking collective through
  // MPI_COMM_WORLD's error handler, whatever the request's communicator has.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  int world_rank = 0;
  int world_size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  return std::unique_ptr<MpiRuntime>(
      new MpiRuntime(provided == MPI_THREAD_MULTIPLE, world_rank, world_size));
}

MpiRuntime::~MpiRuntime() { MPI_Finalize(); }

absl::StatusOr<std::unique_ptr<Communicator>> CreateMpiCommunicator(
    MpiCommHandle comm, uint64_t generation, absl::Time deadline,
    const MpiCommunicatorOptions& options) {
  bool serialize = false;
  RETURN_IF_ERROR(CheckMpiReady(&serialize));
  const MPI_Fint fortran_handle = static_cast<MPI_Fint>(comm.fortran_handle);
  if (fortran_handle != comm.fortran_handle) {
    return absl::InvalidArgumentError(
        absl::StrCat("MPI communicator handle ", comm.fortran_handle, " is out of range"));
  }
  MPI_Comm parent;
  {
    MpiCallGuard guard(serialize);
    parent = MPI_Comm_f2c(fortran_handle);
  }
  if (parent == MPI_COMM_NULL) {
    return absl::InvalidArgumentError(
        absl::StrCat("MPI communicator handle ", comm.fortran_handle, " names no communicator"));
  }
  return CreateOnComm(parent, generation, deadline, options, serialize);
}

absl::StatusOr<std::unique_ptr<Communicator>> CreateMpiWorldCommunicator(
    uint64_t generation, absl::Time deadline, const MpiCommunicatorOptions& options) {
  bool serialize = false;
  RETURN_IF_ERROR(CheckMpiReady(&serialize));
  return CreateOnComm(MPI_COMM_WORLD, generation, deadline, options, serialize);
}

absl::StatusOr<std::unique_ptr<Communicator>> CreateMpiWorldCommunicatorRanked(
    int rank, uint64_t generation, absl::Time deadline, const MpiCommunicatorOptions& options) {
  bool serialize = false;
  RETURN_IF_ERROR(CheckMpiReady(&serialize));
  MPI_Comm split = MPI_COMM_NULL;
  int rc;
  {
    MpiCallGuard guard(serialize);
    rc = MPI_Comm_split(MPI_COMM_WORLD, 0, rank, &split);
  }
  if (rc != MPI_SUCCESS) {
    return MpiErrorToStatus(rc, absl::StrCat("MPI_Comm_split for generation ", generation),
                            serialize);
  }
  auto created = CreateOnComm(split, generation, deadline, options, serialize);
  {
    MpiCallGuard guard(serialize);
    MPI_Comm_free(&split);
  }
  if (created.ok() && (*created)->rank() != rank) {
    return absl::InvalidArgumentError(
        absl::StrCat("MPI rank ", rank, " of generation ", generation, " was passed by ",
                     "more than one process (this one became rank ", (*created)->rank(), ")"));
  }
  return created;
}

void AbortMpiJob(const absl::Status& reason) {
  std::fprintf(stderr, "potluck: tearing down the MPI job: %s\n", reason.ToString().c_str());
  std::fflush(stderr);
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, 1);
  std::abort();  // MPI_Abort does not return; without MPI there is no job to abort
}

}  // namespace potluck
