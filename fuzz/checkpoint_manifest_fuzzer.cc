// The checkpoint store's own records (checkpoint/internal/format.h) as they
// come back from disk or from a copied store: the manifest frame, and the
// names and keys the store parses. Whatever decodes must encode back to
// something that decodes to the same.
#include <cstddef>
#include <cstdint>
#include <string>

#include "google/protobuf/util/message_differencer.h"

#include "checkpoint/internal/format.h"
#include "common/check.h"
#include "fuzz/fuzz_util.h"

namespace ci = potluck::checkpoint_internal;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes = potluck::fuzz::AsBytes(data, size);
  if (auto manifest = ci::DecodeManifest(bytes, "fuzz"); manifest.ok()) {
    const auto again = ci::DecodeManifest(ci::EncodeManifest(*manifest), "re-encoded");
    POTLUCK_CHECK(again.ok()) << again.status();
    POTLUCK_CHECK(google::protobuf::util::MessageDifferencer::Equals(*manifest, *again));
  }
  uint64_t step = 0;
  if (ci::ParseDataFileName(bytes, &step)) {
    POTLUCK_CHECK(ci::DataFileName(step) == bytes) << "'" << bytes << "' is not canonical";
  }
  std::string job_id;
  if (ci::ParseJobStepKey(bytes, ci::kManifestRoot, &job_id, &step)) {
    POTLUCK_CHECK(ci::ManifestKey(job_id, step) == bytes) << "'" << bytes << "' is not canonical";
  }
  return 0;
}
