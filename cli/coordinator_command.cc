#include "cli/coordinator_command.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <system_error>

#include <google/protobuf/util/json_util.h>
#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

#include "cli/internal/signal_watcher.h"
#include "common/failure.h"
#include "common/status.h"
#include "coordinator/coordinator.h"
#include "coordinator/grpc_client.h"
#include "coordinator/server.h"
#include "job/job_spec.h"

namespace potluck {

namespace {

// A command line that lacks or misuses a flag: exit code 1, not 2.
absl::Status UsageError(absl::string_view what) {
  return WithFailure(absl::InvalidArgumentError(what), Failure::kUsage);
}

constexpr int kExitFailed = 2;
constexpr absl::Duration kAdminTokenTtl = absl::Hours(24 * 365 * 10);
constexpr char kAdminTokenFile[] = "admin.token";

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return ErrnoStatus(errno, absl::StrCat("reading ", path));
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

// Writes <data-dir>/admin.token (0600) unless it exists.
absl::Status EnsureAdminToken(Coordinator& coordinator, const std::string& data_dir) {
  const std::string path = (std::filesystem::path(data_dir) / kAdminTokenFile).string();
  if (std::filesystem::exists(path)) {
    ASSIGN_OR_RETURN(std::string token, ReadFile(path));
    if (coordinator.VerifyAdminToken(absl::StripAsciiWhitespace(token)).ok()) {
      return absl::OkStatus();
    }
    std::cerr << "potluck coordinator: " << path << " holds no valid admin token; replacing it\n";
    std::filesystem::remove(path);
  }
  ASSIGN_OR_RETURN(std::string token, coordinator.CreateAdminToken(kAdminTokenTtl));
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("creating ", path));
  const std::string line = token + "\n";
  const bool written =
      write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) && fsync(fd) == 0;
  const int saved = errno;
  close(fd);
  if (!written) return ErrnoStatus(saved, absl::StrCat("writing ", path));
  return absl::OkStatus();
}

std::string ToJson(const google::protobuf::Message& message) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(message, &json, options);
  return json;
}

// What the admin commands share.
struct RemoteArgs {
  std::string coordinator;
  std::string admin_token;
  std::string data_dir;
  std::string tls_ca_file;
  bool json = false;
};

void AddRemoteFlags(CLI::App* sub, RemoteArgs* args, bool admin) {
  sub->add_option("--coordinator", args->coordinator, "Coordinator address, host:port");
  sub->add_option("--tls-ca", args->tls_ca_file,
                  "PEM certificate to trust (the coordinator's, or its CA); default plaintext");
  if (admin) {
    sub->add_option("--admin-token", args->admin_token,
                    "Admin token (default: DATA_DIR/admin.token)");
    sub->add_option("--data-dir", args->data_dir, "The coordinator's data directory");
  }
}

bool HasAdminToken(const RemoteArgs& args) {
  return !args.admin_token.empty() || !args.data_dir.empty();
}

absl::StatusOr<std::string> AdminToken(const RemoteArgs& args) {
  if (!args.admin_token.empty()) return args.admin_token;
  if (args.data_dir.empty()) {
    return UsageError("give --admin-token or --data-dir (for its admin.token)");
  }
  ASSIGN_OR_RETURN(std::string token,
                   ReadFile((std::filesystem::path(args.data_dir) / kAdminTokenFile).string()));
  return std::string(absl::StripAsciiWhitespace(token));
}

absl::StatusOr<std::unique_ptr<CoordinatorAdmin>> Connect(const RemoteArgs& args) {
  if (args.coordinator.empty()) return UsageError("give --coordinator ADDR");
  GrpcClientOptions options;
  options.tls_root_cert_file = args.tls_ca_file;
  // Sent on every call: the reads that only the job's members and the admin
  // may make (the whole spec, the workers) need it.
  if (HasAdminToken(args)) {
    ASSIGN_OR_RETURN(options.admin_token, AdminToken(args));
  }
  return NewGrpcAdmin(args.coordinator, options);
}

// Runs `body`; prints a failure as "potluck NAME: status" and sets the exit code.
template <typename Body>
void Run(const std::string& name, int* exit_code, Body body) {
  const absl::Status status = body();
  if (status.ok()) {
    *exit_code = 0;
    return;
  }
  std::cerr << "potluck " << name << ": " << status << "\n";
  *exit_code = FailedBecause(status, Failure::kUsage) ? 1 : kExitFailed;
}

void PrintJob(const v1::JobStatus& job) {
  std::cout << absl::StrFormat("%-24s %-10s step %-8d workers %d\n", job.spec().job_id(),
                               std::string(JobStateName(job.state())), job.committed_step(),
                               job.live_workers());
  if (!job.problem().empty()) std::cout << "  problem: " << job.problem() << "\n";
}

}  // namespace

absl::Status RunCoordinatorServer(const CoordinatorCommandArgs& args) {
  if (args.lease_seconds < 1) return absl::InvalidArgumentError("--lease-seconds must be >= 1");
  // A signal during the start is acted on once the server runs.
  cli_internal::SignalWatcher signals;
  std::atomic<int> signal_number{0};
  absl::Notification signalled;
  signals.Handle([&](int number) {
    if (signal_number.exchange(number) == 0) signalled.Notify();
  });

  std::error_code error;
  std::filesystem::create_directories(args.data_dir, error);
  if (error) return ErrnoStatus(error.value(), absl::StrCat("creating ", args.data_dir));
  CoordinatorOptions options;
  options.data_dir = args.data_dir;
  options.lease = absl::Seconds(args.lease_seconds);
  options.max_checkpoint_bytes = args.max_checkpoint_bytes;
  options.max_spool_bytes = args.max_spool_bytes;
  ASSIGN_OR_RETURN(std::unique_ptr<Coordinator> coordinator, Coordinator::Open(options));
  RETURN_IF_ERROR(EnsureAdminToken(*coordinator, args.data_dir));
  CoordinatorServerOptions server_options;
  server_options.listen = args.listen;
  server_options.tls_cert_file = args.tls_cert_file;
  server_options.tls_key_file = args.tls_key_file;
  server_options.max_message_bytes = args.max_message_bytes;
  server_options.piece_bytes = std::min(1 << 20, args.max_message_bytes / 2);
  ASSIGN_OR_RETURN(std::unique_ptr<CoordinatorServer> server,
                   CoordinatorServer::Start(coordinator.get(), server_options));
  const std::string host = args.listen.substr(0, args.listen.rfind(':'));
  std::cout << "potluck coordinator listening on " << host << ":" << server->port() << " ("
            << (args.tls_cert_file.empty() ? "plaintext" : "TLS") << "), admin token in "
            << (std::filesystem::path(args.data_dir) / kAdminTokenFile).string() << std::endl;

  while (!signalled.WaitForNotificationWithTimeout(absl::Seconds(1))) {
    const absl::Status ticked = coordinator->Tick();  // leases of silent jobs expire too
    if (!ticked.ok()) std::cerr << "potluck coordinator: " << ticked << "\n";
  }
  std::cout << "potluck coordinator: " << (signal_number == SIGINT ? "SIGINT" : "SIGTERM")
            << ", draining" << std::endl;
  server->Drain();
  server->Shutdown(absl::Seconds(5));
  server.reset();
  coordinator.reset();
  std::cout << "potluck coordinator: shut down cleanly" << std::endl;
  return absl::OkStatus();
}

CLI::App* AddCoordinatorCommand(CLI::App* app, int* exit_code) {
  CLI::App* sub = app->add_subcommand(
      "coordinator", "Run a coordinator: membership, shard ledger, checkpoints (gRPC)");
  auto args = std::make_shared<CoordinatorCommandArgs>();
  sub->add_option("--listen", args->listen, "host:port to listen on (port 0: pick a free one)");
  sub->add_option("--data-dir", args->data_dir, "State directory (created if missing)")->required();
  sub->add_option("--tls-cert", args->tls_cert_file, "PEM certificate (TLS; needs --tls-key)")
      ->check(CLI::ExistingFile);
  sub->add_option("--tls-key", args->tls_key_file, "PEM private key of --tls-cert")
      ->check(CLI::ExistingFile);
  sub->add_option("--lease-seconds", args->lease_seconds, "Worker lease")
      ->check(CLI::Range(1, 3600));
  sub->add_option("--max-message-bytes", args->max_message_bytes, "Largest gRPC message")
      ->check(CLI::Range(1 << 16, 1 << 30));
  sub->add_option("--max-checkpoint-bytes", args->max_checkpoint_bytes,
                  "Most bytes one checkpoint upload may send (all its parts together)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--max-spool-bytes", args->max_spool_bytes,
                  "Most bytes all uploads in progress may hold on disk together (0: no fixed "
                  "limit; the disk always keeps a reserve for commits)");
  sub->callback([args, exit_code] {
    if (args->tls_cert_file.empty() != args->tls_key_file.empty()) {
      std::cerr << "potluck coordinator: --tls-cert and --tls-key go together\n";
      *exit_code = 1;
      return;
    }
    Run("coordinator", exit_code, [&] { return RunCoordinatorServer(*args); });
  });
  return sub;
}

CLI::App* AddJobCommand(CLI::App* app, int* exit_code) {
  CLI::App* job_command =
      app->add_subcommand("job", "Submit, list, pause and cancel jobs on a coordinator");
  job_command->require_subcommand(1);
  auto args = std::make_shared<RemoteArgs>();
  auto spec_file = std::make_shared<std::string>();
  auto job_id = std::make_shared<std::string>();

  CLI::App* submit =
      job_command->add_subcommand("submit", "Submit a JobSpec (.json, .yaml or .yml)");
  AddRemoteFlags(submit, args.get(), /*admin=*/true);
  submit->add_option("--spec", *spec_file, "The JobSpec file")
      ->required()
      ->check(CLI::ExistingFile);
  submit->add_flag("--json", args->json, "Machine-readable output");
  submit->callback([args, spec_file, exit_code] {
    Run("job submit", exit_code, [&]() -> absl::Status {
      ASSIGN_OR_RETURN(std::string text, ReadFile(*spec_file));
      const bool yaml = absl::EndsWith(*spec_file, ".yaml") || absl::EndsWith(*spec_file, ".yml");
      ASSIGN_OR_RETURN(v1::JobSpec spec, yaml ? ParseJobSpecYaml(text) : ParseJobSpecJson(text));
      ASSIGN_OR_RETURN(std::string token, AdminToken(*args));
      ASSIGN_OR_RETURN(std::unique_ptr<CoordinatorAdmin> admin, Connect(*args));
      // One id for this submission: a retry of it would be applied once.
      const std::string request_id = absl::StrCat("submit-", spec.job_id(), "-", getpid(), "-",
                                                  absl::ToUnixNanos(absl::Now()));
      ASSIGN_OR_RETURN(v1::JobStatus status, admin->SubmitJob(token, spec, request_id));
      if (args->json) {
        std::cout << ToJson(status) << "\n";
      } else {
        std::cout << "submitted job " << status.spec().job_id() << " ("
                  << JobStateName(status.state()) << ")\n";
      }
      return absl::OkStatus();
    });
  });

  CLI::App* status = job_command->add_subcommand(
      "status", "Show one job (anyone: a public summary) and its workers (the admin)");
  AddRemoteFlags(status, args.get(), /*admin=*/true);
  status->add_option("JOB", *job_id, "Job id")->required();
  status->add_flag("--json", args->json, "Machine-readable output");
  status->callback([args, job_id, exit_code] {
    Run("job status", exit_code, [&]() -> absl::Status {
      ASSIGN_OR_RETURN(std::unique_ptr<CoordinatorAdmin> admin, Connect(*args));
      ASSIGN_OR_RETURN(v1::JobStatus job, admin->GetJob(*job_id));
      // Worker ids and endpoints are for the job's members and the admin.
      std::vector<v1::WorkerInfo> workers;
      if (HasAdminToken(*args)) {
        ASSIGN_OR_RETURN(workers, admin->ListWorkers(*job_id));
      }
      if (args->json) {
        nlohmann::json out = nlohmann::json::parse(ToJson(job));
        if (HasAdminToken(*args)) {
          out["workers"] = nlohmann::json::array();
          for (const v1::WorkerInfo& worker : workers) {
            out["workers"].push_back(nlohmann::json::parse(ToJson(worker)));
          }
        }
        std::cout << out.dump() << "\n";
        return absl::OkStatus();
      }
      PrintJob(job);
      if (!HasAdminToken(*args)) {
        std::cout << "  (its workers are shown to the admin: give --admin-token or --data-dir)\n";
      }
      for (const v1::WorkerInfo& worker : workers) {
        std::cout << "  " << worker.worker_id() << " " << v1::WorkerInfo::Phase_Name(worker.phase())
                  << " rank " << worker.rank() << " " << worker.endpoint() << " "
                  << worker.dead_reason() << "\n";
      }
      return absl::OkStatus();
    });
  });

  CLI::App* list = job_command->add_subcommand(
      "list", "List the coordinator's jobs (anyone: public summaries; the admin: whole specs)");
  AddRemoteFlags(list, args.get(), /*admin=*/true);
  list->add_flag("--json", args->json, "Machine-readable output");
  list->callback([args, exit_code] {
    Run("job list", exit_code, [&]() -> absl::Status {
      ASSIGN_OR_RETURN(std::unique_ptr<CoordinatorAdmin> admin, Connect(*args));
      ASSIGN_OR_RETURN(std::vector<v1::JobStatus> jobs, admin->ListJobs());
      if (args->json) {
        nlohmann::json out = nlohmann::json::array();
        for (const v1::JobStatus& job : jobs) out.push_back(nlohmann::json::parse(ToJson(job)));
        std::cout << out.dump() << "\n";
      } else {
        for (const v1::JobStatus& job : jobs) PrintJob(job);
      }
      return absl::OkStatus();
    });
  });

  using Control =
      absl::StatusOr<v1::JobStatus> (CoordinatorAdmin::*)(absl::string_view, absl::string_view);
  const std::vector<std::pair<const char*, Control>> controls = {
      {"pause", &CoordinatorAdmin::PauseJob},
      {"resume", &CoordinatorAdmin::ResumeJob},
      {"cancel", &CoordinatorAdmin::CancelJob}};
  for (const auto& [name, control] : controls) {
    CLI::App* sub = job_command->add_subcommand(name, absl::StrCat(name, " a job"));
    AddRemoteFlags(sub, args.get(), /*admin=*/true);
    sub->add_option("JOB", *job_id, "Job id")->required();
    sub->callback([args, job_id, exit_code, name = std::string(name), control = control] {
      Run("job " + name, exit_code, [&]() -> absl::Status {
        ASSIGN_OR_RETURN(std::string token, AdminToken(*args));
        ASSIGN_OR_RETURN(std::unique_ptr<CoordinatorAdmin> admin, Connect(*args));
        ASSIGN_OR_RETURN(v1::JobStatus job, ((*admin).*control)(token, *job_id));
        PrintJob(job);
        return absl::OkStatus();
      });
    });
  }

  auto max_steps = std::make_shared<uint64_t>(0);
  CLI::App* extend = job_command->add_subcommand(
      "extend", "Raise a job's max_steps (a job finished at its last step trains on)");
  AddRemoteFlags(extend, args.get(), /*admin=*/true);
  extend->add_option("JOB", *job_id, "Job id")->required();
  extend->add_option("--max-steps", *max_steps, "The new last step")
      ->required()
      ->check(CLI::PositiveNumber);
  extend->callback([args, job_id, max_steps, exit_code] {
    Run("job extend", exit_code, [&]() -> absl::Status {
      ASSIGN_OR_RETURN(std::string token, AdminToken(*args));
      ASSIGN_OR_RETURN(std::unique_ptr<CoordinatorAdmin> admin, Connect(*args));
      ASSIGN_OR_RETURN(v1::JobStatus job, admin->ExtendJob(token, *job_id, *max_steps));
      PrintJob(job);
      return absl::OkStatus();
    });
  });

  auto worker_id = std::make_shared<std::string>();
  auto revoke_token = std::make_shared<bool>(false);
  CLI::App* evict = job_command->add_subcommand(
      "evict", "Remove a worker from a job now (its group rolls back to the last checkpoint)");
  AddRemoteFlags(evict, args.get(), /*admin=*/true);
  evict->add_option("JOB", *job_id, "Job id")->required();
  evict->add_option("WORKER", *worker_id, "The worker's id (job workers lists them)")->required();
  evict->add_flag("--revoke-token", *revoke_token,
                  "Also revoke the join token it joined with (its other workers end too)");
  evict->callback([args, job_id, worker_id, revoke_token, exit_code] {
    Run("job evict", exit_code, [&]() -> absl::Status {
      ASSIGN_OR_RETURN(std::string token, AdminToken(*args));
      ASSIGN_OR_RETURN(std::unique_ptr<CoordinatorAdmin> admin, Connect(*args));
      ASSIGN_OR_RETURN(v1::JobStatus job,
                       admin->EvictWorker(token, *job_id, *worker_id, *revoke_token));
      PrintJob(job);
      return absl::OkStatus();
    });
  });

  // Offline: the ledger in a stopped coordinator's directory (RocksDB allows
  // one process at a time), for audits such as the chaos suite's
  // exactly-once check.
  auto ledger_dir = std::make_shared<std::string>();
  CLI::App* ledger = job_command->add_subcommand(
      "ledger", "Show a job's shard ledger from a stopped coordinator's data directory");
  ledger->add_option("JOB", *job_id, "Job id")->required();
  ledger->add_option("--data-dir", *ledger_dir, "The coordinator's data directory")->required();
  ledger->add_flag("--json", args->json, "Machine-readable output");
  ledger->callback([args, job_id, ledger_dir, exit_code] {
    Run("job ledger", exit_code, [&]() -> absl::Status {
      CoordinatorOptions options;
      options.data_dir = *ledger_dir;
      ASSIGN_OR_RETURN(std::unique_ptr<Coordinator> coordinator, Coordinator::Open(options));
      ASSIGN_OR_RETURN(LedgerView view, coordinator->GetLedger(*job_id));
      if (args->json) {
        nlohmann::json out = {{"job_id", *job_id},
                              {"epoch", view.epoch},
                              {"committed_step", view.committed_step},
                              {"shards", nlohmann::json::array()}};
        for (const ShardView& shard : view.shards) {
          out["shards"].push_back({{"id", shard.id},
                                   {"name", shard.name},
                                   {"begin", shard.begin},
                                   {"size", shard.size},
                                   {"committed_offset", shard.committed_offset},
                                   {"consumed_offset", shard.consumed_offset}});
        }
        std::cout << out.dump() << "\n";
        return absl::OkStatus();
      }
      std::cout << "job " << *job_id << ": epoch " << view.epoch << ", committed step "
                << view.committed_step << "\n";
      for (const ShardView& shard : view.shards) {
        std::cout << "  shard " << shard.id << " " << shard.name << "[" << shard.begin << ", "
                  << shard.begin + shard.size << "): committed " << shard.committed_offset << "/"
                  << shard.size << ", consumed " << shard.consumed_offset << "\n";
      }
      return absl::OkStatus();
    });
  });
  return job_command;
}

CLI::App* AddTokenCommand(CLI::App* app, int* exit_code) {
  CLI::App* token = app->add_subcommand("token", "Create and revoke join tokens for a job");
  token->require_subcommand(1);
  auto args = std::make_shared<RemoteArgs>();
  auto job_id = std::make_shared<std::string>();
  auto ttl = std::make_shared<std::string>("24h");
  auto target = std::make_shared<std::string>();

  // Offline: the state database on --data-dir, when no coordinator holds it.
  auto open_offline = [args]() -> absl::StatusOr<std::unique_ptr<Coordinator>> {
    if (args->data_dir.empty()) {
      return UsageError("give --coordinator (and an admin token) or --data-dir");
    }
    CoordinatorOptions options;
    options.data_dir = args->data_dir;
    absl::StatusOr<std::unique_ptr<Coordinator>> opened = Coordinator::Open(options);
    if (FailedBecause(opened.status(), Failure::kStoreLocked)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "a coordinator is running on ", args->data_dir,
          "; pass --coordinator ADDR to go through it (", opened.status().message(), ")"));
    }
    return opened;
  };

  CLI::App* create = token->add_subcommand("create", "Make a join token for a job");
  AddRemoteFlags(create, args.get(), /*admin=*/true);
  create->add_option("--job", *job_id, "The job the token admits to")->required();
  create->add_option("--ttl", *ttl, "How long it is valid (e.g. 90m, 24h)");
  create->callback([args, job_id, ttl, exit_code, open_offline] {
    Run("token create", exit_code, [&]() -> absl::Status {
      absl::Duration duration;
      if (!absl::ParseDuration(*ttl, &duration) || duration <= absl::ZeroDuration()) {
        return UsageError(
            absl::StrCat("give --ttl as a positive duration like 24h; got '", *ttl, "'"));
      }
      std::string made;
      if (!args->coordinator.empty()) {
        ASSIGN_OR_RETURN(std::string admin_token, AdminToken(*args));
        ASSIGN_OR_RETURN(std::unique_ptr<CoordinatorAdmin> admin, Connect(*args));
        ASSIGN_OR_RETURN(made, admin->CreateToken(admin_token, *job_id, duration));
      } else {
        ASSIGN_OR_RETURN(std::unique_ptr<Coordinator> coordinator, open_offline());
        RETURN_IF_ERROR(coordinator->GetJob(*job_id).status());
        ASSIGN_OR_RETURN(made, coordinator->CreateToken(*job_id, duration));
      }
      std::cout << made << "\n";
      return absl::OkStatus();
    });
  });

  CLI::App* revoke = token->add_subcommand("revoke", "Revoke a token (the token or its id)");
  AddRemoteFlags(revoke, args.get(), /*admin=*/true);
  revoke->add_option("TOKEN_OR_ID", *target, "The token, or its 16-hex id")->required();
  revoke->callback([args, target, exit_code, open_offline] {
    Run("token revoke", exit_code, [&]() -> absl::Status {
      if (!args->coordinator.empty()) {
        ASSIGN_OR_RETURN(std::string admin_token, AdminToken(*args));
        ASSIGN_OR_RETURN(std::unique_ptr<CoordinatorAdmin> admin, Connect(*args));
        RETURN_IF_ERROR(admin->RevokeToken(admin_token, *target));
      } else {
        ASSIGN_OR_RETURN(std::unique_ptr<Coordinator> coordinator, open_offline());
        RETURN_IF_ERROR(coordinator->RevokeToken(*target));
      }
      std::cout << "revoked\n";
      return absl::OkStatus();
    });
  });
  return token;
}

}  // namespace potluck
