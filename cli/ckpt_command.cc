#include "cli/ckpt_command.h"

#include <cstdint>
#include <iostream>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"

#include "checkpoint/checkpoint_store.h"
#include "checkpoint/safetensors_interop.h"
#include "common/status.h"

namespace potluck {

namespace {

constexpr int kExitFailed = 2;

struct CkptArgs {
  std::string dir;
  std::string job;
  std::optional<uint64_t> step;
  std::string file;
  bool json = false;
};

std::string Shape(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

std::string HumanBytes(uint64_t bytes) {
  if (bytes >= (uint64_t{1} << 30)) return absl::StrFormat("%.2f GiB", bytes / double(1 << 30));
  if (bytes >= (1 << 20)) return absl::StrFormat("%.2f MiB", bytes / double(1 << 20));
  if (bytes >= (1 << 10)) return absl::StrFormat("%.1f KiB", bytes / double(1 << 10));
  return absl::StrCat(bytes, " B");
}

nlohmann::json InfoJson(const CheckpointInfo& info, bool with_entries) {
  nlohmann::json out = {
      {"job", info.job_id},
      {"step", info.step},
      {"created", absl::FormatTime(absl::RFC3339_sec, info.created, absl::UTCTimeZone())},
      {"bytes", info.total_bytes},
      {"entries", info.entries.size()}};
  if (with_entries) {
    out["entries"] = nlohmann::json::array();
    for (const EntryInfo& entry : info.entries) {
      out["entries"].push_back({{"name", entry.name},
                                {"kind", entry.kind == EntryKind::kBlob ? "blob" : "tensor"},
                                {"dtype", std::string(DTypeName(entry.dtype))},
                                {"shape", entry.shape},
                                {"bytes", entry.size_bytes},
                                {"chunks", entry.num_chunks}});
    }
  }
  return out;
}

// The jobs to act on: the one named, or every job in the store.
absl::StatusOr<std::vector<std::string>> Jobs(CheckpointStore& store, const CkptArgs& args) {
  if (!args.job.empty()) return std::vector<std::string>{args.job};
  return store.ListJobs();
}

absl::StatusOr<std::unique_ptr<CheckpointReader>> OpenOne(CheckpointStore& store,
                                                          const CkptArgs& args) {
  if (args.job.empty()) {
    ASSIGN_OR_RETURN(std::vector<std::string> jobs, store.ListJobs());
    if (jobs.size() != 1) {
      return absl::InvalidArgumentError(absl::StrCat("the store holds ", jobs.size(), " jobs (",
                                                     absl::StrJoin(jobs, ", "),
                                                     "): pick one with --job"));
    }
    return args.step ? store.OpenCheckpoint(jobs[0], *args.step) : store.OpenLatest(jobs[0]);
  }
  return args.step ? store.OpenCheckpoint(args.job, *args.step) : store.OpenLatest(args.job);
}

absl::Status List(CheckpointStore& store, const CkptArgs& args) {
  nlohmann::json all = nlohmann::json::array();
  ASSIGN_OR_RETURN(const std::vector<std::string> jobs, Jobs(store, args));
  for (const std::string& job : jobs) {
    ASSIGN_OR_RETURN(const std::vector<uint64_t> steps, store.ListSteps(job));
    for (uint64_t step : steps) {
      ASSIGN_OR_RETURN(std::unique_ptr<CheckpointReader> reader, store.OpenCheckpoint(job, step));
      const CheckpointInfo& info = reader->info();
      if (args.json) {
        all.push_back(InfoJson(info, false));
      } else {
        std::cout << absl::StrFormat(
            "%-20s %12u  %s  %10s  %u entries\n", job, step,
            absl::FormatTime("%Y-%m-%d %H:%M:%S", info.created, absl::LocalTimeZone()),
            HumanBytes(info.total_bytes), info.entries.size());
      }
    }
  }
  if (args.json) std::cout << all.dump() << "\n";
  return absl::OkStatus();
}

absl::Status Show(CheckpointStore& store, const CkptArgs& args) {
  ASSIGN_OR_RETURN(std::unique_ptr<CheckpointReader> reader, OpenOne(store, args));
  const CheckpointInfo& info = reader->info();
  if (args.json) {
    std::cout << InfoJson(info, true).dump() << "\n";
    return absl::OkStatus();
  }
  std::cout << "job " << info.job_id << ", step " << info.step << ", "
            << HumanBytes(info.total_bytes) << ", created "
            << absl::FormatTime("%Y-%m-%d %H:%M:%S %Z", info.created, absl::LocalTimeZone())
            << "\n";
  for (const EntryInfo& entry : info.entries) {
    std::cout << absl::StrFormat("  %-40s %-6s %-8s %-16s %10s  %u chunks\n", entry.name,
                                 entry.kind == EntryKind::kBlob ? "blob" : "tensor",
                                 DTypeName(entry.dtype), Shape(entry.shape),
                                 HumanBytes(entry.size_bytes), entry.num_chunks);
  }
  return absl::OkStatus();
}

// Verifies every chunk of the chosen checkpoints; reports each, fails if any is bad.
absl::Status Verify(CheckpointStore& store, const CkptArgs& args) {
  nlohmann::json results = nlohmann::json::array();
  int bad = 0;
  ASSIGN_OR_RETURN(const std::vector<std::string> jobs, Jobs(store, args));
  for (const std::string& job : jobs) {
    std::vector<uint64_t> steps;
    if (args.step) {
      steps = {*args.step};
    } else {
      ASSIGN_OR_RETURN(steps, store.ListSteps(job));
    }
    for (uint64_t step : steps) {
      absl::StatusOr<std::unique_ptr<CheckpointReader>> reader = store.OpenCheckpoint(job, step);
      const absl::Status status = reader.ok() ? (*reader)->Verify() : reader.status();
      if (!status.ok()) ++bad;
      if (args.json) {
        results.push_back({{"job", job},
                           {"step", step},
                           {"ok", status.ok()},
                           {"error", status.ok() ? "" : std::string(status.message())}});
      } else {
        std::cout << job << "@" << step << ": " << (status.ok() ? "ok" : status.ToString()) << "\n";
      }
    }
  }
  if (args.json) std::cout << results.dump() << "\n";
  if (bad > 0) return absl::DataLossError(absl::StrCat(bad, " checkpoint(s) failed verification"));
  return absl::OkStatus();
}

absl::Status Export(CheckpointStore& store, const CkptArgs& args) {
  ASSIGN_OR_RETURN(std::unique_ptr<CheckpointReader> reader, OpenOne(store, args));
  RETURN_IF_ERROR(ExportSafetensors(*reader, args.file));
  std::cout << "exported " << reader->info().job_id << "@" << reader->info().step << " to "
            << args.file << "\n";
  return absl::OkStatus();
}

absl::Status Import(CheckpointStore& store, const CkptArgs& args) {
  RETURN_IF_ERROR(ImportSafetensors(args.file, store, args.job, args.step.value_or(0)));
  std::cout << "imported " << args.file << " as " << args.job << "@" << args.step.value_or(0)
            << "\n";
  return absl::OkStatus();
}

using Action = absl::Status (*)(CheckpointStore&, const CkptArgs&);

void AddAction(CLI::App* ckpt, const char* name, const char* summary, Action action,
               std::shared_ptr<CkptArgs> args, int* exit_code) {
  CLI::App* sub = ckpt->add_subcommand(name, summary);
  const bool importing = std::string(name) == "import";  // may create a new store
  CLI::Option* dir = sub->add_option("DIR", args->dir, "Checkpoint store directory")->required();
  if (!importing) dir->check(CLI::ExistingDirectory);
  sub->add_option("--job", args->job, "Job id (default: every job, or the only one)");
  sub->add_option("--step", args->step, "Step (default: every step, or the latest)");
  sub->add_flag("--json", args->json, "Machine-readable output");
  if (std::string(name) == "export") {
    sub->add_option("--out", args->file, "The .safetensors file to write")->required();
  }
  if (importing) {
    sub->get_option("--job")->required();
    sub->add_option("--in", args->file, "The .safetensors file to read")
        ->required()
        ->check(CLI::ExistingFile);
  }
  sub->callback([sub, action, args, exit_code] {
    absl::StatusOr<std::unique_ptr<CheckpointStore>> store = CheckpointStore::Open(args->dir);
    absl::Status status = store.ok() ? action(**store, *args) : store.status();
    if (!status.ok()) {
      std::cerr << "potluck ckpt " << sub->get_name() << ": " << status << "\n";
      *exit_code = kExitFailed;
      return;
    }
    *exit_code = 0;
  });
}

}  // namespace

CLI::App* AddCkptCommand(CLI::App* app, int* exit_code) {
  CLI::App* ckpt = app->add_subcommand("ckpt", "List, show, verify, export and import checkpoints");
  ckpt->require_subcommand(1);
  auto args = std::make_shared<CkptArgs>();
  AddAction(ckpt, "ls", "List the checkpoints in a store", List, args, exit_code);
  AddAction(ckpt, "show", "Show one checkpoint's entries", Show, args, exit_code);
  AddAction(ckpt, "verify", "Read and checksum every chunk", Verify, args, exit_code);
  AddAction(ckpt, "export", "Write a checkpoint's tensors to a .safetensors file", Export, args,
            exit_code);
  AddAction(ckpt, "import", "Save a .safetensors file's tensors as a checkpoint", Import, args,
            exit_code);
  return ckpt;
}

}  // namespace potluck
