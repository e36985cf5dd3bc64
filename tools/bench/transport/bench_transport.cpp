// otpp_bench_transport: authenticated frames over loopback next to the raw TCP floor,
// measured by the same binary in the same run. One JSON object per line:
//   {"name":"transport.frames_64b","unit":"frames/s","value":...,"floor_value":...,"ratio":...}
// ratio = value / floor_value for throughput (higher is better) and value / floor_value for
// latency (lower is better; the target is <= 1.3 for round trips).
// Streams: the sender runs on the sending node's I/O thread (frames_<size>, the figure the
// targets refer to), and again on a thread of its own (frames_<size>_foreign_thread).
// Each transport figure is measured per record protection: hmac-sha256 under the names
// without a mode (transport.frames_64b, ...), the AEAD modes under
// transport.<mode>.frames_64b (e.g. transport.aes_256_gcm.frames_64b).
//
// Options: --quick (smaller counts, for CI smoke runs); --only <part> (seal, stream_64b,
// stream_1k, stream_64k, rtt_64b, rtt_1k: one part, e.g. under perf record); --mode <name>
// (one record protection, e.g. aes-256-gcm); --no-floor (skip the raw TCP runs: for a
// profile of the transport alone); --sender pool|foreign (one kind of stream sender).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "otpp/log.hpp"
#include "otpp/transport/transport.hpp"

using namespace otpp::transport;
using otpp::result;
using clock_type = std::chrono::steady_clock;

namespace {

bool quick = false;
bool no_floor = false;    // --no-floor: transport runs only (profiling; no ratios)
std::string sender_kind;  // --sender pool|foreign: one kind of stream sender (profiling)
std::string only;
std::vector<record_protection> modes = {record_protection::hmac_sha256,
                                        record_protection::aes_256_gcm,
                                        record_protection::chacha20_poly1305};

bool selected(const std::string& part) {
  return only.empty() || only == part;
}

// Figure names: hmac-sha256 keeps the names of the records from before negotiation.
std::string prefix(record_protection mode) {
  if (mode == record_protection::hmac_sha256) return "transport.";
  std::string m(to_string(mode));
  std::replace(m.begin(), m.end(), '-', '_');
  return "transport." + m + ".";
}

void emit(const std::string& name, const char* unit, double value, double floor = 0) {
  if (floor > 0)
    std::printf(
        "{\"name\":\"%s\",\"unit\":\"%s\",\"value\":%.3f,\"floor_value\":%.3f,\"ratio\":%.3f}\n",
        name.c_str(), unit, value, floor, value / floor);
  else
    std::printf("{\"name\":\"%s\",\"unit\":\"%s\",\"value\":%.3f}\n", name.c_str(), unit, value);
  std::fflush(stdout);
}

std::string size_label(std::size_t n) {
  return n >= 1024 ? std::to_string(n / 1024) + "k" : std::to_string(n) + "b";
}

double seconds_since(clock_type::time_point t) {
  return std::chrono::duration<double>(clock_type::now() - t).count();
}

// CPU time of the whole process (every thread: both ends of a stream), in seconds.
double process_cpu_seconds() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// A stream's outcome: wall time and the CPU time all threads spent on it.
struct stream_result {
  double seconds = 0, cpu_seconds = 0;
};

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
}

// ---------------------------------------------------------------------------------------
// Raw TCP floor: blocking sockets, length-prefixed records, no MAC.

struct raw_pair {
  int a = -1, b = -1;
  raw_pair() {
    int l = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(l, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    ::listen(l, 1);
    socklen_t len = sizeof addr;
    ::getsockname(l, reinterpret_cast<sockaddr*>(&addr), &len);
    a = ::socket(AF_INET, SOCK_STREAM, 0);
    ::connect(a, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    b = ::accept(l, nullptr, nullptr);
    ::close(l);
    int one = 1;
    ::setsockopt(a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ::setsockopt(b, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  ~raw_pair() {
    ::close(a);
    ::close(b);
  }
};

bool write_all(int fd, const std::uint8_t* p, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}
bool read_all(int fd, std::uint8_t* p, std::size_t n) {
  while (n > 0) {
    const ssize_t r = ::recv(fd, p, n, 0);
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

// Streams `count` records of `size` bytes; the writer coalesces records into large writes
// (as the transport does) when `batched`, else one send() per record.
stream_result raw_stream(std::size_t size, std::size_t count, bool batched) {
  raw_pair p;
  const double cpu_start = process_cpu_seconds();
  const auto start = clock_type::now();
  std::thread reader([&] {
    std::vector<std::uint8_t> buf(std::size_t{1} << 20);
    std::size_t have = 0, got = 0, sum = 0;
    while (got < count) {
      const ssize_t r = ::recv(p.b, buf.data() + have, buf.size() - have, 0);
      if (r <= 0) return;
      have += static_cast<std::size_t>(r);
      std::size_t off = 0;
      while (have - off >= 4) {
        const std::size_t len = get_u32(buf.data() + off);
        if (have - off < 4 + len) break;
        sum += buf[off + 4];
        off += 4 + len;
        ++got;
      }
      std::memmove(buf.data(), buf.data() + off, have - off);
      have -= off;
    }
    (void)sum;
  });
  std::vector<std::uint8_t> rec(4 + size, 0x5a);
  put_u32(rec.data(), static_cast<std::uint32_t>(size));
  if (batched) {
    std::vector<std::uint8_t> out;
    out.reserve(std::size_t{256} << 10);
    for (std::size_t i = 0; i < count; ++i) {
      out.insert(out.end(), rec.begin(), rec.end());
      if (out.size() >= (std::size_t{64} << 10)) {
        write_all(p.a, out.data(), out.size());
        out.clear();
      }
    }
    write_all(p.a, out.data(), out.size());
  } else {
    for (std::size_t i = 0; i < count; ++i) write_all(p.a, rec.data(), rec.size());
  }
  reader.join();
  return {seconds_since(start), process_cpu_seconds() - cpu_start};
}

std::vector<double> raw_pingpong(std::size_t size, std::size_t rounds) {
  raw_pair p;
  std::thread echo([&] {
    std::vector<std::uint8_t> buf(4 + size);
    for (std::size_t i = 0; i < rounds; ++i) {
      if (!read_all(p.b, buf.data(), buf.size())) return;
      write_all(p.b, buf.data(), buf.size());
    }
  });
  std::vector<std::uint8_t> buf(4 + size, 1);
  put_u32(buf.data(), static_cast<std::uint32_t>(size));
  std::vector<double> us;
  us.reserve(rounds);
  for (std::size_t i = 0; i < rounds; ++i) {
    const auto t = clock_type::now();
    write_all(p.a, buf.data(), buf.size());
    read_all(p.a, buf.data(), buf.size());
    us.push_back(seconds_since(t) * 1e6);
  }
  echo.join();
  return us;
}

// ---------------------------------------------------------------------------------------
// Transport: two endpoints, each on its own io_context run by one thread.

struct transport_pair {
  // One I/O thread per node: tell Asio so (concurrency hint 1 drops cross-thread wakeups).
  asio::io_context io_s{1}, io_c{1};
  asio::executor_work_guard<asio::io_context::executor_type> gs{io_s.get_executor()},
      gc{io_c.get_executor()};
  std::thread ts, tc;
  std::unique_ptr<endpoint> server, client;
  connection_ptr conn;   // client -> server
  connection_ptr sconn;  // server side
  std::function<void(const connection_ptr&, frame_view)> on_server_frame, on_client_frame;

  explicit transport_pair(record_protection mode) {
    config s, c;
    s.node_id = "bench-server";
    c.node_id = "bench-client";
    s.record_protections = c.record_protections = {mode};
    s.secret = c.secret = "benchmark secret";
    s.max_queue_bytes = c.max_queue_bytes = std::size_t{8} << 20;
    connection_events es, ec;
    es.on_frame = [this](const connection_ptr& x, frame_view f) { on_server_frame(x, f); };
    ec.on_frame = [this](const connection_ptr& x, frame_view f) { on_client_frame(x, f); };
    server = std::move(*endpoint::create(io_s, s, es));
    client = std::move(*endpoint::create(io_c, c, ec));
    auto addr = *server->listen({asio::ip::make_address("127.0.0.1"), 0});
    // Named, so that a profile splits by role (perf report --sort comm).
    ts = std::thread([this] {
      pthread_setname_np(pthread_self(), "recv-io");
      io_s.run();
    });
    tc = std::thread([this] {
      pthread_setname_np(pthread_self(), "send-io");
      io_c.run();
    });
    std::promise<result<connection_ptr>> p;
    auto fut = p.get_future();
    client->connect(
        addr, [&](result<connection_ptr> r) { p.set_value(std::move(r)); }, "bench-server");
    conn = fut.get().value();
    while (!(sconn = server->find("bench-client"))) std::this_thread::yield();
  }
  ~transport_pair() {
    conn.reset();
    sconn.reset();
    client->close();
    server->close();
    gs.reset();
    gc.reset();
    io_s.stop();
    io_c.stop();
    ts.join();
    tc.join();
  }
};

// The receiver's frame count, on a cache line of its own (next to the sender's locals it
// would cost the receiver a cache miss per frame).
struct alignas(64) frame_counter {
  std::size_t got = 0;
  std::size_t want = 0;
  std::promise<void> done;
  void operator()() {
    if (++got == want) done.set_value();
  }
};

// `count` frames of `size` bytes, one send() each. The sender is a task on the client node's
// I/O thread (`pool`: as a process on a node's pool sends; the floor's writer is one thread
// too), or a thread of its own outside the node (a foreign thread: three busy threads then
// share the two cores, and every batch crosses from the sender's core to the writer's).
stream_result transport_stream(record_protection mode, std::size_t size, std::size_t count,
                               bool pool) {
  transport_pair t(mode);
  frame_counter counter;
  counter.want = count;
  t.on_server_frame = [&](const connection_ptr&, frame_view) { counter(); };
  t.on_client_frame = [](const connection_ptr&, frame_view) {};
  std::vector<std::uint8_t> payload(size, 0x5a);
  const double cpu_start = process_cpu_seconds();
  const auto start = clock_type::now();
  if (pool) {
    // One task that sends until done, yielding the thread only when the queue is full (as
    // the floor's writer loops on write()): the transport decides how frames are batched.
    std::size_t i = 0;
    std::function<void()> step = [&] {
      while (i < count && t.conn->send(0x20, payload)) ++i;
      if (i < count) asio::post(t.io_c, step);  // mailbox_full: let the writer run
    };
    asio::post(t.io_c, step);
    counter.done.get_future().wait();
  } else {
    pthread_setname_np(pthread_self(), "sender");
    for (std::size_t i = 0; i < count;) {
      if (t.conn->send(0x20, payload))
        ++i;
      else  // mailbox_full: back off instead of spinning on a core the I/O threads need
        std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    counter.done.get_future().wait();
  }
  return {seconds_since(start), process_cpu_seconds() - cpu_start};
}

std::vector<double> transport_pingpong(record_protection mode, std::size_t size,
                                       std::size_t rounds) {
  transport_pair t(mode);
  std::vector<double> us;
  us.reserve(rounds);
  std::vector<std::uint8_t> payload(size, 1);
  std::promise<void> done;
  clock_type::time_point sent;
  // Echo on the server's I/O thread; the next ping leaves from the client's I/O thread.
  t.on_server_frame = [](const connection_ptr& c, frame_view f) {
    (void)c->send(f.kind, f.payload);
  };
  t.on_client_frame = [&](const connection_ptr& c, frame_view) {
    us.push_back(seconds_since(sent) * 1e6);
    if (us.size() == rounds) {
      done.set_value();
      return;
    }
    sent = clock_type::now();
    (void)c->send(0x20, payload);
  };
  sent = clock_type::now();
  (void)t.conn->send(0x20, payload);
  done.get_future().wait();
  return us;
}

// One frame per record: the worst case (a lone frame in its write batch).
double seal_one_ns(record_protection mode, std::size_t size, std::size_t count) {
  session_key k{};
  record_sealer s(k, direction::initiator_to_acceptor, mode);
  std::vector<std::uint8_t> payload(size, 1), out;
  out.reserve(record_sealer::sealed_size(size) * 1024);
  const auto start = clock_type::now();
  for (std::size_t i = 0; i < count; ++i) {
    if ((i & 1023) == 0) out.clear();
    s.seal(0x20, payload, out);
  }
  return seconds_since(start) * 1e9 / static_cast<double>(count);
}

// Per frame, when `batch` frames share a write batch (records of up to record_body_target).
double seal_batched_ns(record_protection mode, std::size_t size, std::size_t batch,
                       std::size_t count) {
  session_key k{};
  record_sealer s(k, direction::initiator_to_acceptor, mode);
  std::vector<std::uint8_t> payload(size, 1);
  record_batch b;
  const auto start = clock_type::now();
  for (std::size_t i = 0; i < count; ++i) {
    b.add_frame(0x20, payload);
    if ((i + 1) % batch == 0) {
      b.seal(s);
      b.clear();
    }
  }
  return seconds_since(start) * 1e9 / static_cast<double>(count);
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--quick") {
      quick = true;
    } else if (arg == "--no-floor") {
      no_floor = true;
    } else if (arg == "--sender" && i + 1 < argc) {
      sender_kind = argv[++i];
      if (sender_kind != "pool" && sender_kind != "foreign") {
        std::fprintf(stderr, "--sender takes pool or foreign\n");
        return 2;
      }
    } else if (arg == "--only" && i + 1 < argc) {
      only = argv[++i];
    } else if (arg == "--mode" && i + 1 < argc) {
      const auto m = parse_record_protection(argv[++i]);
      if (!m) {
        std::fprintf(stderr, "unknown record protection %s\n", argv[i]);
        return 2;
      }
      modes = {*m};
    } else {
      std::fprintf(stderr, "unknown option %s\n", arg.c_str());
      return 2;
    }
  }
  otpp::set_log_level(otpp::log_level::error);
  const std::size_t scale = quick ? 10 : 1;

  if (selected("seal"))
    for (auto mode : modes) {
      emit(prefix(mode) + "seal_64b_alone", "ns/frame", seal_one_ns(mode, 64, 1'000'000 / scale));
      emit(prefix(mode) + "seal_64b_batch256", "ns/frame",
           seal_batched_ns(mode, 64, 256, 4'000'000 / scale));
    }

  struct stream_case {
    std::size_t size, count;
  };
  // Floor and transport runs alternate in slices, so both see the same background load on
  // a shared machine; the figures are over all slices.
  constexpr int slices = 4;
  for (auto c :
       {stream_case{64, 8'000'000}, stream_case{1024, 1'600'000}, stream_case{65536, 40'000}}) {
    const std::string l = size_label(c.size);
    if (!selected("stream_" + l)) continue;
    const std::size_t n = c.count / scale / slices;
    stream_result floor, unbatched;
    std::vector<stream_result> pool(modes.size()), foreign(modes.size());
    auto add = [](stream_result& sum, const stream_result& r) {
      sum.seconds += r.seconds;
      sum.cpu_seconds += r.cpu_seconds;
    };
    for (int i = 0; i < slices; ++i) {
      if (!no_floor) add(floor, raw_stream(c.size, n, true));
      if (c.size == 64 && !no_floor) add(unbatched, raw_stream(c.size, n / 4, false));
      for (std::size_t m = 0; m < modes.size(); ++m) {
        if (sender_kind != "foreign") add(pool[m], transport_stream(modes[m], c.size, n, true));
        if (sender_kind != "pool") add(foreign[m], transport_stream(modes[m], c.size, n, false));
      }
    }
    const double total = static_cast<double>(n * slices);
    const double floor_rate = no_floor ? 0.0 : total / floor.seconds;
    // CPU per frame (ns, both ends together): steadier than throughput on a shared machine,
    // where the floor's rate moves with the neighbours' load.
    const double floor_cpu = no_floor ? 0.0 : floor.cpu_seconds * 1e9 / total;
    if (!no_floor) {
      emit("transport.floor.stream_" + l, "frames/s", floor_rate);
      emit("transport.floor.cpu_per_frame_" + l, "ns", floor_cpu);
    }
    if (unbatched.seconds > 0)
      emit("transport.floor.stream_unbatched_" + l, "frames/s",
           static_cast<double>(n / 4 * slices) / unbatched.seconds);
    for (std::size_t m = 0; m < modes.size(); ++m) {
      if (pool[m].seconds > 0) {
        const double value = total / pool[m].seconds;
        emit(prefix(modes[m]) + "frames_" + l, "frames/s", value, floor_rate);
        emit(prefix(modes[m]) + "mbps_" + l, "MB/s", value * static_cast<double>(c.size) / 1e6,
             floor_rate * static_cast<double>(c.size) / 1e6);
        emit(prefix(modes[m]) + "cpu_per_frame_" + l, "ns", pool[m].cpu_seconds * 1e9 / total,
             floor_cpu);
      }
      if (foreign[m].seconds > 0)
        emit(prefix(modes[m]) + "frames_" + l + "_foreign_thread", "frames/s",
             total / foreign[m].seconds, floor_rate);
    }
  }

  const std::size_t rounds = 20'000 / scale / slices;
  for (std::size_t size : {std::size_t{64}, std::size_t{1024}}) {
    const std::string l = size_label(size);
    if (!selected("rtt_" + l)) continue;
    std::vector<double> raw;
    std::vector<std::vector<double>> tr(modes.size());
    for (int i = 0; i < slices; ++i) {
      const auto r = raw_pingpong(size, rounds);
      raw.insert(raw.end(), r.begin(), r.end());
      for (std::size_t m = 0; m < modes.size(); ++m) {
        const auto t = transport_pingpong(modes[m], size, rounds);
        tr[m].insert(tr[m].end(), t.begin(), t.end());
      }
    }
    const double raw_p50 = percentile(raw, 0.5), raw_p99 = percentile(raw, 0.99);
    double raw_sum = 0;
    for (double v : raw) raw_sum += v;
    emit("transport.floor.rtt_" + l + ".p50", "us", raw_p50);
    emit("transport.floor.rtt_" + l + ".p99", "us", raw_p99);
    for (std::size_t m = 0; m < modes.size(); ++m) {
      const double p50 = percentile(tr[m], 0.5), p99 = percentile(tr[m], 0.99);
      double sum = 0;
      for (double v : tr[m]) sum += v;
      const std::string name = prefix(modes[m]);
      emit(name + "rtt_" + l + ".p50", "us", p50, raw_p50);
      emit(name + "rtt_" + l + ".p99", "us", p99, raw_p99);
      emit(name + "roundtrips_" + l, "rt/s", 1e6 * static_cast<double>(tr[m].size()) / sum,
           1e6 * static_cast<double>(raw.size()) / raw_sum);
    }
  }
  return 0;
}
