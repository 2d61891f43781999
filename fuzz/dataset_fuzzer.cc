// Datasets as a worker receives them from its coordinator (data/dataset.h,
// data/token_shard.h). The first byte picks what the rest is:
//   0      manifest.json, loaded as LoadDataset does;
//   other  a token shard, opened with that byte as its vocabulary size (1-255)
//          and read whole as training sequences.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/check.h"
#include "data/dataset.h"
#include "data/token_shard.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const absl::string_view rest = potluck::fuzz::AsBytes(data + 1, size - 1);
  if (data[0] == 0) {
    potluck::fuzz::WriteScratchFile(potluck::kManifestFile, rest);
    if (auto dataset = potluck::LoadDataset(potluck::fuzz::ScratchDir()); dataset.ok()) {
      (void)dataset->train_tokens();
    }
    return 0;
  }
  const std::string path = potluck::fuzz::WriteScratchFile("shard.bin", rest);
  auto shard = potluck::TokenShard::Open(path, data[0]);
  if (!shard.ok()) return 0;
  std::vector<uint32_t> sequence(9);
  potluck::SequenceReader reader(shard->get(), 8);
  while (reader.HasNext()) {
    POTLUCK_CHECK(reader.Next(absl::MakeSpan(sequence)).ok());
    for (uint32_t token : sequence) POTLUCK_CHECK(token < data[0]) << token;
  }
  return 0;
}
