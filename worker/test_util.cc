#include "worker/test_util.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include "worker/train_bench.h"

namespace potluck {

potluck::v1::ModelSpec TinyGptSpec(uint32_t vocab, uint32_t context, uint32_t layers,
                                   uint32_t heads, uint32_t width) {
  potluck::v1::ModelSpec spec;
  auto* gpt = spec.mutable_gpt();
  gpt->set_vocab_size(vocab);
  gpt->set_context_length(context);
  gpt->set_layers(layers);
  gpt->set_heads(heads);
  gpt->set_width(width);
  return spec;
}

Batch RandomTokens(int64_t batch, int64_t time, int64_t vocab, uint64_t seed) {
  torch::Generator rng = at::detail::createCPUGenerator(seed);
  torch::Tensor all = torch::randint(vocab, {batch, time + 1}, rng, torch::kLong);
  return Batch{all.narrow(1, 0, time).contiguous(), all.narrow(1, 1, time).contiguous()};
}

Batch Rows(const Batch& batch, int64_t begin, int64_t count) {
  return Batch{batch.inputs.narrow(0, begin, count), batch.targets.narrow(0, begin, count)};
}

void RunRanks(int world_size, const std::function<void(int, Communicator*)>& body,
              std::atomic<uint64_t>* bytes_sent) {
  const absl::Status status = RunLoopbackGroup(world_size, body, bytes_sent);
  if (!status.ok()) ADD_FAILURE() << status;
}

bool SameBits(Model& a, Model& b) {
  const torch::Tensor& x = a.trainable().values();
  const torch::Tensor& y = b.trainable().values();
  return x.numel() == y.numel() &&
         std::memcmp(x.data_ptr(), y.data_ptr(), x.numel() * x.element_size()) == 0;
}

std::string FreshTempDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::filesystem::path dir = std::filesystem::path(base != nullptr ? base : "/tmp") /
                              ("potluck-" + std::string(info->test_suite_name()) + "-" +
                               info->name() + "-" + name + "-" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

}  // namespace potluck
