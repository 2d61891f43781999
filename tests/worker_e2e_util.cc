#include "tests/worker_e2e_util.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

#include "coordinator/coordinator.h"
#include "coordinator/tls_test_util.h"

namespace potluck::testing_util {
namespace {

// The job's shape: tokens per sequence, sequences per micro and global batch.
constexpr uint32_t kContext = 64;
constexpr int64_t kMicro = 4;
constexpr int64_t kGlobal = 8;

}  // namespace

WorkerProcess::~WorkerProcess() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
}

void WorkerProcess::Start(const std::vector<std::string>& args, const std::string& log,
                          const std::string& program) {
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

std::vector<nlohmann::json> WorkerProcess::Poll() {
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

bool WorkerProcess::Exited(int* code) {
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

void WorkerProcess::Kill() { Signal(SIGKILL); }

void WorkerProcess::Signal(int signal_number) {
  if (pid_ > 0) kill(pid_, signal_number);
}

std::string WorkerProcess::LogTail() const {
  std::ifstream in(log_);
  std::stringstream s;
  s << in.rdbuf();
  const std::string all = s.str();
  return all.size() > 2000 ? all.substr(all.size() - 2000) : all;
}

void WorkerE2eFixture::SetUp() {
  dir_ =
      std::filesystem::temp_directory_path() /
      absl::StrCat("potluck-e2e-", ::testing::UnitTest::GetInstance()->current_test_info()->name(),
                   "-", getpid());
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

void WorkerE2eFixture::TearDown() {
  if (getenv("POTLUCK_KEEP_TEST_DIR") == nullptr) std::filesystem::remove_all(dir_);
}

void WorkerE2eFixture::StartCoordinator(int port, uint64_t max_steps, bool open,
                                        uint32_t min_workers) {
  std::string error;
  for (int attempt = 0; attempt < 5; ++attempt) {
    coordinator_ = std::make_unique<CoordinatorProcess>();
    coordinator_->set_listen(absl::StrCat("127.0.0.1:", port));
    std::vector<std::string> flags = {"--lease-seconds", "2"};
    if (!tls_cert_.empty()) {
      flags.insert(flags.end(), {"--tls-cert", tls_cert_, "--tls-key", tls_cert_ + ".key"});
    }
    error = coordinator_->Start(POTLUCK_BINARY, CoordinatorDir(), flags);
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
  GrpcClientOptions options;
  options.admin_token = admin;  // for the admin's reads (ListWorkers)
  options.tls_root_cert_file = tls_cert_;
  auto client = NewGrpcAdmin(address_, options);
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
    job.mutable_diloco()->set_codec(diloco_codec_);
    job.mutable_checkpoint()->set_every_steps(3);  // rounds
  }
  auto submitted = admin_->SubmitJob(admin, job, "submit-1");
  ASSERT_TRUE(submitted.ok()) << submitted.status();
}

std::string WorkerE2eFixture::MakeTlsCertificate(const std::string& name) {
  const std::string cert = absl::StrCat(dir_, "/", name, ".pem");
  EXPECT_EQ(MakeSelfSignedCertificate(cert, cert + ".key"), "");
  return cert;
}

std::unique_ptr<WorkerProcess> WorkerE2eFixture::StartWorker(
    int index, const std::string& token, const std::vector<std::string>& extra) {
  auto worker = std::make_unique<WorkerProcess>();
  const std::string state = absl::StrCat(dir_, "/worker-", index, run_);
  std::vector<std::string> args = {"potluck",   "worker", "--coordinator", address_,
                                   "--job",     "e2e",    "--state-dir",   state,
                                   "--threads", "1",      "--progress",    "json"};
  if (!token.empty()) {
    args.push_back("--token");
    args.push_back(token);
  }
  if (!tls_cert_.empty()) {
    args.push_back("--tls-ca");
    args.push_back(tls_cert_);
  }
  args.insert(args.end(), extra.begin(), extra.end());
  worker->Start(args, state + ".log");
  return worker;
}

void WorkerE2eFixture::Record(const nlohmann::json& line) {
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

uint64_t WorkerE2eFixture::TrainedSequences() const {
  uint64_t sequences = 0;
  for (const auto& [step, samples] : samples_at_step_) sequences += samples;
  return sequences;
}

uint64_t WorkerE2eFixture::CommittedSequences(uint64_t* committed_step) {
  CoordinatorOptions options;
  options.data_dir = CopyForInspection(CoordinatorDir());
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

uint64_t WorkerE2eFixture::EpochSequences() const {
  uint64_t sequences = 0;
  for (const ShardInfo& shard : dataset_.train) sequences += (shard.tokens - 1) / kContext;
  return sequences;
}

std::map<int, std::string> WorkerE2eFixture::Drive(
    std::vector<std::unique_ptr<WorkerProcess>>& workers,
    const std::function<void(int, const nlohmann::json&)>& on_line, absl::Duration timeout) {
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

void WorkerE2eFixture::ExpectExited(const std::vector<std::unique_ptr<WorkerProcess>>& workers,
                                    std::initializer_list<int> indices, int expected) {
  for (int i : indices) {
    int code;
    ASSERT_TRUE(workers[i]->Exited(&code)) << "worker " << i;
    EXPECT_EQ(code, expected) << "worker " << i << ":\n" << workers[i]->LogTail();
  }
}

void WorkerE2eFixture::ExpectLedgerCountsEverySampleOnce(uint64_t steps) {
  coordinator_->Signal(SIGTERM);
  uint64_t committed_step = 0;
  EXPECT_EQ(CommittedSequences(&committed_step), TrainedSequences());
  EXPECT_EQ(committed_step, steps);
}

uint64_t WorkerE2eFixture::KillEverythingAtStep(
    std::vector<std::unique_ptr<WorkerProcess>>& workers, uint64_t step) {
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

std::unique_ptr<WorkerProcess> WorkerE2eFixture::StartMpiWorkers(int ranks) {
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

std::vector<pid_t> WorkerE2eFixture::ProcessesOfThisTest(bool ranks_only) const {
  std::vector<pid_t> pids;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(entry.path() / "cmdline");
    std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (cmdline.find(dir_) == std::string::npos) continue;
    // NUL-separated arguments: a rank runs `potluck worker`.
    if (ranks_only && !cmdline.starts_with(std::string(POTLUCK_BINARY) + '\0' + "worker" + '\0')) {
      continue;
    }
    pids.push_back(std::stoi(name));
  }
  return pids;
}

std::thread WorkerE2eFixture::ResumeOnceListed(size_t workers, std::atomic<bool>* resumed) {
  return std::thread([this, workers, resumed] {
    const absl::Time give_up = absl::Now() + absl::Seconds(60);
    while (absl::Now() < give_up) {
      auto listed = admin_->ListWorkers("e2e");
      if (listed.ok() && listed->size() >= workers) break;
      absl::SleepFor(absl::Milliseconds(50));
    }
    *resumed = admin_->ResumeJob(admin_token_, "e2e").ok();
  });
}

void WorkerE2eFixture::KillProcessesOfThisTest() {
  for (pid_t pid : ProcessesOfThisTest(/*ranks_only=*/false)) kill(pid, SIGKILL);
}

}  // namespace potluck::testing_util
