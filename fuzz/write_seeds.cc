// Writes the seed corpora under fuzz/corpus/ with potluck's own writers, so
// the seeds are what potluck itself produces (run it again after a format
// change):  build/fuzz/fuzz_write_seeds SOURCE_DIR
// Inputs that once found a bug (regress-*) are kept by hand, not written here.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

#include "checkpoint/internal/format.h"
#include "checkpoint/safetensors.h"
#include "collectives/codec.h"
#include "collectives/internal/wire.h"
#include "common/check.h"
#include "coordinator/internal/token.h"
#include "data/dataset.h"
#include "data/token_shard.h"
#include "job/job_spec.h"

namespace {

namespace fs = std::filesystem;
namespace cw = potluck::collectives_internal;

fs::path corpus;

void Write(const std::string& target, const std::string& name, const std::string& bytes) {
  const fs::path dir = corpus / target;
  fs::create_directories(dir);
  std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
  out << bytes;
  POTLUCK_CHECK(out.good()) << (dir / name);
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  POTLUCK_CHECK(in.good()) << path;
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::string Byte(uint8_t value) { return std::string(1, static_cast<char>(value)); }

void JobSpecs(const fs::path& source) {
  for (const auto& entry : fs::directory_iterator(source / "deploy" / "jobs")) {
    const std::string yaml = ReadFile(entry.path());
    const std::string stem = entry.path().stem();
    Write("job_spec_yaml", stem + ".yaml", yaml);
    const auto json = potluck::YamlToJson(yaml);
    POTLUCK_CHECK(json.ok()) << json.status();
    Write("job_spec_json", stem + ".json", *json);
  }
  Write("job_spec_yaml", "minimal.yaml", "job_id: j1\nmodel: {kind: gpt}\n");
  Write("job_spec_json", "minimal.json", R"({"job_id": "j1", "model": {"kind": "gpt"}})");
}

void Tokens() {
  const std::string key(potluck::coordinator_internal::kSigningKeyBytes, 'k');
  const auto sign = [&](const char* job, int64_t expiry, const char* id) {
    return potluck::coordinator_internal::SignToken(key, {job, expiry, id});
  };
  Write("token", "join", Byte(0) + sign("j1", 1'800'000'000, "t-0123456789abcdef"));
  Write("token", "admin", Byte(0) + sign("*", 0, "admin"));
  Write("token", "fields",
        Byte(1) + std::string("j1\0"
                              "1800000000\0"
                              "t1",
                              16));
}

void Safetensors() {
  const fs::path path = fs::temp_directory_path() / "potluck-seed.safetensors";
  std::vector<potluck::SafetensorsEntry> entries(3);
  entries[0] = {"model.weight", potluck::DType::kFloat32, {2, 3}};
  entries[1] = {"model.bias", potluck::DType::kBFloat16, {4}};
  entries[2] = {"step", potluck::DType::kInt64, {}};
  auto writer = potluck::SafetensorsWriter::Create(path, entries, {{"format", "pt"}});
  POTLUCK_CHECK(writer.ok()) << writer.status();
  const std::string data((*writer)->data_size_bytes(), '\x01');
  POTLUCK_CHECK((*writer)->Append(data.data(), data.size()).ok());
  POTLUCK_CHECK((*writer)->Finish().ok());
  Write("safetensors", "three-tensors", ReadFile(path));
  auto empty = potluck::SafetensorsWriter::Create(path, {}, {});
  POTLUCK_CHECK(empty.ok() && (*empty)->Finish().ok());
  Write("safetensors", "empty", ReadFile(path));
  fs::remove(path);
}

void CheckpointRecords() {
  potluck::v1::CheckpointManifest manifest;
  manifest.set_format_version(potluck::checkpoint_internal::kFormatVersion);
  manifest.set_job_id("j1");
  manifest.set_step(42);
  manifest.set_created_unix_micros(1'700'000'000'000'000);
  auto* entry = manifest.add_entries();
  entry->set_name("model/w");
  entry->set_kind(potluck::v1::ENTRY_KIND_TENSOR);
  entry->add_shape(2);
  entry->add_shape(3);
  entry->set_size_bytes(24);
  entry->set_chunk_bytes(16);
  entry->add_chunk_checksums(1);
  entry->add_chunk_checksums(2);
  entry->set_data_offset(24);
  auto* blob = manifest.add_entries();
  blob->set_name("trainer");
  blob->set_kind(potluck::v1::ENTRY_KIND_BLOB);
  blob->set_size_bytes(5);
  blob->set_chunk_bytes(16);
  blob->add_chunk_checksums(3);
  blob->set_data_offset(48);
  manifest.set_total_bytes(29);
  manifest.set_data_file_bytes(53);
  Write("checkpoint_manifest", "manifest", potluck::checkpoint_internal::EncodeManifest(manifest));
  Write("checkpoint_manifest", "data-file-name", potluck::checkpoint_internal::DataFileName(42));
  Write("checkpoint_manifest", "manifest-key", potluck::checkpoint_internal::ManifestKey("j1", 42));
}

void Wire() {
  const auto header = [](uint32_t payload, uint64_t tag) {
    const cw::FrameHeaderBytes bytes = cw::EncodeFrameHeader(payload, tag);
    std::string out(bytes.data(), bytes.size());
    uint64_t expected_payload = payload;
    out.append(reinterpret_cast<const char*>(&expected_payload), 8);
    out.append(reinterpret_cast<const char*>(&tag), 8);
    return out;
  };
  cw::Hello hello;
  hello.generation = 7;
  hello.rank = 1;
  hello.world_size = 4;
  hello.nonce.fill(0xAB);
  Write("wire", "hello", header(4096, 3) + cw::EncodeHello(hello));
  const std::vector<float> values = {0.5f, -1.25f, 3.0f, 0.0f, -0.001f, 100.0f};
  for (potluck::WireCodec codec : {potluck::WireCodec::kNone, potluck::WireCodec::kFloat16,
                                   potluck::WireCodec::kBFloat16, potluck::WireCodec::kInt8}) {
    std::string segment(potluck::EncodedBytes(codec, values.size()), '\0');
    potluck::Encode(codec, values.data(), values.size(), segment.data());
    Write("wire", absl::StrCat("segment-", potluck::WireCodecName(codec)),
          header(static_cast<uint32_t>(segment.size()), 9) + Byte(static_cast<uint8_t>(codec)) +
              segment);
  }
}

void Datasets() {
  const fs::path dir = fs::temp_directory_path() / "potluck-seed-dataset";
  fs::remove_all(dir);
  fs::create_directories(dir);
  {
    std::ofstream text(dir / "input.txt");
    for (int i = 0; i < 64; ++i)
      text << "the quick brown fox jumps over the lazy dog " << i << "\n";
  }
  potluck::PrepareOptions options;
  options.inputs = {(dir / "input.txt").string()};
  options.out_dir = (dir / "out").string();
  options.shard_tokens = 1024;
  auto dataset = potluck::PrepareDataset(options);
  POTLUCK_CHECK(dataset.ok()) << dataset.status();
  Write("dataset", "manifest", Byte(0) + ReadFile(dir / "out" / potluck::kManifestFile));
  std::vector<uint32_t> tokens(40);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<uint32_t>(i % 5);
  POTLUCK_CHECK(potluck::WriteTokenShard((dir / "shard").string(), tokens, 1).ok());
  Write("dataset", "shard", Byte(5) + ReadFile(dir / "shard"));
  fs::remove_all(dir);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s SOURCE_DIR (writes SOURCE_DIR/fuzz/corpus/*)\n", argv[0]);
    return 2;
  }
  const fs::path source = argv[1];
  corpus = source / "fuzz" / "corpus";
  JobSpecs(source);
  Tokens();
  Safetensors();
  CheckpointRecords();
  Wire();
  Datasets();
  std::printf("wrote the seeds under %s\n", corpus.c_str());
  return 0;
}
