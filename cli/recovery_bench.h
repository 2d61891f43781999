// `potluck bench recovery`: detection, regroup and joiner times with worker
// processes around an embedded coordinator (see recovery_bench.cc).
//
// Thread-safety: call from one thread.
#ifndef POTLUCK_CLI_RECOVERY_BENCH_H_
#define POTLUCK_CLI_RECOVERY_BENCH_H_

namespace potluck {

struct RecoveryBenchArgs {
  int workers = 4;
  int rounds = 3;
  int lease_seconds = 2;
  int seed = 1;
  bool json = false;
};

// Prints the figures; returns the exit code.
int RunRecoveryBench(const RecoveryBenchArgs& args);

}  // namespace potluck

#endif  // POTLUCK_CLI_RECOVERY_BENCH_H_
