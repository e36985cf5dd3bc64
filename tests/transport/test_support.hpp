// Test helpers for otpp::transport: an io_context run by threads, an event recorder, a raw
// peer that speaks the protocol by hand through the public codec functions, and
// certificates generated with the OpenSSL C API.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "otpp/transport/transport.hpp"

namespace otpp::transport::test {

using namespace std::chrono_literals;
inline constexpr auto wait_limit = 30s;  // generous: a limit, never a pacing device

struct io_runner {
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> guard{io.get_executor()};
  std::vector<std::thread> threads;
  explicit io_runner(int n = 2) {
    for (int i = 0; i < n; ++i) threads.emplace_back([this] { io.run(); });
  }
  ~io_runner() { stop(); }
  void stop() {
    guard.reset();
    io.stop();
    for (auto& t : threads)
      if (t.joinable()) t.join();
  }
};

// Records endpoint events; wait() blocks on a condition variable until a predicate holds.
struct recorder {
  struct frame_copy {
    std::uint8_t kind;
    std::vector<std::uint8_t> payload;
  };
  std::mutex mu;
  std::condition_variable cv;
  std::vector<connection_ptr> ups;
  std::vector<frame_copy> frames;
  std::vector<failure> downs;
  std::vector<failure> rejected;
  std::function<void(const connection_ptr&, frame_view)> frame_hook;  // replaces recording

  connection_events events() {
    connection_events e;
    e.on_up = [this](const connection_ptr& c) {
      std::lock_guard l(mu);
      ups.push_back(c);
      cv.notify_all();
    };
    e.on_frame = [this](const connection_ptr& c, frame_view f) {
      if (frame_hook) {
        frame_hook(c, f);
        return;
      }
      std::lock_guard l(mu);
      frames.push_back({f.kind, {f.payload.begin(), f.payload.end()}});
      cv.notify_all();
    };
    e.on_down = [this](const connection_ptr&, const failure& f) {
      std::lock_guard l(mu);
      downs.push_back(f);
      cv.notify_all();
    };
    e.on_rejected = [this](const failure& f, const std::string&) {
      std::lock_guard l(mu);
      rejected.push_back(f);
      cv.notify_all();
    };
    return e;
  }
  // Copies taken under the lock: what a test body reads while I/O threads may still record.
  std::vector<frame_copy> locked_frames() {
    std::lock_guard l(mu);
    return frames;
  }
  std::vector<failure> locked_downs() {
    std::lock_guard l(mu);
    return downs;
  }
  std::vector<failure> locked_rejected() {
    std::lock_guard l(mu);
    return rejected;
  }
  std::vector<connection_ptr> locked_ups() {
    std::lock_guard l(mu);
    return ups;
  }
  template <class Pred>
  bool wait(Pred p, std::chrono::milliseconds limit = wait_limit) {
    std::unique_lock l(mu);
    return cv.wait_for(l, limit, [&] { return p(*this); });
  }
  void notify() {
    std::lock_guard l(mu);
    cv.notify_all();
  }
};

// A one-shot value set from a callback, awaited with a timeout.
template <class T>
struct waiter {
  std::mutex mu;
  std::condition_variable cv;
  std::optional<T> value;
  void set(T v) {
    std::lock_guard l(mu);
    value.emplace(std::move(v));
    cv.notify_all();
  }
  std::optional<T> get(std::chrono::milliseconds limit = wait_limit) {
    std::unique_lock l(mu);
    cv.wait_for(l, limit, [&] { return value.has_value(); });
    return value;
  }
};

inline config test_config(std::string id, std::string secret = "test-secret-0123456789") {
  config c;
  c.node_id = std::move(id);
  c.secret = std::move(secret);
  c.creation = 1;
  c.max_frame_size = 1 << 20;
  c.heartbeat_interval = 200ms;
  c.silence_timeout = 10s;
  return c;
}

inline asio::ip::tcp::endpoint loopback(std::uint16_t port = 0) {
  return {asio::ip::make_address("127.0.0.1"), port};
}

// Connects `client` to `server_port` and waits for the result.
inline result<connection_ptr> connect_sync(endpoint& client, const asio::ip::tcp::endpoint& to,
                                           std::string expected = {}) {
  auto w = std::make_shared<waiter<result<connection_ptr>>>();
  client.connect(
      to, [w](result<connection_ptr> r) { w->set(std::move(r)); }, std::move(expected));
  auto r = w->get();
  if (!r) return failure(errc::timeout, "connect did not complete");
  return std::move(*r);
}

// A server and a client endpoint on one io_runner, the server listening on `addr`; both closed
// at the end.
struct endpoint_pair {
  io_runner run;
  recorder es, ec;
  std::unique_ptr<endpoint> server, client;
  asio::ip::tcp::endpoint addr;
  endpoint_pair(const config& s, const config& c) {
    auto a = endpoint::create(run.io, s, es.events());
    auto b = endpoint::create(run.io, c, ec.events());
    EXPECT_TRUE(a) << a.fail().message();
    EXPECT_TRUE(b) << b.fail().message();
    server = std::move(*a);
    client = std::move(*b);
    addr = *server->listen(loopback());
  }
  ~endpoint_pair() {
    client->close();
    server->close();
    run.stop();
  }
};

// ---------------------------------------------------------------------------------------
// Raw peer: a blocking POSIX socket with poll() timeouts speaking the protocol by hand.

class raw_peer {
 public:
  explicit raw_peer(int fd = -1) : fd_(fd) {}
  raw_peer(raw_peer&& o) noexcept { *this = std::move(o); }
  raw_peer& operator=(raw_peer&& o) noexcept {
    std::swap(fd_, o.fd_);
    std::swap(sealer_, o.sealer_);
    std::swap(opener_, o.opener_);
    std::swap(buf_, o.buf_);
    std::swap(protection, o.protection);
    std::swap(peer_id, o.peer_id);
    return *this;
  }
  ~raw_peer() { close(); }

  // source: local IP to bind (e.g. "127.0.0.2", another loopback address); rcvbuf: a
  // receive buffer size set before connecting (0: the default).
  static raw_peer connect_to(std::uint16_t port, const char* source = nullptr, int rcvbuf = 0) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (rcvbuf > 0) ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    if (source != nullptr) {
      sockaddr_in local{};
      local.sin_family = AF_INET;
      ::inet_pton(AF_INET, source, &local.sin_addr);
      if (::bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0) {
        ::close(fd);
        return raw_peer(-1);
      }
    }
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(fd);
      return raw_peer(-1);
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return raw_peer(fd);
  }

  bool valid() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  void shutdown_write() { ::shutdown(fd_, SHUT_WR); }

  bool write_all(bytes_view data) {
    std::size_t off = 0;
    while (off < data.size()) {
      const ssize_t n = ::send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<std::size_t>(n);
    }
    return true;
  }
  // Reads into the internal buffer; false on timeout, error or EOF.
  bool fill(std::chrono::milliseconds limit = wait_limit) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(limit.count())) <= 0) return false;
    std::uint8_t tmp[65536];
    const ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n <= 0) return false;
    buf_.insert(buf_.end(), tmp, tmp + n);
    return true;
  }
  // True when the peer closed the connection (EOF or reset) within the limit; data that
  // arrives first is kept in the buffer.
  bool wait_closed(std::chrono::milliseconds limit = wait_limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 100) < 0) return false;
      if (p.revents == 0) continue;
      std::uint8_t tmp[65536];
      const ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
      if (n <= 0) return true;
      buf_.insert(buf_.end(), tmp, tmp + n);
    }
    return false;
  }

  std::optional<recorder::frame_copy> read_plain() {
    for (;;) {
      auto step = decode_plain_frame(buf_);
      if (step.error) return std::nullopt;
      if (step.consumed) {
        recorder::frame_copy f{step.frame.kind,
                               {step.frame.payload.begin(), step.frame.payload.end()}};
        buf_.erase(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(step.consumed));
        return f;
      }
      if (!fill()) return std::nullopt;
    }
  }
  // Reads one frame out of the peer's records (heartbeats skipped); nullopt on
  // error/timeout. The frames of a record are handed out one by one.
  std::optional<recorder::frame_copy> read_sealed(bool skip_heartbeats = true) {
    for (;;) {
      while (!unread_.empty()) {
        recorder::frame_copy f = std::move(unread_.front());
        unread_.pop_front();
        if (skip_heartbeats && f.kind == kind::heartbeat) continue;
        return f;
      }
      // As it was on the wire (an encrypted record is decrypted where it lies).
      const std::vector<std::uint8_t> wire = buf_;
      auto step = opener_.open(buf_);
      if (step.error) return std::nullopt;
      if (step.consumed) {
        frame_view fv;
        for (frame_reader r(step.body); r.next(fv);)
          unread_.push_back({fv.kind, {fv.payload.begin(), fv.payload.end()}});
        raw_last_.assign(wire.begin(), wire.begin() + static_cast<std::ptrdiff_t>(step.consumed));
        buf_.erase(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(step.consumed));
        continue;
      }
      if (!fill()) return std::nullopt;
    }
  }
  // The last whole record read_sealed took off the wire.
  const std::vector<std::uint8_t>& last_raw_record() const { return raw_last_; }

  // One record holding one frame, sealed with the next sequence number.
  std::vector<std::uint8_t> seal(std::uint8_t k, bytes_view payload) {
    std::vector<std::uint8_t> out;
    sealer_.seal(k, payload, out);
    return out;
  }
  // One record holding several frames.
  std::vector<std::uint8_t> seal_record(std::span<const frame_view> frames) {
    std::vector<std::uint8_t> out;
    sealer_.seal(frames, out);
    return out;
  }
  // A record whose body is given verbatim (which need not parse as frames), properly MACed.
  std::vector<std::uint8_t> seal_raw_body(bytes_view body) {
    std::vector<std::uint8_t> out(record_overhead + body.size());
    if (!body.empty()) std::memcpy(out.data() + record_header_size, body.data(), body.size());
    sealer_.seal_in_place(out.data(), body.size());
    return out;
  }

  struct hs_options {
    std::string id = "raw";
    std::string secret = "test-secret-0123456789";
    std::uint32_t version = protocol_version;
    std::uint32_t creation = 7;
    // Offered in HELLO (empty: the four-field HELLO of a node without negotiation).
    std::vector<record_protection> protections{record_protection::hmac_sha256};
  };
  struct hello_exchange {
    std::vector<std::uint8_t> mine;    // our HELLO payload
    std::vector<std::uint8_t> theirs;  // the peer's HELLO payload
    hello_message peer;
  };
  // Both sides send HELLO at once: send ours, read and parse theirs.
  result<hello_exchange> exchange_hello(const hs_options& o) {
    hello_message h;
    h.version = o.version;
    h.node_id = o.id;
    h.creation = o.creation;
    h.protections = o.protections;
    random_bytes(h.challenge);
    hello_exchange x;
    x.mine = encode_hello(h);
    std::vector<std::uint8_t> out;
    append_plain_frame(kind::hello, x.mine, out);
    if (!write_all(out)) return failure(errc::connection_closed, "write hello");
    auto theirs = read_plain();
    if (!theirs || theirs->kind != kind::hello) return failure(errc::connection_closed, "hello");
    auto peer = parse_hello(theirs->payload);
    if (!peer) return peer.fail();
    x.theirs.assign(theirs->payload.begin(), theirs->payload.end());
    x.peer = std::move(*peer);
    const std::vector<record_protection> offered =
        o.protections.empty() ? std::vector{record_protection::hmac_sha256} : o.protections;
    const auto agreed = negotiate_protection(offered, x.peer.protections);
    if (!agreed) return failure(errc::protection_mismatch, "no common record protection");
    protection = *agreed;
    return x;
  }

  // Runs the initiator side of the handshake. Returns the accept status (0: accepted),
  // or failure if the exchange broke.
  result<std::uint32_t> handshake_as_initiator(const hs_options& o) {
    auto hx = exchange_hello(o);
    if (!hx) return hx.fail();
    const auto& mine = hx->mine;
    peer_id = hx->peer.node_id;
    const digest t = transcript_hash(mine, hx->theirs);
    std::vector<std::uint8_t> out;
    append_plain_frame(kind::proof, encode_proof(initiator_proof(as_bytes(o.secret), t)), out);
    if (!write_all(out)) return failure(errc::connection_closed, "write proof");
    auto acc = read_plain();
    if (!acc || acc->kind != kind::accept) return failure(errc::connection_closed, "accept");
    auto a = parse_accept(acc->payload);
    if (!a) return a.fail();
    if (a->status != 0) return a->status;
    if (!constant_time_equal(a->proof, acceptor_proof(as_bytes(o.secret), t)))
      return failure(errc::not_authorised, "acceptor proof");
    const auto keys = derive_session_keys(as_bytes(o.secret), t, protection);
    sealer_ =
        record_sealer(keys.initiator_to_acceptor, direction::initiator_to_acceptor, protection);
    opener_ = record_opener(keys.acceptor_to_initiator, direction::acceptor_to_initiator, 1u << 30,
                            protection);
    return 0u;
  }

  // Runs the acceptor side (for an endpoint that connected to us).
  result<void> handshake_as_acceptor(const hs_options& o) {
    auto hx = exchange_hello(o);
    if (!hx) return hx.fail();
    const auto& mine = hx->mine;
    const digest t = transcript_hash(hx->theirs, mine);
    auto pr = read_plain();
    if (!pr || pr->kind != kind::proof) return failure(errc::connection_closed, "proof");
    auto p = parse_proof(pr->payload);
    if (!p) return p.fail();
    if (!constant_time_equal(*p, initiator_proof(as_bytes(o.secret), t)))
      return failure(errc::not_authorised);
    accept_message a;
    a.proof = acceptor_proof(as_bytes(o.secret), t);
    std::vector<std::uint8_t> out;
    append_plain_frame(kind::accept, encode_accept(a), out);
    if (!write_all(out)) return failure(errc::connection_closed, "write accept");
    const auto keys = derive_session_keys(as_bytes(o.secret), t, protection);
    sealer_ =
        record_sealer(keys.acceptor_to_initiator, direction::acceptor_to_initiator, protection);
    opener_ = record_opener(keys.initiator_to_acceptor, direction::initiator_to_acceptor, 1u << 30,
                            protection);
    return {};
  }

  std::string peer_id;
  record_protection protection = record_protection::hmac_sha256;  // agreed in exchange_hello

 private:
  int fd_ = -1;
  record_sealer sealer_;
  record_opener opener_;
  std::deque<recorder::frame_copy> unread_;
  std::vector<std::uint8_t> buf_;
  std::vector<std::uint8_t> raw_last_;
};

// A listening POSIX socket accepting one raw peer.
class raw_listener {
 public:
  raw_listener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(fd_, 4);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
  }
  ~raw_listener() { ::close(fd_); }
  std::uint16_t port() const { return port_; }
  raw_peer accept_one(std::chrono::milliseconds limit = wait_limit) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(limit.count())) <= 0) return raw_peer(-1);
    return raw_peer(::accept(fd_, nullptr, nullptr));
  }

 private:
  int fd_ = -1;
  std::uint16_t port_ = 0;
};

// A fresh temporary directory removed at scope exit.
struct temp_dir {
  std::filesystem::path path;
  temp_dir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "otpp-transport-XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

}  // namespace otpp::transport::test
