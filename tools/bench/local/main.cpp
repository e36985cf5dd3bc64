// otpp_bench_local: one-node workloads, the same as tools/bench/erlang/otpp_peer.erl (same
// counts, same timing boundaries, same result names and units; see tools/bench/README.md).
//
//   otpp_bench_local [--threads N] [--idle-spin-us US] [--call-timeout-ms MS] [--no-fork]
//                    [WORKLOAD-PREFIX...]
//   otpp_bench_local list          # prints the workload ids
//
// stdout: one JSON object per result line; everything else goes to stderr.  Like the Erlang
// side (one fresh VM per workload), every workload runs in a fresh child process with its own
// node, so none inherits another's heap, threads or dead processes, and a crash or hang costs
// one figure.  Every wait is bounded; a child that overruns is killed by an alarm.
#include <malloc.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <future>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include <asio/awaitable.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/use_future.hpp>

#include "otpp/runtime.hpp"

namespace {

using clk = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr auto wait_bound = 120s;  // upper bound for any single wait
// Timeout of every call, as gen_server:call(_, _, ?WAIT); --call-timeout-ms changes it for
// diagnosis (-1: infinity, no timer armed per call).
std::chrono::milliseconds call_timeout{120000};
constexpr unsigned child_alarm_s = 300;  // a workload child is killed after this

std::size_t g_threads = 0;
std::chrono::microseconds g_idle_spin{0};  // node_options::idle_spin (try 50 on AMD EPYC)  // node
                                           // threads; 0: the node's default (hardware threads)

// ------------------------------------------------------------------ output
void emit(std::string_view name, std::string_view unit, double value,
          const std::string& extra = {}) {
  std::printf("{\"name\":\"%.*s\",\"unit\":\"%.*s\",\"value\":%.3f%s}\n",
              static_cast<int>(name.size()), name.data(), static_cast<int>(unit.size()),
              unit.data(), value, extra.c_str());
  std::fflush(stdout);
}

[[noreturn]] void die(const std::string& what) {
  std::printf("ERROR %s\n", what.c_str());
  std::fflush(stdout);
  std::fprintf(stderr, "ERROR %s\n", what.c_str());
  std::_Exit(1);
}

std::int64_t ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(clk::now().time_since_epoch())
      .count();
}

double rate(std::int64_t count, std::int64_t t0, std::int64_t t1) {
  return static_cast<double>(count) * 1.0e9 /
         static_cast<double>(std::max<std::int64_t>(1, t1 - t0));
}

template <class T>
T await(std::future<T>& f, const std::string& what) {
  if (f.wait_for(wait_bound) != std::future_status::ready) die("timeout: " + what);
  return f.get();
}

template <class M>
typename M::reply call_sync(otpp::node& n, const otpp::pid& to, M msg, const std::string& what) {
  auto f = otpp::call(n, to, std::move(msg), call_timeout, asio::use_future);
  auto r = await(f, what);
  if (!r) die(what + ": " + r.fail().message());
  return std::move(*r);
}

// Completion of a round, reported to the driving (main) thread. The driver re-arms it before
// the message that starts the round, so the mailbox hand-off orders the two.
struct round_signal {
  std::promise<std::int64_t> done;
  std::future<std::int64_t> arm() {
    done = std::promise<std::int64_t>();
    return done.get_future();
  }
};

otpp::node_options options() {
  return otpp::node_options{.name = "bench", .threads = g_threads, .idle_spin = g_idle_spin};
}

// ------------------------------------------------------------------ messages
struct add {
  static constexpr std::string_view tag = "add";
  std::int64_t n = 0;
  MSGPACK_DEFINE_MAP(n)
};
struct lookup {
  static constexpr std::string_view tag = "lookup";
  using reply = std::int64_t;
  std::int64_t key = 0;
  MSGPACK_DEFINE_MAP(key)
};
struct watch {  // arm: report when `target` casts have been handled from now on
  static constexpr std::string_view tag = "watch";
  using reply = bool;
  std::int64_t target = 0;
  MSGPACK_DEFINE_MAP(target)
};
struct go {
  static constexpr std::string_view tag = "go";
  OTPP_NO_FIELDS()
};
struct run_calls {
  static constexpr std::string_view tag = "run_calls";
  std::int64_t warmup = 0;
  std::int64_t n = 0;
  MSGPACK_DEFINE_MAP(warmup, n)
};
struct start_pings {
  static constexpr std::string_view tag = "start_pings";
  std::int64_t n = 0;
  MSGPACK_DEFINE_MAP(n)
};
struct ping {
  static constexpr std::string_view tag = "ping";
  otpp::pid from;
  MSGPACK_DEFINE_MAP(from)
};
struct pong {
  static constexpr std::string_view tag = "pong";
  OTPP_NO_FIELDS()
};
struct stop_msg {
  static constexpr std::string_view tag = "stop";
  OTPP_NO_FIELDS()
};
struct next_msg {
  static constexpr std::string_view tag = "next";
  otpp::pid next;
  MSGPACK_DEFINE_MAP(next)
};
struct token {
  static constexpr std::string_view tag = "token";
  std::int64_t k = 0;
  MSGPACK_DEFINE_MAP(k)
};

// ------------------------------------------------------------------ processes
// Diagnostics (stderr): when the server handled its first cast of a round and when the last
// producer finished casting: shows whether sending and handling overlap.
std::int64_t first_ns = 0;  // written by the server only
std::atomic<std::int64_t> last_producer_done_ns{0};

// The server of the cast and call workloads (otpp_peer_srv.erl): counts `add` casts and reports
// when an armed target is reached; answers `lookup` from a 64-entry map.
class bench_server : public otpp::gen_server<bench_server> {
 public:
  explicit bench_server(round_signal* watcher) : watcher_(watcher) {
    for (std::int64_t k = 0; k < 64; ++k) table_.emplace(k, k * k);
  }
  static void define_handlers(otpp::handlers<bench_server>& h) {
    h.cast<add>(&bench_server::on_add);
    h.call<lookup>(&bench_server::on_lookup);
    h.call<watch>(&bench_server::on_watch);
  }
  void on_add(add) {
    if (count_ == 0) first_ns = ns();
    if (++count_ == target_) watcher_->done.set_value(count_);
  }
  std::int64_t on_lookup(lookup m) {
    auto it = table_.find(m.key);
    return it == table_.end() ? -1 : it->second;
  }
  bool on_watch(watch m) {
    first_ns = 0;
    count_ = 0;
    target_ = m.target;
    return true;
  }

 private:
  round_signal* watcher_;
  std::unordered_map<std::int64_t, std::int64_t> table_;
  std::int64_t count_ = 0;
  std::int64_t target_ = -1;
};

// Casts `count` adds to the server on `go`, then ends (the Erlang producer's fun returns).
class producer : public otpp::gen_server<producer> {
 public:
  producer(otpp::pid server, std::int64_t count) : server_(server), count_(count) {}
  static void define_handlers(otpp::handlers<producer>& h) { h.cast<go>(&producer::on_go); }
  void on_go(go) {
    auto& n = this_node();
    for (std::int64_t i = count_; i > 0; --i) (void)otpp::cast(n, server_, add{i});
    const auto now = ns();
    auto seen = last_producer_done_ns.load(std::memory_order_relaxed);
    while (seen < now && !last_producer_done_ns.compare_exchange_weak(seen, now)) {
    }
    stop();
  }

 private:
  otpp::pid server_;
  std::int64_t count_;
};

// Sequential calls from a process: a coroutine handler awaiting each reply.
struct call_results {
  std::vector<std::int64_t> latency_ns;  // of the timed calls
  std::int64_t t0 = 0, t1 = 0;
  std::int64_t errors = 0;
  std::promise<void> done;
};

class caller : public otpp::gen_server<caller> {
 public:
  caller(otpp::pid server, call_results* out) : server_(server), out_(out) {}
  static void define_handlers(otpp::handlers<caller>& h) { h.cast<run_calls>(&caller::on_run); }
  asio::awaitable<void> on_run(run_calls m) {
    auto& n = this_node();
    for (std::int64_t i = m.warmup; i > 0; --i) {  // warm-up, not timed
      // Named, never a braced temporary inside co_await (g++ 12 destroys those twice).
      lookup request{i & 63};
      auto r =
          co_await otpp::call(n, server_, std::move(request), call_timeout, asio::use_awaitable);
      if (!r) ++out_->errors;
    }
    auto& lat = out_->latency_ns;
    lat.reserve(static_cast<std::size_t>(m.n));
    out_->t0 = ns();
    for (std::int64_t i = m.n; i > 0; --i) {
      lookup request{i & 63};
      auto c0 = clk::now();
      auto r =
          co_await otpp::call(n, server_, std::move(request), call_timeout, asio::use_awaitable);
      auto c1 = clk::now();
      if (!r) ++out_->errors;
      lat.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(c1 - c0).count());
    }
    out_->t1 = ns();
    out_->done.set_value();
  }

 private:
  otpp::pid server_;
  call_results* out_;
};

// Raw send/receive ping-pong (handle_info on both sides).
class echo : public otpp::gen_server<echo> {
 public:
  static void define_handlers(otpp::handlers<echo>& h) {
    h.info<ping>([](echo& self, ping m) { (void)otpp::send(self.this_node(), m.from, pong{}); });
  }
};

class pinger : public otpp::gen_server<pinger> {
 public:
  pinger(otpp::pid echo_pid, round_signal* out) : echo_(echo_pid), out_(out) {}
  static void define_handlers(otpp::handlers<pinger>& h) {
    h.cast<start_pings>(&pinger::on_start);
    h.info<pong>(&pinger::on_pong);
  }
  void on_start(start_pings m) {
    left_ = m.n;
    (void)otpp::send(this_node(), echo_, ping{self()});
  }
  void on_pong(pong) {
    if (--left_ == 0) {
      out_->done.set_value(0);
    } else {
      (void)otpp::send(this_node(), echo_, ping{self()});
    }
  }

 private:
  otpp::pid echo_;
  round_signal* out_;
  std::int64_t left_ = 0;
};

// A process that only waits for a message (Erlang: receive stop -> ok end).
class idle_proc : public otpp::gen_server<idle_proc> {
 public:
  static void define_handlers(otpp::handlers<idle_proc>& h) {
    h.info<stop_msg>([](idle_proc& self, stop_msg) { self.stop(); });
  }
};

// The smallest gen_server, with an init (otpp_peer_nop.erl).
class nop_server : public otpp::gen_server<nop_server> {
 public:
  otpp::result<void> init() { return {}; }
  static void define_handlers(otpp::handlers<nop_server>& h) {
    h.call<lookup>([](nop_server&, lookup) -> std::int64_t { return 0; });
  }
};

// A ring member: forwards {token, K} to the next with K - 1; reports {token, 0} to the driver.
class ring_node : public otpp::gen_server<ring_node> {
 public:
  explicit ring_node(round_signal* driver) : driver_(driver) {}
  static void define_handlers(otpp::handlers<ring_node>& h) {
    h.info<next_msg>([](ring_node& self, next_msg m) { self.next_ = m.next; });
    h.info<token>(&ring_node::on_token);
  }
  void on_token(token t) {
    if (t.k == 0) {
      driver_->done.set_value(0);
    } else {
      (void)otpp::send(this_node(), next_, token{t.k - 1});
    }
  }

 private:
  round_signal* driver_;
  otpp::pid next_;
};

template <class S, class... Args>
otpp::pid spawn_or_die(otpp::node& n, Args&&... args) {
  auto r = n.spawn<S>(std::forward<Args>(args)...);
  if (!r) die("spawn failed: " + r.fail().message());
  return *r;
}

// Stops the node and logs how long the teardown took (not part of any figure).
void teardown(otpp::node& n, std::string_view what) {
  auto t0 = ns();
  n.stop();
  std::fprintf(stderr, "[local] %.*s: node teardown %.1f ms\n", static_cast<int>(what.size()),
               what.data(), static_cast<double>(ns() - t0) / 1e6);
}

// ------------------------------------------------------------------ workloads
// P producers cast `total` adds in all to the server; returns {go, done}: go just before the
// producers are released, done when the server has handled the last of them.
std::pair<std::int64_t, std::int64_t> cast_round(otpp::node& n, const otpp::pid& server,
                                                 round_signal& watcher, int p, std::int64_t total) {
  const std::int64_t per = total / p;
  auto handled = watcher.arm();
  (void)call_sync(n, server, watch{per * p}, "watch");
  std::vector<otpp::pid> producers;
  for (int i = 0; i < p; ++i) producers.push_back(spawn_or_die<producer>(n, server, per));
  const auto t0 = ns();
  for (const auto& pr : producers) (void)otpp::cast(n, pr, go{});
  const auto got = await(handled, "cast_round");
  const auto t1 = ns();
  if (got != per * p) die("cast_round: handled " + std::to_string(got));
  std::fprintf(stderr,
               "[local] cast %dp x %lld: go->first handled %.2f ms, go->producers done %.2f ms, "
               "go->all handled %.2f ms\n",
               p, static_cast<long long>(total), static_cast<double>(first_ns - t0) / 1e6,
               static_cast<double>(last_producer_done_ns.load() - t0) / 1e6,
               static_cast<double>(t1 - t0) / 1e6);
  return {t0, t1};
}

void cast_workload(int p, std::string_view name) {
  otpp::node n(options());
  n.start();
  round_signal watcher;
  auto server = spawn_or_die<bench_server>(n, &watcher);
  (void)cast_round(n, server, watcher, p, 100000);  // warm-up
  // Context switches of the timed round: cross-core wake-ups show up here (a consumer that
  // sleeps and is woken per few messages), whatever the CPU.
  auto switches = [] {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return u.ru_nvcsw + u.ru_nivcsw;
  };
  const auto sw0 = switches();
  auto [t0, t1] = cast_round(n, server, watcher, p, 2000000);
  const auto sw1 = switches();
  emit(name, "msg/s", rate(2000000, t0, t1), ",\"context_switches\":" + std::to_string(sw1 - sw0));
  teardown(n, name);
}

std::int64_t nearest_rank(const std::vector<std::int64_t>& sorted, int p) {
  const auto n = static_cast<std::int64_t>(sorted.size());
  const auto rank = static_cast<std::int64_t>(std::ceil(static_cast<double>(n) * p / 100.0));
  return sorted[static_cast<std::size_t>(std::max<std::int64_t>(1, std::min(n, rank)) - 1)];
}

void call_seq() {
  otpp::node n(options());
  n.start();
  round_signal unused;
  auto server = spawn_or_die<bench_server>(n, &unused);
  call_results out;
  auto done = out.done.get_future();
  auto c = spawn_or_die<caller>(n, server, &out);
  constexpr std::int64_t count = 300000;
  (void)otpp::cast(n, c, run_calls{20000, count});
  await(done, "call_seq");
  if (out.errors) die("call_seq: " + std::to_string(out.errors) + " calls failed");
  emit("local.call_seq.throughput", "call/s", rate(count, out.t0, out.t1));
  auto lat = std::move(out.latency_ns);
  std::sort(lat.begin(), lat.end());
  emit("local.call_seq.p50", "us", static_cast<double>(nearest_rank(lat, 50)) / 1000.0);
  emit("local.call_seq.p99", "us", static_cast<double>(nearest_rank(lat, 99)) / 1000.0);
  teardown(n, "call_seq");
}

void pingpong() {
  otpp::node n(options());
  n.start();
  round_signal sig;
  auto e = spawn_or_die<echo>(n);
  auto p = spawn_or_die<pinger>(n, e, &sig);
  auto warm = sig.arm();
  (void)otpp::cast(n, p, start_pings{10000});  // warm-up
  await(warm, "pingpong warm-up");
  constexpr std::int64_t count = 1000000;
  auto done = sig.arm();
  const auto t0 = ns();
  (void)otpp::cast(n, p, start_pings{count});
  await(done, "pingpong");
  const auto t1 = ns();
  emit("local.pingpong.roundtrips", "rt/s", rate(count, t0, t1));
  teardown(n, "pingpong");
}

void spawn_idle(otpp::node& n, std::int64_t count) {
  for (std::int64_t i = 0; i < count; ++i) (void)spawn_or_die<idle_proc>(n);  // pids not kept
}

void spawn_idle_rate() {
  otpp::node n(options());
  n.start();
  constexpr std::int64_t count = 200000;
  const auto t0 = ns();
  spawn_idle(n, count);
  const auto t1 = ns();
  emit("local.spawn.idle_rate", "spawn/s", rate(count, t0, t1));
  teardown(n, "spawn.idle_rate");
}

void gen_server_start_rate() {
  otpp::node n(options());
  n.start();
  for (int i = 0; i < 1000; ++i) (void)spawn_or_die<nop_server>(n);  // warm-up (stay up)
  constexpr std::int64_t count = 20000;
  const auto t0 = ns();
  for (std::int64_t i = 0; i < count; ++i) (void)spawn_or_die<nop_server>(n);
  const auto t1 = ns();
  emit("local.spawn.gen_server_start_rate", "start/s", rate(count, t0, t1));
  teardown(n, "spawn.gen_server_start_rate");
}

std::int64_t rss_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::int64_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * sysconf(_SC_PAGESIZE);
}

std::int64_t malloc_in_use() {
  struct mallinfo2 mi = mallinfo2();
  return static_cast<std::int64_t>(mi.uordblks + mi.hblkhd);
}

// RSS growth per idle process (the figure) and malloc'd bytes per process (extra field).
void mem() {
  otpp::node n(options());
  n.start();
  constexpr std::int64_t count = 100000;
  std::this_thread::sleep_for(50ms);  // let the worker threads settle (stacks, arenas)
  const auto r0 = rss_bytes();
  const auto m0 = malloc_in_use();
  spawn_idle(n, count);
  std::this_thread::sleep_for(100ms);  // grace period (idle processes are never scheduled)
  const auto r1 = rss_bytes();
  const auto m1 = malloc_in_use();
  if (n.process_count() != static_cast<std::size_t>(count)) die("mem: process count");
  const double per_malloc = static_cast<double>(m1 - m0) / static_cast<double>(count);
  char extra[64];
  std::snprintf(extra, sizeof extra, ",\"malloc_bytes\":%.1f", per_malloc);
  emit("local.mem.per_idle_process_bytes", "bytes",
       static_cast<double>(r1 - r0) / static_cast<double>(count), extra);
  teardown(n, "mem");
}

void ring() {
  otpp::node n(options());
  n.start();
  constexpr std::int64_t size = 1000, laps = 1000;
  round_signal driver;
  std::vector<otpp::pid> pids;
  for (std::int64_t i = 0; i < size; ++i) pids.push_back(spawn_or_die<ring_node>(n, &driver));
  for (std::size_t i = 0; i < pids.size(); ++i) {
    (void)otpp::send(n, pids[i], next_msg{pids[(i + 1) % pids.size()]});
  }
  constexpr std::int64_t hops = size * laps;
  auto done = driver.arm();
  const auto t0 = ns();
  (void)otpp::send(n, pids.front(), token{hops - 1});
  await(done, "ring");
  const auto t1 = ns();
  emit("local.ring.hops", "hops/s", rate(hops, t0, t1));
  teardown(n, "ring");
}

// CPU an idle node burns (its workers spin only right after work, and one naps as the watchman):
// percent of one core over 10 s, with 100 idle processes. No Erlang peer.
void idle_cpu() {
  otpp::node n(options());
  n.start();
  for (int i = 0; i < 100; ++i) (void)spawn_or_die<idle_proc>(n);
  std::this_thread::sleep_for(500ms);  // let start-up settle
  auto cpu = [] {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1e6 +
           static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
  };
  const double c0 = cpu();
  const auto t0 = ns();
  std::this_thread::sleep_for(10s);
  const double c1 = cpu();
  const auto t1 = ns();
  emit("local.idle_cpu.percent_of_core", "%",
       100.0 * (c1 - c0) * 1e3 / static_cast<double>(t1 - t0));
  teardown(n, "idle_cpu");
}

struct workload {
  std::string_view id;
  std::function<void()> run;
};

const std::vector<workload>& workloads() {
  static const std::vector<workload> all = {
      {"local.cast_1p", [] { cast_workload(1, "local.cast_1p.throughput"); }},
      {"local.cast_4p", [] { cast_workload(4, "local.cast_4p.throughput"); }},
      {"local.call_seq", call_seq},
      {"local.pingpong", pingpong},
      {"local.spawn.idle_rate", spawn_idle_rate},
      {"local.spawn.gen_server_start_rate", gen_server_start_rate},
      {"local.mem", mem},
      {"local.ring", ring},
      {"local.idle_cpu", idle_cpu},
  };
  return all;
}

// Runs `w` in a fresh child process; returns its exit status (0: ok).
int run_forked(const workload& w) {
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t child = fork();
  if (child < 0) die("fork failed");
  if (child == 0) {
    alarm(child_alarm_s);
    w.run();
    std::fflush(stdout);
    std::fflush(stderr);
    std::_Exit(0);
  }
  int status = 0;
  if (waitpid(child, &status, 0) < 0) return 1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  std::printf("ERROR %.*s: killed by signal %d\n", static_cast<int>(w.id.size()), w.id.data(),
              WTERMSIG(status));
  std::fflush(stdout);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  bool fork_each = true;
  std::vector<std::string> filters;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "list") {
      for (const auto& w : workloads())
        std::printf("%.*s\n", static_cast<int>(w.id.size()), w.id.data());
      return 0;
    } else if (a == "--no-fork") {
      fork_each = false;
    } else if (a == "--call-timeout-ms" && i + 1 < argc) {
      call_timeout = std::chrono::milliseconds(std::strtoll(argv[++i], nullptr, 10));
    } else if (a == "--threads" && i + 1 < argc) {
      g_threads = static_cast<std::size_t>(std::strtoul(argv[++i], nullptr, 10));
    } else if (a == "--idle-spin-us" && i + 1 < argc) {
      g_idle_spin = std::chrono::microseconds(std::strtoll(argv[++i], nullptr, 10));
    } else if (a == "-h" || a == "--help") {
      std::fprintf(stderr,
                   "usage: %s [--threads N] [--idle-spin-us US] [--call-timeout-ms MS] "
                   "[--no-fork] [list | "
                   "WORKLOAD-PREFIX...]\n",
                   argv[0]);
      return 0;
    } else {
      filters.emplace_back(a);
    }
  }
  auto selected = [&](std::string_view id) {
    if (filters.empty()) return true;
    for (const auto& f : filters)
      if (id.starts_with(f) || std::string_view(f).starts_with(std::string(id) + ".")) return true;
    return false;
  };
  int rc = 0;
  for (const auto& w : workloads()) {
    if (!selected(w.id)) continue;
    const auto t0 = ns();
    std::fprintf(stderr, "[local] %.*s\n", static_cast<int>(w.id.size()), w.id.data());
    int r = 0;
    if (fork_each) {
      r = run_forked(w);
    } else {
      w.run();
    }
    std::fprintf(stderr, "[local] %.*s: rc=%d, %.2f s\n", static_cast<int>(w.id.size()),
                 w.id.data(), r, static_cast<double>(ns() - t0) / 1e9);
    if (r != 0) rc = 1;
  }
  return rc;
}
