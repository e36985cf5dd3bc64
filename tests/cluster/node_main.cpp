// otpp_test_node: one cluster node per OS process, driven by a test through stdin/stdout.
//
//   otpp_test_node --name a@127.0.0.1:4370 [--seeds s1,s2] [--secret S] [--listen-port P]
//                  [--address id=host:port]... [--hidden] [--gossip-ms N] [--heartbeat-ms N]
//                  [--unreachable-after-ms N] [--stable-after-ms N] [--retry-max-ms N]
//                  [--creation N] [--downing keep_majority|down_on_silence|off]
//
// Prints one line per fact on stdout (flushed at once; fields separated by spaces):
//   ready <node id> <creation> <worker serial>
//   event <kind> <node> <creation> <reason> <monotonic us>    one per node_event
//   members <n up, connected and reachable> <id:creation:status:c|-:r|->...
//   reply <text> <elapsed ms> | error <errc> <elapsed ms>      for call / stall / count
//   count <n> | cast ok | cast error <errc> |
//   stats <connections> <connect attempts> <rejected> <pending remote calls>
//   spawned <id> <creation> <serial> | spawn error <errc> <elapsed ms>
//   gregister ok | gregister error <errc> | gwhereis <id> <creation> <serial> | gwhereis none
//   pjoined | pmembers <n> [<id>:<serial>...] | monitoring <serial> | down <serial> <reason>
//   worker_exit <reason>                                   when this node's worker ends
// Commands (stdin, one per line):
//   members | stats | call <id> <creation> <serial> <text> [timeout ms]
//   stall <id> <creation> <serial> <timeout ms>    (the callee holds the reply: never answers)
//   cast <id> <creation> <serial> <n> | count <id> <creation> <serial> | leave | quit
//   spawn <node id> <behaviour> [init ms] [global name]  (behaviours: test_node.worker, with
//                                  an init that sleeps <init ms>; test_node.unknown is not one)
//   gregister <name> (this node's worker) | gwhereis <name>
//   pjoin <group> (this node's worker) | pmembers <group>
//   monitor <id> <creation> <serial>    (a watcher process of this node monitors that pid)
//   singleton <name>   this node manages a cluster singleton of test_node.worker under global
//                      name <name> -> singleton ok | singleton error <errc>
//   dsup <name> <children> <initial hosts>   a distributed supervisor of <children> workers
//                      (test_node.worker, global names <name>.c<i>, round robin) on this node
//                      -> dsup ok | dsup error <errc>
//   dchildren <name>   -> dchildren <running> <id>:<node>:<serial>:<epoch>:<state>... |
//                         dchildren error <errc>
//   drebalance <name>  rebalance_dist_supervisor -> drebalance <moved> <not moved>
//                      [<id> <from node> <to node>]... | drebalance error <errc>
//   gcall <name> <text>  call echo by global name -> reply <text> <ms> | error <errc> <ms>
//   stopped                                 when a peer stopped this node (otpp stop)
// Exit codes: 0 after quit, stdin EOF or a stop by a peer (graceful stop), 3 when this node learns
// it was downed (restart it: a new incarnation), 2 bad arguments or join failure, 4 a stop that
// hung.
#include <poll.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "otpp/cluster/cluster.hpp"
#include "otpp/registry/join_cluster.hpp"
#include "otpp/router.hpp"
#include "otpp/runtime.hpp"
#include "otpp/supervisor/distributed.hpp"
#include "otpp/supervisor/singleton.hpp"

namespace {

using namespace std::chrono_literals;

struct echo {
  static constexpr std::string_view tag = "test_node.echo";
  using reply = std::string;
  std::string text;
  MSGPACK_DEFINE_MAP(text)
};
struct stall {
  static constexpr std::string_view tag = "test_node.stall";
  using reply = std::string;
  OTPP_NO_FIELDS()
};
struct bump {
  static constexpr std::string_view tag = "test_node.bump";
  std::uint64_t by = 1;
  MSGPACK_DEFINE_MAP(by)
};
struct get_count {
  static constexpr std::string_view tag = "test_node.get_count";
  using reply = std::uint64_t;
  OTPP_NO_FIELDS()
};

class worker : public otpp::gen_server<worker> {
 public:
  static void define_handlers(otpp::handlers<worker>& h) {
    h.call<echo>([](worker&, echo e) { return "echo:" + e.text; });
    // Held until the process ends (then answered exit): a call that stays pending.
    h.call<stall>([](worker& self, stall, otpp::reply_to<std::string> r) {
      self.held_.push_back(std::move(r));
    });
    h.cast<bump>([](worker& self, bump b) { self.count_ += b.by; });
    h.call<get_count>([](worker& self, get_count) { return self.count_; });
  }

 private:
  std::vector<otpp::reply_to<std::string>> held_;
  std::uint64_t count_ = 0;
};

std::mutex out_mu;
std::atomic<bool> downed{false};  // set by the event subscriber (a node thread)

template <class... Args>
void say(Args&&... args);

// What a spawn by behaviour name passes: how long the child's init takes.
long long mono_us();

struct spawn_args {
  std::uint32_t init_ms = 0;
  // Non-empty: the child reports its life on stdout (child_up / child_down <label> <us>), so
  // a test can check that no two copies of it ever ran at once (the monotonic clock is the
  // host's, the same in every node process).
  std::string label;
  MSGPACK_DEFINE_MAP(init_ms, label)
};
class spawned_worker : public otpp::gen_server<spawned_worker> {
 public:
  explicit spawned_worker(spawn_args a) : init_ms_(a.init_ms), label_(std::move(a.label)) {}
  otpp::result<void> init() {
    // Blocks a node thread on purpose: a start that is slow to come up (killed mid-spawn).
    if (init_ms_) std::this_thread::sleep_for(std::chrono::milliseconds(init_ms_));
    if (!label_.empty()) {
      say("child_up ", label_, " ", mono_us());
      this_node().watch_process(self(), [label = label_](const otpp::exit_reason& r) {
        say("child_down ", label, " ", mono_us(), " ", r.text());
      });
    }
    return {};
  }
  static void define_handlers(otpp::handlers<spawned_worker>& h) {
    h.call<echo>([](spawned_worker&, echo e) { return "spawned:" + e.text; });
  }

 private:
  std::uint32_t init_ms_;
  std::string label_;
};

struct watch_pid {
  static constexpr std::string_view tag = "test_node.watch_pid";
  otpp::pid target;
  MSGPACK_DEFINE_MAP(target)
};
// Monitors what it is told to and prints each down.
class watcher : public otpp::gen_server<watcher> {
 public:
  static void define_handlers(otpp::handlers<watcher>& h) {
    h.info<watch_pid>([](watcher& self, watch_pid w) {
      self.monitor(w.target);
      say("monitoring ", w.target.serial());
    });
    h.info<otpp::down>(
        [](watcher&, otpp::down d) { say("down ", d.who.serial(), " ", d.reason.text()); });
  }
};

template <class... Args>
void say(Args&&... args) {
  std::ostringstream s;
  (s << ... << std::forward<Args>(args));
  std::lock_guard lock(out_mu);
  std::fputs((s.str() + "\n").c_str(), stdout);
  std::fflush(stdout);
}

// "connection_closed" out of "connection_closed" or "noproc: no such process or name".
std::string errc_name(std::error_code e) {
  auto m = e.message();
  return m.substr(0, m.find(':'));
}

long long mono_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string item;
  std::istringstream in(s);
  while (std::getline(in, item, sep)) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

int usage(const std::string& why) {
  std::fprintf(stderr, "otpp_test_node: %s\n", why.c_str());
  return 2;
}

// A stop that hangs must not hang the test: the process ends anyway.
void stop_bounded(otpp::node& n, int code) {
  std::thread([code] {
    std::this_thread::sleep_for(20s);
    std::fprintf(stderr, "otpp_test_node: stop did not finish in 20 s\n");
    std::_Exit(code == 0 ? 4 : code);
  }).detach();
  n.stop();
}

}  // namespace

int main(int argc, char** argv) {
  // Dies with the test that started it (even on SIGKILL of the test): no stray nodes.
  // (A parent gone before this line: stdin reads EOF and the node stops.)
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  std::signal(SIGPIPE, SIG_IGN);

  std::string name;
  std::uint32_t creation = 0;  // 0: a fresh one (a test pins it to replay a dead incarnation)
  otpp::cluster::options o;
  o.gossip_interval = 200ms;
  o.heartbeat_interval = 50ms;
  o.unreachable_after = 1000ms;
  o.downing.stable_after = 1000ms;
  o.retry_initial = 20ms;
  o.retry_max = 300ms;
  o.leave_timeout = 2000ms;
  std::vector<std::string> args(argv + 1, argv + argc);
  for (std::size_t i = 0; i < args.size(); ++i) {
    const auto& a = args[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= args.size()) throw std::invalid_argument(a + " needs a value");
      return args[++i];
    };
    auto ms = [&] { return std::chrono::milliseconds(std::stol(value())); };
    try {
      if (a == "--name") {
        name = value();
      } else if (a == "--seeds") {
        o.seeds = split(value(), ',');
      } else if (a == "--secret") {
        o.transport.secret = value();
      } else if (a == "--listen-port") {
        o.listen_port = static_cast<std::uint16_t>(std::stoi(value()));
      } else if (a == "--address") {
        auto v = value();
        auto eq = v.find('=');
        if (eq == std::string::npos) return usage("--address wants id=host:port");
        o.addresses[v.substr(0, eq)] = v.substr(eq + 1);
      } else if (a == "--creation") {
        creation = static_cast<std::uint32_t>(std::stoul(value()));
      } else if (a == "--hidden") {
        o.hidden = true;
      } else if (a == "--gossip-ms") {
        o.gossip_interval = ms();
      } else if (a == "--heartbeat-ms") {
        o.heartbeat_interval = ms();
      } else if (a == "--unreachable-after-ms") {
        o.unreachable_after = ms();
      } else if (a == "--stable-after-ms") {
        o.downing.stable_after = ms();
      } else if (a == "--downing") {
        auto v = value();
        if (v == "off") {
          o.downing.strategy = otpp::cluster::downing_strategy::off;
        } else if (v == "down_on_silence") {
          o.downing.strategy = otpp::cluster::downing_strategy::down_on_silence;
        } else if (v != "keep_majority") {
          return usage("--downing wants keep_majority, down_on_silence or off");
        }
      } else if (a == "--retry-max-ms") {
        o.retry_max = ms();
      } else {
        return usage("unknown argument " + a);
      }
    } catch (const std::exception& e) {
      return usage(a + ": " + e.what());
    }
  }
  if (name.empty()) return usage("--name is required");

  otpp::node node({.name = name, .threads = 2, .creation = creation});
  node.start();
  auto w = node.spawn<worker>();
  if (!w) return usage("spawn worker: " + w.fail().message());
  node.watch_process(*w, [](const otpp::exit_reason& r) { say("worker_exit ", r.text()); });
  // A local name, as introspection lists it (the otpp tool's tests).
  if (auto named = otpp::register_name(node, "worker", *w); !named) {
    return usage("register_name: " + named.fail().message());
  }
  auto watch = node.spawn<watcher>();
  if (!watch) return usage("spawn watcher: " + watch.fail().message());
  if (auto b = otpp::register_behaviour<spawned_worker, spawn_args>(node, "test_node.worker"); !b) {
    return usage("register_behaviour: " + b.fail().message());
  }
  // Set before joining: a seed may answer before join returns.
  o.on_event = [](const otpp::cluster::node_event& e) {
    say("event ", otpp::cluster::to_string(e.kind), " ", e.node, " ", e.creation, " ",
        errc_name(otpp::make_error_code(e.reason)), " ", mono_us());
    if (e.kind == otpp::cluster::node_event_kind::downed) downed = true;
  };
  auto joined = otpp::join_cluster(node, o);
  if (!joined) return usage("join: " + joined.fail().message());
  auto* cluster = *joined;
  say("ready ", name, " ", node.creation(), " ", w->serial());

  auto target = [](const std::vector<std::string>& f) {
    return otpp::pid(otpp::node_atom::intern(f.at(1)),
                     static_cast<std::uint32_t>(std::stoul(f.at(2))), std::stoull(f.at(3)));
  };
  // Answers of calls come on node threads, in any order; each line says what it answers.
  auto report = [](std::string what, auto started) {
    return [what, started](auto r) {
      auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::steady_clock::now() - started)
                    .count();
      if (r) {
        std::ostringstream v;
        v << *r;
        say(what == "count" ? "count " : "reply ", v.str(), " ", ms);
      } else {
        say("error ", errc_name(r.error()), " ", ms);
      }
    };
  };

  std::string pending;
  char buf[4096];
  while (true) {
    if (downed) {
      // The cluster removed this incarnation: a test restarts the program to rejoin.
      stop_bounded(node, 3);
      return 3;
    }
    if (!node.running()) {  // a peer stopped it (introspection's stop: the otpp tool)
      say("stopped");
      break;
    }
    pollfd p{STDIN_FILENO, POLLIN, 0};
    int ready = ::poll(&p, 1, 50);
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) continue;
    auto n = ::read(STDIN_FILENO, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EOF: the test is gone or done
    pending.append(buf, static_cast<std::size_t>(n));
    std::size_t eol;
    bool quit = false;
    while ((eol = pending.find('\n')) != std::string::npos) {
      auto line = pending.substr(0, eol);
      pending.erase(0, eol + 1);
      auto f = split(line, ' ');
      if (f.empty()) continue;
      auto started = std::chrono::steady_clock::now();
      try {
        if (f[0] == "quit") {
          quit = true;
          break;
        } else if (f[0] == "members") {
          std::size_t up = 0;
          std::ostringstream list;
          for (const auto& m : cluster->members()) {
            bool counted = m.status == otpp::cluster::member_status::up &&
                           (m.self || (m.connected && m.reachable));
            up += counted;
            list << " " << m.id << ":" << m.creation << ":" << otpp::cluster::to_string(m.status)
                 << ":" << (m.connected ? "c" : "-") << ":" << (m.reachable ? "r" : "-");
          }
          say("members ", up, list.str());
        } else if (f[0] == "stats") {
          auto s = cluster->stats();
          say("stats ", s.connections, " ", s.connect_attempts, " ", s.rejected_peers, " ",
              otpp::pending_remote_calls(node));
        } else if (f[0] == "call") {
          auto timeout = f.size() > 5 ? std::chrono::milliseconds(std::stol(f[5])) : 10000ms;
          otpp::call(node, target(f), echo{f.at(4)}, timeout, report("reply", started));
        } else if (f[0] == "stall") {
          otpp::call(node, target(f), stall{}, std::chrono::milliseconds(std::stol(f.at(4))),
                     report("reply", started));
        } else if (f[0] == "count") {
          otpp::call(node, target(f), get_count{}, 10000ms, report("count", started));
        } else if (f[0] == "cast") {
          auto r = otpp::cast(node, target(f), bump{std::stoull(f.at(4))});
          if (r) {
            say("cast ok");
          } else {
            say("cast error ", errc_name(r.error()));
          }
        } else if (f[0] == "spawn") {
          otpp::remote_spawn_options so;
          so.timeout = 30s;
          if (f.size() > 4) so.global_name = f[4];
          spawn_args args{f.size() > 3 ? static_cast<std::uint32_t>(std::stoul(f[3])) : 0, {}};
          otpp::spawn_remote(node, f.at(1), f.at(2), args, so,
                             [started](otpp::result<otpp::remote_spawned> r) {
                               auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                             std::chrono::steady_clock::now() - started)
                                             .count();
                               if (r) {
                                 say("spawned ", r->child.node().name(), " ", r->child.creation(),
                                     " ", r->child.serial());
                               } else {
                                 say("spawn error ", errc_name(r.error()), " ", ms);
                               }
                             });
        } else if (f[0] == "gregister") {
          otpp::register_name(node, otpp::global(f.at(1)), *w, [](otpp::result<void> r) {
            if (r) {
              say("gregister ok");
            } else {
              say("gregister error ", errc_name(r.error()));
            }
          });
        } else if (f[0] == "gwhereis") {
          auto p = otpp::whereis(node, otpp::global(f.at(1)));
          if (p) {
            say("gwhereis ", p->node().name(), " ", p->creation(), " ", p->serial());
          } else {
            say("gwhereis none");
          }
        } else if (f[0] == "pjoin") {
          auto r = otpp::pg::join(node, f.at(1), *w);
          if (r) {
            say("pjoined");
          } else {
            say("pjoin error ", errc_name(r.error()));
          }
        } else if (f[0] == "pmembers") {
          auto ms = otpp::pg::members(node, f.at(1));
          std::ostringstream list;
          for (const auto& m : ms) list << " " << m.node().name() << ":" << m.serial();
          say("pmembers ", ms.size(), list.str());
        } else if (f[0] == "singleton") {
          auto r = otpp::start_singleton(
              node, otpp::singleton(f.at(1), "test_node.worker", spawn_args{0, {}}));
          if (r) {
            say("singleton ok");
          } else {
            say("singleton error ", errc_name(r.error()));
          }
        } else if (f[0] == "dsup") {
          otpp::dist_supervisor_spec spec;
          spec.name = f.at(1);
          spec.initial_hosts = std::stoul(f.at(3));  // an even first placement
          spec.max_restarts = 1000;                  // tests kill nodes: no intensity stop
          for (unsigned long i = 0; i < std::stoul(f.at(2)); ++i) {
            auto id = "c" + std::to_string(i);
            spec.children.push_back(
                otpp::dist_child(id, "test_node.worker", spawn_args{0, id}, spec.name + "." + id));
          }
          auto r = otpp::start_distributed_supervisor(node, std::move(spec));
          if (r) {
            say("dsup ok");
          } else {
            say("dsup error ", errc_name(r.error()));
          }
        } else if (f[0] == "dchildren") {
          otpp::which_dist_children(
              node, f.at(1), [](otpp::result<std::vector<otpp::dist_child_info>> r) {
                if (!r) return say("dchildren error ", errc_name(r.error()));
                std::size_t running = 0;
                std::ostringstream list;
                for (const auto& c : *r) {
                  running += c.state == otpp::dist_child_state::running;
                  list << " " << c.id << ":" << c.node << ":" << c.child.serial() << ":" << c.epoch
                       << ":" << static_cast<int>(c.state);
                }
                say("dchildren ", running, list.str());
              });
        } else if (f[0] == "drebalance") {
          otpp::rebalance_dist_supervisor(
              node, f.at(1), [](otpp::result<otpp::dist_rebalance_report> r) {
                if (!r) return say("drebalance error ", errc_name(r.error()));
                std::ostringstream list;
                for (const auto& m : r->moved) list << " " << m.id << " " << m.from << " " << m.to;
                say("drebalance ", r->moved.size(), " ", r->not_moved.size(), list.str());
              });
        } else if (f[0] == "gcall") {
          otpp::call(node, otpp::global(f.at(1)), echo{f.at(2)}, 10000ms, report("reply", started));
        } else if (f[0] == "monitor") {
          (void)otpp::send(node, *watch, watch_pid{target(f)});
        } else if (f[0] == "leave") {
          cluster->leave();
          say("left");
        } else {
          say("bad command ", line);
        }
      } catch (const std::exception& e) {
        say("bad command ", line, ": ", e.what());
      }
    }
    if (quit) break;
  }
  // Graceful: peers see graceful_shutdown.
  stop_bounded(node, 0);
  say("stopped");
  return 0;
}
