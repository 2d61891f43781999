#include "cli/sample_command.h"

#include <iostream>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

#include "checkpoint/checkpoint_store.h"
#include "common/status.h"
#ifdef POTLUCK_WITH_TORCH
#include "worker/model_io.h"
#include "worker/sampling.h"
#endif

namespace potluck {

namespace {

struct SampleArgs {
  std::string ckpt;
  std::string job;
  uint64_t step = 0;  // 0 = the newest
  std::string prompt;
  uint32_t tokens = 200;
  double temperature = 0.8;
  uint32_t top_k = 40;
  uint64_t seed = 0;
};

#ifdef POTLUCK_WITH_TORCH
absl::StatusOr<std::string> Sample(const SampleArgs& args) {
  ASSIGN_OR_RETURN(auto store, CheckpointStore::Open(args.ckpt));
  std::string job = args.job;
  if (job.empty()) {
    ASSIGN_OR_RETURN(std::vector<std::string> jobs, store->ListJobs());
    if (jobs.size() != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(args.ckpt, " holds ", jobs.size(), " jobs; name one with --job"));
    }
    job = jobs[0];
  }
  std::unique_ptr<CheckpointReader> reader;
  if (args.step == 0) {
    ASSIGN_OR_RETURN(reader, store->OpenLatest(job));
  } else {
    ASSIGN_OR_RETURN(reader, store->OpenCheckpoint(job, args.step));
  }
  ASSIGN_OR_RETURN(auto model, LoadTrainedModel(reader.get()));
  SampleOptions options;
  options.max_new_tokens = args.tokens;
  options.temperature = args.temperature;
  options.top_k = args.top_k;
  options.seed = args.seed;
  return SampleText(model.get(), args.prompt, options);
}
#endif

int RunSample(const SampleArgs& args) {
#ifdef POTLUCK_WITH_TORCH
  const absl::StatusOr<std::string> text = Sample(args);
  if (!text.ok()) {
    std::cerr << "potluck sample: " << text.status() << "\n";
    return 2;
  }
  std::cout << args.prompt << *text << "\n";
  return 0;
#else
  (void)args;
  std::cerr << "potluck sample: this build has no libtorch (POTLUCK_WITH_TORCH=OFF)\n";
  return 3;
#endif
}

}  // namespace

CLI::App* AddSampleCommand(CLI::App* app, int* exit_code) {
  auto args = std::make_shared<SampleArgs>();
  CLI::App* sample = app->add_subcommand("sample", "Generate text from a trained GPT checkpoint");
  sample->add_option("--ckpt", args->ckpt, "Checkpoint store directory")
      ->required()
      ->check(CLI::ExistingDirectory);
  sample->add_option("--job", args->job, "Job id (default: the store's only job)");
  sample->add_option("--step", args->step, "Checkpoint step (default: the newest)");
  sample->add_option("--prompt", args->prompt, "Text to continue");
  sample->add_option("--tokens", args->tokens, "Bytes to generate")->check(CLI::Range(1, 100000));
  sample->add_option("--temperature", args->temperature, "0 = always the likeliest byte")
      ->check(CLI::Range(0.0, 10.0));
  sample->add_option("--top-k", args->top_k, "Sample among the k likeliest (0 = all)");
  sample->add_option("--seed", args->seed, "Random seed");
  sample->callback([args, exit_code] { *exit_code = RunSample(*args); });
  return sample;
}

}  // namespace potluck
