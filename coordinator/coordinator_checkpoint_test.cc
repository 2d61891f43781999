// The coordinator's checkpoints and restarts: when a step may checkpoint,
// commits and split uploads, the job's final step, and what a reopened
// coordinator keeps.
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

#include "checkpoint/checkpoint_store.h"
#include "common/status.h"
#include "coordinator/coordinator.h"
#include "coordinator/coordinator_test_util.h"
#include "coordinator/internal/parts.h"
#include "coordinator/internal/state.pb.h"
#include "job/job_spec.h"

namespace potluck {
namespace {

namespace ci = coordinator_internal;

using ::testing::HasSubstr;
using CoordinatorTest = testing_util::SingleJobFixture;

TEST_F(CoordinatorTest, CheckpointNeedsEveryMemberToHaveEndedTheStep) {
  Start({"a", "b"});
  ASSERT_TRUE(coordinator_->EndStep("job-1", "a", 3).ok());
  auto early = Commit("a", 3);
  EXPECT_EQ(early.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(early.message(), HasSubstr("members b have not ended step 3"));
  ASSERT_TRUE(coordinator_->EndStep("job-1", "b", 3).ok());
  ASSERT_TRUE(Commit("a", 3).ok());
  EXPECT_EQ(Commit("b", 3).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(coordinator_->GetJob("job-1")->committed_step(), 3u);

  // The model and the ledger committed together.
  auto reader = coordinator_->checkpoints()->OpenLatest("job-1");
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->info().step, 3u);
  auto record = coordinator_->checkpoints()->GetRecord("coordinator/v1/job-1/ledger");
  ASSERT_TRUE(record.ok() && record->has_value());
  coordinator_state::LedgerSnapshot snapshot;
  ASSERT_TRUE(snapshot.ParseFromString(**record));
  EXPECT_EQ(snapshot.step(), 3u);
  EXPECT_EQ(snapshot.committed_offsets_size(), 3);
  // A report for a step the worker already ended is refused: it could not be
  // in that step's checkpoint.
  ASSERT_TRUE(coordinator_->AcquireShard("job-1", "a").ok());
  EXPECT_EQ(Report("a", "late", 0, 10, 3).status().code(), absl::StatusCode::kFailedPrecondition);
}

// A job is finished when the checkpoint of its last step commits (a diloco
// job's steps are rounds); then nobody can join or lease. Extended, it runs
// again from there.
TEST_F(CoordinatorTest, JobFinishesAtItsFinalStepAndCanBeExtended) {
  v1::JobSpec spec = Spec("job-1");
  spec.set_max_steps(4);
  Submit(spec, shards_);
  for (const char* w : {"a", "b"}) Join("job-1", w);
  Form("job-1", {"a", "b"});
  for (uint64_t step : {3, 4}) {
    for (const char* w : {"a", "b"}) ASSERT_TRUE(coordinator_->EndStep("job-1", w, step).ok());
    ASSERT_TRUE(Commit("a", step).ok());
    EXPECT_EQ(coordinator_->GetJob("job-1")->state(),
              step < 4 ? v1::JOB_STATE_RUNNING : v1::JOB_STATE_FINISHED);
  }
  EXPECT_EQ(coordinator_->AcquireShard("job-1", "a").status().code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(coordinator_->Join({"job-1", "", "c", "127.0.0.1:3"}).status().code(),
            absl::StatusCode::kOutOfRange);

  EXPECT_EQ(coordinator_->ExtendJob("not-a-token", "job-1", 8).status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(coordinator_->ExtendJob(admin_, "job-1", 4).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto extended = coordinator_->ExtendJob(admin_, "job-1", 8);
  ASSERT_TRUE(extended.ok()) << extended.status();
  EXPECT_EQ(extended->state(), v1::JOB_STATE_RUNNING);
  EXPECT_EQ(extended->spec().max_steps(), 8u);
  EXPECT_TRUE(coordinator_->AcquireShard("job-1", "a").ok());
  Reopen();  // durable
  EXPECT_EQ(coordinator_->GetJob("job-1")->spec().max_steps(), 8u);
  EXPECT_EQ(coordinator_->GetJob("job-1")->state(), v1::JOB_STATE_RUNNING);

  // diloco: max_steps counts inner steps, the coordinator's steps are rounds.
  v1::JobSpec diloco = Spec("job-2");
  diloco.set_mode(v1::SYNC_MODE_DILOCO);
  diloco.mutable_diloco()->set_inner_steps(4);
  diloco.set_max_steps(10);
  EXPECT_EQ(FinalStep(diloco), 3u);
  EXPECT_EQ(FinalStep(Spec("job-3")), 0u);
}

TEST_F(CoordinatorTest, StreamingCheckpointCommitsTheLedgerToo) {
  Start({"a"});
  ASSERT_TRUE(coordinator_->AcquireShard("job-1", "a").ok());
  ASSERT_TRUE(Report("a", "r1", 0, 33, 4).ok());
  ASSERT_TRUE(coordinator_->EndStep("job-1", "a", 4).ok());
  auto writer = coordinator_->BeginCheckpoint("job-1", "a", 4);
  ASSERT_TRUE(writer.ok()) << writer.status();
  const std::string blob = "rng state";
  ASSERT_TRUE(
      (*writer)
          ->BeginEntry("rng", EntryKind::kBlob, DType::kUInt8, {static_cast<int64_t>(blob.size())})
          .ok());
  ASSERT_TRUE((*writer)->Append(blob.data(), blob.size()).ok());
  EXPECT_EQ(Shard(0).committed_offset, 0u);
  EXPECT_EQ((*writer)->Commit({Record{"coordinator/v1/job-1/ledger", "forged"}}).code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE((*writer)->Commit().ok());
  EXPECT_EQ(Shard(0).committed_offset, 33u);
  EXPECT_EQ(coordinator_->GetJob("job-1")->committed_step(), 4u);
}

// Sends `part` of `parts`: elements [first, first + n) of a 10-float tensor
// "w" holding 0..9, and (part 0) the blob "meta".
absl::StatusOr<bool> SendPart(Coordinator* coordinator, const std::string& worker, uint64_t step,
                              uint32_t part, uint32_t parts, uint64_t first, uint64_t n) {
  ASSIGN_OR_RETURN(auto writer,
                   coordinator->BeginCheckpointPart("job-1", worker, step, part, parts));
  std::vector<float> values(10);
  for (int i = 0; i < 10; ++i) values[i] = static_cast<float>(i);
  RETURN_IF_ERROR(writer->BeginSlice("w", EntryKind::kTensor, DType::kFloat32, {2, 5}, first, n));
  RETURN_IF_ERROR(writer->Append(values.data() + first, n * sizeof(float)));
  if (part == 0) {
    const std::string meta = "counters";
    RETURN_IF_ERROR(writer->BeginSlice("meta", EntryKind::kBlob, DType::kUInt8,
                                       {static_cast<int64_t>(meta.size())}, 0, meta.size()));
    RETURN_IF_ERROR(writer->Append(meta.data(), meta.size()));
  }
  return writer->Finish();
}

TEST_F(CoordinatorTest, SplitUploadCommitsWhenTheLastPartIsIn) {
  Start({"a", "b", "c"});
  ASSERT_TRUE(coordinator_->AcquireShard("job-1", "a").ok());
  ASSERT_TRUE(Report("a", "r1", 0, 12, 2).ok());
  for (const char* w : {"a", "b", "c"}) ASSERT_TRUE(coordinator_->EndStep("job-1", w, 2).ok());

  // Parts must match the group: the size, and each worker its own rank.
  EXPECT_EQ(coordinator_->BeginCheckpointPart("job-1", "a", 2, 0, 2).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(coordinator_->BeginCheckpointPart("job-1", "b", 2, 0, 3).status().code(),
            absl::StatusCode::kInvalidArgument);

  auto first = SendPart(coordinator_.get(), "c", 2, 2, 3, 7, 3);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_FALSE(*first);
  auto second = SendPart(coordinator_.get(), "a", 2, 0, 3, 0, 3);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_FALSE(*second);
  EXPECT_EQ(coordinator_->GetJob("job-1")->committed_step(), 0u);
  EXPECT_EQ(Shard(0).committed_offset, 0u);
  auto last = SendPart(coordinator_.get(), "b", 2, 1, 3, 3, 4);
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_TRUE(*last);

  // One checkpoint, the slices in order, committed with the ledger.
  EXPECT_EQ(coordinator_->GetJob("job-1")->committed_step(), 2u);
  EXPECT_EQ(Shard(0).committed_offset, 12u);
  auto reader = coordinator_->checkpoints()->OpenLatest("job-1");
  ASSERT_TRUE(reader.ok()) << reader.status();
  ASSERT_EQ((*reader)->info().entries.size(), 2u);
  EXPECT_EQ((*reader)->info().entries[0].shape, (std::vector<int64_t>{2, 5}));
  std::vector<float> w(10);
  ASSERT_TRUE((*reader)->ReadTensor("w", TensorView::Of(w.data(), w.size())).ok());
  for (int i = 0; i < 10; ++i) EXPECT_EQ(w[i], static_cast<float>(i));
  EXPECT_EQ(*(*reader)->ReadBlob("meta"), "counters");
  // Spooled parts are removed once joined.
  EXPECT_TRUE(std::filesystem::is_empty(dir_ / "uploads"));
}

TEST_F(CoordinatorTest, SplitUploadWithAGapOrOverlapCommitsNothing) {
  Start({"a", "b"});
  for (const char* w : {"a", "b"}) ASSERT_TRUE(coordinator_->EndStep("job-1", w, 3).ok());
  // Part 1 overlaps part 0 ([0,6) and [5,10)): refused, nothing committed.
  ASSERT_TRUE(SendPart(coordinator_.get(), "a", 3, 0, 2, 0, 6).ok());
  auto overlap = SendPart(coordinator_.get(), "b", 3, 1, 2, 5, 5);
  EXPECT_EQ(overlap.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(overlap.status().message(), HasSubstr("entry 'w'"));
  EXPECT_EQ(coordinator_->GetJob("job-1")->committed_step(), 0u);
  EXPECT_EQ(coordinator_->checkpoints()->OpenLatest("job-1").status().code(),
            absl::StatusCode::kNotFound);
  // A slice past the entry's end is refused as it arrives.
  auto writer = coordinator_->BeginCheckpointPart("job-1", "b", 3, 1, 2);
  ASSERT_TRUE(writer.ok());
  EXPECT_EQ((*writer)->BeginSlice("w", EntryKind::kTensor, DType::kFloat32, {2, 5}, 8, 3).code(),
            absl::StatusCode::kInvalidArgument);
  writer->reset();  // abandoned: a member has one upload open at a time
  // Both parts sent again, correctly: committed.
  ASSERT_TRUE(SendPart(coordinator_.get(), "a", 3, 0, 2, 0, 6).ok());
  auto good = SendPart(coordinator_.get(), "b", 3, 1, 2, 6, 4);
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_TRUE(*good);
  EXPECT_EQ(coordinator_->GetJob("job-1")->committed_step(), 3u);
}

// Uploads past CoordinatorOptions.max_checkpoint_bytes are refused as the
// bytes arrive (a whole upload, or one part) or when the last part makes the
// set too big, and nothing is committed; uploads within it still commit.
// Entry metadata counts like bytes (SliceMetadataBytes).
TEST_F(CoordinatorTest, UploadsOverTheCheckpointByteLimitCommitNothing) {
  const uint64_t meta_w = ci::SliceMetadataBytes("w", {2, 5});
  const uint64_t part_meta = meta_w + ci::SliceMetadataBytes("meta", {8}) + 8;
  // Part 0 with 6 floats fits, with 10 does not; parts 0 and 1 together do not.
  max_checkpoint_bytes_ = part_meta + 6 * sizeof(float) + 11;
  Reopen();
  Start({"a", "b"});
  for (const char* w : {"a", "b"}) ASSERT_TRUE(coordinator_->EndStep("job-1", w, 3).ok());

  // One part alone past the limit: 10 floats and the 8-byte blob.
  auto big = SendPart(coordinator_.get(), "a", 3, 0, 2, 0, 10);
  EXPECT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(big.status().message(), HasSubstr("--max-checkpoint-bytes"));
  // Two parts within it, together past it.
  ASSERT_TRUE(SendPart(coordinator_.get(), "a", 3, 0, 2, 0, 6).ok());
  auto together = SendPart(coordinator_.get(), "b", 3, 1, 2, 6, 4);
  EXPECT_EQ(together.status().code(), absl::StatusCode::kResourceExhausted);
  // A whole upload past it: refused at the byte that crosses it, and after.
  auto writer = coordinator_->BeginCheckpoint("job-1", "a", 3);
  ASSERT_TRUE(writer.ok()) << writer.status();
  const uint64_t room = max_checkpoint_bytes_ - ci::SliceMetadataBytes("rng", {1});
  const std::string blob(room + 10, 'x');
  const auto size = static_cast<int64_t>(blob.size());
  ASSERT_TRUE((*writer)->BeginEntry("rng", EntryKind::kBlob, DType::kUInt8, {size}).ok());
  ASSERT_TRUE((*writer)->Append(blob.data(), room - 5).ok());
  EXPECT_EQ((*writer)->Append(blob.data(), 15).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ((*writer)->Append(blob.data(), 1).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ((*writer)->Commit().code(), absl::StatusCode::kResourceExhausted);
  writer->reset();  // abandoned: its spool is gone
  EXPECT_EQ(coordinator_->GetJob("job-1")->committed_step(), 0u);
  EXPECT_EQ(coordinator_->checkpoints()->OpenLatest("job-1").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(std::filesystem::is_empty(dir_ / "uploads"));

  // An upload within the limit still commits.
  auto small = coordinator_->BeginCheckpoint("job-1", "a", 3);
  ASSERT_TRUE(small.ok()) << small.status();
  const auto fits = static_cast<int64_t>(room);
  ASSERT_TRUE((*small)->BeginEntry("rng", EntryKind::kBlob, DType::kUInt8, {fits}).ok());
  ASSERT_TRUE((*small)->Append(blob.data(), room).ok());
  ASSERT_TRUE((*small)->Commit().ok());
  EXPECT_EQ(coordinator_->GetJob("job-1")->committed_step(), 3u);
}

// Issue 15: what uploads may take of the coordinator. Names count against
// the byte limit (zero-byte slices with huge names once grew its memory by
// a GiB), a member has one upload open at a time, and everything spooled
// together stays under the spool quota (parts held open once filled its
// disk); an upload that ends gives its room back.
TEST_F(CoordinatorTest, UploadsTakeBoundedMemoryDiskAndOneSlotPerMember) {
  max_checkpoint_bytes_ = 1 << 20;
  max_spool_bytes_ = 3000;
  Reopen();
  Start({"a", "b"});
  for (const char* w : {"a", "b"}) ASSERT_TRUE(coordinator_->EndStep("job-1", w, 3).ok());

  auto named = coordinator_->BeginCheckpointPart("job-1", "a", 3, 0, 2);
  ASSERT_TRUE(named.ok()) << named.status();
  const std::string huge(7 << 20, 'n');  // past the 1 MiB limit by its name alone
  const absl::Status over =
      (*named)->BeginSlice(huge, EntryKind::kTensor, DType::kFloat32, {0}, 0, 0);
  EXPECT_EQ(over.code(), absl::StatusCode::kResourceExhausted) << over;
  EXPECT_THAT(over.message(), HasSubstr("--max-checkpoint-bytes"));
  named->reset();
  named = coordinator_->BeginCheckpointPart("job-1", "a", 3, 0, 2);
  ASSERT_TRUE(named.ok()) << named.status();
  const std::string long_name(ci::kMaxEntryNameBytes + 1, 'n');
  EXPECT_EQ((*named)->BeginSlice(long_name, EntryKind::kTensor, DType::kFloat32, {0}, 0, 0).code(),
            absl::StatusCode::kInvalidArgument);
  // A second upload of the same member while one is open.
  auto second = coordinator_->BeginCheckpointPart("job-1", "a", 3, 0, 2);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted) << second.status();
  named->reset();

  // Parts held open: the spool quota is shared by every upload.
  auto part_a = coordinator_->BeginCheckpointPart("job-1", "a", 3, 0, 2);
  auto part_b = coordinator_->BeginCheckpointPart("job-1", "b", 3, 1, 2);
  ASSERT_TRUE(part_a.ok() && part_b.ok());
  std::vector<float> values(500);
  ASSERT_TRUE((*part_a)->BeginSlice("w", EntryKind::kTensor, DType::kFloat32, {1000}, 0, 500).ok());
  ASSERT_TRUE((*part_a)->Append(values.data(), 2000).ok());
  ASSERT_TRUE(
      (*part_b)->BeginSlice("w", EntryKind::kTensor, DType::kFloat32, {1000}, 500, 500).ok());
  const absl::Status full = (*part_b)->Append(values.data(), 2000);
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
  EXPECT_THAT(full.message(), HasSubstr("--max-spool-bytes"));
  part_a->reset();
  part_b->reset();
  EXPECT_TRUE(std::filesystem::is_empty(dir_ / "uploads"));
  EXPECT_EQ(coordinator_->GetJob("job-1")->committed_step(), 0u);

  // With the room given back, the group's upload commits.
  ASSERT_TRUE(SendPart(coordinator_.get(), "a", 3, 0, 2, 0, 5).ok());
  auto committed = SendPart(coordinator_.get(), "b", 3, 1, 2, 5, 5);
  ASSERT_TRUE(committed.ok()) << committed.status();
  EXPECT_TRUE(*committed);
}

// Issue 15: one member's upload in place of the group's checkpoint (one
// uint8[3] entry; the honest members then could not restore). A whole
// checkpoint comes from rank 0 alone, and any upload must have the layout
// of the job's committed checkpoints; nothing of a refused one commits.
TEST_F(CoordinatorTest, AMemberCannotReplaceTheGroupsCheckpointWithItsOwn) {
  Start({"a", "b"});
  for (const char* w : {"a", "b"}) ASSERT_TRUE(coordinator_->EndStep("job-1", w, 3).ok());
  ASSERT_TRUE(Commit("a", 2).ok());  // fixes the layout: "w", float32 [3]

  const absl::Status rank_one = Commit("b", 3);
  EXPECT_EQ(rank_one.code(), absl::StatusCode::kPermissionDenied) << rank_one;
  EXPECT_THAT(rank_one.message(), HasSubstr("comes from rank 0"));

  std::vector<uint8_t> junk = {1, 2, 3};
  const absl::Status garbage = coordinator_->CommitCheckpoint(
      "job-1", "a", 3, std::vector<TensorToSave>{{"junk", TensorView::Of(junk.data(), 3), {}}});
  EXPECT_EQ(garbage.code(), absl::StatusCode::kInvalidArgument) << garbage;
  EXPECT_THAT(garbage.message(), HasSubstr("lacks entry 'w'"));

  std::vector<float> wider = {1, 2, 3, 4};
  const absl::Status reshaped = coordinator_->CommitCheckpoint(
      "job-1", "a", 3, std::vector<TensorToSave>{{"w", TensorView::Of(wider.data(), 4), {}}});
  EXPECT_EQ(reshaped.code(), absl::StatusCode::kInvalidArgument) << reshaped;
  EXPECT_THAT(reshaped.message(), HasSubstr("is a float32 tensor [4]"));

  auto streamed = coordinator_->BeginCheckpoint("job-1", "a", 3);
  ASSERT_TRUE(streamed.ok()) << streamed.status();
  ASSERT_TRUE((*streamed)->BeginEntry("junk", EntryKind::kTensor, DType::kUInt8, {3}).ok());
  ASSERT_TRUE((*streamed)->Append(junk.data(), junk.size()).ok());
  EXPECT_EQ((*streamed)->Commit().code(), absl::StatusCode::kInvalidArgument);
  streamed->reset();

  EXPECT_EQ(coordinator_->GetJob("job-1")->committed_step(), 2u);
  auto latest = coordinator_->checkpoints()->OpenLatest("job-1");
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_EQ((*latest)->info().step, 2u);
  ASSERT_TRUE(Commit("a", 3).ok());  // the group's own layout still commits
}

// A split upload is the group's only when its members agree on it: a part
// that adds a tensor the others do not slice, or a blob from any part but
// part 0, is refused by name and nothing commits.
TEST_F(CoordinatorTest, SplitUploadPartsMustAgreeOnEveryEntry) {
  Start({"a", "b"});
  for (const char* w : {"a", "b"}) ASSERT_TRUE(coordinator_->EndStep("job-1", w, 2).ok());
  auto send_b = [&](const std::string& extra, EntryKind kind) -> absl::StatusOr<bool> {
    ASSIGN_OR_RETURN(auto writer, coordinator_->BeginCheckpointPart("job-1", "b", 2, 1, 2));
    std::vector<float> values = {5, 6, 7, 8, 9};
    RETURN_IF_ERROR(writer->BeginSlice("w", EntryKind::kTensor, DType::kFloat32, {2, 5}, 5, 5));
    RETURN_IF_ERROR(writer->Append(values.data(), values.size() * sizeof(float)));
    RETURN_IF_ERROR(writer->BeginSlice(extra, kind, DType::kUInt8, {3}, 0, 3));
    RETURN_IF_ERROR(writer->Append("abc", 3));
    return writer->Finish();
  };
  for (const auto& [extra, kind, why] :
       {std::tuple{"own", EntryKind::kTensor, "every member slices every tensor"},
        std::tuple{"note", EntryKind::kBlob, "blobs come from part 0 alone"}}) {
    ASSERT_TRUE(SendPart(coordinator_.get(), "a", 2, 0, 2, 0, 5).ok());
    auto refused = send_b(extra, kind);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << refused.status();
    EXPECT_THAT(refused.status().message(), HasSubstr(why));
    EXPECT_EQ(coordinator_->GetJob("job-1")->committed_step(), 0u);
  }
  ASSERT_TRUE(SendPart(coordinator_.get(), "a", 2, 0, 2, 0, 5).ok());
  auto agreed = SendPart(coordinator_.get(), "b", 2, 1, 2, 5, 5);
  ASSERT_TRUE(agreed.ok()) << agreed.status();
  EXPECT_TRUE(*agreed);
}

// A part that is in already is not taken again: the repeat is refused with
// kAlreadyExists when it begins, before its bytes flow, and the set
// completes with the others' parts.
TEST_F(CoordinatorTest, APartSentAgainIsRefusedBeforeItsBytes) {
  Start({"a", "b"});
  for (const char* w : {"a", "b"}) ASSERT_TRUE(coordinator_->EndStep("job-1", w, 2).ok());
  ASSERT_TRUE(SendPart(coordinator_.get(), "a", 2, 0, 2, 0, 5).ok());
  EXPECT_EQ(coordinator_->BeginCheckpointPart("job-1", "a", 2, 0, 2).status().code(),
            absl::StatusCode::kAlreadyExists);
  auto last = SendPart(coordinator_.get(), "b", 2, 1, 2, 5, 5);
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_TRUE(*last);
  EXPECT_EQ(coordinator_->GetJob("job-1")->committed_step(), 2u);
}

TEST_F(CoordinatorTest, SplitUploadPartsOfAnOlderGenerationAreDropped) {
  Start({"a", "b", "c"});
  for (const char* w : {"a", "b", "c"}) ASSERT_TRUE(coordinator_->EndStep("job-1", w, 2).ok());
  ASSERT_TRUE(SendPart(coordinator_.get(), "a", 2, 0, 3, 0, 3).ok());
  ASSERT_TRUE(SendPart(coordinator_.get(), "b", 2, 1, 3, 3, 4).ok());
  // c fails before sending its part: the survivors form a group of two,
  // which rolls back to step 0, and its own step 2 needs parts of two.
  ASSERT_TRUE(coordinator_->ReportFailure("job-1", "a", "c").ok());
  ASSERT_TRUE(coordinator_->ReportFailure("job-1", "b", "c").ok());
  Form("job-1", {"a", "b"});
  for (const char* w : {"a", "b"}) ASSERT_TRUE(coordinator_->EndStep("job-1", w, 2).ok());
  EXPECT_EQ(coordinator_->BeginCheckpointPart("job-1", "b", 2, 1, 3).status().code(),
            absl::StatusCode::kInvalidArgument);
  // b's part 1 of the new group alone does not complete anything: the old
  // generation's part 0 (of three) does not count.
  auto alone = SendPart(coordinator_.get(), "b", 2, 1, 2, 5, 5);
  ASSERT_TRUE(alone.ok()) << alone.status();
  EXPECT_FALSE(*alone);
  auto last = SendPart(coordinator_.get(), "a", 2, 0, 2, 0, 5);
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_TRUE(*last);
  EXPECT_EQ(coordinator_->GetJob("job-1")->committed_step(), 2u);
}

TEST_F(CoordinatorTest, EndStepGivesEveryMemberTheSameCheckpointAnswer) {
  v1::JobSpec spec = Spec("job-1");
  spec.mutable_checkpoint()->set_every_seconds(60);
  Submit(spec, shards_);
  Join("job-1", "a");
  Join("job-1", "b");
  Form("job-1", {"a", "b"});
  AdvanceWithHeartbeats(absl::Seconds(59), {"a", "b"});
  EXPECT_FALSE(coordinator_->EndStep("job-1", "a", 1)->should_checkpoint);
  // The minute passes between a's and b's EndStep: b still hears "no" for
  // step 1 (else a part would be missing), and both hear "yes" for step 2.
  clock_.AdvanceBy(absl::Seconds(2));
  EXPECT_FALSE(coordinator_->EndStep("job-1", "b", 1)->should_checkpoint);
  EXPECT_TRUE(coordinator_->EndStep("job-1", "b", 2)->should_checkpoint);
  EXPECT_TRUE(coordinator_->EndStep("job-1", "a", 2)->should_checkpoint);
}

TEST_F(CoordinatorTest, ShouldCheckpointFollowsThePolicy) {
  v1::JobSpec spec = Spec("job-1");
  spec.mutable_checkpoint()->set_every_steps(5);
  spec.mutable_checkpoint()->set_every_seconds(60);
  Submit(spec, shards_);
  EXPECT_FALSE(*coordinator_->ShouldCheckpoint("job-1", 4));
  EXPECT_TRUE(*coordinator_->ShouldCheckpoint("job-1", 5));
  EXPECT_FALSE(*coordinator_->ShouldCheckpoint("job-1", 6));
  clock_.AdvanceBy(absl::Seconds(60));
  EXPECT_TRUE(*coordinator_->ShouldCheckpoint("job-1", 6));
  EXPECT_FALSE(*coordinator_->ShouldCheckpoint("job-1", 0));  // not after committed step 0
}

// Concurrent calls wait for a shared synced write (group commit); every one
// acknowledged is on disk, in order, when the directory is reopened.
TEST_F(CoordinatorTest, ConcurrentAcknowledgedJoinsAllSurviveAReopen) {
  v1::JobSpec spec = Spec("job-1");
  spec.mutable_access()->set_max_workers_per_token(1000);  // one token joins them all
  Submit(spec, shards_);
  auto token = coordinator_->CreateToken("job-1", absl::Hours(1));
  ASSERT_TRUE(token.ok());
  coordinator_.reset();
  CoordinatorOptions options = Options();
  options.sync_writes = true;
  auto opened = Coordinator::Open(options);
  ASSERT_TRUE(opened.ok()) << opened.status();
  coordinator_ = std::move(*opened);
  constexpr int kThreads = 8, kJoinsEach = 16;
  std::vector<std::thread> threads;
  std::vector<int> failures(kThreads, 0);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kJoinsEach; ++i) {
        const std::string worker = absl::StrCat("w", t, "-", i);
        auto joined = coordinator_->Join({"job-1", *token, worker, worker + ":1"});
        if (!joined.ok() || joined->worker_id != worker) ++failures[t];
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_THAT(failures, ::testing::Each(0));
  Reopen();
  auto workers = coordinator_->ListWorkers("job-1");
  ASSERT_TRUE(workers.ok()) << workers.status();
  ASSERT_EQ(workers->size(), static_cast<size_t>(kThreads * kJoinsEach));
  for (const WorkerView& worker : *workers) {
    EXPECT_NE(worker.phase, WorkerView::Phase::kDead) << worker.worker_id;
    EXPECT_EQ(worker.endpoint, worker.worker_id + ":1");
  }
}

TEST_F(CoordinatorTest, ReopenKeepsStateAndRevertsUncommittedProgress) {
  const GroupView first = Start({"a", "b"});
  auto token = coordinator_->CreateToken("job-1", absl::Hours(1));
  auto revoked = coordinator_->CreateToken("job-1", absl::Hours(1));
  ASSERT_TRUE(coordinator_->RevokeToken(*revoked).ok());
  ASSERT_EQ(coordinator_->AcquireShard("job-1", "a")->shard, 0u);
  ASSERT_TRUE(Report("a", "a1", 0, 30, 1).ok());
  ASSERT_TRUE(coordinator_->EndStep("job-1", "a", 1).ok());
  ASSERT_TRUE(coordinator_->EndStep("job-1", "b", 1).ok());
  ASSERT_TRUE(Commit("a", 1).ok());
  ASSERT_TRUE(Report("a", "a2", 0, 60, 2).ok());
  ASSERT_EQ(coordinator_->AcquireShard("job-1", "b")->shard, 1u);
  ASSERT_TRUE(Report("b", "b1", 1, 20, 2).ok());
  auto before = coordinator_->GetJob("job-1");
  ASSERT_TRUE(before.ok());

  clock_.AdvanceBy(absl::Seconds(8));
  Reopen();
  const absl::Time reopened = clock_.Now();

  auto after = coordinator_->GetJob("job-1");
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->SerializeAsString(), before->SerializeAsString());
  EXPECT_EQ(after->committed_step(), 1u);
  EXPECT_EQ(after->live_workers(), 2u);
  auto workers = coordinator_->ListWorkers("job-1");
  ASSERT_TRUE(workers.ok());
  ASSERT_EQ(workers->size(), 2u);
  for (const WorkerView& worker : *workers) {
    EXPECT_EQ(worker.phase, WorkerView::Phase::kMember) << worker.worker_id;
    EXPECT_EQ(worker.lease_expiry, reopened + absl::Seconds(20)) << worker.worker_id;
  }
  EXPECT_EQ(Find("job-1", "b").endpoint, "b:7000");

  const ShardView zero = Shard(0);
  EXPECT_EQ(zero.committed_offset, 30u);
  EXPECT_EQ(zero.consumed_offset, 30u);
  EXPECT_EQ(zero.holder, "");  // the group resumes from the checkpoint: leases start anew
  const ShardView one = Shard(1);
  EXPECT_EQ(one.committed_offset, 0u);
  EXPECT_EQ(one.consumed_offset, 0u);
  EXPECT_EQ(one.holder, "");

  // Tokens and the signing key survived; the revoked one stays revoked.
  EXPECT_TRUE(coordinator_->VerifyToken("job-1", *token).ok());
  EXPECT_EQ(coordinator_->VerifyToken("job-1", *revoked).code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(coordinator_->VerifyAdminToken(admin_).ok());

  // The group resumes from the checkpoint in a new generation; reports of
  // the old one are refused.
  const GroupView view = Form("job-1", {"a", "b"});
  EXPECT_GT(view.generation, first.generation);
  EXPECT_TRUE(view.from_checkpoint);
  EXPECT_EQ(view.resume_step, 1u);
  auto stale = coordinator_->ReportProgress({"job-1", "a", "a3", first.generation, 0, 80, 2});
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kAborted);
  auto lease = coordinator_->AcquireShard("job-1", "a");
  ASSERT_TRUE(lease.ok());
  EXPECT_EQ(lease->offset, 30u);

  // Once a worker calls in again, its lease is an ordinary one.
  clock_.AdvanceBy(absl::Seconds(10));
  EXPECT_EQ(coordinator_->Heartbeat("job-1", "b").status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(CoordinatorTest, CheckpointStoreRecordWinsOverAStaleStateDatabase) {
  Start({"a"});
  ASSERT_TRUE(coordinator_->AcquireShard("job-1", "a").ok());
  ASSERT_TRUE(Report("a", "a1", 0, 45, 1).ok());
  coordinator_.reset();
  // A crash after the checkpoint's write batch and before the state
  // database's: only the checkpoint store knows step 1 committed.
  {
    auto store = CheckpointStore::Open((dir_ / "checkpoints").string());
    ASSERT_TRUE(store.ok()) << store.status();
    coordinator_state::LedgerSnapshot snapshot;
    snapshot.set_step(1);
    for (uint64_t offset : {45, 0, 0}) snapshot.add_committed_offsets(offset);
    std::vector<float> weights = {1.0f};
    ASSERT_TRUE((*store)
                    ->Save("job-1", 1,
                           std::vector<TensorToSave>{
                               {"w", TensorView::Of(weights.data(), weights.size()), {}}},
                           {},
                           {Record{"coordinator/v1/job-1/ledger", snapshot.SerializeAsString()}})
                    .ok());
  }
  Reopen();
  EXPECT_EQ(coordinator_->GetJob("job-1")->committed_step(), 1u);
  EXPECT_EQ(Shard(0).committed_offset, 45u);
  EXPECT_EQ(Shard(0).consumed_offset, 45u);
}

TEST_F(CoordinatorTest, LedgerRecordWithoutItsCheckpointIsDataLoss) {
  Start({"a"});
  ASSERT_TRUE(coordinator_->EndStep("job-1", "a", 2).ok());
  ASSERT_TRUE(Commit("a", 2).ok());
  ASSERT_TRUE(coordinator_->checkpoints()->Delete("job-1", 2).ok());
  coordinator_.reset();
  auto opened = Coordinator::Open(Options());
  EXPECT_EQ(opened.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(opened.status().message(), HasSubstr("step 2"));
}

}  // namespace
}  // namespace potluck
