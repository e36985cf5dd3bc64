// otpp_bench_tcp_floor: the raw TCP floor of the "remote" benchmark group. Two OS
// processes (this one and a forked child, like two nodes) on 127.0.0.1, TCP_NODELAY on both
// ends, blocking sockets, no framing beyond fixed sizes / a 4-byte length: what a remote call
// or cast can at best cost on this machine. One JSON object per line, marked "peer":"tcp" so
// that run.sh/merge.sh pass it through untouched:
//   {"name":"remote.tcp_floor.rtt_small.p50","unit":"us","value":21.5,"peer":"tcp"}
//
// Names mirror the remote workloads (tools/bench/README.md), so run.sh can divide:
//   remote.call_<X>.<m>        <->  remote.tcp_floor.rtt_<X>.<m>      (X: small 1k 64k c16 c64)
//   remote.cast_<X>.throughput <->  remote.tcp_floor.stream_<X>.throughput  (X: small 1k 64k)
// rtt_<size>: one message in flight; the child reads the whole message, then writes it back.
// rtt_c16/c64: 16/64 small messages in flight on the one connection (closed loop: a new one
// for each echo), latency from a send timestamp carried in the message.
// stream_<size>: one-way, one send() per message (4-byte length + body), the child parses
// the frames and answers one byte after the last; _batched: the same frames in 64 KiB writes.
//
//   otpp_bench_tcp_floor [--quick] [NAME_PREFIX...]
// --quick divides the counts by 10; NAME_PREFIX (e.g. remote.tcp_floor.rtt_small) runs only
// the measurements whose names start with one of the prefixes. Bounded: every child has
// alarm(120) and dies with its parent (PR_SET_PDEATHSIG); the parent has alarm(300).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;

bool quick = false;
std::vector<std::string> prefixes;

std::uint64_t now_ns() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now().time_since_epoch())
          .count());
}

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "ERROR otpp_bench_tcp_floor: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

void emit(const std::string& name, const char* unit, double value) {
  std::printf("{\"name\":\"%s\",\"unit\":\"%s\",\"value\":%.3f,\"peer\":\"tcp\"}\n", name.c_str(),
              unit, value);
  std::fflush(stdout);
}

bool wanted(const std::string& name) {
  if (prefixes.empty()) return true;
  for (const auto& p : prefixes)
    if (name.rfind(p, 0) == 0 || p.rfind(name, 0) == 0) return true;
  return false;
}

std::size_t n(std::size_t count) {
  return quick ? std::max<std::size_t>(1, count / 10) : count;
}

// nearest-rank percentile, ns -> us
double pct_us(std::vector<std::uint64_t>& v, double p) {
  std::sort(v.begin(), v.end());
  const auto size = static_cast<double>(v.size());
  auto k = static_cast<std::size_t>(std::max(1.0, std::min(size, std::ceil(size * p / 100.0))));
  return static_cast<double>(v[k - 1]) / 1000.0;
}

void write_all(int fd, const char* p, std::size_t len) {
  while (len > 0) {
    const ssize_t w = ::send(fd, p, len, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      die("send");
    }
    p += w;
    len -= static_cast<std::size_t>(w);
  }
}

// false on EOF before anything was read
bool read_all(int fd, char* p, std::size_t len) {
  std::size_t got = 0;
  while (got < len) {
    const ssize_t r = ::recv(fd, p + got, len - got, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      die("recv");
    }
    if (r == 0) {
      if (got == 0) return false;
      errno = EPIPE;
      die("recv (short message)");
    }
    got += static_cast<std::size_t>(r);
  }
  return true;
}

void nodelay(int fd) {
  int one = 1;
  if (::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) die("TCP_NODELAY");
}

// A connected pair over 127.0.0.1 (listen on an ephemeral port, connect, accept).
void tcp_pair(int& client, int& server) {
  const int l = ::socket(AF_INET, SOCK_STREAM, 0);
  if (l < 0) die("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(l, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) die("bind");
  if (::listen(l, 1) != 0) die("listen");
  socklen_t len = sizeof addr;
  if (::getsockname(l, reinterpret_cast<sockaddr*>(&addr), &len) != 0) die("getsockname");
  client = ::socket(AF_INET, SOCK_STREAM, 0);
  if (client < 0) die("socket");
  if (::connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) die("connect");
  server = ::accept(l, nullptr, nullptr);
  if (server < 0) die("accept");
  ::close(l);
  nodelay(client);
  nodelay(server);
}

// Runs `serve(fd)` in a forked child on one end of a fresh pair; returns the other end.
template <typename F>
int with_child(pid_t& child, F serve) {
  int client = -1, server = -1;
  tcp_pair(client, server);
  std::fflush(stdout);
  child = ::fork();
  if (child < 0) die("fork");
  if (child == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::alarm(120);
    ::close(client);
    serve(server);
    ::_exit(0);
  }
  ::close(server);
  return client;
}

void reap(int fd, pid_t child) {
  ::close(fd);  // the child sees EOF and exits
  int st = 0;
  while (::waitpid(child, &st, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    std::fprintf(stderr, "ERROR otpp_bench_tcp_floor: child exited abnormally (%d)\n", st);
    std::exit(1);
  }
}

// ---------------------------------------------------------------------------------------
// Request/echo. The child reads whole messages of `size` bytes and writes back every whole
// message it has (one write for all of them); the client keeps `window` in flight.
void echo_server(int fd, std::size_t size) {
  std::vector<char> buf(std::max<std::size_t>(size * 64, std::size_t{1} << 16));
  std::size_t have = 0;
  for (;;) {
    const ssize_t r = ::recv(fd, buf.data() + have, buf.size() - have, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return;
    have += static_cast<std::size_t>(r);
    const std::size_t whole = have / size * size;
    if (whole > 0) {
      write_all(fd, buf.data(), whole);
      std::memmove(buf.data(), buf.data() + whole, have - whole);
      have -= whole;
    }
  }
}

struct rtt_result {
  std::vector<std::uint64_t> lat;  // ns per message
  double seconds = 0;
};

rtt_result rtt_round(int fd, std::size_t size, std::size_t count, std::size_t window) {
  rtt_result res;
  res.lat.reserve(count);
  std::vector<char> out(size * window), in(std::max<std::size_t>(size * window, 1 << 16));
  const std::uint64_t t0 = now_ns();
  if (window == 1) {
    for (std::size_t i = 0; i < count; ++i) {
      const std::uint64_t s = now_ns();
      write_all(fd, out.data(), size);
      if (!read_all(fd, in.data(), size)) die("echo closed");
      res.lat.push_back(now_ns() - s);
    }
  } else {
    std::size_t sent = 0, done = 0, have = 0;
    auto stamp_and_send = [&](std::size_t k) {
      const std::uint64_t s = now_ns();
      for (std::size_t i = 0; i < k; ++i) std::memcpy(out.data() + i * size, &s, sizeof s);
      write_all(fd, out.data(), k * size);
      sent += k;
    };
    stamp_and_send(std::min(window, count));
    while (done < count) {
      const ssize_t r = ::recv(fd, in.data() + have, in.size() - have, 0);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) die("echo closed");
      have += static_cast<std::size_t>(r);
      const std::size_t whole = have / size;
      const std::uint64_t t = now_ns();
      for (std::size_t i = 0; i < whole; ++i) {
        std::uint64_t s;
        std::memcpy(&s, in.data() + i * size, sizeof s);
        res.lat.push_back(t - s);
      }
      done += whole;
      std::memmove(in.data(), in.data() + whole * size, have - whole * size);
      have -= whole * size;
      const std::size_t more = std::min(whole, count - sent);
      if (more > 0) stamp_and_send(more);
    }
  }
  res.seconds = static_cast<double>(now_ns() - t0) / 1e9;
  return res;
}

void rtt(const std::string& label, std::size_t size, std::size_t count, std::size_t window) {
  const std::string name = "remote.tcp_floor.rtt_" + label;
  if (!wanted(name)) return;
  pid_t child = 0;
  const int fd = with_child(child, [size](int s) { echo_server(s, size); });
  rtt_round(fd, size, std::max<std::size_t>(1, count / 10), window);  // warm-up
  auto r = rtt_round(fd, size, count, window);
  reap(fd, child);
  emit(name + ".p50", "us", pct_us(r.lat, 50));
  emit(name + ".p99", "us", pct_us(r.lat, 99));
  emit(name + ".throughput", "rt/s", static_cast<double>(count) / r.seconds);
}

// ---------------------------------------------------------------------------------------
// One-way stream of length-prefixed frames. Each round starts with an 8-byte frame count;
// the child parses the frames and answers one byte after the last of the round.
void sink_server(int fd) {
  std::vector<char> buf(std::size_t{1} << 20);
  std::uint64_t count = 0;
  while (read_all(fd, reinterpret_cast<char*>(&count), sizeof count)) {
    std::size_t have = 0;
    std::uint64_t frames = 0;
    while (frames < count) {
      const ssize_t r = ::recv(fd, buf.data() + have, buf.size() - have, 0);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return;
      have += static_cast<std::size_t>(r);
      std::size_t off = 0;
      while (have - off >= 4) {
        std::uint32_t len;
        std::memcpy(&len, buf.data() + off, 4);
        if (have - off < 4 + std::size_t{len}) break;
        off += 4 + len;
        ++frames;
      }
      std::memmove(buf.data(), buf.data() + off, have - off);
      have -= off;
    }
    if (have != 0) {
      std::fprintf(stderr, "ERROR otpp_bench_tcp_floor: sink got %zu bytes too many\n", have);
      std::exit(1);
    }
    const char ack = 1;
    write_all(fd, &ack, 1);
  }
}

// msg/s from the round header until the ack of the last frame
double stream_round(int fd, std::size_t size, std::size_t count, bool batched) {
  const std::size_t frame = 4 + size;
  const std::size_t per_write = batched ? std::max<std::size_t>(1, (64 * 1024) / frame) : 1;
  std::vector<char> out(frame * per_write);
  for (std::size_t i = 0; i < per_write; ++i) {
    const auto len = static_cast<std::uint32_t>(size);
    std::memcpy(out.data() + i * frame, &len, 4);
  }
  const std::uint64_t t0 = now_ns();
  const std::uint64_t header = count;
  write_all(fd, reinterpret_cast<const char*>(&header), sizeof header);
  for (std::size_t sent = 0; sent < count;) {
    const std::size_t k = std::min(per_write, count - sent);
    write_all(fd, out.data(), k * frame);
    sent += k;
  }
  char ack = 0;
  if (!read_all(fd, &ack, 1)) die("sink closed");
  return static_cast<double>(count) * 1e9 / static_cast<double>(now_ns() - t0);
}

void stream(const std::string& label, std::size_t size, std::size_t count, bool batched) {
  const std::string name =
      "remote.tcp_floor.stream_" + label + (batched ? "_batched" : "") + ".throughput";
  if (!wanted(name)) return;
  pid_t child = 0;
  const int fd = with_child(child, [](int s) { sink_server(s); });
  stream_round(fd, size, std::max<std::size_t>(1, count / 10), batched);  // warm-up
  const double rate = stream_round(fd, size, count, batched);
  reap(fd, child);
  emit(name, "msg/s", rate);
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick")
      quick = true;
    else if (a == "-h" || a == "--help") {
      std::printf("usage: %s [--quick] [NAME_PREFIX...]\n", argv[0]);
      return 0;
    } else
      prefixes.push_back(a);
  }
  ::alarm(300);
  rtt("small", 64, n(50'000), 1);
  rtt("1k", 1024, n(20'000), 1);
  rtt("64k", 65536, n(3'000), 1);
  rtt("c16", 64, n(32'000), 16);
  rtt("c64", 64, n(32'000), 64);
  stream("small", 64, n(1'000'000), false);
  stream("1k", 1024, n(200'000), false);
  stream("64k", 65536, n(20'000), false);
  stream("small", 64, n(1'000'000), true);
  stream("1k", 1024, n(200'000), true);
  return 0;
}
