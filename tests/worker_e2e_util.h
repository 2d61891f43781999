// The fixture of tests/worker_e2e_test.cc: a `potluck coordinator` process,
// `potluck worker` processes whose JSON progress lines are read as they
// come, and the checks every scenario shares (identical digests, a ledger
// that counts every trained sample once). Needs POTLUCK_BINARY defined.
#ifndef POTLUCK_TESTS_WORKER_E2E_UTIL_H_
#define POTLUCK_TESTS_WORKER_E2E_UTIL_H_

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/time/time.h"

#include "coordinator/grpc_client.h"
#include "data/dataset.h"
#include "tests/coordinator_process.h"

namespace potluck::testing_util {

// One `potluck worker` process, its JSON progress lines read as they come.
class WorkerProcess {
 public:
  ~WorkerProcess();
  // Runs `args` (args[0] names the program: POTLUCK_BINARY unless `program`
  // is given, which is then looked up in PATH).
  void Start(const std::vector<std::string>& args, const std::string& log,
             const std::string& program = "");
  // Reads what is there; returns complete lines.
  std::vector<nlohmann::json> Poll();
  // Whether it has exited (non-blocking); its exit code in *code.
  bool Exited(int* code);
  void Kill();
  void Signal(int signal_number);
  std::string LogTail() const;

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  int code_ = -1;
  std::string buffer_;
  std::string log_;
};

// A fresh directory with a small prepared dataset; starts the coordinator
// and the workers, drives them, and checks what must hold afterwards.
class WorkerE2eFixture : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  // Starts the coordinator on `port` (0: any) and submits the job (unless
  // max_steps is 0: a restart).
  void StartCoordinator(int port, uint64_t max_steps, bool open = true, uint32_t min_workers = 0);

  std::string CoordinatorDir() const { return dir_ + "/coordinator" + run_; }

  std::unique_ptr<WorkerProcess> StartWorker(int index, const std::string& token = "",
                                             const std::vector<std::string>& extra = {});

  // Each step of the surviving lineage, from any member's line: a redone
  // step comes from a newer generation, which wins (lines of different
  // workers arrive interleaved, and a member may die before it prints).
  void Record(const nlohmann::json& line);
  uint64_t TrainedSequences() const;
  // The committed ledger, read from a copy of the stopped coordinator's
  // directory (CopyForInspection: the next restart sees it untouched).
  uint64_t CommittedSequences(uint64_t* committed_step);
  uint64_t EpochSequences() const;

  // Runs until every worker exited or `timeout`; calls `on_line` for each
  // progress line. Returns the workers' final digests by index.
  std::map<int, std::string> Drive(std::vector<std::unique_ptr<WorkerProcess>>& workers,
                                   const std::function<void(int, const nlohmann::json&)>& on_line,
                                   absl::Duration timeout = absl::Seconds(150));

  // Each listed worker has exited with `expected` (its log tail shown if not).
  void ExpectExited(const std::vector<std::unique_ptr<WorkerProcess>>& workers,
                    std::initializer_list<int> indices, int expected = 0);

  // Stops the coordinator and reads its ledger: committed at `steps`, and
  // counting exactly the sequences the surviving lineage trained.
  void ExpectLedgerCountsEverySampleOnce(uint64_t steps);

  // Trains until a worker reports `step`, then SIGKILLs every worker and the
  // coordinator. Returns the step seen (0 if it never came).
  uint64_t KillEverythingAtStep(std::vector<std::unique_ptr<WorkerProcess>>& workers,
                                uint64_t step);

  // `potluck worker --backend mpi` as `ranks` processes under one mpirun.
  std::unique_ptr<WorkerProcess> StartMpiWorkers(int ranks);

  // The processes whose command line names this test's directory (MPI
  // ranks, which are mpirun's children, not ours), or only the `potluck
  // worker` ones among them (the ranks, not mpirun or the coordinator).
  std::vector<pid_t> ProcessesOfThisTest(bool ranks_only) const;
  // A thread that resumes the (paused) job once the coordinator lists
  // `workers` workers (at most 60 s), setting *resumed to whether it did.
  std::thread ResumeOnceListed(size_t workers, std::atomic<bool>* resumed);
  // SIGKILLs every one of them.
  void KillProcessesOfThisTest();

  // Non-empty: the coordinator serves TLS with this self-signed certificate
  // (made by MakeTlsCertificate), which the admin client and every worker
  // (--tls-ca) trust.
  std::string tls_cert_;
  // A self-signed certificate (MakeSelfSignedCertificate) in this test's
  // directory, its key beside it (.key); returns the certificate's path.
  std::string MakeTlsCertificate(const std::string& name);
  uint32_t diloco_inner_steps_ = 0;  // > 0: the job trains in diloco mode
  uint32_t diloco_time_limit_ms_ = 0;
  v1::WireCodec diloco_codec_ = v1::WIRE_CODEC_UNSPECIFIED;
  std::string dir_;
  std::string run_;  // tells apart the directories of a test's separate runs
  Dataset dataset_;
  std::unique_ptr<CoordinatorProcess> coordinator_;
  std::unique_ptr<CoordinatorAdmin> admin_;
  std::string admin_token_;
  std::string address_;
  std::map<uint64_t, int> world_at_step_;
  std::map<uint64_t, int64_t> samples_at_step_;  // the group's, per step
  std::map<uint64_t, uint64_t> generation_at_step_;
};

}  // namespace potluck::testing_util

#endif  // POTLUCK_TESTS_WORKER_E2E_UTIL_H_
