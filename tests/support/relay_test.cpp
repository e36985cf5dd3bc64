// tcp_relay against a plain target server on 127.0.0.1, driven through blocking sockets:
// pass, delay, cut, drop, resets, refused connects, backpressure, teardown, and the tool.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/eventually.hpp"
#include "otpp_test/tcp_relay.hpp"

extern char** environ;

namespace otpp_test {
namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

constexpr auto wait_limit = 20s;  // a bound, never a pacing device
// How long "nothing arrives" is watched: a shorter watch can only miss a bug, never fail a
// correct relay, so load on the machine cannot make these checks flaky.
constexpr auto quiet_window = 200ms;

std::string pattern(std::size_t n, std::size_t offset = 0) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (offset + i) % 23);
  return s;
}

sockaddr_in loopback(std::uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

bool send_all(int fd, const std::string& data) {
  std::size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<std::size_t>(n);
  }
  return true;
}

// A blocking client socket whose reads are all bounded.
class client {
 public:
  explicit client(std::uint16_t port) : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    auto a = loopback(port);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  ~client() { ::close(fd_); }
  client(const client&) = delete;
  client& operator=(const client&) = delete;

  bool connected() const { return connected_; }
  int fd() const { return fd_; }
  bool send(const std::string& data) { return send_all(fd_, data); }
  void shutdown_write() { ::shutdown(fd_, SHUT_WR); }

  // Reads until n bytes came, the peer closed, or `bound` passed.
  std::string read(std::size_t n, std::chrono::milliseconds bound = wait_limit) {
    std::string out;
    auto until = clock_type::now() + bound;
    char buf[65536];
    while (out.size() < n) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - clock_type::now());
      if (left.count() <= 0) break;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      ssize_t got = ::recv(fd_, buf, std::min(sizeof buf, n - out.size()), 0);
      if (got <= 0) break;
      out.append(buf, static_cast<std::size_t>(got));
    }
    return out;
  }

  // True once the peer closed (end of stream or reset) within `bound`; data is discarded.
  bool closed_within(std::chrono::milliseconds bound = wait_limit) {
    auto until = clock_type::now() + bound;
    char buf[65536];
    while (clock_type::now() < until) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 10) <= 0) continue;
      ssize_t got = ::recv(fd_, buf, sizeof buf, 0);
      if (got == 0 || (got < 0 && errno != EINTR && errno != EAGAIN)) return true;
    }
    return false;
  }

  // Sends without blocking until the relay stops taking bytes: the socket stays unwritable
  // for a while. Returns what was sent, or nullopt if `limit` bytes went through.
  std::optional<std::string> fill(std::size_t limit) {
    int flags = ::fcntl(fd_, F_GETFL);
    ::fcntl(fd_, F_SETFL, flags | O_NONBLOCK);
    std::string sent;
    std::optional<std::string> result;
    const std::size_t piece = 65536;
    while (sent.size() < limit) {
      auto data = pattern(piece, sent.size());
      ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n > 0) {
        sent.append(data, 0, static_cast<std::size_t>(n));
        continue;
      }
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) break;
      pollfd p{fd_, POLLOUT, 0};
      if (::poll(&p, 1, 500) == 0) {  // nobody read for half a second: stalled
        result = std::move(sent);
        break;
      }
    }
    ::fcntl(fd_, F_SETFL, flags);
    return result;
  }

 private:
  int fd_;
  bool connected_ = false;
};

// The relay's target: accepts on an ephemeral loopback port, records what each connection
// received, echoes it back when asked to, and lets the test send or close per connection.
class target_server {
 public:
  explicit target_server(bool echo) : echo_(echo), listen_fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    auto a = loopback(0);
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::listen(listen_fd_, 64) != 0)
      ADD_FAILURE() << "target server cannot listen";
    socklen_t len = sizeof a;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }

  ~target_server() {
    stopping_ = true;
    acceptor_.join();
    // No lock held while joining: a reader takes it on its way out. The acceptor is gone,
    // so conns_ no longer changes.
    for (auto& c : conns_) ::shutdown(c->fd, SHUT_RDWR);  // wakes its reader
    for (auto& c : conns_) c->reader.join();
    for (auto& c : conns_) ::close(c->fd);
    ::close(listen_fd_);
  }

  std::uint16_t port() const { return port_; }
  std::size_t accepted() {
    std::lock_guard lock(mu_);
    return conns_.size();
  }
  std::string received(std::size_t i) {
    std::lock_guard lock(mu_);
    return i < conns_.size() ? conns_[i]->received : std::string();
  }
  std::size_t received_size(std::size_t i) {
    std::lock_guard lock(mu_);
    return i < conns_.size() ? conns_[i]->received.size() : 0;
  }
  // The connection saw its end: end of stream or a reset.
  bool ended(std::size_t i) {
    std::lock_guard lock(mu_);
    return i < conns_.size() && conns_[i]->ended;
  }
  bool send(std::size_t i, const std::string& data) { return send_all(fd(i), data); }
  void close_write(std::size_t i) { ::shutdown(fd(i), SHUT_WR); }

 private:
  struct conn {
    int fd;
    std::string received;
    bool ended = false;
    std::thread reader;
  };

  int fd(std::size_t i) {
    std::lock_guard lock(mu_);
    return conns_.at(i)->fd;
  }

  void accept_loop() {
    while (!stopping_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 10) <= 0) continue;
      int fd = ::accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) continue;
      auto c = std::make_unique<conn>();
      c->fd = fd;
      conn* raw = c.get();
      std::lock_guard lock(mu_);
      conns_.push_back(std::move(c));
      raw->reader = std::thread([this, raw] { read_loop(*raw); });
    }
  }

  void read_loop(conn& c) {
    char buf[65536];
    for (;;) {
      ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      {
        std::lock_guard lock(mu_);
        c.received.append(buf, static_cast<std::size_t>(n));
      }
      if (echo_ && !send_all(c.fd, std::string(buf, static_cast<std::size_t>(n)))) break;
    }
    std::lock_guard lock(mu_);
    c.ended = true;
  }

  const bool echo_;
  int listen_fd_;
  std::uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::vector<std::unique_ptr<conn>> conns_;
  std::thread acceptor_;
};

// A port nothing listens on (bound once, then released).
std::uint16_t unused_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  auto a = loopback(0);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// Connects through the relay and waits until the relay reached the target.
std::unique_ptr<client> connect_through(tcp_relay& relay, target_server& server) {
  auto before = server.accepted();
  auto c = std::make_unique<client>(relay.port());
  EXPECT_TRUE(c->connected());
  EXPECT_TRUE(eventually([&] { return server.accepted() == before + 1; }, wait_limit));
  return c;
}

TEST(tcp_relay, pass_through_round_trip) {
  target_server server(true);
  auto relay = tcp_relay::start("127.0.0.1", server.port());
  ASSERT_NE(relay->port(), 0);
  std::vector<std::unique_ptr<client>> clients;
  for (int i = 0; i < 3; ++i) clients.push_back(connect_through(*relay, server));
  EXPECT_EQ(relay->connections(), 3u);
  const auto data = pattern(1 << 20);
  for (auto& c : clients) {
    ASSERT_TRUE(c->send(data));
    EXPECT_EQ(c->read(data.size()), data);
  }
  EXPECT_TRUE(eventually(
      [&] {
        return relay->bytes(direction::a_to_b) == 3 * data.size() &&
               relay->bytes(direction::b_to_a) == 3 * data.size();
      },
      wait_limit));
  EXPECT_EQ(relay->dropped(direction::a_to_b), 0u);
}

TEST(tcp_relay, delay_adds_latency_and_keeps_order) {
  target_server server(true);
  auto relay = tcp_relay::start("127.0.0.1", server.port());
  auto c = connect_through(*relay, server);
  relay->set_delay(direction::a_to_b, 100ms);
  relay->set_delay(direction::b_to_a, 50ms);
  auto t0 = clock_type::now();
  ASSERT_TRUE(c->send("ping"));
  EXPECT_EQ(c->read(4), "ping");
  EXPECT_GE(clock_type::now() - t0, 150ms);  // never an upper bound: the machine may be loaded

  // Many small writes come back in order.
  std::string all;
  for (int i = 0; i < 200; ++i) {
    auto piece = "m" + std::to_string(i) + ";";
    all += piece;
    ASSERT_TRUE(c->send(piece));
  }
  EXPECT_EQ(c->read(all.size()), all);

  // Bytes sent after the delay is lowered do not overtake bytes still waiting.
  relay->set_delay(direction::a_to_b, 300ms);
  ASSERT_TRUE(c->send("first;"));
  relay->set_delay(direction::a_to_b, 0ms);
  ASSERT_TRUE(c->send("second;"));
  EXPECT_EQ(c->read(13), "first;second;");
}

TEST(tcp_relay, raising_the_delay_holds_bytes_already_waiting) {
  target_server server(false);
  auto relay = tcp_relay::start("127.0.0.1", server.port());
  auto c = connect_through(*relay, server);
  relay->set_delay(direction::a_to_b, 10min);
  ASSERT_TRUE(c->send("held"));
  std::this_thread::sleep_for(quiet_window);
  EXPECT_EQ(server.received(0), "");
  relay->set_delay(direction::a_to_b, 0ms);  // applies to the waiting bytes: released now
  EXPECT_TRUE(eventually([&] { return server.received(0) == "held"; }, wait_limit));
}

TEST(tcp_relay, cut_one_direction_holds_bytes_until_heal) {
  target_server server(false);
  auto relay = tcp_relay::start("127.0.0.1", server.port());
  auto c = connect_through(*relay, server);
  relay->set_mode(direction::a_to_b, link_mode::cut);
  ASSERT_TRUE(c->send("hello "));
  // The other direction still passes.
  ASSERT_TRUE(server.send(0, "pong"));
  EXPECT_EQ(c->read(4), "pong");
  ASSERT_TRUE(c->send("world"));
  std::this_thread::sleep_for(quiet_window);
  EXPECT_EQ(server.received(0), "");
  EXPECT_EQ(relay->bytes(direction::a_to_b), 0u);
  EXPECT_EQ(relay->connections(), 1u);
  relay->heal();
  EXPECT_TRUE(eventually([&] { return server.received(0) == "hello world"; }, wait_limit));
  EXPECT_EQ(relay->dropped(direction::a_to_b), 0u);
}

TEST(tcp_relay, cut_target_to_client_then_heal) {
  target_server server(false);
  auto relay = tcp_relay::start("127.0.0.1", server.port());
  auto c = connect_through(*relay, server);
  relay->set_mode(direction::b_to_a, link_mode::cut);
  ASSERT_TRUE(server.send(0, "one;"));
  ASSERT_TRUE(c->send("up"));
  EXPECT_TRUE(eventually([&] { return server.received(0) == "up"; }, wait_limit));
  ASSERT_TRUE(server.send(0, "two;"));
  EXPECT_EQ(c->read(1, quiet_window), "");
  relay->set_mode(direction::b_to_a, link_mode::pass);
  EXPECT_EQ(c->read(8), "one;two;");
}

TEST(tcp_relay, cut_stops_reading_so_the_sender_blocks_then_heal_delivers_all_in_order) {
  target_server server(false);
  auto relay = tcp_relay::start("127.0.0.1", server.port());
  auto c = connect_through(*relay, server);
  relay->cut_both();
  auto sent = c->fill(std::size_t{256} << 20);
  ASSERT_TRUE(sent) << "the sender never blocked: the relay kept reading while cut";
  EXPECT_EQ(server.received(0), "");
  relay->heal();
  EXPECT_TRUE(eventually([&] { return server.received_size(0) == sent->size(); }, wait_limit));
  EXPECT_TRUE(server.received(0) == *sent);
}

TEST(tcp_relay, delay_queue_is_bounded_backpressure) {
  target_server server(false);
  relay_options o;
  o.target_port = server.port();
  o.max_queued_bytes = 1 << 20;
  auto relay = tcp_relay::start(o);
  auto c = connect_through(*relay, server);
  relay->set_delay(direction::a_to_b, 10min);
  auto sent = c->fill(std::size_t{256} << 20);
  ASSERT_TRUE(sent) << "the sender never blocked: the delay queue is unbounded";
  EXPECT_EQ(server.received(0), "");
  relay->set_delay(direction::a_to_b, 0ms);
  EXPECT_TRUE(eventually([&] { return server.received_size(0) == sent->size(); }, wait_limit));
  EXPECT_TRUE(server.received(0) == *sent);
}

TEST(tcp_relay, drop_discards_and_keeps_the_connection_open) {
  target_server server(false);
  auto relay = tcp_relay::start("127.0.0.1", server.port());
  auto c = connect_through(*relay, server);
  relay->set_mode(direction::a_to_b, link_mode::drop);
  const auto data = pattern(100'000);
  ASSERT_TRUE(c->send(data));
  EXPECT_TRUE(
      eventually([&] { return relay->dropped(direction::a_to_b) == data.size(); }, wait_limit));
  EXPECT_EQ(server.received(0), "");
  EXPECT_EQ(relay->bytes(direction::a_to_b), 0u);
  // Silence, not a close: the connection is still there and the other direction passes.
  ASSERT_TRUE(server.send(0, "still here"));
  EXPECT_EQ(c->read(10), "still here");
  EXPECT_EQ(relay->connections(), 1u);
  // The client's close is held back too.
  c->shutdown_write();
  std::this_thread::sleep_for(quiet_window);
  EXPECT_FALSE(server.ended(0));
  EXPECT_EQ(server.received(0), "");
}

TEST(tcp_relay, drop_discards_bytes_waiting_out_a_delay) {
  target_server server(false);
  auto relay = tcp_relay::start("127.0.0.1", server.port());
  auto c = connect_through(*relay, server);
  relay->set_delay(direction::a_to_b, 10min);
  ASSERT_TRUE(c->send(pattern(1000)));
  relay->set_mode(direction::a_to_b, link_mode::drop);  // read before or after: dropped
  EXPECT_TRUE(eventually([&] { return relay->dropped(direction::a_to_b) == 1000; }, wait_limit));
  relay->set_delay(direction::a_to_b, 0ms);
  std::this_thread::sleep_for(quiet_window);
  EXPECT_EQ(server.received(0), "");
}

TEST(tcp_relay, reset_connections_closes_both_sides_and_keeps_listening) {
  target_server server(true);
  auto relay = tcp_relay::start("127.0.0.1", server.port());
  auto c1 = connect_through(*relay, server);
  auto c2 = connect_through(*relay, server);
  ASSERT_TRUE(c1->send("x"));
  ASSERT_EQ(c1->read(1), "x");
  relay->cut_both();  // a reset also ends connections that are cut
  relay->reset_connections();
  EXPECT_EQ(relay->connections(), 0u);
  EXPECT_TRUE(c1->closed_within());
  EXPECT_TRUE(c2->closed_within());
  EXPECT_TRUE(eventually([&] { return server.ended(0) && server.ended(1); }, wait_limit));
  relay->heal();
  auto c3 = connect_through(*relay, server);
  ASSERT_TRUE(c3->send("again"));
  EXPECT_EQ(c3->read(5), "again");
}

TEST(tcp_relay, refuse_new_resets_new_connections_only) {
  target_server server(true);
  auto relay = tcp_relay::start("127.0.0.1", server.port());
  auto c1 = connect_through(*relay, server);
  relay->refuse_new(true);
  client c2(relay->port());
  EXPECT_TRUE(c2.closed_within());
  EXPECT_EQ(relay->accepted(), 2u);
  EXPECT_EQ(server.accepted(), 1u);  // never reached the target
  ASSERT_TRUE(c1->send("alive"));
  EXPECT_EQ(c1->read(5), "alive");
  relay->refuse_new(false);
  auto c3 = connect_through(*relay, server);
  ASSERT_TRUE(c3->send("welcome"));
  EXPECT_EQ(c3->read(7), "welcome");
}

TEST(tcp_relay, unreachable_target_resets_the_client) {
  auto relay = tcp_relay::start("127.0.0.1", unused_port());
  client c(relay->port());
  EXPECT_TRUE(c.closed_within());
  EXPECT_TRUE(eventually([&] { return relay->connections() == 0; }, wait_limit));
}

TEST(tcp_relay, half_close_passes_both_ways_then_the_connection_ends) {
  target_server server(false);
  auto relay = tcp_relay::start("127.0.0.1", server.port());
  auto c = connect_through(*relay, server);
  ASSERT_TRUE(c->send("last words"));
  c->shutdown_write();
  EXPECT_TRUE(eventually([&] { return server.ended(0); }, wait_limit));
  EXPECT_EQ(server.received(0), "last words");
  ASSERT_TRUE(server.send(0, "reply"));
  EXPECT_EQ(c->read(5), "reply");
  server.close_write(0);
  EXPECT_TRUE(c->closed_within());
  EXPECT_TRUE(eventually([&] { return relay->connections() == 0; }, wait_limit));
}

TEST(tcp_relay, target_reset_is_passed_to_the_client) {
  target_server server(false);
  auto relay = tcp_relay::start("127.0.0.1", server.port());
  auto c = connect_through(*relay, server);
  {
    // A second relay in front of the first: resetting it looks like a peer that died.
    auto outer = tcp_relay::start("127.0.0.1", relay->port());
    client via(outer->port());
    EXPECT_TRUE(eventually([&] { return server.accepted() == 2; }, wait_limit));
    outer->reset_connections();
    EXPECT_TRUE(via.closed_within());
  }
  EXPECT_TRUE(eventually([&] { return server.ended(1); }, wait_limit));
  EXPECT_TRUE(eventually([&] { return relay->connections() == 1; }, wait_limit));
  ASSERT_TRUE(c->send("ok"));
  EXPECT_TRUE(eventually([&] { return server.received(0) == "ok"; }, wait_limit));
}

TEST(tcp_relay, destruction_with_live_connections_is_clean) {
  target_server server(true);
  auto relay = tcp_relay::start("127.0.0.1", server.port());
  auto c1 = connect_through(*relay, server);
  auto c2 = connect_through(*relay, server);
  auto c3 = connect_through(*relay, server);
  ASSERT_TRUE(c1->send("a"));
  ASSERT_EQ(c1->read(1), "a");
  relay->set_delay(direction::a_to_b, 10min);
  ASSERT_TRUE(c2->send(pattern(500'000)));  // waiting out the delay in the relay
  relay->set_mode(direction::b_to_a, link_mode::cut);
  ASSERT_TRUE(c3->send("b"));
  relay.reset();
  EXPECT_TRUE(c1->closed_within());
  EXPECT_TRUE(c2->closed_within());
  EXPECT_TRUE(c3->closed_within());
  EXPECT_TRUE(eventually([&] { return server.ended(0) && server.ended(1) && server.ended(2); },
                         wait_limit));
}

TEST(tcp_relay, start_fails_on_a_taken_port) {
  target_server server(false);
  auto relay = tcp_relay::start("127.0.0.1", server.port());
  EXPECT_THROW(tcp_relay::start("127.0.0.1", server.port(), relay->port()), std::system_error);
}

// The standalone tool, driven over its stdin like a script would.
class relay_process {
 public:
  explicit relay_process(std::uint16_t target_port) {
    int in[2], out[2];
    EXPECT_EQ(::pipe(in), 0);
    EXPECT_EQ(::pipe(out), 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, in[0], 0);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    for (int fd : {in[0], in[1], out[0], out[1]}) posix_spawn_file_actions_addclose(&actions, fd);
    std::string path = OTPP_RELAY_TOOL, host = "127.0.0.1", port = std::to_string(target_port);
    char* argv[] = {path.data(), host.data(), port.data(), nullptr};
    EXPECT_EQ(posix_spawn(&pid_, path.c_str(), &actions, nullptr, argv, environ), 0);
    posix_spawn_file_actions_destroy(&actions);
    ::close(in[0]);
    ::close(out[1]);
    to_ = in[1];
    from_ = out[0];
  }
  ~relay_process() {
    if (to_ >= 0) ::close(to_);
    ::close(from_);
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }

  // One line of the tool's output, within `bound` ("" if none).
  std::string line(std::chrono::milliseconds bound = wait_limit) {
    auto until = clock_type::now() + bound;
    for (;;) {
      if (auto nl = buffered_.find('\n'); nl != std::string::npos) {
        auto l = buffered_.substr(0, nl);
        buffered_.erase(0, nl + 1);
        return l;
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - clock_type::now());
      if (left.count() <= 0) return "";
      pollfd p{from_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char buf[256];
      ssize_t n = ::read(from_, buf, sizeof buf);
      if (n <= 0) return "";
      buffered_.append(buf, static_cast<std::size_t>(n));
    }
  }
  std::string command(const std::string& cmd) {
    auto text = cmd + "\n";
    EXPECT_EQ(::write(to_, text.data(), text.size()), static_cast<ssize_t>(text.size()));
    return line();
  }
  void close_stdin() {
    ::close(to_);
    to_ = -1;
  }
  // The exit status once the process ended within the bound, or -1.
  int wait_exit() {
    int status = 0;
    if (!eventually([&] { return ::waitpid(pid_, &status, WNOHANG) == pid_; }, wait_limit))
      return -1;
    exited_ = true;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

 private:
  pid_t pid_ = -1;
  int to_ = -1, from_ = -1;
  bool exited_ = false;
  std::string buffered_;
};

TEST(tcp_relay, standalone_tool_over_stdin) {
  target_server server(true);
  relay_process tool(server.port());
  auto first = tool.line();
  ASSERT_EQ(first.rfind("port ", 0), 0u) << first;
  auto port = static_cast<std::uint16_t>(std::stoi(first.substr(5)));
  client c(port);
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.send("hi"));
  EXPECT_EQ(c.read(2), "hi");
  EXPECT_EQ(tool.command("mode a_to_b cut"), "ok");
  ASSERT_TRUE(c.send("held"));
  EXPECT_EQ(c.read(1, quiet_window), "");
  EXPECT_EQ(tool.command("heal"), "ok");
  EXPECT_EQ(c.read(4), "held");
  EXPECT_EQ(tool.command("delay both 20"), "ok");
  EXPECT_EQ(tool.command("mode b_to_a sideways").rfind("error", 0), 0u);
  EXPECT_EQ(tool.command("bogus").rfind("error", 0), 0u);
  EXPECT_EQ(tool.command("stats").rfind("stats connections 1 accepted 1 a_to_b ", 0), 0u);
  EXPECT_EQ(tool.command("refuse on"), "ok");
  EXPECT_EQ(tool.command("reset"), "ok");
  EXPECT_TRUE(c.closed_within());
  EXPECT_EQ(tool.command("quit"), "ok");
  EXPECT_EQ(tool.wait_exit(), 0);
}

TEST(tcp_relay, standalone_tool_quits_at_end_of_stdin) {
  target_server server(false);
  relay_process tool(server.port());
  ASSERT_EQ(tool.line().rfind("port ", 0), 0u);
  tool.close_stdin();
  EXPECT_EQ(tool.wait_exit(), 0);
}

}  // namespace
}  // namespace otpp_test
