#include "collectives/internal/wire.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

#include "collectives/tcp_communicator.h"

namespace potluck {
namespace {

namespace cw = collectives_internal;

constexpr char kSecret[] = "generation-secret";

absl::Time In(absl::Duration duration) { return absl::Now() + duration; }

// The two ranks of a formed group sum 1s and 2s: both must hold 3s.
void ExpectTheGroupSums(Communicator* rank0, Communicator* rank1) {
  std::vector<int32_t> a(10, 1), b(10, 2);
  std::thread other([&] {
    EXPECT_TRUE(
        rank1->AllReduce(TensorView::Of(b.data(), 10), ReduceOp::kSum, In(absl::Seconds(10))).ok());
  });
  EXPECT_TRUE(
      rank0->AllReduce(TensorView::Of(a.data(), 10), ReduceOp::kSum, In(absl::Seconds(10))).ok());
  other.join();
  EXPECT_EQ(a, std::vector<int32_t>(10, 3));
  EXPECT_EQ(b, std::vector<int32_t>(10, 3));
}

TEST(FrameHeader, AcceptsOnlyTheFrameThatIsDue) {
  const cw::FrameHeaderBytes header = cw::EncodeFrameHeader(4096, 77);
  EXPECT_TRUE(cw::CheckFrameHeader(header, 4096, 77, "rank 1").ok());
  EXPECT_EQ(cw::CheckFrameHeader(header, 4095, 77, "rank 1").code(), absl::StatusCode::kDataLoss);
  const absl::Status wrong_tag = cw::CheckFrameHeader(header, 4096, 78, "rank 1");
  EXPECT_EQ(wrong_tag.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(wrong_tag.message().find("rank 1"), absl::string_view::npos);
  cw::FrameHeaderBytes bad_magic = header;
  bad_magic[0] ^= 1;
  EXPECT_EQ(cw::CheckFrameHeader(bad_magic, 4096, 77, "rank 1").code(),
            absl::StatusCode::kDataLoss);
}

// Fuzz-style: random headers are rejected, whatever length they announce; the
// receiver never sizes anything by what the header says.
TEST(FrameHeader, RandomBytesNeverPassForAFrame) {
  std::mt19937_64 rng(1);
  for (int i = 0; i < 200000; ++i) {
    cw::FrameHeaderBytes header;
    for (char& c : header) c = static_cast<char>(rng());
    ASSERT_EQ(cw::CheckFrameHeader(header, 1 << 20, 12345, "fuzz").code(),
              absl::StatusCode::kDataLoss);
  }
}

TEST(Hello, RoundTripsAndRejectsTruncatedOrRandomBytes) {
  cw::Hello hello;
  hello.generation = 9;
  hello.rank = 3;
  hello.world_size = 4;
  hello.nonce = cw::RandomNonce();
  const std::string bytes = cw::EncodeHello(hello);
  auto decoded = cw::DecodeHello(bytes);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->generation, 9u);
  EXPECT_EQ(decoded->rank, 3u);
  EXPECT_EQ(decoded->nonce, hello.nonce);
  for (size_t length = 0; length < bytes.size(); ++length) {
    EXPECT_EQ(cw::DecodeHello(bytes.substr(0, length)).status().code(),
              absl::StatusCode::kDataLoss);
  }
  std::mt19937 rng(2);
  for (int i = 0; i < 10000; ++i) {
    std::string random(cw::kHelloBytes, '\0');
    for (char& c : random) c = static_cast<char>(rng());
    EXPECT_FALSE(cw::DecodeHello(random).ok());
  }
}

TEST(HandshakeMac, DependsOnSecretRoleRanksAndNonces) {
  const cw::Nonce a = cw::RandomNonce(), b = cw::RandomNonce();
  const cw::Mac mac = cw::HandshakeMac("s", true, 1, 0, 1, a, b);
  EXPECT_TRUE(cw::MacEquals(mac, cw::HandshakeMac("s", true, 1, 0, 1, a, b).data()));
  EXPECT_FALSE(cw::MacEquals(mac, cw::HandshakeMac("t", true, 1, 0, 1, a, b).data()));
  EXPECT_FALSE(cw::MacEquals(mac, cw::HandshakeMac("s", false, 1, 0, 1, a, b).data()));
  EXPECT_FALSE(cw::MacEquals(mac, cw::HandshakeMac("s", true, 2, 0, 1, a, b).data()));
  EXPECT_FALSE(cw::MacEquals(mac, cw::HandshakeMac("s", true, 1, 1, 0, a, b).data()));
  EXPECT_FALSE(cw::MacEquals(mac, cw::HandshakeMac("s", true, 1, 0, 1, b, a).data()));
}

// Copies what an intruder needs to reach rank 0 of generation 1 under the
// keys of the generation it claims.
class RelayStore final : public RendezvousStore {
 public:
  RelayStore(RendezvousStore* real, std::string from, std::string to)
      : real_(real), from_(std::move(from)), to_(std::move(to)) {}
  absl::Status Set(absl::string_view, absl::string_view) override { return absl::OkStatus(); }
  absl::StatusOr<std::string> Get(absl::string_view key, absl::Time deadline) override {
    return real_->Get(key == from_ ? to_ : std::string(key), deadline);
  }

 private:
  RendezvousStore* real_;
  const std::string from_, to_;
};

TEST(TcpHandshake, IntrudersAreRefusedAndTheGroupStillForms) {
  InMemoryRendezvousStore store;
  TcpTransportOptions options;
  options.world_size = 2;
  options.generation = 1;
  options.secret = kSecret;
  std::unique_ptr<Communicator> rank0;
  std::thread server([&store, &rank0, options] {  // a copy: `options` changes below
    auto communicator = ConnectTcpCommunicator(&store, options, In(absl::Seconds(20)));
    ASSERT_TRUE(communicator.ok()) << communicator.status();
    rank0 = std::move(*communicator);
  });
  ASSERT_TRUE(store.Get("potluck/1/0", In(absl::Seconds(10))).ok());

  // Without the secret.
  TcpTransportOptions intruder = options;
  intruder.rank = 1;
  intruder.secret = "guessed";
  RelayStore no_writes(&store, "", "");
  auto refused = ConnectTcpTransport(&no_writes, intruder, In(absl::Seconds(5)));
  EXPECT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kPermissionDenied) << refused.status();

  // With the secret, but from another generation.
  intruder.secret = kSecret;
  intruder.generation = 2;
  RelayStore relay(&store, "potluck/2/0", "potluck/1/0");
  // (It tries again until its deadline: a peer of another generation may
  // only be late.)
  auto stale = ConnectTcpTransport(&relay, intruder, In(absl::Seconds(1)));
  EXPECT_FALSE(stale.ok());

  // The real rank 1 is still welcome.
  options.rank = 1;
  auto rank1 = ConnectTcpCommunicator(&store, options, In(absl::Seconds(20)));
  ASSERT_TRUE(rank1.ok()) << rank1.status();
  server.join();
  ASSERT_NE(rank0, nullptr);
  ExpectTheGroupSums(rank0.get(), rank1->get());
}

// A peer that passes the handshake (it has the secret) and then sends garbage
// gets kDataLoss, not a crash, a hang or a huge allocation.
TEST(TcpHandshake, GarbageAfterTheHandshakeIsDataLoss) {
  InMemoryRendezvousStore store;
  TcpTransportOptions options;
  options.world_size = 2;
  options.generation = 3;
  options.secret = kSecret;
  std::thread fake([&] {
    auto endpoint = store.Get("potluck/3/0", In(absl::Seconds(10)));
    ASSERT_TRUE(endpoint.ok());
    const size_t colon = endpoint->rfind(':');
    int port = 0;
    ASSERT_TRUE(absl::SimpleAtoi(endpoint->substr(colon + 1), &port));
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port));
    inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    cw::Hello hello;
    hello.generation = 3;
    hello.rank = 1;
    hello.world_size = 2;
    hello.nonce = cw::RandomNonce();
    const std::string bytes = cw::EncodeHello(hello);
    ASSERT_EQ(write(fd, bytes.data(), bytes.size()), ssize_t(bytes.size()));
    char challenge[cw::kChallengeBytes];
    ASSERT_EQ(recv(fd, challenge, sizeof(challenge), MSG_WAITALL), ssize_t(sizeof(challenge)));
    cw::Nonce server_nonce;
    std::memcpy(server_nonce.data(), challenge + 4, cw::kNonceBytes);
    const cw::Mac mac = cw::HandshakeMac(kSecret, false, 3, 1, 0, server_nonce, hello.nonce);
    std::string response = "PLRS";
    response.append(reinterpret_cast<const char*>(mac.data()), mac.size());
    ASSERT_EQ(write(fd, response.data(), response.size()), ssize_t(response.size()));
    char ok[4];
    ASSERT_EQ(recv(fd, ok, 4, MSG_WAITALL), 4);
    std::mt19937 rng(3);
    std::string garbage(1 << 16, '\0');
    for (char& c : garbage) c = static_cast<char>(rng());
    [[maybe_unused]] ssize_t n = write(fd, garbage.data(), garbage.size());
    absl::SleepFor(absl::Seconds(1));
    close(fd);
  });
  auto rank0 = ConnectTcpCommunicator(&store, options, In(absl::Seconds(20)));
  ASSERT_TRUE(rank0.ok()) << rank0.status();
  std::vector<float> data(1 << 20, 1.0f);
  const absl::Status status = (*rank0)->AllReduce(TensorView::Of(data.data(), data.size()),
                                                  ReduceOp::kSum, In(absl::Seconds(5)));
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  fake.join();
}

// A rank that keeps one listener across generations publishes the same port
// every time, nobody else can take that port between generations, and a
// connection an earlier generation left in the backlog does not disturb the
// next one.
TEST(TcpListener, OnePortServesEveryGenerationAndStaysTaken) {
  auto listener = TcpListener::Open("127.0.0.1");
  ASSERT_TRUE(listener.ok()) << listener.status();
  const int port = (*listener)->port();
  ASSERT_GT(port, 0);
  EXPECT_EQ(TcpListener::Open("127.0.0.1", port).status().code(), absl::StatusCode::kAlreadyExists);

  // A stale peer of generation 1 connects and never finishes its handshake.
  const int stale = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
  ASSERT_EQ(connect(stale, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  close(stale);

  for (uint64_t generation : {1, 2}) {
    SCOPED_TRACE(generation);
    InMemoryRendezvousStore store;
    TcpTransportOptions options;
    options.world_size = 2;
    options.generation = generation;
    options.secret = kSecret;
    options.listener = listener->get();
    std::unique_ptr<Communicator> rank0;
    std::thread server([&store, &rank0, options] {
      auto communicator = ConnectTcpCommunicator(&store, options, In(absl::Seconds(20)));
      ASSERT_TRUE(communicator.ok()) << communicator.status();
      rank0 = std::move(*communicator);
    });
    auto endpoint = store.Get(absl::StrCat("potluck/", generation, "/0"), In(absl::Seconds(10)));
    ASSERT_TRUE(endpoint.ok());
    EXPECT_EQ(*endpoint, absl::StrCat("127.0.0.1:", port));
    TcpTransportOptions other = options;
    other.rank = 1;
    other.listener = nullptr;
    auto rank1 = ConnectTcpCommunicator(&store, other, In(absl::Seconds(20)));
    ASSERT_TRUE(rank1.ok()) << rank1.status();
    server.join();
    ASSERT_NE(rank0, nullptr);
    ExpectTheGroupSums(rank0.get(), rank1->get());
    // Between generations the port is still this rank's.
    EXPECT_FALSE(TcpListener::Open("127.0.0.1", port).ok());
  }
}

// A peer already in the next generation connects while this rank still
// accepts for the last one: refused there, it tries again and is let in once
// this rank moves on to its generation (on the same listener).
TEST(TcpListener, APeerAheadByAGenerationIsLetInOnceTheRankCatchesUp) {
  auto listener = TcpListener::Open("127.0.0.1");
  ASSERT_TRUE(listener.ok()) << listener.status();
  InMemoryRendezvousStore first_store, next_store;
  // In the worker the endpoints come from the coordinator's view, known up
  // front: rank 1 needs nothing from rank 0 to dial it.
  ASSERT_TRUE(next_store.Set("potluck/2/0", absl::StrCat("127.0.0.1:", (*listener)->port())).ok());
  TcpTransportOptions options;
  options.world_size = 2;
  options.generation = 1;
  options.secret = kSecret;
  options.listener = listener->get();
  std::unique_ptr<Communicator> rank0;
  std::thread server([&] {
    // Generation 1's rank 1 never comes.
    auto first = ConnectTcpTransport(&first_store, options, In(absl::Seconds(1)));
    EXPECT_EQ(first.status().code(), absl::StatusCode::kDeadlineExceeded) << first.status();
    TcpTransportOptions next = options;
    next.generation = 2;
    auto communicator = ConnectTcpCommunicator(&next_store, next, In(absl::Seconds(20)));
    ASSERT_TRUE(communicator.ok()) << communicator.status();
    rank0 = std::move(*communicator);
  });
  ASSERT_TRUE(first_store.Get("potluck/1/0", In(absl::Seconds(10))).ok());
  TcpTransportOptions ahead = options;
  ahead.generation = 2;
  ahead.rank = 1;
  ahead.listener = nullptr;
  auto rank1 = ConnectTcpCommunicator(&next_store, ahead, In(absl::Seconds(20)));
  ASSERT_TRUE(rank1.ok()) << rank1.status();
  server.join();
  ASSERT_NE(rank0, nullptr);
  ExpectTheGroupSums(rank0.get(), rank1->get());
}

}  // namespace
}  // namespace potluck
