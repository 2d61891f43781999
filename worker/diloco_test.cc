// DiLoCo against sync on the built-in corpus: the same samples, a validation
// loss within 5%, at least 15x fewer bytes.
#include <gtest/gtest.h>

#include "worker/test_util.h"
#include "worker/train_bench.h"

namespace potluck {
namespace {

TEST(Diloco, MatchesSyncLossWithFifteenTimesFewerBytes) {
  PrepareOptions prepare;
  prepare.out_dir = FreshTempDir("corpus");
  auto dataset = PrepareDataset(prepare);
  ASSERT_TRUE(dataset.ok()) << dataset.status();

  GroupTrainingOptions options;
  options.job = DefaultLocalJob();
  // A smaller GPT than potluck local's, so the test stays quick on 2 cores.
  v1::GptSpec* gpt = options.job.mutable_model()->mutable_gpt();
  gpt->set_context_length(64);
  gpt->set_layers(2);
  gpt->set_width(64);
  options.job.mutable_diloco()->set_inner_steps(20);
  // 400 steps are 20 rounds. The paper's outer momentum of 0.9 (tuned for
  // H=500 and thousands of steps) has not built up and overshoots in 20
  // rounds: measured 9-10% above sync on seeds 1-3, against 1.3-1.8% with
  // 0.5 (docs/training.md).
  options.job.mutable_diloco()->set_outer_learning_rate(0.7);
  options.job.mutable_diloco()->set_outer_momentum(0.5);
  options.dataset = *dataset;
  options.world_size = 2;
  options.steps = 400;
  options.validation_sequences = 256;

  options.job.set_mode(v1::SYNC_MODE_SYNC);
  auto sync = RunGroupTraining(options);
  ASSERT_TRUE(sync.ok()) << sync.status();
  options.job.set_mode(v1::SYNC_MODE_DILOCO);
  auto diloco = RunGroupTraining(options);
  ASSERT_TRUE(diloco.ok()) << diloco.status();
  options.job.mutable_diloco()->set_codec(v1::WIRE_CODEC_INT8);
  auto int8 = RunGroupTraining(options);
  ASSERT_TRUE(int8.ok()) << int8.status();

  std::cout << "validation loss: sync " << sync->validation_loss << ", diloco "
            << diloco->validation_loss << ", diloco+int8 " << int8->validation_loss << "\n"
            << "bytes per sample: sync " << sync->bytes_per_sample() << ", diloco "
            << diloco->bytes_per_sample() << ", diloco+int8 " << int8->bytes_per_sample() << "\n";
  EXPECT_EQ(sync->samples, diloco->samples);
  EXPECT_TRUE(sync->identical);
  EXPECT_TRUE(diloco->identical);
  EXPECT_TRUE(int8->identical);
  // Training did something: from ~ln(256) = 5.5 at the start.
  EXPECT_LT(sync->validation_loss, 3.5);
  EXPECT_LE(diloco->validation_loss, 1.05 * sync->validation_loss);
  EXPECT_LE(int8->validation_loss, 1.05 * sync->validation_loss);
  EXPECT_GE(sync->bytes_sent, 15 * diloco->bytes_sent);
  EXPECT_GE(diloco->bytes_sent, 3 * int8->bytes_sent);
}

}  // namespace
}  // namespace potluck
