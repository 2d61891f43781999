// Ranks as separate processes: one is SIGKILLed in the middle of an
// all-reduce, and every other rank must notice (kUnavailable, as
// communicator.h promises for a vanished member) and return well before its
// deadline (design invariant 4: nothing blocks forever).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

namespace potluck {
namespace {

struct Child {
  pid_t pid = -1;
  FILE* out = nullptr;  // the child's stdout
};

Child Spawn(const std::vector<std::string>& args) {
  int pipe_fds[2];
  EXPECT_EQ(pipe(pipe_fds), 0);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(pipe_fds[1], STDOUT_FILENO);
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    std::vector<char*> argv;
    for (const std::string& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(pipe_fds[1]);
  return {pid, fdopen(pipe_fds[0], "r")};
}

std::string ReadLine(FILE* in) {
  char line[512];
  return fgets(line, sizeof(line), in) != nullptr ? std::string(line) : std::string();
}

TEST(CollectivesMultiProcess, SigkilledRankFailsEveryOtherRankWithinTheDeadline) {
  constexpr int kRanks = 4;
  // Each all-reduce of 16 MiB before the kill must succeed, so a loaded
  // machine must not be able to push one past its deadline (a few tens of
  // ms unloaded). Only the kill may end the stream.
  constexpr int kDeadlineMs = 30000;
  // What the survivors prove: they return within this of the kill, a third of
  // the deadline, so it was noticing the dead peer that ended their call, not
  // waiting it out. Still generous: TCP reports the dead peer's closed links
  // at once, the rest is scheduling.
  constexpr absl::Duration kPromptly = absl::Milliseconds(kDeadlineMs / 3);
  std::string pattern = (std::filesystem::path(::testing::TempDir()) / "store-XXXXXX").string();
  const std::string store = mkdtemp(pattern.data());
  std::vector<Child> children;
  for (int rank = 0; rank < kRanks; ++rank) {
    children.push_back(Spawn({POTLUCK_RANK_BINARY, store, std::to_string(rank),
                              std::to_string(kRanks), std::to_string(kDeadlineMs)}));
  }
  for (Child& child : children) ASSERT_EQ(ReadLine(child.out), "connected\n");
  absl::SleepFor(absl::Milliseconds(300));  // well inside the stream of all-reduces
  ASSERT_EQ(kill(children[1].pid, SIGKILL), 0);
  const absl::Time killed = absl::Now();

  for (int rank = 0; rank < kRanks; ++rank) {
    int status = 0;
    ASSERT_EQ(waitpid(children[rank].pid, &status, 0), children[rank].pid);
    if (rank == 1) {
      EXPECT_TRUE(WIFSIGNALED(status));
      fclose(children[rank].out);
      continue;
    }
    const std::string line = ReadLine(children[rank].out);
    fclose(children[rank].out);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "rank " << rank << ": " << line;
    const std::vector<std::string> words = absl::StrSplit(line, absl::MaxSplits(' ', 2));
    ASSERT_EQ(words.size(), 3u) << "rank " << rank << " printed: " << line;
    EXPECT_EQ(words[0], "failed");
    int took_ms = 0;
    ASSERT_TRUE(absl::SimpleAtoi(words[1], &took_ms)) << line;
    EXPECT_LT(took_ms, kDeadlineMs) << "rank " << rank << ": " << line;
    EXPECT_TRUE(absl::StrContains(words[2], "UNAVAILABLE")) << "rank " << rank << ": " << line;
  }
  EXPECT_LT(absl::Now() - killed, kPromptly);
  std::filesystem::remove_all(store);
}

}  // namespace
}  // namespace potluck
