// The cluster demo: 3 OS processes on 127.0.0.1. This program starts itself three
// times in node mode (node.cpp): alice, then bob (seed: alice), then carol (seed: bob only: she
// learns alice by gossip). They call and cast to each other's counter processes. It shows
// spawning remote workers by registered behaviour name (alice starts counters on bob and carol,
// each under a global name, and monitors them) and calling them by global name from any node.
// Then carol is killed with SIGKILL: the survivors see it at once, alice's monitor fires, the
// global name is gone everywhere and alice starts it again on bob; restarted, carol rejoins as a
// new incarnation whose old pids answer noproc; then everyone leaves. Every wait is bounded: on
// any failure the demo says what went wrong, kills its nodes and exits 1.
//
// Run: otpp_demo   (no arguments; exits 0 when every step happened as described)
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "demo.hpp"

extern char** environ;

namespace {

using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

std::vector<std::string> words(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

// One node process, as the driver sees it: its pipes and the lines it printed but nobody
// consumed yet.
struct node_proc {
  std::string name, id;
  pid_t os_pid = -1;
  int to = -1, from = -1;  // its stdin, its stdout
  std::string partial;
  std::vector<std::string> unread;
  std::uint32_t creation = 0;
  std::string counter;  // "<node id> <creation> <serial>" of its counter process
};

std::vector<std::unique_ptr<node_proc>> nodes;  // killed on failure

[[noreturn]] void fail(const std::string& why) {
  std::printf("demo FAILED: %s\n", why.c_str());
  for (auto& n : nodes) {
    if (n->os_pid > 0) ::kill(n->os_pid, SIGKILL);
  }
  std::exit(1);
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

// The first line (new or not yet consumed) that `match` accepts, within `bound`; consumed.
std::string await(node_proc& n, const std::function<bool(const std::vector<std::string>&)>& match,
                  const std::string& what, clock_type::duration bound = 10s) {
  auto until = clock_type::now() + bound;
  for (std::size_t i = 0;;) {
    for (; i < n.unread.size(); ++i) {
      if (match(words(n.unread[i]))) {
        auto line = n.unread[i];
        n.unread.erase(n.unread.begin() + static_cast<std::ptrdiff_t>(i));
        return line;
      }
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - clock_type::now());
    pollfd p{n.from, POLLIN, 0};
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) {
      fail(n.name + " did not report " + what + " within " +
           std::to_string(std::chrono::duration_cast<std::chrono::seconds>(bound).count()) + " s");
    }
    char buf[4096];
    auto got = ::read(n.from, buf, sizeof buf);
    if (got <= 0) fail(n.name + " exited before it reported " + what);
    n.partial.append(buf, static_cast<std::size_t>(got));
    for (std::size_t eol; (eol = n.partial.find('\n')) != std::string::npos;) {
      n.unread.push_back(n.partial.substr(0, eol));
      n.partial.erase(0, eol + 1);
    }
  }
}

// An event line: {"event", kind, node, creation, reason, us}.
std::vector<std::string> await_event(node_proc& n, const std::string& kind, const node_proc& about,
                                     std::uint32_t creation) {
  auto line = await(
      n,
      [&](const auto& w) {
        return w.size() == 6 && w[0] == "event" && w[1] == kind && w[2] == about.id &&
               std::stoul(w[3]) == creation;
      },
      kind + " of " + about.name);
  return words(line);
}

void send(node_proc& n, const std::string& line) {
  auto s = line + "\n";
  if (::write(n.to, s.data(), s.size()) != static_cast<ssize_t>(s.size())) {
    fail("cannot talk to " + n.name);
  }
}

// Asks `from` to call `target` (a counter pid) with add{amount}: "reply <total>" or
// "error <errc>".
std::string call(node_proc& from, const std::string& target, long amount) {
  send(from, "call " + target + " " + std::to_string(amount));
  auto w = words(await(
      from, [](const auto& w) { return !w.empty() && (w[0] == "reply" || w[0] == "error"); },
      "a call's answer"));
  return w.at(1);  // the total, or the error
}

node_proc& start(const std::string& name, std::uint16_t port, const std::string& seeds) {
  auto n = std::make_unique<node_proc>();
  n->name = name;
  n->id = name + "@127.0.0.1:" + std::to_string(port);
  int in[2], out[2];
  if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) fail("pipe");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
  std::string self = "/proc/self/exe", mode = "--node";
  std::vector<char*> argv{self.data(), mode.data(), n->id.data(), const_cast<char*>(seeds.c_str()),
                          nullptr};
  int rc = ::posix_spawn(&n->os_pid, self.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(in[0]);
  ::close(out[1]);
  n->to = in[1];
  n->from = out[0];
  if (rc != 0) fail("cannot start " + name);
  nodes.push_back(std::move(n));
  auto& p = *nodes.back();
  auto ready = words(await(
      p, [](const auto& w) { return w.size() == 4 && w[0] == "ready"; }, "ready", 20s));
  p.creation = static_cast<std::uint32_t>(std::stoul(ready[2]));
  p.counter = ready[1] + " " + ready[2] + " " + ready[3];
  return p;
}

// Waits for its exit; its exit code (128 + signal if a signal ended it).
int reap(node_proc& n, clock_type::duration bound = 10s) {
  auto until = clock_type::now() + bound;
  int status = 0;
  while (::waitpid(n.os_pid, &status, WNOHANG) == 0) {
    if (clock_type::now() > until) fail(n.name + " did not exit");
    ::usleep(5000);
  }
  n.os_pid = -1;
  ::close(n.to);
  ::close(n.from);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string pid_text(const std::string& counter) {  // "<carol@127.0.0.1:4370.7.1>"
  auto w = words(counter);
  return "<" + w[0] + "." + w[1] + "." + w[2] + ">";
}

long long now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(clock_type::now().time_since_epoch())
      .count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 4 && std::string(argv[1]) == "--node") return demo::run_node(argv[2], argv[3]);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  std::signal(SIGPIPE, SIG_IGN);
  ::alarm(120);  // a last resort: the nodes die with this process (PR_SET_PDEATHSIG)
  auto began = clock_type::now();

  // The nodes authenticate each other with a shared secret: a fresh random one per run.
  std::random_device rd;
  std::string secret;
  for (int i = 0; i < 32; ++i) secret += "0123456789abcdef"[rd() % 16];
  ::setenv("OTPP_DEMO_SECRET", secret.c_str(), 1);

  std::printf("otpp demo: a cluster of 3 OS processes on 127.0.0.1\n");
  auto pa = free_port(), pb = free_port(), pc = free_port();
  auto& alice = start("alice", pa, "");
  auto& bob = start("bob", pb, alice.id);
  auto& carol0 = start("carol", pc, bob.id);
  std::printf("started %s, %s (seed: alice), %s (seed: bob only)\n", alice.id.c_str(),
              bob.id.c_str(), carol0.id.c_str());
  std::printf(
      "each node runs a counter process; this driver tells the nodes what to do, the "
      "calls and casts go node to node\n");
  for (auto* n : {&alice, &bob, &carol0}) {
    for (auto* m : {&alice, &bob, &carol0}) {
      if (n != m) await_event(*n, "node_up", *m, m->creation);
    }
  }
  std::printf(
      "full mesh %lld ms after the first start: each node saw node_up for the other "
      "two (carol found alice by gossip)\n",
      static_cast<long long>(
          std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - began)
              .count()));

  std::printf("alice calls bob's counter: add 5 -> %s\n", call(alice, bob.counter, 5).c_str());
  send(carol0, "cast " + alice.counter + " 1 1000");
  await(
      carol0, [](const auto& w) { return w.size() == 3 && w[1] == "ok"; }, "its casts");
  std::printf("carol casts add 1 to alice's counter 1000 times, then calls it: add 0 -> %s\n",
              call(carol0, alice.counter, 0).c_str());
  std::printf("bob calls carol's counter %s: add 7 -> %s\n", pid_text(carol0.counter).c_str(),
              call(bob, carol0.counter, 7).c_str());

  // Workers started elsewhere by behaviour name, found anywhere by global name.
  for (auto* n : {&bob, &carol0}) {
    std::string gname = "counter." + n->name;
    send(alice, "spawn " + n->id + " " + gname);
    auto w = words(await(
        alice, [](const auto& w) { return !w.empty() && w[0].starts_with("spawn"); }, "a spawn"));
    if (w.size() != 5 || w[0] != "spawned" || w[2] != n->id)
      fail("spawn on " + n->name + ": " + w.back());
    std::printf(
        "alice starts behaviour demo.counter on %s, global name %s (pid <%s.%s.%s>), and "
        "monitors it\n",
        n->name.c_str(), gname.c_str(), w[2].c_str(), w[3].c_str(), w[4].c_str());
  }
  auto gcall = [&](node_proc& from, const std::string& gname, long amount) {
    send(from, "gcall " + gname + " " + std::to_string(amount));
    return words(
               await(
                   from,
                   [](const auto& w) { return !w.empty() && (w[0] == "reply" || w[0] == "error"); },
                   "a call by global name"))
        .at(1);
  };
  auto by_name = gcall(bob, "counter.carol", 3);
  std::printf("bob calls counter.carol by global name: add 3 -> %s\n", by_name.c_str());
  if (by_name != "3") fail("bob's call of counter.carol by global name: " + by_name);
  by_name = gcall(carol0, "counter.bob", 4);
  std::printf("carol calls counter.bob by global name: add 4 -> %s\n", by_name.c_str());
  if (by_name != "4") fail("carol's call of counter.bob by global name: " + by_name);

  std::printf("kill -9 carol (OS pid %d)\n", carol0.os_pid);
  auto killed_at = now_us();
  ::kill(carol0.os_pid, SIGKILL);
  for (auto* n : {&alice, &bob}) {
    auto e = await_event(*n, "node_down", carol0, carol0.creation);
    std::printf("  %s: node_down carol, reason %s, %.1f ms after the kill\n", n->name.c_str(),
                e[4].c_str(), static_cast<double>(std::stoll(e[5]) - killed_at) / 1000.0);
  }
  {
    auto d = words(await(
        alice, [](const auto& w) { return w.size() == 4 && w[0] == "down"; },
        "the monitor's down"));
    std::printf("  alice: monitor of %s fired: down %s, %.1f ms after the kill\n", d[1].c_str(),
                d[2].c_str(), static_cast<double>(std::stoll(d[3]) - killed_at) / 1000.0);
    if (d[1] != "counter.carol" || d[2] != "noconnection")
      fail("unexpected down " + d[1] + " " + d[2]);
  }
  for (auto* n : {&alice, &bob}) {
    auto until = clock_type::now() + 10s;
    while (true) {
      send(*n, "gwhereis counter.carol");
      auto at = words(await(
          *n, [](const auto& w) { return w.size() == 2 && w[0] == "at"; }, "a global lookup"));
      if (at[1] == "none") break;
      if (clock_type::now() > until) fail(n->name + " still has counter.carol");
      ::usleep(20000);
    }
  }
  std::printf("  alice and bob: global name counter.carol is gone with its node\n");
  send(alice, "spawn " + bob.id + " counter.carol");
  {
    auto w = words(await(
        alice, [](const auto& w) { return !w.empty() && w[0].starts_with("spawn"); }, "a spawn"));
    if (w.size() != 5 || w[0] != "spawned") fail("respawn of counter.carol: " + w.back());
  }
  std::printf("alice starts counter.carol again, on bob; bob calls it: add 1 -> %s (a new one)\n",
              gcall(bob, "counter.carol", 1).c_str());
  if (reap(carol0) != 128 + SIGKILL) fail("carol was not killed");
  std::printf("alice calls carol's counter while carol is down -> %s (at once, no timeout)\n",
              call(alice, carol0.counter, 1).c_str());

  auto& carol = start("carol", pc, alice.id);
  for (auto* n : {&alice, &bob}) await_event(*n, "node_up", carol, carol.creation);
  std::printf("carol restarted on the same port: creation %u -> %u; alice and bob saw node_up\n",
              carol0.creation, carol.creation);
  auto old_answer = call(alice, carol0.counter, 1);
  std::printf("alice calls the old counter %s -> %s (it died with its incarnation)\n",
              pid_text(carol0.counter).c_str(), old_answer.c_str());
  if (old_answer != "noproc") fail("the old incarnation's pid answered " + old_answer);
  std::printf("alice calls carol's new counter: add 1 -> %s\n",
              call(alice, carol.counter, 1).c_str());

  send(carol, "quit");
  for (auto* n : {&alice, &bob}) {
    auto e = await_event(*n, "node_down", carol, carol.creation);
    if (e[4] != "graceful_shutdown") fail("carol's leave was seen as " + e[4]);
  }
  send(bob, "quit");
  auto e = await_event(alice, "node_down", bob, bob.creation);
  if (e[4] != "graceful_shutdown") fail("bob's leave was seen as " + e[4]);
  send(alice, "quit");
  for (auto* n : {&carol, &bob, &alice}) {
    if (int code = reap(*n); code != 0) fail(n->name + " exited with " + std::to_string(code));
  }
  std::printf(
      "carol, bob, alice quit in turn: their peers saw node_down graceful_shutdown; "
      "all exited 0\n");
  std::printf("done in %.1f s\n", std::chrono::duration<double>(clock_type::now() - began).count());
  return 0;
}
