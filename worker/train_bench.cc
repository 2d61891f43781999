#include "worker/train_bench.h"

#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"

#include "collectives/rendezvous.h"
#include "collectives/tcp_communicator.h"
#include "collectives/tcp_transport.h"
#include "common/status.h"
#include "job/job_spec.h"
#include "worker/compute_threads.h"
#include "worker/data_feed.h"
#include "worker/model_io.h"
#include "worker/trainer.h"

namespace potluck {

namespace v1 = potluck::v1;

v1::JobSpec DefaultLocalJob() {
  v1::JobSpec job;
  job.set_job_id("local");
  job.set_description("a byte-level GPT on the built-in corpus");
  job.set_seed(1);
  job.set_mode(v1::SYNC_MODE_SYNC);
  v1::GptSpec* gpt = job.mutable_model()->mutable_gpt();
  gpt->set_vocab_size(256);
  gpt->set_context_length(128);
  gpt->set_layers(4);
  gpt->set_heads(4);
  gpt->set_width(128);
  v1::OptimizerSpec* opt = job.mutable_optimizer();
  opt->set_learning_rate(2e-3);
  opt->set_weight_decay(0.01);
  opt->set_beta1(0.9);
  opt->set_beta2(0.95);
  opt->set_grad_clip_norm(1.0);
  opt->set_warmup_steps(20);
  opt->set_min_lr_ratio(0.1);
  job.mutable_batch()->set_micro_batch_size(8);
  job.mutable_batch()->set_global_batch_size(16);
  v1::DilocoSpec* diloco = job.mutable_diloco();
  diloco->set_inner_steps(20);
  diloco->set_outer_learning_rate(0.7);
  // The paper's 0.9 needs more rounds than a short run has to build up
  // (docs/training.md); 0.5 matched sync within 2% over 20 rounds.
  diloco->set_outer_momentum(0.5);
  job.mutable_checkpoint()->set_every_steps(50);
  job.mutable_checkpoint()->set_keep_last(2);
  job.mutable_dataset()->set_epochs(1);
  job.set_eval_every_steps(50);
  job.set_eval_sequences(64);
  return job;
}

namespace {

// Adds the bytes of every frame sent to a counter.
class CountingTransport final : public Transport {
 public:
  CountingTransport(std::unique_ptr<Transport> inner, std::atomic<uint64_t>* bytes)
      : inner_(std::move(inner)), bytes_(bytes) {}
  int rank() const override { return inner_->rank(); }
  int world_size() const override { return inner_->world_size(); }
  absl::Status Exchange(const ExchangeSpec& spec, absl::Time deadline) override {
    for (const auto& frame : spec.send) *bytes_ += frame.size();
    return inner_->Exchange(spec, deadline);
  }
  void Abort() override { inner_->Abort(); }
  void Close() override { inner_->Close(); }

 private:
  std::unique_ptr<Transport> inner_;
  std::atomic<uint64_t>* bytes_;  // not owned; outlives the transport
};

absl::StatusOr<std::string> MakeTempDir(const std::string& prefix) {
  std::string pattern = (std::filesystem::temp_directory_path() / (prefix + "-XXXXXX")).string();
  if (mkdtemp(pattern.data()) == nullptr) return ErrnoStatus(errno, "mkdtemp " + pattern);
  return pattern;
}

}  // namespace

absl::Status RunLoopbackGroup(int world_size,
                              const std::function<void(int rank, Communicator* comm)>& body,
                              std::atomic<uint64_t>* bytes_sent) {
  InMemoryRendezvousStore store;
  absl::BlockingCounter finished(world_size);
  absl::Notification all_finished;
  absl::Mutex mu;
  absl::Status first_error;
  std::vector<std::thread> threads;
  for (int rank = 0; rank < world_size; ++rank) {
    threads.emplace_back([&, rank] {
      TcpTransportOptions options;
      options.rank = rank;
      options.world_size = world_size;
      options.generation = 1;
      options.secret = "loopback-group";
      auto transport = ConnectTcpTransport(&store, options, absl::Now() + absl::Seconds(30));
      if (transport.ok()) {
        std::unique_ptr<Transport> t = std::move(*transport);
        if (bytes_sent != nullptr)
          t = std::make_unique<CountingTransport>(std::move(t), bytes_sent);
        std::unique_ptr<Communicator> comm = NewTransportCommunicator(std::move(t), 1);
        body(rank, comm.get());
        finished.DecrementCount();
        // Links stay up until every rank is done, as a job's would.
        all_finished.WaitForNotification();
      } else {
        absl::MutexLock lock(&mu);
        if (first_error.ok())
          first_error = Annotate(transport.status(), absl::StrCat("rank ", rank));
        finished.DecrementCount();
      }
    });
  }
  finished.Wait();
  all_finished.Notify();
  for (auto& t : threads) t.join();
  return first_error;
}

absl::StatusOr<GroupTrainingResult> RunGroupTraining(const GroupTrainingOptions& options) {
  RETURN_IF_ERROR(ConfigureComputeThreads(options.threads_per_worker).status());
  const v1::JobSpec& job = options.job;
  if (!job.model().has_gpt()) return absl::InvalidArgumentError("group training needs a GPT job");
  ASSIGN_OR_RETURN(TrainingConfig config, TrainingConfigFromJob(job, options.steps));
  const int world = options.world_size;
  const int64_t micro = MicroBatchSize(job);
  const uint32_t context = job.model().gpt().context_length();

  std::atomic<uint64_t> bytes{0};
  absl::Mutex mu;
  std::vector<absl::Status> errors(world);
  std::vector<torch::Tensor> finals(world);
  double validation_loss = 0;
  const absl::Time start = absl::Now();
  const absl::Status group = RunLoopbackGroup(
      world,
      [&](int rank, Communicator* comm) {
        auto run = [&]() -> absl::Status {
          ASSIGN_OR_RETURN(auto model, CreateJobModel(job));
          ASSIGN_OR_RETURN(auto trainer, Trainer::Create(model.get(), config));
          ASSIGN_OR_RETURN(auto feed,
                           DataFeed::Open(options.dataset, DataFeed::Split::kTrain, context));
          for (uint64_t s = 0; s < options.steps; ++s) {
            // Every worker reads the global batch and trains its own rows,
            // so both modes see the same samples.
            ASSIGN_OR_RETURN(Batch all, feed->Next(world * micro));
            const Batch mine{all.inputs.narrow(0, rank * micro, micro),
                             all.targets.narrow(0, rank * micro, micro)};
            RETURN_IF_ERROR(trainer->Step({mine}, comm, rank).status());
          }
          finals[rank] = model->trainable().values().clone();
          if (rank != 0) return absl::OkStatus();
          ASSIGN_OR_RETURN(auto validation,
                           DataFeed::Open(options.dataset, DataFeed::Split::kValidation, context));
          std::vector<Batch> batches;
          for (int64_t left = options.validation_sequences; left > 0; left -= 16) {
            ASSIGN_OR_RETURN(Batch b, validation->Next(std::min<int64_t>(16, left)));
            batches.push_back(std::move(b));
          }
          ASSIGN_OR_RETURN(validation_loss, trainer->Evaluate(batches));
          return absl::OkStatus();
        };
        errors[rank] = run();
      },
      &bytes);
  RETURN_IF_ERROR(group);
  for (int rank = 0; rank < world; ++rank) {
    RETURN_IF_ERROR(Annotate(errors[rank], absl::StrCat("worker ", rank)));
  }
  GroupTrainingResult result;
  result.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  result.validation_loss = validation_loss;
  result.bytes_sent = bytes.load();
  result.samples = options.steps * world * micro;
  result.identical = true;
  for (int rank = 1; rank < world; ++rank) result.identical &= finals[rank].equal(finals[0]);
  return result;
}

namespace {

// The plain libtorch loop the benchmark compares against: the same model
// code, data and optimizer arithmetic, none of potluck's machinery.
class PlainLoop {
 public:
  static absl::StatusOr<std::unique_ptr<PlainLoop>> Create(const v1::JobSpec& job,
                                                           const TrainingConfig& config) {
    auto loop = std::unique_ptr<PlainLoop>(new PlainLoop(config));
    ASSIGN_OR_RETURN(loop->model_, CreateJobModel(job));
    for (const FlatSlot& slot : loop->model_->trainable().slots()) {
      torch::Tensor p = loop->model_->trainable().Parameter(slot.name);
      // Plain gradients, allocated by autograd as usual (not views of a
      // flat buffer, which zero_grad() cannot detach).
      p.mutable_grad() = torch::Tensor();
      loop->params_.push_back(p);
    }
    loop->optimizer_ = std::make_unique<torch::optim::AdamW>(
        loop->params_, torch::optim::AdamWOptions(config.learning_rate)
                           .betas({config.beta1, config.beta2})
                           .eps(config.epsilon)
                           .weight_decay(config.weight_decay));
    return loop;
  }

  double Step(const Batch& batch) {
    for (auto& group : optimizer_->param_groups()) {
      static_cast<torch::optim::AdamWOptions&>(group.options()).lr(LearningRateAt(config_, step_));
    }
    optimizer_->zero_grad();
    torch::Tensor loss = model_->Loss(batch, true, nullptr);
    loss.backward();
    if (config_.grad_clip_norm > 0) {
      torch::nn::utils::clip_grad_norm_(params_, config_.grad_clip_norm);
    }
    optimizer_->step();
    ++step_;
    return loss.item<double>();
  }

 private:
  explicit PlainLoop(const TrainingConfig& config) : config_(config) {}
  const TrainingConfig config_;
  std::unique_ptr<Model> model_;
  std::vector<torch::Tensor> params_;
  std::unique_ptr<torch::optim::AdamW> optimizer_;
  uint64_t step_ = 0;
};

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

}  // namespace

absl::StatusOr<TrainBenchResult> RunTrainBench(const TrainBenchOptions& options) {
  v1::JobSpec job = options.job;
  if (!job.model().has_gpt()) return absl::InvalidArgumentError("the benchmark trains a GPT");
  TrainBenchResult result;
  result.threads = options.threads > 0
                       ? options.threads
                       : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  RETURN_IF_ERROR(ConfigureComputeThreads(result.threads).status());

  Dataset dataset;
  std::string temp_dir;
  if (options.dataset_dir.empty()) {
    ASSIGN_OR_RETURN(temp_dir, MakeTempDir("potluck-train-bench"));
    PrepareOptions prepare;
    prepare.out_dir = temp_dir;
    ASSIGN_OR_RETURN(dataset, PrepareDataset(prepare));
  } else {
    ASSIGN_OR_RETURN(dataset, LoadDataset(options.dataset_dir));
  }

  const uint64_t total = options.rounds * (options.steps + options.warmup_steps);
  ASSIGN_OR_RETURN(TrainingConfig config, TrainingConfigFromJob(job, total));
  config.mode = v1::SYNC_MODE_SYNC;
  ASSIGN_OR_RETURN(auto model, CreateJobModel(job));
  result.parameters = model->trainable().count();
  ASSIGN_OR_RETURN(auto trainer, Trainer::Create(model.get(), config));
  ASSIGN_OR_RETURN(auto plain, PlainLoop::Create(job, config));
  const uint32_t context = job.model().gpt().context_length();
  ASSIGN_OR_RETURN(auto potluck_feed, DataFeed::Open(dataset, DataFeed::Split::kTrain, context));
  ASSIGN_OR_RETURN(auto torch_feed, DataFeed::Open(dataset, DataFeed::Split::kTrain, context));
  const int64_t batch_size =
      job.batch().global_batch_size() > 0 ? job.batch().global_batch_size() : MicroBatchSize(job);
  const double tokens_per_step = static_cast<double>(batch_size) * context;

  // Rounds alternate which loop goes first, so drift in the machine's speed
  // does not favour one.
  for (int round = 0; round < options.rounds; ++round) {
    auto run_potluck = [&]() -> absl::Status {
      absl::Time start;
      for (uint64_t s = 0; s < options.warmup_steps + options.steps; ++s) {
        if (s == options.warmup_steps) start = absl::Now();
        ASSIGN_OR_RETURN(Batch batch, potluck_feed->Next(batch_size));
        ASSIGN_OR_RETURN(TrainStepResult r, trainer->Step({batch}, nullptr));
        result.final_loss_potluck = r.loss;
      }
      result.potluck_rounds.push_back(tokens_per_step * options.steps /
                                      absl::ToDoubleSeconds(absl::Now() - start));
      return absl::OkStatus();
    };
    auto run_torch = [&]() -> absl::Status {
      absl::Time start;
      for (uint64_t s = 0; s < options.warmup_steps + options.steps; ++s) {
        if (s == options.warmup_steps) start = absl::Now();
        ASSIGN_OR_RETURN(Batch batch, torch_feed->Next(batch_size));
        result.final_loss_torch = plain->Step(batch);
      }
      result.torch_rounds.push_back(tokens_per_step * options.steps /
                                    absl::ToDoubleSeconds(absl::Now() - start));
      return absl::OkStatus();
    };
    if (round % 2 == 0) {
      RETURN_IF_ERROR(run_potluck());
      RETURN_IF_ERROR(run_torch());
    } else {
      RETURN_IF_ERROR(run_torch());
      RETURN_IF_ERROR(run_potluck());
    }
  }
  result.potluck_tokens_per_s = Median(result.potluck_rounds);
  result.torch_tokens_per_s = Median(result.torch_rounds);

  if (options.exchange) {
    struct Variant {
      const char* name;
      v1::SyncMode mode;
      v1::WireCodec codec;
    };
    for (const Variant& v : {Variant{"sync", v1::SYNC_MODE_SYNC, v1::WIRE_CODEC_UNSPECIFIED},
                             Variant{"diloco", v1::SYNC_MODE_DILOCO, v1::WIRE_CODEC_UNSPECIFIED},
                             Variant{"diloco+int8", v1::SYNC_MODE_DILOCO, v1::WIRE_CODEC_INT8}}) {
      GroupTrainingOptions group;
      group.job = job;
      group.job.set_mode(v.mode);
      group.job.mutable_diloco()->set_codec(v.codec);
      group.dataset = dataset;
      group.world_size = 2;
      group.steps = options.exchange_steps;
      group.validation_sequences = 32;
      group.threads_per_worker = std::max(1, result.threads / 2);
      ASSIGN_OR_RETURN(GroupTrainingResult r, RunGroupTraining(group));
      result.exchange.push_back({v.name, r.bytes_per_sample(), r.validation_loss});
    }
    RETURN_IF_ERROR(ConfigureComputeThreads(result.threads).status());
  }
  if (!temp_dir.empty()) std::filesystem::remove_all(temp_dir);
  return result;
}

}  // namespace potluck
