// `potluck bench recovery`: how long a group takes to get past a dead worker,
// and how long a joiner takes to become productive. An embedded coordinator
// (gRPC on loopback) and N `potluck worker` processes train the default GPT;
// each round SIGKILLs one worker at a random moment (seeded), then starts it
// again (same state directory: a volunteer coming back). Times come from the
// workers' own JSON lines (wall clock, one machine):
//   detection: kill -> the first survivor hears of the next generation
//   regroup:   that -> the last survivor has formed it (connected, state agreed)
//   recovery:  kill -> the first step of the new generation is applied
//   joiner:    process start -> its first applied step
#include "cli/recovery_bench.h"

#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <map>
#include <random>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"

#include "cli/internal/child_process.h"
#include "common/status.h"
#ifdef POTLUCK_WITH_TORCH
#include "coordinator/coordinator.h"
#include "coordinator/server.h"
#include "data/dataset.h"
#include "worker/train_bench.h"
#endif

namespace potluck {

#ifdef POTLUCK_WITH_TORCH
namespace {

using cli_internal::ChildProcess;

struct Round {
  double detection_s = 0, regroup_s = 0, recovery_s = 0, joiner_s = 0;
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

class RecoveryBench {
 public:
  explicit RecoveryBench(const RecoveryBenchArgs& args) : args_(args), rng_(args.seed) {}

  absl::StatusOr<std::vector<Round>> Run() {
    char pattern[] = "/tmp/potluck-bench-recovery-XXXXXX";
    if (mkdtemp(pattern) == nullptr) return ErrnoStatus(errno, "mkdtemp");
    dir_ = pattern;
    PrepareOptions prepare;
    prepare.out_dir = dir_ + "/data";
    prepare.shard_tokens = 16384;
    ASSIGN_OR_RETURN(Dataset dataset, PrepareDataset(prepare));
    CoordinatorOptions options;
    options.data_dir = dir_ + "/coordinator";
    options.lease = absl::Seconds(args_.lease_seconds);
    ASSIGN_OR_RETURN(coordinator_, Coordinator::Open(options));
    v1::JobSpec job = DefaultLocalJob();
    job.set_job_id("recovery");
    job.mutable_dataset()->set_manifest(dataset.dir);
    job.mutable_dataset()->set_epochs(1000);
    job.set_max_steps(1000000);
    job.mutable_checkpoint()->set_every_steps(10);
    job.mutable_access()->set_open(true);
    ASSIGN_OR_RETURN(std::string admin, coordinator_->CreateAdminToken(absl::Minutes(5)));
    RETURN_IF_ERROR(coordinator_->SubmitJob(admin, job).status());
    CoordinatorServerOptions server_options;
    ASSIGN_OR_RETURN(server_, CoordinatorServer::Start(coordinator_.get(), server_options));

    for (int i = 0; i < args_.workers; ++i) RETURN_IF_ERROR(Start(i));
    std::vector<Round> rounds;
    for (int r = 0; r < args_.rounds; ++r) {
      ASSIGN_OR_RETURN(Round round, OneRound());
      if (!args_.json) {
        std::cout << absl::StrFormat(
                         "  round %d: detection %.2f s, regroup %.2f s, first step after the "
                         "kill %.2f s, joiner productive %.2f s",
                         r + 1, round.detection_s, round.regroup_s, round.recovery_s,
                         round.joiner_s)
                  << std::endl;
      }
      rounds.push_back(round);
    }
    for (ChildProcess& c : workers_) {
      if (c.running) kill(c.pid, SIGKILL);
      waitpid(c.pid, nullptr, 0);
    }
    server_->Shutdown(absl::Seconds(1));
    std::filesystem::remove_all(dir_);
    return rounds;
  }

 private:
  absl::Status Start(int index) {
    const std::string state = absl::StrCat(dir_, "/worker-", index);
    std::filesystem::create_directories(state);
    ASSIGN_OR_RETURN(
        ChildProcess child,
        cli_internal::SpawnSelf(
            {"worker", "--coordinator", absl::StrCat("127.0.0.1:", server_->port()), "--job",
             "recovery", "--state-dir", state, "--threads", "1", "--progress", "json"},
            state + "/worker.log"));
    if (index < static_cast<int>(workers_.size())) {
      workers_[index] = std::move(child);
    } else {
      workers_.push_back(std::move(child));
    }
    return absl::OkStatus();
  }

  // Reads every worker's lines for up to `wait`, handing each to `on_line`
  // until it returns true.
  absl::Status Watch(absl::Duration wait,
                     const std::function<bool(int, const nlohmann::json&)>& on_line) {
    const absl::Time deadline = absl::Now() + wait;
    while (absl::Now() < deadline) {
      std::vector<pollfd> fds;
      for (ChildProcess& c : workers_) fds.push_back({c.out, POLLIN, 0});
      poll(fds.data(), fds.size(), 50);
      for (size_t i = 0; i < workers_.size(); ++i) {
        for (const nlohmann::json& line : workers_[i].ReadLines()) {
          if (on_line(static_cast<int>(i), line)) return absl::OkStatus();
        }
      }
    }
    return absl::DeadlineExceededError(
        absl::StrCat("no progress within ", absl::FormatDuration(wait), "; logs in ", dir_));
  }

  absl::StatusOr<Round> OneRound() {
    // Wait for a group of everyone that has trained a few steps.
    uint64_t generation = 0;
    int steps_in_full_group = 0;
    RETURN_IF_ERROR(Watch(absl::Seconds(120), [&](int, const nlohmann::json& line) {
      if (line.contains("step") && line.value("world", 0) == args_.workers && line["rank"] == 0) {
        generation = line["generation"];
        return ++steps_in_full_group >= 5;
      }
      return false;
    }));
    std::uniform_int_distribution<int> victim_pick(0, args_.workers - 1);
    std::uniform_int_distribution<int> delay_ms(0, 1500);
    absl::SleepFor(absl::Milliseconds(delay_ms(rng_)));
    const int victim = victim_pick(rng_);
    const absl::Time killed = absl::Now();
    kill(workers_[victim].pid, SIGKILL);
    waitpid(workers_[victim].pid, nullptr, 0);
    workers_[victim].running = false;

    // The survivors' next generation, and its first step.
    int64_t heard_ms = INT64_MAX, formed_ms = 0, first_step_ms = 0;
    int formed = 0;
    uint64_t next = 0;
    RETURN_IF_ERROR(Watch(absl::Seconds(120), [&](int who, const nlohmann::json& line) {
      if (who == victim) return false;
      const uint64_t g = line.value("generation", uint64_t{0});
      if (g <= generation) return false;
      if (line.value("event", "") == "group") {
        if (next == 0) next = g;
        if (g != next) return false;
        heard_ms = std::min<int64_t>(heard_ms, line["heard_unix_ms"]);
        formed_ms = std::max<int64_t>(formed_ms, line["formed_unix_ms"]);
        ++formed;
        return false;
      }
      if (line.contains("step") && formed == args_.workers - 1) {
        first_step_ms = line["unix_ms"];
        return true;
      }
      return false;
    }));
    Round round;
    const int64_t killed_ms = absl::ToUnixMillis(killed);
    round.detection_s = (heard_ms - killed_ms) / 1e3;
    round.regroup_s = (formed_ms - heard_ms) / 1e3;
    round.recovery_s = (first_step_ms - killed_ms) / 1e3;

    // The victim comes back as a joiner.
    RETURN_IF_ERROR(Start(victim));
    const int64_t started_ms = absl::ToUnixMillis(workers_[victim].started);
    RETURN_IF_ERROR(Watch(absl::Seconds(120), [&](int who, const nlohmann::json& line) {
      if (who != victim || !line.contains("step")) return false;
      round.joiner_s = (static_cast<int64_t>(line["unix_ms"]) - started_ms) / 1e3;
      return true;
    }));
    return round;
  }

  const RecoveryBenchArgs args_;
  std::mt19937 rng_;
  std::string dir_;
  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<CoordinatorServer> server_;
  std::vector<ChildProcess> workers_;
};

}  // namespace

int RunRecoveryBench(const RecoveryBenchArgs& args) {
  if (!args.json) {
    std::cout << absl::StrFormat(
                     "recovery benchmark: %d workers (default GPT, 1 thread each), lease %d s, "
                     "%d rounds, seed %d",
                     args.workers, args.lease_seconds, args.rounds, args.seed)
              << std::endl;
  }
  RecoveryBench bench(args);
  auto rounds = bench.Run();
  if (!rounds.ok()) {
    std::cerr << "potluck bench recovery: " << rounds.status() << "\n";
    return 2;
  }
  std::vector<double> detection, regroup, recovery, joiner;
  for (const Round& r : *rounds) {
    detection.push_back(r.detection_s);
    regroup.push_back(r.regroup_s);
    recovery.push_back(r.recovery_s);
    joiner.push_back(r.joiner_s);
  }
  nlohmann::json j = {{"workers", args.workers},
                      {"lease_s", args.lease_seconds},
                      {"rounds", args.rounds},
                      {"seed", args.seed},
                      {"detection_s", Median(detection)},
                      {"regroup_s", Median(regroup)},
                      {"recovery_s", Median(recovery)},
                      {"joiner_productive_s", Median(joiner)}};
  if (args.json) {
    std::cout << j.dump() << "\n";
  } else {
    std::cout << absl::StrFormat(
                     "medians: detection %.2f s (target <= 3), regroup %.2f s (target <= 1), "
                     "first step after the kill %.2f s, joiner productive %.2f s (target <= 5)",
                     Median(detection), Median(regroup), Median(recovery), Median(joiner))
              << "\n"
              << j.dump() << "\n";
  }
  return 0;
}
#else
int RunRecoveryBench(const RecoveryBenchArgs&) {
  std::cerr << "potluck bench recovery: this build has no libtorch (POTLUCK_WITH_TORCH=OFF)\n";
  return 3;
}
#endif

}  // namespace potluck
