#include "worker/model.h"

#include <cmath>
#include <random>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "worker/model_io.h"
#include "worker/sampling.h"
#include "worker/test_util.h"
#include "worker/trainer.h"

namespace potluck {
namespace {

using ::testing::HasSubstr;

class ModelTest : public ::testing::Test {
 protected:
  void SetUp() override { torch::set_num_threads(1); }
};

// Compares autograd's gradient with a central finite difference at `probes`
// coordinates of the flat trainable buffer, in float64.
void ExpectGradientsMatchFiniteDifferences(Model& model, const Batch& batch, int probes) {
  FlatParameters& flat = model.trainable();
  flat.ZeroGrads();
  model.Loss(batch, false, nullptr).backward();
  torch::Tensor analytic = flat.grads().clone();
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<size_t> pick(0, flat.count() - 1);
  torch::NoGradGuard no_grad;
  double* values = flat.values().data_ptr<double>();
  const double eps = 1e-6;
  int nonzero = 0;
  for (int i = 0; i < probes; ++i) {
    const size_t k = pick(rng);
    const double saved = values[k];
    values[k] = saved + eps;
    const double up = model.Loss(batch, false, nullptr).item<double>();
    values[k] = saved - eps;
    const double down = model.Loss(batch, false, nullptr).item<double>();
    values[k] = saved;
    const double numeric = (up - down) / (2 * eps);
    const double got = analytic[static_cast<int64_t>(k)].item<double>();
    EXPECT_NEAR(got, numeric, 1e-6 + 1e-5 * std::abs(numeric))
        << "coordinate " << k << " of " << flat.count();
    if (std::abs(numeric) > 1e-8) ++nonzero;
  }
  EXPECT_GT(nonzero, probes / 2) << "most probed gradients should be nonzero";
}

TEST_F(ModelTest, GptGradientsMatchFiniteDifferences) {
  auto model = CreateModel(TinyGptSpec(), 3, {torch::kFloat64});
  ASSERT_TRUE(model.ok()) << model.status();
  ExpectGradientsMatchFiniteDifferences(**model, RandomTokens(3, 6, 13, 1), 60);
}

TEST_F(ModelTest, LoraGradientsMatchFiniteDifferences) {
  v1::ModelSpec spec = TinyGptSpec();
  spec.mutable_lora()->set_rank(2);
  spec.mutable_lora()->set_alpha(4);
  for (const std::string& t : LoraTargets()) spec.mutable_lora()->add_targets(t);
  auto model = CreateModel(spec, 3, {torch::kFloat64});
  ASSERT_TRUE(model.ok()) << model.status();
  // Only adapters train: 2 layers x 4 targets x (A and B).
  ASSERT_EQ((*model)->trainable().slots().size(), 16u);
  for (const FlatSlot& slot : (*model)->trainable().slots()) {
    EXPECT_THAT(slot.name, ::testing::AnyOf(HasSubstr("lora_a"), HasSubstr("lora_b")));
  }
  // B starts at zero (so A's gradient is zero): move it off zero first.
  {
    torch::NoGradGuard no_grad;
    (*model)->trainable().values().normal_(0, 0.1);
  }
  ExpectGradientsMatchFiniteDifferences(**model, RandomTokens(3, 6, 13, 2), 60);
}

TEST_F(ModelTest, SameSeedSameBitsOtherSeedOtherBits) {
  auto a = CreateModel(TinyGptSpec(), 11);
  auto b = CreateModel(TinyGptSpec(), 11);
  auto c = CreateModel(TinyGptSpec(), 12);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_TRUE(SameBits(**a, **b));
  EXPECT_FALSE(SameBits(**a, **c));
}

TEST_F(ModelTest, ParametersAndGradientsLiveInTheFlatBuffers) {
  auto model = CreateModel(TinyGptSpec(), 5);
  ASSERT_TRUE(model.ok());
  FlatParameters& flat = (*model)->trainable();
  const FlatSlot& wte = flat.slots().front();
  ASSERT_EQ(wte.name, "wte");
  torch::Tensor p = flat.Parameter("wte");
  ASSERT_TRUE(p.defined());
  {
    torch::NoGradGuard no_grad;
    flat.values()[0] = 42.0;
  }
  EXPECT_EQ(p.view(-1)[0].item<float>(), 42.0f);
  (*model)->Loss(RandomTokens(2, 6, 13, 9), false, nullptr).backward();
  EXPECT_GT(flat.grads().abs().sum().item<double>(), 0.0);
  EXPECT_TRUE(p.grad().view(-1).equal(flat.grads().narrow(0, 0, wte.count)));
  flat.ZeroGrads();
  EXPECT_EQ(p.grad().abs().sum().item<double>(), 0.0);

  // Buckets are cut at parameter boundaries and cover the buffer once.
  const std::vector<TensorView> buckets = flat.GradBuckets(1024);
  size_t covered = 0;
  for (const TensorView& b : buckets) {
    EXPECT_EQ(static_cast<float*>(b.data()), flat.grads().data_ptr<float>() + covered);
    bool at_boundary = covered == 0;
    for (const FlatSlot& s : flat.slots()) at_boundary |= s.offset == covered;
    EXPECT_TRUE(at_boundary) << "bucket starts mid-parameter at " << covered;
    covered += b.count();
  }
  EXPECT_EQ(covered, flat.count());
  EXPECT_GT(buckets.size(), 1u);
  EXPECT_EQ(flat.GradBuckets(0).size(), 1u);
}

TEST_F(ModelTest, LoraBaseIsThePlainModelAndStaysFrozen) {
  v1::JobSpec job;
  *job.mutable_model() = TinyGptSpec();
  job.mutable_model()->mutable_lora()->set_rank(2);
  job.set_seed(21);
  auto lora = CreateModel(job.model(), job.seed());
  auto plain = CreateModel(TinyGptSpec(), job.seed());
  ASSERT_TRUE(lora.ok() && plain.ok());
  // Before training the adapted model computes exactly the base model.
  const Batch batch = RandomTokens(2, 6, 13, 4);
  EXPECT_TRUE((*lora)->Loss(batch, false, nullptr).equal((*plain)->Loss(batch, false, nullptr)));

  std::vector<std::pair<std::string, torch::Tensor>> base_before;
  for (const auto& [name, t] : (*lora)->weights()) {
    if (name.find("lora_") == std::string::npos) base_before.emplace_back(name, t.clone());
  }
  TrainingConfig config;
  config.learning_rate = 1e-2;
  auto trainer = Trainer::Create(lora->get(), config);
  ASSERT_TRUE(trainer.ok());
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE((*trainer)->Step({RandomTokens(4, 6, 13, 100 + i)}, nullptr).ok());
  }
  std::map<std::string, torch::Tensor> after((*lora)->weights().begin(), (*lora)->weights().end());
  for (const auto& [name, before] : base_before) {
    EXPECT_TRUE(after[name].equal(before)) << name << " changed under LoRA";
  }

  // The merged weights in a plain model reproduce the adapted model.
  torch::NoGradGuard no_grad;
  ASSERT_TRUE((*plain)->LoadWeights((*lora)->MergedWeights()).ok());
  auto lora_logits = (*lora)->Logits(batch.inputs);
  auto plain_logits = (*plain)->Logits(batch.inputs);
  ASSERT_TRUE(lora_logits.ok() && plain_logits.ok());
  EXPECT_TRUE(torch::allclose(*lora_logits, *plain_logits, 1e-5, 1e-5))
      << "max difference " << (*lora_logits - *plain_logits).abs().max().item<double>();
  // And training did move the adapted model away from the base.
  auto base = CreateModel(TinyGptSpec(), job.seed());
  EXPECT_FALSE(torch::allclose(*(*base)->Logits(batch.inputs), *lora_logits, 1e-4, 1e-4));
}

TEST_F(ModelTest, ExportedMergedWeightsInitialiseAnotherJob) {
  v1::JobSpec job;
  *job.mutable_model() = TinyGptSpec();
  job.mutable_model()->mutable_lora()->set_rank(2);
  job.set_seed(8);
  auto lora = CreateJobModel(job);
  ASSERT_TRUE(lora.ok());
  {
    torch::NoGradGuard no_grad;
    (*lora)->trainable().values().normal_(0, 0.2);
  }
  const std::string path = FreshTempDir("export") + "/merged.safetensors";
  ASSERT_TRUE(ExportModel(**lora, path).ok());

  v1::JobSpec next;
  *next.mutable_model() = TinyGptSpec();
  next.mutable_model()->set_init_from(path);
  next.set_seed(999);  // the file, not the seed, decides the weights
  auto plain = CreateJobModel(next);
  ASSERT_TRUE(plain.ok()) << plain.status();
  const Batch batch = RandomTokens(2, 6, 13, 4);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(
      torch::allclose(*(*lora)->Logits(batch.inputs), *(*plain)->Logits(batch.inputs), 1e-5, 1e-5));

  next.mutable_model()->set_init_from(path + ".missing");
  EXPECT_EQ(CreateJobModel(next).status().code(), absl::StatusCode::kNotFound);
  // A base of another shape is refused, naming the tensor.
  next.mutable_model()->set_init_from(path);
  next.mutable_model()->mutable_gpt()->set_width(12);
  auto wrong = CreateJobModel(next);
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(wrong.status().message(), HasSubstr("wte"));
}

TEST_F(ModelTest, MlpLearnsASeparableProblem) {
  v1::ModelSpec spec;
  spec.mutable_mlp()->set_input_dim(4);
  spec.mutable_mlp()->add_hidden_dims(16);
  spec.mutable_mlp()->set_num_classes(2);
  auto model = CreateModel(spec, 1);
  ASSERT_TRUE(model.ok());
  torch::manual_seed(3);
  torch::Tensor x = torch::randn({64, 4});
  torch::Tensor y = (x.select(1, 0) + x.select(1, 1) > 0).to(torch::kLong);
  TrainingConfig config;
  config.learning_rate = 1e-2;
  auto trainer = Trainer::Create(model->get(), config);
  ASSERT_TRUE(trainer.ok());
  const Batch batch{x, y};
  auto before = (*trainer)->Evaluate({batch});
  for (int i = 0; i < 100; ++i) ASSERT_TRUE((*trainer)->Step({batch}, nullptr).ok());
  auto after = (*trainer)->Evaluate({batch});
  ASSERT_TRUE(before.ok() && after.ok());
  EXPECT_LT(*after, 0.3 * *before);
}

TEST_F(ModelTest, SamplingIsSeededAndRefusesWhatItCannotSample) {
  auto model = CreateModel(TinyGptSpec(128, 8), 2);
  ASSERT_TRUE(model.ok());
  SampleOptions options;
  options.max_new_tokens = 20;  // more than the context: the window slides
  options.seed = 4;
  auto a = SampleText(model->get(), "abc", options);
  auto b = SampleText(model->get(), "abc", options);
  ASSERT_TRUE(a.ok() && b.ok()) << a.status();
  EXPECT_EQ(a->size(), 20u);
  EXPECT_EQ(*a, *b);
  options.seed = 5;
  EXPECT_NE(*SampleText(model->get(), "abc", options), *a);
  options.temperature = 0;  // greedy: no randomness at all
  auto greedy = SampleText(model->get(), "abc", options);
  options.seed = 6;
  EXPECT_EQ(*SampleText(model->get(), "abc", options), *greedy);
  EXPECT_EQ(SampleText(model->get(), "\xff", options).status().code(),
            absl::StatusCode::kInvalidArgument);

  v1::ModelSpec mlp;
  mlp.mutable_mlp()->set_input_dim(2);
  mlp.mutable_mlp()->set_num_classes(2);
  auto classifier = CreateModel(mlp, 1);
  EXPECT_EQ(SampleText(classifier->get(), "x").status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(ModelTest, InvalidSpecsNameTheField) {
  auto expect_invalid = [](const v1::ModelSpec& spec, const std::string& field) {
    auto model = CreateModel(spec, 0);
    EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_THAT(model.status().message(), HasSubstr(field));
  };
  expect_invalid(v1::ModelSpec(), "model.architecture");
  expect_invalid(TinyGptSpec(13, 6, 2, 3, 8), "model.gpt.width");
  expect_invalid(TinyGptSpec(0), "model.gpt.vocab_size");
  expect_invalid(TinyGptSpec(13, 0), "model.gpt.context_length");
  v1::ModelSpec lora = TinyGptSpec();
  lora.mutable_lora()->set_rank(2);
  lora.mutable_lora()->add_targets("attn.nonsense");
  expect_invalid(lora, "model.lora.targets");
  v1::ModelSpec mlp;
  mlp.mutable_mlp()->set_input_dim(3);
  mlp.mutable_mlp()->set_num_classes(1);
  expect_invalid(mlp, "model.mlp.num_classes");
  mlp.mutable_mlp()->set_num_classes(2);
  mlp.mutable_lora()->set_rank(1);
  expect_invalid(mlp, "model.lora");
}

}  // namespace
}  // namespace potluck
