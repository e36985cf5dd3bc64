// Cluster membership events: nodes join through a seed list and a process of each node gets every
// node event as a message (monitor_nodes, Erlang's net_kernel:monitor_nodes). This program starts
// itself as 3 OS processes on 127.0.0.1: a, then b (seed: a), then c (seed: b only: it finds a by
// gossip). It freezes c (SIGSTOP: its connections stay open but go silent, so it is unreachable,
// not down), thaws it (SIGCONT: reachable again), kills it (SIGKILL: down, connection_closed)
// and stops b (SIGTERM: b leaves, down with graceful_shutdown), printing what each survivor saw.
//
// Run: example_cluster_events   (exits 0 when every expected event was seen within its bound,
// else says which one it waited for, kills its nodes and exits 1)
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "otpp/registry/join_cluster.hpp"
#include "otpp/runtime.hpp"

extern char** environ;

namespace {

using namespace std::chrono_literals;
using otpp::cluster::node_event;

// ---- node mode: one cluster member

// Gets every node event as a message (handle_info) and prints it for the driver:
//   event <kind> <node id> <reason>
class watcher : public otpp::gen_server<watcher> {
 public:
  static void define_handlers(otpp::handlers<watcher>& h) {
    h.info<node_event>([](watcher&, node_event e) {
      auto reason = otpp::make_error_code(e.reason).message();
      std::printf("event %s %s %s\n", std::string(otpp::cluster::to_string(e.kind)).c_str(),
                  e.node.c_str(), reason.substr(0, reason.find(':')).c_str());
    });
  }
};

// Exit codes: 0 after a graceful stop (SIGTERM), 2 could not start, 3 its port was taken.
int run_node(const std::string& id, const std::string& seeds) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlives the driver
  // SIGTERM is taken by sigwait below: blocked before the node's threads exist, so they all
  // inherit the mask.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  ::pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  otpp::set_log_level(otpp::log_level::error);

  otpp::node node({.name = id, .threads = 2});
  node.start();
  otpp::cluster::options o;
  std::istringstream list(seeds);  // comma-separated: any one that answers is enough
  for (std::string s; std::getline(list, s, ',');) o.seeds.push_back(s);
  const char* secret = std::getenv("OTPP_CLUSTER_EVENTS_SECRET");  // the driver's, per run
  o.transport.secret = secret ? secret : "";
  // The default downing rule would down a member unreachable for 1 s (and the cluster would
  // then refuse it for good); this cluster waits longer so that a thawed member comes back.
  o.downing.stable_after = 30s;
  auto cluster = otpp::join_cluster(node, o);
  if (!cluster) {
    std::fprintf(stderr, "%s: join_cluster: %s\n", id.c_str(), cluster.error().message().c_str());
    return cluster.error() == std::errc::address_in_use ? 3 : 2;
  }
  auto w = node.spawn<watcher>();
  if (!w) {
    std::fprintf(stderr, "%s: spawn watcher: %s\n", id.c_str(), w.error().message().c_str());
    return 2;
  }
  (*cluster)->monitor_nodes(*w, true);
  std::printf("ready %s\n", id.c_str());

  // A node stopped from inside (a peer's `otpp stop`) wakes the wait below as SIGTERM does.
  node.add_stop_hook([] { ::kill(::getpid(), SIGTERM); });
  int sig = 0;
  ::sigwait(&stop, &sig);
  node.stop();  // announces the leave: the peers see node_down graceful_shutdown
  return 0;
}

// ---- driver mode: starts the nodes, signals them, reads what they saw

struct event {
  std::string kind, node, reason;
};
struct node_proc {
  std::string name, id;
  pid_t os_pid = -1;
  int from = -1;  // its stdout
  std::string partial;
  std::vector<event> unread;  // events read but not yet expected
};
std::vector<std::unique_ptr<node_proc>> nodes;

[[noreturn]] void fail(const std::string& why) {
  std::printf("cluster_events FAILED: %s\n", why.c_str());
  for (auto& n : nodes) {
    if (n->os_pid > 0) ::kill(n->os_pid, SIGKILL);
  }
  std::exit(1);
}

std::uint16_t free_port() {  // the kernel's pick; someone may take it before the node listens
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

std::string short_name(const std::string& id) {
  return id.substr(0, id.find('@'));
}

// Its exit code (128 + signal), waiting at most 10 s.
int reap(node_proc& n) {
  int status = 0;
  for (auto until = std::chrono::steady_clock::now() + 10s;
       ::waitpid(n.os_pid, &status, WNOHANG) == 0;) {
    if (std::chrono::steady_clock::now() > until) fail(n.name + " did not exit");
    ::usleep(5000);
  }
  n.os_pid = -1;
  ::close(n.from);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// The next line from `n`, within `bound`; nothing if it closed its stdout (it exited).
std::optional<std::string> next_line(node_proc& n, std::chrono::steady_clock::time_point until,
                                     const std::string& what) {
  for (std::size_t eol; (eol = n.partial.find('\n')) == std::string::npos;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        until - std::chrono::steady_clock::now());
    pollfd p{n.from, POLLIN, 0};
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) {
      fail(n.name + " did not report " + what + " in time");
    }
    char buf[4096];
    auto got = ::read(n.from, buf, sizeof buf);
    if (got <= 0) return std::nullopt;
    n.partial.append(buf, static_cast<std::size_t>(got));
  }
  auto eol = n.partial.find('\n');
  auto line = n.partial.substr(0, eol);
  n.partial.erase(0, eol + 1);
  return line;
}

// Waits for the event of `kind` about `about` that `n` saw (consumed; the others it reads on the
// way are printed and kept for a later expect); its reason.
std::string expect(node_proc& n, const std::string& kind, const node_proc& about) {
  auto until = std::chrono::steady_clock::now() + 30s;
  for (std::size_t i = 0;; ++i) {
    if (i == n.unread.size()) {
      auto line = next_line(n, until, kind + " of " + about.name);
      if (!line) fail(n.name + " exited while waiting for " + kind + " of " + about.name);
      std::istringstream in(*line);
      event e;
      std::string word;
      if (!(in >> word >> e.kind >> e.node >> e.reason) || word != "event") continue;
      std::printf("  %s saw %s %s%s\n", n.name.c_str(), e.kind.c_str(), short_name(e.node).c_str(),
                  e.kind == "node_down" ? (" (" + e.reason + ")").c_str() : "");
      n.unread.push_back(e);
    }
    if (n.unread[i].kind == kind && n.unread[i].node == about.id) {
      auto reason = n.unread[i].reason;
      n.unread.erase(n.unread.begin() + static_cast<std::ptrdiff_t>(i));
      return reason;
    }
  }
}

// Starts node `name` joining through `seed` (a node id, or none) and waits for its ready line;
// a port someone else took meanwhile is retried on another.
node_proc& start(const std::string& name, const std::string& seed) {
  for (int attempt = 1;; ++attempt) {
    auto n = std::make_unique<node_proc>();
    n->name = name;
    n->id = name + "@127.0.0.1:" + std::to_string(free_port());
    int out[2];
    if (::pipe2(out, O_CLOEXEC) != 0) fail("pipe");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
    std::string self = "/proc/self/exe", mode = "--node";
    std::vector<char*> argv{self.data(), mode.data(), n->id.data(), const_cast<char*>(seed.c_str()),
                            nullptr};
    int rc = ::posix_spawn(&n->os_pid, self.c_str(), &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ::close(out[1]);
    n->from = out[0];
    if (rc != 0) fail("cannot start " + name);
    nodes.push_back(std::move(n));
    auto& p = *nodes.back();
    auto ready = next_line(p, std::chrono::steady_clock::now() + 30s, "ready");
    if (ready && *ready == "ready " + p.id) return p;
    int code = reap(p);
    if (code != 3 || attempt == 5) {
      fail(name + " exited (code " + std::to_string(code) + ") before it was ready");
    }
    nodes.pop_back();
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 4 && std::string(argv[1]) == "--node") return run_node(argv[2], argv[3]);
  if (argc != 1) {
    std::fprintf(stderr, "usage: %s\n", argv[0]);
    return 2;
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  std::signal(SIGPIPE, SIG_IGN);
  ::alarm(120);           // a last resort: the nodes die with this process (PR_SET_PDEATHSIG)
  std::random_device rd;  // the nodes authenticate each other: a fresh secret per run
  std::string secret;
  for (int i = 0; i < 32; ++i) secret += "0123456789abcdef"[rd() % 16];
  ::setenv("OTPP_CLUSTER_EVENTS_SECRET", secret.c_str(), 1);

  auto& a = start("a", "");
  auto& b = start("b", a.id);
  auto& c = start("c", b.id);
  std::printf("started a, b (seed: a), c (seed: b only)\n");
  for (auto* n : {&a, &b, &c}) {
    for (auto* m : {&a, &b, &c}) {
      if (n != m) expect(*n, "node_up", *m);
    }
  }
  std::printf("full mesh: c found a by gossip\n");

  std::printf("kill -STOP c: frozen, its connections open but silent\n");
  ::kill(c.os_pid, SIGSTOP);
  for (auto* n : {&a, &b}) expect(*n, "node_unreachable", c);
  std::printf("kill -CONT c: it talks again\n");
  ::kill(c.os_pid, SIGCONT);
  for (auto* n : {&a, &b}) expect(*n, "node_reachable", c);

  std::printf("kill -9 c\n");
  ::kill(c.os_pid, SIGKILL);
  for (auto* n : {&a, &b}) expect(*n, "node_down", c);
  if (reap(c) != 128 + SIGKILL) fail("c was not killed");

  std::printf("kill -TERM b: it leaves the cluster\n");
  ::kill(b.os_pid, SIGTERM);
  if (auto why = expect(a, "node_down", b); why != "graceful_shutdown") {
    fail("b's leave was seen as " + why);
  }
  ::kill(a.os_pid, SIGTERM);
  for (auto* n : {&b, &a}) {
    if (int code = reap(*n); code != 0) fail(n->name + " exited with " + std::to_string(code));
  }
  std::printf("a and b exited 0\n");
  return 0;
}
