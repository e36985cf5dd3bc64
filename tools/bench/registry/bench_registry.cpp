// otpp side of the "registry" benchmark group (tools/bench/README.md, issue 11): remote
// spawn by behaviour name, global names and process groups between node processes on
// 127.0.0.1. Erlang peer: tools/bench/erlang/otpp_registry.erl (same names and units).
//
//   otpp_bench_registry [--quick] [NAME_PREFIX...]     (list: prints the workload ids)
//
// The driver is node A (this process); B and C are child processes running this binary with
// --serve (PR_SET_PDEATHSIG, stdin EOF = stop), one fresh set per workload, as Erlang does.
// Every node joins with otpp::join_cluster and registers the same behaviour ("otpp_bench_nop").
// A drives the children through their stdin, one command a line, each answered by one line
// (bounded waits):
//   sync                  -> "sync <connected peers> <global arbiters>"
//   count                 -> "count <process count>"
//   gname NAME            -> "ok": an idle process registered under global NAME there
//   members GROUP K       -> "ok": K idle processes joined GROUP there
//   pgcount GROUP         -> "pgcount <members of GROUP seen there>"
//   watch A_ID CR SERIAL  -> "ok": a watcher forwards every join/leave of an otpp_bench_j:*
//                            group to that process on A (pg_seen messages)
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <asio/ip/tcp.hpp>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/bench_node.hpp"
#include "otpp/log.hpp"
#include "otpp/registry/join_cluster.hpp"
#include "otpp/runtime.hpp"

#include <asio/use_awaitable.hpp>

namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

const std::string secret = "otpp-bench-registry-secret-0123456789";
constexpr auto wait_bound = 120s;  // upper bound for any single wait (Erlang: ?WAIT)
const std::string nop_behaviour = "otpp_bench_nop";
const std::string members_group = "otpp_bench_members";
const std::string join_prefix = "otpp_bench_j:";

bool quick = false;  // --quick: counts / 10 (smoke runs), as OTPP_BENCH_QUICK=1 for Erlang
std::size_t n(std::size_t count) {
  return quick ? std::max<std::size_t>(1, count / 10) : count;
}

using otpp_bench::free_port;
using otpp_bench::id_of;
using otpp_bench::idle_spin;
using otpp_bench::node_threads;
using otpp_bench::print;

// A failure: one ERROR line, and the process exits non-zero (children die with it).
[[noreturn]] void fail(const std::string& what) {
  std::printf("ERROR %s\n", what.c_str());
  std::fflush(stdout);
  std::_Exit(1);
}

// Nearest rank, as the Erlang side (element ceil(N * p) of the sorted samples, 1-based).
double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  auto rank = static_cast<std::size_t>(std::ceil(static_cast<double>(v.size()) * p));
  return v[std::clamp<std::size_t>(rank, 1, v.size()) - 1];
}

double us_since(steady::time_point t0, steady::time_point t1) {
  return std::chrono::duration<double, std::micro>(t1 - t0).count();
}

// ------------------------------------------------------------------ processes
// The spawned behaviour (otpp_peer_nop's twin) and the idle processes: no handlers.
class nop : public otpp::gen_server<nop> {
 public:
  static void define_handlers(otpp::handlers<nop>&) {}
};

// B's watcher -> A: a join or leave of a group as B's replica saw it.
struct pg_seen {
  static constexpr std::string_view tag = "otpp_bench.pg_seen";
  bool join = false;
  std::string group;
  MSGPACK_DEFINE(join, group)
};

// On B: forwards every change of an otpp_bench_j:* group to `to` (pg::monitor of all groups,
// as Erlang's pg:monitor_scope).
class pg_watcher : public otpp::gen_server<pg_watcher> {
 public:
  explicit pg_watcher(otpp::pid to) : to_(to) {}
  static void define_handlers(otpp::handlers<pg_watcher>& h) {
    h.info<otpp::pg::membership_change>([](pg_watcher& self, otpp::pg::membership_change c) {
      if (c.group.rfind(join_prefix, 0) != 0) return;
      for (std::size_t i = 0; i < c.joined.size(); ++i) {
        (void)otpp::send(self.this_node(), self.to_, pg_seen{true, c.group});
      }
      for (std::size_t i = 0; i < c.left.size(); ++i) {
        (void)otpp::send(self.this_node(), self.to_, pg_seen{false, c.group});
      }
    });
  }

 private:
  otpp::pid to_;
};

otpp::cluster::options cluster_options(std::vector<std::string> seeds) {
  return otpp_bench::cluster_options(std::move(seeds), secret);
}

std::size_t connected_peers(otpp::node& nd, otpp::cluster::service* c) {
  std::size_t k = 0;
  for (const auto& m : c->members()) k += (m.connected && m.id != nd.name());
  return k;
}

// ------------------------------------------------------------------ serve mode (B, C)
int serve(const std::string& name, const std::vector<std::string>& seeds) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() == 1) return 1;  // the driver is already gone
  otpp::set_log_level(otpp::log_level::error);
  otpp::node nd({.name = name, .threads = node_threads(), .idle_spin = idle_spin()});
  nd.start();
  if (auto r = otpp::register_behaviour<nop>(nd, nop_behaviour); !r) {
    std::printf("ERROR register_behaviour: %s\n", r.fail().message().c_str());
    return 1;
  }
  auto c = otpp::join_cluster(nd, cluster_options(seeds));
  if (!c) {
    std::printf("ERROR join_cluster: %s\n", c.fail().message().c_str());
    return 1;
  }
  std::printf("ready\n");
  std::fflush(stdout);
  std::vector<otpp::pid> keep;  // idle processes made here (they live until the node stops)
  char line[1024];
  while (std::fgets(line, sizeof line, stdin)) {
    char arg1[512] = {0};
    unsigned long long a2 = 0, a3 = 0;
    std::string reply = "ok";
    if (std::strncmp(line, "sync", 4) == 0) {
      reply = "sync " + std::to_string(connected_peers(nd, *c)) + " " +
              std::to_string(otpp::global_stats(nd).peers);
    } else if (std::strncmp(line, "count", 5) == 0) {
      reply = "count " + std::to_string(nd.process_count());
    } else if (std::sscanf(line, "gname %511s", arg1) == 1) {
      auto p = nd.spawn<nop>();
      auto r = p ? otpp::register_name(nd, otpp::global(arg1), *p, 10000ms)
                 : otpp::result<void>(p.fail());
      if (!r) reply = "error gname " + std::string(arg1) + ": " + r.fail().message();
      if (p) keep.push_back(*p);
    } else if (std::sscanf(line, "members %511s %llu", arg1, &a2) == 2) {
      for (unsigned long long i = 0; i < a2 && reply == "ok"; ++i) {
        auto p = nd.spawn<nop>();
        auto r = p ? otpp::pg::join(nd, arg1, *p) : otpp::result<void>(p.fail());
        if (!r) reply = "error members: " + r.fail().message();
        if (p) keep.push_back(*p);
      }
    } else if (std::sscanf(line, "pgcount %511s", arg1) == 1) {
      reply = "pgcount " + std::to_string(otpp::pg::members(nd, arg1).size());
    } else if (std::sscanf(line, "watch %511s %llu %llu", arg1, &a2, &a3) == 3) {
      otpp::pid to(otpp::node_atom::intern(arg1), static_cast<std::uint32_t>(a2), a3);
      auto w = nd.spawn<pg_watcher>(to);
      auto m = w ? otpp::pg::monitor(nd, "", *w) : otpp::result<otpp::pg::subscription>(w.fail());
      if (!m) reply = "error watch: " + m.fail().message();
    } else {
      reply = "error unknown command";
    }
    std::printf("%s\n", reply.c_str());
    std::fflush(stdout);
  }
  // stdin closed: the driver is done. Halt at once, as an Erlang peer does (no graceful
  // leave: the driver's node is already gone and nothing here needs saving).
  std::fflush(stdout);
  std::_Exit(0);
}

// ------------------------------------------------------------------ driver helpers
std::string self_exe;

struct child {
  pid_t pid = -1;
  int in = -1;   // its stdin
  int out = -1;  // its stdout
  std::string buf;
  std::string id;

  // The next line from the child within `bound`, or nullopt (EOF, timeout).
  std::optional<std::string> read_line(std::chrono::milliseconds bound = wait_bound) {
    auto until = steady::now() + bound;
    while (true) {
      auto nl = buf.find('\n');
      if (nl != std::string::npos) {
        std::string l = buf.substr(0, nl);
        buf.erase(0, nl + 1);
        return l;
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - steady::now());
      if (left.count() <= 0) return std::nullopt;
      pollfd p{out, POLLIN, 0};
      int r = ::poll(&p, 1, static_cast<int>(left.count()));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return std::nullopt;
      char tmp[4096];
      auto got = ::read(out, tmp, sizeof tmp);
      if (got <= 0) return std::nullopt;
      buf.append(tmp, static_cast<std::size_t>(got));
    }
  }
  // One command, its one-line answer (other lines are passed on as logs); fails on none.
  std::string ask(const std::string& cmd) {
    std::string l = cmd + "\n";
    if (::write(in, l.data(), l.size()) != static_cast<ssize_t>(l.size())) {
      fail(id + ": cannot write '" + cmd + "'");
    }
    while (true) {
      auto r = read_line();
      if (!r) fail(id + ": no answer to '" + cmd + "'");
      if (r->rfind("ERROR", 0) == 0 || r->rfind("error", 0) == 0) fail(id + ": " + *r);
      if (r->rfind("WARN", 0) == 0 || r->rfind("[", 0) == 0) {
        std::fprintf(stderr, "%s: %s\n", id.c_str(), r->c_str());
        continue;
      }
      return *r;
    }
  }
  std::size_t ask_number(const std::string& cmd) {
    auto r = ask(cmd);
    auto sp = r.rfind(' ');
    return sp == std::string::npos ? 0 : std::strtoull(r.c_str() + sp + 1, nullptr, 10);
  }

  static std::unique_ptr<child> start(const std::string& id,
                                      const std::vector<std::string>& seeds) {
    int to_child[2], from_child[2];
    if (::pipe(to_child) != 0 || ::pipe(from_child) != 0) return nullptr;
    std::string seed_arg;
    for (const auto& s : seeds) seed_arg += (seed_arg.empty() ? "" : ",") + s;
    pid_t p = ::fork();
    if (p < 0) return nullptr;
    if (p == 0) {
      ::dup2(to_child[0], 0);
      ::dup2(from_child[1], 1);
      ::close(to_child[0]);
      ::close(to_child[1]);
      ::close(from_child[0]);
      ::close(from_child[1]);
      ::execl(self_exe.c_str(), self_exe.c_str(), "--serve", id.c_str(), seed_arg.c_str(),
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(to_child[0]);
    ::close(from_child[1]);
    auto c = std::make_unique<child>();
    c->pid = p;
    c->in = to_child[1];
    c->out = from_child[0];
    c->id = id;
    while (auto l = c->read_line(20s)) {
      if (*l == "ready") return c;
      std::fprintf(stderr, "%s: %s\n", id.c_str(), l->c_str());
      if (l->rfind("ERROR", 0) == 0) break;
    }
    return nullptr;
  }
  // Closes its stdin (it stops), SIGKILL if it has not exited within 3 s.
  void stop() {
    if (pid <= 0) return;
    if (in >= 0) ::close(in);
    in = -1;
    for (int i = 0; i < 300; ++i) {
      if (::waitpid(pid, nullptr, WNOHANG) == pid) {
        pid = -1;
        break;
      }
      std::this_thread::sleep_for(10ms);
    }
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      pid = -1;
    }
  }
  child() = default;
  child(const child&) = delete;
  child& operator=(const child&) = delete;
  ~child() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    if (in >= 0) ::close(in);
    if (out >= 0) ::close(out);
  }
};

// A (this process) + B, C (children) in full mesh, every global registry ready (global:sync()
// on the Erlang side): each node sees 2 connected peers and 2 arbiters.
struct mesh {
  std::unique_ptr<child> b, c;
  std::unique_ptr<otpp::node> a;
  otpp::cluster::service* cluster = nullptr;

  explicit mesh(const char* workload) {
    auto pb = free_port(), pc = free_port(), pa = free_port();
    b = child::start(id_of("b", pb), {});
    if (!b) fail(std::string(workload) + ": node B did not start");
    c = child::start(id_of("c", pc), {id_of("b", pb)});
    if (!c) fail(std::string(workload) + ": node C did not start");
    a = std::make_unique<otpp::node>(otpp::node_options{
        .name = id_of("a", pa), .threads = node_threads(), .idle_spin = idle_spin()});
    a->start();
    if (auto r = otpp::register_behaviour<nop>(*a, nop_behaviour); !r) {
      fail(std::string(workload) + ": register_behaviour: " + r.fail().message());
    }
    auto j = otpp::join_cluster(*a, cluster_options({id_of("b", pb)}));
    if (!j) fail(std::string(workload) + ": join_cluster: " + j.fail().message());
    cluster = *j;
    auto until = steady::now() + 20s;
    while (true) {
      bool ok = connected_peers(*a, cluster) == 2 && otpp::global_stats(*a).peers == 2;
      for (auto* ch : {b.get(), c.get()}) {
        if (ok) ok = ch->ask("sync") == "sync 2 2";
      }
      if (ok) break;
      if (steady::now() > until) fail(std::string(workload) + ": the mesh did not form in 20 s");
      std::this_thread::sleep_for(5ms);
    }
  }
  // A leaves first (B and C still answer its leave), then B and C halt.
  ~mesh() {
    a.reset();
    for (auto* ch : {b.get(), c.get()}) {
      if (ch && ch->in >= 0) {
        ::close(ch->in);
        ch->in = -1;
      }
    }
    if (b) b->stop();
    if (c) c->stop();
  }
};

// Waits (bounded) for `done`, polling.
template <class F>
void wait_until(F&& done, std::chrono::milliseconds bound, const std::string& what) {
  auto until = steady::now() + bound;
  while (!done()) {
    if (steady::now() > until) fail("timeout: " + what);
    std::this_thread::sleep_for(1ms);
  }
}

// ------------------------------------------------------------------ remote spawn
// What the spawner processes on A share for one round.
struct spawn_run {
  std::string target;
  std::size_t per_spawner = 0;
  std::mutex mu;
  std::vector<double> latencies;  // us
  std::vector<otpp::pid> children;
  std::atomic<std::size_t> left{0};
  std::promise<void> finished;
  std::atomic<bool> failed{false};
  std::string error;
};
struct spawn_go {
  static constexpr std::string_view tag = "otpp_bench.spawn_go";
  std::shared_ptr<spawn_run> run;
};

// A process on A that spawns sequentially on B, each spawn awaited on the process (co_await):
// the completion's wake-up is the process's own, as the Erlang caller's receive.
class spawner : public otpp::gen_server<spawner> {
 public:
  static void define_handlers(otpp::handlers<spawner>& h) {
    h.cast<spawn_go>([](spawner& self, spawn_go g) -> asio::awaitable<void> {
      auto run = g.run;
      std::vector<double> lat;
      std::vector<otpp::pid> kids;
      lat.reserve(run->per_spawner);
      kids.reserve(run->per_spawner);
      for (std::size_t i = 0; i < run->per_spawner; ++i) {
        otpp::remote_spawn_options o;  // named: no braced temporary inside co_await (g++ 12)
        o.timeout = 30000ms;
        auto t0 = steady::now();
        auto r = co_await otpp::spawn_remote(self.this_node(), run->target, nop_behaviour,
                                             std::move(o), asio::use_awaitable);
        auto t1 = steady::now();
        if (!r) {
          if (!run->failed.exchange(true)) {
            std::lock_guard lock(run->mu);
            run->error = "remote spawn: " + r.fail().message();
          }
          break;
        }
        lat.push_back(us_since(t0, t1));
        kids.push_back(r->child);
      }
      {
        std::lock_guard lock(run->mu);
        run->latencies.insert(run->latencies.end(), lat.begin(), lat.end());
        run->children.insert(run->children.end(), kids.begin(), kids.end());
      }
      if (run->left.fetch_sub(1) == 1) run->finished.set_value();
    });
  }
};

struct spawn_result {
  double secs = 0;
  std::vector<double> latencies;
  std::size_t spawns = 0;
};

// One round: `spawners` processes on A, each `per` sequential spawns on B, from go until the
// last is done; then (untimed) the children are killed and B's process count is back to where
// it was (+2, as the Erlang side).
spawn_result spawn_round(mesh& m, const std::vector<otpp::pid>& procs, std::size_t per) {
  std::size_t base = m.b->ask_number("count");
  auto run = std::make_shared<spawn_run>();
  run->target = m.b->id;
  run->per_spawner = per;
  run->left = procs.size();
  run->latencies.reserve(per * procs.size());
  run->children.reserve(per * procs.size());
  auto f = run->finished.get_future();
  auto t0 = steady::now();
  for (const auto& p : procs) {
    if (auto r = otpp::cast(*m.a, p, spawn_go{run}); !r) fail("cast: " + r.fail().message());
  }
  if (f.wait_for(wait_bound) != std::future_status::ready) {
    fail("registry.remote_spawn: spawners did not finish");
  }
  double secs = std::chrono::duration<double>(steady::now() - t0).count();
  std::lock_guard lock(run->mu);
  if (run->failed) fail("registry.remote_spawn: " + run->error);
  for (const auto& k : run->children) m.a->exit(k, otpp::exit_reason::kill());
  auto until = steady::now() + 60s;
  while (m.b->ask_number("count") > base + 2) {
    if (steady::now() > until) fail("registry.remote_spawn: B's children did not end in 60 s");
    std::this_thread::sleep_for(5ms);
  }
  return {secs, std::move(run->latencies), run->children.size()};
}

void remote_spawn_workload() {
  mesh m("registry.remote_spawn");
  std::vector<otpp::pid> procs;
  for (int i = 0; i < 16; ++i) {
    auto p = m.a->spawn<spawner>();
    if (!p) fail("registry.remote_spawn: spawn: " + p.fail().message());
    procs.push_back(*p);
  }
  std::vector<otpp::pid> one(procs.begin(), procs.begin() + 1);
  spawn_round(m, one, n(500));              // warm-up
  auto seq = spawn_round(m, one, n(5000));  // sequential: latencies
  print("registry.remote_spawn_p50_us", "us", percentile(seq.latencies, 0.50));
  print("registry.remote_spawn_p99_us", "us", percentile(seq.latencies, 0.99));
  const std::size_t spawners = procs.size();
  auto conc = spawn_round(m, procs, std::max<std::size_t>(1, n(20000) / spawners));
  char extra[96];
  std::snprintf(extra, sizeof extra, ",\"spawners\":%zu,\"spawns\":%zu", spawners, conc.spawns);
  print("registry.remote_spawns_per_s", "spawn/s", static_cast<double>(conc.spawns) / conc.secs,
        extra);
}

// ------------------------------------------------------------------ global
struct reg_run {
  std::size_t cycles = 0;
  otpp::pid owner;
  std::vector<double> reg, unreg;  // us
  std::promise<void> finished;
  std::string error;
};
struct reg_go {
  static constexpr std::string_view tag = "otpp_bench.reg_go";
  std::shared_ptr<reg_run> run;
};
std::atomic<std::uint64_t> unique_counter{0};

// On A: cycles of register (awaited on the process) then unregister, each name new.
class registrar : public otpp::gen_server<registrar> {
 public:
  static void define_handlers(otpp::handlers<registrar>& h) {
    h.cast<reg_go>([](registrar& self, reg_go g) -> asio::awaitable<void> {
      auto run = g.run;
      auto& nd = self.this_node();
      for (std::size_t i = 0; i < run->cycles; ++i) {
        auto name = otpp::global("otpp_bench_g:" + std::to_string(++unique_counter));
        std::chrono::milliseconds bound = 10000ms;
        auto t0 = steady::now();
        auto r = co_await otpp::register_name(nd, name, run->owner, bound, asio::use_awaitable);
        auto t1 = steady::now();
        auto u = r ? otpp::unregister_name(nd, name) : otpp::result<void>{};
        auto t2 = steady::now();
        if (!r || !u) {
          run->error = (r ? "unregister_name: " + u.fail().message()
                          : "register_name: " + r.fail().message());
          break;
        }
        run->reg.push_back(us_since(t0, t1));
        run->unreg.push_back(us_since(t1, t2));
      }
      run->finished.set_value();
    });
  }
};

void global_workload() {
  mesh m("registry.global");
  auto owner = m.a->spawn<nop>();
  auto driver = m.a->spawn<registrar>();
  if (!owner || !driver) fail("registry.global: spawn failed");
  auto cycles = [&](std::size_t count) {
    auto run = std::make_shared<reg_run>();
    run->cycles = count;
    run->owner = *owner;
    run->reg.reserve(count);
    run->unreg.reserve(count);
    auto f = run->finished.get_future();
    if (auto r = otpp::cast(*m.a, *driver, reg_go{run}); !r) fail("cast: " + r.fail().message());
    if (f.wait_for(wait_bound) != std::future_status::ready) {
      fail("registry.global: register cycles did not finish");
    }
    if (!run->error.empty()) fail("registry.global: " + run->error);
    return run;
  };
  cycles(n(200));  // warm-up
  auto run = cycles(n(2000));
  char extra[160];
  std::snprintf(extra, sizeof extra,
                ",\"unregister_p50_us\":%.3f,\"unregister_p99_us\":%.3f,\"cycles\":%zu",
                percentile(run->unreg, 0.50), percentile(run->unreg, 0.99), run->reg.size());
  print("registry.global_register_p50_us", "us", percentile(run->reg, 0.50), extra);
  print("registry.global_register_p99_us", "us", percentile(run->reg, 0.99));

  // 100 names for idle processes on A, B, C (round robin as Erlang: 1 -> B, 2 -> C, 3 -> A),
  // each registered on its process's node.
  constexpr std::size_t names_count = 100;
  std::vector<otpp::global_name> names;
  std::vector<otpp::pid> keep;
  for (std::size_t i = 1; i <= names_count; ++i) {
    std::string name = "otpp_bench_w:" + std::to_string(i);
    switch (i % 3) {
      case 1:
        (void)m.b->ask("gname " + name);
        break;
      case 2:
        (void)m.c->ask("gname " + name);
        break;
      default: {
        auto p = m.a->spawn<nop>();
        if (!p) fail("registry.global: spawn failed");
        if (auto r = otpp::register_name(*m.a, otpp::global(name), *p, 10000ms); !r) {
          fail("registry.global: register_name: " + r.fail().message());
        }
        keep.push_back(*p);
      }
    }
    names.push_back(otpp::global(name));
  }
  wait_until(
      [&] {
        return std::all_of(names.begin(), names.end(),
                           [&](const auto& nm) { return otpp::whereis(*m.a, nm).has_value(); });
      },
      10s, "registry.global: the 100 names are not all visible on A");
  const std::size_t lookups = n(1000000);
  auto loop = [&](std::size_t count) {
    std::size_t j = 0;
    for (std::size_t i = 0; i < count; ++i) {
      auto r = otpp::whereis(*m.a, names[j]);
      if (!r) fail("registry.global: whereis " + names[j].name + ": " + r.fail().message());
      if (++j == names.size()) j = 0;
    }
  };
  loop(std::min<std::size_t>(lookups, 100000));  // warm-up
  auto t0 = steady::now();
  loop(lookups);
  auto t1 = steady::now();
  std::snprintf(extra, sizeof extra, ",\"names\":%zu,\"lookups\":%zu", names_count, lookups);
  print("registry.global_whereis_ns", "ns",
        std::chrono::duration<double, std::nano>(t1 - t0).count() / static_cast<double>(lookups),
        extra);
}

// ------------------------------------------------------------------ pg
struct pg_run {
  std::size_t cycles = 0;
  otpp::pid joiner;
  std::vector<double> join, visible;  // us
  std::promise<void> finished;
  std::string error;
};
struct pg_go {
  static constexpr std::string_view tag = "otpp_bench.pg_go";
  std::shared_ptr<pg_run> run;
};

// On A: cycles of join(new group) (timed until it returns, and until B's watcher told us it
// saw it), then leave, and the next cycle once B saw the leave. Event-driven: the watcher's
// messages are this process's own (as the Erlang driver's receive).
class pg_driver : public otpp::gen_server<pg_driver> {
 public:
  static void define_handlers(otpp::handlers<pg_driver>& h) {
    h.cast<pg_go>([](pg_driver& self, pg_go g) {
      self.run_ = g.run;
      self.done_ = 0;
      self.next();
    });
    h.info<pg_seen>([](pg_driver& self, pg_seen s) {
      if (!self.run_ || s.group != self.group_) return;
      if (s.join) {
        if (self.visible_) return;
        self.visible_ = true;
        self.run_->join.push_back(self.join_us_);
        self.run_->visible.push_back(us_since(self.t0_, steady::now()));
        if (auto r = otpp::pg::leave(self.this_node(), self.group_, self.run_->joiner); !r) {
          self.finish("leave: " + r.fail().message());
        }
      } else if (self.visible_) {
        ++self.done_;
        self.next();
      }
    });
  }

 private:
  void next() {
    if (done_ == run_->cycles) return finish({});
    group_ = join_prefix + std::to_string(++unique_counter);
    visible_ = false;
    t0_ = steady::now();
    auto r = otpp::pg::join(this_node(), group_, run_->joiner);
    join_us_ = us_since(t0_, steady::now());
    if (!r) finish("join: " + r.fail().message());
  }
  void finish(std::string error) {
    auto run = std::move(run_);
    run->error = std::move(error);
    group_.clear();
    run->finished.set_value();
  }

  std::shared_ptr<pg_run> run_;
  std::size_t done_ = 0;
  std::string group_;
  bool visible_ = false;
  steady::time_point t0_;
  double join_us_ = 0;
};

void pg_workload() {
  mesh m("registry.pg");
  otpp::pg::start(*m.a);
  // Every replica knows the others (as Erlang's wait_pg_synced): a probe member of A is seen
  // on B and C.
  auto probe = m.a->spawn<nop>();
  if (!probe) fail("registry.pg: spawn failed");
  const std::string probe_group = "otpp_bench_probe";
  if (auto r = otpp::pg::join(*m.a, probe_group, *probe); !r) fail("registry.pg: join probe");
  wait_until(
      [&] {
        return m.b->ask_number("pgcount " + probe_group) == 1 &&
               m.c->ask_number("pgcount " + probe_group) == 1;
      },
      10s, "registry.pg: B and C do not see A's probe");
  (void)otpp::pg::leave(*m.a, probe_group, *probe);

  constexpr std::size_t members = 100;
  const std::size_t per_remote = members / 3;         // 33 on B, 33 on C
  const std::size_t on_a = members - 2 * per_remote;  // 34 on A
  std::vector<otpp::pid> keep;
  for (std::size_t i = 0; i < on_a; ++i) {
    auto p = m.a->spawn<nop>();
    if (!p) fail("registry.pg: spawn failed");
    if (auto r = otpp::pg::join(*m.a, members_group, *p); !r) {
      fail("registry.pg: join: " + r.fail().message());
    }
    keep.push_back(*p);
  }
  (void)m.b->ask("members " + members_group + " " + std::to_string(per_remote));
  (void)m.c->ask("members " + members_group + " " + std::to_string(per_remote));
  wait_until([&] { return otpp::pg::members(*m.a, members_group).size() == members; }, 10s,
             "registry.pg: A does not see 100 members");
  const std::size_t lookups = n(1000000);
  const std::string_view group = members_group;
  auto loop = [&](std::size_t count) {
    for (std::size_t i = 0; i < count; ++i) {
      if (otpp::pg::members(*m.a, group).empty()) fail("registry.pg: empty group");
    }
  };
  loop(std::min<std::size_t>(lookups, 100000));  // warm-up
  auto t0 = steady::now();
  loop(lookups);
  auto t1 = steady::now();
  char extra[200];
  std::snprintf(extra, sizeof extra, ",\"members\":%zu,\"lookups\":%zu", members, lookups);
  print("registry.pg_members_ns", "ns",
        std::chrono::duration<double, std::nano>(t1 - t0).count() / static_cast<double>(lookups),
        extra);

  auto driver = m.a->spawn<pg_driver>();
  auto joiner = m.a->spawn<nop>();
  if (!driver || !joiner) fail("registry.pg: spawn failed");
  (void)m.b->ask("watch " + m.a->name() + " " + std::to_string(driver->creation()) + " " +
                 std::to_string(driver->serial()));
  auto cycles = [&](std::size_t count) {
    auto run = std::make_shared<pg_run>();
    run->cycles = count;
    run->joiner = *joiner;
    run->join.reserve(count);
    run->visible.reserve(count);
    auto f = run->finished.get_future();
    if (auto r = otpp::cast(*m.a, *driver, pg_go{run}); !r) fail("cast: " + r.fail().message());
    if (f.wait_for(wait_bound) != std::future_status::ready) {
      fail("registry.pg: join/leave cycles did not finish (a join or leave not seen on B?)");
    }
    if (!run->error.empty()) fail("registry.pg: " + run->error);
    return run;
  };
  cycles(n(200));  // warm-up
  auto run = cycles(n(2000));
  std::snprintf(extra, sizeof extra,
                ",\"p99_us\":%.3f,\"visible_remote_p50_us\":%.3f,\"visible_remote_p99_us\":%.3f,"
                "\"cycles\":%zu",
                percentile(run->join, 0.99), percentile(run->visible, 0.50),
                percentile(run->visible, 0.99), run->join.size());
  print("registry.pg_join_p50_us", "us", percentile(run->join, 0.50), extra);
}

const char* const workload_ids[] = {"registry.remote_spawn", "registry.global", "registry.pg"};

// A workload id runs if it starts with a prefix, or a prefix starts with the id (the ids are
// plain prefixes of their result names: registry.global_whereis selects registry.global).
bool selected(const std::vector<std::string>& prefixes, const std::string& id) {
  if (prefixes.empty()) return true;
  for (const auto& p : prefixes) {
    if (id.rfind(p, 0) == 0 || p.rfind(id, 0) == 0) return true;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 3 && std::strcmp(argv[1], "--serve") == 0) {
    return serve(argv[2], otpp_bench::split_seeds(argc >= 4 ? argv[3] : ""));
  }
  std::vector<std::string> prefixes;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") {
      quick = true;
    } else if (a == "list") {
      for (const char* w : workload_ids) std::printf("%s\n", w);
      return 0;
    } else {
      prefixes.push_back(a);
    }
  }
  ::signal(SIGPIPE, SIG_IGN);
  otpp::set_log_level(otpp::log_level::error);
  char exe[4096];
  auto len = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (len <= 0) fail("cannot read /proc/self/exe");
  exe[len] = 0;
  self_exe = exe;
  if (selected(prefixes, "registry.remote_spawn")) remote_spawn_workload();
  if (selected(prefixes, "registry.global")) global_workload();
  if (selected(prefixes, "registry.pg")) pg_workload();
  return 0;
}
