// `potluck local`: an embedded coordinator (gRPC on loopback) and N worker
// processes training the default small GPT on the built-in corpus, with a
// progress line, a generated sample at the end, and resume on a rerun.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"

#include "cli/internal/child_process.h"
#include "cli/worker_command.h"
#include "common/status.h"
#ifdef POTLUCK_WITH_TORCH
#include "coordinator/coordinator.h"
#include "coordinator/server.h"
#include "data/dataset.h"
#include "worker/compute_threads.h"
#include "worker/model_io.h"
#include "worker/sampling.h"
#include "worker/train_bench.h"
#endif

namespace potluck {

namespace {

struct LocalArgs {
  // Two workers with one thread each use a 2-core machine best (one
  // process with two threads runs this small model ~2x slower).
  int workers = 2;
  uint64_t steps = 300;
  std::string dir = "potluck-local";
  std::string prompt = "The ";
};

#ifdef POTLUCK_WITH_TORCH

constexpr char kJobId[] = "local";
std::atomic<bool> interrupted{false};

void OnInterrupt(int) { interrupted = true; }

using cli_internal::ChildProcess;

// Starts `potluck worker` for this job; its progress lines come back on a pipe.
absl::StatusOr<ChildProcess> SpawnWorker(int index, int port, const LocalArgs& args, int threads) {
  const std::string state_dir = absl::StrCat(args.dir, "/worker-", index);
  std::filesystem::create_directories(state_dir);
  return cli_internal::SpawnSelf(
      {"worker", "--coordinator", absl::StrCat("127.0.0.1:", port), "--job", kJobId, "--state-dir",
       state_dir, "--threads", std::to_string(threads), "--steps", std::to_string(args.steps),
       "--progress", "json"},
      state_dir + "/worker.log");
}

// What the progress line shows: rank 0's view of the group.
struct Progress {
  uint64_t step = 0, max_steps = 0, first_step = 0;
  double loss = 0, first_loss = 0;
  double validation_loss = -1;  // < 0: none yet
  int world = 0;
  std::map<int, double> tokens_per_s;  // by rank
  absl::Time started = absl::Now();
  absl::Time first_step_at;
};

std::string ProgressLine(const Progress& p) {
  double tokens = 0;
  for (const auto& [rank, t] : p.tokens_per_s) tokens += t;
  std::string eta = "--";
  if (p.step > p.first_step) {
    const double per_step =
        absl::ToDoubleSeconds(absl::Now() - p.first_step_at) / double(p.step - p.first_step);
    eta = absl::StrFormat("%.0fs", per_step * double(p.max_steps - p.step));
  }
  const std::string validation =
      p.validation_loss < 0 ? "" : absl::StrFormat("  (validation %.3f)", p.validation_loss);
  return absl::StrFormat("step %4d/%d  loss %.3f%s  %6.0f tokens/s  %d worker(s)  ETA %s", p.step,
                         p.max_steps, p.loss, validation, tokens, p.world, eta);
}

absl::StatusOr<Dataset> LocalDataset(const std::string& dir) {
  auto existing = LoadDataset(dir);
  if (existing.ok()) return existing;
  PrepareOptions prepare;
  prepare.out_dir = dir;
  prepare.shard_tokens = 16384;
  return PrepareDataset(prepare);
}

int RunLocal(LocalArgs args) {
  auto fail = [](const absl::Status& status) {
    std::cerr << "potluck local: " << status << "\n";
    return 2;
  };
  std::error_code error;
  std::filesystem::create_directories(args.dir, error);
  args.dir = std::filesystem::absolute(args.dir).string();
  auto dataset = LocalDataset(args.dir + "/data");
  if (!dataset.ok()) return fail(dataset.status());

  CoordinatorOptions options;
  options.data_dir = args.dir + "/coordinator";
  options.lease = absl::Seconds(3);
  options.rendezvous_timeout = absl::Seconds(30);
  options.restart_grace = absl::Seconds(10);
  auto coordinator = Coordinator::Open(options);
  if (!coordinator.ok()) return fail(coordinator.status());
  auto existing = (*coordinator)->GetJob(kJobId);
  if (!existing.ok()) {
    v1::JobSpec job = DefaultLocalJob();
    job.set_job_id(kJobId);
    job.mutable_dataset()->set_manifest(dataset->dir);
    job.set_max_steps(args.steps);
    job.mutable_dataset()->set_epochs(1000);  // --steps decides when it ends
    job.mutable_access()->set_open(true);     // loopback only: nobody else can reach it
    auto admin = (*coordinator)->CreateAdminToken(absl::Minutes(5));
    if (!admin.ok()) return fail(admin.status());
    auto submitted = (*coordinator)->SubmitJob(*admin, job);
    if (!submitted.ok()) return fail(submitted.status());
    std::cout << "potluck local: training a " << job.model().gpt().layers() << "-layer GPT ("
              << job.model().gpt().width() << " wide) on " << dataset->train_tokens()
              << " tokens of the built-in corpus with " << args.workers << " workers; state in "
              << args.dir << "\n";
  } else {
    if (existing->spec().max_steps() < args.steps) {
      // Run again with more steps: the job (finished at its old last step,
      // perhaps) trains on to the new one.
      auto admin = (*coordinator)->CreateAdminToken(absl::Minutes(5));
      if (!admin.ok()) return fail(admin.status());
      auto extended = (*coordinator)->ExtendJob(*admin, kJobId, args.steps);
      if (!extended.ok()) return fail(extended.status());
    }
    std::cout << "potluck local: resuming from step " << existing->committed_step() << " in "
              << args.dir << "\n";
  }
  CoordinatorServerOptions server_options;
  server_options.listen = "127.0.0.1:0";
  auto server = CoordinatorServer::Start(coordinator->get(), server_options);
  if (!server.ok()) return fail(server.status());

  struct sigaction action {};
  action.sa_handler = OnInterrupt;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);

  const int threads = ThreadsPerWorker(args.workers);
  std::vector<ChildProcess> children;
  for (int i = 0; i < args.workers; ++i) {
    auto child = SpawnWorker(i, (*server)->port(), args, threads);
    if (!child.ok()) return fail(child.status());
    children.push_back(std::move(*child));
  }

  const bool tty = isatty(STDOUT_FILENO);
  Progress progress;
  progress.max_steps = args.steps;
  uint64_t last_printed = 0;
  bool terminating = false;
  int running = args.workers;
  while (running > 0) {
    if (interrupted && !terminating) {
      terminating = true;
      for (ChildProcess& c : children) {
        if (c.running) kill(c.pid, SIGTERM);
      }
    }
    std::vector<pollfd> fds;
    for (ChildProcess& c : children) fds.push_back({c.out, POLLIN, 0});
    poll(fds.data(), fds.size(), 200);
    for (ChildProcess& c : children) {
      for (const nlohmann::json& j : c.ReadLines()) {
        if (j.contains("event") || j.contains("done")) continue;
        const int rank = j.value("rank", 0);
        progress.tokens_per_s[rank] = j.value("tokens_per_s", 0.0);
        if (rank != 0) continue;
        progress.step = j.value("step", uint64_t{0});
        progress.loss = j.value("loss", 0.0);
        progress.world = j.value("world", 0);
        if (j.contains("validation_loss")) progress.validation_loss = j["validation_loss"];
        if (progress.first_step == 0) {
          progress.first_step = progress.step;
          progress.first_loss = progress.loss;
          progress.first_step_at = absl::Now();
        }
        for (auto it = progress.tokens_per_s.begin(); it != progress.tokens_per_s.end();) {
          it = it->first >= progress.world ? progress.tokens_per_s.erase(it) : std::next(it);
        }
        if (tty) {
          std::cout << "\r\033[K" << ProgressLine(progress) << std::flush;
        } else if (progress.step == progress.first_step || progress.step >= last_printed + 10 ||
                   progress.step == progress.max_steps) {
          std::cout << ProgressLine(progress) << "\n" << std::flush;
          last_printed = progress.step;
        }
      }
    }
    for (ChildProcess& c : children) {
      if (!c.running) continue;
      if (c.Reap()) {
        const int status = c.status;
        --running;
        if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0) && !terminating) {
          std::cerr << (tty ? "\n" : "") << "potluck local: worker " << c.pid << " "
                    << (WIFSIGNALED(status)
                            ? absl::StrCat("was killed (signal ", WTERMSIG(status), ")")
                            : absl::StrCat("exited with ", WEXITSTATUS(status)))
                    << "; see " << c.log << (running > 0 ? "; the others go on" : "") << "\n";
        }
      }
    }
  }
  if (tty) std::cout << "\n";
  (*server)->Shutdown(absl::Seconds(1));
  if (terminating) {
    std::cout << "potluck local: interrupted; run the same command again to resume from the last "
                 "checkpoint\n";
    return 130;
  }
  auto job = (*coordinator)->GetJob(kJobId);
  if (!job.ok()) return fail(job.status());
  if (job->committed_step() < args.steps) {
    std::cerr << "potluck local: the workers stopped at committed step " << job->committed_step()
              << " of " << args.steps << "; see the logs in " << args.dir << "/worker-*\n";
    return 2;
  }
  if (progress.first_step > 0) {
    std::cout << absl::StrFormat("loss %.3f at step %d -> %.3f at step %d\n", progress.first_loss,
                                 progress.first_step, progress.loss, progress.step);
  }
  auto reader = (*coordinator)->checkpoints()->OpenLatest(kJobId);
  if (!reader.ok()) return fail(reader.status());
  ConfigureComputeThreads(ThreadsPerWorker(1)).IgnoreError();
  auto model = LoadTrainedModel(reader->get());
  if (!model.ok()) return fail(model.status());
  SampleOptions sample;
  sample.max_new_tokens = 200;
  auto text = SampleText(model->get(), args.prompt, sample);
  if (!text.ok()) return fail(text.status());
  std::cout << "sample from step " << (*reader)->info().step << ":\n"
            << args.prompt << *text << "\n";
  return 0;
}
#else
int RunLocal(const LocalArgs&) {
  std::cerr << "potluck local: this build has no libtorch (POTLUCK_WITH_TORCH=OFF)\n";
  return 3;
}
#endif

}  // namespace

CLI::App* AddLocalCommand(CLI::App* app, int* exit_code) {
  auto args = std::make_shared<LocalArgs>();
  CLI::App* local = app->add_subcommand(
      "local", "Train a small GPT on this machine: embedded coordinator + N worker processes");
  local->add_option("--workers", args->workers, "Worker processes to start")
      ->check(CLI::Range(1, 64));
  local->add_option("--steps", args->steps, "Optimizer steps")->check(CLI::Range(1, 10000000));
  local->add_option("--dir", args->dir, "State directory; run again with the same one to resume");
  local->add_option("--prompt", args->prompt, "Text the final sample continues");
  local->callback([args, exit_code] { *exit_code = RunLocal(*args); });
  return local;
}

}  // namespace potluck
