#include "checkpoint/safetensors.h"

#include <stdlib.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

#include "common/dtype.h"

namespace potluck {
namespace {

static_assert(std::endian::native == std::endian::little,
              "these tests build little-endian file bytes from host memory");

// The 8-byte little-endian length prefix.
std::string LengthPrefix(uint64_t value) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((value >> (8 * i)) & 0xff);
  return bytes;
}

// A whole file: prefix, `header` (padded with spaces to a multiple of 8 when
// `pad`), then `data`.
std::string FileBytes(absl::string_view header, absl::string_view data, bool pad = true) {
  std::string padded(header);
  if (pad) padded.append((8 - padded.size() % 8) % 8, ' ');
  return absl::StrCat(LengthPrefix(padded.size()), padded, data);
}

template <typename T>
std::string BytesOf(const std::vector<T>& values) {
  std::string bytes(values.size() * sizeof(T), '\0');
  if (!values.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

bool Exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = absl::StrCat(::testing::TempDir(), "/safetensors_test.XXXXXX");
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr) << std::strerror(errno);
    dir_ = pattern;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string PathFor(absl::string_view name) const { return absl::StrCat(dir_, "/", name); }

  static void WriteFile(const std::string& path, absl::string_view bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    ASSERT_TRUE(out.good()) << path;
  }

  static std::string ReadFile(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }

  // Reads all of `entry` through `reader`.
  static std::string ReadAll(const SafetensorsReader& reader, const SafetensorsEntry& entry) {
    std::string bytes(entry.size_bytes(), '\0');
    const absl::Status status = reader.Read(entry, 0, bytes.data(), bytes.size());
    EXPECT_TRUE(status.ok()) << status;
    return bytes;
  }

  std::string dir_;
};

using SafetensorsWriterTest = SafetensorsTest;
using SafetensorsReaderTest = SafetensorsTest;

SafetensorsEntry Entry(std::string name, DType dtype, std::vector<int64_t> shape) {
  SafetensorsEntry entry;
  entry.name = std::move(name);
  entry.dtype = dtype;
  entry.shape = std::move(shape);
  return entry;
}

TEST_F(SafetensorsTest, RoundTripsEveryDTypeScalarEmptyTensorAndMetadata) {
  std::vector<BFloat16> bias;
  for (float value : {0.5f, -1.0f, 3.0f, 1e-3f}) bias.push_back(ToBFloat16(value));
  std::vector<Float16> halves;  // shape [0, 5]: no elements
  struct Tensor {
    SafetensorsEntry entry;
    std::string bytes;
  };
  const std::vector<Tensor> tensors = {
      {Entry("layers.0.weight", DType::kFloat32, {2, 3}),
       BytesOf<float>({0.0f, 1.5f, -3.0f, 4.5f, 1e30f, -0.0f})},
      {Entry("layers.0.bias", DType::kBFloat16, {4}), BytesOf(bias)},
      {Entry("step", DType::kInt64, {}), BytesOf<int64_t>({int64_t{1} << 40})},
      {Entry("empty", DType::kFloat16, {0, 5}), BytesOf(halves)},
      {Entry("bytes", DType::kUInt8, {3}), BytesOf<uint8_t>({1, 2, 255})},
      {Entry("mask", DType::kInt8, {2, 2}), BytesOf<int8_t>({-128, -1, 0, 127})},
      {Entry("double", DType::kFloat64, {2}), BytesOf<double>({3.141592653589793, -1e300})},
      {Entry("ids", DType::kInt32, {1, 1, 1}), BytesOf<int32_t>({-123456789})},
  };
  std::vector<SafetensorsEntry> entries;
  std::string data;
  for (const Tensor& tensor : tensors) {
    entries.push_back(tensor.entry);
    data += tensor.bytes;
  }
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"step", "1099511627776"}};
  const std::string path = PathFor("model.safetensors");

  auto writer = SafetensorsWriter::Create(path, entries, metadata);
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_EQ((*writer)->data_size_bytes(), data.size());
  // Pieces of 5 bytes cross tensor boundaries: the writer sees one byte stream.
  for (size_t offset = 0; offset < data.size(); offset += 5) {
    const absl::string_view piece = absl::string_view(data).substr(offset, 5);
    ASSERT_TRUE((*writer)->Append(piece.data(), piece.size()).ok());
  }
  ASSERT_TRUE((*writer)->Finish().ok());
  const std::vector<SafetensorsEntry> written = (*writer)->entries();

  auto reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->metadata(), metadata);
  ASSERT_EQ((*reader)->entries().size(), tensors.size());
  uint64_t expected_begin = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const SafetensorsEntry& entry = (*reader)->entries()[i];
    SCOPED_TRACE(entry.name);
    // Data order is the order the writer was given.
    EXPECT_EQ(entry.name, tensors[i].entry.name);
    EXPECT_EQ(entry.dtype, tensors[i].entry.dtype);
    EXPECT_EQ(entry.shape, tensors[i].entry.shape);
    EXPECT_EQ(entry.begin, expected_begin);
    EXPECT_EQ(entry.size_bytes(), tensors[i].bytes.size());
    EXPECT_EQ(entry.begin, written[i].begin);
    EXPECT_EQ(entry.end, written[i].end);
    EXPECT_EQ(ReadAll(**reader, entry), tensors[i].bytes);
    EXPECT_EQ((*reader)->Find(entry.name), &entry);
    expected_begin = entry.end;
  }
  EXPECT_EQ((*reader)->Find("step")->shape, std::vector<int64_t>{});
  EXPECT_EQ((*reader)->Find("empty")->size_bytes(), 0u);
  EXPECT_EQ((*reader)->Find("missing"), nullptr);

  // A slice from the middle of a tensor.
  const SafetensorsEntry* weight = (*reader)->Find("layers.0.weight");
  ASSERT_NE(weight, nullptr);
  float middle[2] = {};
  ASSERT_TRUE((*reader)->Read(*weight, 2 * sizeof(float), middle, sizeof(middle)).ok());
  EXPECT_EQ(middle[0], -3.0f);
  EXPECT_EQ(middle[1], 4.5f);
}

TEST_F(SafetensorsTest, FileWithNoTensorsRoundTrips) {
  const std::string path = PathFor("empty.safetensors");
  auto writer = SafetensorsWriter::Create(path, {}, {{"note", "nothing here"}});
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE((*writer)->Finish().ok());
  auto reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_TRUE((*reader)->entries().empty());
  EXPECT_EQ((*reader)->metadata().at("note"), "nothing here");
}

// Bytes built here by hand from the format's description, not by the writer:
// reading them proves the reader follows the format, not just our writer.
TEST_F(SafetensorsReaderTest, ReadsHandBuiltFileFollowingTheSpec) {
  const std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                             R"("b":{"dtype":"I64","shape":[],"data_offsets":[8,16]},)"
                             R"("__metadata__":{"format":"pt"}})";
  // 1.0f, -2.5f and int64 7, little-endian.
  const std::string data(
      "\x00\x00\x80\x3f"
      "\x00\x00\x20\xc0"
      "\x07\x00\x00\x00\x00\x00\x00\x00",
      16);
  const std::string path = PathFor("spec.safetensors");
  WriteFile(path, FileBytes(header, data));

  auto reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  ASSERT_EQ((*reader)->entries().size(), 2u);
  EXPECT_EQ((*reader)->metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));

  const SafetensorsEntry* a = (*reader)->Find("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->dtype, DType::kFloat32);
  EXPECT_EQ(a->shape, std::vector<int64_t>{2});
  EXPECT_EQ(a->begin, 0u);
  EXPECT_EQ(a->end, 8u);
  float floats[2] = {};
  ASSERT_TRUE((*reader)->Read(*a, 0, floats, sizeof(floats)).ok());
  EXPECT_EQ(floats[0], 1.0f);
  EXPECT_EQ(floats[1], -2.5f);

  const SafetensorsEntry* b = (*reader)->Find("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->dtype, DType::kInt64);
  EXPECT_TRUE(b->shape.empty());
  int64_t scalar = 0;
  ASSERT_TRUE((*reader)->Read(*b, 0, &scalar, sizeof(scalar)).ok());
  EXPECT_EQ(scalar, 7);
}

// The format does not require padding, and the reference reader ignores keys
// it does not know inside a tensor's object.
TEST_F(SafetensorsReaderTest, AcceptsUnpaddedHeaderAndIgnoresUnknownEntryFields) {
  const std::string header =
      R"({"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3],"note":{"x":[1]}}})";
  ASSERT_NE(header.size() % 8, 0u);
  const std::string path = PathFor("unpadded.safetensors");
  WriteFile(path, FileBytes(header, "xyz", /*pad=*/false));
  auto reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  ASSERT_EQ((*reader)->entries().size(), 1u);
  EXPECT_EQ(ReadAll(**reader, (*reader)->entries()[0]), "xyz");
}

// nlohmann::json keeps the last of duplicate keys, so a file cannot present
// two tensors with one name; what remains must still tile the data section.
TEST_F(SafetensorsReaderTest, DuplicateNameInHeaderKeepsTheLast) {
  const std::string header = R"({"a":{"dtype":"U8","shape":[5],"data_offsets":[0,5]},)"
                             R"("a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})";
  const std::string path = PathFor("duplicate.safetensors");
  WriteFile(path, FileBytes(header, "hi"));
  auto reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  ASSERT_EQ((*reader)->entries().size(), 1u);
  EXPECT_EQ((*reader)->entries()[0].shape, std::vector<int64_t>{2});
}

TEST_F(SafetensorsWriterTest, WritesByteExactFileForOneTensor) {
  const std::string path = PathFor("one.safetensors");
  auto writer = SafetensorsWriter::Create(path, {Entry("a", DType::kFloat32, {2})}, {});
  ASSERT_TRUE(writer.ok()) << writer.status();
  const std::vector<float> values = {1.0f, -2.5f};
  ASSERT_TRUE((*writer)->Append(values.data(), 8).ok());
  ASSERT_TRUE((*writer)->Finish().ok());
  EXPECT_EQ(ReadFile(path), FileBytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                                      std::string("\x00\x00\x80\x3f\x00\x00\x20\xc0", 8)));
}

TEST_F(SafetensorsWriterTest, HeaderIsPaddedToEightBytesAndParsesAsJson) {
  // Names of eight different lengths exercise every amount of padding.
  for (int name_length = 1; name_length <= 8; ++name_length) {
    const std::string name(name_length, 'w');
    SCOPED_TRACE(name);
    const std::string path = PathFor(absl::StrCat("aligned", name_length, ".safetensors"));
    auto writer = SafetensorsWriter::Create(
        path, {Entry(name, DType::kFloat32, {2, 3}), Entry("b", DType::kInt8, {3})},
        {{"format", "pt"}});
    ASSERT_TRUE(writer.ok()) << writer.status();
    const std::string data(27, '\x01');
    ASSERT_TRUE((*writer)->Append(data.data(), data.size()).ok());
    ASSERT_TRUE((*writer)->Finish().ok());

    const std::string bytes = ReadFile(path);
    ASSERT_GE(bytes.size(), 8u);
    uint64_t header_size = 0;
    std::memcpy(&header_size, bytes.data(), 8);
    EXPECT_EQ((8 + header_size) % 8, 0u);
    ASSERT_EQ(bytes.size(), 8 + header_size + data.size());
    const std::string header = bytes.substr(8, header_size);
    const size_t json_end = header.find_last_not_of(' ') + 1;
    EXPECT_LT(header.size() - json_end, 8u) << "padding is more than needed";

    const nlohmann::json json = nlohmann::json::parse(header, nullptr, /*allow_exceptions=*/false);
    ASSERT_TRUE(json.is_object()) << header;
    EXPECT_EQ(json.size(), 3u);
    EXPECT_EQ(json["__metadata__"], nlohmann::json({{"format", "pt"}}));
    EXPECT_EQ(json[name]["dtype"], "F32");
    EXPECT_EQ(json[name]["shape"], nlohmann::json({2, 3}));
    EXPECT_EQ(json[name]["data_offsets"], nlohmann::json({0, 24}));
    EXPECT_EQ(json["b"]["dtype"], "I8");
    EXPECT_EQ(json["b"]["shape"], nlohmann::json({3}));
    EXPECT_EQ(json["b"]["data_offsets"], nlohmann::json({24, 27}));
  }
}

TEST_F(SafetensorsWriterTest, ComputesOffsetsIgnoringCallerValues) {
  SafetensorsEntry a = Entry("a", DType::kInt32, {2});
  a.begin = 100;
  a.end = 7;
  auto writer =
      SafetensorsWriter::Create(PathFor("x.safetensors"), {a, Entry("b", DType::kInt8, {1})}, {});
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_EQ((*writer)->entries().size(), 2u);
  EXPECT_EQ((*writer)->entries()[0].begin, 0u);
  EXPECT_EQ((*writer)->entries()[0].end, 8u);
  EXPECT_EQ((*writer)->entries()[1].begin, 8u);
  EXPECT_EQ((*writer)->entries()[1].end, 9u);
}

TEST_F(SafetensorsWriterTest, AppendPastDeclaredBytesIsInvalidArgumentAndWritesNothing) {
  const std::string path = PathFor("over.safetensors");
  auto writer = SafetensorsWriter::Create(path, {Entry("a", DType::kUInt8, {8})}, {});
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE((*writer)->Append("abcd", 4).ok());
  const absl::Status too_much = (*writer)->Append("efghijkl", 8);
  EXPECT_EQ(too_much.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(too_much.message().find("only 4 of the 8 bytes"), std::string::npos) << too_much;
  // The writer is still usable and nothing of the rejected Append landed.
  ASSERT_TRUE((*writer)->Append("EFGH", 4).ok());
  ASSERT_TRUE((*writer)->Finish().ok());
  auto reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ(ReadAll(**reader, (*reader)->entries()[0]), "abcdEFGH");
}

TEST_F(SafetensorsWriterTest, FinishWithMissingBytesIsFailedPreconditionNamingTheTensor) {
  const std::string path = PathFor("short.safetensors");
  auto writer = SafetensorsWriter::Create(
      path, {Entry("a", DType::kFloat32, {2}), Entry("b", DType::kFloat32, {2})}, {});
  ASSERT_TRUE(writer.ok()) << writer.status();
  const std::string data(16, '\x2a');
  ASSERT_TRUE((*writer)->Append(data.data(), 10).ok());
  const absl::Status missing = (*writer)->Finish();
  EXPECT_EQ(missing.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(missing.message().find("tensor 'b' has 2 of its 8 bytes"), std::string::npos)
      << missing;
  EXPECT_FALSE(Exists(path));
  // Appending the rest and finishing again succeeds.
  ASSERT_TRUE((*writer)->Append(data.data() + 10, 6).ok());
  ASSERT_TRUE((*writer)->Finish().ok());
  EXPECT_TRUE(SafetensorsReader::Open(path).ok());
}

TEST_F(SafetensorsWriterTest, CallsAfterFinishAreFailedPrecondition) {
  auto writer =
      SafetensorsWriter::Create(PathFor("done.safetensors"), {Entry("a", DType::kUInt8, {1})}, {});
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE((*writer)->Append("x", 1).ok());
  ASSERT_TRUE((*writer)->Finish().ok());
  EXPECT_EQ((*writer)->Append("", 0).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*writer)->Finish().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(SafetensorsWriterTest, AbandonedWriterLeavesNoFileAndKeepsThePreviousOne) {
  const std::string fresh = PathFor("fresh.safetensors");
  const std::string existing = PathFor("existing.safetensors");
  WriteFile(existing, "previous contents");
  for (const std::string& path : {fresh, existing}) {
    SCOPED_TRACE(path);
    auto writer = SafetensorsWriter::Create(path, {Entry("a", DType::kUInt8, {4})}, {});
    ASSERT_TRUE(writer.ok()) << writer.status();
    ASSERT_TRUE((*writer)->Append("ab", 2).ok());
    EXPECT_EQ((*writer)->Finish().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_TRUE(Exists(path + ".tmp"));
    writer->reset();
    EXPECT_FALSE(Exists(path + ".tmp"));
  }
  EXPECT_FALSE(Exists(fresh));
  EXPECT_EQ(ReadFile(existing), "previous contents");
}

TEST_F(SafetensorsWriterTest, FinishReplacesExistingFileAndStaleTempFile) {
  const std::string path = PathFor("replace.safetensors");
  WriteFile(path, "previous contents");
  WriteFile(path + ".tmp", std::string(1000, 'z'));  // left by a crashed writer
  auto writer = SafetensorsWriter::Create(path, {Entry("a", DType::kUInt8, {2})}, {});
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE((*writer)->Append("ok", 2).ok());
  ASSERT_TRUE((*writer)->Finish().ok());
  EXPECT_FALSE(Exists(path + ".tmp"));
  auto reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ(ReadAll(**reader, (*reader)->entries()[0]), "ok");
}

TEST_F(SafetensorsWriterTest, RejectsBadEntriesWithInvalidArgumentBeforeTouchingDisk) {
  struct Case {
    std::vector<SafetensorsEntry> entries;
    std::map<std::string, std::string> metadata;
    std::string reason;
  };
  const int64_t huge = int64_t{1} << 62;
  const std::vector<Case> cases = {
      {{Entry("", DType::kFloat32, {1})}, {}, "empty name"},
      {{Entry("a", DType::kFloat32, {1}), Entry("a", DType::kInt8, {1})}, {}, "duplicate"},
      {{Entry("__metadata__", DType::kFloat32, {1})}, {}, "reserved"},
      {{Entry("a", DType::kFloat32, {2, -1})}, {}, "negative dimension"},
      {{Entry("a", DType::kFloat32, std::vector<int64_t>(65, 1))}, {}, "more than the limit"},
      {{Entry("a", DType::kFloat32, {huge, 4})}, {}, "past 64 bits"},
      {{Entry("a", DType::kUInt8, {huge}), Entry("b", DType::kUInt8, {huge}),
        Entry("c", DType::kUInt8, {huge}), Entry("d", DType::kUInt8, {huge})},
       {},
       "past 64 bits"},
      {{Entry("bad\xff", DType::kFloat32, {1})}, {}, "not valid UTF-8"},
      {{}, {{"key", "\xc0\x80"}}, "not valid UTF-8"},  // overlong NUL
  };
  const std::string path = PathFor("rejected.safetensors");
  for (const Case& bad : cases) {
    SCOPED_TRACE(bad.reason);
    auto writer = SafetensorsWriter::Create(path, bad.entries, bad.metadata);
    ASSERT_FALSE(writer.ok());
    EXPECT_EQ(writer.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(writer.status().message().find(bad.reason), std::string::npos) << writer.status();
    EXPECT_NE(writer.status().message().find(path), std::string::npos) << writer.status();
    EXPECT_FALSE(Exists(path + ".tmp"));
  }
}

TEST_F(SafetensorsWriterTest, CreateInMissingDirectoryIsNotFound) {
  auto writer = SafetensorsWriter::Create(PathFor("no/such/dir/x.safetensors"), {}, {});
  EXPECT_EQ(writer.status().code(), absl::StatusCode::kNotFound) << writer.status();
}

TEST_F(SafetensorsReaderTest, MissingFileIsNotFound) {
  const std::string path = PathFor("absent.safetensors");
  auto reader = SafetensorsReader::Open(path);
  EXPECT_EQ(reader.status().code(), absl::StatusCode::kNotFound) << reader.status();
  EXPECT_NE(reader.status().message().find(path), std::string::npos);
}

TEST_F(SafetensorsReaderTest, DirectoryIsInvalidArgument) {
  auto reader = SafetensorsReader::Open(dir_);
  EXPECT_EQ(reader.status().code(), absl::StatusCode::kInvalidArgument) << reader.status();
  EXPECT_NE(reader.status().message().find("not a regular file"), std::string::npos);
}

TEST_F(SafetensorsReaderTest, ReadOutsideTheEntryIsRejected) {
  const std::string path = PathFor("bounds.safetensors");
  WriteFile(path, FileBytes(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})", "abcd"));
  auto reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  const SafetensorsEntry& a = (*reader)->entries()[0];
  char buffer[8] = {};
  EXPECT_EQ((*reader)->Read(a, 2, buffer, 3).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ((*reader)->Read(a, 5, buffer, 0).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ((*reader)->Read(a, std::numeric_limits<uint64_t>::max(), buffer, 1).code(),
            absl::StatusCode::kOutOfRange);
  ASSERT_TRUE((*reader)->Read(a, 4, buffer, 0).ok());
  ASSERT_TRUE((*reader)->Read(a, 1, buffer, 3).ok());
  EXPECT_EQ(std::string(buffer, 3), "bcd");

  SafetensorsEntry foreign = a;
  foreign.end = 400;
  EXPECT_EQ((*reader)->Read(foreign, 0, buffer, 1).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SafetensorsReaderTest, FileTruncatedAfterOpenIsDataLoss) {
  const std::string path = PathFor("truncated.safetensors");
  WriteFile(path, FileBytes(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})", "abcd"));
  auto reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 2);
  char buffer[4];
  EXPECT_EQ((*reader)->Read((*reader)->entries()[0], 0, buffer, 4).code(),
            absl::StatusCode::kDataLoss);
}

TEST_F(SafetensorsReaderTest, ConcurrentReadsSeeTheirOwnBytes) {
  constexpr int kThreads = 8;
  constexpr int64_t kValuesPerThread = 4096;
  std::vector<int64_t> values(kThreads * kValuesPerThread);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<int64_t>(i * 7919);
  const std::string path = PathFor("concurrent.safetensors");
  auto writer = SafetensorsWriter::Create(
      path, {Entry("v", DType::kInt64, {static_cast<int64_t>(values.size())})}, {});
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE((*writer)->Append(values.data(), values.size() * sizeof(int64_t)).ok());
  ASSERT_TRUE((*writer)->Finish().ok());
  auto reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();

  const SafetensorsReader& shared = **reader;
  std::vector<int> mismatches(kThreads, -1);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<int64_t> slice(kValuesPerThread);
      const uint64_t offset = t * kValuesPerThread * sizeof(int64_t);
      if (!shared.Read(shared.entries()[0], offset, slice.data(), slice.size() * sizeof(int64_t))
               .ok()) {
        return;
      }
      int count = 0;
      for (int64_t i = 0; i < kValuesPerThread; ++i) {
        if (slice[i] != values[t * kValuesPerThread + i]) ++count;
      }
      mismatches[t] = count;
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(mismatches, std::vector<int>(kThreads, 0));
}

// ------------------------------------------------------- malformed files --

struct MalformedCase {
  std::string test_name;
  std::string file_bytes;
  std::string reason;  // expected in the message
  std::string tensor;  // expected in the message, quoted, unless empty
};

std::string OneTensor(absl::string_view fields) { return absl::StrCat(R"({"a":{)", fields, "}}"); }

std::vector<MalformedCase> MalformedCases() {
  const std::string eight(8, '\0');
  const std::string twelve(12, '\0');
  std::vector<std::string> many_ones(kSafetensorsMaxRank + 1, "1");
  const std::string too_many_dims = absl::StrCat("[", absl::StrJoin(many_ones, ","), "]");
  const std::string too_deep = absl::StrCat(
      R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0],"x":)",
      std::string(kSafetensorsMaxJsonDepth, '['), std::string(kSafetensorsMaxJsonDepth, ']'), "}}");
  auto valid_f32 = [](absl::string_view offsets) {
    return absl::StrCat(R"("dtype":"F32","shape":[2],"data_offsets":)", offsets);
  };
  return {
      {"EmptyFile", "", "shorter than the 8-byte header length", ""},
      {"FileShorterThanLengthPrefix", std::string("\x05\x00\x00", 3),
       "shorter than the 8-byte header length", ""},
      {"HeaderLengthPastEndOfFile", LengthPrefix(100) + "{}", "runs past the end of the file", ""},
      {"HeaderLengthOverLimit", LengthPrefix(kSafetensorsMaxHeaderBytes + 1) + "{}",
       "exceeds the limit", ""},
      {"HeaderLengthHuge", LengthPrefix(std::numeric_limits<uint64_t>::max()) + "{}",
       "exceeds the limit", ""},
      {"HeaderEmpty", LengthPrefix(0), "not valid JSON", ""},
      {"HeaderNotJson", FileBytes(R"({"a": )", ""), "not valid JSON", ""},
      {"HeaderWithTrailingGarbage", FileBytes("{} x", ""), "not valid JSON", ""},
      {"HeaderNotUtf8", FileBytes("{\"\xff\":1}", ""), "not valid JSON", ""},
      {"HeaderPaddedWithNul", FileBytes(std::string("{}\0\0\0\0\0\0", 8), "", false), "NUL byte",
       ""},
      {"HeaderWithNulThenGarbage", FileBytes(std::string("{}\0x", 4), ""), "NUL byte", ""},
      {"HeaderNotObject", FileBytes("[1,2]", ""), "not a JSON object", ""},
      {"HeaderNestedTooDeep", FileBytes(too_deep, ""), "nested deeper than", ""},
      {"EntryNotObject", FileBytes(R"({"a":3})", ""), "entry is not a JSON object", "a"},
      {"MissingDtype", FileBytes(OneTensor(R"("shape":[2],"data_offsets":[0,8])"), eight),
       "missing field \"dtype\"", "a"},
      {"DtypeNotString",
       FileBytes(OneTensor(R"("dtype":1,"shape":[2],"data_offsets":[0,8])"), eight),
       "\"dtype\" is not a string", "a"},
      {"DtypeBool",
       FileBytes(OneTensor(R"("dtype":"BOOL","shape":[8],"data_offsets":[0,8])"), eight),
       "unsupported dtype 'BOOL'", "a"},
      {"DtypeF8E4M3",
       FileBytes(OneTensor(R"("dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8])"), eight),
       "unsupported dtype 'F8_E4M3'", "a"},
      {"DtypePotluckSpelling",
       FileBytes(OneTensor(R"("dtype":"float32","shape":[2],"data_offsets":[0,8])"), eight),
       "unsupported dtype 'float32'", "a"},
      {"MissingShape", FileBytes(OneTensor(R"("dtype":"F32","data_offsets":[0,8])"), eight),
       "missing field \"shape\"", "a"},
      {"ShapeNotArray",
       FileBytes(OneTensor(R"("dtype":"F32","shape":2,"data_offsets":[0,8])"), eight),
       "\"shape\" is not an array", "a"},
      {"ShapeDimensionFractional",
       FileBytes(OneTensor(R"("dtype":"F32","shape":[2.0],"data_offsets":[0,8])"), eight),
       "dimension 0 is not an integer", "a"},
      {"ShapeDimensionString",
       FileBytes(OneTensor(R"("dtype":"F32","shape":[1,"2"],"data_offsets":[0,8])"), eight),
       "dimension 1 is not an integer", "a"},
      {"ShapeDimensionNegative",
       FileBytes(OneTensor(R"("dtype":"F32","shape":[-2,-1],"data_offsets":[0,8])"), eight),
       "dimension 0 is negative (-2)", "a"},
      {"ShapeDimensionOverInt64",
       FileBytes(OneTensor(R"("dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,8])"),
                 eight),
       "does not fit in int64", "a"},
      {"ShapeTooManyDimensions",
       FileBytes(OneTensor(absl::StrCat(R"("dtype":"U8","shape":)", too_many_dims,
                                        R"(,"data_offsets":[0,1])")),
                 std::string(1, '\0')),
       "65 dimensions, more than the limit of 64", "a"},
      {"MissingDataOffsets", FileBytes(OneTensor(R"("dtype":"F32","shape":[2])"), eight),
       "missing field \"data_offsets\"", "a"},
      {"DataOffsetsOneNumber", FileBytes(OneTensor(valid_f32("[8]")), eight),
       "\"data_offsets\" is not [begin, end]", "a"},
      {"DataOffsetsNotArray", FileBytes(OneTensor(valid_f32("8")), eight),
       "\"data_offsets\" is not [begin, end]", "a"},
      {"DataOffsetsNegative", FileBytes(OneTensor(valid_f32("[-1,7]")), eight),
       "\"data_offsets\" is not [begin, end]", "a"},
      {"DataOffsetsStrings", FileBytes(OneTensor(valid_f32(R"(["0","8"])")), eight),
       "\"data_offsets\" is not [begin, end]", "a"},
      {"DataOffsetsBeginAfterEnd", FileBytes(OneTensor(valid_f32("[8,0]")), eight),
       "data_offsets [8, 0]: begin is after end", "a"},
      {"DataOffsetsPastDataSection", FileBytes(OneTensor(valid_f32("[0,16]")), eight),
       "out of range: the data section has 8 bytes", "a"},
      {"DataOffsetsPastDataSectionByOverflow",
       FileBytes(OneTensor(valid_f32("[18446744073709551608,18446744073709551615]")), eight),
       "out of range", "a"},
      {"SizeMismatchWithShape",
       FileBytes(OneTensor(R"("dtype":"F32","shape":[3],"data_offsets":[0,8])"), eight),
       "size mismatch: shape [3] of F32 needs 12 bytes", "a"},
      {"SizeMismatchScalar",
       FileBytes(OneTensor(R"("dtype":"F64","shape":[],"data_offsets":[0,4])"), eight.substr(4)),
       "size mismatch: shape [] of F64 needs 8 bytes", "a"},
      {"ShapeByteSizeOverflows",
       FileBytes(OneTensor(R"("dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8])"),
                 eight),
       "overflows 64 bits", "a"},
      {"TensorsOverlap",
       FileBytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                 R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                 twelve),
       "tensors 'a' [0, 8) and 'b' [4, 12) overlap", ""},
      {"ZeroByteTensorInsideAnother",
       FileBytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                 R"("z":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})",
                 eight),
       "overlap", "z"},
      {"GapBetweenTensors",
       FileBytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                 R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                 twelve),
       "gap of 4 unused bytes between tensors 'a' and 'b'", ""},
      {"GapBeforeFirstTensor",
       FileBytes(OneTensor(R"("dtype":"F32","shape":[1],"data_offsets":[4,8])"), eight),
       "gap of 4 unused bytes before the first tensor", "a"},
      {"BytesAfterLastTensor",
       FileBytes(OneTensor(R"("dtype":"F32","shape":[1],"data_offsets":[0,4])"), eight),
       "4 unused bytes after the last tensor", "a"},
      {"DataButNoTensors", FileBytes("{}", eight),
       "the data section has 8 bytes but there are no tensors", ""},
      {"MetadataNotObject", FileBytes(R"({"__metadata__":"pt"})", ""),
       "\"__metadata__\" is not a JSON object", ""},
      {"MetadataValueNotString", FileBytes(R"({"__metadata__":{"step":1}})", ""),
       "value for 'step' is not a string", ""},
  };
}

class SafetensorsMalformedTest : public SafetensorsTest,
                                 public ::testing::WithParamInterface<MalformedCase> {};

TEST_P(SafetensorsMalformedTest, OpenIsInvalidArgumentNamingFileTensorAndReason) {
  const MalformedCase& malformed = GetParam();
  const std::string path = PathFor("malformed.safetensors");
  WriteFile(path, malformed.file_bytes);
  auto reader = SafetensorsReader::Open(path);
  ASSERT_FALSE(reader.ok());
  const absl::Status& status = reader.status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find(path), std::string::npos) << status;
  EXPECT_NE(status.message().find(malformed.reason), std::string::npos) << status;
  if (!malformed.tensor.empty()) {
    EXPECT_NE(status.message().find(absl::StrCat("'", malformed.tensor, "'")), std::string::npos)
        << status;
  }
}

INSTANTIATE_TEST_SUITE_P(AllCases, SafetensorsMalformedTest, ::testing::ValuesIn(MalformedCases()),
                         [](const ::testing::TestParamInfo<MalformedCase>& param_info) {
                           return param_info.param.test_name;
                         });

}  // namespace
}  // namespace potluck
