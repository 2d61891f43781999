// Ranks as separate processes: one is SIGKILLed in the middle of an
// all-reduce, and every other rank must return an error within its deadline
// plus one second (design invariant 4: nothing blocks forever).
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
  constexpr int kDeadlineMs = 3000;
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
    EXPECT_LT(took_ms, kDeadlineMs + 1000) << "rank " << rank << ": " << line;
    EXPECT_TRUE(absl::StrContains(words[2], "UNAVAILABLE") ||
                absl::StrContains(words[2], "DEADLINE_EXCEEDED"))
        << line;
  }
  EXPECT_LT(absl::Now() - killed, absl::Milliseconds(kDeadlineMs + 1000));
  std::filesystem::remove_all(store);
}

}  // namespace
}  // namespace potluck
