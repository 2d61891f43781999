#include "job/job_spec.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/util/json_util.h"

#include "checkpoint/checkpoint_store.h"
#include "common/status.h"

namespace potluck {
namespace {

constexpr size_t kMaxSpecBytes = 1 << 20;
// Deeper than any JobSpec; bounds the recursion over a hostile document.
constexpr int kMaxYamlDepth = 32;

absl::StatusOr<nlohmann::json> ToJson(const YAML::Node& node, int depth) {
  if (depth > kMaxYamlDepth) {
    return absl::InvalidArgumentError(
        absl::StrCat("YAML line ", node.Mark().line + 1, ": nested deeper than ", kMaxYamlDepth));
  }
  switch (node.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null:
      return nlohmann::json(nullptr);
    case YAML::NodeType::Scalar: {
      const std::string& text = node.Scalar();
      // A quoted "true" is a string; a plain one a boolean.
      if (node.Tag() == "?") {
        if (text == "true") return nlohmann::json(true);
        if (text == "false") return nlohmann::json(false);
        if (text == "null" || text == "~") return nlohmann::json(nullptr);
      }
      return nlohmann::json(text);
    }
    case YAML::NodeType::Sequence: {
      nlohmann::json out = nlohmann::json::array();
      for (const YAML::Node& item : node) {
        ASSIGN_OR_RETURN(nlohmann::json value, ToJson(item, depth + 1));
        out.push_back(std::move(value));
      }
      return out;
    }
    case YAML::NodeType::Map: {
      nlohmann::json out = nlohmann::json::object();
      for (const auto& entry : node) {
        if (!entry.first.IsScalar()) {
          return absl::InvalidArgumentError(absl::StrCat("YAML line ", entry.first.Mark().line + 1,
                                                         ": a key must be a plain scalar"));
        }
        const std::string key = entry.first.Scalar();
        if (out.contains(key)) {
          return absl::InvalidArgumentError(absl::StrCat("YAML line ", entry.first.Mark().line + 1,
                                                         ": duplicate key '", key, "'"));
        }
        ASSIGN_OR_RETURN(out[key], ToJson(entry.second, depth + 1));
      }
      return out;
    }
  }
  return absl::InternalError("YAML: unknown node type");
}

void Check(bool ok, absl::string_view field, absl::string_view problem,
           std::vector<std::string>* errors) {
  if (!ok) errors->push_back(absl::StrCat(field, ": ", problem));
}

bool Probability(float value) { return std::isfinite(value) && value >= 0 && value < 1; }

// The optimizer's and DiLoCo's range rules, for ResolveJobSettings (first
// problem) and ValidateJobSpec (every problem).
void CheckSettings(const v1::JobSpec& spec, std::vector<std::string>* errors) {
  const v1::OptimizerSpec& o = spec.optimizer();
  const auto non_negative = [](double value) { return std::isfinite(value) && value >= 0; };
  Check(non_negative(o.learning_rate()), "optimizer.learning_rate", "must be >= 0 (0: 1e-3)",
        errors);
  Check(non_negative(o.weight_decay()), "optimizer.weight_decay", "must be >= 0", errors);
  Check(o.beta1() >= 0 && o.beta1() < 1, "optimizer.beta1", "must be in [0, 1)", errors);
  Check(o.beta2() >= 0 && o.beta2() < 1, "optimizer.beta2", "must be in [0, 1)", errors);
  Check(non_negative(o.epsilon()), "optimizer.epsilon", "must be >= 0", errors);
  Check(non_negative(o.grad_clip_norm()), "optimizer.grad_clip_norm", "must be >= 0", errors);
  Check(o.min_lr_ratio() >= 0 && o.min_lr_ratio() <= 1, "optimizer.min_lr_ratio",
        "must be in [0, 1]", errors);
  const v1::DilocoSpec& d = spec.diloco();
  Check(non_negative(d.outer_learning_rate()), "diloco.outer_learning_rate", "must be >= 0",
        errors);
  Check(d.outer_momentum() >= 0 && d.outer_momentum() < 1, "diloco.outer_momentum",
        "must be in [0, 1)", errors);
  Check(v1::WireCodec_IsValid(d.codec()), "diloco.codec", "unknown codec", errors);
}

}  // namespace

absl::StatusOr<std::string> YamlToJson(absl::string_view yaml) {
  if (yaml.size() > kMaxSpecBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("YAML of ", yaml.size(), " bytes; at most ", kMaxSpecBytes));
  }
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("YAML line ", e.mark.line + 1, ", column ", e.mark.column + 1, ": ", e.msg));
  }
  if (!root.IsMap()) return absl::InvalidArgumentError("YAML: a JobSpec must be a mapping");
  ASSIGN_OR_RETURN(nlohmann::json json, ToJson(root, 0));
  try {
    return json.dump();
  } catch (const nlohmann::json::type_error&) {  // found by fuzz/job_spec_fuzzer.cc
    return absl::InvalidArgumentError("YAML: a string is not valid UTF-8");
  }
}

absl::StatusOr<v1::JobSpec> ParseJobSpecJson(absl::string_view json) {
  if (json.size() > kMaxSpecBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("JobSpec of ", json.size(), " bytes; at most ", kMaxSpecBytes));
  }
  v1::JobSpec spec;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  const auto status = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(json.data(), json.size()), &spec, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("JobSpec: ", std::string(status.message().data(), status.message().size())));
  }
  return spec;
}

absl::StatusOr<v1::JobSpec> ParseJobSpecYaml(absl::string_view yaml) {
  ASSIGN_OR_RETURN(std::string json, YamlToJson(yaml));
  return ParseJobSpecJson(json);
}

absl::Status ValidateJobSpec(const v1::JobSpec& spec) {
  std::vector<std::string> errors;
  const absl::Status job_id = ValidateJobId(spec.job_id());
  Check(job_id.ok(), "job_id", job_id.message(), &errors);

  const v1::ModelSpec& model = spec.model();
  switch (model.architecture_case()) {
    case v1::ModelSpec::kGpt: {
      const v1::GptSpec& gpt = model.gpt();
      Check(gpt.vocab_size() > 0, "model.gpt.vocab_size", "must be > 0", &errors);
      Check(gpt.context_length() > 0, "model.gpt.context_length", "must be > 0", &errors);
      Check(gpt.layers() > 0, "model.gpt.layers", "must be > 0", &errors);
      Check(gpt.heads() > 0, "model.gpt.heads", "must be > 0", &errors);
      Check(gpt.width() > 0, "model.gpt.width", "must be > 0", &errors);
      Check(gpt.heads() == 0 || gpt.width() % gpt.heads() == 0, "model.gpt.width",
            absl::StrCat("must be a multiple of model.gpt.heads (", gpt.heads(), ")"), &errors);
      Check(Probability(gpt.dropout()), "model.gpt.dropout", "must be in [0, 1)", &errors);
      break;
    }
    case v1::ModelSpec::kMlp:
      Check(model.mlp().input_dim() > 0, "model.mlp.input_dim", "must be > 0", &errors);
      Check(model.mlp().num_classes() > 0, "model.mlp.num_classes", "must be > 0", &errors);
      break;
    case v1::ModelSpec::ARCHITECTURE_NOT_SET:
      errors.push_back("model: one of model.gpt or model.mlp is required");
      break;
  }
  if (model.has_lora()) {
    Check(model.lora().rank() > 0, "model.lora.rank", "must be > 0", &errors);
    Check(Probability(model.lora().dropout()), "model.lora.dropout", "must be in [0, 1)", &errors);
  }
  Check(!spec.dataset().manifest().empty(), "dataset.manifest", "is required", &errors);

  CheckSettings(spec, &errors);

  Check(spec.mode() == v1::SYNC_MODE_SYNC || spec.mode() == v1::SYNC_MODE_DILOCO, "mode",
        "must be SYNC_MODE_SYNC or SYNC_MODE_DILOCO", &errors);
  const v1::BatchSpec& batch = spec.batch();
  Check(batch.micro_batch_size() > 0, "batch.micro_batch_size", "must be > 0", &errors);
  Check(batch.global_batch_size() > 0, "batch.global_batch_size", "must be > 0", &errors);
  Check(batch.global_batch_size() >= batch.micro_batch_size(), "batch.global_batch_size",
        "must be >= batch.micro_batch_size", &errors);
  const v1::AccessPolicy& access = spec.access();
  Check(access.max_workers() == 0 || access.min_workers() <= access.max_workers(),
        "access.min_workers", "must be <= access.max_workers", &errors);
  if (spec.mode() == v1::SYNC_MODE_DILOCO) {
    Check(spec.diloco().inner_steps() > 0, "diloco.inner_steps", "must be > 0 in diloco mode",
          &errors);
  }
  if (errors.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("invalid JobSpec: ", absl::StrJoin(errors, "; ")));
}

absl::StatusOr<JobSettings> ResolveJobSettings(const v1::JobSpec& spec) {
  std::vector<std::string> errors;
  CheckSettings(spec, &errors);
  if (!errors.empty()) return absl::InvalidArgumentError(errors.front());
  JobSettings s;
  const auto set = [](auto value, auto* field) {
    if (value > 0) *field = value;
  };
  if (spec.mode() != v1::SYNC_MODE_UNSPECIFIED) s.mode = spec.mode();
  const v1::OptimizerSpec& o = spec.optimizer();
  set(o.learning_rate(), &s.learning_rate);
  s.weight_decay = o.weight_decay();
  set(o.beta1(), &s.beta1);
  set(o.beta2(), &s.beta2);
  set(o.epsilon(), &s.epsilon);
  set(o.grad_clip_norm(), &s.grad_clip_norm);
  s.warmup_steps = o.warmup_steps();
  set(o.min_lr_ratio(), &s.min_lr_ratio);
  const v1::DilocoSpec& d = spec.diloco();
  set(d.inner_steps(), &s.inner_steps);
  s.inner_time_limit = absl::Milliseconds(d.inner_time_limit_ms());
  set(d.outer_learning_rate(), &s.outer_learning_rate);
  set(d.outer_momentum(), &s.outer_momentum);
  s.wire_codec = d.codec();
  s.seed = spec.seed();
  return s;
}

uint64_t FinalStepFor(const v1::JobSpec& spec, uint64_t max_steps) {
  if (spec.mode() != v1::SYNC_MODE_DILOCO || spec.diloco().inner_steps() == 0) return max_steps;
  const uint64_t h = spec.diloco().inner_steps();
  return (max_steps + h - 1) / h;
}

uint64_t FinalStep(const v1::JobSpec& spec) { return FinalStepFor(spec, spec.max_steps()); }

int64_t MicroBatchSize(const v1::JobSpec& spec) {
  return spec.batch().micro_batch_size() > 0 ? spec.batch().micro_batch_size() : 8;
}

int64_t SequencesPerStep(const v1::JobSpec& spec, int world_size) {
  const int64_t micro = MicroBatchSize(spec);
  const int64_t world = std::max(world_size, 1);
  const int64_t global = spec.batch().global_batch_size();
  return std::max<int64_t>(1, global / (micro * world)) * micro;
}

uint64_t MaxTokensPerStep(const v1::JobSpec& spec, int world_size) {
  if (!spec.model().has_gpt()) return std::numeric_limits<uint64_t>::max();
  const uint64_t width = uint64_t{spec.model().gpt().context_length()} + 1;
  const uint64_t inner =
      spec.mode() == v1::SYNC_MODE_DILOCO ? std::max<uint64_t>(spec.diloco().inner_steps(), 1) : 1;
  // A finished shard's report jumps to its end, less than one more width.
  return inner * (static_cast<uint64_t>(SequencesPerStep(spec, world_size)) + 1) * width;
}

absl::string_view JobStateName(v1::JobState state) {
  switch (state) {
    case v1::JOB_STATE_RUNNING:
      return "running";
    case v1::JOB_STATE_PAUSED:
      return "paused";
    case v1::JOB_STATE_CANCELLED:
      return "cancelled";
    case v1::JOB_STATE_FINISHED:
      return "finished";
    default:
      return "unknown";
  }
}

}  // namespace potluck
