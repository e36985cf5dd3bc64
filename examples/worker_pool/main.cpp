// The distributed worker pool, otpp's main example (tools/demo.sh builds and runs it).
//
// What it shows: three node processes on 127.0.0.1 join through a seed list; on each, the
// `worker` behaviour is registered and the distributed supervisor "pool" starts, which spreads
// 12 workers (gen_servers started by behaviour name, each under a global name) round robin over
// the three. This director calls them by global name, then kills one node with SIGKILL and
// times the failover: when the supervisor's node saw the node go, when the supervisor listed
// every worker running again, when every lost worker answered again by its global name. It
// checks that the lost workers moved to the survivors with a higher epoch while the others kept
// their process, serves another round, stops the nodes with SIGTERM (they leave the cluster and
// exit 0) and exits 0, in a few seconds. Every wait is bounded: on any failure it says what went
// wrong, kills its node processes and exits 1.
//
// Run: tools/demo.sh, or after a build: build/<dir>/examples/worker_pool/otpp_worker_pool
// (no arguments; it starts its node processes itself, as `otpp_worker_pool --node <id> <seeds>`).
// OTPP_WORKER_POOL_PATIENCE=<factor> multiplies every bound (a very slow machine);
// OTPP_WORKER_POOL_LOG=1 shows the nodes' logs; OTPP_WORKER_POOL_SECRET sets the shared secret
// (default: a random one per run).
//
// The director is a fourth cluster member (a hidden node keeps no replica of the global names,
// and callers find workers by name): it registers no behaviour and runs no child host of the
// pool, so the supervisor never places a worker on it. It is what a client of the pool is.
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <otpp/cluster/cluster.hpp>
#include <otpp/registry/join_cluster.hpp>
#include <otpp/runtime.hpp>
#include <otpp/supervisor/distributed.hpp>

#include "pool.hpp"

extern char** environ;

namespace {

using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

double patience = 1.0;  // OTPP_WORKER_POOL_PATIENCE

clock_type::duration bound(std::chrono::seconds s) {
  return std::chrono::duration_cast<clock_type::duration>(s * patience);
}
std::string text(clock_type::duration d) {  // "30 s", "0 s"
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g s", std::chrono::duration<double>(d).count());
  return buf;
}
double ms_between(clock_type::time_point from, clock_type::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}
long long us_of(clock_type::time_point t) {  // as the nodes print it (CLOCK_MONOTONIC)
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

std::vector<std::string> words(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

std::string name_of(std::error_code e) {  // "noproc" out of "noproc: no such process or name"
  auto m = e.message();
  return m.substr(0, m.find(':'));
}

// One node process as the director sees it: its stdout and the lines not consumed yet.
struct node_proc {
  std::string name, id;
  pid_t os_pid = -1;
  int from = -1;
  std::string partial;
  std::vector<std::string> unread;
  std::uint32_t creation = 0;
};
std::vector<std::unique_ptr<node_proc>> nodes;  // killed on failure

[[noreturn]] void fail(const std::string& why) {
  std::printf("worker_pool FAILED: %s\n", why.c_str());
  std::string killed;
  for (auto& n : nodes) {
    if (n->os_pid <= 0) continue;
    ::kill(n->os_pid, SIGKILL);
    ::waitpid(n->os_pid, nullptr, 0);  // reaped: nothing is left behind
    killed += " " + std::to_string(n->os_pid);
    n->os_pid = -1;
  }
  if (!killed.empty()) std::printf("killed its node processes (OS pids%s)\n", killed.c_str());
  std::fflush(stdout);
  std::_Exit(1);  // not exit(): the director's node threads still run
}

// Waits for the node's exit: its exit code (128 + signal if a signal ended it).
int reap(node_proc& n, clock_type::duration within) {
  auto until = clock_type::now() + within;
  int status = 0;
  while (::waitpid(n.os_pid, &status, WNOHANG) == 0) {
    if (clock_type::now() > until) fail(n.name + " did not exit within " + text(within));
    std::this_thread::sleep_for(5ms);
  }
  n.os_pid = -1;
  ::close(n.from);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// The first line of `n` (new or not consumed yet) that `match` accepts, within `within`.
std::vector<std::string> await(node_proc& n,
                               const std::function<bool(const std::vector<std::string>&)>& match,
                               const std::string& what, clock_type::duration within) {
  auto until = clock_type::now() + within;
  for (std::size_t i = 0;;) {
    for (; i < n.unread.size(); ++i) {
      auto w = words(n.unread[i]);
      if (match(w)) {
        n.unread.erase(n.unread.begin() + static_cast<std::ptrdiff_t>(i));
        return w;
      }
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - clock_type::now());
    pollfd p{n.from, POLLIN, 0};
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) {
      fail(n.name + " did not report " + what + " within " + text(within));
    }
    char buf[4096];
    auto got = ::read(n.from, buf, sizeof buf);
    if (got <= 0) {
      int code = reap(n, 10s);
      fail(n.name + " exited (code " + std::to_string(code) + ") before it reported " + what);
    }
    n.partial.append(buf, static_cast<std::size_t>(got));
    for (std::size_t eol; (eol = n.partial.find('\n')) != std::string::npos;) {
      n.unread.push_back(n.partial.substr(0, eol));
      n.partial.erase(0, eol + 1);
    }
  }
}

std::uint16_t free_port() {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (s < 0 || ::bind(s, reinterpret_cast<sockaddr*>(&a), len) != 0 ||
      ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    fail("no free port on 127.0.0.1");
  }
  ::close(s);
  return ntohs(a.sin_port);
}

// Starts `otpp_worker_pool --node <id> <seeds>` (this same program) with its stdout piped here.
node_proc& spawn_node(const std::string& name, const std::string& id, const std::string& seeds) {
  auto n = std::make_unique<node_proc>();
  n->name = name;
  n->id = id;
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) fail("pipe");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
  std::string self = "/proc/self/exe", mode = "--node";
  std::vector<char*> argv{self.data(), mode.data(), n->id.data(), const_cast<char*>(seeds.c_str()),
                          nullptr};
  int rc = ::posix_spawn(&n->os_pid, self.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(out[1]);
  n->from = out[0];
  if (rc != 0) {
    n->os_pid = -1;
    fail("cannot start " + name + ": " + std::to_string(rc));
  }
  nodes.push_back(std::move(n));
  return *nodes.back();
}

// The director's own view of the cluster: its node events, for bounded waits.
class event_log {
 public:
  void add(const otpp::cluster::node_event& e) {
    std::lock_guard lock(mu_);
    events_.push_back(e);
    last_ = clock_type::now();
    cv_.notify_all();
  }
  // Waits until no event came for `quiet`; false after `within`.
  bool settle(clock_type::duration quiet, clock_type::duration within) {
    auto until = clock_type::now() + within;
    std::unique_lock lock(mu_);
    while (clock_type::now() - last_ < quiet) {
      if (clock_type::now() > until) return false;
      cv_.wait_until(lock, std::min(until, last_ + quiet));
    }
    return true;
  }
  // Waits for an event `match` accepts; nullopt after `within`.
  std::optional<otpp::cluster::node_event> wait(
      const std::function<bool(const otpp::cluster::node_event&)>& match,
      clock_type::duration within) {
    std::unique_lock lock(mu_);
    std::optional<otpp::cluster::node_event> found;
    cv_.wait_for(lock, within, [&] {
      for (const auto& e : events_) {
        if (match(e)) found = e;
      }
      return found.has_value();
    });
    return found;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<otpp::cluster::node_event> events_;
  clock_type::time_point last_ = clock_type::now();
};

using children = std::vector<otpp::dist_child_info>;

std::optional<children> which(otpp::node& d) {
  auto r = otpp::which_dist_children(d, pool::supervisor, asio::use_future).get();
  if (!r) return std::nullopt;  // noproc while the supervisor starts (or moves)
  return std::move(*r);
}

std::string short_name(const std::string& node_id) {  // "n1" out of "n1@127.0.0.1:4370"
  return node_id.substr(0, node_id.find('@'));
}

std::uint64_t job_input(int i) {
  return 1000 + 37 * static_cast<std::uint64_t>(i);
}

// One call per worker, all in flight at once, by global name; the replies by worker id.
std::map<std::string, pool::job_done> serve_round(otpp::node& d, const std::string& title,
                                                  double* ms) {
  auto began = clock_type::now();
  std::vector<std::future<otpp::result<pool::job_done>>> replies;
  for (int i = 1; i <= pool::workers; ++i) {
    auto name = pool::global_name_of(pool::worker_id(i));
    replies.push_back(otpp::call(d, otpp::global(name), pool::job{job_input(i)},
                                 std::chrono::duration_cast<std::chrono::milliseconds>(bound(10s)),
                                 asio::use_future));
  }
  std::map<std::string, pool::job_done> out;
  for (int i = 1; i <= pool::workers; ++i) {
    auto id = pool::worker_id(i);
    auto r = replies[static_cast<std::size_t>(i - 1)].get();
    if (!r) fail(title + ": pool." + id + " answered " + name_of(r.error()));
    if (r->worker != id || r->steps != pool::collatz_steps(job_input(i))) {
      fail(title + ": pool." + id + " answered a wrong result");
    }
    out[id] = std::move(*r);
  }
  *ms = ms_between(began, clock_type::now());
  return out;
}

std::string served_per_node(const std::map<std::string, pool::job_done>& replies) {
  std::map<std::string, int> per_node;
  for (const auto& [id, r] : replies) ++per_node[short_name(r.node)];
  std::string s;
  for (const auto& [node, count] : per_node) {
    s += (s.empty() ? "" : ", ") + node + " served " + std::to_string(count);
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 4 && std::string(argv[1]) == "--node") return pool::run_node(argv[2], argv[3]);
  if (const char* p = std::getenv("OTPP_WORKER_POOL_PATIENCE")) {
    char* end = nullptr;
    patience = std::strtod(p, &end);
    if (end == p || *end != '\0' || !(patience >= 0 && patience <= 100)) {
      std::fprintf(stderr, "OTPP_WORKER_POOL_PATIENCE must be a factor from 0 to 100, not '%s'\n",
                   p);
      return 2;
    }
  }
  if (argc != 1) {
    std::fprintf(stderr, "usage: %s  (no arguments: it starts its own nodes)\n", argv[0]);
    return 2;
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  std::signal(SIGPIPE, SIG_IGN);
  // A last resort: the nodes die with this process (PR_SET_PDEATHSIG).
  ::alarm(static_cast<unsigned>(180 * std::max(1.0, patience)));
  auto began = clock_type::now();

  // The nodes authenticate each other with a shared secret: a fresh random one per run, unless
  // OTPP_WORKER_POOL_SECRET gives one. The nodes read it from the environment (not argv: other
  // users can read a process's arguments).
  std::string secret;
  const char* secret_from = "a secret made for this run";
  if (const char* s = std::getenv(pool::secret_env)) {
    secret = s;
    secret_from = "the secret in OTPP_WORKER_POOL_SECRET";
  } else {
    std::random_device rd;
    for (int i = 0; i < 32; ++i) secret += "0123456789abcdef"[rd() % 16];
    ::setenv(pool::secret_env, secret.c_str(), 1);
  }

  std::printf(
      "otpp worker pool: 3 node processes on 127.0.0.1, %d workers under a distributed "
      "supervisor\n",
      pool::workers);
  std::vector<std::string> ids;
  for (const char* name : {"n1", "n2", "n3"}) {
    ids.push_back(std::string(name) + "@127.0.0.1:" + std::to_string(free_port()));
  }
  // Each node's seed list: the other two (any one that answers is enough).
  for (std::size_t i = 0; i < ids.size(); ++i) {
    std::string seeds;
    for (std::size_t j = 0; j < ids.size(); ++j) {
      if (j != i) seeds += (seeds.empty() ? "" : ",") + ids[j];
    }
    spawn_node(short_name(ids[i]), ids[i], seeds);
  }
  for (auto& n : nodes) {
    auto w = await(
        *n, [](const auto& w) { return w.size() == 3 && w[0] == "ready"; }, "ready", bound(30s));
    n->creation = static_cast<std::uint32_t>(std::stoul(w[2]));
  }
  auto& n1 = *nodes[0];
  auto& n2 = *nodes[1];
  auto& n3 = *nodes[2];
  std::printf("started %s, %s, %s (OS pids %d %d %d), each with the other two as seeds and %s\n",
              n1.id.c_str(), n2.id.c_str(), n3.id.c_str(), n1.os_pid, n2.os_pid, n3.os_pid,
              secret_from);

  // The director joins as a member that hosts nothing: it only calls.
  otpp::set_log_level(std::getenv("OTPP_WORKER_POOL_LOG") ? otpp::log_level::info
                                                          : otpp::log_level::error);
  std::string director_id = "director@127.0.0.1:" + std::to_string(free_port());
  event_log events;  // outlives the node that feeds it
  otpp::node director({.name = director_id, .threads = 2});
  director.start();
  otpp::cluster::options o;
  o.seeds = ids;
  o.transport.secret = secret;
  o.unreachable_after = pool::unreachable_after;
  o.on_event = [&events](const otpp::cluster::node_event& e) { events.add(e); };
  auto cluster = otpp::join_cluster(director, o);
  if (!cluster) fail("the director cannot join: " + cluster.error().message());
  for (auto& n : nodes) {
    auto up = events.wait(
        [&](const auto& e) {
          return e.kind == otpp::cluster::node_event_kind::node_up && e.node == n->id;
        },
        bound(30s));
    if (!up) fail("the director did not see " + n->name + " up within " + text(bound(30s)));
  }
  auto all_up = clock_type::now();
  // Joining through several seeds, a node may reach a member twice (as a seed and as a member
  // its seed told it of); the newer connection replaces the older, and a call sent in that
  // moment answers nodedown. The story starts once the director's view was quiet for 500 ms.
  if (!events.settle(500ms, bound(30s))) {
    fail("the director's view of the cluster did not settle within " + text(bound(30s)));
  }
  std::printf(
      "%s joined too: a member with no child host, so no worker runs there; 4 members "
      "up %.0f ms after the first start\n",
      director_id.c_str(), ms_between(began, all_up));

  // The supervisor places the workers once its host runs on all three nodes. Each name reaches
  // this director's replica from the worker's own node, which may be a moment after the
  // supervisor (on another node) lists the worker: both are awaited.
  children before;
  {
    auto until = clock_type::now() + bound(60s);
    while (true) {
      auto w = which(director);
      if (w && w->size() == static_cast<std::size_t>(pool::workers) &&
          std::all_of(w->begin(), w->end(), [&](const auto& c) {
            auto named = otpp::whereis(director, otpp::global(pool::global_name_of(c.id)));
            return c.state == otpp::dist_child_state::running && named && *named == c.child;
          })) {
        before = std::move(*w);
        break;
      }
      if (clock_type::now() > until) {
        fail("the workers were not all running and known by name within " + text(bound(60s)));
      }
      std::this_thread::sleep_for(20ms);
    }
  }
  auto sup_pid = otpp::whereis(director, otpp::global(otpp::dsup_global_name(pool::supervisor)));
  if (!sup_pid) fail("the supervisor process has no global name");
  std::string sup_node_id(sup_pid->node().name());
  std::map<std::string, std::vector<std::string>> placed;  // node id -> worker ids
  for (const auto& c : before) placed[c.node].push_back(c.id);
  std::printf(
      "%d workers running %.0f ms after the first start; the supervisor process runs on "
      "%s\n",
      pool::workers, ms_between(began, clock_type::now()), short_name(sup_node_id).c_str());
  for (auto& n : nodes) {
    std::string list;
    for (const auto& id : placed[n->id]) list += " " + id;
    std::printf("  %s runs%s\n", n->name.c_str(), list.c_str());
  }

  double ms = 0;
  auto round1 = serve_round(director, "round 1", &ms);
  std::printf("round 1: %d jobs by global name (pool.w1 .. pool.w%d) in %.1f ms: %s\n",
              pool::workers, pool::workers, ms, served_per_node(round1).c_str());

  // The victim: a node that does not run the supervisor process, the one with the most workers
  // (the last such on a tie). Killing the supervisor's node as well would add its takeover to
  // the story (tests/cluster/distributed_multiprocess_test.cpp covers that); here the story is
  // the workers' failover.
  node_proc* victim = nullptr;
  node_proc* sup_node = nullptr;
  for (auto& n : nodes) {
    if (n->id == sup_node_id) {
      sup_node = n.get();
    } else if (!victim || placed[n->id].size() >= placed[victim->id].size()) {
      victim = n.get();
    }
  }
  if (!sup_node || !victim) fail("the supervisor process runs on no pool node");
  std::vector<node_proc*> survivors;
  for (auto& n : nodes) {
    if (n.get() != victim) survivors.push_back(n.get());
  }
  std::set<std::string> lost(placed[victim->id].begin(), placed[victim->id].end());
  std::printf(
      "kill -9 %s (OS pid %d): it runs %zu workers but not the supervisor process, so "
      "this is the workers' failover alone\n",
      victim->name.c_str(), victim->os_pid, lost.size());

  auto killed_at = clock_type::now();
  ::kill(victim->os_pid, SIGKILL);
  std::set<std::string> answering;
  std::optional<clock_type::time_point> all_running_at, all_answering_at;
  children after;
  auto until = killed_at + bound(60s);
  while (!all_running_at || !all_answering_at) {
    if (clock_type::now() > until) {
      std::string what = all_answering_at
                             ? "the supervisor did not list every worker running on the survivors"
                             : "the lost workers did not answer by name from the survivors";
      fail(what + " within " + text(bound(60s)));
    }
    if (!all_answering_at) {
      // A health check by global name (where, not a job: jobs count as served).
      for (const auto& id : lost) {
        if (answering.count(id)) continue;
        auto r = otpp::call(director, otpp::global(pool::global_name_of(id)), pool::where{},
                            std::chrono::duration_cast<std::chrono::milliseconds>(bound(5s)),
                            asio::use_future)
                     .get();
        // noproc (name gone, not back yet) and nodedown (still the dead pid) come at once.
        if (r && *r != victim->id) answering.insert(id);
      }
      if (answering.size() == lost.size()) all_answering_at = clock_type::now();
    }
    if (!all_running_at) {
      auto w = which(director);
      if (w && w->size() == before.size() && std::all_of(w->begin(), w->end(), [&](const auto& c) {
            return c.state == otpp::dist_child_state::running && c.node != victim->id;
          })) {
        all_running_at = clock_type::now();
        after = std::move(*w);
      }
    }
    std::this_thread::sleep_for(2ms);
  }
  auto noticed = await(
      *sup_node,
      [&](const auto& w) {
        return w.size() == 6 && w[0] == "event" && w[1] == "node_down" && w[2] == victim->id;
      },
      "node_down of " + victim->name, bound(30s));
  if (int code = reap(*victim, bound(10s)); code != 128 + SIGKILL) {
    fail(victim->name + " ended with " + std::to_string(code) + ", not by SIGKILL");
  }
  // In the order they happened.
  std::vector<std::pair<double, std::string>> steps{
      {static_cast<double>(std::stoll(noticed[5]) - us_of(killed_at)) / 1000.0,
       sup_node->name + " (the supervisor's node) saw node_down " + victim->name + ", reason " +
           noticed[4]},
      {ms_between(killed_at, *all_running_at),
       "the supervisor lists all " + std::to_string(pool::workers) +
           " workers running again, none on " + victim->name},
      {ms_between(killed_at, *all_answering_at),
       "every lost worker answers by its global name again"}};
  std::sort(steps.begin(), steps.end());
  for (const auto& [at, what] : steps) std::printf("  after %6.1f ms: %s\n", at, what.c_str());

  // Where the lost ones went, with their new epochs; the others must be the same processes.
  std::map<std::string, std::string> moved_to;  // node id -> "w3 (epoch 1 -> 2), ..."
  int kept = 0;
  for (std::size_t i = 0; i < before.size(); ++i) {
    const auto &b = before[i], &a = after[i];
    if (a.id != b.id) fail("which_dist_children changed its order");
    if (lost.count(b.id)) {
      if (a.node == victim->id || a.epoch <= b.epoch) {
        fail(b.id + " was not restarted elsewhere with a higher epoch");
      }
      // Every start attempt takes the next epoch: a gap counts the attempts that failed (e.g.
      // already_registered, when the target had not yet seen the node go and still held the
      // dead worker's name), each retried after a backoff.
      auto& s = moved_to[a.node];
      s += (s.empty() ? "" : ", ") + b.id + " (epoch " + std::to_string(b.epoch) + " -> " +
           std::to_string(a.epoch);
      if (auto failed = a.epoch - b.epoch - 1; failed > 0) {
        s += ", after " + std::to_string(failed) + " failed start" + (failed > 1 ? "s" : "");
      }
      s += ")";
    } else {
      if (a.child != b.child || a.epoch != b.epoch)
        fail(b.id + " was restarted, yet its node lives");
      ++kept;
    }
  }
  for (const auto& [node, list] : moved_to) {
    std::printf("  moved to %s: %s\n", short_name(node).c_str(), list.c_str());
  }
  std::printf("  the other %d kept their process (same pid, same epoch): not restarted\n", kept);

  auto round2 = serve_round(director, "round 2", &ms);
  for (const auto& [id, r] : round2) {
    if (r.node == victim->id) fail(id + " answered from the killed node");
    // A worker that stayed counts its second job (same process, state kept); a moved one, a
    // new process, its first.
    if (r.served != (lost.count(id) ? 1u : 2u)) {
      fail(id + " served " + std::to_string(r.served) + " jobs, which its history cannot explain");
    }
  }
  std::printf(
      "round 2: %d jobs in %.1f ms: %s; the %d that stayed count their 2nd job (state "
      "kept), the %zu moved their 1st\n",
      pool::workers, ms, served_per_node(round2).c_str(), kept, lost.size());

  // Graceful stop: each node leaves the cluster (its peers see graceful_shutdown) and exits 0.
  for (auto* n : survivors) ::kill(n->os_pid, SIGTERM);
  for (auto* n : survivors) {
    auto left = events.wait(
        [&](const auto& e) {
          return e.kind == otpp::cluster::node_event_kind::node_down && e.node == n->id &&
                 e.creation == n->creation;
        },
        bound(30s));
    if (!left) fail("the director did not see " + n->name + " leave within " + text(bound(30s)));
    if (left->reason != otpp::errc::graceful_shutdown) {
      fail(n->name + " went down with " + name_of(otpp::make_error_code(left->reason)) +
           ", not graceful_shutdown");
    }
    if (int code = reap(*n, bound(30s)); code != 0) {
      fail(n->name + " exited with " + std::to_string(code));
    }
  }
  std::printf("SIGTERM to %s and %s: both left the cluster (graceful_shutdown) and exited 0\n",
              survivors[0]->name.c_str(), survivors[1]->name.c_str());
  director.stop();
  std::printf("done in %.1f s\n", std::chrono::duration<double>(clock_type::now() - began).count());
  return 0;
}
