#include "worker/model_io.h"

#include <sys/stat.h>

#include <google/protobuf/util/json_util.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

#include "checkpoint/safetensors.h"
#include "common/status.h"

namespace potluck {

namespace v1 = potluck::v1;
using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

namespace {

constexpr absl::string_view kParamPrefix = "param/";

absl::StatusOr<torch::ScalarType> TorchType(DType dtype, absl::string_view what) {
  switch (dtype) {
    case DType::kFloat32:
      return torch::kFloat32;
    case DType::kFloat64:
      return torch::kFloat64;
    case DType::kFloat16:
      return torch::kHalf;
    case DType::kBFloat16:
      return torch::kBFloat16;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(what, " is ", DTypeName(dtype), "; model weights must be floating point"));
  }
}

// The "param/" tensors of the newest checkpoint in the store at `dir`.
absl::StatusOr<NamedTensors> ReadCheckpointParams(const std::string& dir) {
  ASSIGN_OR_RETURN(auto store, CheckpointStore::Open(dir));
  ASSIGN_OR_RETURN(std::vector<std::string> jobs, store->ListJobs());
  if (jobs.size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat("init_from store ", dir, " holds ", jobs.size(),
                                                   " jobs; it must hold exactly one"));
  }
  ASSIGN_OR_RETURN(auto reader, store->OpenLatest(jobs[0]));
  NamedTensors out;
  for (const EntryInfo& e : reader->info().entries) {
    if (e.kind != EntryKind::kTensor || !absl::StartsWith(e.name, kParamPrefix)) continue;
    ASSIGN_OR_RETURN(torch::ScalarType type, TorchType(e.dtype, e.name));
    torch::Tensor t = torch::empty(e.shape, type);
    RETURN_IF_ERROR(reader->ReadTensor(e.name, TensorView(t.data_ptr(), e.dtype, e.count())));
    out.emplace_back(e.name.substr(kParamPrefix.size()), t);
  }
  return out;
}

}  // namespace

absl::StatusOr<NamedTensors> ReadSafetensorsTensors(const std::string& path) {
  ASSIGN_OR_RETURN(auto reader, SafetensorsReader::Open(path));
  NamedTensors out;
  for (const SafetensorsEntry& e : reader->entries()) {
    ASSIGN_OR_RETURN(torch::ScalarType type, TorchType(e.dtype, absl::StrCat(path, ": ", e.name)));
    torch::Tensor t = torch::empty(e.shape, type);
    RETURN_IF_ERROR(reader->Read(e, 0, t.data_ptr(), e.size_bytes()));
    if (type != torch::kFloat32 && type != torch::kFloat64) t = t.to(torch::kFloat32);
    out.emplace_back(e.name, t);
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Model>> CreateJobModel(const v1::JobSpec& job,
                                                      const ModelOptions& options) {
  ASSIGN_OR_RETURN(auto model, CreateModel(job.model(), job.seed(), options));
  const std::string& from = job.model().init_from();
  if (from.empty()) return model;
  struct stat st;
  if (stat(from.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat("model.init_from: no such file or directory: ", from));
  }
  NamedTensors tensors;
  if (S_ISDIR(st.st_mode)) {
    ASSIGN_OR_RETURN(tensors, ReadCheckpointParams(from));
  } else {
    ASSIGN_OR_RETURN(tensors, ReadSafetensorsTensors(from));
  }
  RETURN_IF_ERROR(Annotate(model->LoadWeights(tensors), absl::StrCat("model.init_from ", from)));
  return model;
}

absl::Status ExportModel(const Model& model, const std::string& path) {
  NamedTensors merged = model.MergedWeights();
  std::vector<SafetensorsEntry> entries;
  for (auto& [name, t] : merged) {
    t = t.to(torch::kFloat32).contiguous();
    SafetensorsEntry e;
    e.name = name;
    e.dtype = DType::kFloat32;
    e.shape = t.sizes().vec();
    entries.push_back(std::move(e));
  }
  ASSIGN_OR_RETURN(auto writer, SafetensorsWriter::Create(path, std::move(entries),
                                                          {{"potluck.weights", "merged"}}));
  for (const auto& [name, t] : merged) {
    RETURN_IF_ERROR(writer->Append(t.data_ptr(), static_cast<size_t>(t.numel()) * sizeof(float)));
  }
  return writer->Finish();
}

absl::Status SaveTrainingCheckpoint(CheckpointStore* store, const v1::JobSpec& job, uint64_t step,
                                    const Trainer& trainer,
                                    absl::Span<const BlobToSave> extra_blobs,
                                    absl::Span<const Record> records) {
  ASSIGN_OR_RETURN(auto writer, store->BeginSave(job.job_id(), step));
  RETURN_IF_ERROR(WriteTrainingCheckpoint(writer.get(), job, trainer, extra_blobs));
  return writer->Commit(records);
}

namespace {

// A training checkpoint's entries, in order: the trainer's tensors, then the
// blobs (the job spec, the trainer's counters, the caller's). Views of memory
// that `trainer`, `job_json` and `state` own.
struct EntryToWrite {
  std::string name;
  EntryKind kind;
  TensorView data;
  std::vector<int64_t> shape;
};

absl::StatusOr<std::vector<EntryToWrite>> TrainingEntries(const v1::JobSpec& job,
                                                          const Trainer& trainer,
                                                          absl::Span<const BlobToSave> extra_blobs,
                                                          std::string* job_json,
                                                          std::string* state) {
  std::vector<EntryToWrite> entries;
  for (const TensorToSave& t : trainer.StateTensors()) {
    std::vector<int64_t> shape = t.shape;
    if (shape.empty()) shape = {static_cast<int64_t>(t.data.count())};
    entries.push_back({t.name, EntryKind::kTensor, t.data, std::move(shape)});
  }
  if (!google::protobuf::util::MessageToJsonString(job, job_json).ok()) {
    return absl::InternalError("could not write the job spec as JSON");
  }
  *state = trainer.StateBlob();
  std::vector<BlobToSave> blobs = {{kJobBlob, *job_json}, {"trainer", *state}};
  blobs.insert(blobs.end(), extra_blobs.begin(), extra_blobs.end());
  for (const BlobToSave& b : blobs) {
    entries.push_back({std::string(b.name),
                       EntryKind::kBlob,
                       TensorView(const_cast<char*>(b.bytes.data()), DType::kUInt8, b.bytes.size()),
                       {static_cast<int64_t>(b.bytes.size())}});
  }
  return entries;
}

}  // namespace

absl::Status WriteTrainingCheckpoint(CheckpointWriter* writer, const v1::JobSpec& job,
                                     const Trainer& trainer,
                                     absl::Span<const BlobToSave> extra_blobs) {
  std::string job_json, state;
  ASSIGN_OR_RETURN(std::vector<EntryToWrite> entries,
                   TrainingEntries(job, trainer, extra_blobs, &job_json, &state));
  for (const EntryToWrite& e : entries) {
    RETURN_IF_ERROR(writer->BeginEntry(e.name, e.kind, e.data.dtype(), e.shape));
    RETURN_IF_ERROR(writer->Append(e.data.data(), e.data.size_bytes()));
  }
  return absl::OkStatus();
}

absl::Status WriteTrainingCheckpointPart(CheckpointPartWriter* writer, const v1::JobSpec& job,
                                         const Trainer& trainer, uint32_t part, uint32_t parts) {
  if (parts == 0 || part >= parts) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint part ", part, " of ", parts));
  }
  std::string job_json, state;
  ASSIGN_OR_RETURN(std::vector<EntryToWrite> entries,
                   TrainingEntries(job, trainer, {}, &job_json, &state));
  for (const EntryToWrite& e : entries) {
    uint64_t begin = 0, end = 0;
    if (e.kind == EntryKind::kTensor) {
      const uint64_t n = e.data.count();
      begin = n * part / parts;
      end = n * (part + 1) / parts;
    } else if (part == 0) {
      end = e.data.count();
    } else {
      continue;
    }
    RETURN_IF_ERROR(
        writer->BeginSlice(e.name, e.kind, e.data.dtype(), e.shape, begin, end - begin));
    const TensorView slice = e.data.Slice(begin, end - begin);
    RETURN_IF_ERROR(writer->Append(slice.data(), slice.size_bytes()));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::JobSpec> ReadJobSpec(CheckpointReader* reader) {
  ASSIGN_OR_RETURN(std::string json, reader->ReadBlob(kJobBlob));
  v1::JobSpec job;
  if (!google::protobuf::util::JsonStringToMessage(json, &job).ok()) {
    return absl::DataLossError("the checkpoint's job blob is not a JobSpec");
  }
  return job;
}

absl::StatusOr<std::unique_ptr<Model>> LoadTrainedModel(CheckpointReader* reader) {
  ASSIGN_OR_RETURN(v1::JobSpec job, ReadJobSpec(reader));
  // Without LoRA every weight is in the checkpoint, so `init_from` (which may
  // live on another machine) is not needed.
  const bool lora = job.model().has_lora() && job.model().lora().rank() > 0;
  if (!lora) job.mutable_model()->clear_init_from();
  ASSIGN_OR_RETURN(auto model, CreateJobModel(job));
  const TensorView values = model->trainable().values_view();
  for (const FlatSlot& slot : model->trainable().slots()) {
    RETURN_IF_ERROR(reader->ReadTensor(absl::StrCat(kParamPrefix, slot.name),
                                       values.Slice(slot.offset, slot.count)));
  }
  return model;
}

}  // namespace potluck
