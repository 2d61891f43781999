// The training benchmark behind `potluck bench train`, and the in-process
// group runs it and the DiLoCo tests share.
//
// - RunTrainBench: one worker trains the job's GPT for a fixed number of
//   steps through potluck's Trainer, and the same model, data and optimizer
//   through a plain libtorch loop (torch::optim::AdamW, loss.backward(),
//   clip_grad_norm_) written here, alternating, in the same process; reports
//   tokens/s of both and potluck's overhead.
// - RunGroupTraining: `world` workers as threads, joined by potluck's TCP
//   collectives on loopback through a byte-counting transport, train a job
//   from a dataset and report the validation loss and the bytes they sent.
//
// Thread-safety: one call at a time per process (they set libtorch's threads).
#ifndef POTLUCK_WORKER_TRAIN_BENCH_H_
#define POTLUCK_WORKER_TRAIN_BENCH_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

#include "collectives/communicator.h"
#include "data/dataset.h"
#include "potluck/v1/job.pb.h"

namespace potluck {

// The job `potluck local` trains by default: a 4-layer, 128-wide byte-level
// GPT with a context of 128 on the built-in corpus, in sync mode.
potluck::v1::JobSpec DefaultLocalJob();

// Runs `body(rank, comm)` on `world_size` threads joined by a TCP group on
// loopback, adding every byte of every frame they send to `*bytes_sent`
// (if non-null). Returns once every body has returned; the error of a rank
// that could not connect otherwise.
absl::Status RunLoopbackGroup(int world_size,
                              const std::function<void(int rank, Communicator* comm)>& body,
                              std::atomic<uint64_t>* bytes_sent = nullptr);

struct GroupTrainingOptions {
  potluck::v1::JobSpec job;  // mode, model, optimizer, batch.micro_batch_size
  Dataset dataset;
  int world_size = 2;
  // Steps per worker (sync steps or diloco inner steps); each worker trains
  // micro_batch_size sequences per step, so both modes see the same samples.
  uint64_t steps = 100;
  // Validation sequences the final loss is measured on (from the start of
  // the validation split).
  int64_t validation_sequences = 128;
  int threads_per_worker = 1;
};

struct GroupTrainingResult {
  double validation_loss = 0;
  uint64_t bytes_sent = 0;  // by all workers together, frames only
  uint64_t samples = 0;     // by all workers together
  double seconds = 0;
  bool identical = false;  // every worker ended with the same parameter bits
  double bytes_per_sample() const { return samples ? double(bytes_sent) / samples : 0; }
};

absl::StatusOr<GroupTrainingResult> RunGroupTraining(const GroupTrainingOptions& options);

struct TrainBenchOptions {
  potluck::v1::JobSpec job = DefaultLocalJob();
  std::string dataset_dir;  // empty: prepare the built-in corpus in a temporary directory
  uint64_t steps = 30;      // timed steps per round and loop
  uint64_t warmup_steps = 3;
  int rounds = 3;   // alternating rounds; medians are reported
  int threads = 0;  // 0: every core
  // Also measure bytes per sample for sync, diloco (H=20) and diloco + int8
  // with 2 workers.
  bool exchange = true;
  uint64_t exchange_steps = 40;
};

struct TrainBenchResult {
  double potluck_tokens_per_s = 0;
  double torch_tokens_per_s = 0;
  double overhead() const { return torch_tokens_per_s / potluck_tokens_per_s - 1.0; }
  std::vector<double> potluck_rounds, torch_rounds;  // tokens/s per round
  double final_loss_potluck = 0, final_loss_torch = 0;
  uint64_t parameters = 0;
  int threads = 0;
  struct Exchange {
    std::string mode;  // "sync", "diloco", "diloco+int8"
    double bytes_per_sample = 0;
    double validation_loss = 0;
  };
  std::vector<Exchange> exchange;
};

absl::StatusOr<TrainBenchResult> RunTrainBench(const TrainBenchOptions& options);

}  // namespace potluck

#endif  // POTLUCK_WORKER_TRAIN_BENCH_H_
