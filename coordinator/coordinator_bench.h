// The coordinator benchmark behind `potluck bench coordinator`: simulated
// workers over real gRPC on loopback against an in-process server on a
// fresh data directory (synced writes, as in production).
//
// - Heartbeats: `workers` workers each heartbeat once a second, spread
//   evenly over the second, from one scheduling thread issuing async calls;
//   a heartbeat's latency runs from when it was due to when its answer
//   arrived (a late send counts against it). Workers are spread over jobs of
//   `workers_per_job` (a Join rewrites the job's generation, O(members)).
// - Ledger: `ledger_workers` members of one job, each with one call in
//   flight, alternate AcquireShard (lease renewal) and ReportProgress (a
//   durable ledger write: acknowledged only after the synced group commit).
//
// Thread-safety: runs one benchmark per call; call from one thread.
#ifndef POTLUCK_COORDINATOR_COORDINATOR_BENCH_H_
#define POTLUCK_COORDINATOR_COORDINATOR_BENCH_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace potluck {

struct CoordinatorBenchOptions {
  std::string dir;  // an empty directory for the state (required)
  int workers = 10000;
  int workers_per_job = 100;
  int ledger_workers = 256;
  int channels = 4;  // TCP connections per traffic kind
  absl::Duration warmup = absl::Seconds(1);
  absl::Duration duration = absl::Seconds(10);
};

struct CoordinatorBenchResult {
  double seconds = 0;
  double setup_seconds = 0;
  uint64_t heartbeats = 0;
  uint64_t heartbeat_errors = 0;
  double heartbeat_p50_ms = 0;
  double heartbeat_p99_ms = 0;
  double heartbeat_max_ms = 0;
  uint64_t ledger_ops = 0;  // AcquireShard + ReportProgress answered OK
  uint64_t ledger_errors = 0;
  double ledger_ops_per_s = 0;
  double progress_p50_ms = 0;
  double progress_p99_ms = 0;
};

absl::StatusOr<CoordinatorBenchResult> RunCoordinatorBench(const CoordinatorBenchOptions& options);

}  // namespace potluck

#endif  // POTLUCK_COORDINATOR_COORDINATOR_BENCH_H_
