// The Communicator conformance suite: one set of tests that every backend
// runs, so that what communicator.h promises is proved the same way for TCP,
// MPI and NCCL.
//
// - CommunicatorConformance: results. AllReduce (sum, average, weighted
//   average), ReduceScatter, AllGather, Broadcast from every root and Barrier,
//   over every dtype, on small and large buffers; every rank ends with the
//   same bits; bad arguments are kInvalidArgument.
// - CommunicatorConformanceFaults: a stalled peer is kDeadlineExceeded at the
//   deadline, not a hang; Abort() from another thread ends a blocked call
//   promptly with kAborted; a vanished peer (its communicator gone, as when
//   its process dies) fails the others within a bounded time with the code
//   the backend documents; a dead communicator stays dead.
//
// Where backends differ, the backend says what its header documents
// (DocumentedBehaviour) and the test checks that, or, where it cannot be run
// in one process, skips visibly quoting the documented behaviour.
//
// Tests are written from one rank's point of view (SPMD): every member runs
// the same body on its own communicator, makes its inputs from its rank and
// checks its own outputs; RankContext gives it what it needs outside the
// communicator under test. A backend's test file supplies a
// ConformanceBackend and instantiates both suites:
//
//   INSTANTIATE_TEST_SUITE_P(Tcp, CommunicatorConformance,
//                            ::testing::ValuesIn(ConformanceCases(tcp, {1, 2, 3, 5, 8})),
//                            ConformanceCaseName);
//
// Every wait in the suite has a deadline; CTest adds a timeout per test.
#ifndef POTLUCK_COLLECTIVES_TESTING_CONFORMANCE_H_
#define POTLUCK_COLLECTIVES_TESTING_CONFORMANCE_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

#include "collectives/communicator.h"
#include "collectives/rendezvous.h"

namespace potluck {

// One member's view of the group while a test body runs.
class RankContext {
 public:
  virtual ~RankContext() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;

  // The communicator under test. Not to be used after Vanish().
  virtual Communicator& comm() = 0;

  // Returns once every member has called it; never touches comm(), so it
  // orders members around a communicator left stalled or dead on purpose.
  virtual void Sync() = 0;

  // Whether every member passed the same `bytes` bytes (all pass the same
  // size). Out of band, like Sync().
  virtual bool SameBytesOnEveryRank(const void* data, size_t bytes) = 0;

  // This member goes away as a crashed process would: its communicator is
  // destroyed (links closed, where the backend has links of its own).
  virtual void Vanish() = 0;
};

// What a backend's header documents where backends may differ.
struct DocumentedBehaviour {
  // The code the others get when a member vanishes while they wait on it,
  // and whether they get it before their deadline (TCP: kUnavailable at once,
  // the links close) or only at it.
  absl::StatusCode peer_vanished = absl::StatusCode::kUnavailable;
  bool peer_vanished_before_deadline = true;
  // Non-empty when a member vanishing cannot be run in one test process: the
  // documented behaviour, which the test prints as it skips.
  std::string peer_vanished_not_testable;
  // A call abandoned at its deadline or by Abort() must still be completed
  // by the other members (MPI: a started request can be neither cancelled
  // nor freed, and MPI_Finalize waits for it).
  bool peers_complete_abandoned_calls = false;
};

class ConformanceBackend {
 public:
  virtual ~ConformanceBackend() = default;

  // "tcp", "mpi", "nccl": the test name's prefix.
  virtual std::string name() const = 0;
  virtual DocumentedBehaviour documented() const = 0;

  // Empty when a group of `world_size` can run here; otherwise why not (the
  // test then skips, visibly).
  virtual std::string CannotRun(int world_size) const = 0;

  // Forms a fresh group (a new generation) of `world_size` members and runs
  // `body` once on each member; returns when every member's body has
  // returned, and only then destroys the communicators. A member that fails
  // to connect is a test failure.
  virtual void RunGroup(int world_size, const std::function<void(RankContext&)>& body) = 0;
};

// Ranks as threads in one process, gloo's BaseTest::spawn: what the TCP and
// NCCL backends (and their own tests) run on. Subclasses say how a member
// connects.
class ThreadGroupBackend : public ConformanceBackend {
 public:
  void RunGroup(int world_size, const std::function<void(RankContext&)>& body) override;

 protected:
  // Connects member `rank` of `world_size` for `generation` through the
  // group's shared in-memory store.
  virtual absl::StatusOr<std::unique_ptr<Communicator>> Connect(RendezvousStore* store, int rank,
                                                                int world_size,
                                                                uint64_t generation) = 0;

 private:
  absl::Mutex mu_;
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
};

struct ConformanceCase {
  std::shared_ptr<ConformanceBackend> backend;
  int world_size = 1;
};

// One case per world size, for ::testing::ValuesIn.
std::vector<ConformanceCase> ConformanceCases(std::shared_ptr<ConformanceBackend> backend,
                                              const std::vector<int>& world_sizes);

// "tcp_n3".
std::string ConformanceCaseName(const ::testing::TestParamInfo<ConformanceCase>& info);

// "tcp, 3 ranks": how gtest prints a case, and so what CTest's test names end
// with (not the bytes of a pointer, which differ from build to build).
void PrintTo(const ConformanceCase& conformance_case, std::ostream* os);

class CommunicatorConformance : public ::testing::TestWithParam<ConformanceCase> {
 protected:
  void SetUp() override;
  ConformanceBackend& backend() { return *GetParam().backend; }
  int world_size() const { return GetParam().world_size; }
  void RunGroup(const std::function<void(RankContext&)>& body) {
    GetParam().backend->RunGroup(GetParam().world_size, body);
  }
};

// Instantiate with world sizes of 2 and more.
class CommunicatorConformanceFaults : public CommunicatorConformance {};

}  // namespace potluck

#endif  // POTLUCK_COLLECTIVES_TESTING_CONFORMANCE_H_
