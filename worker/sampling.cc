#include "worker/sampling.h"

#include <vector>

#include <ATen/CPUGeneratorImpl.h>

#include "absl/strings/str_cat.h"

#include "common/status.h"

namespace potluck {

absl::StatusOr<std::string> SampleText(Model* model, absl::string_view prompt,
                                       const SampleOptions& options) {
  if (!model->spec().has_gpt()) {
    return absl::FailedPreconditionError("sampling needs a language model (gpt)");
  }
  const int64_t vocab = model->spec().gpt().vocab_size();
  std::vector<int64_t> tokens;
  for (unsigned char c : prompt) {
    if (c >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt byte ", int{c}, " is outside the model's vocabulary of ", vocab));
    }
    tokens.push_back(c);
  }
  if (tokens.empty()) tokens.push_back('\n');
  torch::NoGradGuard no_grad;
  torch::Generator rng = at::detail::createCPUGenerator(options.seed);
  const auto context = static_cast<int64_t>(model->context_length());
  std::string out;
  for (uint32_t i = 0; i < options.max_new_tokens; ++i) {
    const int64_t n = std::min<int64_t>(context, static_cast<int64_t>(tokens.size()));
    torch::Tensor input =
        torch::tensor(std::vector<int64_t>(tokens.end() - n, tokens.end())).view({1, n});
    ASSIGN_OR_RETURN(torch::Tensor logits, model->Logits(input));
    // The last position's logits (V), as float for the arithmetic below.
    torch::Tensor last = logits[0][n - 1].to(torch::kFloat32);
    int64_t next;
    if (options.temperature <= 0) {
      next = last.argmax().item<int64_t>();
    } else {
      last = last / options.temperature;
      if (options.top_k > 0 && options.top_k < vocab) {
        const double kth = std::get<0>(last.topk(options.top_k))[options.top_k - 1].item<double>();
        last = last.masked_fill(last < kth, -std::numeric_limits<double>::infinity());
      }
      next = torch::multinomial(torch::softmax(last, -1), 1, false, rng).item<int64_t>();
    }
    tokens.push_back(next);
    out.push_back(static_cast<char>(next));
  }
  return out;
}

}  // namespace potluck
