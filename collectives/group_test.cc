// ConnectGroup: ranks as threads over loopback, each on a TcpListener it
// keeps, as workers are, finding each other only through the endpoint list.
#include "collectives/group.h"

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/blocking_counter.h"

namespace potluck {
namespace {

constexpr char kSecret[] = "generation-secret";

std::vector<std::unique_ptr<TcpListener>> OpenListeners(int count) {
  std::vector<std::unique_ptr<TcpListener>> listeners;
  for (int i = 0; i < count; ++i) {
    auto listener = TcpListener::Open("127.0.0.1");
    EXPECT_TRUE(listener.ok()) << listener.status();
    if (listener.ok()) listeners.push_back(std::move(*listener));
  }
  return listeners;
}

std::vector<std::string> EndpointsOf(const std::vector<std::unique_ptr<TcpListener>>& listeners) {
  std::vector<std::string> endpoints;
  for (const auto& listener : listeners) {
    endpoints.push_back(absl::StrCat("127.0.0.1:", listener->port()));
  }
  return endpoints;
}

// Every rank connects with ConnectGroup and runs `body`; communicators are
// destroyed once every body returned.
void RunRanks(int world_size, uint64_t generation, std::vector<TcpListener*> listeners,
              const std::vector<std::string>& endpoints,
              const std::function<void(int, absl::StatusOr<std::unique_ptr<Communicator>>&)>& body,
              absl::Duration timeout = absl::Seconds(20)) {
  absl::BlockingCounter finished(world_size);
  std::vector<std::thread> ranks;
  std::vector<absl::StatusOr<std::unique_ptr<Communicator>>> comms(world_size);
  for (int rank = 0; rank < world_size; ++rank) {
    ranks.emplace_back([&, rank] {
      GroupSpec spec;
      spec.generation = generation;
      spec.rank = rank;
      spec.endpoints = endpoints;
      spec.secret = kSecret;
      spec.listener = listeners[rank];
      spec.deadline = absl::Now() + timeout;
      comms[rank] = ConnectGroup(spec);
      body(rank, comms[rank]);
      finished.DecrementCount();
    });
  }
  finished.Wait();
  for (std::thread& rank : ranks) rank.join();
}

class ConnectGroupTest : public ::testing::TestWithParam<int> {};

TEST_P(ConnectGroupTest, RanksFindEachOtherByEndpointAndAllReduce) {
  const int world_size = GetParam();
  auto listeners = OpenListeners(world_size);
  ASSERT_EQ(static_cast<int>(listeners.size()), world_size);
  std::vector<TcpListener*> borrowed;
  for (auto& l : listeners) borrowed.push_back(l.get());
  // Two generations on the same listeners, as a worker regroups.
  for (uint64_t generation : {7u, 8u}) {
    RunRanks(world_size, generation, borrowed, EndpointsOf(listeners),
             [&](int rank, absl::StatusOr<std::unique_ptr<Communicator>>& comm) {
               ASSERT_TRUE(comm.ok()) << "rank " << rank << ": " << comm.status();
               EXPECT_EQ((*comm)->rank(), rank);
               EXPECT_EQ((*comm)->world_size(), world_size);
               EXPECT_EQ((*comm)->generation(), generation);
               std::vector<int64_t> data = {rank + 1, 10 * (rank + 1)};
               ASSERT_TRUE((*comm)
                               ->AllReduce(TensorView::Of(data.data(), data.size()), ReduceOp::kSum,
                                           absl::Now() + absl::Seconds(10))
                               .ok());
               const int64_t sum = world_size * (world_size + 1) / 2;
               EXPECT_EQ(data[0], sum);
               EXPECT_EQ(data[1], 10 * sum);
             });
  }
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, ConnectGroupTest, ::testing::Values(1, 2, 3, 4));

TEST(ConnectGroup, AMemberThatNeverShowsUpIsDeadlineExceeded) {
  auto listeners = OpenListeners(2);
  ASSERT_EQ(listeners.size(), 2u);
  GroupSpec spec;
  spec.generation = 3;
  spec.rank = 0;  // waits for rank 1 to dial in; it never does
  spec.endpoints = EndpointsOf(listeners);
  spec.secret = kSecret;
  spec.listener = listeners[0].get();
  spec.deadline = absl::Now() + absl::Milliseconds(300);
  auto comm = ConnectGroup(spec);
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kDeadlineExceeded) << comm.status();
}

TEST(ConnectGroup, ASpecThatDescribesNoGroupIsInvalidArgument) {
  GroupSpec spec;
  spec.generation = 1;
  spec.secret = kSecret;
  spec.rank = 2;
  spec.endpoints = {"127.0.0.1:1", "127.0.0.1:2"};
  EXPECT_EQ(ConnectGroup(spec).status().code(), absl::StatusCode::kInvalidArgument);
  spec.rank = 0;
  spec.secret.clear();
  EXPECT_EQ(ConnectGroup(spec).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(EndpointStore, AnswersTheGenerationsKeysOnly) {
  EndpointStore store(5, {"a:1", "b:2"});
  EXPECT_EQ(*store.Get("potluck/5/1", absl::InfinitePast()), "b:2");
  EXPECT_EQ(store.Get("potluck/4/1", absl::InfinitePast()).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(store.Set("potluck/5/0", "elsewhere:9").ok());
  EXPECT_EQ(*store.Get("potluck/5/0", absl::InfinitePast()), "a:1");
}

}  // namespace
}  // namespace potluck
