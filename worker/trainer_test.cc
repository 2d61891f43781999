#include "worker/trainer.h"

#include <atomic>
#include <cmath>
#include <fstream>
#include <mutex>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/failure.h"
#include "data/dataset.h"
#include "worker/data_feed.h"
#include "worker/model_io.h"
#include "worker/test_util.h"

namespace potluck {
namespace {

using ::testing::HasSubstr;

class TrainerTest : public ::testing::Test {
 protected:
  // One thread, so kernels are deterministic and ranks on threads don't fight.
  void SetUp() override { torch::set_num_threads(1); }
};

std::unique_ptr<Model> MustCreate(const v1::ModelSpec& spec, uint64_t seed,
                                  torch::Dtype dtype = torch::kFloat32) {
  auto model = CreateModel(spec, seed, {dtype});
  POTLUCK_CHECK(model.ok()) << model.status();
  return std::move(*model);
}

std::unique_ptr<Trainer> MustTrainer(Model* model, const TrainingConfig& config) {
  auto trainer = Trainer::Create(model, config);
  POTLUCK_CHECK(trainer.ok()) << trainer.status();
  return std::move(*trainer);
}

// The largest |a - b| relative to the largest |b|.
double RelativeDifference(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>() / b.abs().max().item<double>();
}

TEST_F(TrainerTest, LearningRateWarmsUpThenDecaysAlongACosine) {
  TrainingConfig c;
  c.learning_rate = 1.0;
  c.warmup_steps = 10;
  c.schedule_steps = 110;
  c.min_lr_ratio = 0.1;
  EXPECT_DOUBLE_EQ(LearningRateAt(c, 0), 0.1);
  EXPECT_DOUBLE_EQ(LearningRateAt(c, 9), 1.0);
  EXPECT_DOUBLE_EQ(LearningRateAt(c, 10), 1.0);
  EXPECT_NEAR(LearningRateAt(c, 60), 0.55, 1e-12);
  EXPECT_NEAR(LearningRateAt(c, 110), 0.1, 1e-12);
  EXPECT_NEAR(LearningRateAt(c, 500), 0.1, 1e-12);
  c.schedule_steps = 0;
  EXPECT_DOUBLE_EQ(LearningRateAt(c, 500), 1.0);
}

TEST_F(TrainerTest, JobSettingsAreReadWithDefaultsAndCheckedByField) {
  v1::JobSpec job;
  auto config = TrainingConfigFromJob(job, 100);
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(config->mode, v1::SYNC_MODE_SYNC);
  EXPECT_DOUBLE_EQ(config->outer_learning_rate, 0.7);
  EXPECT_DOUBLE_EQ(config->outer_momentum, 0.9);
  EXPECT_EQ(config->schedule_steps, 100u);
  job.mutable_diloco()->set_codec(v1::WIRE_CODEC_INT8);
  job.mutable_diloco()->set_inner_steps(7);
  config = TrainingConfigFromJob(job, 0);
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(config->codec, WireCodec::kInt8);
  EXPECT_EQ(config->inner_steps, 7u);
  job.mutable_optimizer()->set_beta2(1.5);
  EXPECT_THAT(TrainingConfigFromJob(job, 0).status().message(), HasSubstr("optimizer.beta2"));
  job.mutable_optimizer()->set_beta2(0.99);
  job.mutable_diloco()->set_outer_momentum(1.0);
  EXPECT_THAT(TrainingConfigFromJob(job, 0).status().message(), HasSubstr("diloco.outer_momentum"));
}

// `sync` on 2 and 3 ranks (threads over loopback TCP), each with two
// micro-batches, ends where one process training on the whole batch ends.
class SyncEquivalenceTest : public TrainerTest, public ::testing::WithParamInterface<int> {};

TEST_P(SyncEquivalenceTest, MatchesOneProcessOnTheConcatenatedBatches) {
  const int world = GetParam();
  constexpr int kSteps = 20, kRowsPerRank = 4;
  const v1::ModelSpec spec = TinyGptSpec(13, 6, 2, 2, 16);
  TrainingConfig config;
  config.learning_rate = 3e-3;
  config.warmup_steps = 3;
  config.schedule_steps = kSteps;
  config.weight_decay = 0.01;
  config.grad_clip_norm = 0.5;
  auto global_batch = [&](int step) {
    return RandomTokens(world * kRowsPerRank, 6, 13, 1000 + step % 3);  // learnable
  };

  auto reference = MustCreate(spec, 42);
  auto reference_trainer = MustTrainer(reference.get(), config);
  std::vector<double> reference_losses;
  for (int s = 0; s < kSteps; ++s) {
    auto r = reference_trainer->Step({global_batch(s)}, nullptr);
    ASSERT_TRUE(r.ok()) << r.status();
    reference_losses.push_back(r->loss);
  }

  std::vector<torch::Tensor> finals(world);
  std::vector<std::vector<double>> losses(world);
  RunRanks(world, [&](int rank, Communicator* comm) {
    auto model = MustCreate(spec, 42);
    auto trainer = MustTrainer(model.get(), config);
    for (int s = 0; s < kSteps; ++s) {
      const Batch all = global_batch(s);
      const int64_t first = rank * kRowsPerRank;
      const std::vector<Batch> micro = {Rows(all, first, 2), Rows(all, first + 2, 2)};
      auto r = trainer->Step(micro, comm, rank);
      ASSERT_TRUE(r.ok()) << "rank " << rank << ": " << r.status();
      EXPECT_TRUE(r->exchanged);
      losses[rank].push_back(r->loss);
    }
    finals[rank] = model->trainable().values().clone();
  });
  for (int rank = 0; rank < world; ++rank) {
    ASSERT_TRUE(finals[rank].defined());
    EXPECT_LE(RelativeDifference(finals[rank], reference->trainable().values()), 1e-5)
        << "rank " << rank;
    // Every rank holds the same bits.
    EXPECT_TRUE(finals[rank].equal(finals[0])) << "rank " << rank << " differs from rank 0";
    EXPECT_NEAR(losses[rank].back(), reference_losses.back(), 1e-5);
  }
  EXPECT_LT(reference_losses.back(), reference_losses.front());
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, SyncEquivalenceTest, ::testing::Values(2, 3));

// A small text dataset in `dir`, prepared like `potluck data prepare`.
Dataset MustPrepare(const std::string& dir) {
  const std::string text_path = dir + "/corpus.txt";
  {
    std::ofstream text(text_path);
    for (int i = 0; i < 400; ++i) {
      text << "line " << i << ": the quick brown fox jumps over the lazy dog " << i * 7 << "\n";
    }
  }
  PrepareOptions options;
  options.inputs = {text_path};
  options.out_dir = dir + "/data";
  options.shard_tokens = 4096;
  auto dataset = PrepareDataset(options);
  POTLUCK_CHECK(dataset.ok()) << dataset.status();
  return *dataset;
}

TEST_F(TrainerTest, ResumedSyncRunIsBitwiseEqualToAnUninterruptedOne) {
  const std::string dir = FreshTempDir("resume");
  const Dataset dataset = MustPrepare(dir);
  v1::JobSpec job;
  job.set_job_id("resume-test");
  job.set_seed(5);
  *job.mutable_model() = TinyGptSpec(256, 16, 2, 2, 16);
  job.mutable_model()->mutable_gpt()->set_dropout(0.1);  // randomness must resume too
  job.mutable_optimizer()->set_warmup_steps(2);
  constexpr int kHalf = 6;
  auto config = TrainingConfigFromJob(job, 2 * kHalf);
  ASSERT_TRUE(config.ok());

  auto train = [&](Trainer* trainer, DataFeed* feed, int steps) {
    for (int i = 0; i < steps; ++i) {
      auto a = feed->Next(3);
      auto b = feed->Next(3);
      ASSERT_TRUE(a.ok() && b.ok());
      ASSERT_TRUE(trainer->Step({*a, *b}, nullptr).ok());
    }
  };

  // Uninterrupted.
  auto straight = CreateJobModel(job);
  ASSERT_TRUE(straight.ok());
  auto straight_trainer = MustTrainer(straight->get(), *config);
  auto straight_feed = DataFeed::Open(dataset, DataFeed::Split::kTrain, 16);
  ASSERT_TRUE(straight_feed.ok());
  train(straight_trainer.get(), straight_feed->get(), 2 * kHalf);

  // Interrupted at kHalf: everything saved, then dropped.
  auto store = CheckpointStore::Open(dir + "/ckpt");
  ASSERT_TRUE(store.ok());
  {
    auto model = CreateJobModel(job);
    auto trainer = MustTrainer(model->get(), *config);
    auto feed = DataFeed::Open(dataset, DataFeed::Split::kTrain, 16);
    train(trainer.get(), feed->get(), kHalf);
    const std::string cursor = DataFeed::CursorToJson((*feed)->cursor());
    ASSERT_TRUE(
        SaveTrainingCheckpoint(store->get(), job, kHalf, *trainer, {{"data/cursor", cursor}}).ok());
  }
  // Fresh objects (another seed, to prove the checkpoint sets every bit).
  auto reader = (*store)->OpenLatest(job.job_id());
  ASSERT_TRUE(reader.ok());
  v1::JobSpec other_seed = job;
  other_seed.set_seed(77);
  auto model = CreateJobModel(other_seed);
  auto trainer = MustTrainer(model->get(), *config);
  ASSERT_TRUE(trainer->Restore(reader->get()).ok());
  EXPECT_EQ(trainer->step(), static_cast<uint64_t>(kHalf));
  auto feed = DataFeed::Open(dataset, DataFeed::Split::kTrain, 16);
  auto cursor = DataFeed::CursorFromJson(*(*reader)->ReadBlob("data/cursor"));
  ASSERT_TRUE(cursor.ok());
  ASSERT_TRUE((*feed)->Seek(*cursor).ok());
  train(trainer.get(), feed->get(), kHalf);

  EXPECT_TRUE(SameBits(**model, **straight));
  EXPECT_EQ((*feed)->cursor(), (*straight_feed)->cursor());

  // The checkpoint alone rebuilds the model (for sampling and export).
  auto loaded = LoadTrainedModel(reader->get());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->spec().gpt().width(), 16u);
}

TEST_F(TrainerTest, ResumedDilocoRunIsBitwiseEqualEvenMidRoundWithInt8) {
  const std::string dir = FreshTempDir("diloco-resume");
  v1::JobSpec job;
  job.set_job_id("diloco-resume");
  job.set_mode(v1::SYNC_MODE_DILOCO);
  job.mutable_diloco()->set_inner_steps(3);
  job.mutable_diloco()->set_codec(v1::WIRE_CODEC_INT8);
  *job.mutable_model() = TinyGptSpec(13, 6, 2, 2, 16);
  auto config = TrainingConfigFromJob(job, 20);
  ASSERT_TRUE(config.ok());
  constexpr int kWorld = 2, kHalf = 4, kTotal = 10;  // the save falls inside round 2
  auto batch = [](int rank, int step) { return RandomTokens(4, 6, 13, 100 * rank + step); };

  std::vector<torch::Tensor> straight(kWorld), resumed(kWorld);
  RunRanks(kWorld, [&](int rank, Communicator* comm) {
    auto model = MustCreate(job.model(), 1);
    auto trainer = MustTrainer(model.get(), *config);
    for (int s = 0; s < kTotal; ++s) ASSERT_TRUE(trainer->Step({batch(rank, s)}, comm, rank).ok());
    EXPECT_EQ(trainer->rounds(), 3u);
    straight[rank] = model->trainable().values().clone();
  });
  RunRanks(kWorld, [&](int rank, Communicator* comm) {
    auto store = CheckpointStore::Open(dir + "/rank" + std::to_string(rank));
    ASSERT_TRUE(store.ok());
    {
      auto model = MustCreate(job.model(), 1);
      auto trainer = MustTrainer(model.get(), *config);
      for (int s = 0; s < kHalf; ++s) {
        ASSERT_TRUE(trainer->Step({batch(rank, s)}, comm, rank).ok());
      }
      EXPECT_EQ(trainer->inner_steps_in_round(), 1u);
      ASSERT_TRUE(SaveTrainingCheckpoint(store->get(), job, kHalf, *trainer).ok());
    }
    auto model = MustCreate(job.model(), 2);
    auto trainer = MustTrainer(model.get(), *config);
    auto reader = (*store)->OpenLatest(job.job_id());
    ASSERT_TRUE(reader.ok());
    ASSERT_TRUE(trainer->Restore(reader->get()).ok());
    for (int s = kHalf; s < kTotal; ++s) {
      ASSERT_TRUE(trainer->Step({batch(rank, s)}, comm, rank).ok());
    }
    resumed[rank] = model->trainable().values().clone();
  });
  for (int rank = 0; rank < kWorld; ++rank) {
    ASSERT_TRUE(straight[rank].defined() && resumed[rank].defined());
    EXPECT_TRUE(resumed[rank].equal(straight[rank])) << "rank " << rank;
  }
}

TEST_F(TrainerTest, DilocoWithOneInnerStepAndPlainOuterSgdIsParameterAveraging) {
  constexpr int kWorld = 2, kRounds = 6;
  const v1::ModelSpec spec = TinyGptSpec(13, 6, 2, 2, 16);
  TrainingConfig config;
  config.learning_rate = 3e-3;
  auto batch = [](int rank, int step) { return RandomTokens(2 + rank, 6, 13, 10 * rank + step); };

  // By hand: each worker takes a local AdamW step, then the models are
  // replaced by their average weighted by samples.
  std::vector<std::unique_ptr<Model>> models;
  std::vector<std::unique_ptr<Trainer>> trainers;
  for (int r = 0; r < kWorld; ++r) {
    models.push_back(MustCreate(spec, 9, torch::kFloat64));
    trainers.push_back(MustTrainer(models[r].get(), config));
  }
  for (int s = 0; s < kRounds; ++s) {
    torch::Tensor sum = torch::zeros_like(models[0]->trainable().values());
    double weights = 0;
    for (int r = 0; r < kWorld; ++r) {
      ASSERT_TRUE(trainers[r]->Step({batch(r, s)}, nullptr).ok());
      sum += models[r]->trainable().values() * double(2 + r);
      weights += 2 + r;
    }
    torch::NoGradGuard no_grad;
    for (int r = 0; r < kWorld; ++r) models[r]->trainable().values().copy_(sum / weights);
  }

  TrainingConfig diloco = config;
  diloco.mode = v1::SYNC_MODE_DILOCO;
  diloco.inner_steps = 1;
  diloco.outer_learning_rate = 1.0;
  diloco.outer_momentum = 0.0;
  std::vector<torch::Tensor> finals(kWorld);
  RunRanks(kWorld, [&](int rank, Communicator* comm) {
    auto model = MustCreate(spec, 9, torch::kFloat64);
    auto trainer = MustTrainer(model.get(), diloco);
    for (int s = 0; s < kRounds; ++s) {
      auto r = trainer->Step({batch(rank, s)}, comm, rank);
      ASSERT_TRUE(r.ok()) << r.status();
      EXPECT_TRUE(r->exchanged);
    }
    EXPECT_EQ(trainer->rounds(), static_cast<uint64_t>(kRounds));
    finals[rank] = model->trainable().values().clone();
  });
  for (int rank = 0; rank < kWorld; ++rank) {
    ASSERT_TRUE(finals[rank].defined());
    EXPECT_LE(RelativeDifference(finals[rank], models[0]->trainable().values()), 1e-12);
  }
}

// A worker out of data ends its round early with FinishRound: its exchange
// pairs with the others' round end, it adds weight 0 when it trained nothing,
// and a round nobody trained in is empty: nothing changes, no round counts.
TEST_F(TrainerTest, DilocoFinishRoundPairsWithTheOthersAndAnEmptyRoundChangesNothing) {
  const v1::ModelSpec spec = TinyGptSpec(13, 6, 2, 2, 16);
  TrainingConfig config;
  config.mode = v1::SYNC_MODE_DILOCO;
  config.inner_steps = 3;
  config.outer_learning_rate = 0.7;
  config.outer_momentum = 0.9;
  std::vector<torch::Tensor> finals(2);
  std::vector<uint64_t> digests(2);
  RunRanks(2, [&](int rank, Communicator* comm) {
    auto model = MustCreate(spec, 9, torch::kFloat64);
    auto trainer = MustTrainer(model.get(), config);
    // Round 1: rank 1 trains one inner step and ends early; rank 0 trains 3.
    const int steps = rank == 0 ? 3 : 1;
    for (int s = 0; s < steps; ++s) {
      auto r = trainer->Step({RandomTokens(2, 6, 13, 10 * rank + s)}, comm, rank);
      ASSERT_TRUE(r.ok()) << r.status();
      EXPECT_EQ(r->exchanged, s == 2);
    }
    if (rank == 1) {
      ASSERT_TRUE(trainer->FinishRound(comm).ok());
    }
    EXPECT_EQ(trainer->rounds(), 1u);
    // Round 2: rank 1 has nothing (weight 0), rank 0 trains a full round.
    if (rank == 0) {
      for (int s = 0; s < 3; ++s) {
        ASSERT_TRUE(trainer->Step({RandomTokens(2, 6, 13, 100 + s)}, comm, rank).ok());
      }
    } else {
      ASSERT_TRUE(trainer->FinishRound(comm).ok());
    }
    EXPECT_EQ(trainer->rounds(), 2u);
    // Round 3: nobody has data. Empty: nothing moves, no round counts.
    const torch::Tensor before = model->trainable().values().clone();
    auto empty = trainer->FinishRound(comm);
    ASSERT_TRUE(empty.ok()) << empty.status();
    EXPECT_EQ(trainer->rounds(), 2u);
    EXPECT_TRUE(torch::equal(before, model->trainable().values()));
    finals[rank] = model->trainable().values().clone();
    digests[rank] = trainer->OuterDigest();
  });
  ASSERT_TRUE(finals[0].defined() && finals[1].defined());
  EXPECT_TRUE(torch::equal(finals[0], finals[1]));
  EXPECT_EQ(digests[0], digests[1]);
}

TEST_F(TrainerTest, NonFiniteGradientStopsTheStepOnEveryRankAndChangesNothing) {
  v1::ModelSpec spec;
  spec.mutable_mlp()->set_input_dim(3);
  spec.mutable_mlp()->add_hidden_dims(8);
  spec.mutable_mlp()->set_num_classes(2);
  TrainingConfig config;
  std::vector<absl::Status> poisoned(2);
  std::vector<bool> unchanged(2);
  std::vector<torch::Tensor> after_recovery(2);
  RunRanks(2, [&](int rank, Communicator* comm) {
    auto model = MustCreate(spec, 4);
    auto trainer = MustTrainer(model.get(), config);
    const torch::Tensor before = model->trainable().values().clone();
    torch::Tensor x = torch::ones({4, 3});
    if (rank == 1) x[2][1] = std::nan("");
    const Batch bad{x, torch::zeros({4}, torch::kLong)};
    poisoned[rank] = trainer->Step({bad}, comm, rank).status();
    unchanged[rank] = model->trainable().values().equal(before) && trainer->step() == 0;
    // The next healthy step goes through, identically everywhere.
    const Batch good{torch::ones({4, 3}), torch::zeros({4}, torch::kLong)};
    ASSERT_TRUE(trainer->Step({good}, comm, rank).ok());
    after_recovery[rank] = model->trainable().values().clone();
  });
  EXPECT_EQ(poisoned[0].code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(poisoned[0].message(), HasSubstr("from a peer"));
  EXPECT_FALSE(FailedBecause(poisoned[0], Failure::kOwnStateNotFinite));
  EXPECT_EQ(poisoned[1].code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(poisoned[1].message(), HasSubstr("this worker's own"));
  EXPECT_TRUE(FailedBecause(poisoned[1], Failure::kOwnStateNotFinite));
  EXPECT_TRUE(unchanged[0]);
  EXPECT_TRUE(unchanged[1]);
  ASSERT_TRUE(after_recovery[0].defined() && after_recovery[1].defined());
  EXPECT_TRUE(after_recovery[0].equal(after_recovery[1]));
}

TEST_F(TrainerTest, TokenPastTheVocabularyIsAnErrorNotACrash) {
  auto model = MustCreate(TinyGptSpec(), 1);
  auto trainer = MustTrainer(model.get(), TrainingConfig());
  const torch::Tensor before = model->trainable().values().clone();
  Batch batch = RandomTokens(2, 6, 13, 1);
  batch.inputs[1][3] = 13;  // vocabulary is 0..12
  auto result = trainer->Step({batch}, nullptr);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(result.status().message(), HasSubstr("step 1"));
  EXPECT_TRUE(model->trainable().values().equal(before));
  EXPECT_EQ(trainer->Evaluate({batch}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(TrainerTest, RestoreRefusesAnotherModeOrModel) {
  const std::string dir = FreshTempDir("mismatch");
  v1::JobSpec job;
  job.set_job_id("mismatch");
  *job.mutable_model() = TinyGptSpec();
  auto store = CheckpointStore::Open(dir);
  ASSERT_TRUE(store.ok());
  auto model = MustCreate(job.model(), 1);
  auto trainer = MustTrainer(model.get(), TrainingConfig());
  ASSERT_TRUE(SaveTrainingCheckpoint(store->get(), job, 1, *trainer).ok());
  auto reader = (*store)->OpenLatest("mismatch");
  ASSERT_TRUE(reader.ok());

  TrainingConfig diloco;
  diloco.mode = v1::SYNC_MODE_DILOCO;
  auto diloco_trainer = MustTrainer(model.get(), diloco);
  absl::Status status = diloco_trainer->Restore(reader->get());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("mode"));

  auto wider = MustCreate(TinyGptSpec(13, 6, 2, 2, 12), 1);
  auto wider_trainer = MustTrainer(wider.get(), TrainingConfig());
  status = wider_trainer->Restore(reader->get());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("param/wte"));
}

TEST_F(TrainerTest, DataFeedResumesAtItsCursorAndWrapsEpochs) {
  const Dataset dataset = MustPrepare(FreshTempDir("feed"));
  auto feed = DataFeed::Open(dataset, DataFeed::Split::kTrain, 32);
  ASSERT_TRUE(feed.ok());
  const uint64_t per_epoch = (*feed)->sequences_per_epoch();
  ASSERT_GT(per_epoch, 10u);
  ASSERT_TRUE((*feed)->Next(5).ok());
  const DataCursor saved = (*feed)->cursor();
  auto expected = (*feed)->Next(4);
  auto other = DataFeed::Open(dataset, DataFeed::Split::kTrain, 32);
  auto parsed = DataFeed::CursorFromJson(DataFeed::CursorToJson(saved));
  ASSERT_TRUE(parsed.ok());
  ASSERT_TRUE((*other)->Seek(*parsed).ok());
  auto got = (*other)->Next(4);
  ASSERT_TRUE(expected.ok() && got.ok());
  EXPECT_TRUE(got->inputs.equal(expected->inputs));
  EXPECT_TRUE(got->targets.equal(expected->targets));
  // Targets are the inputs shifted by one.
  EXPECT_TRUE(got->inputs.narrow(1, 1, 31).equal(got->targets.narrow(1, 0, 31)));
  // A whole epoch later the feed is at the same place, one epoch on.
  auto epoch = (*other)->Next(static_cast<int64_t>(per_epoch));
  ASSERT_TRUE(epoch.ok());
  EXPECT_EQ((*other)->cursor().epoch, 1u);
  EXPECT_EQ((*other)->cursor().shard, (*feed)->cursor().shard);
  EXPECT_EQ((*other)->cursor().offset, (*feed)->cursor().offset);

  EXPECT_EQ(DataFeed::CursorFromJson("{\"epoch\": 1}").status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ((*feed)->Seek({0, 999, 0}).code(), absl::StatusCode::kOutOfRange);
}

}  // namespace
}  // namespace potluck
