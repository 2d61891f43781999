#include "coordinator/job_spec.h"

#include <cmath>
#include <cstddef>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "google/protobuf/util/json_util.h"

#include "checkpoint/checkpoint_store.h"
#include "common/status.h"

namespace potluck {
namespace {

constexpr size_t kMaxSpecBytes = 1 << 20;

// ---- the YAML subset ------------------------------------------------------

struct Line {
  int number = 0;  // 1-based
  size_t indent = 0;
  std::string text;  // without indentation and comment
};

absl::Status YamlError(int line, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("YAML line ", line, ": ", what));
}

// Removes a '#' comment that is not inside quotes.
std::string StripComment(absl::string_view text) {
  char quote = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quote != 0) {
      if (c == quote) quote = 0;
    } else if (c == '"' || c == '\'') {
      quote = c;
    } else if (c == '#' && (i == 0 || text[i - 1] == ' ')) {
      return std::string(text.substr(0, i));
    }
  }
  return std::string(text);
}

absl::StatusOr<nlohmann::json> Scalar(absl::string_view text, int line) {
  text = absl::StripAsciiWhitespace(text);
  if (text.empty() || text == "null" || text == "~") return nlohmann::json(nullptr);
  if (text == "true") return nlohmann::json(true);
  if (text == "false") return nlohmann::json(false);
  const char first = text.front();
  if (first == '"' || first == '\'') {
    if (text.size() < 2 || text.back() != first) return YamlError(line, "unterminated quote");
    absl::string_view body = text.substr(1, text.size() - 2);
    std::string out;
    for (size_t i = 0; i < body.size(); ++i) {
      if (first == '\'' && body[i] == '\'' && i + 1 < body.size() && body[i + 1] == '\'') {
        out += '\'';
        ++i;
      } else if (first == '"' && body[i] == '\\' && i + 1 < body.size()) {
        const char next = body[++i];
        out += next == 'n' ? '\n' : next == 't' ? '\t' : next;
      } else {
        out += body[i];
      }
    }
    return nlohmann::json(out);
  }
  if (first == '&' || first == '*' || first == '!' || first == '|' || first == '>' ||
      first == '{') {
    return YamlError(line, absl::StrCat("unsupported YAML ('", text.substr(0, 1),
                                        "': anchors, tags, block scalars and flow mappings "
                                        "are not in the subset)"));
  }
  return nlohmann::json(std::string(text));
}

absl::StatusOr<nlohmann::json> FlowSequence(absl::string_view text, int line) {
  if (text.back() != ']') return YamlError(line, "unterminated flow sequence");
  absl::string_view body = absl::StripAsciiWhitespace(text.substr(1, text.size() - 2));
  nlohmann::json out = nlohmann::json::array();
  if (body.empty()) return out;
  for (absl::string_view item : absl::StrSplit(body, ',')) {
    if (absl::StrContains(item, '[')) return YamlError(line, "nested flow sequences");
    ASSIGN_OR_RETURN(nlohmann::json value, Scalar(item, line));
    out.push_back(std::move(value));
  }
  return out;
}

absl::StatusOr<nlohmann::json> Value(absl::string_view text, int line) {
  text = absl::StripAsciiWhitespace(text);
  if (!text.empty() && text.front() == '[') return FlowSequence(text, line);
  return Scalar(text, line);
}

class YamlParser {
 public:
  explicit YamlParser(std::vector<Line> lines) : lines_(std::move(lines)) {}

  absl::StatusOr<nlohmann::json> Document() {
    if (lines_.empty()) return nlohmann::json::object();
    ASSIGN_OR_RETURN(nlohmann::json out, Block(lines_[0].indent));
    if (next_ < lines_.size()) return YamlError(lines_[next_].number, "unexpected indentation");
    return out;
  }

 private:
  // The block of lines at exactly `indent`: a mapping or a sequence.
  absl::StatusOr<nlohmann::json> Block(size_t indent) {
    const bool sequence = absl::StartsWith(lines_[next_].text, "- ") || lines_[next_].text == "-";
    nlohmann::json out = sequence ? nlohmann::json::array() : nlohmann::json::object();
    while (next_ < lines_.size() && lines_[next_].indent == indent) {
      const Line& line = lines_[next_];
      const bool item = absl::StartsWith(line.text, "- ") || line.text == "-";
      if (item != sequence) return YamlError(line.number, "mixes sequence items and keys");
      ++next_;
      if (sequence) {
        absl::string_view rest = absl::StripAsciiWhitespace(absl::string_view(line.text).substr(1));
        if (rest.empty() || KeyColon(rest) != absl::string_view::npos) {
          return YamlError(line.number, "only scalars may be sequence items in the subset");
        }
        ASSIGN_OR_RETURN(nlohmann::json value, Value(rest, line.number));
        out.push_back(std::move(value));
        continue;
      }
      const size_t colon = KeyColon(line.text);
      if (colon == absl::string_view::npos) return YamlError(line.number, "expected 'key: value'");
      const std::string key(
          absl::StripAsciiWhitespace(absl::string_view(line.text).substr(0, colon)));
      if (out.contains(key))
        return YamlError(line.number, absl::StrCat("duplicate key '", key, "'"));
      absl::string_view rest =
          absl::StripAsciiWhitespace(absl::string_view(line.text).substr(colon + 1));
      if (!rest.empty()) {
        ASSIGN_OR_RETURN(out[key], Value(rest, line.number));
      } else if (next_ < lines_.size() && lines_[next_].indent > indent) {
        ASSIGN_OR_RETURN(out[key], Block(lines_[next_].indent));
      } else if (next_ < lines_.size() && lines_[next_].indent == indent &&
                 absl::StartsWith(lines_[next_].text, "- ")) {
        // YAML allows a mapping's sequence at the key's own indentation.
        ASSIGN_OR_RETURN(out[key], Block(indent));
      } else {
        out[key] = nullptr;
      }
    }
    if (next_ < lines_.size() && lines_[next_].indent > indent) {
      return YamlError(lines_[next_].number, "unexpected indentation");
    }
    return out;
  }

  // The ':' that ends a key: followed by a space or the line's end, outside quotes.
  static size_t KeyColon(absl::string_view text) {
    char quote = 0;
    for (size_t i = 0; i < text.size(); ++i) {
      const char c = text[i];
      if (quote != 0) {
        if (c == quote) quote = 0;
      } else if (c == '"' || c == '\'') {
        quote = c;
      } else if (c == ':' && (i + 1 == text.size() || text[i + 1] == ' ')) {
        return i;
      }
    }
    return absl::string_view::npos;
  }

  std::vector<Line> lines_;
  size_t next_ = 0;
};

// ---- validation --------------------------------------------------------------

void Check(bool ok, absl::string_view field, absl::string_view problem,
           std::vector<std::string>* errors) {
  if (!ok) errors->push_back(absl::StrCat(field, ": ", problem));
}

bool Probability(float value) { return std::isfinite(value) && value >= 0 && value < 1; }

}  // namespace

absl::StatusOr<std::string> YamlToJson(absl::string_view yaml) {
  if (yaml.size() > kMaxSpecBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("YAML of ", yaml.size(), " bytes; at most ", kMaxSpecBytes));
  }
  std::vector<Line> lines;
  int number = 0;
  for (absl::string_view raw : absl::StrSplit(yaml, '\n')) {
    ++number;
    raw = absl::StripSuffix(raw, "\r");
    if (number == 1 && raw == "---") continue;
    const std::string text = StripComment(raw);
    const size_t indent = text.find_first_not_of(' ');
    if (indent == std::string::npos) continue;
    if (text[indent] == '\t') return YamlError(number, "tabs are not allowed for indentation");
    lines.push_back(
        {number, indent, std::string(absl::StripTrailingAsciiWhitespace(text.substr(indent)))});
  }
  YamlParser parser(std::move(lines));
  ASSIGN_OR_RETURN(nlohmann::json json, parser.Document());
  if (!json.is_object()) return absl::InvalidArgumentError("YAML: a JobSpec must be a mapping");
  return json.dump();
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

  const v1::OptimizerSpec& optimizer = spec.optimizer();
  Check(std::isfinite(optimizer.learning_rate()) && optimizer.learning_rate() > 0,
        "optimizer.learning_rate", "must be > 0", &errors);
  Check(std::isfinite(optimizer.weight_decay()) && optimizer.weight_decay() >= 0,
        "optimizer.weight_decay", "must be >= 0", &errors);
  Check(optimizer.beta1() >= 0 && optimizer.beta1() < 1, "optimizer.beta1", "must be in [0, 1)",
        &errors);
  Check(optimizer.beta2() >= 0 && optimizer.beta2() < 1, "optimizer.beta2", "must be in [0, 1)",
        &errors);
  Check(optimizer.grad_clip_norm() >= 0, "optimizer.grad_clip_norm", "must be >= 0", &errors);

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
    Check(spec.diloco().outer_learning_rate() > 0, "diloco.outer_learning_rate",
          "must be > 0 in diloco mode", &errors);
    Check(spec.diloco().outer_momentum() >= 0 && spec.diloco().outer_momentum() < 1,
          "diloco.outer_momentum", "must be in [0, 1)", &errors);
  }
  if (errors.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("invalid JobSpec: ", absl::StrJoin(errors, "; ")));
}

uint64_t FinalStep(const v1::JobSpec& spec) {
  if (spec.mode() != v1::SYNC_MODE_DILOCO || spec.diloco().inner_steps() == 0) {
    return spec.max_steps();
  }
  const uint64_t h = spec.diloco().inner_steps();
  return (spec.max_steps() + h - 1) / h;
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
