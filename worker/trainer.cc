#include "worker/trainer.h"

#include <cmath>

#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

#include "common/checksum.h"
#include "common/failure.h"
#include "common/status.h"
#include "job/job_spec.h"

namespace potluck {

namespace v1 = potluck::v1;

absl::StatusOr<TrainingConfig> TrainingConfigFromJob(const v1::JobSpec& job,
                                                     uint64_t schedule_steps) {
  // The defaults and range rules are the job library's (job/job_spec.h), the
  // same the coordinator validates with.
  ASSIGN_OR_RETURN(const JobSettings s, ResolveJobSettings(job));
  TrainingConfig c;
  static_cast<JobSettings&>(c) = s;
  c.schedule_steps = schedule_steps;
  switch (s.wire_codec) {
    case v1::WIRE_CODEC_FP16:
      c.codec = WireCodec::kFloat16;
      break;
    case v1::WIRE_CODEC_BF16:
      c.codec = WireCodec::kBFloat16;
      break;
    case v1::WIRE_CODEC_INT8:
      c.codec = WireCodec::kInt8;
      break;
    default:
      c.codec = WireCodec::kNone;
      break;
  }
  return c;
}

double LearningRateAt(const TrainingConfig& c, uint64_t step) {
  if (step < c.warmup_steps) {
    return c.learning_rate * static_cast<double>(step + 1) / static_cast<double>(c.warmup_steps);
  }
  if (c.schedule_steps == 0) return c.learning_rate;
  const double min_lr = c.learning_rate * c.min_lr_ratio;
  const double span = static_cast<double>(std::max<uint64_t>(
      1, c.schedule_steps - std::min(c.schedule_steps, uint64_t{c.warmup_steps})));
  const double progress = std::min(1.0, static_cast<double>(step - c.warmup_steps) / span);
  return min_lr + 0.5 * (c.learning_rate - min_lr) * (1.0 + std::cos(M_PI * progress));
}

namespace {

constexpr int kStateFormat = 1;
constexpr char kStateBlob[] = "trainer";

// SplitMix64: spreads (seed, rank, step, micro-batch) over 64 bits.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

TensorView ViewOf(const torch::Tensor& t, DType dtype) {
  return TensorView(t.data_ptr(), dtype, static_cast<size_t>(t.numel()));
}

}  // namespace

class Trainer::Impl {
 public:
  const TrainingConfig config_;
  uint64_t step_ = 0;
  uint64_t rounds_ = 0;
  uint32_t inner_in_round_ = 0;

  Impl(Model* model, const TrainingConfig& config, const TrainerOptions& options)
      : config_(config),
        model_(model),
        options_(options),
        clock_(options.clock != nullptr ? options.clock : Clock::Real()),
        flat_(model->trainable()),
        dtype_(flat_.values_view().dtype()),
        rng_(at::detail::createCPUGenerator(config.seed)) {
    exp_avg_ = torch::zeros_like(flat_.values());
    exp_avg_sq_ = torch::zeros_like(flat_.values());
    if (diloco()) {
      start_ = flat_.values().clone();
      momentum_ = torch::zeros_like(flat_.values());
      delta_ = torch::zeros_like(flat_.values());
      if (config_.codec != WireCodec::kNone) {
        feedback_ = std::make_unique<ErrorFeedback>(flat_.count());
      }
    }
  }

  bool diloco() const { return config_.mode == v1::SYNC_MODE_DILOCO; }
  bool exchange_pending() const { return exchange_pending_; }

  absl::StatusOr<TrainStepResult> Step(absl::Span<const Batch> batches, Communicator* comm,
                                       int rank) {
    const bool in_group = comm != nullptr && comm->world_size() > 1;
    if (batches.empty() && (diloco() || !in_group)) {
      return absl::InvalidArgumentError("a step needs at least one micro-batch");
    }
    try {
      return StepOrThrow(batches, comm, rank);
    } catch (const c10::Error& e) {
      // libtorch throws on bad input (a token past the vocabulary, a shape
      // that does not fit); the model is untouched: no optimizer step ran.
      return absl::InvalidArgumentError(
          absl::StrCat("step ", step_ + 1, ": ", e.what_without_backtrace()));
    }
  }

  absl::StatusOr<TrainStepResult> StepOrThrow(absl::Span<const Batch> batches, Communicator* comm,
                                              int rank) {
    if (diloco() && exchange_pending_) RETURN_IF_ERROR(OuterStep(comm));
    if (diloco() && inner_in_round_ == 0) round_start_ = clock_->Now();

    // Forward and backward over every micro-batch; the gradient buffer ends
    // holding the mean gradient over them.
    flat_.ZeroGrads();
    double loss_sum = 0;
    int64_t samples = 0;
    for (size_t i = 0; i < batches.size(); ++i) {
      rng_.set_current_seed(Mix(Mix(Mix(config_.seed ^ static_cast<uint64_t>(rank)) ^ step_) ^ i));
      torch::Tensor loss = model_->Loss(batches[i], true, &rng_);
      (loss / static_cast<double>(batches.size())).backward();
      loss_sum += loss.item<double>();
      samples += batches[i].samples();
    }
    TrainStepResult result;
    result.samples = samples;
    result.loss = batches.empty() ? 0.0 : loss_sum / static_cast<double>(batches.size());
    const bool exchange_gradients = !diloco() && comm != nullptr && comm->world_size() > 1;
    // Whether this worker's own gradient is finite, checked before the
    // all-reduce mixes it with the others' (only then is it needed: alone,
    // the norm below tells). A sum is finite exactly when every element is
    // (or it overflows, which is as bad).
    bool locally_finite = true;
    if (exchange_gradients) {
      locally_finite =
          std::isfinite(result.loss) && std::isfinite(flat_.grads().sum().item<double>());
      flat_.scratch().fill_(result.loss);
      std::vector<TensorView> buckets = flat_.GradBuckets(options_.bucket_bytes);
      TensorView& last = buckets.back();
      last = TensorView(last.data(), last.dtype(), last.count() + 1);  // + the loss
      for (const TensorView& bucket : buckets) {
        RETURN_IF_ERROR(Annotate(comm->AllReduce(bucket, ReduceOp::kWeightedAverage,
                                                 clock_->Now() + options_.collective_timeout,
                                                 static_cast<double>(samples)),
                                 absl::StrCat("all-reduce of step ", step_ + 1, "'s gradients")));
      }
      result.loss = flat_.scratch().item<double>();
    }
    result.grad_norm = flat_.grads().norm().item<double>();
    if (!std::isfinite(result.loss) || !std::isfinite(result.grad_norm)) {
      return NonFinite(!exchange_gradients || !locally_finite);
    }
    if (config_.grad_clip_norm > 0 && result.grad_norm > config_.grad_clip_norm) {
      flat_.grads().mul_(config_.grad_clip_norm / (result.grad_norm + 1e-6));
    }
    result.learning_rate = LearningRateAt(config_, step_);
    AdamW(result.learning_rate);
    ++step_;
    result.exchanged = !diloco();
    if (diloco()) {
      ++inner_in_round_;
      round_samples_ += samples;
      if (inner_in_round_ >= config_.inner_steps || RoundOutOfTime()) {
        exchange_pending_ = true;
        RETURN_IF_ERROR(OuterStep(comm));
        result.exchanged = true;
      }
    }
    result.step = step_;
    result.rounds = rounds_;
    return result;
  }

  bool RoundOutOfTime() const {
    return config_.inner_time_limit > absl::ZeroDuration() && inner_in_round_ > 0 &&
           clock_->Now() - round_start_ >= config_.inner_time_limit;
  }

  absl::StatusOr<TrainStepResult> FinishRound(Communicator* comm) {
    if (!diloco()) return absl::FailedPreconditionError("a sync job has no rounds");
    exchange_pending_ = true;
    RETURN_IF_ERROR(OuterStep(comm));
    TrainStepResult result;
    result.step = step_;
    result.rounds = rounds_;
    result.exchanged = true;
    return result;
  }

  absl::StatusOr<double> Evaluate(absl::Span<const Batch> batches) {
    if (batches.empty()) return absl::InvalidArgumentError("nothing to evaluate");
    torch::NoGradGuard no_grad;
    double sum = 0;
    int64_t samples = 0;
    try {
      for (const Batch& b : batches) {
        sum += model_->Loss(b, false, nullptr).item<double>() * static_cast<double>(b.samples());
        samples += b.samples();
      }
    } catch (const c10::Error& e) {
      return absl::InvalidArgumentError(absl::StrCat("evaluation: ", e.what_without_backtrace()));
    }
    return sum / static_cast<double>(samples);
  }

  std::vector<TensorToSave> StateTensors() const {
    std::vector<TensorToSave> out;
    const TensorView values = flat_.values_view();
    for (const FlatSlot& slot : flat_.slots()) {
      out.push_back({"param/" + slot.name, values.Slice(slot.offset, slot.count), slot.shape});
    }
    out.push_back({"optim/exp_avg", ViewOf(exp_avg_, dtype_), {}});
    out.push_back({"optim/exp_avg_sq", ViewOf(exp_avg_sq_, dtype_), {}});
    if (diloco()) {
      out.push_back({"outer/start", ViewOf(start_, dtype_), {}});
      out.push_back({"outer/momentum", ViewOf(momentum_, dtype_), {}});
      if (feedback_ != nullptr) {
        absl::Span<float> residual = feedback_->mutable_residual();
        out.push_back({"outer/feedback", TensorView::Of(residual.data(), residual.size()), {}});
      }
    }
    return out;
  }

  std::string StateBlob() const {
    nlohmann::json j = {{"format", kStateFormat},
                        {"mode", diloco() ? "diloco" : "sync"},
                        {"step", step_},
                        {"adam_steps", adam_steps_},
                        {"rounds", rounds_},
                        {"inner_in_round", inner_in_round_},
                        {"round_samples", round_samples_},
                        {"exchange_pending", exchange_pending_}};
    return j.dump();
  }

  absl::Status Restore(CheckpointReader* reader) {
    // What the checkpoint holds is checked before its tensors are read: a
    // missing or mismatched entry is kInvalidArgument, never a read error.
    const EntryInfo* state = reader->info().Find(kStateBlob);
    if (state == nullptr || state->kind != EntryKind::kBlob) {
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint has no trainer state (blob '", kStateBlob, "')"));
    }
    ASSIGN_OR_RETURN(std::string blob, reader->ReadBlob(kStateBlob));
    ASSIGN_OR_RETURN(Counters counters, ParseStateBlob(blob));
    for (const TensorToSave& t : StateTensors()) {
      const EntryInfo* entry = reader->info().Find(t.name);
      if (entry == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat("checkpoint has no entry ", t.name));
      }
      if (entry->dtype != t.data.dtype() || entry->count() != t.data.count()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "checkpoint entry ", t.name, " holds ", entry->count(), " ", DTypeName(entry->dtype),
            ", this model needs ", t.data.count(), " ", DTypeName(t.data.dtype())));
      }
    }
    for (const TensorToSave& t : StateTensors())
      RETURN_IF_ERROR(reader->ReadTensor(t.name, t.data));
    Apply(counters);
    return absl::OkStatus();
  }

  absl::Status BroadcastState(Communicator* comm, int root, absl::Time deadline) {
    for (const TensorToSave& t : StateTensors()) {
      RETURN_IF_ERROR(
          Annotate(comm->Broadcast(t.data, root, deadline), absl::StrCat("broadcasting ", t.name)));
    }
    std::string blob = comm->rank() == root ? StateBlob() : std::string();
    int64_t size = static_cast<int64_t>(blob.size());
    RETURN_IF_ERROR(comm->Broadcast(TensorView::Of(&size, 1), root, deadline));
    if (size < 0 || size > (1 << 20)) {
      return absl::DataLossError(absl::StrCat("broadcast trainer state of ", size, " bytes"));
    }
    blob.resize(static_cast<size_t>(size));
    RETURN_IF_ERROR(
        comm->Broadcast(TensorView(blob.data(), DType::kUInt8, blob.size()), root, deadline));
    if (comm->rank() != root) {
      ASSIGN_OR_RETURN(Counters counters, ParseStateBlob(blob));
      Apply(counters);
    }
    return absl::OkStatus();
  }

  uint64_t StateDigest() const {
    Checksummer checksum;
    for (const TensorToSave& t : StateTensors())
      checksum.Update(t.data.data(), t.data.size_bytes());
    checksum.Update(StateBlob());
    return checksum.Digest();
  }

  uint64_t OuterDigest() const {
    if (!diloco()) return StateDigest();
    Checksummer checksum;
    for (const torch::Tensor* t : {&start_, &momentum_}) {
      const TensorView v = ViewOf(*t, dtype_);
      checksum.Update(v.data(), v.size_bytes());
    }
    checksum.Update(absl::StrCat(rounds_));
    return checksum.Digest();
  }

 private:
  struct Counters {
    uint64_t step = 0, adam_steps = 0, rounds = 0;
    uint32_t inner_in_round = 0;
    int64_t round_samples = 0;
    bool exchange_pending = false;
  };

  absl::StatusOr<Counters> ParseStateBlob(const std::string& blob) const {
    nlohmann::json j = nlohmann::json::parse(blob, nullptr, false);
    auto corrupt = [](absl::string_view why) {
      return absl::DataLossError(absl::StrCat("trainer state blob: ", why));
    };
    if (!j.is_object()) return corrupt("not a JSON object");
    if (j.value("format", 0) != kStateFormat) {
      return corrupt(
          absl::StrCat("format ", j.value("format", 0), ", this build reads ", kStateFormat));
    }
    const std::string mode = j.value("mode", "");
    if (mode != (diloco() ? "diloco" : "sync")) {
      return absl::InvalidArgumentError(absl::StrCat("checkpoint was trained in mode '", mode,
                                                     "', this job is '",
                                                     diloco() ? "diloco" : "sync", "'"));
    }
    Counters c;
    try {
      c.step = j.at("step").get<uint64_t>();
      c.adam_steps = j.at("adam_steps").get<uint64_t>();
      c.rounds = j.at("rounds").get<uint64_t>();
      c.inner_in_round = j.at("inner_in_round").get<uint32_t>();
      c.round_samples = j.at("round_samples").get<int64_t>();
      c.exchange_pending = j.at("exchange_pending").get<bool>();
    } catch (const nlohmann::json::exception& e) {
      return corrupt(e.what());
    }
    return c;
  }

  void Apply(const Counters& c) {
    step_ = c.step;
    adam_steps_ = c.adam_steps;
    rounds_ = c.rounds;
    inner_in_round_ = c.inner_in_round;
    round_samples_ = c.round_samples;
    exchange_pending_ = c.exchange_pending;
    round_start_ = clock_->Now();
  }

  absl::Status NonFinite(bool this_worker) const {
    const absl::Status status = absl::DataLossError(
        absl::StrCat("non-finite loss or gradient at step ", step_ + 1, " (",
                     this_worker ? "this worker's own" : "from a peer, through the all-reduce",
                     "); the step was not applied"));
    return this_worker ? WithFailure(status, Failure::kOwnStateNotFinite) : status;
  }

  // AdamW (decoupled weight decay) over the flat buffers, the same arithmetic
  // as torch::optim::AdamW.
  void AdamW(double lr) {
    torch::NoGradGuard no_grad;
    ++adam_steps_;
    torch::Tensor& p = flat_.values();
    const torch::Tensor& g = flat_.grads();
    if (config_.weight_decay > 0) p.mul_(1.0 - lr * config_.weight_decay);
    exp_avg_.mul_(config_.beta1).add_(g, 1.0 - config_.beta1);
    exp_avg_sq_.mul_(config_.beta2).addcmul_(g, g, 1.0 - config_.beta2);
    const double t = static_cast<double>(adam_steps_);
    const double correction1 = 1.0 - std::pow(config_.beta1, t);
    const double correction2 = 1.0 - std::pow(config_.beta2, t);
    torch::Tensor denom = (exp_avg_sq_.sqrt() / std::sqrt(correction2)).add_(config_.epsilon);
    p.addcdiv_(exp_avg_, denom, -lr / correction1);
  }

  // The end of a DiLoCo round: average the pseudo-gradients, take the outer step.
  absl::Status OuterStep(Communicator* comm) {
    torch::NoGradGuard no_grad;
    torch::Tensor& values = flat_.values();
    torch::sub_out(delta_, start_, values);
    if (comm != nullptr && comm->world_size() > 1) {
      const absl::Time deadline = clock_->Now() + options_.collective_timeout;
      // Members out of data end their rounds with nothing; when nobody
      // trained (the epoch's end), the round is empty and did not happen.
      double trained = static_cast<double>(round_samples_);
      RETURN_IF_ERROR(
          Annotate(comm->AllReduce(TensorView::Of(&trained, 1), ReduceOp::kSum, deadline),
                   absl::StrCat("all-reduce of round ", rounds_ + 1, "'s sample count")));
      if (trained == 0) {
        inner_in_round_ = 0;
        exchange_pending_ = false;
        return absl::OkStatus();
      }
      const auto weight = static_cast<double>(round_samples_);
      const std::string context =
          absl::StrCat("all-reduce of round ", rounds_ + 1, "'s pseudo-gradient");
      if (config_.codec == WireCodec::kNone) {
        RETURN_IF_ERROR(Annotate(
            comm->AllReduce(ViewOf(delta_, dtype_), ReduceOp::kWeightedAverage, deadline, weight),
            context));
      } else {
        RETURN_IF_ERROR(
            Annotate(comm->CompressedAllReduce(ViewOf(delta_, dtype_), ReduceOp::kWeightedAverage,
                                               config_.codec, feedback_.get(), deadline, weight),
                     context));
      }
    }
    if (!std::isfinite(delta_.sum().item<double>())) {
      return absl::DataLossError(absl::StrCat("non-finite pseudo-gradient in round ", rounds_ + 1,
                                              "; the outer step was not applied"));
    }
    if (config_.outer_momentum > 0) {
      // Nesterov: m = mu m + d; step along d + mu m.
      momentum_.mul_(config_.outer_momentum).add_(delta_);
      delta_.add_(momentum_, config_.outer_momentum);
    }
    values.copy_(start_).add_(delta_, -config_.outer_learning_rate);
    start_.copy_(values);
    ++rounds_;
    inner_in_round_ = 0;
    round_samples_ = 0;
    exchange_pending_ = false;
    return absl::OkStatus();
  }

  Model* const model_;  // not owned; outlives the trainer
  const TrainerOptions options_;
  Clock* const clock_;    // not owned
  FlatParameters& flat_;  // the model's
  const DType dtype_;
  torch::Generator rng_;
  torch::Tensor exp_avg_, exp_avg_sq_;
  uint64_t adam_steps_ = 0;
  // DiLoCo: the round's start parameters, the outer momentum, scratch for the
  // pseudo-gradient, and the codec's error feedback.
  torch::Tensor start_, momentum_, delta_;
  std::unique_ptr<ErrorFeedback> feedback_;
  int64_t round_samples_ = 0;
  bool exchange_pending_ = false;
  absl::Time round_start_;
};

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(Model* model, const TrainingConfig& config,
                                                         const TrainerOptions& options) {
  if (config.mode != v1::SYNC_MODE_SYNC && config.mode != v1::SYNC_MODE_DILOCO) {
    return absl::InvalidArgumentError("mode must be sync or diloco");
  }
  if (config.codec != WireCodec::kNone &&
      model->trainable().values_view().dtype() != DType::kFloat32) {
    return absl::InvalidArgumentError("wire codecs need float32 parameters");
  }
  if (config.inner_steps == 0) return absl::InvalidArgumentError("diloco.inner_steps must be > 0");
  return std::unique_ptr<Trainer>(new Trainer(std::make_unique<Impl>(model, config, options)));
}

Trainer::Trainer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Trainer::~Trainer() = default;

absl::StatusOr<TrainStepResult> Trainer::Step(absl::Span<const Batch> micro_batches,
                                              Communicator* comm, int rank) {
  return impl_->Step(micro_batches, comm, rank);
}
absl::StatusOr<TrainStepResult> Trainer::FinishRound(Communicator* comm) {
  return impl_->FinishRound(comm);
}
absl::StatusOr<double> Trainer::Evaluate(absl::Span<const Batch> batches) {
  return impl_->Evaluate(batches);
}
uint64_t Trainer::OuterDigest() const { return impl_->OuterDigest(); }
uint64_t Trainer::step() const { return impl_->step_; }
uint64_t Trainer::rounds() const { return impl_->rounds_; }
uint32_t Trainer::inner_steps_in_round() const { return impl_->inner_in_round_; }
bool Trainer::exchange_pending() const { return impl_->exchange_pending(); }
bool Trainer::RoundOutOfTime() const { return impl_->RoundOutOfTime(); }
const TrainingConfig& Trainer::config() const { return impl_->config_; }
std::vector<TensorToSave> Trainer::StateTensors() const { return impl_->StateTensors(); }
std::string Trainer::StateBlob() const { return impl_->StateBlob(); }
absl::Status Trainer::Restore(CheckpointReader* reader) { return impl_->Restore(reader); }
absl::Status Trainer::BroadcastState(Communicator* comm, int root, absl::Time deadline) {
  return impl_->BroadcastState(comm, root, deadline);
}
uint64_t Trainer::StateDigest() const { return impl_->StateDigest(); }

}  // namespace potluck
