#include "worker/model.h"

#include <cmath>
#include <limits>
#include <map>

#include <ATen/CPUGeneratorImpl.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

#include "common/check.h"
#include "common/status.h"

namespace potluck {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// ---- FlatParameters ----------------------------------------------------------

void FlatParameters::Adopt(NamedTensors params) {
  POTLUCK_CHECK(params_.empty()) << "FlatParameters::Adopt called twice";
  POTLUCK_CHECK(!params.empty()) << "a model needs at least one trainable parameter";
  const auto dtype = params.front().second.scalar_type();
  size_t offset = 0;
  for (const auto& [name, p] : params) {
    POTLUCK_CHECK(p.scalar_type() == dtype) << name << " has a different dtype";
    const size_t n = static_cast<size_t>(p.numel());
    slots_.push_back(FlatSlot{name, p.sizes().vec(), offset, n});
    offset += n;
  }
  count_ = offset;
  values_ = torch::empty({static_cast<int64_t>(count_)}, torch::TensorOptions().dtype(dtype));
  grads_storage_ =
      torch::zeros({static_cast<int64_t>(count_) + 1}, torch::TensorOptions().dtype(dtype));
  grads_ = grads_storage_.narrow(0, 0, static_cast<int64_t>(count_));
  scratch_ = grads_storage_.narrow(0, static_cast<int64_t>(count_), 1);
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params.size(); ++i) {
    const FlatSlot& slot = slots_[i];
    torch::Tensor& p = params[i].second;
    const auto offset_elems = static_cast<int64_t>(slot.offset);
    const auto count_elems = static_cast<int64_t>(slot.count);
    torch::Tensor value = values_.narrow(0, offset_elems, count_elems).view(slot.shape);
    value.copy_(p);
    p.set_data(value);
    p.mutable_grad() = grads_.narrow(0, offset_elems, count_elems).view(slot.shape);
    params_.push_back(p);
  }
}

namespace {

DType ToDType(torch::ScalarType type) {
  switch (type) {
    case torch::kFloat32:
      return DType::kFloat32;
    case torch::kFloat64:
      return DType::kFloat64;
    default:
      POTLUCK_CHECK(false) << "unsupported parameter dtype " << c10::toString(type);
      return DType::kFloat32;
  }
}

}  // namespace

TensorView FlatParameters::values_view() const {
  return TensorView(values_.data_ptr(), ToDType(values_.scalar_type()), count_);
}

TensorView FlatParameters::grads_view() const {
  return TensorView(grads_.data_ptr(), ToDType(grads_.scalar_type()), count_);
}

torch::Tensor FlatParameters::Parameter(const std::string& name) const {
  for (size_t i = 0; i < slots_.size(); ++i) {
    if (slots_[i].name == name) return params_[i];
  }
  return {};
}

std::vector<TensorView> FlatParameters::GradBuckets(size_t max_bytes) const {
  const TensorView all = grads_view();
  if (max_bytes == 0) return {all};
  const size_t max_count = std::max<size_t>(1, max_bytes / DTypeSize(all.dtype()));
  std::vector<TensorView> buckets;
  size_t begin = 0;
  for (const FlatSlot& slot : slots_) {
    const size_t end = slot.offset + slot.count;
    // Close the bucket before a parameter that would overflow it (a single
    // parameter larger than a bucket gets a bucket of its own).
    if (slot.offset > begin && end - begin > max_count) {
      buckets.push_back(all.Slice(begin, slot.offset - begin));
      begin = slot.offset;
    }
  }
  if (count_ > begin) buckets.push_back(all.Slice(begin, count_ - begin));
  return buckets;
}

// ---- Model -------------------------------------------------------------------

absl::StatusOr<torch::Tensor> Model::Logits(const torch::Tensor&) {
  return absl::FailedPreconditionError("this model is not a language model");
}

absl::Status Model::LoadWeights(const NamedTensors& tensors) {
  std::map<std::string, torch::Tensor> own(weights_.begin(), weights_.end());
  for (const auto& [name, tensor] : tensors) {
    auto it = own.find(name);
    if (it == own.end()) return absl::InvalidArgumentError(absl::StrCat("unknown tensor ", name));
    if (it->second.sizes() != tensor.sizes()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor ", name, " has shape [", absl::StrJoin(tensor.sizes().vec(), ","),
          "], the model expects [", absl::StrJoin(it->second.sizes().vec(), ","), "]"));
    }
  }
  torch::NoGradGuard no_grad;
  for (const auto& [name, tensor] : tensors) own[name].copy_(tensor);
  return absl::OkStatus();
}

const std::vector<std::string>& LoraTargets() {
  static const auto* targets =
      new std::vector<std::string>{"attn.qkv", "attn.proj", "mlp.fc", "mlp.proj"};
  return *targets;
}

namespace {

// Inverted dropout drawing its mask from `rng`, so a step's randomness is a
// function of the generator's seed alone.
torch::Tensor Dropout(const torch::Tensor& x, double p, bool training, torch::Generator* rng) {
  if (!training || p <= 0) return x;
  POTLUCK_CHECK(rng != nullptr) << "dropout in training needs a generator";
  torch::Tensor keep = torch::empty_like(x).bernoulli_(1.0 - p, *rng);
  return x * keep / (1.0 - p);
}

// Initial values: drawn in float32 in a fixed order, so a seed means the same
// model whatever dtype it is built in. Adapters draw from a generator of their
// own, so a LoRA model's base is bit for bit the plain model of the same seed.
class Initializer {
 public:
  Initializer(uint64_t seed, torch::Dtype dtype)
      : generator_(at::detail::createCPUGenerator(seed)),
        adapter_generator_(at::detail::createCPUGenerator(seed ^ 0x9e3779b97f4a7c15ULL)),
        dtype_(dtype) {}

  torch::Tensor Normal(std::vector<int64_t> shape, double stddev) {
    return torch::empty(shape, torch::kFloat32).normal_(0.0, stddev, generator_).to(dtype_);
  }
  torch::Tensor AdapterNormal(std::vector<int64_t> shape, double stddev) {
    return torch::empty(shape, torch::kFloat32).normal_(0.0, stddev, adapter_generator_).to(dtype_);
  }
  torch::Tensor Fill(std::vector<int64_t> shape, double value) {
    return torch::full(shape, value, torch::TensorOptions().dtype(dtype_));
  }

 private:
  torch::Generator generator_;
  torch::Generator adapter_generator_;
  const torch::Dtype dtype_;
};

// A linear layer y = x W^T + b, optionally with a LoRA adapter
// y += scale * (dropout(x) A^T) B^T, A (rank, in), B (out, rank).
struct Linear {
  torch::Tensor weight;  // (out, in)
  torch::Tensor bias;    // (out)
  torch::Tensor lora_a;  // (rank, in); undefined without LoRA
  torch::Tensor lora_b;  // (out, rank)
  double lora_scale = 0;
  double lora_dropout = 0;

  torch::Tensor Forward(const torch::Tensor& x, bool training, torch::Generator* rng) const {
    torch::Tensor y = torch::linear(x, weight, bias);
    if (lora_a.defined()) {
      const torch::Tensor h = Dropout(x, lora_dropout, training, rng);
      y = y + torch::linear(torch::linear(h, lora_a), lora_b) * lora_scale;
    }
    return y;
  }

  torch::Tensor Merged() const {
    if (!lora_a.defined()) return weight.detach().clone();
    return (weight + torch::mm(lora_b, lora_a) * lora_scale).detach();
  }
};

struct LayerNorm {
  torch::Tensor weight;
  torch::Tensor bias;
  torch::Tensor Forward(const torch::Tensor& x) const {
    return torch::layer_norm(x, {weight.size(0)}, weight, bias, 1e-5);
  }
};

struct Block {
  LayerNorm ln1;
  Linear qkv;
  Linear attn_proj;
  LayerNorm ln2;
  Linear fc;
  Linear mlp_proj;
};

// Collects a model's tensors in their fixed order as they are created.
class TensorList {
 public:
  explicit TensorList(bool freeze_base) : freeze_base_(freeze_base) {}

  // A base tensor: trainable unless the base is frozen (LoRA).
  torch::Tensor Base(const std::string& name, torch::Tensor t) {
    return Add(name, std::move(t), !freeze_base_);
  }
  torch::Tensor Adapter(const std::string& name, torch::Tensor t) {
    return Add(name, std::move(t), true);
  }

  NamedTensors trainable;
  NamedTensors all;

 private:
  torch::Tensor Add(const std::string& name, torch::Tensor t, bool train) {
    t.requires_grad_(train);
    if (train) trainable.emplace_back(name, t);
    all.emplace_back(name, t);
    return t;
  }
  const bool freeze_base_;
};

class Gpt final : public Model {
 public:
  Gpt(const potluck::v1::ModelSpec& spec, uint64_t seed, const ModelOptions& options)
      : Model(spec), gpt_(spec.gpt()) {
    const int64_t vocab = gpt_.vocab_size(), context = gpt_.context_length();
    const int64_t width = gpt_.width(), layers = gpt_.layers();
    const bool lora = spec.has_lora() && spec.lora().rank() > 0;
    std::vector<std::string> targets(spec.lora().targets().begin(), spec.lora().targets().end());
    if (lora && targets.empty()) targets = {"attn.qkv", "attn.proj"};
    const double lora_alpha = spec.lora().alpha() > 0 ? spec.lora().alpha() : spec.lora().rank();

    Initializer init(seed, options.dtype);
    TensorList list(lora);
    // GPT-2's initialisation: N(0, 0.02), residual projections scaled by
    // 1/sqrt(2 * layers) so the residual stream's variance does not grow.
    const double residual_std = 0.02 / std::sqrt(2.0 * static_cast<double>(layers));
    wte_ = list.Base("wte", init.Normal({vocab, width}, 0.02));
    wpe_ = list.Base("wpe", init.Normal({context, width}, 0.01));
    auto make_norm = [&](const std::string& name) {
      return LayerNorm{list.Base(name + ".weight", init.Fill({width}, 1.0)),
                       list.Base(name + ".bias", init.Fill({width}, 0.0))};
    };
    auto make_linear = [&](const std::string& name, const std::string& target, int64_t in,
                           int64_t out, double stddev) {
      Linear linear;
      linear.weight = list.Base(name + ".weight", init.Normal({out, in}, stddev));
      linear.bias = list.Base(name + ".bias", init.Fill({out}, 0.0));
      if (lora && std::find(targets.begin(), targets.end(), target) != targets.end()) {
        const int64_t rank = spec.lora().rank();
        // A starts random and B at zero: the adapted model starts equal to the base.
        linear.lora_a = list.Adapter(name + ".lora_a",
                                     init.AdapterNormal({rank, in}, 1.0 / std::sqrt(double(in))));
        linear.lora_b = list.Adapter(name + ".lora_b", init.Fill({out, rank}, 0.0));
        linear.lora_scale = lora_alpha / static_cast<double>(rank);
        linear.lora_dropout = spec.lora().dropout();
      }
      return linear;
    };
    for (int64_t i = 0; i < layers; ++i) {
      const std::string p = absl::StrCat("blocks.", i, ".");
      Block b;
      b.ln1 = make_norm(p + "ln1");
      b.qkv = make_linear(p + "attn.qkv", "attn.qkv", width, 3 * width, 0.02);
      b.attn_proj = make_linear(p + "attn.proj", "attn.proj", width, width, residual_std);
      b.ln2 = make_norm(p + "ln2");
      b.fc = make_linear(p + "mlp.fc", "mlp.fc", width, 4 * width, 0.02);
      b.mlp_proj = make_linear(p + "mlp.proj", "mlp.proj", 4 * width, width, residual_std);
      blocks_.push_back(std::move(b));
    }
    ln_f_ = make_norm("ln_f");
    causal_mask_ = torch::triu(torch::ones({context, context}, torch::kBool), 1);
    trainable_.Adopt(list.trainable);
    weights_ = std::move(list.all);
  }

  uint32_t context_length() const override { return gpt_.context_length(); }

  torch::Tensor Loss(const Batch& batch, bool training, torch::Generator* rng) override {
    torch::Tensor logits = Forward(batch.inputs, training, rng);
    return torch::nn::functional::cross_entropy(logits.view({-1, logits.size(-1)}),
                                                batch.targets.reshape({-1}));
  }

  absl::StatusOr<torch::Tensor> Logits(const torch::Tensor& tokens) override {
    if (tokens.dim() != 2 || tokens.size(1) < 1 || tokens.size(1) > gpt_.context_length()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokens must be (B, T) with 1 <= T <= ", gpt_.context_length()));
    }
    return Forward(tokens, false, nullptr);
  }

  NamedTensors MergedWeights() const override {
    NamedTensors out;
    out.emplace_back("wte", wte_.detach().clone());
    out.emplace_back("wpe", wpe_.detach().clone());
    auto norm = [&](const std::string& name, const LayerNorm& n) {
      out.emplace_back(name + ".weight", n.weight.detach().clone());
      out.emplace_back(name + ".bias", n.bias.detach().clone());
    };
    auto linear = [&](const std::string& name, const Linear& l) {
      out.emplace_back(name + ".weight", l.Merged());
      out.emplace_back(name + ".bias", l.bias.detach().clone());
    };
    for (size_t i = 0; i < blocks_.size(); ++i) {
      const std::string p = absl::StrCat("blocks.", i, ".");
      norm(p + "ln1", blocks_[i].ln1);
      linear(p + "attn.qkv", blocks_[i].qkv);
      linear(p + "attn.proj", blocks_[i].attn_proj);
      norm(p + "ln2", blocks_[i].ln2);
      linear(p + "mlp.fc", blocks_[i].fc);
      linear(p + "mlp.proj", blocks_[i].mlp_proj);
    }
    norm("ln_f", ln_f_);
    return out;
  }

 private:
  // tokens (B,T) int64 -> logits (B,T,V).
  torch::Tensor Forward(const torch::Tensor& tokens, bool training, torch::Generator* rng) {
    const int64_t batch = tokens.size(0), time = tokens.size(1), width = gpt_.width();
    const int64_t heads = gpt_.heads(), head_dim = width / heads;
    const double dropout = gpt_.dropout();
    torch::Tensor positions = torch::arange(time, torch::kLong);
    // x (B,T,C)
    torch::Tensor x = Dropout(torch::embedding(wte_, tokens) + torch::embedding(wpe_, positions),
                              dropout, training, rng);
    const torch::Tensor mask = causal_mask_.narrow(0, 0, time).narrow(1, 0, time);
    const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
    for (const Block& b : blocks_) {
      // qkv (B,T,3C) -> q, k, v (B,nh,T,hd)
      torch::Tensor qkv = b.qkv.Forward(b.ln1.Forward(x), training, rng);
      auto split = qkv.view({batch, time, 3, heads, head_dim}).permute({2, 0, 3, 1, 4});
      torch::Tensor q = split[0], k = split[1], v = split[2];
      // att (B,nh,T,T): causal softmax of q k^T / sqrt(hd)
      torch::Tensor att = torch::matmul(q, k.transpose(-2, -1)) * scale;
      att = Dropout(
          torch::softmax(att.masked_fill(mask, -std::numeric_limits<double>::infinity()), -1),
          dropout, training, rng);
      // y (B,nh,T,hd) -> (B,T,C)
      torch::Tensor y = torch::matmul(att, v).transpose(1, 2).reshape({batch, time, width});
      x = x + Dropout(b.attn_proj.Forward(y, training, rng), dropout, training, rng);
      torch::Tensor h = torch::gelu(b.fc.Forward(b.ln2.Forward(x), training, rng));
      x = x + Dropout(b.mlp_proj.Forward(h, training, rng), dropout, training, rng);
    }
    // The output head is the token embedding, transposed (weight tying).
    return torch::linear(ln_f_.Forward(x), wte_);
  }

  const potluck::v1::GptSpec gpt_;
  torch::Tensor wte_;  // (V,C)
  torch::Tensor wpe_;  // (T,C)
  std::vector<Block> blocks_;
  LayerNorm ln_f_;
  torch::Tensor causal_mask_;  // (T,T) true above the diagonal
};

class Mlp final : public Model {
 public:
  Mlp(const potluck::v1::ModelSpec& spec, uint64_t seed, const ModelOptions& options)
      : Model(spec) {
    Initializer init(seed, options.dtype);
    TensorList list(false);
    std::vector<int64_t> dims = {spec.mlp().input_dim()};
    for (uint32_t h : spec.mlp().hidden_dims()) dims.push_back(h);
    dims.push_back(spec.mlp().num_classes());
    for (size_t i = 0; i + 1 < dims.size(); ++i) {
      const std::string p = absl::StrCat("layers.", i, ".");
      Linear l;
      // He initialisation for the ReLU that follows.
      l.weight = list.Base(p + "weight",
                           init.Normal({dims[i + 1], dims[i]}, std::sqrt(2.0 / double(dims[i]))));
      l.bias = list.Base(p + "bias", init.Fill({dims[i + 1]}, 0.0));
      layers_.push_back(std::move(l));
    }
    trainable_.Adopt(list.trainable);
    weights_ = std::move(list.all);
  }

  // inputs (B,D) float, targets (B) int64.
  torch::Tensor Loss(const Batch& batch, bool training, torch::Generator* rng) override {
    torch::Tensor x = batch.inputs;
    for (size_t i = 0; i < layers_.size(); ++i) {
      x = layers_[i].Forward(x, training, rng);
      if (i + 1 < layers_.size()) x = torch::relu(x);
    }
    return torch::nn::functional::cross_entropy(x, batch.targets);
  }

  NamedTensors MergedWeights() const override {
    NamedTensors out;
    for (const auto& [name, t] : weights_) out.emplace_back(name, t.detach().clone());
    return out;
  }

 private:
  std::vector<Linear> layers_;
};

absl::Status ValidateSpec(const potluck::v1::ModelSpec& spec) {
  auto invalid = [](absl::string_view field, absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("model.", field, ": ", why));
  };
  if (spec.has_gpt()) {
    const auto& g = spec.gpt();
    if (g.vocab_size() == 0) return invalid("gpt.vocab_size", "must be > 0");
    if (g.context_length() == 0) return invalid("gpt.context_length", "must be > 0");
    if (g.layers() == 0) return invalid("gpt.layers", "must be > 0");
    if (g.heads() == 0) return invalid("gpt.heads", "must be > 0");
    if (g.width() == 0 || g.width() % g.heads() != 0) {
      return invalid("gpt.width", absl::StrCat("must be a positive multiple of heads (", g.heads(),
                                               "), not ", g.width()));
    }
    if (!(g.dropout() >= 0 && g.dropout() < 1)) return invalid("gpt.dropout", "must be in [0, 1)");
  } else if (spec.has_mlp()) {
    const auto& m = spec.mlp();
    if (m.input_dim() == 0) return invalid("mlp.input_dim", "must be > 0");
    if (m.num_classes() < 2) return invalid("mlp.num_classes", "must be >= 2");
    for (uint32_t h : m.hidden_dims()) {
      if (h == 0) return invalid("mlp.hidden_dims", "every width must be > 0");
    }
  } else {
    return invalid("architecture", "set gpt or mlp");
  }
  if (spec.has_lora() && spec.lora().rank() > 0) {
    if (!spec.has_gpt()) return invalid("lora", "adapters are built for the gpt architecture only");
    for (const std::string& target : spec.lora().targets()) {
      const auto& known = LoraTargets();
      if (std::find(known.begin(), known.end(), target) == known.end()) {
        return invalid("lora.targets", absl::StrCat("unknown target '", target,
                                                    "' (known: ", absl::StrJoin(known, ", "), ")"));
      }
    }
    if (!(spec.lora().dropout() >= 0 && spec.lora().dropout() < 1)) {
      return invalid("lora.dropout", "must be in [0, 1)");
    }
    if (spec.lora().alpha() < 0) return invalid("lora.alpha", "must be >= 0");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> CreateModel(const potluck::v1::ModelSpec& spec,
                                                   uint64_t seed, const ModelOptions& options) {
  RETURN_IF_ERROR(ValidateSpec(spec));
  if (options.dtype != torch::kFloat32 && options.dtype != torch::kFloat64) {
    return absl::InvalidArgumentError("models are built in float32 or float64");
  }
  if (spec.has_gpt()) return std::unique_ptr<Model>(new Gpt(spec, seed, options));
  return std::unique_ptr<Model>(new Mlp(spec, seed, options));
}

}  // namespace potluck
