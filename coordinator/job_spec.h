// JobSpec input: parsing from JSON or YAML straight into the proto, and the
// checks a spec must pass before a coordinator accepts it.
//
// JSON is proto3's JSON mapping (field names in lowerCamelCase or snake_case,
// enums by name). YAML is a documented subset translated to that JSON
// (docs/coordinator.md): block mappings by indentation, block sequences of
// scalars ("- x"), flow sequences of scalars ("[a, b]"), plain, 'single' and
// "double" quoted scalars, '#' comments. Anchors, multi-line scalars, flow
// mappings and sequences of mappings are refused with kInvalidArgument naming
// the line.
//
// Every error is kInvalidArgument and names the field ("batch.micro_batch_size:
// must be > 0"); ValidateJobSpec reports every problem it finds, joined by "; ".
//
// Thread-safety: stateless functions.
#ifndef POTLUCK_COORDINATOR_JOB_SPEC_H_
#define POTLUCK_COORDINATOR_JOB_SPEC_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

#include "potluck/v1/coordinator.pb.h"
#include "potluck/v1/job.pb.h"

namespace potluck {

absl::StatusOr<v1::JobSpec> ParseJobSpecJson(absl::string_view json);
absl::StatusOr<v1::JobSpec> ParseJobSpecYaml(absl::string_view yaml);

// The YAML subset above, as JSON text (scalars become JSON strings, which
// proto3 JSON accepts for numbers too; true/false/null stay literals).
absl::StatusOr<std::string> YamlToJson(absl::string_view yaml);

absl::Status ValidateJobSpec(const v1::JobSpec& spec);

// The coordinator step whose commit completes the job: max_steps, or in
// diloco mode (whose steps are rounds, max_steps counting inner steps)
// ceil(max_steps / inner_steps). 0 when the spec sets no max_steps.
uint64_t FinalStep(const v1::JobSpec& spec);

// "running", "paused", "cancelled", "finished" (or "unknown"), for messages
// and the command line.
absl::string_view JobStateName(v1::JobState state);

}  // namespace potluck

#endif  // POTLUCK_COORDINATOR_JOB_SPEC_H_
