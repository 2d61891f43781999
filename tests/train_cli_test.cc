// `potluck sample` and `potluck bench train` as a user runs them.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/run_potluck.h"
#include "worker/model_io.h"
#include "worker/train_bench.h"

namespace potluck {
namespace {

using ::testing::HasSubstr;

TEST(SampleCli, ContinuesThePromptFromTheNewestCheckpoint) {
  const std::string dir =
      std::filesystem::temp_directory_path() / ("potluck-sample-cli-" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  v1::JobSpec job = DefaultLocalJob();
  job.mutable_model()->mutable_gpt()->set_layers(1);
  job.mutable_model()->mutable_gpt()->set_width(32);
  {
    auto store = CheckpointStore::Open(dir);
    ASSERT_TRUE(store.ok());
    auto model = CreateJobModel(job);
    ASSERT_TRUE(model.ok());
    auto config = TrainingConfigFromJob(job, 0);
    auto trainer = Trainer::Create(model->get(), *config);
    ASSERT_TRUE(trainer.ok());
    ASSERT_TRUE(SaveTrainingCheckpoint(store->get(), job, 3, **trainer).ok());
  }
  const CommandResult a = RunPotluck("sample --ckpt " + dir + " --prompt 'GNU ' --tokens 40");
  EXPECT_EQ(a.exit_code, 0) << a.output;
  EXPECT_EQ(a.output.rfind("GNU ", 0), 0u) << a.output;
  EXPECT_EQ(a.output.size(), 4u + 40u + 1u) << a.output;
  // The same seed gives the same text.
  const CommandResult b = RunPotluck("sample --ckpt " + dir + " --prompt 'GNU ' --tokens 40");
  EXPECT_EQ(a.output, b.output);

  const CommandResult missing = RunPotluck("sample --ckpt " + dir + " --step 99");
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_THAT(missing.output, HasSubstr("99"));
  std::filesystem::remove_all(dir);
}

// The loss summary `potluck local` prints last: "loss A at step S -> B at
// step T". False if there is none.
bool LossSummary(const std::string& output, double* first, double* last) {
  const size_t at = output.rfind("\nloss ");
  int first_step = 0, last_step = 0;
  return at != std::string::npos &&
         std::sscanf(output.c_str() + at + 1, "loss %lf at step %d -> %lf at step %d", first,
                     &first_step, last, &last_step) == 4 &&
         first_step < last_step;
}

// The README's first command, with a tiny step count: two worker processes
// around an embedded coordinator, a falling loss, a sample; run again with
// more steps, it resumes where the first run's last checkpoint left off.
TEST(LocalCli, TrainsSamplesAndResumes) {
  const std::string dir =
      std::filesystem::temp_directory_path() / ("potluck-local-cli-" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  const CommandResult first = RunPotluck("local --steps 6 --dir " + dir);
  ASSERT_EQ(first.exit_code, 0) << first.output;
  EXPECT_THAT(first.output, HasSubstr("2 workers"));
  EXPECT_THAT(first.output, HasSubstr("step    6/6"));
  EXPECT_THAT(first.output, HasSubstr("sample from step 6:"));
  // Not a terminal: plain lines, no carriage returns.
  EXPECT_EQ(first.output.find('\r'), std::string::npos);
  const CommandResult second = RunPotluck("local --steps 9 --dir " + dir);
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_THAT(second.output, HasSubstr("resuming from step 6"));
  EXPECT_THAT(second.output, HasSubstr("step    9/9"));
  EXPECT_THAT(second.output, ::testing::Not(HasSubstr("step    1/9")));
  // The loss falls over the nine steps of the two runs.
  double first_loss = 0, mid_loss = 0, resumed_loss = 0, last_loss = 0;
  ASSERT_TRUE(LossSummary(first.output, &first_loss, &mid_loss)) << first.output;
  ASSERT_TRUE(LossSummary(second.output, &resumed_loss, &last_loss)) << second.output;
  EXPECT_LT(last_loss, first_loss) << first.output << second.output;
  std::filesystem::remove_all(dir);
}

TEST(BenchTrainCli, ReportsBothLoopsAndTheOverhead) {
  const CommandResult r = RunPotluck("bench train --steps 2 --rounds 1 --no-exchange --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("\"potluck_tokens_per_s\""));
  EXPECT_THAT(r.output, HasSubstr("\"torch_tokens_per_s\""));
  EXPECT_THAT(r.output, HasSubstr("\"overhead\""));
}

}  // namespace
}  // namespace potluck
