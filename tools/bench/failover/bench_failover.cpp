// The "failover" benchmark group (tools/bench/README.md, issue 12): three node OS processes on
// 127.0.0.1 with the default cluster and downing settings; one of them is SIGKILLed (or
// SIGSTOPped: a hung node), and we time until every child that lived there answers a call by
// its global name again on a survivor (distributed supervisor), or until a cluster
// singleton's name answers from another node. otpp only: Erlang/OTP has no distributed
// supervisor to compare with (the nearest Erlang figures, detection times, are quoted in
// tools/bench/README.md, "Failover").
//
//   otpp_bench_failover [--reps N] [--quick] [--poll-ms MS] [--bound-ms MS] [NAME_PREFIX...]
//   otpp_bench_failover list                                                   (the ids)
//
// The driver (this process) is not a cluster member: it starts three node processes (this
// binary with --node, PR_SET_PDEATHSIG, stdin EOF = halt), a fresh cluster for every rep, and
// drives them through their stdin, one command a line, each answered by one line:
//   sync                   -> "sync <connected peers> <global registry peers>"
//   dsup SUP N             -> "ok": this node runs distributed supervisor SUP (N children of
//                             the worker behaviour, global names SUP.c<i>, round robin)
//   where NAME             -> "where <node id of NAME's holder>" | "where none"
//   names SUP VICTIM       -> "names <children on VICTIM> <running> <resolved here> <total>";
//                             remembers the global names of the children on VICTIM
//   name NAME              -> "ok": remembers just NAME (a singleton)
//   singleton NAME         -> "ok": this node manages singleton NAME (the worker behaviour)
//   poll VICTIM BOUND_MS   -> polls the remembered names by call until each answered from a
//                             node other than VICTIM: "polled <n> <first us> <last us> <calls>"
//                             (monotonic clock: the same in every process of the host), or
//                             "error poll: ..." after BOUND_MS
//   downat NODE            -> "downat <monotonic us of this node's node_down of NODE, or 0>"
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <poll.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <asio/use_future.hpp>

#include "common/bench_node.hpp"
#include "otpp/log.hpp"
#include "otpp/registry/join_cluster.hpp"
#include "otpp/runtime.hpp"
#include "otpp/supervisor/distributed.hpp"
#include "otpp/supervisor/singleton.hpp"

namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

const std::string secret = "otpp-bench-failover-secret-0123456789";
const std::string worker_behaviour = "otpp_bench.fo_worker";
const std::string sup_name = "fo";
const std::string singleton_name = "fo.singleton";

long long mono_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(steady::now().time_since_epoch())
      .count();
}

// A line's space-separated fields; a missing field reads as empty / 0.
std::vector<std::string> fields(const std::string& l) {
  std::vector<std::string> out;
  std::size_t at = 0;
  while (at < l.size()) {
    auto sp = l.find(' ', at);
    if (sp == std::string::npos) sp = l.size();
    if (sp > at) out.push_back(l.substr(at, sp - at));
    at = sp + 1;
  }
  return out;
}
std::string field(const std::vector<std::string>& f, std::size_t i) {
  return i < f.size() ? f[i] : std::string();
}
long long number(const std::vector<std::string>& f, std::size_t i) {
  return i < f.size() ? std::atoll(f[i].c_str()) : 0;
}

// ------------------------------------------------------------------ the node role
struct fo_args {
  std::string id;
  MSGPACK_DEFINE_MAP(id)
};
// Answers the id of the node it runs on (the poller checks it is not the victim's).
struct fo_ping {
  static constexpr std::string_view tag = "otpp_bench.fo_ping";
  using reply = std::string;
  OTPP_NO_FIELDS()
};
class fo_worker : public otpp::gen_server<fo_worker> {
 public:
  explicit fo_worker(fo_args) {}
  static void define_handlers(otpp::handlers<fo_worker>& h) {
    h.call<fo_ping>([](fo_worker& self, fo_ping) { return std::string(self.this_node().name()); });
  }
};

void reply(const std::string& line) {
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

// The remembered names polled by call until each answered from a survivor. Polling skips a
// name whose holder (this node's replica) is none or on the victim: such a call fails at once
// (noproc / nodedown) and would only load the node; the others get one call each (short
// timeout), retried at the next round if it failed. An answer is therefore seen at most one
// round (poll interval + the loop) plus one call after the child became callable.
struct poll_state {
  struct slot {
    otpp::global_name name;
    bool in_flight = false;
    long long answered_us = 0;  // 0: not yet
  };
  std::mutex mu;
  std::vector<slot> slots;
  std::size_t done = 0;
  std::uint64_t calls = 0;
};

std::string poll_names(otpp::node& nd, const std::vector<std::string>& names,
                       const std::string& victim, std::chrono::milliseconds bound,
                       std::chrono::microseconds interval) {
  auto st = std::make_shared<poll_state>();
  for (const auto& n : names) st->slots.push_back({otpp::global(n)});
  auto until = steady::now() + bound;
  std::vector<std::size_t> to_call;
  while (true) {
    to_call.clear();
    {
      std::lock_guard lock(st->mu);
      if (st->done == st->slots.size()) break;
      for (std::size_t i = 0; i < st->slots.size(); ++i) {
        auto& s = st->slots[i];
        if (s.answered_us || s.in_flight) continue;
        auto holder = otpp::whereis(nd, s.name);
        if (!holder || holder->node().name() == victim) continue;
        s.in_flight = true;
        ++st->calls;
        to_call.push_back(i);
      }
    }
    for (auto i : to_call) {
      otpp::call(nd, st->slots[i].name, fo_ping{}, 200ms,
                 [st, i, victim](otpp::result<std::string> r) {
                   auto at = mono_us();
                   std::lock_guard lock(st->mu);
                   auto& s = st->slots[i];
                   s.in_flight = false;
                   if (r && *r != victim && !s.answered_us) {
                     s.answered_us = at;
                     ++st->done;
                   }
                 });
    }
    if (steady::now() > until) {
      std::lock_guard lock(st->mu);
      std::string missing;
      std::size_t shown = 0;
      for (const auto& s : st->slots) {
        if (!s.answered_us && shown++ < 5) missing += " " + s.name.name;
      }
      return "error poll: " + std::to_string(st->slots.size() - st->done) + " of " +
             std::to_string(st->slots.size()) + " names did not answer within " +
             std::to_string(bound.count()) + " ms:" + missing;
    }
    std::this_thread::sleep_for(interval);
  }
  std::lock_guard lock(st->mu);
  long long first = 0, last = 0;
  for (const auto& s : st->slots) {
    first = first ? std::min(first, s.answered_us) : s.answered_us;
    last = std::max(last, s.answered_us);
  }
  return "polled " + std::to_string(st->slots.size()) + " " + std::to_string(first) + " " +
         std::to_string(last) + " " + std::to_string(st->calls);
}

int node_role(const std::string& name, const std::vector<std::string>& seeds,
              std::chrono::microseconds poll_interval) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() == 1) return 1;  // the driver is already gone
  ::signal(SIGPIPE, SIG_IGN);
  // Warnings would be hundreds of lines per failover ("child ... unreachable"): errors only,
  // unless OTPP_BENCH_NODE_LOG=info|warning (on stderr: to look into a slow rep).
  const char* lv = std::getenv("OTPP_BENCH_NODE_LOG");
  otpp::set_log_level(!lv                             ? otpp::log_level::error
                      : std::strcmp(lv, "info") == 0  ? otpp::log_level::info
                      : std::strcmp(lv, "debug") == 0 ? otpp::log_level::debug
                                                      : otpp::log_level::warning);
  otpp::node nd(
      {.name = name, .threads = otpp_bench::node_threads(), .idle_spin = otpp_bench::idle_spin()});
  nd.start();
  if (auto r = otpp::register_behaviour<fo_worker, fo_args>(nd, worker_behaviour); !r) {
    reply("ERROR register_behaviour: " + r.fail().message());
    return 1;
  }
  otpp::cluster::options o;  // the defaults (heartbeat, unreachable_after, downing, retries)
  o.seeds = seeds;
  o.transport.secret = secret;
  auto c = otpp::join_cluster(nd, o);
  if (!c) {
    reply("ERROR join_cluster: " + c.fail().message());
    return 1;
  }
  std::mutex down_mu;
  std::map<std::string, long long> down_at;  // node id -> first node_down seen here
  (*c)->subscribe([&down_mu, &down_at](const otpp::cluster::node_event& e) {
    if (e.kind != otpp::cluster::node_event_kind::node_down) return;
    auto at = mono_us();
    std::lock_guard lock(down_mu);
    down_at.emplace(e.node, at);
  });
  reply("ready");
  std::vector<std::string> names;  // what `poll` polls
  char line[1024];
  while (std::fgets(line, sizeof line, stdin)) {
    std::string l(line);
    if (!l.empty() && l.back() == '\n') l.pop_back();
    auto f = fields(l);
    auto cmd = field(f, 0), a1 = field(f, 1), a2 = field(f, 2);
    std::string out = "ok";
    if (cmd == "sync") {
      std::size_t peers = 0;
      for (const auto& m : (*c)->members()) peers += (m.connected && !m.self);
      out = "sync " + std::to_string(peers) + " " + std::to_string(otpp::global_stats(nd).peers);
    } else if (cmd == "dsup" && f.size() == 3) {
      otpp::dist_supervisor_spec spec;
      spec.name = a1;
      spec.where = otpp::placement::round_robin();
      spec.initial_hosts = 3;  // an even first placement over the three nodes
      // A node loss counts one restart per child lost: the default intensity (3 in 5 s) would
      // stop the supervisor at the first failover.
      spec.max_restarts = 100000;
      for (long long i = 0; i < number(f, 2); ++i) {
        auto id = "c" + std::to_string(i);
        spec.children.push_back(
            otpp::dist_child(id, worker_behaviour, fo_args{id}, spec.name + "." + id));
      }
      if (auto r = otpp::start_distributed_supervisor(nd, std::move(spec)); !r) {
        out = "error dsup: " + r.fail().message();
      }
    } else if (cmd == "where" && f.size() == 2) {
      auto p = otpp::whereis(nd, otpp::global(a1));
      out = p ? "where " + std::string(p->node().name()) : "where none";
    } else if (cmd == "names" && f.size() == 3) {
      auto r = otpp::which_dist_children(nd, a1, asio::use_future).get();
      std::size_t running = 0, resolved = 0, total = 0;
      names.clear();
      if (r) {
        total = r->size();
        for (const auto& k : *r) {
          if (k.state != otpp::dist_child_state::running) continue;
          ++running;
          auto gname = std::string(a1) + "." + k.id;
          auto p = otpp::whereis(nd, otpp::global(gname));
          resolved += p && *p == k.child;
          if (k.node == a2) names.push_back(gname);
        }
      }
      out = "names " + std::to_string(names.size()) + " " + std::to_string(running) + " " +
            std::to_string(resolved) + " " + std::to_string(total);
    } else if (cmd == "name" && f.size() == 2) {
      names = {a1};
    } else if (cmd == "singleton" && f.size() == 2) {
      auto spec = otpp::singleton(a1, worker_behaviour, fo_args{a1});
      if (auto r = otpp::start_singleton(nd, std::move(spec)); !r) {
        out = "error singleton: " + r.fail().message();
      }
    } else if (cmd == "poll" && f.size() == 3) {
      out = poll_names(nd, names, a1, std::chrono::milliseconds(number(f, 2)), poll_interval);
    } else if (cmd == "downat" && f.size() == 2) {
      std::lock_guard lock(down_mu);
      auto it = down_at.find(a1);
      out = "downat " + std::to_string(it == down_at.end() ? 0 : it->second);
    } else {
      out = "error unknown command: " + l;
    }
    reply(out);
  }
  // stdin closed: the driver is done (or gone). Halt at once: nothing here needs saving.
  std::_Exit(0);
}

// ------------------------------------------------------------------ the driver
std::string self_exe;
std::chrono::microseconds poll_interval = 2000us;

// Node processes alive, for the SIGKILL on every exit path (fail(), SIGTERM from run.sh's
// timeout); PR_SET_PDEATHSIG covers a SIGKILL of the driver.
std::array<std::atomic<pid_t>, 8> live{};
void track(pid_t p) {
  for (auto& s : live) {
    pid_t none = 0;
    if (s.compare_exchange_strong(none, p)) return;
  }
}
void untrack(pid_t p) {
  for (auto& s : live) {
    pid_t expected = p;
    s.compare_exchange_strong(expected, 0);
  }
}
void kill_all() {  // async-signal-safe
  for (auto& s : live) {
    pid_t p = s.exchange(0);
    if (p > 0) ::kill(p, SIGKILL);
  }
}
extern "C" void on_signal(int sig) {
  kill_all();
  ::_exit(128 + sig);
}

// A failure: one ERROR line, the node processes SIGKILLed, exit 1.
[[noreturn]] void fail(const std::string& what) {
  kill_all();
  std::printf("ERROR %s\n", what.c_str());
  std::fflush(stdout);
  std::_Exit(1);
}

struct node_proc {
  pid_t pid = -1;
  int in = -1, out = -1;
  std::string buf, id;

  std::optional<std::string> read_line(std::chrono::milliseconds bound) {
    auto until = steady::now() + bound;
    while (true) {
      auto nl = buf.find('\n');
      if (nl != std::string::npos) {
        auto l = buf.substr(0, nl);
        buf.erase(0, nl + 1);
        return l;
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - steady::now());
      if (left.count() <= 0) return std::nullopt;
      pollfd p{out, POLLIN, 0};
      int r = ::poll(&p, 1, static_cast<int>(left.count()));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return std::nullopt;
      char tmp[65536];
      auto got = ::read(out, tmp, sizeof tmp);
      if (got <= 0) return std::nullopt;
      buf.append(tmp, static_cast<std::size_t>(got));
    }
  }
  void send(const std::string& cmd) {
    auto l = cmd + "\n";
    if (::write(in, l.data(), l.size()) != static_cast<ssize_t>(l.size())) {
      fail(id + ": cannot write '" + cmd + "'");
    }
  }
  // The answer to a command sent before: fails on an error answer or none within `bound`.
  std::string answer(const std::string& cmd, std::chrono::milliseconds bound) {
    auto until = steady::now() + bound;
    while (true) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - steady::now());
      auto l = read_line(std::max(left, 0ms));
      if (!l)
        fail(id + ": no answer to '" + cmd + "' within " + std::to_string(bound.count()) + " ms");
      if (l->rfind("ERROR", 0) == 0 || l->rfind("error", 0) == 0) fail(id + ": " + *l);
      if (l->rfind("[", 0) == 0 || l->rfind("WARN", 0) == 0) {  // a log line
        std::fprintf(stderr, "%s: %s\n", id.c_str(), l->c_str());
        continue;
      }
      return *l;
    }
  }
  std::string ask(const std::string& cmd, std::chrono::milliseconds bound = 30s) {
    send(cmd);
    return answer(cmd, bound);
  }
  void signal(int sig) {
    if (pid > 0) ::kill(pid, sig);
  }
  void kill_now() {
    if (pid <= 0) return;
    ::kill(pid, SIGKILL);  // also ends a SIGSTOPped process
    ::waitpid(pid, nullptr, 0);
    untrack(pid);
    pid = -1;
  }

  static std::unique_ptr<node_proc> start(const std::string& id,
                                          const std::vector<std::string>& seeds) {
    int to_child[2], from_child[2];
    if (::pipe(to_child) != 0 || ::pipe(from_child) != 0) fail("pipe failed");
    std::string seed_arg;
    for (const auto& s : seeds) seed_arg += (seed_arg.empty() ? "" : ",") + s;
    auto poll_us = std::to_string(poll_interval.count());
    pid_t p = ::fork();
    if (p < 0) fail("fork failed");
    if (p == 0) {
      ::dup2(to_child[0], 0);
      ::dup2(from_child[1], 1);
      for (int fd : {to_child[0], to_child[1], from_child[0], from_child[1]}) ::close(fd);
      ::execl(self_exe.c_str(), self_exe.c_str(), "--node", id.c_str(), seed_arg.c_str(),
              poll_us.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    track(p);
    ::close(to_child[0]);
    ::close(from_child[1]);
    auto c = std::make_unique<node_proc>();
    c->pid = p;
    c->in = to_child[1];
    c->out = from_child[0];
    c->id = id;
    return c;
  }
  node_proc() = default;
  node_proc(const node_proc&) = delete;
  node_proc& operator=(const node_proc&) = delete;
  ~node_proc() {
    kill_now();
    if (in >= 0) ::close(in);
    if (out >= 0) ::close(out);
  }
};

// Three fresh node processes in full mesh, every global registry ready. Torn down (SIGKILL)
// when it goes out of scope.
struct cluster3 {
  std::vector<std::unique_ptr<node_proc>> nodes;

  cluster3() {
    using otpp_bench::id_of;
    // Three distinct free ports: the listeners are held open together while we pick.
    asio::io_context io;
    std::vector<std::unique_ptr<asio::ip::tcp::acceptor>> held;
    std::vector<std::uint16_t> ports;
    for (int i = 0; i < 3; ++i) {
      held.push_back(std::make_unique<asio::ip::tcp::acceptor>(
          io, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)));
      ports.push_back(held.back()->local_endpoint().port());
    }
    held.clear();
    auto first = id_of("a", ports[0]);
    nodes.push_back(node_proc::start(first, {}));
    (void)nodes[0]->answer("start", 20s);  // "ready": its listener is up
    nodes.push_back(node_proc::start(id_of("b", ports[1]), {first}));
    nodes.push_back(node_proc::start(id_of("c", ports[2]), {first}));
    (void)nodes[1]->answer("start", 20s);
    (void)nodes[2]->answer("start", 20s);
    auto until = steady::now() + 20s;
    while (true) {
      bool ok = true;
      for (auto& n : nodes) ok = ok && n->ask("sync") == "sync 2 2";
      if (ok) break;
      if (steady::now() > until) fail("the 3-node mesh did not form in 20 s");
      std::this_thread::sleep_for(5ms);
    }
  }
  node_proc* by_id(const std::string& id) {
    for (auto& n : nodes) {
      if (n->id == id) return n.get();
    }
    fail("no node " + id);
  }
};

struct sample {
  double total_ms = 0, detection_ms = 0, restart_ms = 0;
  std::size_t lost = 0;
};

// Kills `victim` with `sig`, the poller (armed first) polls; the times since the kill.
sample kill_and_poll(cluster3& cl, node_proc* victim, node_proc* poller, int sig,
                     std::chrono::milliseconds bound) {
  auto cmd = "poll " + victim->id + " " + std::to_string(bound.count());
  poller->send(cmd);  // armed before the kill: it skips holders on the victim
  auto killed = mono_us();
  victim->signal(sig);
  auto f = fields(poller->answer(cmd, bound + 10s));
  if (f.size() < 4 || f[0] != "polled") fail("poll: unexpected answer");
  sample s;
  s.total_ms = static_cast<double>(number(f, 3) - killed) / 1000.0;
  long long down = 0;  // node_down seen on every survivor
  for (auto& n : cl.nodes) {
    if (n.get() == victim) continue;
    auto d = number(fields(n->ask("downat " + victim->id)), 1);
    if (d == 0) fail(n->id + " saw no node_down of " + victim->id);
    down = std::max(down, d);
  }
  s.detection_ms = static_cast<double>(down - killed) / 1000.0;
  s.restart_ms = s.total_ms - s.detection_ms;
  return s;
}

// One failover of a distributed supervisor's children: `children` spread round robin, a node
// killed with `sig` (the supervisor's own node if `kill_supervisor_node`, else another).
sample dsup_failover(std::size_t children, int sig, bool kill_supervisor_node,
                     std::chrono::milliseconds bound) {
  cluster3 cl;
  for (auto& n : cl.nodes) (void)n->ask("dsup " + sup_name + " " + std::to_string(children));
  auto sup_holder = [&] {
    auto f = fields(cl.nodes[0]->ask("where " + otpp::dsup_global_name(sup_name)));
    return f.size() > 1 && f[1] != "none" ? f[1] : std::string();
  };
  // Every child running, and the supervisor known to every node.
  auto until = steady::now() + 120s;
  std::string sup;
  while (true) {
    sup = sup_holder();
    if (!sup.empty()) {
      auto f = fields(cl.by_id(sup)->ask("names " + sup_name + " none", 30s));
      if (static_cast<std::size_t>(number(f, 2)) == children) break;
    }
    if (steady::now() > until) fail("the children did not all start within 120 s");
    std::this_thread::sleep_for(20ms);
  }
  node_proc* victim = cl.by_id(sup);
  if (!kill_supervisor_node) {
    for (auto& n : cl.nodes) {
      if (n->id != sup) victim = n.get();
    }
  }
  node_proc* poller = nullptr;  // a survivor, preferably not the supervisor's node
  for (auto& n : cl.nodes) {
    if (n.get() != victim && (!poller || n->id != sup)) poller = n.get();
  }
  // The poller's replica holds every child's name: the names of the victim's children noted.
  std::size_t lost = 0;
  until = steady::now() + 30s;
  while (true) {
    auto f = fields(poller->ask("names " + sup_name + " " + victim->id, 30s));
    lost = static_cast<std::size_t>(number(f, 1));
    if (static_cast<std::size_t>(number(f, 2)) == children &&
        static_cast<std::size_t>(number(f, 3)) == children && lost > 0) {
      break;
    }
    if (steady::now() > until) fail("the poller's replica does not hold every child's name");
    std::this_thread::sleep_for(20ms);
  }
  auto s = kill_and_poll(cl, victim, poller, sig, bound);
  s.lost = lost;
  return s;
}

// One singleton takeover: the singleton managed on all three nodes, its holder's node
// SIGKILLed, until the name answers from another node.
sample singleton_takeover(std::chrono::milliseconds bound) {
  cluster3 cl;
  for (auto& n : cl.nodes) (void)n->ask("singleton " + singleton_name);
  auto until = steady::now() + 30s;
  std::string holder;
  while (true) {
    std::vector<std::string> seen;
    for (auto& n : cl.nodes) seen.push_back(field(fields(n->ask("where " + singleton_name)), 1));
    if (seen[0] != "none" &&
        std::all_of(seen.begin(), seen.end(), [&](const auto& s) { return s == seen[0]; })) {
      holder = seen[0];
      break;
    }
    if (steady::now() > until) fail("the singleton did not start within 30 s");
    std::this_thread::sleep_for(10ms);
  }
  node_proc* victim = cl.by_id(holder);
  node_proc* poller = nullptr;
  for (auto& n : cl.nodes) {
    if (n.get() != victim) poller = n.get();
  }
  (void)poller->ask("name " + singleton_name);
  auto s = kill_and_poll(cl, victim, poller, SIGKILL, bound);
  s.lost = 1;
  return s;
}

// ------------------------------------------------------------------ results
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  auto n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}
double max_of(const std::vector<double>& v) {
  return *std::max_element(v.begin(), v.end());
}
double min_of(const std::vector<double>& v) {
  return *std::min_element(v.begin(), v.end());
}

struct settings {
  long long heartbeat_ms, unreachable_ms, stable_ms;
  std::string strategy;
};
settings defaults() {
  otpp::cluster::options o;
  return {o.heartbeat_interval.count(), o.unreachable_after.count(),
          std::chrono::duration_cast<std::chrono::milliseconds>(o.downing.stable_after).count(),
          std::string(otpp::cluster::to_string(o.downing.strategy))};
}

// NAME (median total), NAME.detection, NAME.restart [, NAME.over_bound]: median over the reps,
// extras max_ms, min_ms, reps and the settings.
void report(const std::string& name, const std::vector<sample>& ss, bool hung) {
  auto cfg = defaults();
  std::vector<double> total, det, rst, over;
  std::size_t lost = 0;
  for (const auto& s : ss) {
    total.push_back(s.total_ms);
    det.push_back(s.detection_ms);
    rst.push_back(s.restart_ms);
    over.push_back(s.total_ms - static_cast<double>(cfg.unreachable_ms + cfg.stable_ms));
    lost = std::max(lost, s.lost);
  }
  auto extra = [&](const std::vector<double>& v) {
    char b[128];
    std::snprintf(b, sizeof b, ",\"max_ms\":%.3f,\"min_ms\":%.3f,\"reps\":%zu", max_of(v),
                  min_of(v), v.size());
    return std::string(b);
  };
  char more[320];
  std::snprintf(
      more, sizeof more,
      ",\"lost\":%zu,\"poll_ms\":%.1f,\"heartbeat_ms\":%lld,\"unreachable_after_ms\":%lld,"
      "\"stable_after_ms\":%lld,\"downing\":\"%s\"",
      lost, static_cast<double>(poll_interval.count()) / 1000.0, cfg.heartbeat_ms,
      cfg.unreachable_ms, cfg.stable_ms, cfg.strategy.c_str());
  otpp_bench::print(name, "ms", median(total), extra(total) + more);
  otpp_bench::print(name + ".detection", "ms", median(det), extra(det));
  otpp_bench::print(name + ".restart", "ms", median(rst), extra(rst));
  if (hung) {
    char b[64];
    std::snprintf(b, sizeof b, ",\"bound_ms\":%lld", cfg.unreachable_ms + cfg.stable_ms);
    otpp_bench::print(name + ".over_bound", "ms", median(over), extra(over) + b);
  }
}

struct measurement {
  const char* id;
  const char* what;
  std::function<sample()> once;
  bool hung = false;
};

bool selected(const std::vector<std::string>& prefixes, const std::string& id) {
  if (prefixes.empty()) return true;
  for (const auto& p : prefixes) {
    if (id.rfind(p, 0) == 0 || p.rfind(id + ".", 0) == 0) return true;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 3 && std::strcmp(argv[1], "--node") == 0) {
    auto interval = std::chrono::microseconds(argc >= 5 ? std::atoll(argv[4]) : 2000);
    return node_role(argv[2], otpp_bench::split_seeds(argc >= 4 ? argv[3] : ""), interval);
  }
  // A failover's poll (--bound-ms): past the detection bound for SIGSTOP; a poll that does not
  // finish in it is an ERROR.
  std::chrono::milliseconds bound = 30000ms;
  const std::vector<measurement> all = {
      {"failover.sigkill.10", "10 children, SIGKILL of a node without the supervisor",
       [&] { return dsup_failover(10, SIGKILL, false, bound); }},
      {"failover.sigkill.1000", "1000 children, SIGKILL of a node without the supervisor",
       [&] { return dsup_failover(1000, SIGKILL, false, bound); }},
      {"failover.sigkill_supnode.1000",
       "1000 children, SIGKILL of the supervisor's node (takeover, adoption, restarts)",
       [&] { return dsup_failover(1000, SIGKILL, true, bound); }},
      {"failover.sigstop.10", "10 children, SIGSTOP of a node without the supervisor",
       [&] { return dsup_failover(10, SIGSTOP, false, bound); }, true},
      {"singleton.takeover", "a cluster singleton, SIGKILL of its node",
       [&] { return singleton_takeover(bound); }},
  };
  int reps = 5;
  std::vector<std::string> prefixes;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") {
      reps = 1;
    } else if (a == "--reps" && i + 1 < argc) {
      reps = std::atoi(argv[++i]);
    } else if (a == "--bound-ms" && i + 1 < argc) {
      bound = std::chrono::milliseconds(std::atoll(argv[++i]));
    } else if (a == "--poll-ms" && i + 1 < argc) {
      poll_interval =
          std::chrono::microseconds(static_cast<long long>(std::atof(argv[++i]) * 1000.0));
    } else if (a == "list") {
      for (const auto& m : all) std::printf("%s\n", m.id);
      return 0;
    } else if (a.rfind("--", 0) == 0) {
      std::fprintf(stderr, "otpp_bench_failover: unknown option %s\n", a.c_str());
      return 2;
    } else {
      prefixes.push_back(a);
    }
  }
  if (reps < 1 || poll_interval.count() < 100 || bound.count() < 1) {
    std::fprintf(stderr, "otpp_bench_failover: --reps >= 1, --poll-ms >= 0.1, --bound-ms >= 1\n");
    return 2;
  }
  ::signal(SIGPIPE, SIG_IGN);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) ::signal(s, on_signal);
  otpp::set_log_level(otpp::log_level::error);
  char exe[4096];
  auto len = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (len <= 0) fail("cannot read /proc/self/exe");
  exe[len] = 0;
  self_exe = exe;
  auto cfg = defaults();
  std::printf(
      "# failover: 3 node processes on 127.0.0.1, default cluster settings: heartbeat %lld ms, "
      "unreachable_after %lld ms, downing %s after stable_after %lld ms (hung-node bound %lld "
      "ms); poll every %.1f ms; %d rep(s), a fresh cluster each\n",
      cfg.heartbeat_ms, cfg.unreachable_ms, cfg.strategy.c_str(), cfg.stable_ms,
      cfg.unreachable_ms + cfg.stable_ms, static_cast<double>(poll_interval.count()) / 1000.0,
      reps);
  std::fflush(stdout);
  for (const auto& m : all) {
    if (!selected(prefixes, m.id)) continue;
    std::vector<sample> ss;
    for (int r = 0; r < reps; ++r) {
      auto t0 = steady::now();
      ss.push_back(m.once());
      std::printf("# %s rep %d: %.1f ms (detection %.1f, restart %.1f, %zu lost), %.1f s\n", m.id,
                  r + 1, ss.back().total_ms, ss.back().detection_ms, ss.back().restart_ms,
                  ss.back().lost, std::chrono::duration<double>(steady::now() - t0).count());
      std::fflush(stdout);
    }
    report(m.id, ss, m.hung);
  }
  return 0;
}
