// The one home of a job's rules: reading a JobSpec from JSON or YAML, its
// defaults, its validation, and the values derived from it (the final step,
// the number of rounds, the schedule length). The coordinator validates with
// it at submit, the worker resolves its settings with it, the CLI reads job
// files with it, so the three can never disagree. No libtorch, no gRPC.
//
// JSON is proto3's JSON mapping (field names in lowerCamelCase or
// snake_case, enums by name). YAML is any YAML 1.2 document (yaml-cpp):
// block and flow collections, quoted and folded scalars, comments, anchors.
// It is read into the same JSON: scalars become JSON strings (proto3 JSON
// accepts strings for numbers), except true/false and null/~, which stay
// literals. Syntax errors name the line and column.
//
// Every error is kInvalidArgument and names the field ("batch.micro_batch_size:
// must be > 0"); ValidateJobSpec reports every problem it finds, joined by "; ".
//
// Thread-safety: stateless functions.
#ifndef POTLUCK_JOB_JOB_SPEC_H_
#define POTLUCK_JOB_JOB_SPEC_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

#include "potluck/v1/coordinator.pb.h"
#include "potluck/v1/job.pb.h"

namespace potluck {

absl::StatusOr<v1::JobSpec> ParseJobSpecJson(absl::string_view json);
absl::StatusOr<v1::JobSpec> ParseJobSpecYaml(absl::string_view yaml);

// A YAML document as JSON text, as described above.
absl::StatusOr<std::string> YamlToJson(absl::string_view yaml);

// A JobSpec's training settings with every default filled in. A zero field
// of the spec means "the default" below.
struct JobSettings {
  v1::SyncMode mode = v1::SYNC_MODE_SYNC;
  double learning_rate = 1e-3;
  double weight_decay = 0.0;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double epsilon = 1e-8;
  double grad_clip_norm = 1.0;  // 0 = no clipping
  uint32_t warmup_steps = 0;
  double min_lr_ratio = 0.1;
  uint32_t inner_steps = 20;                               // diloco H
  absl::Duration inner_time_limit = absl::ZeroDuration();  // 0 = steps only
  double outer_learning_rate = 0.7;
  double outer_momentum = 0.9;
  v1::WireCodec wire_codec = v1::WIRE_CODEC_UNSPECIFIED;  // unspecified: full precision
  uint64_t seed = 0;
};

// The settings of `spec`; kInvalidArgument naming the first field out of
// range (every range rule of the optimizer and DiLoCo fields lives here).
absl::StatusOr<JobSettings> ResolveJobSettings(const v1::JobSpec& spec);

// What a coordinator accepts: a job id, a model, a dataset, a mode, batch
// sizes, and settings ResolveJobSettings accepts, plus the model's own
// rules. Reports every problem.
absl::Status ValidateJobSpec(const v1::JobSpec& spec);

// The coordinator step whose commit completes a job run to `max_steps`
// (inner) optimizer steps: max_steps, or in diloco mode (whose coordinator
// steps are rounds) ceil(max_steps / inner_steps). 0 when max_steps is 0.
uint64_t FinalStepFor(const v1::JobSpec& spec, uint64_t max_steps);
// FinalStepFor(spec, spec.max_steps()).
uint64_t FinalStep(const v1::JobSpec& spec);

// batch.micro_batch_size, or its default (8).
int64_t MicroBatchSize(const v1::JobSpec& spec);
// The sequences one member of a group of `world_size` reads for one
// (inner) step: the global batch split over the group, in whole
// micro-batches, at least one.
int64_t SequencesPerStep(const v1::JobSpec& spec, int world_size);
// The most tokens of the ledger one member of a group of `world_size` can
// consume in one coordinator step (a round of inner steps in diloco mode):
// its sequences, each advancing context_length tokens, plus the tail of a
// shard it finishes. The coordinator refuses progress beyond it. Only a
// gpt model reads token sequences: for any other the bound is the largest
// uint64_t (no worker reads a ledger for them).
uint64_t MaxTokensPerStep(const v1::JobSpec& spec, int world_size);

// "running", "paused", "cancelled", "finished" (or "unknown"), for messages
// and the command line.
absl::string_view JobStateName(v1::JobState state);

}  // namespace potluck

#endif  // POTLUCK_JOB_JOB_SPEC_H_
