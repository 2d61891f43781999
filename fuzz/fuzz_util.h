// What the fuzz targets (fuzz/*_fuzzer.cc) share: a scratch file for the
// parsers that read from a path. docs/reliability.md says how to run them.
//
// Thread-safety: libFuzzer calls a target from one thread; so do the replays.
#ifndef POTLUCK_FUZZ_FUZZ_UTIL_H_
#define POTLUCK_FUZZ_FUZZ_UTIL_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace potluck::fuzz {

// The directory this process's scratch files live in (created on first use
// under $TMPDIR or /tmp, removed at exit).
const std::string& ScratchDir();

// Writes `bytes` to ScratchDir()/`name`, replacing what was there, and returns
// the path. Aborts if it cannot: the fuzz run would prove nothing.
std::string WriteScratchFile(absl::string_view name, absl::string_view bytes);

inline absl::string_view AsBytes(const uint8_t* data, size_t size) {
  return absl::string_view(reinterpret_cast<const char*>(data), size);
}

}  // namespace potluck::fuzz

#endif  // POTLUCK_FUZZ_FUZZ_UTIL_H_
