#include "cli/bench_command.h"

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

#include "checkpoint/checkpoint_bench.h"
#include "cli/recovery_bench.h"
#include "collectives/allreduce_bench.h"
#include "coordinator/coordinator_bench.h"

#ifdef POTLUCK_WITH_TORCH
#include "worker/torch_baseline.h"
#include "worker/train_bench.h"
#endif

namespace potluck {

namespace {

struct CheckpointBenchArgs {
  uint64_t bytes = uint64_t{1} << 30;
  int rounds = 3;
  std::string dir;
  bool json = false;
};

int RunCheckpoint(const CheckpointBenchArgs& args) {
  CheckpointBenchOptions options;
  options.total_bytes = args.bytes;
  options.rounds = args.rounds;
  std::string parent = args.dir;
  if (parent.empty()) parent = std::filesystem::temp_directory_path().string();
  std::string pattern = parent + "/potluck-bench-XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) {
    std::cerr << "potluck bench checkpoint: cannot create a directory in " << parent << "\n";
    return 2;
  }
  options.dir = pattern;
#ifdef POTLUCK_WITH_TORCH
  options.other = TorchSaveLoadSeconds;
  options.other_name = "torch";
#endif
  if (!args.json) {
    std::cout << absl::StrFormat("checkpoint benchmark: %.2f GiB in %s, %d rounds (medians)\n",
                                 args.bytes / double(1 << 30), options.dir, args.rounds);
  }
  const absl::StatusOr<CheckpointBenchResult> result = RunCheckpointBench(options);
  std::filesystem::remove_all(options.dir);
  if (!result.ok()) {
    std::cerr << "potluck bench checkpoint: " << result.status() << "\n";
    return 2;
  }
  const double gb = result->bytes / 1e9;
  const CheckpointBenchTimes& m = result->median;
  nlohmann::json out = {
      {"bytes", result->bytes},
      {"tensors", result->tensors},
      {"rounds", args.rounds},
      {"caches", result->caches},
      {"save_gbps", gb / m.save_s},
      {"load_gbps", gb / m.load_s},
      {"raw_write_gbps", gb / m.raw_write_s},
      {"raw_read_gbps", gb / m.raw_read_s},
      {"save_vs_raw", m.raw_write_s / m.save_s},
      {"load_vs_raw", m.raw_read_s / m.load_s},
      {"async_stall_s", m.async_stall_s},
      {"async_stall_vs_save", m.async_stall_s / m.save_s},
      {"async_snapshot_s", m.async_snapshot_s},
      {"async_snapshot_vs_save", m.async_snapshot_s / m.save_s},
  };
  if (result->has_other) {
    out["torch_save_gbps"] = gb / m.other_save_s;
    out["torch_load_gbps"] = gb / m.other_load_s;
    out["save_vs_torch"] = m.other_save_s / m.save_s;
    out["load_vs_torch"] = m.other_load_s / m.load_s;
  }
  if (!args.json) {
    std::cout << "  caches: " << result->caches << ", before every timed read of every contender\n";
    for (size_t i = 0; i < result->rounds.size(); ++i) {
      const CheckpointBenchTimes& r = result->rounds[i];
      std::cout << absl::StrFormat("  round %d: potluck %.2f/%.2f GB/s, raw %.2f/%.2f GB/s", i + 1,
                                   gb / r.save_s, gb / r.load_s, gb / r.raw_write_s,
                                   gb / r.raw_read_s);
      if (result->has_other) {
        std::cout << absl::StrFormat(", torch %.2f/%.2f GB/s", gb / r.other_save_s,
                                     gb / r.other_load_s);
      }
      std::cout << " (save/load)\n";
    }
    std::cout << absl::StrFormat("  %-28s %8s %8s\n", "medians", "save", "load");
    std::cout << absl::StrFormat("  %-28s %6.2f GB/s %6.2f GB/s\n", "potluck checkpoint store",
                                 gb / m.save_s, gb / m.load_s);
    std::cout << absl::StrFormat("  %-28s %6.2f GB/s %6.2f GB/s\n", "raw write+fsync / read",
                                 gb / m.raw_write_s, gb / m.raw_read_s);
    if (result->has_other) {
      std::cout << absl::StrFormat("  %-28s %6.2f GB/s %6.2f GB/s\n", "torch::save+fsync / load",
                                   gb / m.other_save_s, gb / m.other_load_s);
    }
    std::cout << absl::StrFormat(
        "  async save: Start() blocked %.4f s (%.2f%% of a save); the snapshot copy took %.3f s "
        "(%.1f%%),\n  hidden behind the next forward/backward when that is longer\n",
        m.async_stall_s, 100 * m.async_stall_s / m.save_s, m.async_snapshot_s,
        100 * m.async_snapshot_s / m.save_s);
  }
  std::cout << out.dump() << "\n";
  return 0;
}

struct AllreduceArgs {
  std::vector<std::string> backends = {"tcp", "gloo", "mpi"};
  int ranks = 4;
  std::vector<uint64_t> sizes = {4 << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20, 256 << 20};
  int rounds = 2;
  bool json = false;
  // allreduce-rank only
  std::string backend;
  int rank = 0;
  std::string store;
  std::string bind = "127.0.0.1";
  std::string codec = "none";
  int iterations = 0;
};

std::string SizesFlag(const std::vector<uint64_t>& sizes) { return absl::StrJoin(sizes, ","); }

nlohmann::json PointJson(const AllreduceBenchPoint& point) {
  return {{"backend", point.backend},
          {"algorithm", point.algorithm},
          {"bytes", point.bytes},
          {"ranks", point.ranks},
          {"iterations", point.iterations},
          {"time_us", point.seconds * 1e6},
          {"algbw_gbps", point.algbw_gbps()},
          {"busbw_gbps", point.busbw_gbps()}};
}

// One rank process: prints rank 0's points as JSON lines.
int RunAllreduceRank(const AllreduceArgs& args) {
  AllreduceBenchRank rank;
  rank.backend = args.backend;
  rank.rank = args.rank;
  rank.world_size = args.ranks;
  rank.store_dir = args.store;
  rank.sizes_bytes = args.sizes;
  rank.bind_host = args.bind;
  rank.codec = args.codec;
  rank.iterations = args.iterations;
  const absl::StatusOr<std::vector<AllreduceBenchPoint>> points = RunAllreduceBenchRank(rank);
  if (!points.ok()) {
    std::cerr << "potluck bench allreduce-rank " << args.backend << " rank " << args.rank << ": "
              << points.status() << "\n";
    return 2;
  }
  for (const AllreduceBenchPoint& point : *points) std::cout << PointJson(point).dump() << "\n";
  return 0;
}

std::string SelfPath() { return std::filesystem::read_symlink("/proc/self/exe").string(); }

// Runs one backend's rank processes; returns rank 0's output.
absl::StatusOr<std::string> LaunchRanks(const AllreduceArgs& args, const std::string& backend) {
  std::string pattern = std::filesystem::temp_directory_path().string() + "/potluck-ar-XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) return absl::UnavailableError("mkdtemp failed");
  const std::string store = pattern;
  const std::string self = SelfPath();
  std::vector<std::string> common = {
      "bench",   "allreduce-rank",           "--backend", backend, "--sizes", SizesFlag(args.sizes),
      "--ranks", std::to_string(args.ranks), "--store",   store};
  std::vector<std::vector<std::string>> commands;
  if (backend == "mpi") {
    std::vector<std::string> command = {"mpirun",
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
                                        std::to_string(args.ranks),
                                        self};
    command.insert(command.end(), common.begin(), common.end());
    commands.push_back(command);
  } else {
    for (int rank = 0; rank < args.ranks; ++rank) {
      std::vector<std::string> command = {self};
      command.insert(command.end(), common.begin(), common.end());
      command.push_back("--rank");
      command.push_back(std::to_string(rank));
      commands.push_back(command);
    }
  }
  int output[2];
  if (pipe(output) != 0) return absl::UnavailableError("pipe failed");
  std::vector<pid_t> children;
  for (size_t i = 0; i < commands.size(); ++i) {
    const pid_t pid = fork();
    if (pid == 0) {
      if (i == 0) {
        dup2(output[1], STDOUT_FILENO);
      } else {
        freopen("/dev/null", "w", stdout);
      }
      close(output[0]);
      close(output[1]);
      setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
      setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
      std::vector<char*> argv;
      for (const std::string& arg : commands[i]) argv.push_back(const_cast<char*>(arg.c_str()));
      argv.push_back(nullptr);
      execvp(argv[0], argv.data());
      _exit(127);
    }
    children.push_back(pid);
  }
  close(output[1]);
  std::string text;
  char buffer[4096];
  ssize_t n;
  while ((n = read(output[0], buffer, sizeof(buffer))) > 0) text.append(buffer, n);
  close(output[0]);
  bool failed = false;
  for (pid_t pid : children) {
    int status = 0;
    waitpid(pid, &status, 0);
    failed |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
  }
  std::filesystem::remove_all(store);
  if (failed) return absl::UnavailableError(absl::StrCat("the ", backend, " ranks failed"));
  return text;
}

int RunAllreduce(const AllreduceArgs& args) {
  // Before any rank starts: a baseline this build lacks is an error that says so.
  for (const std::string& backend : args.backends) {
    const absl::Status available = AllreduceBenchBackendAvailable(backend);
    if (!available.ok()) {
      std::cerr << "potluck bench allreduce: " << available.message() << "\n";
      return 2;
    }
  }
  // (backend, bytes) -> points over rounds
  std::map<std::pair<std::string, uint64_t>, std::vector<AllreduceBenchPoint>> runs;
  for (int round = 0; round < args.rounds; ++round) {
    for (const std::string& backend : args.backends) {
      absl::StatusOr<std::string> output = LaunchRanks(args, backend);
      if (!output.ok()) {
        std::cerr << "potluck bench allreduce: " << output.status() << "\n";
        return 2;
      }
      for (absl::string_view line : absl::StrSplit(*output, '\n', absl::SkipEmpty())) {
        const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
        if (j.is_discarded()) continue;
        AllreduceBenchPoint point{j["backend"], j["algorithm"],  j["bytes"],
                                  j["ranks"],   j["iterations"], j["time_us"].get<double>() / 1e6};
        runs[{backend, point.bytes}].push_back(point);
      }
    }
  }
  auto median = [](std::vector<AllreduceBenchPoint> points) {
    std::sort(points.begin(), points.end(),
              [](const auto& a, const auto& b) { return a.seconds < b.seconds; });
    return points[points.size() / 2];  // upper median for even counts
  };
  if (!args.json) {
    std::cout << absl::StrFormat(
        "all-reduce of float32, %d ranks on loopback, median of %d rounds "
        "(busbw = algbw * 2(n-1)/n)\n",
        args.ranks, args.rounds);
    std::cout << absl::StrFormat("  %10s  %-5s %-24s %12s %10s %10s\n", "bytes", "", "algorithm",
                                 "time", "algbw", "busbw");
  }
  for (uint64_t bytes : args.sizes) {
    std::map<std::string, AllreduceBenchPoint> at_size;
    for (const std::string& backend : args.backends) {
      auto found = runs.find({backend, bytes});
      if (found == runs.end()) continue;
      const AllreduceBenchPoint point = median(found->second);
      at_size[backend] = point;
      if (args.json) {
        std::cout << PointJson(point).dump() << "\n";
      } else {
        std::cout << absl::StrFormat("  %10d  %-5s %-24s %9.1f us %5.2f GB/s %5.2f GB/s\n", bytes,
                                     backend, point.algorithm, point.seconds * 1e6,
                                     point.algbw_gbps(), point.busbw_gbps());
      }
    }
    if (!args.json && at_size.count("tcp")) {
      for (const char* other : {"gloo", "mpi"}) {
        if (!at_size.count(other)) continue;
        std::cout << absl::StrFormat("  %10s  tcp vs %s: busbw %.2fx, time %.2fx\n", "", other,
                                     at_size["tcp"].busbw_gbps() / at_size[other].busbw_gbps(),
                                     at_size["tcp"].seconds / at_size[other].seconds);
      }
    }
  }
  return 0;
}

struct TrainArgs {
  uint64_t steps = 30;
  int rounds = 3;
  int threads = 0;
  bool no_exchange = false;
  std::string dataset;
  bool json = false;
};

int RunTrain(const TrainArgs& args) {
#ifdef POTLUCK_WITH_TORCH
  TrainBenchOptions options;
  options.steps = args.steps;
  options.rounds = args.rounds;
  options.threads = args.threads;
  options.exchange = !args.no_exchange;
  options.dataset_dir = args.dataset;
  const potluck::v1::GptSpec& gpt = options.job.model().gpt();
  if (!args.json) {
    std::cout << absl::StrFormat(
        "train benchmark: GPT %u layers x %u wide, context %u, batch %u; %d rounds of %u steps "
        "(medians)\n",
        gpt.layers(), gpt.width(), gpt.context_length(), options.job.batch().global_batch_size(),
        args.rounds, args.steps);
  }
  const absl::StatusOr<TrainBenchResult> result = RunTrainBench(options);
  if (!result.ok()) {
    std::cerr << "potluck bench train: " << result.status() << "\n";
    return 2;
  }
  nlohmann::json j = {{"parameters", result->parameters},
                      {"threads", result->threads},
                      {"potluck_tokens_per_s", result->potluck_tokens_per_s},
                      {"torch_tokens_per_s", result->torch_tokens_per_s},
                      {"overhead", result->overhead()},
                      {"potluck_rounds", result->potluck_rounds},
                      {"torch_rounds", result->torch_rounds},
                      {"final_loss_potluck", result->final_loss_potluck},
                      {"final_loss_torch", result->final_loss_torch}};
  for (const auto& e : result->exchange) {
    j["bytes_per_sample"][e.mode] = e.bytes_per_sample;
  }
  if (args.json) {
    std::cout << j.dump() << "\n";
    return 0;
  }
  std::cout << absl::StrFormat(
      "%llu parameters, %d threads\n"
      "  potluck Trainer    %9.0f tokens/s   (final loss %.4f)\n"
      "  plain libtorch     %9.0f tokens/s   (final loss %.4f)\n"
      "  overhead           %+8.2f%%\n",
      static_cast<unsigned long long>(result->parameters), result->threads,
      result->potluck_tokens_per_s, result->final_loss_potluck, result->torch_tokens_per_s,
      result->final_loss_torch, 100 * result->overhead());
  if (!result->exchange.empty()) {
    std::cout << "bytes sent per sample (2 workers, all of them together):\n";
    const double sync = result->exchange.front().bytes_per_sample;
    for (const auto& e : result->exchange) {
      std::cout << absl::StrFormat("  %-12s %12.0f   (%.1fx fewer than sync)\n", e.mode,
                                   e.bytes_per_sample, sync / e.bytes_per_sample);
    }
  }
  return 0;
#else
  (void)args;
  std::cerr << "potluck bench train: this build has no libtorch (POTLUCK_WITH_TORCH=OFF)\n";
  return 3;
#endif
}

struct CoordinatorBenchArgs {
  int workers = 10000;
  int ledger_workers = 256;
  double seconds = 10;
  std::string dir;
  bool json = false;
};

int RunCoordinator(const CoordinatorBenchArgs& args) {
  std::string parent = args.dir;
  if (parent.empty()) parent = std::filesystem::temp_directory_path().string();
  std::string pattern = parent + "/potluck-bench-coord-XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) {
    std::cerr << "potluck bench coordinator: cannot create a directory in " << parent << "\n";
    return 2;
  }
  CoordinatorBenchOptions options;
  options.dir = pattern;
  options.workers = args.workers;
  options.ledger_workers = args.ledger_workers;
  options.duration = absl::Seconds(args.seconds);
  if (!args.json) {
    std::cout << absl::StrFormat(
        "coordinator benchmark: %d workers heartbeating at 1 Hz + %d ledger workers "
        "(AcquireShard/ReportProgress, synced), %.0f s over gRPC on loopback, state in %s\n",
        args.workers, args.ledger_workers, args.seconds, options.dir);
  }
  const absl::StatusOr<CoordinatorBenchResult> result = RunCoordinatorBench(options);
  std::filesystem::remove_all(options.dir);
  if (!result.ok()) {
    std::cerr << "potluck bench coordinator: " << result.status() << "\n";
    return 2;
  }
  const CoordinatorBenchResult& r = *result;
  const nlohmann::json out = {
      {"workers", args.workers},
      {"ledger_workers", args.ledger_workers},
      {"seconds", r.seconds},
      {"setup_seconds", r.setup_seconds},
      {"heartbeats", r.heartbeats},
      {"heartbeats_per_s", r.heartbeats / r.seconds},
      {"heartbeat_errors", r.heartbeat_errors},
      {"heartbeat_p50_ms", r.heartbeat_p50_ms},
      {"heartbeat_p99_ms", r.heartbeat_p99_ms},
      {"heartbeat_max_ms", r.heartbeat_max_ms},
      {"ledger_ops", r.ledger_ops},
      {"ledger_errors", r.ledger_errors},
      {"ledger_ops_per_s", r.ledger_ops_per_s},
      {"progress_p50_ms", r.progress_p50_ms},
      {"progress_p99_ms", r.progress_p99_ms},
  };
  if (!args.json) {
    std::cout << absl::StrFormat(
        "  heartbeats      %8.0f/s  p50 %.2f ms  p99 %.2f ms  max %.2f ms  (%llu errors)\n"
        "  lease+progress  %8.0f ops/s  progress p50 %.2f ms  p99 %.2f ms  (%llu errors)\n"
        "  setup (joins, leases) %.1f s\n",
        r.heartbeats / r.seconds, r.heartbeat_p50_ms, r.heartbeat_p99_ms, r.heartbeat_max_ms,
        static_cast<unsigned long long>(r.heartbeat_errors), r.ledger_ops_per_s, r.progress_p50_ms,
        r.progress_p99_ms, static_cast<unsigned long long>(r.ledger_errors), r.setup_seconds);
  }
  std::cout << out.dump() << "\n";
  return 0;
}

}  // namespace

CLI::App* AddBenchCommand(CLI::App* app, int* exit_code) {
  CLI::App* bench =
      app->add_subcommand("bench", "Run potluck's benchmarks against same-run baselines");
  bench->require_subcommand(1);
  auto args = std::make_shared<CheckpointBenchArgs>();
  CLI::App* checkpoint = bench->add_subcommand(
      "checkpoint", "Save/load a model-like mix vs raw disk I/O (and torch::save/load)");
  checkpoint->add_option("--bytes", args->bytes, "Total tensor bytes")
      ->check(CLI::Range(uint64_t{1} << 20, uint64_t{1} << 40));
  checkpoint->add_option("--rounds", args->rounds, "Interleaved rounds")->check(CLI::Range(1, 100));
  checkpoint->add_option("--dir", args->dir, "Directory on the disk to measure (default: $TMPDIR)")
      ->check(CLI::ExistingDirectory);
  checkpoint->add_flag("--json", args->json, "Print only the JSON line");
  checkpoint->callback([args, exit_code] { *exit_code = RunCheckpoint(*args); });

  auto allreduce_args = std::make_shared<AllreduceArgs>();
  CLI::App* allreduce = bench->add_subcommand(
      "allreduce", "All-reduce time, algbw and busbw: potluck tcp vs Gloo vs OpenMPI, same run");
  allreduce
      ->add_option("--backend,--backends", allreduce_args->backends,
                   "Any of tcp, gloo, mpi (default: all three, same run)")
      ->delimiter(',')
      ->check(CLI::IsMember({"tcp", "gloo", "mpi"}));
  allreduce->add_option("--ranks", allreduce_args->ranks, "Rank processes")
      ->check(CLI::Range(2, 64));
  allreduce->add_option("--sizes", allreduce_args->sizes, "Message sizes in bytes")->delimiter(',');
  allreduce->add_option("--rounds", allreduce_args->rounds, "Rounds (medians are reported)")
      ->check(CLI::Range(1, 20));
  allreduce->add_flag("--json", allreduce_args->json, "One JSON object per (backend, size)");
  allreduce->callback([allreduce_args, exit_code] { *exit_code = RunAllreduce(*allreduce_args); });

  auto train_args = std::make_shared<TrainArgs>();
  CLI::App* train = bench->add_subcommand(
      "train", "Tokens/s of potluck's Trainer vs a plain libtorch loop; bytes per sample");
  train->add_option("--steps", train_args->steps, "Timed steps per round")
      ->check(CLI::Range(1, 100000));
  train->add_option("--rounds", train_args->rounds, "Alternating rounds (medians are reported)")
      ->check(CLI::Range(1, 50));
  train->add_option("--threads", train_args->threads, "Compute threads (default: every core)")
      ->check(CLI::Range(0, 1024));
  train->add_option("--dataset", train_args->dataset, "Prepared dataset (default: built-in corpus)")
      ->check(CLI::ExistingDirectory);
  train->add_flag("--no-exchange", train_args->no_exchange,
                  "Skip the 2-worker bytes-per-sample runs");
  train->add_flag("--json", train_args->json, "Print only the JSON line");
  train->callback([train_args, exit_code] { *exit_code = RunTrain(*train_args); });

  auto coordinator_args = std::make_shared<CoordinatorBenchArgs>();
  CLI::App* coordinator = bench->add_subcommand(
      "coordinator", "Heartbeat latency and ledger ops/s of simulated workers over gRPC");
  coordinator->add_option("--workers", coordinator_args->workers, "Workers heartbeating at 1 Hz")
      ->check(CLI::Range(1, 1000000));
  coordinator
      ->add_option("--ledger-workers", coordinator_args->ledger_workers,
                   "Workers streaming lease+progress calls (one in flight each)")
      ->check(CLI::Range(1, 100000));
  coordinator->add_option("--seconds", coordinator_args->seconds, "Measured seconds")
      ->check(CLI::Range(1.0, 3600.0));
  coordinator->add_option("--dir", coordinator_args->dir, "Where the state goes (default: $TMPDIR)")
      ->check(CLI::ExistingDirectory);
  coordinator->add_flag("--json", coordinator_args->json, "Print only the JSON line");
  coordinator->callback(
      [coordinator_args, exit_code] { *exit_code = RunCoordinator(*coordinator_args); });

  auto recovery_args = std::make_shared<RecoveryBenchArgs>();
  CLI::App* recovery = bench->add_subcommand(
      "recovery", "Detection, regroup and joiner times when a worker process is SIGKILLed");
  recovery->add_option("--workers", recovery_args->workers, "Worker processes")
      ->check(CLI::Range(2, 32));
  recovery->add_option("--rounds", recovery_args->rounds, "Kills (medians are reported)")
      ->check(CLI::Range(1, 50));
  recovery->add_option("--lease-seconds", recovery_args->lease_seconds, "Worker lease")
      ->check(CLI::Range(1, 60));
  recovery->add_option("--seed", recovery_args->seed, "Seed of the kill schedule");
  recovery->add_flag("--json", recovery_args->json, "Print only the JSON line");
  recovery->callback([recovery_args, exit_code] { *exit_code = RunRecoveryBench(*recovery_args); });

  // One rank of the above, started by it (not for people to call).
  CLI::App* rank = bench->add_subcommand("allreduce-rank", "");
  rank->group("");  // hidden from --help
  rank->add_option("--backend", allreduce_args->backend)->required();
  rank->add_option("--rank", allreduce_args->rank);
  rank->add_option("--ranks", allreduce_args->ranks);
  rank->add_option("--sizes", allreduce_args->sizes)->delimiter(',');
  rank->add_option("--store", allreduce_args->store);
  rank->add_option("--bind", allreduce_args->bind);
  rank->add_option("--codec", allreduce_args->codec);
  rank->add_option("--iterations", allreduce_args->iterations);
  rank->callback([allreduce_args, exit_code] { *exit_code = RunAllreduceRank(*allreduce_args); });
  return bench;
}

}  // namespace potluck
