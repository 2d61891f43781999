// Models: the networks a job trains, on libtorch, built from a JobSpec's
// ModelSpec and initialised deterministically from a seed.
//
// - GPT: a decoder-only transformer language model (token + position
//   embeddings, pre-norm blocks of causal self-attention and an MLP, the
//   output head tied to the token embedding). Batches are token ids: inputs
//   (B,T) and targets (B,T), int64.
// - LoRA on the GPT: low-rank adapters on chosen projections of a frozen
//   base; only the adapters train, travel and are checkpointed.
// - MLP: a small classifier for fast tests and non-text data. Inputs (B,D)
//   float, targets (B) int64 class ids.
//
// Every model keeps its *trainable* parameters in one flat buffer and their
// gradients in another (FlatParameters), so the collectives and the
// checkpoint store see TensorViews and never libtorch. Parameters are views
// into the flat buffers; autograd accumulates straight into the flat
// gradient buffer.
//
// Thread-safety: a Model is used by one thread at a time.
#ifndef POTLUCK_WORKER_MODEL_H_
#define POTLUCK_WORKER_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "absl/status/statusor.h"

#include "common/tensor_view.h"
#include "potluck/v1/job.pb.h"

namespace potluck {

struct Batch {
  torch::Tensor inputs;
  torch::Tensor targets;
  int64_t samples() const { return inputs.defined() ? inputs.size(0) : 0; }
};

// One trainable parameter's place in the flat buffers.
struct FlatSlot {
  std::string name;  // e.g. "blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.lora_a"
  std::vector<int64_t> shape;
  size_t offset = 0;  // in elements
  size_t count = 0;
};

// The trainable parameters of a model and their gradients, each in one
// contiguous buffer of `dtype`, in a fixed order.
class FlatParameters {
 public:
  // Moves `params` (leaf tensors that require grad) into the flat buffers:
  // afterwards each is a view of `values()` and its .grad() a view of `grads()`.
  void Adopt(std::vector<std::pair<std::string, torch::Tensor>> params);

  const std::vector<FlatSlot>& slots() const { return slots_; }
  size_t count() const { return count_; }
  torch::Tensor& values() { return values_; }
  torch::Tensor& grads() { return grads_; }
  TensorView values_view() const;
  TensorView grads_view() const;
  // The view of one parameter; nullptr-equivalent (undefined) if unknown.
  torch::Tensor Parameter(const std::string& name) const;
  // Gradient buckets: slices of grads_view() of at most `max_bytes` each
  // (0 = one bucket), cut at parameter boundaries.
  std::vector<TensorView> GradBuckets(size_t max_bytes) const;
  // Zeroes the gradient buffer in place (the views stay attached).
  void ZeroGrads() { grads_.zero_(); }
  // One element right after the gradients, in the same allocation: a bucket
  // view extended by one carries it through the gradients' all-reduce (the
  // trainer's loss rides along this way instead of in a collective of its own).
  torch::Tensor& scratch() { return scratch_; }

 private:
  std::vector<FlatSlot> slots_;
  std::vector<torch::Tensor> params_;
  size_t count_ = 0;
  torch::Tensor values_;
  torch::Tensor grads_;    // the first count_ elements of grads_storage_
  torch::Tensor scratch_;  // its last element
  torch::Tensor grads_storage_;
};

struct ModelOptions {
  // float32 for training; float64 lets tests compare against finite differences.
  torch::Dtype dtype = torch::kFloat32;
};

class Model {
 public:
  virtual ~Model() = default;

  // Mean cross-entropy of `batch`. With `training`, dropout is on and draws
  // from `rng` (which must then be non-null); callers run it under
  // torch::NoGradGuard for evaluation.
  virtual torch::Tensor Loss(const Batch& batch, bool training, torch::Generator* rng) = 0;

  // GPT only: logits (B,T,V) for token ids (B,T), T <= context_length().
  virtual absl::StatusOr<torch::Tensor> Logits(const torch::Tensor& tokens);
  virtual uint32_t context_length() const { return 0; }

  // Every tensor of the model (frozen base included) with LoRA adapters
  // merged into their base weights (W + alpha/rank * B A): what an export
  // holds, and what runs without adapters.
  virtual std::vector<std::pair<std::string, torch::Tensor>> MergedWeights() const = 0;

  // Every tensor of the model, frozen and trainable, by name (views of the
  // model's own storage).
  const std::vector<std::pair<std::string, torch::Tensor>>& weights() const { return weights_; }

  // Copies tensors into the model by name (e.g. a base model from `init_from`
  // under LoRA, or an export). kInvalidArgument for an unknown name or a
  // shape mismatch; names the model has but `tensors` lacks keep their values.
  absl::Status LoadWeights(const std::vector<std::pair<std::string, torch::Tensor>>& tensors);

  FlatParameters& trainable() { return trainable_; }
  const FlatParameters& trainable() const { return trainable_; }
  const potluck::v1::ModelSpec& spec() const { return spec_; }

 protected:
  explicit Model(potluck::v1::ModelSpec spec) : spec_(std::move(spec)) {}
  FlatParameters trainable_;
  std::vector<std::pair<std::string, torch::Tensor>> weights_;

 private:
  const potluck::v1::ModelSpec spec_;
};

// Builds the model `spec` describes, initialised from `seed` (the same seed
// gives the same bits on every machine). kInvalidArgument naming the field
// for a spec that cannot be built (zero sizes, width not divisible by heads,
// an unknown LoRA target, LoRA on a model other than the GPT).
absl::StatusOr<std::unique_ptr<Model>> CreateModel(const potluck::v1::ModelSpec& spec,
                                                   uint64_t seed, const ModelOptions& options = {});

// The LoRA targets a GPT knows: "attn.qkv", "attn.proj", "mlp.fc", "mlp.proj".
const std::vector<std::string>& LoraTargets();

}  // namespace potluck

#endif  // POTLUCK_WORKER_MODEL_H_
