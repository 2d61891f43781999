// Hugging Face .safetensors files (checkpoint/safetensors.h), as `potluck
// ckpt import` and model loading read them: open, find every tensor by name,
// and read the first and last bytes of each.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "checkpoint/safetensors.h"
#include "common/check.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path =
      potluck::fuzz::WriteScratchFile("model.safetensors", potluck::fuzz::AsBytes(data, size));
  auto reader = potluck::SafetensorsReader::Open(path);
  if (!reader.ok()) return 0;
  std::vector<char> buffer(64);
  for (const potluck::SafetensorsEntry& entry : (*reader)->entries()) {
    POTLUCK_CHECK((*reader)->Find(entry.name) != nullptr) << "cannot find " << entry.name;
    const uint64_t bytes = entry.end - entry.begin;
    const size_t head = bytes < buffer.size() ? static_cast<size_t>(bytes) : buffer.size();
    POTLUCK_CHECK((*reader)->Read(entry, 0, buffer.data(), head).ok()) << entry.name;
    POTLUCK_CHECK((*reader)->Read(entry, bytes - head, buffer.data(), head).ok()) << entry.name;
    POTLUCK_CHECK(!(*reader)->Read(entry, bytes, buffer.data(), 1).ok()) << entry.name;
  }
  return 0;
}
