#include "collectives/tcp_transport.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

#include "collectives/internal/checks.h"
#include "collectives/internal/wire.h"
#include "common/check.h"
#include "common/status.h"

namespace potluck {

namespace {

namespace cw = collectives_internal;

// Milliseconds poll() may wait before `deadline`; -1 = forever.
int PollTimeoutMs(absl::Time deadline) {
  if (deadline == absl::InfiniteFuture()) return -1;
  const absl::Duration left = deadline - absl::Now();
  if (left <= absl::ZeroDuration()) return 0;
  return static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(left) + 1, 1 << 30));
}

void SetNonBlocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

void SetNoDelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

// Blocking-style I/O on a non-blocking socket, bounded by a deadline.
absl::Status WriteAll(int fd, const void* data, size_t size, absl::Time deadline,
                      absl::string_view what) {
  const char* bytes = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = send(fd, bytes, size, MSG_NOSIGNAL);
    if (n > 0) {
      bytes += n;
      size -= static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EINTR) return ErrnoStatus(errno, what);
    pollfd p{fd, POLLOUT, 0};
    const int ready = poll(&p, 1, PollTimeoutMs(deadline));
    if (ready == 0) return absl::DeadlineExceededError(absl::StrCat(what, ": timed out"));
  }
  return absl::OkStatus();
}

absl::Status ReadAll(int fd, void* data, size_t size, absl::Time deadline, absl::string_view what) {
  char* bytes = static_cast<char*>(data);
  while (size > 0) {
    const ssize_t n = recv(fd, bytes, size, 0);
    if (n > 0) {
      bytes += n;
      size -= static_cast<size_t>(n);
      continue;
    }
    if (n == 0)
      return absl::UnavailableError(absl::StrCat(what, ": the peer closed the connection"));
    if (errno != EAGAIN && errno != EINTR) return ErrnoStatus(errno, what);
    pollfd p{fd, POLLIN, 0};
    const int ready = poll(&p, 1, PollTimeoutMs(deadline));
    if (ready == 0) return absl::DeadlineExceededError(absl::StrCat(what, ": timed out"));
  }
  return absl::OkStatus();
}

absl::StatusOr<sockaddr_in> Resolve(absl::string_view host, int port) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  const std::string host_string(host);
  if (inet_pton(AF_INET, host_string.c_str(), &address.sin_addr) == 1) return address;
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(host_string.c_str(), nullptr, &hints, &found) != 0 || found == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("cannot resolve host '", host, "'"));
  }
  address.sin_addr = reinterpret_cast<sockaddr_in*>(found->ai_addr)->sin_addr;
  freeaddrinfo(found);
  return address;
}

absl::StatusOr<std::pair<std::string, int>> ParseEndpoint(absl::string_view endpoint) {
  const size_t colon = endpoint.rfind(':');
  int port = 0;
  if (colon == absl::string_view::npos || !absl::SimpleAtoi(endpoint.substr(colon + 1), &port) ||
      port <= 0 || port > 65535) {
    return absl::DataLossError(
        absl::StrCat("bad endpoint '", endpoint, "' in the rendezvous store"));
  }
  return std::make_pair(std::string(endpoint.substr(0, colon)), port);
}

class TcpTransport final : public Transport {
 public:
  TcpTransport(int rank, int world_size, std::vector<int> fds, int wake_read, int wake_write)
      : rank_(rank),
        world_size_(world_size),
        fds_(std::move(fds)),
        wake_read_(wake_read),
        wake_write_(wake_write) {}

  ~TcpTransport() override {
    for (int fd : fds_) {
      if (fd >= 0) close(fd);
    }
    close(wake_read_);
    close(wake_write_);
  }

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }

  void Abort() override {
    aborted_ = true;
    const char byte = 1;
    [[maybe_unused]] ssize_t n = write(wake_write_, &byte, 1);
  }

  void Close() override {
    for (int fd : fds_) {
      if (fd >= 0) shutdown(fd, SHUT_RDWR);
    }
  }

  absl::Status Exchange(const ExchangeSpec& spec, absl::Time deadline) override;

 private:
  std::string Peer(int peer) const { return absl::StrCat("rank ", peer); }

  const int rank_;
  const int world_size_;
  const std::vector<int> fds_;  // owned; -1 for this rank
  const int wake_read_;         // a pipe Abort() writes to, so poll() wakes
  const int wake_write_;
  std::atomic<bool> aborted_{false};
};

absl::Status TcpTransport::Exchange(const ExchangeSpec& spec, absl::Time deadline) {
  if (aborted_) return absl::AbortedError("the communicator was aborted");
  const bool sending = spec.send_peer >= 0 && !spec.send.empty();
  const bool receiving = spec.recv_peer >= 0 && !spec.recv.empty();
  const int send_fd = sending ? fds_[spec.send_peer] : -1;
  const int recv_fd = receiving ? fds_[spec.recv_peer] : -1;
  const std::string send_name = sending ? Peer(spec.send_peer) : "";
  const std::string recv_name = receiving ? Peer(spec.recv_peer) : "";

  // Send state: frame index, its header, bytes of header+payload sent.
  size_t send_frame = 0, send_done = 0;
  cw::FrameHeaderBytes send_header{};
  if (sending) {
    POTLUCK_CHECK(spec.send[0].size() <= cw::kMaxFramePayloadBytes);
    send_header = cw::EncodeFrameHeader(static_cast<uint32_t>(spec.send[0].size()), spec.first_tag);
  }
  // Receive state: frame index, header bytes, bytes of header+payload received.
  size_t recv_frame = 0, recv_done = 0;
  cw::FrameHeaderBytes recv_header{};

  while ((sending && send_frame < spec.send.size()) ||
         (receiving && recv_frame < spec.recv.size())) {
    const bool want_send = sending && send_frame < spec.send.size() &&
                           (!spec.send_after_receive || send_frame < recv_frame);
    const bool want_recv = receiving && recv_frame < spec.recv.size();
    pollfd polls[3];
    int count = 0;
    int send_index = -1, recv_index = -1;
    if (want_send) {
      polls[count] = {send_fd, POLLOUT, 0};
      send_index = count++;
    }
    if (want_recv) {
      if (send_index >= 0 && send_fd == recv_fd) {
        polls[send_index].events |= POLLIN;
        recv_index = send_index;
      } else {
        polls[count] = {recv_fd, POLLIN, 0};
        recv_index = count++;
      }
    }
    polls[count] = {wake_read_, POLLIN, 0};
    const int wake_index = count++;
    const int timeout_ms = PollTimeoutMs(deadline);
    if (timeout_ms == 0) {
      return absl::DeadlineExceededError(
          absl::StrCat("deadline passed in a collective step: ",
                       want_recv ? absl::StrCat("still waiting for ", recv_name) : "",
                       want_recv && want_send ? ", " : "",
                       want_send ? absl::StrCat("still sending to ", send_name) : ""));
    }
    const int ready = poll(polls, count, timeout_ms);
    if (ready < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, "poll");
    }
    if (aborted_ || (polls[wake_index].revents & POLLIN)) {
      return absl::AbortedError("the communicator was aborted");
    }
    if (recv_index >= 0 && (polls[recv_index].revents & (POLLIN | POLLERR | POLLHUP))) {
      // Drain what is there: the header, then the payload straight into place.
      bool would_block = false;
      auto receive = [&](char* target, size_t want) -> absl::Status {
        const ssize_t n = recv(recv_fd, target, want, 0);
        if (n > 0) {
          recv_done += static_cast<size_t>(n);
          return absl::OkStatus();
        }
        if (n == 0)
          return absl::UnavailableError(absl::StrCat(recv_name, " closed its connection"));
        if (errno == EAGAIN || errno == EINTR) {
          would_block = true;
          return absl::OkStatus();
        }
        return ErrnoStatus(errno, absl::StrCat("receiving from ", recv_name));
      };
      while (!would_block && recv_frame < spec.recv.size()) {
        const absl::Span<char> frame = spec.recv[recv_frame];
        if (recv_done < cw::kFrameHeaderBytes) {
          RETURN_IF_ERROR(
              receive(recv_header.data() + recv_done, cw::kFrameHeaderBytes - recv_done));
          if (recv_done < cw::kFrameHeaderBytes) continue;
          RETURN_IF_ERROR(cw::CheckFrameHeader(recv_header, frame.size(),
                                               spec.first_tag + recv_frame, recv_name));
        }
        const size_t payload_done = recv_done - cw::kFrameHeaderBytes;
        if (payload_done < frame.size()) {
          RETURN_IF_ERROR(receive(frame.data() + payload_done, frame.size() - payload_done));
          if (recv_done - cw::kFrameHeaderBytes < frame.size()) continue;
        }
        if (spec.on_received) RETURN_IF_ERROR(spec.on_received(recv_frame));
        ++recv_frame;
        recv_done = 0;
      }
    }
    if (send_index >= 0 && (polls[send_index].revents & (POLLOUT | POLLERR | POLLHUP))) {
      while (send_frame < spec.send.size() &&
             (!spec.send_after_receive || send_frame < recv_frame)) {
        const absl::Span<const char> frame = spec.send[send_frame];
        iovec parts[2];
        int used = 0;
        if (send_done < cw::kFrameHeaderBytes) {
          parts[used++] = {send_header.data() + send_done, cw::kFrameHeaderBytes - send_done};
          if (!frame.empty()) parts[used++] = {const_cast<char*>(frame.data()), frame.size()};
        } else {
          const size_t offset = send_done - cw::kFrameHeaderBytes;
          parts[used++] = {const_cast<char*>(frame.data()) + offset, frame.size() - offset};
        }
        msghdr message{};
        message.msg_iov = parts;
        message.msg_iovlen = static_cast<size_t>(used);
        const ssize_t n = sendmsg(send_fd, &message, MSG_NOSIGNAL);
        if (n < 0) {
          if (errno == EAGAIN || errno == EINTR) break;
          return ErrnoStatus(errno, absl::StrCat("sending to ", send_name));
        }
        send_done += static_cast<size_t>(n);
        if (send_done == cw::kFrameHeaderBytes + frame.size()) {
          ++send_frame;
          send_done = 0;
          if (send_frame < spec.send.size()) {
            POTLUCK_CHECK(spec.send[send_frame].size() <= cw::kMaxFramePayloadBytes);
            send_header = cw::EncodeFrameHeader(static_cast<uint32_t>(spec.send[send_frame].size()),
                                                spec.first_tag + send_frame);
          }
        }
      }
    }
  }
  return absl::OkStatus();
}

// The server side of the handshake on a freshly accepted socket. Returns the
// authenticated peer's rank.
absl::StatusOr<int> AcceptHandshake(int fd, const TcpTransportOptions& options,
                                    absl::Time deadline) {
  std::string hello_bytes(cw::kHelloBytes, '\0');
  RETURN_IF_ERROR(ReadAll(fd, hello_bytes.data(), hello_bytes.size(), deadline, "reading HELLO"));
  ASSIGN_OR_RETURN(const cw::Hello hello, cw::DecodeHello(hello_bytes));
  if (hello.generation != options.generation) {
    return absl::PermissionDeniedError(absl::StrCat("a peer of generation ", hello.generation,
                                                    " tried to join generation ",
                                                    options.generation));
  }
  if (hello.world_size != static_cast<uint32_t>(options.world_size) ||
      hello.rank <= static_cast<uint32_t>(options.rank) ||
      hello.rank >= static_cast<uint32_t>(options.world_size)) {
    return absl::PermissionDeniedError(absl::StrCat("a peer claiming rank ", hello.rank, " of ",
                                                    hello.world_size, " is not expected here"));
  }
  const cw::Nonce nonce = cw::RandomNonce();
  const cw::Mac server_mac = cw::HandshakeMac(options.secret, /*server=*/true, options.generation,
                                              options.rank, hello.rank, hello.nonce, nonce);
  std::string challenge = "PLCH";
  challenge.append(reinterpret_cast<const char*>(nonce.data()), nonce.size());
  challenge.append(reinterpret_cast<const char*>(server_mac.data()), server_mac.size());
  RETURN_IF_ERROR(WriteAll(fd, challenge.data(), challenge.size(), deadline, "sending CHALLENGE"));
  std::string response(cw::kResponseBytes, '\0');
  RETURN_IF_ERROR(ReadAll(fd, response.data(), response.size(), deadline, "reading RESPONSE"));
  const cw::Mac expected = cw::HandshakeMac(options.secret, /*server=*/false, options.generation,
                                            hello.rank, options.rank, nonce, hello.nonce);
  if (response.substr(0, 4) != "PLRS" ||
      !cw::MacEquals(expected, reinterpret_cast<const uint8_t*>(response.data() + 4))) {
    return absl::PermissionDeniedError(absl::StrCat("a peer claiming rank ", hello.rank,
                                                    " does not know the generation's secret"));
  }
  RETURN_IF_ERROR(WriteAll(fd, "PLOK", cw::kOkBytes, deadline, "sending OK"));
  return static_cast<int>(hello.rank);
}

// The client side: connects to `peer` and authenticates both ways.
absl::StatusOr<int> ConnectAndHandshake(const TcpTransportOptions& options, int peer,
                                        absl::string_view endpoint, absl::Time deadline) {
  ASSIGN_OR_RETURN(const auto host_port, ParseEndpoint(endpoint));
  ASSIGN_OR_RETURN(const sockaddr_in address, Resolve(host_port.first, host_port.second));
  const std::string what = absl::StrCat("connecting to rank ", peer, " at ", endpoint);
  while (true) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return ErrnoStatus(errno, what);
    SetNonBlocking(fd);
    int result = connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address));
    if (result < 0 && errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      if (poll(&p, 1, PollTimeoutMs(deadline)) == 1) {
        socklen_t length = sizeof(result);
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &result, &length);
        errno = result;
        result = result == 0 ? 0 : -1;
      } else {
        errno = ETIMEDOUT;
        result = -1;
      }
    }
    if (result < 0) {
      const int error = errno;
      close(fd);
      if (absl::Now() >= deadline) return ErrnoStatus(error, what);
      absl::SleepFor(absl::Milliseconds(20));  // the listener may not be up yet
      continue;
    }
    SetNoDelay(fd);
    cw::Hello hello;
    hello.generation = options.generation;
    hello.rank = static_cast<uint32_t>(options.rank);
    hello.world_size = static_cast<uint32_t>(options.world_size);
    hello.nonce = cw::RandomNonce();
    const std::string hello_bytes = cw::EncodeHello(hello);
    absl::Status status = WriteAll(fd, hello_bytes.data(), hello_bytes.size(), deadline, what);
    std::string challenge(cw::kChallengeBytes, '\0');
    if (status.ok()) status = ReadAll(fd, challenge.data(), challenge.size(), deadline, what);
    if (status.code() == absl::StatusCode::kUnavailable && absl::Now() < deadline) {
      // Closed before its challenge: the peer is still accepting for an
      // earlier generation (it refuses ours), or timed us out. Try again.
      close(fd);
      absl::SleepFor(absl::Milliseconds(20));
      continue;
    }
    if (status.ok()) {
      cw::Nonce server_nonce;
      std::memcpy(server_nonce.data(), challenge.data() + 4, cw::kNonceBytes);
      const cw::Mac expected =
          cw::HandshakeMac(options.secret, /*server=*/true, options.generation,
                           static_cast<uint32_t>(peer), hello.rank, hello.nonce, server_nonce);
      if (challenge.substr(0, 4) != "PLCH" ||
          !cw::MacEquals(
              expected, reinterpret_cast<const uint8_t*>(challenge.data() + 4 + cw::kNonceBytes))) {
        status = absl::PermissionDeniedError(
            absl::StrCat(what, ": the peer does not know the generation's secret"));
      } else {
        const cw::Mac mac =
            cw::HandshakeMac(options.secret, /*server=*/false, options.generation, hello.rank,
                             static_cast<uint32_t>(peer), server_nonce, hello.nonce);
        std::string response = "PLRS";
        response.append(reinterpret_cast<const char*>(mac.data()), mac.size());
        status = WriteAll(fd, response.data(), response.size(), deadline, what);
        char ok[cw::kOkBytes];
        if (status.ok()) status = ReadAll(fd, ok, sizeof(ok), deadline, what);
        if (status.ok() && absl::string_view(ok, 4) != "PLOK") {
          status = absl::PermissionDeniedError(absl::StrCat(what, ": refused"));
        }
      }
    }
    if (!status.ok()) {
      close(fd);
      return status;
    }
    return fd;
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<TcpListener>> TcpListener::Open(const std::string& bind_host,
                                                               int port) {
  ASSIGN_OR_RETURN(const sockaddr_in address, Resolve(bind_host, port));
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoStatus(errno, "creating the listening socket");
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0 ||
      listen(fd, 64) != 0) {
    const int error = errno;
    close(fd);
    return ErrnoStatus(error, absl::StrCat("listening on ", bind_host, ":", port));
  }
  sockaddr_in local{};
  socklen_t local_length = sizeof(local);
  getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_length);
  SetNonBlocking(fd);
  return std::unique_ptr<TcpListener>(new TcpListener(fd, ntohs(local.sin_port)));
}

TcpListener::~TcpListener() { close(fd_); }

absl::StatusOr<std::unique_ptr<Transport>> ConnectTcpTransport(RendezvousStore* store,
                                                               const TcpTransportOptions& options,
                                                               absl::Time deadline) {
  RETURN_IF_ERROR(collectives_internal::ValidateRank(options.rank, options.world_size));
  if (options.secret.empty()) {
    return absl::InvalidArgumentError("a TCP group needs the generation's secret");
  }
  std::vector<int> fds(options.world_size, -1);
  auto close_all = [&fds] {
    for (int& fd : fds) {
      if (fd >= 0) close(fd);
      fd = -1;
    }
  };

  // Listen and publish where.
  std::unique_ptr<TcpListener> own_listener;
  if (options.listener == nullptr) {
    ASSIGN_OR_RETURN(own_listener, TcpListener::Open(options.bind_host));
  }
  TcpListener* const listening = options.listener ? options.listener : own_listener.get();
  const int listener = listening->fd();
  const std::string host =
      options.advertise_host.empty() ? options.bind_host : options.advertise_host;
  const std::string key_prefix = absl::StrCat("potluck/", options.generation, "/");
  absl::Status status = store->Set(absl::StrCat(key_prefix, options.rank),
                                   absl::StrCat(host, ":", listening->port()));

  // Connect to every lower rank.
  for (int peer = 0; status.ok() && peer < options.rank; ++peer) {
    auto endpoint = store->Get(absl::StrCat(key_prefix, peer), deadline);
    if (!endpoint.ok()) {
      status = endpoint.status();
      break;
    }
    auto fd = ConnectAndHandshake(options, peer, *endpoint, deadline);
    if (!fd.ok()) {
      status = fd.status();
      break;
    }
    fds[peer] = *fd;
  }

  // Accept every higher rank; refuse whoever fails the handshake.
  int missing = options.world_size - 1 - options.rank;
  while (status.ok() && missing > 0) {
    pollfd p{listener, POLLIN, 0};
    const int ready = poll(&p, 1, PollTimeoutMs(deadline));
    if (ready == 0) {
      std::vector<int> absent;
      for (int peer = options.rank + 1; peer < options.world_size; ++peer) {
        if (fds[peer] < 0) absent.push_back(peer);
      }
      status = absl::DeadlineExceededError(
          absl::StrCat("rank ", options.rank, " of generation ", options.generation,
                       ": ranks never connected: ", absl::StrJoin(absent, ", ")));
      break;
    }
    const int fd = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    SetNonBlocking(fd);
    SetNoDelay(fd);
    const absl::Time handshake_deadline =
        std::min(deadline, absl::Now() + options.handshake_timeout);
    auto peer = AcceptHandshake(fd, options, handshake_deadline);
    if (!peer.ok() || fds[*peer] >= 0) {
      close(fd);  // refused: not disturbing the group, keep waiting for the real peer
      continue;
    }
    fds[*peer] = fd;
    --missing;
  }
  own_listener.reset();
  if (!status.ok()) {
    close_all();
    return status;
  }
  for (int fd : fds) {
    if (fd >= 0) SetNonBlocking(fd);
  }
  int wake[2];
  if (pipe2(wake, O_CLOEXEC | O_NONBLOCK) != 0) {
    close_all();
    return ErrnoStatus(errno, "creating the abort pipe");
  }
  return std::unique_ptr<Transport>(
      new TcpTransport(options.rank, options.world_size, std::move(fds), wake[0], wake[1]));
}

}  // namespace potluck
