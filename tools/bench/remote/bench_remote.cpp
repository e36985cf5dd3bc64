// otpp side of the "remote" benchmark group (tools/bench/README.md): figures between node
// processes on 127.0.0.1. The driver is node A (in this process); B (and C) are child
// processes running this binary with --serve. One fresh pair per workload, as Erlang does.
//
//   otpp_bench_remote [--quick] [NAME_PREFIX...]
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <asio/ip/tcp.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <future>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/bench_node.hpp"
#include "otpp/cluster/cluster.hpp"
#include "otpp/log.hpp"
#include "otpp/runtime.hpp"

#include <asio/use_awaitable.hpp>
#include <asio/use_future.hpp>

namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

const std::string secret = "otpp-bench-remote-secret-0123456789";

using otpp_bench::free_port;
using otpp_bench::id_of;
using otpp_bench::idle_spin;
using otpp_bench::node_threads;
using otpp_bench::print;

struct echo_int {
  static constexpr std::string_view tag = "echo_int";
  using reply = std::int64_t;
  std::int64_t v = 0;
  MSGPACK_DEFINE(v)
};
struct echo_bin {
  static constexpr std::string_view tag = "echo_bin";
  using reply = std::vector<char>;
  std::vector<char> data;
  MSGPACK_DEFINE(data)
};
struct add {
  static constexpr std::string_view tag = "add";
  std::int64_t v = 0;
  MSGPACK_DEFINE(v)
};
struct add_bin {
  static constexpr std::string_view tag = "add_bin";
  std::vector<char> data;
  MSGPACK_DEFINE(data)
};
struct count_sync {
  static constexpr std::string_view tag = "count_sync";
  using reply = std::int64_t;
  OTPP_NO_FIELDS()
};

class server : public otpp::gen_server<server> {
 public:
  static void define_handlers(otpp::handlers<server>& h) {
    h.call<echo_int>([](server&, echo_int m) { return m.v; });
    h.call<echo_bin>([](server&, echo_bin m) { return std::move(m.data); });
    h.cast<add>([](server& s, add m) { s.count_ += 1 + 0 * m.v; });
    h.cast<add_bin>([](server& s, add_bin) { ++s.count_; });
    h.call<count_sync>([](server& s, count_sync) { return s.count_; });
  }

 private:
  std::int64_t count_ = 0;
};

otpp::cluster::options cluster_options(std::vector<std::string> seeds) {
  return otpp_bench::cluster_options(std::move(seeds), secret);
}

// ---- serve mode: a node process with one server
int serve(const std::string& name, const std::vector<std::string>& seeds) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  otpp::set_log_level(otpp::log_level::error);
  otpp::node n({.name = name, .threads = node_threads(), .idle_spin = idle_spin()});
  n.start();
  auto c = otpp::cluster::join(n, cluster_options(seeds));
  if (!c) {
    std::printf("ERROR join: %s\n", c.fail().message().c_str());
    return 1;
  }
  auto s = n.spawn<server>();
  if (!s) return 1;
  std::printf("ready %u %llu\n", n.creation(), static_cast<unsigned long long>(s->serial()));
  std::fflush(stdout);
  // Until the driver closes our stdin (or kills us).
  char buf[64];
  while (::read(0, buf, sizeof buf) > 0) {
  }
  return 0;
}

// ---- driver helpers
struct child {
  pid_t pid = -1;
  int in = -1;  // its stdin
  FILE* out = nullptr;
  std::string id;
  std::uint32_t creation = 0;
  std::uint64_t server_serial = 0;

  static std::optional<child> start(const std::string& self_exe, const std::string& id,
                                    const std::vector<std::string>& seeds) {
    int to_child[2], from_child[2];
    if (::pipe(to_child) != 0 || ::pipe(from_child) != 0) return std::nullopt;
    std::string seed_arg;
    for (const auto& s : seeds) seed_arg += (seed_arg.empty() ? "" : ",") + s;
    pid_t p = ::fork();
    if (p == 0) {
      ::dup2(to_child[0], 0);
      ::dup2(from_child[1], 1);
      ::close(to_child[1]);
      ::close(from_child[0]);
      ::execl(self_exe.c_str(), self_exe.c_str(), "--serve", id.c_str(), seed_arg.c_str(),
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(to_child[0]);
    ::close(from_child[1]);
    child c;
    c.pid = p;
    c.in = to_child[1];
    c.out = ::fdopen(from_child[0], "r");
    c.id = id;
    char line[256];
    while (std::fgets(line, sizeof line, c.out)) {
      unsigned creation = 0;
      unsigned long long serial = 0;
      if (std::sscanf(line, "ready %u %llu", &creation, &serial) == 2) {
        c.creation = creation;
        c.server_serial = serial;
        return c;
      }
      std::fprintf(stderr, "child: %s", line);
    }
    return std::nullopt;
  }
  otpp::pid server() const {
    return otpp::pid(otpp::node_atom::intern(id), creation, server_serial);
  }
  void stop() {
    if (pid <= 0) return;
    if (in >= 0) ::close(in);
    in = -1;
    int status = 0;
    for (int i = 0; i < 300; ++i) {
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        pid = -1;
        break;
      }
      std::this_thread::sleep_for(10ms);
    }
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      pid = -1;
    }
    if (out) std::fclose(out);
    out = nullptr;
  }
  ~child() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    if (in >= 0) ::close(in);
    if (out) std::fclose(out);
  }
  child() = default;
  child(child&& o) noexcept { *this = std::move(o); }
  child& operator=(child&& o) noexcept {
    std::swap(pid, o.pid);
    std::swap(in, o.in);
    std::swap(out, o.out);
    id = o.id;
    creation = o.creation;
    server_serial = o.server_serial;
    return *this;
  }
};

std::string self_exe;
bool quick = false;

double percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  auto i = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1));
  return v[i];
}

// Node A (this process) joined to B (a child).
struct pair_setup {
  std::unique_ptr<otpp::node> a;
  child b;
  otpp::pid target;
  bool ok = false;

  explicit pair_setup(std::size_t threads = node_threads()) {
    auto pb = free_port(), pa = free_port();
    auto c = child::start(self_exe, id_of("b", pb), {});
    if (!c) return;
    b = std::move(*c);
    a = std::make_unique<otpp::node>(
        otpp::node_options{.name = id_of("a", pa), .threads = threads, .idle_spin = idle_spin()});
    a->start();
    auto joined = otpp::cluster::join(*a, cluster_options({"127.0.0.1:" + std::to_string(pb)}));
    if (!joined) return;
    auto until = steady::now() + 20s;
    while (steady::now() < until) {
      for (const auto& m : (*joined)->members()) {
        if (m.id == b.id && m.connected) ok = true;
      }
      if (ok) break;
      std::this_thread::sleep_for(1ms);
    }
    target = b.server();
  }
  ~pair_setup() {
    a.reset();
    b.stop();
  }
};

// What a caller process records: its latencies, and the run's end.
struct call_run {
  std::mutex mu;
  std::vector<double> latencies;
  std::atomic<std::size_t> issued{0};
  std::atomic<std::size_t> callers_left{0};
  std::size_t total = 0;
  bool record = false;
  std::promise<void> finished;
  std::atomic<bool> failed{false};
};
struct go {
  static constexpr std::string_view tag = "go";
  std::shared_ptr<call_run> run;
};

// A process that makes sequential calls, as the Erlang peer's caller does: each awaits its
// reply on the process (co_await), so the reply's wake-up is the process's own.
template <class Msg>
class caller : public otpp::gen_server<caller<Msg>> {
 public:
  caller(otpp::pid target, Msg msg) : target_(target), msg_(std::move(msg)) {}
  static void define_handlers(otpp::handlers<caller>& h) {
    h.template cast<go>([](caller& self, go g) -> asio::awaitable<void> {
      auto run = g.run;
      std::vector<double> mine;
      while (run->issued.fetch_add(1) < run->total) {
        Msg m = self.msg_;  // named: never a braced temporary inside co_await (g++ 12)
        auto start = steady::now();
        auto r = co_await otpp::call(self.this_node(), self.target_, std::move(m), 30s,
                                     asio::use_awaitable);
        if (run->record) {
          mine.push_back(std::chrono::duration<double, std::micro>(steady::now() - start).count());
        }
        if (!r && !run->failed.exchange(true)) {
          std::printf("WARN call failed: %s\n", r.fail().message().c_str());
        }
      }
      {
        std::lock_guard lock(run->mu);
        run->latencies.insert(run->latencies.end(), mine.begin(), mine.end());
      }
      if (run->callers_left.fetch_sub(1) == 1) run->finished.set_value();
    });
  }

 private:
  otpp::pid target_;
  Msg msg_;
};

// `callers` processes on A, each making sequential calls to the server on B.
template <class Msg>
void call_workload(const std::string& name, std::size_t total, std::size_t callers, Msg msg) {
  pair_setup s;
  if (!s.ok) {
    std::printf("ERROR %s: setup failed\n", name.c_str());
    return;
  }
  std::vector<otpp::pid> procs;
  for (std::size_t i = 0; i < callers; ++i) {
    auto p = s.a->spawn<caller<Msg>>(s.target, msg);
    if (!p) {
      std::printf("ERROR %s: spawn failed\n", name.c_str());
      return;
    }
    procs.push_back(*p);
  }
  auto run = [&](std::size_t n, bool record) -> std::pair<double, std::vector<double>> {
    auto r = std::make_shared<call_run>();
    r->total = n;
    r->record = record;
    r->callers_left = callers;
    if (record) r->latencies.reserve(n);
    auto f = r->finished.get_future();
    auto t0 = steady::now();
    for (const auto& p : procs) (void)otpp::cast(*s.a, p, go{r});
    if (f.wait_for(180s) != std::future_status::ready) {
      std::printf("ERROR %s: did not finish\n", name.c_str());
      std::_Exit(1);
    }
    double secs = std::chrono::duration<double>(steady::now() - t0).count();
    std::lock_guard lock(r->mu);
    return {secs, std::move(r->latencies)};
  };
  run(quick ? 500 : 5000, false);
  auto [secs, lat] = run(total, true);
  print(name + ".throughput", "call/s", static_cast<double>(total) / secs);
  print(name + ".p50", "us", percentile(lat, 0.50));
  print(name + ".p99", "us", percentile(lat, 0.99));
}

template <class Msg>
void cast_workload(const std::string& name, std::size_t total, Msg msg) {
  pair_setup s;
  if (!s.ok) {
    std::printf("ERROR %s: setup failed\n", name.c_str());
    return;
  }
  auto run = [&](std::size_t n, std::int64_t expect_total) -> std::pair<double, double> {
    std::uint64_t refused = 0;
    auto t0 = steady::now();
    for (std::size_t i = 0; i < n; ++i) {
      while (true) {
        auto r = otpp::cast(*s.a, s.target, msg);
        if (r) break;
        if (r.error() != otpp::errc::mailbox_full) {
          std::printf("ERROR %s: cast: %s\n", name.c_str(), r.fail().message().c_str());
          std::_Exit(1);
        }
        ++refused;  // the connection's queue is full: wait for the writer (backpressure)
        std::this_thread::sleep_for(20us);
      }
    }
    auto sent = steady::now();
    auto f = otpp::call(*s.a, s.target, count_sync{}, 120s, asio::use_future);
    auto got = f.get();
    auto secs = std::chrono::duration<double>(steady::now() - t0).count();
    if (!got || *got != expect_total) {
      std::printf("ERROR %s: server counted %lld of %lld\n", name.c_str(),
                  got ? static_cast<long long>(*got) : -1LL, static_cast<long long>(expect_total));
    }
    (void)refused;
    return {secs, std::chrono::duration<double>(sent - t0).count()};
  };
  std::size_t warm = total / 10;
  run(warm, static_cast<std::int64_t>(warm));
  auto [secs, send_secs] = run(total, static_cast<std::int64_t>(total + warm));
  auto f = otpp::call(*s.a, s.target, count_sync{}, 60s, asio::use_future);
  auto got = f.get();
  long long lost = got ? static_cast<long long>(total + warm) - *got : -1;
  char extra[128];
  std::snprintf(extra, sizeof extra, ",\"lost\":%lld,\"send_rate\":%.1f", lost,
                static_cast<double>(total) / send_secs);
  print(name + ".throughput", "msg/s", static_cast<double>(total) / secs, extra);
}

void join_workload() {
  const int rounds = quick ? 2 : 5;
  auto pb = free_port(), pc = free_port(), pa = free_port();
  auto b = child::start(self_exe, id_of("b", pb), {});
  auto c = child::start(self_exe, id_of("c", pc), {id_of("b", pb)});
  if (!b || !c) {
    std::printf("ERROR join: setup failed\n");
    return;
  }
  otpp::node a({.name = id_of("a", pa), .threads = 2});
  a.start();
  auto ja = otpp::cluster::join(a, cluster_options({id_of("b", pb)}));
  auto full = [](otpp::cluster::service* s, std::size_t n) {
    std::size_t k = 0;
    for (const auto& m : s->members()) k += m.connected;
    return k == n;
  };
  auto until = steady::now() + 20s;
  while (steady::now() < until && !full(*ja, 3)) std::this_thread::sleep_for(1ms);
  std::vector<double> times;
  for (int r = 0; r < rounds; ++r) {
    auto pd = free_port();
    otpp::node d({.name = id_of("d" + std::to_string(r), pd), .threads = 2});
    d.start();
    std::atomic<int> ups{0};
    std::promise<void> all;
    std::once_flag once;
    auto t0 = steady::now();
    auto o = cluster_options({id_of("b", pb)});
    o.on_event = [&](const otpp::cluster::node_event& e) {
      if (e.kind == otpp::cluster::node_event_kind::node_up && ++ups == 3) {
        std::call_once(once, [&] { all.set_value(); });
      }
    };
    auto jd = otpp::cluster::join(d, std::move(o));
    if (!jd) break;
    (void)all.get_future().wait_for(20s);  // on_event hears every node_up: no polling
    times.push_back(std::chrono::duration<double, std::milli>(steady::now() - t0).count());
    d.stop();  // while the subscriber's state (above) still lives
  }
  auto sorted = times;
  double med = percentile(sorted, 0.5);
  char extra[160];
  std::snprintf(extra, sizeof extra, ",\"min_ms\":%.3f,\"max_ms\":%.3f,\"rounds\":%zu",
                sorted.empty() ? 0.0 : sorted.front(), sorted.empty() ? 0.0 : sorted.back(),
                sorted.size());
  print("remote.join.full_mesh_ms", "ms", med, extra);
  b->stop();
  c->stop();
}

void down_workload(bool sigstop) {
  const int rounds = sigstop ? 1 : (quick ? 2 : 3);
  std::vector<double> times;
  double bound_ms = 0;
  for (int r = 0; r < rounds; ++r) {
    // A's id sorts below B's: in a two-node keep-majority split the lower id keeps going.
    auto pb = free_port(), pa = free_port();
    auto b = child::start(self_exe, id_of("b", pb), {});
    if (!b) return;
    otpp::node a({.name = id_of("a", pa), .threads = 2});
    a.start();
    auto o = cluster_options({id_of("b", pb)});
    bound_ms = static_cast<double>(
        (o.unreachable_after + o.heartbeat_interval).count() +
        std::chrono::duration_cast<std::chrono::milliseconds>(o.downing.stable_after).count());
    auto ja = otpp::cluster::join(a, o);
    std::promise<void> down;
    std::once_flag once;
    (*ja)->subscribe([&](const otpp::cluster::node_event& e) {
      if (e.kind == otpp::cluster::node_event_kind::node_down && e.node == b->id) {
        std::call_once(once, [&] { down.set_value(); });
      }
    });
    auto until = steady::now() + 20s;
    bool up = false;
    while (!up && steady::now() < until) {
      for (const auto& m : (*ja)->members()) up = up || (m.id == b->id && m.connected);
      std::this_thread::sleep_for(1ms);
    }
    std::this_thread::sleep_for(200ms);
    auto f = down.get_future();
    auto t0 = steady::now();
    ::kill(b->pid, sigstop ? SIGSTOP : SIGKILL);
    if (f.wait_for(30s) != std::future_status::ready) {
      std::printf("ERROR down: not detected\n");
    } else {
      times.push_back(std::chrono::duration<double, std::milli>(steady::now() - t0).count());
    }
    ::kill(b->pid, SIGKILL);
    ::waitpid(b->pid, nullptr, 0);
    b->pid = -1;
  }
  auto sorted = times;
  double med = percentile(sorted, 0.5);
  char extra[200];
  if (sigstop) {
    std::snprintf(extra, sizeof extra, ",\"bound_ms\":%.0f", bound_ms);
    print("remote.down.sigstop_ms", "ms", med, extra);
  } else {
    std::snprintf(extra, sizeof extra, ",\"min_ms\":%.3f,\"max_ms\":%.3f,\"rounds\":%zu",
                  sorted.empty() ? 0.0 : sorted.front(), sorted.empty() ? 0.0 : sorted.back(),
                  sorted.size());
    print("remote.down.sigkill_ms", "ms", med, extra);
  }
}

bool selected(const std::vector<std::string>& prefixes, const std::string& id) {
  if (prefixes.empty()) return true;
  for (const auto& p : prefixes) {
    if (id.rfind(p, 0) == 0 || p.rfind(id + ".", 0) == 0 || p == id) return true;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "--serve") == 0) {
    return serve(argv[2], otpp_bench::split_seeds(argc >= 4 ? argv[3] : ""));
  }
  ::signal(SIGPIPE, SIG_IGN);
  otpp::set_log_level(otpp::log_level::error);
  char exe[4096];
  auto len = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (len <= 0) return 1;
  exe[len] = 0;
  self_exe = exe;
  std::vector<std::string> prefixes;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") {
      quick = true;
    } else if (a == "list") {
      for (const char* w :
           {"remote.call_small", "remote.call_1k", "remote.call_64k", "remote.call_c16",
            "remote.call_c64", "remote.cast_small", "remote.cast_1k", "remote.cast_64k",
            "remote.join", "remote.down.sigkill_ms", "remote.down.sigstop_ms"}) {
        std::printf("%s\n", w);
      }
      return 0;
    } else {
      prefixes.push_back(a);
    }
  }
  const std::size_t q = quick ? 10 : 1;
  std::vector<char> k1(1024, 'x'), k64(64 * 1024, 'y');
  if (selected(prefixes, "remote.call_small"))
    call_workload("remote.call_small", 50000 / q, 1, echo_int{42});
  if (selected(prefixes, "remote.call_1k"))
    call_workload("remote.call_1k", 20000 / q, 1, echo_bin{k1});
  if (selected(prefixes, "remote.call_64k"))
    call_workload("remote.call_64k", 3000 / q, 1, echo_bin{k64});
  if (selected(prefixes, "remote.call_c16"))
    call_workload("remote.call_c16", 32000 / q, 16, echo_int{42});
  if (selected(prefixes, "remote.call_c64"))
    call_workload("remote.call_c64", 32000 / q, 64, echo_int{42});
  if (selected(prefixes, "remote.cast_small"))
    cast_workload("remote.cast_small", 1000000 / q, add{1});
  if (selected(prefixes, "remote.cast_1k"))
    cast_workload("remote.cast_1k", 200000 / q, add_bin{k1});
  if (selected(prefixes, "remote.cast_64k"))
    cast_workload("remote.cast_64k", 20000 / q, add_bin{k64});
  if (selected(prefixes, "remote.join")) join_workload();
  if (selected(prefixes, "remote.down.sigkill_ms")) down_workload(false);
  if (selected(prefixes, "remote.down.sigstop_ms")) down_workload(true);
  return 0;
}
