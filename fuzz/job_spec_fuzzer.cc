// Job specs as `potluck job submit` and SubmitJob take them: JSON, or YAML
// when built with POTLUCK_FUZZ_YAML. A spec that parses goes on through
// everything the coordinator and the worker compute from it.
#include <cstddef>
#include <cstdint>

#include "fuzz/fuzz_util.h"
#include "job/job_spec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text = potluck::fuzz::AsBytes(data, size);
#ifdef POTLUCK_FUZZ_YAML
  auto spec = potluck::ParseJobSpecYaml(text);
#else
  auto spec = potluck::ParseJobSpecJson(text);
#endif
  if (!spec.ok() || !potluck::ValidateJobSpec(*spec).ok()) return 0;
  (void)potluck::ResolveJobSettings(*spec);
  (void)potluck::FinalStep(*spec);
  (void)potluck::MicroBatchSize(*spec);
  for (int world = 1; world <= 64; world *= 4) {
    (void)potluck::SequencesPerStep(*spec, world);
    (void)potluck::MaxTokensPerStep(*spec, world);
  }
  return 0;
}
