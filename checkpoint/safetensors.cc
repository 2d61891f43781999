#include "checkpoint/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <limits>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

#include "common/check.h"
#include "common/status.h"

namespace potluck {

namespace {

using Json = nlohmann::json;

constexpr uint64_t kLengthPrefixBytes = 8;
// The writer pads the header so the data section starts on this boundary, as
// the reference writer does: a reader that maps the file can then use any
// tensor whose offset is a multiple of its element size in place.
constexpr uint64_t kDataAlignmentBytes = 8;
// Tensor names and JSON excerpts in error messages are cut to this length:
// they come from the file and may be any size.
constexpr size_t kMaxQuotedBytes = 200;

// The format's spellings of the dtypes potluck supports. ParseDType also takes
// potluck's own names ("float32"); files must use these exact spellings.
struct DTypeSpelling {
  absl::string_view name;
  DType dtype;
};
constexpr DTypeSpelling kDTypeSpellings[] = {
    {"F32", DType::kFloat32}, {"F16", DType::kFloat16}, {"BF16", DType::kBFloat16},
    {"F64", DType::kFloat64}, {"I32", DType::kInt32},   {"I64", DType::kInt64},
    {"U8", DType::kUInt8},    {"I8", DType::kInt8},
};

absl::string_view SafetensorsDTypeName(DType dtype) {
  for (const DTypeSpelling& spelling : kDTypeSpellings) {
    if (spelling.dtype == dtype) return spelling.name;
  }
  POTLUCK_CHECK(false) << "no safetensors name for DType " << static_cast<int>(dtype);
  return "";
}

std::optional<DType> ParseSafetensorsDType(absl::string_view name) {
  for (const DTypeSpelling& spelling : kDTypeSpellings) {
    if (spelling.name == name) return spelling.dtype;
  }
  return std::nullopt;
}

// 'name', cut short if it is long.
std::string Quoted(absl::string_view text) {
  if (text.size() <= kMaxQuotedBytes) return absl::StrCat("'", text, "'");
  return absl::StrCat("'", text.substr(0, kMaxQuotedBytes), "...' (", text.size(), " bytes)");
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

// The byte size of a tensor with non-negative `shape`, or nullopt if it does
// not fit in 64 bits.
std::optional<uint64_t> TensorBytes(DType dtype, const std::vector<int64_t>& shape) {
  // A zero dimension makes the product zero, however large the others are.
  if (std::find(shape.begin(), shape.end(), 0) != shape.end()) return 0;
  uint64_t bytes = DTypeSize(dtype);
  for (int64_t dimension : shape) {
    if (__builtin_mul_overflow(bytes, static_cast<uint64_t>(dimension), &bytes)) {
      return std::nullopt;
    }
  }
  return bytes;
}

// Well-formed UTF-8: no stray continuation bytes, overlong forms, surrogates
// or code points past U+10FFFF. nlohmann::json refuses to write anything else.
bool IsValidUtf8(absl::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<uint8_t>(text[i]);
    if (lead < 0x80) {
      ++i;
      continue;
    }
    size_t length;
    uint32_t code_point;
    uint32_t smallest;
    if ((lead & 0xe0) == 0xc0) {
      length = 2, code_point = lead & 0x1f, smallest = 0x80;
    } else if ((lead & 0xf0) == 0xe0) {
      length = 3, code_point = lead & 0x0f, smallest = 0x800;
    } else if ((lead & 0xf8) == 0xf0) {
      length = 4, code_point = lead & 0x07, smallest = 0x10000;
    } else {
      return false;
    }
    if (text.size() - i < length) return false;
    for (size_t k = 1; k < length; ++k) {
      const auto continuation = static_cast<uint8_t>(text[i + k]);
      if ((continuation & 0xc0) != 0x80) return false;
      code_point = (code_point << 6) | (continuation & 0x3f);
    }
    if (code_point < smallest || code_point > 0x10ffff ||
        (code_point >= 0xd800 && code_point <= 0xdfff)) {
      return false;
    }
    i += length;
  }
  return true;
}

// potluck::ErrnoStatus is spelled out in this file: with an
// absl::string_view argument, lookup also finds absl::ErrnoStatus.
absl::Status WriteAll(int fd, const void* data, size_t size_bytes, absl::string_view context) {
  const auto* bytes = static_cast<const uint8_t*>(data);
  while (size_bytes > 0) {
    const ssize_t written = ::write(fd, bytes, size_bytes);
    if (written < 0) {
      if (errno == EINTR) continue;
      return potluck::ErrnoStatus(errno, context);
    }
    if (written == 0)
      return potluck::ErrnoStatus(EIO, absl::StrCat(context, ": write made no progress"));
    bytes += written;
    size_bytes -= static_cast<size_t>(written);
  }
  return absl::OkStatus();
}

// Reads exactly `size_bytes` at `offset`; a file that ends first is kDataLoss.
absl::Status PreadAll(int fd, void* out, size_t size_bytes, uint64_t offset,
                      absl::string_view context) {
  auto* bytes = static_cast<uint8_t*>(out);
  while (size_bytes > 0) {
    const ssize_t got = ::pread(fd, bytes, size_bytes, static_cast<off_t>(offset));
    if (got < 0) {
      if (errno == EINTR) continue;
      return potluck::ErrnoStatus(errno, context);
    }
    if (got == 0) {
      return absl::DataLossError(absl::StrCat(context, ": the file ends at byte ", offset, ", ",
                                              size_bytes, " bytes short (truncated?)"));
    }
    bytes += got;
    size_bytes -= static_cast<size_t>(got);
    offset += static_cast<uint64_t>(got);
  }
  return absl::OkStatus();
}

std::string DirectoryOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Makes a rename in `directory` durable.
absl::Status SyncDirectory(const std::string& directory) {
  const int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return potluck::ErrnoStatus(errno, absl::StrCat("opening directory ", directory));
  absl::Status status;
  if (::fsync(fd) != 0) status = potluck::ErrnoStatus(errno, absl::StrCat("fsync ", directory));
  ::close(fd);
  return status;
}

// A SAX handler that builds nothing. It runs before the DOM parse so that a
// malformed header gets the parser's message (the DOM parse without
// exceptions only says that it failed), and so that no header can make the
// DOM parse build a deeply nested tree.
class HeaderSyntaxCheck {
 public:
  bool null() { return true; }
  bool boolean(bool) { return true; }
  bool number_integer(Json::number_integer_t) { return true; }
  bool number_unsigned(Json::number_unsigned_t) { return true; }
  bool number_float(Json::number_float_t, const Json::string_t&) { return true; }
  bool string(Json::string_t&) { return true; }
  bool binary(Json::binary_t&) { return true; }
  bool start_object(size_t) { return Enter(); }
  bool key(Json::string_t&) { return true; }
  bool end_object() { return Leave(); }
  bool start_array(size_t) { return Enter(); }
  bool end_array() { return Leave(); }
  bool parse_error(size_t, const std::string&, const Json::exception& error) {
    absl::string_view message = error.what();
    // Drops nlohmann's "[json.exception.parse_error.101] " tag.
    const size_t tag_end = message.find("] ");
    if (message.substr(0, 1) == "[" && tag_end != absl::string_view::npos) {
      message.remove_prefix(tag_end + 2);
    }
    if (message.size() > kMaxQuotedBytes) message = message.substr(0, kMaxQuotedBytes);
    error_ = absl::StrCat("header is not valid JSON: ", message);
    return false;
  }

  const std::string& error() const { return error_; }

 private:
  bool Enter() {
    if (++depth_ <= kSafetensorsMaxJsonDepth) return true;
    error_ =
        absl::StrCat("header JSON is nested deeper than ", kSafetensorsMaxJsonDepth, " levels");
    return false;
  }
  bool Leave() {
    --depth_;
    return true;
  }

  int depth_ = 0;
  std::string error_;
};

// Finds `key` in the tensor object `entry`; errors say which tensor.
absl::StatusOr<const Json*> Field(const Json& entry, const char* key, absl::string_view name) {
  const auto it = entry.find(key);
  if (it == entry.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor ", Quoted(name), ": missing field \"", key, "\""));
  }
  return &*it;
}

// Parses one tensor's object, checking it against itself and against the size
// of the data section; the tiling check across tensors comes later.
absl::StatusOr<SafetensorsEntry> ParseEntry(const std::string& name, const Json& value,
                                            uint64_t data_size_bytes) {
  const std::string context = absl::StrCat("tensor ", Quoted(name), ": ");
  auto invalid = [&context](auto&&... reason) {
    return absl::InvalidArgumentError(absl::StrCat(context, reason...));
  };
  if (!value.is_object()) return invalid("entry is not a JSON object");
  SafetensorsEntry entry;
  entry.name = name;

  ASSIGN_OR_RETURN(const Json* dtype, Field(value, "dtype", name));
  if (!dtype->is_string()) return invalid("field \"dtype\" is not a string");
  const std::string& dtype_name = dtype->get_ref<const std::string&>();
  const std::optional<DType> parsed_dtype = ParseSafetensorsDType(dtype_name);
  if (!parsed_dtype.has_value()) {
    return invalid("unsupported dtype ", Quoted(dtype_name),
                   " (supported: F32, F16, BF16, F64, I32, I64, U8, I8)");
  }
  entry.dtype = *parsed_dtype;

  ASSIGN_OR_RETURN(const Json* shape, Field(value, "shape", name));
  if (!shape->is_array()) return invalid("field \"shape\" is not an array");
  if (shape->size() > kSafetensorsMaxRank) {
    return invalid("shape has ", shape->size(), " dimensions, more than the limit of ",
                   kSafetensorsMaxRank);
  }
  for (size_t i = 0; i < shape->size(); ++i) {
    const Json& dimension = (*shape)[i];
    if (dimension.is_number_unsigned()) {
      const uint64_t size = dimension.get<uint64_t>();
      if (size > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return invalid("shape dimension ", i, " (", size, ") does not fit in int64");
      }
      entry.shape.push_back(static_cast<int64_t>(size));
    } else if (dimension.is_number_integer()) {  // signed, so negative
      return invalid("shape dimension ", i, " is negative (", dimension.get<int64_t>(), ")");
    } else {
      return invalid("shape dimension ", i, " is not an integer");
    }
  }

  ASSIGN_OR_RETURN(const Json* offsets, Field(value, "data_offsets", name));
  if (!offsets->is_array() || offsets->size() != 2 || !(*offsets)[0].is_number_unsigned() ||
      !(*offsets)[1].is_number_unsigned()) {
    return invalid("field \"data_offsets\" is not [begin, end] with non-negative integers");
  }
  entry.begin = (*offsets)[0].get<uint64_t>();
  entry.end = (*offsets)[1].get<uint64_t>();
  if (entry.begin > entry.end) {
    return invalid("data_offsets [", entry.begin, ", ", entry.end, "]: begin is after end");
  }
  if (entry.end > data_size_bytes) {
    return invalid("data_offsets [", entry.begin, ", ", entry.end,
                   "] are out of range: the data section has ", data_size_bytes, " bytes");
  }

  const std::optional<uint64_t> expected_bytes = TensorBytes(entry.dtype, entry.shape);
  if (!expected_bytes.has_value()) {
    return invalid("shape ", ShapeString(entry.shape), " of ", dtype_name,
                   " has a byte size that overflows 64 bits");
  }
  if (*expected_bytes != entry.size_bytes()) {
    return invalid("size mismatch: shape ", ShapeString(entry.shape), " of ", dtype_name, " needs ",
                   *expected_bytes, " bytes but data_offsets [", entry.begin, ", ", entry.end,
                   "] hold ", entry.size_bytes());
  }
  return entry;
}

}  // namespace

// ---------------------------------------------------------------- writer --

SafetensorsWriter::SafetensorsWriter(std::string path, std::vector<SafetensorsEntry> entries,
                                     uint64_t data_size_bytes, int fd)
    : path_(std::move(path)),
      temp_path_(path_ + ".tmp"),
      entries_(std::move(entries)),
      data_size_bytes_(data_size_bytes),
      fd_(fd) {}

SafetensorsWriter::~SafetensorsWriter() {
  if (state_ == State::kWriting) Abandon();
}

absl::StatusOr<std::unique_ptr<SafetensorsWriter>> SafetensorsWriter::Create(
    const std::string& path, std::vector<SafetensorsEntry> entries,
    const std::map<std::string, std::string>& metadata) {
  auto invalid = [&path](auto&&... reason) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", reason...));
  };
  for (const auto& [key, value] : metadata) {
    if (!IsValidUtf8(key) || !IsValidUtf8(value)) {
      return invalid("metadata key or value ", Quoted(key), " is not valid UTF-8");
    }
  }

  // Lays the tensors out back to back in the given order.
  std::set<absl::string_view> names;
  uint64_t offset = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    SafetensorsEntry& entry = entries[i];
    if (entry.name.empty()) return invalid("tensor ", i, " has an empty name");
    if (entry.name == kSafetensorsMetadataKey) {
      return invalid("tensor ", i, " uses the reserved name ", Quoted(kSafetensorsMetadataKey));
    }
    if (!IsValidUtf8(entry.name)) return invalid("tensor ", i, "'s name is not valid UTF-8");
    if (!names.insert(entry.name).second) {
      return invalid("duplicate tensor name ", Quoted(entry.name));
    }
    if (entry.shape.size() > kSafetensorsMaxRank) {
      return invalid("tensor ", Quoted(entry.name), " has ", entry.shape.size(),
                     " dimensions, more than the limit of ", kSafetensorsMaxRank);
    }
    for (int64_t dimension : entry.shape) {
      if (dimension < 0) {
        return invalid("tensor ", Quoted(entry.name), " has a negative dimension in shape ",
                       ShapeString(entry.shape));
      }
    }
    const std::optional<uint64_t> bytes = TensorBytes(entry.dtype, entry.shape);
    uint64_t end = 0;
    if (!bytes.has_value() || __builtin_add_overflow(offset, *bytes, &end)) {
      return invalid("tensor ", Quoted(entry.name), " of shape ", ShapeString(entry.shape),
                     " takes the file's size past 64 bits");
    }
    entry.begin = offset;
    entry.end = end;
    offset = end;
  }

  // ordered_json keeps the tensors in data order, which reads better.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json& metadata_json = header[std::string(kSafetensorsMetadataKey)];
    for (const auto& [key, value] : metadata) metadata_json[key] = value;
  }
  for (const SafetensorsEntry& entry : entries) {
    header[entry.name] = {
        {"dtype", std::string(SafetensorsDTypeName(entry.dtype))},
        {"shape", entry.shape},
        {"data_offsets", {entry.begin, entry.end}},
    };
  }
  std::string header_text = header.dump();
  // The length prefix is itself 8 bytes, so padding the header to a multiple
  // of 8 aligns the data section.
  header_text.append(
      (kDataAlignmentBytes - header_text.size() % kDataAlignmentBytes) % kDataAlignmentBytes, ' ');
  if (header_text.size() > kSafetensorsMaxHeaderBytes) {
    return invalid("the header would take ", header_text.size(), " bytes, more than the limit of ",
                   kSafetensorsMaxHeaderBytes);
  }

  const std::string temp_path = path + ".tmp";
  const int fd = ::open(temp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return potluck::ErrnoStatus(errno, absl::StrCat("creating ", temp_path));
  // From here on the writer's destructor removes the temporary file.
  std::unique_ptr<SafetensorsWriter> writer(
      new SafetensorsWriter(path, std::move(entries), offset, fd));

  std::string prefix(kLengthPrefixBytes, '\0');
  for (size_t i = 0; i < kLengthPrefixBytes; ++i) {
    prefix[i] = static_cast<char>((header_text.size() >> (8 * i)) & 0xff);
  }
  prefix += header_text;
  RETURN_IF_ERROR(WriteAll(fd, prefix.data(), prefix.size(),
                           absl::StrCat("writing the header of ", temp_path)));
  return writer;
}

absl::Status SafetensorsWriter::NotWritingError() const {
  if (state_ == State::kFinished) {
    return absl::FailedPreconditionError(absl::StrCat(path_, ": writer already finished"));
  }
  return absl::FailedPreconditionError(
      absl::StrCat(path_, ": writer failed earlier and removed ", temp_path_));
}

void SafetensorsWriter::Abandon() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  ::unlink(temp_path_.c_str());
  state_ = State::kFailed;
}

absl::Status SafetensorsWriter::Append(const void* data, size_t size_bytes) {
  if (state_ != State::kWriting) return NotWritingError();
  const uint64_t remaining = data_size_bytes_ - appended_bytes_;
  if (size_bytes > remaining) {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": Append of ", size_bytes, " bytes, but only ", remaining, " of the ",
                     data_size_bytes_, " bytes the tensors declare remain"));
  }
  const absl::Status status =
      WriteAll(fd_, data, size_bytes, absl::StrCat("writing tensor data to ", temp_path_));
  if (!status.ok()) {
    Abandon();
    return status;
  }
  appended_bytes_ += size_bytes;
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::Finish() {
  if (state_ != State::kWriting) return NotWritingError();
  if (appended_bytes_ < data_size_bytes_) {
    const auto incomplete =
        std::find_if(entries_.begin(), entries_.end(),
                     [this](const SafetensorsEntry& entry) { return entry.end > appended_bytes_; });
    POTLUCK_CHECK(incomplete != entries_.end());
    const uint64_t have = appended_bytes_ - std::min(appended_bytes_, incomplete->begin);
    return absl::FailedPreconditionError(absl::StrCat(
        path_, ": bytes missing: tensor ", Quoted(incomplete->name), " has ", have, " of its ",
        incomplete->size_bytes(), " bytes (", data_size_bytes_ - appended_bytes_, " of ",
        data_size_bytes_, " missing in all)"));
  }
  absl::Status status;
  if (::fsync(fd_) != 0) status = potluck::ErrnoStatus(errno, absl::StrCat("fsync ", temp_path_));
  // close() can report a failed write-back (e.g. on NFS).
  if (::close(fd_) != 0 && status.ok()) {
    status = potluck::ErrnoStatus(errno, absl::StrCat("closing ", temp_path_));
  }
  fd_ = -1;
  if (status.ok() && ::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    status = potluck::ErrnoStatus(errno, absl::StrCat("renaming ", temp_path_, " to ", path_));
  }
  if (!status.ok()) {
    Abandon();
    return status;
  }
  state_ = State::kFinished;
  // The file is in place; an error here means only that the rename might not
  // survive a crash.
  return SyncDirectory(DirectoryOf(path_));
}

// ---------------------------------------------------------------- reader --

SafetensorsReader::SafetensorsReader(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}

SafetensorsReader::~SafetensorsReader() { ::close(fd_); }

absl::StatusOr<std::unique_ptr<SafetensorsReader>> SafetensorsReader::Open(
    const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return potluck::ErrnoStatus(errno, absl::StrCat("opening ", path));
  // Owns fd from here on, also on the error paths.
  std::unique_ptr<SafetensorsReader> reader(new SafetensorsReader(path, fd));
  RETURN_IF_ERROR(reader->LoadHeader());
  return reader;
}

absl::Status SafetensorsReader::LoadHeader() {
  auto invalid = [this](auto&&... reason) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": ", reason...));
  };
  struct stat info;
  if (::fstat(fd_, &info) != 0) return potluck::ErrnoStatus(errno, absl::StrCat("stat ", path_));
  if (!S_ISREG(info.st_mode)) return invalid("not a regular file");
  const auto file_size = static_cast<uint64_t>(info.st_size);
  if (file_size < kLengthPrefixBytes) {
    return invalid("the file is ", file_size, " bytes, shorter than the ", kLengthPrefixBytes,
                   "-byte header length");
  }

  uint8_t prefix[kLengthPrefixBytes];
  RETURN_IF_ERROR(PreadAll(fd_, prefix, sizeof(prefix), 0, absl::StrCat("reading ", path_)));
  uint64_t header_size = 0;
  for (size_t i = 0; i < kLengthPrefixBytes; ++i) {
    header_size |= static_cast<uint64_t>(prefix[i]) << (8 * i);
  }
  if (header_size > kSafetensorsMaxHeaderBytes) {
    return invalid("header length ", header_size, " exceeds the limit of ",
                   kSafetensorsMaxHeaderBytes, " bytes");
  }
  if (header_size > file_size - kLengthPrefixBytes) {
    return invalid("header length ", header_size, " runs past the end of the file (", file_size,
                   " bytes)");
  }
  data_start_ = kLengthPrefixBytes + header_size;
  data_size_bytes_ = file_size - data_start_;

  std::string header_text(header_size, '\0');
  RETURN_IF_ERROR(PreadAll(fd_, header_text.data(), header_text.size(), kLengthPrefixBytes,
                           absl::StrCat("reading ", path_)));
  // nlohmann's lexer takes a NUL byte for the end of input and would ignore
  // whatever follows it; JSON text never holds a raw NUL.
  if (const size_t nul = header_text.find('\0'); nul != std::string::npos) {
    return invalid("header is not valid JSON: NUL byte at header offset ", nul);
  }
  HeaderSyntaxCheck syntax_check;
  if (!Json::sax_parse(header_text.begin(), header_text.end(), &syntax_check)) {
    return invalid(syntax_check.error());
  }
  const Json header = Json::parse(header_text.begin(), header_text.end(), /*cb=*/nullptr,
                                  /*allow_exceptions=*/false);
  if (header.is_discarded()) return invalid("header is not valid JSON");
  if (!header.is_object()) return invalid("header is not a JSON object");

  for (const auto& [name, value] : header.items()) {
    if (name == kSafetensorsMetadataKey) {
      if (!value.is_object()) return invalid("\"__metadata__\" is not a JSON object");
      for (const auto& [key, text] : value.items()) {
        if (!text.is_string()) {
          return invalid("\"__metadata__\" value for ", Quoted(key), " is not a string");
        }
        metadata_[key] = text.get<std::string>();
      }
      continue;
    }
    absl::StatusOr<SafetensorsEntry> entry = ParseEntry(name, value, data_size_bytes_);
    if (!entry.ok()) return Annotate(entry.status(), path_);
    entries_.push_back(*std::move(entry));
  }

  // The tensors must tile the data section exactly.
  std::sort(entries_.begin(), entries_.end(),
            [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
              return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
            });
  uint64_t covered = 0;  // the data section's bytes [0, covered) belong to tensors seen so far
  const SafetensorsEntry* previous = nullptr;
  for (const SafetensorsEntry& entry : entries_) {
    if (entry.begin > covered) {
      if (previous == nullptr) {
        return invalid("gap of ", entry.begin, " unused bytes before the first tensor ",
                       Quoted(entry.name));
      }
      return invalid("gap of ", entry.begin - covered, " unused bytes between tensors ",
                     Quoted(previous->name), " and ", Quoted(entry.name));
    }
    if (entry.begin < covered) {
      return invalid("tensors ", Quoted(previous->name), " [", previous->begin, ", ", previous->end,
                     ") and ", Quoted(entry.name), " [", entry.begin, ", ", entry.end, ") overlap");
    }
    covered = entry.end;
    previous = &entry;
  }
  if (covered < data_size_bytes_) {
    if (previous == nullptr) {
      return invalid("the data section has ", data_size_bytes_, " bytes but there are no tensors");
    }
    return invalid(data_size_bytes_ - covered, " unused bytes after the last tensor ",
                   Quoted(previous->name));
  }

  for (size_t i = 0; i < entries_.size(); ++i) index_by_name_.emplace(entries_[i].name, i);
  return absl::OkStatus();
}

const SafetensorsEntry* SafetensorsReader::Find(absl::string_view name) const {
  const auto it = index_by_name_.find(name);
  return it == index_by_name_.end() ? nullptr : &entries_[it->second];
}

absl::Status SafetensorsReader::Read(const SafetensorsEntry& entry, uint64_t offset, void* out,
                                     size_t size_bytes) const {
  if (entry.begin > entry.end || entry.end > data_size_bytes_) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": tensor ", Quoted(entry.name),
                                                   " with data_offsets [", entry.begin, ", ",
                                                   entry.end, ") is not from this file"));
  }
  if (offset > entry.size_bytes() || size_bytes > entry.size_bytes() - offset) {
    return absl::OutOfRangeError(absl::StrCat(path_, ": reading ", size_bytes, " bytes at offset ",
                                              offset, " of tensor ", Quoted(entry.name),
                                              ", which has ", entry.size_bytes(), " bytes"));
  }
  return PreadAll(fd_, out, size_bytes, data_start_ + entry.begin + offset,
                  absl::StrCat("reading tensor ", Quoted(entry.name), " from ", path_));
}

}  // namespace potluck
