#include "cli/bench_command.h"

#include <stdlib.h>

#include <filesystem>
#include <iostream>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/strings/str_format.h"

#include "checkpoint/checkpoint_bench.h"

#ifdef POTLUCK_WITH_TORCH
#include "worker/torch_baseline.h"
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
  return bench;
}

}  // namespace potluck
