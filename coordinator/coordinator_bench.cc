#include "coordinator/coordinator_bench.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

#include "common/status.h"
#include "coordinator/coordinator.h"
#include "coordinator/server.h"
#include "potluck/v1/coordinator.grpc.pb.h"

namespace potluck {

namespace {

using Stub = v1::Coordinator::Stub;

double Percentile(std::vector<double>& values, double p) {
  if (values.empty()) return 0;
  const size_t at = std::min(values.size() - 1, static_cast<size_t>(p * values.size()));
  std::nth_element(values.begin(), values.begin() + at, values.end());
  return values[at];
}

// Latencies (ms) recorded from gRPC's callback threads.
class Samples {
 public:
  void Add(double ms) {
    absl::MutexLock lock(&mu_);
    values_.push_back(ms);
  }
  std::vector<double> Take() {
    absl::MutexLock lock(&mu_);
    return std::move(values_);
  }

 private:
  absl::Mutex mu_;
  std::vector<double> values_ ABSL_GUARDED_BY(mu_);
};

// Counts calls in flight so the run can wait for the last answers.
class InFlight {
 public:
  void Add() {
    absl::MutexLock lock(&mu_);
    ++count_;
  }
  void Done() {
    absl::MutexLock lock(&mu_);
    --count_;
  }
  void AwaitZero() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](int* count) { return *count == 0; }, &count_));
  }

 private:
  absl::Mutex mu_;
  int count_ ABSL_GUARDED_BY(mu_) = 0;
};

std::vector<std::unique_ptr<Stub>> Stubs(const std::string& address, int count,
                                         absl::string_view kind) {
  std::vector<std::unique_ptr<Stub>> stubs;
  for (int i = 0; i < count; ++i) {
    grpc::ChannelArguments arguments;
    // A distinct argument per channel: its own TCP connection.
    arguments.SetString("potluck.bench_channel", absl::StrCat(kind, i));
    stubs.push_back(v1::Coordinator::NewStub(
        grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), arguments)));
  }
  return stubs;
}

// Runs `call(i)` for i in [0, count) on `threads` threads (setup through the
// core: concurrent callers share group commits).
template <typename Call>
absl::Status Parallel(int count, int threads, Call call) {
  std::atomic<int> next{0};
  absl::Mutex mu;
  absl::Status first;
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      for (int i = next++; i < count; i = next++) {
        const absl::Status status = call(i);
        if (!status.ok()) {
          absl::MutexLock lock(&mu);
          if (first.ok()) first = status;
        }
      }
    });
  }
  for (std::thread& thread : pool) thread.join();
  return first;
}

struct LedgerWorker {
  std::string id;
  uint32_t shard = 0;
  uint64_t offset = 0;
  uint64_t sequence = 0;
};

class LedgerLoop {
 public:
  LedgerLoop(Stub* stub, LedgerWorker* worker, uint64_t generation, const std::atomic<bool>* stop,
             const std::atomic<bool>* measuring, std::atomic<uint64_t>* ops,
             std::atomic<uint64_t>* errors, Samples* latencies, InFlight* in_flight)
      : stub_(stub),
        worker_(worker),
        generation_(generation),
        stop_(stop),
        measuring_(measuring),
        ops_(ops),
        errors_(errors),
        latencies_(latencies),
        in_flight_(in_flight) {}

  void Start() { Acquire(); }

 private:
  struct AcquireCall {
    grpc::ClientContext context;
    v1::WorkerRequest request;
    v1::AcquireShardResponse response;
  };
  struct ProgressCall {
    grpc::ClientContext context;
    v1::ReportProgressRequest request;
    v1::ReportProgressResponse response;
    absl::Time sent;
  };

  void Acquire() {
    if (stop_->load()) return;
    auto* call = new AcquireCall;
    call->request.set_job_id("ledger");
    call->request.set_worker_id(worker_->id);
    in_flight_->Add();
    stub_->async()->AcquireShard(&call->context, &call->request, &call->response,
                                 [this, call](grpc::Status status) {
                                   Count(status.ok());
                                   if (status.ok()) worker_->shard = call->response.shard();
                                   delete call;
                                   Progress();
                                   in_flight_->Done();
                                 });
  }

  void Progress() {
    if (stop_->load()) return;
    auto* call = new ProgressCall;
    call->request.set_job_id("ledger");
    call->request.set_worker_id(worker_->id);
    call->request.set_request_id(absl::StrCat(worker_->id, "-", ++worker_->sequence));
    call->request.set_generation(generation_);
    call->request.set_shard(worker_->shard);
    call->request.set_offset(++worker_->offset);
    call->request.set_step(1);
    call->sent = absl::Now();
    in_flight_->Add();
    stub_->async()->ReportProgress(
        &call->context, &call->request, &call->response, [this, call](grpc::Status status) {
          Count(status.ok());
          if (status.ok() && measuring_->load()) {
            latencies_->Add(absl::ToDoubleMilliseconds(absl::Now() - call->sent));
          }
          delete call;
          Acquire();
          in_flight_->Done();
        });
  }

  void Count(bool ok) {
    if (!measuring_->load()) return;
    if (ok) {
      ops_->fetch_add(1);
    } else {
      errors_->fetch_add(1);
    }
  }

  Stub* const stub_;            // the run's; outlive the loop
  LedgerWorker* const worker_;  // the run's
  const uint64_t generation_;
  const std::atomic<bool>* const stop_;
  const std::atomic<bool>* const measuring_;
  std::atomic<uint64_t>* const ops_;
  std::atomic<uint64_t>* const errors_;
  Samples* const latencies_;
  InFlight* const in_flight_;
};

}  // namespace

absl::StatusOr<CoordinatorBenchResult> RunCoordinatorBench(const CoordinatorBenchOptions& options) {
  if (options.dir.empty() || options.workers < 1 || options.workers_per_job < 1 ||
      options.ledger_workers < 1 || options.channels < 1) {
    return absl::InvalidArgumentError("coordinator bench: bad options");
  }
  const absl::Time setup_start = absl::Now();
  const int jobs = (options.workers + options.workers_per_job - 1) / options.workers_per_job;
  CoordinatorOptions core_options;
  core_options.data_dir = options.dir;
  core_options.sync_writes = true;
  // Nothing may expire during setup or the run: leases are not what is measured.
  core_options.lease = absl::Hours(1);
  core_options.rendezvous_timeout = absl::Hours(1);
  const int ledger_workers = options.ledger_workers;
  core_options.load_shards =
      [ledger_workers](const v1::JobSpec& spec) -> absl::StatusOr<std::vector<ShardSpec>> {
    std::vector<ShardSpec> shards;
    const int count = spec.job_id() == "ledger" ? ledger_workers : 1;
    for (int i = 0; i < count; ++i) shards.push_back({absl::StrCat("s", i), uint64_t{1} << 40});
    return shards;
  };
  ASSIGN_OR_RETURN(std::unique_ptr<Coordinator> core, Coordinator::Open(core_options));
  ASSIGN_OR_RETURN(std::string admin, core->CreateAdminToken(absl::Hours(1)));
  auto spec = [](const std::string& id) {
    v1::JobSpec s;
    s.set_job_id(id);
    s.mutable_model()->mutable_mlp()->set_input_dim(4);
    s.mutable_model()->mutable_mlp()->set_num_classes(2);
    s.mutable_dataset()->set_manifest("synthetic");
    s.mutable_dataset()->set_epochs(1);
    s.mutable_optimizer()->set_learning_rate(0.01f);
    s.set_mode(v1::SYNC_MODE_SYNC);
    s.mutable_batch()->set_micro_batch_size(1);
    s.mutable_batch()->set_global_batch_size(1);
    s.mutable_access()->set_open(true);
    return s;
  };
  for (int j = 0; j < jobs; ++j) {
    RETURN_IF_ERROR(core->SubmitJob(admin, spec(absl::StrCat("hb-", j))).status());
  }
  RETURN_IF_ERROR(core->SubmitJob(admin, spec("ledger")).status());
  auto hb_job = [&](int i) { return absl::StrCat("hb-", i / options.workers_per_job); };
  auto hb_worker = [](int i) { return absl::StrCat("h", i); };
  RETURN_IF_ERROR(Parallel(options.workers, 64, [&](int i) {
    return core->Join({hb_job(i), "", hb_worker(i), "127.0.0.1:1"}).status();
  }));
  std::vector<LedgerWorker> ledger(options.ledger_workers);
  for (int i = 0; i < options.ledger_workers; ++i) ledger[i].id = absl::StrCat("l", i);
  RETURN_IF_ERROR(Parallel(options.ledger_workers, 64, [&](int i) {
    return core->Join({"ledger", "", ledger[i].id, "127.0.0.1:1"}).status();
  }));
  ASSIGN_OR_RETURN(WorkerStatus first, core->Heartbeat("ledger", ledger[0].id));
  uint64_t generation = first.generation;
  for (int round = 0; round < 2; ++round) {
    for (LedgerWorker& worker : ledger) {
      ASSIGN_OR_RETURN(RendezvousResult result, core->Rendezvous("ledger", worker.id, generation));
      if (result.state == RendezvousResult::State::kSuperseded) {
        return absl::InternalError("coordinator bench: the ledger group regrouped during setup");
      }
    }
  }
  RETURN_IF_ERROR(Parallel(options.ledger_workers, 64, [&](int i) -> absl::Status {
    ASSIGN_OR_RETURN(ShardLease lease, core->AcquireShard("ledger", ledger[i].id));
    ledger[i].shard = lease.shard;
    ledger[i].offset = lease.offset;
    return absl::OkStatus();
  }));

  ASSIGN_OR_RETURN(std::unique_ptr<CoordinatorServer> server,
                   CoordinatorServer::Start(core.get(), CoordinatorServerOptions()));
  const std::string address = absl::StrCat("127.0.0.1:", server->port());
  std::vector<std::unique_ptr<Stub>> hb_stubs = Stubs(address, options.channels, "hb");
  std::vector<std::unique_ptr<Stub>> ledger_stubs = Stubs(address, options.channels, "ledger");
  CoordinatorBenchResult result;
  result.setup_seconds = absl::ToDoubleSeconds(absl::Now() - setup_start);

  std::atomic<bool> stop{false};
  std::atomic<bool> measuring{false};
  std::atomic<uint64_t> heartbeats{0}, heartbeat_errors{0}, ledger_ops{0}, ledger_errors{0};
  Samples heartbeat_ms, progress_ms;
  InFlight in_flight;

  std::vector<std::unique_ptr<LedgerLoop>> loops;
  for (int i = 0; i < options.ledger_workers; ++i) {
    loops.push_back(std::make_unique<LedgerLoop>(
        ledger_stubs[i % ledger_stubs.size()].get(), &ledger[i], generation, &stop, &measuring,
        &ledger_ops, &ledger_errors, &progress_ms, &in_flight));
  }
  for (auto& loop : loops) loop->Start();

  // Heartbeats: worker i is due at start + i/N s, then every second.
  struct HeartbeatCall {
    grpc::ClientContext context;
    v1::WorkerRequest request;
    v1::HeartbeatResponse response;
    absl::Time due;
  };
  const absl::Time start = absl::Now();
  const absl::Time measure_from = start + options.warmup;
  const absl::Time end = measure_from + options.duration;
  const absl::Duration period = absl::Seconds(1);
  uint64_t issued = 0;
  for (;;) {
    const absl::Time now = absl::Now();
    if (now >= end) break;
    measuring.store(now >= measure_from);
    // Every heartbeat due by now, in order.
    for (;;) {
      const uint64_t round = issued / options.workers;
      const int i = static_cast<int>(issued % options.workers);
      const absl::Time due = start + period * static_cast<double>(round) +
                             period * (static_cast<double>(i) / options.workers);
      if (due > now || due >= end) break;
      auto* call = new HeartbeatCall;
      call->request.set_job_id(hb_job(i));
      call->request.set_worker_id(hb_worker(i));
      call->due = due;
      const bool counted = due >= measure_from;
      in_flight.Add();
      hb_stubs[i % hb_stubs.size()]->async()->Heartbeat(
          &call->context, &call->request, &call->response, [&, call, counted](grpc::Status status) {
            if (counted) {
              if (status.ok()) {
                heartbeats.fetch_add(1);
                heartbeat_ms.Add(absl::ToDoubleMilliseconds(absl::Now() - call->due));
              } else {
                heartbeat_errors.fetch_add(1);
              }
            }
            delete call;
            in_flight.Done();
          });
      ++issued;
    }
    absl::SleepFor(absl::Microseconds(500));
  }
  measuring.store(false);
  stop.store(true);
  in_flight.AwaitZero();
  result.seconds = absl::ToDoubleSeconds(options.duration);
  server->Shutdown(absl::Seconds(1));

  std::vector<double> hb = heartbeat_ms.Take();
  std::vector<double> progress = progress_ms.Take();
  result.heartbeats = heartbeats.load();
  result.heartbeat_errors = heartbeat_errors.load();
  result.heartbeat_p50_ms = Percentile(hb, 0.50);
  result.heartbeat_p99_ms = Percentile(hb, 0.99);
  result.heartbeat_max_ms = hb.empty() ? 0 : *std::max_element(hb.begin(), hb.end());
  result.ledger_ops = ledger_ops.load();
  result.ledger_errors = ledger_errors.load();
  result.ledger_ops_per_s = result.ledger_ops / result.seconds;
  result.progress_p50_ms = Percentile(progress, 0.50);
  result.progress_p99_ms = Percentile(progress, 0.99);
  return result;
}

}  // namespace potluck
