// End to end, as processes: a real `potluck coordinator`, real `potluck
// worker`s over the TCP backend on loopback, faults by signal. Each test
// checks what must hold afterwards: every survivor holds the same model
// (state digests), and the committed ledger counts every trained sample
// exactly once.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

#include "common/gpu.h"
#include "coordinator/coordinator.h"
#include "coordinator/grpc_client.h"
#include "data/dataset.h"
#include "tests/coordinator_process.h"

namespace potluck {
namespace {

using ::testing::HasSubstr;

constexpr uint32_t kContext = 64;
constexpr int64_t kMicro = 4;
constexpr int64_t kGlobal = 8;

// One `potluck worker` process, its JSON progress lines read as they come.
class WorkerProcess {
 public:
  ~WorkerProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  // Runs `args` (args[0] names the program: POTLUCK_BINARY unless `program`
  // is given, which is then looked up in PATH).
  void Start(const std::vector<std::string>& args, const std::string& log,
             const std::string& program = "") {
    int out[2];
    ASSERT_EQ(pipe2(out, O_CLOEXEC), 0);
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], STDOUT_FILENO);
      const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) dup2(fd, STDERR_FILENO);
      std::vector<char*> argv;
      std::vector<std::string> copy = args;
      for (std::string& a : copy) argv.push_back(a.data());
      argv.push_back(nullptr);
      if (program.empty()) {
        execv(POTLUCK_BINARY, argv.data());
      } else {
        execvp(program.c_str(), argv.data());
      }
      _exit(127);
    }
    close(out[1]);
    out_ = out[0];
    fcntl(out_, F_SETFL, O_NONBLOCK);
    log_ = log;
  }
  // Reads what is there; returns complete lines.
  std::vector<nlohmann::json> Poll() {
    std::vector<nlohmann::json> lines;
    char buffer[4096];
    ssize_t n;
    while (out_ >= 0 && (n = read(out_, buffer, sizeof(buffer))) > 0) buffer_.append(buffer, n);
    size_t newline;
    while ((newline = buffer_.find('\n')) != std::string::npos) {
      auto j = nlohmann::json::parse(buffer_.substr(0, newline), nullptr, false);
      buffer_.erase(0, newline + 1);
      if (j.is_object()) lines.push_back(j);
    }
    return lines;
  }
  // Whether it has exited (non-blocking); its exit code in *code.
  bool Exited(int* code) {
    if (pid_ <= 0) {
      *code = code_;
      return true;
    }
    int status;
    if (waitpid(pid_, &status, WNOHANG) != pid_) return false;
    pid_ = -1;
    code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    *code = code_;
    return true;
  }
  void Kill() {
    if (pid_ > 0) kill(pid_, SIGKILL);
  }
  std::string LogTail() const {
    std::ifstream in(log_);
    std::stringstream s;
    s << in.rdbuf();
    const std::string all = s.str();
    return all.size() > 2000 ? all.substr(all.size() - 2000) : all;
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  int code_ = -1;
  std::string buffer_;
  std::string log_;
};

class WorkerE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           absl::StrCat("potluck-e2e-",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name(), "-",
                        getpid());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    {
      std::ofstream text(dir_ + "/corpus.txt");
      for (int i = 0; i < 2000; ++i)
        text << "volunteer " << i << " brings a dish number " << i * 7 << "\n";
    }
    PrepareOptions prepare;
    prepare.inputs = {dir_ + "/corpus.txt"};
    prepare.out_dir = dir_ + "/data";
    prepare.shard_tokens = 3000;
    auto dataset = PrepareDataset(prepare);
    ASSERT_TRUE(dataset.ok()) << dataset.status();
    dataset_ = *dataset;
  }
  void TearDown() override {
    if (getenv("POTLUCK_KEEP_TEST_DIR") == nullptr) std::filesystem::remove_all(dir_);
  }

  // Starts the coordinator on `port` (0: any) and submits the job (unless
  // max_steps is 0: a restart).
  void StartCoordinator(int port, uint64_t max_steps, bool open = true, uint32_t min_workers = 0) {
    std::string error;
    for (int attempt = 0; attempt < 5; ++attempt) {
      coordinator_ = std::make_unique<CoordinatorProcess>();
      coordinator_->set_listen(absl::StrCat("127.0.0.1:", port));
      error = coordinator_->Start(POTLUCK_BINARY, CoordinatorDir(), {"--lease-seconds", "2"});
      // A restart's fixed port can be held for a moment by another
      // process's outgoing connection: the workers only need it back soon.
      if (error.empty() || port == 0) break;
      absl::SleepFor(absl::Seconds(1));
    }
    ASSERT_EQ(error, "");
    address_ = coordinator_->address();
    if (max_steps == 0) return;
    std::ifstream token_file(CoordinatorDir() + "/admin.token");
    std::string admin;
    token_file >> admin;
    auto client = NewGrpcAdmin(address_);
    ASSERT_TRUE(client.ok());
    admin_ = std::move(*client);
    admin_token_ = admin;
    v1::JobSpec job;
    job.set_job_id("e2e");
    job.set_seed(11);
    job.set_mode(v1::SYNC_MODE_SYNC);
    v1::GptSpec* gpt = job.mutable_model()->mutable_gpt();
    gpt->set_vocab_size(256);
    gpt->set_context_length(kContext);
    // Big enough that a step takes a few tens of milliseconds: the faults
    // below land while the group trains, not after it finished.
    gpt->set_layers(2);
    gpt->set_heads(4);
    gpt->set_width(128);
    job.mutable_optimizer()->set_learning_rate(3e-3);
    job.mutable_batch()->set_micro_batch_size(kMicro);
    job.mutable_batch()->set_global_batch_size(kGlobal);
    job.mutable_dataset()->set_manifest(dataset_.dir);
    job.mutable_dataset()->set_epochs(10);
    job.mutable_checkpoint()->set_every_steps(5);
    job.mutable_checkpoint()->set_keep_last(2);
    job.mutable_access()->set_open(open);
    job.mutable_access()->set_min_workers(min_workers);
    job.set_max_steps(max_steps);
    if (diloco_inner_steps_ > 0) {
      job.set_mode(v1::SYNC_MODE_DILOCO);
      job.mutable_diloco()->set_inner_steps(diloco_inner_steps_);
      job.mutable_diloco()->set_outer_learning_rate(0.7);
      job.mutable_diloco()->set_outer_momentum(0.9);
      job.mutable_diloco()->set_inner_time_limit_ms(diloco_time_limit_ms_);
      job.mutable_checkpoint()->set_every_steps(3);  // rounds
    }
    auto submitted = admin_->SubmitJob(admin, job, "submit-1");
    ASSERT_TRUE(submitted.ok()) << submitted.status();
  }

  std::string CoordinatorDir() const { return dir_ + "/coordinator" + run_; }

  std::unique_ptr<WorkerProcess> StartWorker(int index, const std::string& token = "",
                                             const std::vector<std::string>& extra = {}) {
    auto worker = std::make_unique<WorkerProcess>();
    const std::string state = absl::StrCat(dir_, "/worker-", index, run_);
    std::vector<std::string> args = {"potluck",   "worker", "--coordinator", address_,
                                     "--job",     "e2e",    "--state-dir",   state,
                                     "--threads", "1",      "--progress",    "json"};
    if (!token.empty()) {
      args.push_back("--token");
      args.push_back(token);
    }
    args.insert(args.end(), extra.begin(), extra.end());
    worker->Start(args, state + ".log");
    return worker;
  }

  // Each step of the surviving lineage, from any member's line: a redone
  // step comes from a newer generation, which wins (lines of different
  // workers arrive interleaved, and a member may die before it prints).
  void Record(const nlohmann::json& line) {
    if (line.contains("done") || line.contains("event")) return;
    // DiLoCo: the coordinator's step is the round; only a round's last line
    // has the group's samples.
    if (diloco_inner_steps_ > 0 && !line.value("round_ended", false)) return;
    const uint64_t step = diloco_inner_steps_ > 0 ? line["rounds"] : line["step"];
    const uint64_t generation = line["generation"];
    auto it = generation_at_step_.find(step);
    if (it != generation_at_step_.end() && it->second > generation) return;
    generation_at_step_[step] = generation;
    world_at_step_[step] = line["world"];
    samples_at_step_[step] = line["samples"];
  }
  uint64_t TrainedSequences() const {
    uint64_t sequences = 0;
    for (const auto& [step, samples] : samples_at_step_) sequences += samples;
    return sequences;
  }
  // The committed ledger, read from the stopped coordinator's directory.
  uint64_t CommittedSequences(uint64_t* committed_step) {
    CoordinatorOptions options;
    options.data_dir = CoordinatorDir();
    auto coordinator = Coordinator::Open(options);
    EXPECT_TRUE(coordinator.ok()) << coordinator.status();
    if (!coordinator.ok()) return 0;
    auto ledger = (*coordinator)->GetLedger("e2e");
    EXPECT_TRUE(ledger.ok());
    *committed_step = ledger->committed_step;
    uint64_t sequences = 0;
    for (const ShardView& shard : ledger->shards) {
      const uint64_t o = shard.committed_offset;
      sequences += o == shard.size ? (shard.size - 1) / kContext : o / kContext;
    }
    return sequences + ledger->epoch * EpochSequences();
  }
  uint64_t EpochSequences() const {
    uint64_t sequences = 0;
    for (const ShardInfo& shard : dataset_.train) sequences += (shard.tokens - 1) / kContext;
    return sequences;
  }

  // Runs until every worker exited or `timeout`; calls `on_line` for each
  // progress line. Returns the workers' final digests by index.
  std::map<int, std::string> Drive(std::vector<std::unique_ptr<WorkerProcess>>& workers,
                                   const std::function<void(int, const nlohmann::json&)>& on_line,
                                   absl::Duration timeout = absl::Seconds(150)) {
    std::map<int, std::string> digests;
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      bool all_exited = true;
      for (size_t i = 0; i < workers.size(); ++i) {
        if (workers[i] == nullptr) continue;
        for (const auto& line : workers[i]->Poll()) {
          Record(line);
          if (line.contains("digest")) digests[i] = line["digest"];
          on_line(static_cast<int>(i), line);
        }
        int code;
        if (!workers[i]->Exited(&code)) all_exited = false;
      }
      if (all_exited) {
        for (size_t i = 0; i < workers.size(); ++i) {
          if (workers[i] == nullptr) continue;
          for (const auto& line : workers[i]->Poll()) {
            if (line.contains("digest")) digests[i] = line["digest"];
          }
        }
        return digests;
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
    ADD_FAILURE() << "workers still running after " << absl::FormatDuration(timeout);
    return digests;
  }

  // Each listed worker has exited with `expected` (its log tail shown if not).
  void ExpectExited(const std::vector<std::unique_ptr<WorkerProcess>>& workers,
                    std::initializer_list<int> indices, int expected = 0) {
    for (int i : indices) {
      int code;
      ASSERT_TRUE(workers[i]->Exited(&code)) << "worker " << i;
      EXPECT_EQ(code, expected) << "worker " << i << ":\n" << workers[i]->LogTail();
    }
  }

  // Stops the coordinator and reads its ledger: committed at `steps`, and
  // counting exactly the sequences the surviving lineage trained.
  void ExpectLedgerCountsEverySampleOnce(uint64_t steps) {
    coordinator_->Signal(SIGTERM);
    uint64_t committed_step = 0;
    EXPECT_EQ(CommittedSequences(&committed_step), TrainedSequences());
    EXPECT_EQ(committed_step, steps);
  }

  // Trains until a worker reports `step`, then SIGKILLs every worker and the
  // coordinator. Returns the step seen (0 if it never came).
  uint64_t KillEverythingAtStep(std::vector<std::unique_ptr<WorkerProcess>>& workers,
                                uint64_t step) {
    uint64_t killed_at = 0;
    Drive(workers, [&](int, const nlohmann::json& line) {
      if (killed_at == 0 && line.value("step", uint64_t{0}) >= step) {
        for (auto& worker : workers) worker->Kill();
        coordinator_->Signal(SIGKILL);
        killed_at = line["step"];
      }
    });
    return killed_at;
  }

  // `potluck worker --backend mpi` as `ranks` processes under one mpirun.
  std::unique_ptr<WorkerProcess> StartMpiWorkers(int ranks) {
    auto job = std::make_unique<WorkerProcess>();
    const std::string state = dir_ + "/mpi-workers";
    job->Start({"mpirun",
                "--allow-run-as-root",
                "--oversubscribe",
                "--bind-to",
                "none",
                "--mca",
                "btl",
                "tcp,self",
                "--mca",
                "btl_tcp_if_include",
                "lo",
                "-np",
                std::to_string(ranks),
                POTLUCK_BINARY,
                "worker",
                "--coordinator",
                address_,
                "--job",
                "e2e",
                "--state-dir",
                state,
                "--threads",
                "1",
                "--progress",
                "json",
                "--backend",
                "mpi"},
               state + ".log", "mpirun");
    return job;
  }

  // SIGKILLs every process whose command line names this test's directory
  // (MPI ranks, which are mpirun's children, not ours).
  void KillProcessesOfThisTest() {
    for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
      const std::string name = entry.path().filename();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      std::ifstream in(entry.path() / "cmdline");
      std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      if (cmdline.find(dir_) != std::string::npos) kill(std::stoi(name), SIGKILL);
    }
  }

  uint32_t diloco_inner_steps_ = 0;  // > 0: the job trains in diloco mode
  uint32_t diloco_time_limit_ms_ = 0;
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

TEST_F(WorkerE2eTest, SigkilledWorkerLeavesSurvivorsIdenticalAndEverySampleCountedOnce) {
  StartCoordinator(0, 60);
  std::vector<std::unique_ptr<WorkerProcess>> workers;
  for (int i = 0; i < 3; ++i) workers.push_back(StartWorker(i));
  bool killed = false;
  auto digests = Drive(workers, [&](int, const nlohmann::json& line) {
    if (!killed && line.value("step", 0) >= 15 && line.value("world", 0) == 3) {
      workers[2]->Kill();
      killed = true;
    }
  });
  ASSERT_TRUE(killed);
  ExpectExited(workers, {0, 1});
  ASSERT_EQ(digests.count(0), 1u);
  ASSERT_EQ(digests.count(1), 1u);
  EXPECT_EQ(digests[0], digests[1]);
  EXPECT_EQ(world_at_step_.size(), 60u);
  EXPECT_EQ(world_at_step_.rbegin()->second, 2);
  ExpectLedgerCountsEverySampleOnce(60);
}

TEST_F(WorkerE2eTest, JoinerMidRunEndsWithTheSameModel) {
  StartCoordinator(0, 60);
  std::vector<std::unique_ptr<WorkerProcess>> workers;
  for (int i = 0; i < 2; ++i) workers.push_back(StartWorker(i));
  bool joined = false;
  auto digests = Drive(workers, [&](int, const nlohmann::json& line) {
    if (!joined && line.value("step", 0) >= 5) {
      workers.push_back(StartWorker(2));
      joined = true;
    }
  });
  ASSERT_TRUE(joined);
  ExpectExited(workers, {0, 1, 2});
  ASSERT_EQ(digests.size(), 3u);
  EXPECT_EQ(digests[0], digests[1]);
  EXPECT_EQ(digests[0], digests[2]);
  EXPECT_EQ(world_at_step_.rbegin()->second, 3);

  // A volunteer arriving after the end is told so and exits 0.
  std::unique_ptr<WorkerProcess> late = StartWorker(3);
  int code = -1;
  const absl::Time give_up = absl::Now() + absl::Seconds(60);
  while (!late->Exited(&code) && absl::Now() < give_up) absl::SleepFor(absl::Milliseconds(50));
  bool told = false;
  for (const auto& line : late->Poll()) told = told || line.value("job_finished", false);
  EXPECT_EQ(code, 0) << late->LogTail();
  EXPECT_TRUE(told) << late->LogTail();
  EXPECT_THAT(late->LogTail(), HasSubstr("is already finished"));
  ExpectLedgerCountsEverySampleOnce(60);
}

TEST_F(WorkerE2eTest, CoordinatorSigkilledAndRestartedLosesNothingCommitted) {
  StartCoordinator(0, 60);
  const std::string port = address_.substr(address_.rfind(':') + 1);
  std::vector<std::unique_ptr<WorkerProcess>> workers;
  for (int i = 0; i < 2; ++i) workers.push_back(StartWorker(i));
  bool restarted = false;
  auto digests = Drive(workers, [&](int, const nlohmann::json& line) {
    if (!restarted && line.value("step", 0) >= 12) {
      coordinator_->Signal(SIGKILL);
      absl::SleepFor(absl::Seconds(1));
      StartCoordinator(std::stoi(port), 0);
      restarted = true;
    }
  });
  ASSERT_TRUE(restarted);
  ExpectExited(workers, {0, 1});
  ASSERT_EQ(digests.size(), 2u);
  EXPECT_EQ(digests[0], digests[1]);
  ExpectLedgerCountsEverySampleOnce(60);
}

// Everything (workers and coordinator) SIGKILLed mid-run and started again
// from the last checkpoint with the same world size ends bitwise equal to a
// run that was never interrupted: which rank reads which data depends only
// on the ranks and the ledger, and the Trainer resumes exactly.
TEST_F(WorkerE2eTest, RunStoppedAndRestartedEndsBitwiseEqualToAnUninterruptedOne) {
  constexpr uint64_t kSteps = 24;
  StartCoordinator(0, kSteps, true, /*min_workers=*/2);
  std::vector<std::unique_ptr<WorkerProcess>> workers;
  for (int i = 0; i < 2; ++i) workers.push_back(StartWorker(i));
  auto reference = Drive(workers, [](int, const nlohmann::json&) {});
  ASSERT_EQ(reference.size(), 2u);
  ASSERT_EQ(reference[0], reference[1]);
  coordinator_->Signal(SIGTERM);

  run_ = "-interrupted";
  StartCoordinator(0, kSteps, true, /*min_workers=*/2);
  workers.clear();
  for (int i = 0; i < 2; ++i) workers.push_back(StartWorker(i));
  const uint64_t killed_at = KillEverythingAtStep(workers, 13);
  ASSERT_GT(killed_at, 0u);
  uint64_t committed_step = 0;
  CommittedSequences(&committed_step);
  EXPECT_GT(committed_step, 0u);
  EXPECT_LT(committed_step, killed_at);

  StartCoordinator(0, 0);  // the same directory: a restart
  workers.clear();
  for (int i = 0; i < 2; ++i) workers.push_back(StartWorker(i));
  auto resumed = Drive(workers, [](int, const nlohmann::json&) {});
  ExpectExited(workers, {0, 1});
  ASSERT_EQ(resumed.size(), 2u);
  EXPECT_EQ(resumed[0], reference[0]);
  EXPECT_EQ(resumed[1], reference[0]);
}

// The same stop, resumed with three workers instead of two: the data is
// split anew, and every sample is still trained exactly once.
TEST_F(WorkerE2eTest, RunResumedWithAnotherWorldSizeTrainsEverySampleOnce) {
  constexpr uint64_t kSteps = 30;
  StartCoordinator(0, kSteps, true, /*min_workers=*/2);
  std::vector<std::unique_ptr<WorkerProcess>> workers;
  for (int i = 0; i < 2; ++i) workers.push_back(StartWorker(i));
  ASSERT_GT(KillEverythingAtStep(workers, 13), 0u);

  StartCoordinator(0, 0);
  workers.clear();
  for (int i = 0; i < 3; ++i) workers.push_back(StartWorker(i));
  auto digests = Drive(workers, [](int, const nlohmann::json&) {});
  ExpectExited(workers, {0, 1, 2});
  ASSERT_EQ(digests.size(), 3u);
  EXPECT_EQ(digests[0], digests[1]);
  EXPECT_EQ(digests[0], digests[2]);
  EXPECT_EQ(world_at_step_.rbegin()->second, 3);
  EXPECT_EQ(world_at_step_.size(), kSteps);
  ExpectLedgerCountsEverySampleOnce(kSteps);
}

// A worker whose gradients turn NaN is caught before its step is applied
// anywhere and leaves; the others redo the step without it and end with
// the same, finite model.
TEST_F(WorkerE2eTest, WorkerWithNaNGradientsIsRemovedWithoutCorruptingTheOthers) {
  constexpr uint64_t kSteps = 30;
  StartCoordinator(0, kSteps);
  std::vector<std::unique_ptr<WorkerProcess>> workers;
  for (int i = 0; i < 2; ++i) workers.push_back(StartWorker(i));
  workers.push_back(StartWorker(2, "", {"--fault-nan-from-step", "12"}));
  double last_loss = 0;
  auto digests = Drive(workers, [&](int, const nlohmann::json& line) {
    if (line.contains("loss")) last_loss = line["loss"];
  });
  ExpectExited(workers, {2}, 2);
  EXPECT_THAT(workers[2]->LogTail(), HasSubstr("this worker's own"));
  ExpectExited(workers, {0, 1});
  ASSERT_EQ(digests.count(0), 1u);
  ASSERT_EQ(digests.count(1), 1u);
  EXPECT_EQ(digests[0], digests[1]);
  EXPECT_TRUE(std::isfinite(last_loss));
  EXPECT_EQ(world_at_step_.rbegin()->second, 2);
  EXPECT_EQ(world_at_step_.size(), kSteps);
  ExpectLedgerCountsEverySampleOnce(kSteps);
}

// Static MPI: two ranks under mpirun train as one group with their gradients
// on MPI; the whole job is SIGKILLed (mpirun and its ranks, and the
// coordinator), started again, and resumes from the last checkpoint: the
// ranks end identical and every sample is trained once.
TEST_F(WorkerE2eTest, MpiBackendTrainsAsOneGroupAndResumesAfterTheJobIsKilled) {
  constexpr uint64_t kSteps = 24;
  StartCoordinator(0, kSteps, true, /*min_workers=*/2);
  std::vector<std::unique_ptr<WorkerProcess>> job;
  job.push_back(StartMpiWorkers(2));
  std::set<std::string> backends;
  uint64_t killed_at = 0;
  Drive(job, [&](int, const nlohmann::json& line) {
    if (line.contains("backend")) backends.insert(line["backend"].get<std::string>());
    if (killed_at == 0 && line.value("step", uint64_t{0}) >= 13) {
      killed_at = line["step"];
      coordinator_->Signal(SIGKILL);
      KillProcessesOfThisTest();
    }
  });
  ASSERT_GT(killed_at, 0u) << job[0]->LogTail();
  EXPECT_EQ(backends, std::set<std::string>{"mpi"});

  StartCoordinator(0, 0);  // the same directory: a restart
  job.clear();
  job.push_back(StartMpiWorkers(2));
  std::vector<std::string> digests;
  Drive(job, [&](int, const nlohmann::json& line) {
    if (line.contains("digest")) digests.push_back(line["digest"]);
  });
  ExpectExited(job, {0});
  ASSERT_EQ(digests.size(), 2u) << job[0]->LogTail();
  EXPECT_EQ(digests[0], digests[1]);
  EXPECT_EQ(world_at_step_.rbegin()->second, 2);
  ExpectLedgerCountsEverySampleOnce(kSteps);
}

// Without a GPU, --backend nccl fails at once, naming why, instead of
// retrying generation after generation.
TEST_F(WorkerE2eTest, NcclBackendWithoutAGpuExitsNamingWhy) {
  if (CudaDeviceCount() > 0) GTEST_SKIP() << "a GPU is present: " << DescribeGpus();
  StartCoordinator(0, 4);
  std::vector<std::unique_ptr<WorkerProcess>> workers;
  workers.push_back(StartWorker(0, "", {"--backend", "nccl", "--device", "cuda:0"}));
  Drive(
      workers, [](int, const nlohmann::json&) {}, absl::Seconds(60));
  ExpectExited(workers, {0}, 2);
  EXPECT_THAT(workers[0]->LogTail(),
              BuiltWithCuda() ? HasSubstr("needs GPU 0") : HasSubstr("has no CUDA"));
  // And --device alone is refused: the model computes on the CPU.
  workers.push_back(StartWorker(1, "", {"--device", "cuda:0"}));
  Drive(
      workers, [](int, const nlohmann::json&) {}, absl::Seconds(30));
  ExpectExited(workers, {1}, 1);
  EXPECT_THAT(workers[1]->LogTail(), HasSubstr("picks the GPU of --backend nccl"));
}

// DiLoCo through the runtime: three workers exchange only at round ends
// (every 4 inner steps); one is SIGKILLed mid-run. The survivors roll back
// to the last round checkpoint, finish every round, end with the same outer
// model, and the ledger counts every sample of the surviving rounds once.
TEST_F(WorkerE2eTest, DilocoRunSurvivesAKilledWorkerWithEverySampleOnce) {
  diloco_inner_steps_ = 4;
  constexpr uint64_t kRounds = 10;
  StartCoordinator(0, kRounds * 4, true, /*min_workers=*/2);
  std::vector<std::unique_ptr<WorkerProcess>> workers;
  for (int i = 0; i < 3; ++i) workers.push_back(StartWorker(i));
  bool killed = false;
  uint64_t rounds_of_three = 0;
  std::map<int, std::string> shared;
  Drive(workers, [&](int i, const nlohmann::json& line) {
    if (line.contains("shared_digest")) shared[i] = line["shared_digest"];
    if (line.value("round_ended", false) && line["world"] == 3) rounds_of_three = line["rounds"];
    // Mid-round, once the group of three has ended round 4.
    if (!killed && rounds_of_three >= 4 && !line.value("round_ended", true)) {
      workers[2]->Kill();
      killed = true;
    }
  });
  ASSERT_TRUE(killed);
  ExpectExited(workers, {0, 1});
  ASSERT_EQ(shared.count(0), 1u);
  ASSERT_EQ(shared.count(1), 1u);
  EXPECT_EQ(shared[0], shared[1]);
  EXPECT_EQ(world_at_step_.size(), kRounds);
  EXPECT_EQ(world_at_step_.rbegin()->second, 2);
  ExpectLedgerCountsEverySampleOnce(kRounds);
}

// DiLoCo across an epoch's end: a worker whose slot runs dry ends its rounds
// early and takes part in the exchanges with nothing, the group moves to the
// next epoch together, and every sample is counted once.
TEST_F(WorkerE2eTest, DilocoRunCrossesAnEpochWithEverySampleOnce) {
  diloco_inner_steps_ = 8;
  // Two workers read 8 sequences per inner step between them.
  const uint64_t rounds = (EpochSequences() * 3 / 2) / (8 * diloco_inner_steps_) + 1;
  StartCoordinator(0, rounds * diloco_inner_steps_, true, /*min_workers=*/2);
  std::vector<std::unique_ptr<WorkerProcess>> workers;
  for (int i = 0; i < 2; ++i) workers.push_back(StartWorker(i));
  std::map<int, std::string> shared;
  Drive(workers, [&](int i, const nlohmann::json& line) {
    if (line.contains("shared_digest")) shared[i] = line["shared_digest"];
  });
  ExpectExited(workers, {0, 1});
  ASSERT_EQ(shared.size(), 2u);
  EXPECT_EQ(shared[0], shared[1]);
  EXPECT_EQ(world_at_step_.size(), rounds);
  EXPECT_GT(TrainedSequences(), EpochSequences());
  ExpectLedgerCountsEverySampleOnce(rounds);
}

// DiLoCo rounds bounded by time, not steps: each worker ends its round when
// the limit passes, after however many inner steps it managed (they differ),
// and the exchanges still pair up; a worker is SIGKILLed and the survivors
// finish with the same outer model and every sample counted once.
TEST_F(WorkerE2eTest, DilocoRoundsEndedByTimeStillPairUpAndCountEverySampleOnce) {
  diloco_inner_steps_ = 1000;
  diloco_time_limit_ms_ = 150;
  constexpr uint64_t kRounds = 12;
  StartCoordinator(0, kRounds * 1000, true, /*min_workers=*/2);
  std::vector<std::unique_ptr<WorkerProcess>> workers;
  for (int i = 0; i < 3; ++i) workers.push_back(StartWorker(i));
  std::map<int, uint64_t> inner_steps;  // per worker, at its last line
  std::map<int, std::string> shared;
  bool killed = false;
  Drive(workers, [&](int i, const nlohmann::json& line) {
    if (line.contains("shared_digest")) shared[i] = line["shared_digest"];
    if (line.contains("step") && !line.contains("done")) inner_steps[i] = line["step"];
    if (!killed && line.value("rounds", uint64_t{0}) >= 5 && line["world"] == 3) {
      workers[2]->Kill();
      killed = true;
    }
  });
  ASSERT_TRUE(killed);
  ExpectExited(workers, {0, 1});
  ASSERT_EQ(shared.size(), 2u);
  EXPECT_EQ(shared[0], shared[1]);
  EXPECT_LT(inner_steps[0], kRounds * 1000);  // rounds ended by time
  EXPECT_EQ(world_at_step_.size(), kRounds);
  ExpectLedgerCountsEverySampleOnce(kRounds);
}

// On a machine with two GPUs (tests/gpu/run.sh): two workers exchange their
// gradients with NCCL, one GPU each, and end identical with every sample
// counted once.
TEST_F(WorkerE2eTest, NcclBackendTrainsTwoWorkersOnTwoGpus) {
  if (CudaDeviceCount() < 2) GTEST_SKIP() << "needs 2 GPUs; " << DescribeGpus();
  constexpr uint64_t kSteps = 12;
  StartCoordinator(0, kSteps, true, /*min_workers=*/2);
  std::vector<std::unique_ptr<WorkerProcess>> workers;
  for (int i = 0; i < 2; ++i) {
    workers.push_back(
        StartWorker(i, "", {"--backend", "nccl", "--device", absl::StrCat("cuda:", i)}));
  }
  auto digests = Drive(workers, [](int, const nlohmann::json&) {});
  ExpectExited(workers, {0, 1});
  ASSERT_EQ(digests.size(), 2u);
  EXPECT_EQ(digests[0], digests[1]);
  ExpectLedgerCountsEverySampleOnce(kSteps);
}

TEST_F(WorkerE2eTest, WorkerWithAWrongTokenIsRefused) {
  StartCoordinator(0, 4, /*open=*/false);
  auto other = admin_->CreateToken(admin_token_, "e2e", absl::Hours(1));
  ASSERT_TRUE(other.ok()) << other.status();
  std::string forged = *other;
  forged.back() = forged.back() == '0' ? '1' : '0';
  std::vector<std::unique_ptr<WorkerProcess>> workers;
  workers.push_back(StartWorker(0, forged));
  Drive(
      workers, [](int, const nlohmann::json&) {}, absl::Seconds(60));
  ExpectExited(workers, {0}, 2);
  EXPECT_THAT(workers[0]->LogTail(), HasSubstr("UNAUTHENTICATED"));
}

}  // namespace
}  // namespace potluck
