// Reading and writing Hugging Face .safetensors files, streaming: tensor bytes
// pass through in caller-sized pieces, so a GiB-sized tensor is never held in
// memory whole. Only the header (names, dtypes, shapes, offsets) is kept.
//
// Layout (https://huggingface.co/docs/safetensors, "Format"):
//   [0, 8)          N, the header length: little-endian uint64.
//   [8, 8 + N)      the header: a UTF-8 JSON object mapping each tensor name to
//                   {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}
//                   plus an optional "__metadata__": {string: string}.
//   [8 + N, EOF)    the data section: each tensor's elements, row-major and
//                   little-endian, at [begin, end) relative to its first byte.
// Bytes are moved, never swapped: callers Append() and Read() little-endian
// element bytes, which on the little-endian hosts potluck runs on is memory
// order. The writer pads the header with spaces so the data section starts at a
// multiple of 8 bytes; the reader does not require that (the format does not).
//
// What the reader accepts. Open() validates the whole header and answers
// kInvalidArgument, naming the file, the tensor where there is one, and the
// reason, unless all of this holds:
//   - the file holds the 8-byte length and N <= kSafetensorsMaxHeaderBytes
//     bytes of header after it; the header is valid UTF-8 JSON nested at most
//     kSafetensorsMaxJsonDepth deep, and an object;
//   - each tensor has "dtype" (one of F32 F16 BF16 F64 I32 I64 U8 I8, spelled
//     exactly so; the format's other dtypes, e.g. BOOL or F8_E4M3, are not
//     supported), "shape" (at most kSafetensorsMaxRank non-negative integers)
//     and "data_offsets" (two integers, begin <= end <= the data section's
//     size), and end - begin == product(shape) * the dtype's size. Other keys
//     in a tensor's object are ignored, as the reference implementation does;
//   - "__metadata__", if present, is an object of strings;
//   - the tensors tile the data section: no overlap, no gap, and no byte after
//     the last tensor (the reference implementation rejects all three too).
// A JSON object cannot hold a name twice in a way the reader could see: the
// JSON parser keeps the last of duplicate keys, and the tiling check still
// holds for what remains.
// Other failures: I/O errors are converted from errno (a missing file is
// kNotFound); a file that shrinks after Open() makes Read() kDataLoss.
//
// Ownership: readers and writers own their file descriptors and close them
// when destroyed. Entries are copied in; Find() returns a pointer into the
// reader that lives as long as the reader.
// Thread-safety: a SafetensorsReader is immutable after Open(): every const
// method, Read() included (it uses pread), is safe from many threads at once.
// A SafetensorsWriter belongs to one thread at a time.
#ifndef POTLUCK_CHECKPOINT_SAFETENSORS_H_
#define POTLUCK_CHECKPOINT_SAFETENSORS_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

#include "common/dtype.h"

namespace potluck {

// Bounds on what a file may make the reader allocate or walk. A header of
// kSafetensorsMaxHeaderBytes may briefly cost about ten times that while it is
// parsed. The limits are far above what real checkpoints use (the reference
// implementation caps headers at 100 MB too).
inline constexpr uint64_t kSafetensorsMaxHeaderBytes = uint64_t{100} << 20;
inline constexpr size_t kSafetensorsMaxRank = 64;
inline constexpr int kSafetensorsMaxJsonDepth = 16;

// The header's key for the file-level string map; no tensor may take it.
inline constexpr absl::string_view kSafetensorsMetadataKey = "__metadata__";

struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;  // [] is a scalar (one element)
  // Byte offsets into the data section: filled by the reader, computed by the
  // writer (any values the caller passes in are replaced).
  uint64_t begin = 0;
  uint64_t end = 0;

  uint64_t size_bytes() const { return end - begin; }
};

// Writes one file: Create() writes the header for `entries`, laid out in the
// given order back to back; the caller then Append()s the tensors' bytes in
// that order, split any way it likes (one Append may span several tensors);
// Finish() makes the file appear at `path`.
//
// The bytes go to `path` + ".tmp" (truncated if a crashed writer left one)
// and reach `path` only through Finish()'s fsync + rename + directory fsync,
// so `path` holds either its previous contents or the complete new file.
// Destroying a writer that has not finished removes the temporary file. Two
// writers for the same path at once are not supported.
class SafetensorsWriter {
 public:
  // kInvalidArgument, before any file is touched, for an empty, duplicate or
  // reserved ("__metadata__") name, a negative dimension, more than
  // kSafetensorsMaxRank dimensions, a size that overflows 64 bits, a name or
  // metadata string that is not valid UTF-8, or a header over
  // kSafetensorsMaxHeaderBytes. I/O errors are converted from errno.
  static absl::StatusOr<std::unique_ptr<SafetensorsWriter>> Create(
      const std::string& path, std::vector<SafetensorsEntry> entries,
      const std::map<std::string, std::string>& metadata);

  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // Writes the next `size_bytes` bytes of the data section. More bytes than
  // the entries have left is kInvalidArgument and writes nothing (the writer
  // stays usable). After an I/O error the temporary file is removed and every
  // later call is kFailedPrecondition; so is any call after Finish().
  absl::Status Append(const void* data, size_t size_bytes);

  // kFailedPrecondition, naming the first incomplete tensor, if bytes are
  // missing (the writer stays usable: Append the rest and call again).
  // Otherwise publishes the file as described above.
  absl::Status Finish();

  // The entries with begin/end filled in, in data order.
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  // Bytes Append()ed so far, and the data section's total size.
  uint64_t appended_bytes() const { return appended_bytes_; }
  uint64_t data_size_bytes() const { return data_size_bytes_; }

 private:
  enum class State { kWriting, kFinished, kFailed };

  SafetensorsWriter(std::string path, std::vector<SafetensorsEntry> entries,
                    uint64_t data_size_bytes, int fd);
  // Closes and removes the temporary file; state_ becomes kFailed.
  void Abandon();
  // The status for a call made when state_ is not kWriting.
  absl::Status NotWritingError() const;

  const std::string path_;
  const std::string temp_path_;
  const std::vector<SafetensorsEntry> entries_;
  const uint64_t data_size_bytes_;
  int fd_;  // the temporary file; -1 unless state_ is kWriting
  State state_ = State::kWriting;
  uint64_t appended_bytes_ = 0;
};

class SafetensorsReader {
 public:
  // Opens `path` and validates its whole header (see the top of this file).
  static absl::StatusOr<std::unique_ptr<SafetensorsReader>> Open(const std::string& path);

  ~SafetensorsReader();
  SafetensorsReader(const SafetensorsReader&) = delete;
  SafetensorsReader& operator=(const SafetensorsReader&) = delete;

  const std::string& path() const { return path_; }
  // Every tensor, in data-offset order (zero-byte tensors at one offset by name).
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // The entry called `name`, or nullptr.
  const SafetensorsEntry* Find(absl::string_view name) const;

  // Copies `size_bytes` bytes, starting `offset` bytes into `entry`'s data,
  // into `out`. A range past the entry's end is kOutOfRange; an entry whose
  // offsets lie outside this file's data section is kInvalidArgument.
  absl::Status Read(const SafetensorsEntry& entry, uint64_t offset, void* out,
                    size_t size_bytes) const;

 private:
  SafetensorsReader(std::string path, int fd);
  // Parses and validates the header, filling entries_, metadata_ and
  // data_start_.
  absl::Status LoadHeader();

  const std::string path_;
  const int fd_;
  uint64_t data_start_ = 0;  // file offset of the data section
  uint64_t data_size_bytes_ = 0;
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, size_t, std::less<>> index_by_name_;  // into entries_
  std::map<std::string, std::string> metadata_;
};

}  // namespace potluck

#endif  // POTLUCK_CHECKPOINT_SAFETENSORS_H_
