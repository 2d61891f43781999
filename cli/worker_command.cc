#include "cli/worker_command.h"

#include <cmath>
#include <iostream>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

#include "cli/internal/signal_watcher.h"
#include "common/status.h"
#ifdef POTLUCK_WITH_TORCH
#include "coordinator/grpc_client.h"
#include "worker/backends.h"
#include "worker/runtime.h"
#endif

namespace potluck {

namespace {

struct WorkerArgs {
  std::string coordinator;
  std::string token;
  std::string job;
  std::string state_dir;
  std::string backend = "tcp";
  std::string device = "cpu";
  std::string bind = "127.0.0.1";
  std::string advertise;
  std::string tls_ca;
  int threads = 1;
  uint64_t steps = 0;
  std::string progress = "plain";
  uint64_t fault_nan_from_step = 0;
};

#ifdef POTLUCK_WITH_TORCH
int RunWorker(const WorkerArgs& args) {
  cli_internal::SignalWatcher signals;  // first: see signal_watcher.h
  WorkerOptions options;
  options.state_dir = args.state_dir;
  const absl::StatusOr<Device> device = ParseDevice(args.device);
  if (!device.ok()) {
    std::cerr << "potluck worker: --device: " << device.status().message() << "\n";
    return 1;
  }
  if (args.backend == "nccl") {
    if (device->is_cpu()) {
      std::cerr << "potluck worker: --backend nccl needs a GPU: --device cuda:N\n";
      return 1;
    }
    options.connect_data = NcclDataBackend(device->index);
  } else if (!device->is_cpu()) {
    std::cerr << "potluck worker: --device " << args.device
              << " picks the GPU of --backend nccl's collectives; the model itself computes on "
                 "the CPU (Debian's libtorch has no CUDA)\n";
    return 1;
  }
#ifndef POTLUCK_WITH_MPI
  if (args.backend == "mpi") {
    std::cerr << "potluck worker: --backend mpi: this build has no MPI; configure with "
                 "-DPOTLUCK_WITH_MPI=ON (needs libopenmpi-dev openmpi-bin), or use --backend tcp\n";
    return 2;
  }
#else
  // Declared before the runtime, so MPI is finalized after it is gone.
  std::unique_ptr<MpiRuntime> mpi;
  if (args.backend == "mpi") {
    auto init = MpiRuntime::Init(nullptr, nullptr);
    if (!init.ok()) {
      std::cerr << "potluck worker: --backend mpi: " << init.status() << "\n";
      return 2;
    }
    mpi = *std::move(init);
    // mpirun gives every process the same arguments: each keeps its own id.
    options.state_dir = absl::StrCat(args.state_dir, "/rank-", mpi->world_rank());
    options.connect_data = MpiDataBackend(mpi.get());
  }
#endif
  options.job_id = args.job;
  options.token = args.token;
  if (options.job_id.empty()) {
    // A join token names its job: plk1:<job>:<expiry>:<id>:<mac>.
    const std::vector<std::string> fields = absl::StrSplit(args.token, ':');
    if (fields.size() == 5 && fields[0] == "plk1") options.job_id = fields[1];
  }
  if (options.job_id.empty()) {
    std::cerr << "potluck worker: give --job, or a join token (--token) that names it\n";
    return 1;
  }
  options.bind_host = args.bind;
  options.advertise_host = args.advertise;
  options.threads = args.threads;
  options.max_steps = args.steps;
  options.fault_nan_from_step = args.fault_nan_from_step;
  const std::string progress = args.progress;
  options.on_step = [progress](const WorkerProgress& p) {
    if (progress == "json") {
      nlohmann::json j = {{"step", p.step},
                          {"max_steps", p.max_steps},
                          {"loss", p.loss},
                          {"rank", p.rank},
                          {"world", p.world_size},
                          {"generation", p.generation},
                          {"tokens_per_s", p.tokens_per_s},
                          {"samples", p.group_samples},
                          {"rounds", p.rounds},
                          {"round_ended", p.round_ended},
                          {"unix_ms", absl::ToUnixMillis(absl::Now())}};
      if (!std::isnan(p.validation_loss)) j["validation_loss"] = p.validation_loss;
      std::cout << j.dump() << std::endl;
    } else if (progress == "plain" && p.rank == 0) {
      std::cout << absl::StrFormat("step %d/%d  loss %.4f  %d worker(s)  %.0f tokens/s", p.step,
                                   p.max_steps, p.loss, p.world_size, p.tokens_per_s);
      if (!std::isnan(p.validation_loss)) {
        std::cout << absl::StrFormat("  validation loss %.4f", p.validation_loss);
      }
      std::cout << std::endl;
    }
  };
  if (progress == "json") {
    options.on_group = [](const WorkerGroupEvent& e) {
      nlohmann::json j = {{"event", "group"},
                          {"backend", e.backend},
                          {"generation", e.generation},
                          {"rank", e.rank},
                          {"world", e.world_size},
                          {"from_checkpoint", e.from_checkpoint},
                          {"resume_step", e.resume_step},
                          {"heard_unix_ms", absl::ToUnixMillis(e.heard)},
                          {"formed_unix_ms", absl::ToUnixMillis(e.formed)}};
      std::cout << j.dump() << std::endl;
    };
  }
  GrpcClientOptions client_options;
  client_options.tls_root_cert_file = args.tls_ca;
  client_options.join_token = options.token;  // the job's spec and data before Join
  auto client = NewGrpcClient(args.coordinator, client_options);
  if (!client.ok()) {
    std::cerr << "potluck worker: " << client.status() << "\n";
    return 2;
  }
  auto runtime = WorkerRuntime::Create(client->get(), options);
  if (!runtime.ok()) {
    std::cerr << "potluck worker: " << runtime.status() << "\n";
    return 2;
  }
  signals.Handle([&runtime](int) { (*runtime)->Stop(); });
  const absl::Status result = (*runtime)->Run();
  signals.Handle(nullptr);  // the runtime is about to go
  if (!result.ok()) {
    std::cerr << "potluck worker " << (*runtime)->worker_id() << ": " << result << "\n";
    return 2;
  }
  if ((*runtime)->found_finished()) {
    // A volunteer (or a requeued batch job) arriving after the end: done.
    std::cerr << "potluck worker: job " << options.job_id
              << " is already finished; nothing to train\n";
    if (progress == "json") {
      std::cout << nlohmann::json({{"done", true}, {"job_finished", true}}).dump() << std::endl;
    }
    return 0;
  }
  if (progress == "json") {
    // The last line: where this worker ended, and a digest of its whole
    // state, so a launcher can check every worker holds the same model.
    nlohmann::json done = {{"done", true},
                           {"worker", (*runtime)->worker_id()},
                           {"step", (*runtime)->step()},
                           {"digest", absl::StrFormat("%016x", (*runtime)->StateDigest())},
                           // What every member must hold alike (diloco:
                           // inner optimizer state is each worker's own).
                           {"shared_digest", absl::StrFormat("%016x", (*runtime)->SharedDigest())}};
    std::cout << done.dump() << std::endl;
  }
  return 0;
}
#else
int RunWorker(const WorkerArgs&) {
  std::cerr << "potluck worker: this build has no libtorch (POTLUCK_WITH_TORCH=OFF)\n";
  return 3;
}
#endif

}  // namespace

CLI::App* AddWorkerCommand(CLI::App* app, int* exit_code) {
  auto args = std::make_shared<WorkerArgs>();
  CLI::App* worker = app->add_subcommand("worker", "Join a job as a worker and train");
  worker->add_option("--coordinator", args->coordinator, "Coordinator address, host:port")
      ->required();
  worker->add_option("--token", args->token, "Join token for the job");
  worker->add_option("--job", args->job, "Job id (default: the one the token names)");
  worker->add_option("--state-dir", args->state_dir, "Where the worker keeps its id and cache")
      ->required();
  worker
      ->add_option("--backend", args->backend,
                   "Collectives backend: tcp, mpi (under mpirun/srun; each rank keeps its "
                   "state in STATE_DIR/rank-N) or nccl (with --device cuda:N)")
      ->check(CLI::IsMember({"tcp", "mpi", "nccl"}));
  worker->add_option("--device", args->device, "cpu, or cuda:N: the GPU of --backend nccl");
  worker->add_option("--bind", args->bind, "IPv4 address the peer links listen on");
  worker->add_option("--advertise", args->advertise, "Address peers dial (default: --bind)");
  worker->add_option("--tls-ca", args->tls_ca, "PEM certificate to trust (coordinator TLS)");
  worker->add_option("--threads", args->threads, "Compute threads")->check(CLI::Range(1, 1024));
  worker->add_option("--steps", args->steps, "Stop after this step (default: the job's)");
  worker->add_option("--progress", args->progress, "plain, json (one line per step) or none")
      ->check(CLI::IsMember({"plain", "json", "none"}));
  // Fault injection for tests and the chaos suite; not in --help.
  worker->add_option("--fault-nan-from-step", args->fault_nan_from_step)->group("");
  worker->callback([args, exit_code] { *exit_code = RunWorker(*args); });
  return worker;
}

}  // namespace potluck
