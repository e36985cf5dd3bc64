// One demo node (otpp_demo re-runs itself in this mode, once per node): a cluster node holding a
// counter process. It reports on stdout and takes its orders on stdin, one line each:
//   ready <node id> <creation> <counter serial>
//   event <kind> <node id> <creation> <reason> <steady clock, us>
//   call <node id> <creation> <serial> <amount>          -> reply <total> | error <errc>
//   cast <node id> <creation> <serial> <amount> <times>  -> cast ok <times> | cast error <errc>
//   spawn <node id> <global name>   spawns behaviour demo.counter there under that global name,
//                                   monitored from here -> spawned <name> <node> <creation>
//                                   <serial> | spawn error <errc>; later: down <name> <reason> <us>
//   gcall <global name> <amount>    call by global name  -> reply <total> | error <errc>
//   gwhereis <global name>                               -> at <node id> | at none
//   quit (or end of stdin)                               -> leaves the cluster and exits 0
#include <sys/prctl.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>

#include <asio/use_awaitable.hpp>
#include <otpp/cluster/cluster.hpp>
#include <otpp/registry/join_cluster.hpp>
#include <otpp/runtime.hpp>

#include "demo.hpp"

namespace demo {
namespace {

class counter : public otpp::gen_server<counter> {
 public:
  static void define_handlers(otpp::handlers<counter>& h) {
    h.call<add>([](counter& self, add a) { return self.total_ += a.amount; });
    h.cast<add_later>([](counter& self, add_later a) { self.total_ += a.amount; });
  }

 private:
  long total_ = 0;
};

std::mutex out_mu;
void say(const std::string& line) {
  std::lock_guard lock(out_mu);
  std::fputs((line + "\n").c_str(), stdout);
  std::fflush(stdout);
}

std::string name_of(std::error_code e) {  // "noproc" out of "noproc: no such process or name"
  auto m = e.message();
  return m.substr(0, m.find(':'));
}

long long now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct start_counter {  // to this node's supervisor-to-be: start a counter over there
  static constexpr std::string_view tag = "demo.start_counter";
  std::string node;
  std::string name;
};

// Starts counters on other nodes by behaviour name, each under a global name, and watches them:
// a monitor set up before the counter's init ran, so even a crash right after start is seen.
class starter : public otpp::gen_server<starter> {
 public:
  static void define_handlers(otpp::handlers<starter>& h) {
    h.info<start_counter>([](starter& self, start_counter s) -> asio::awaitable<void> {
      otpp::remote_spawn_options o;
      o.monitor = true;
      o.global_name = s.name;
      auto& n = self.this_node();
      std::string behaviour = "demo.counter";  // named: no temporary inside co_await (g++ 12)
      auto r = co_await otpp::spawn_remote(n, s.node, std::move(behaviour), o, asio::use_awaitable);
      if (!r) {
        say("spawn error " + name_of(r.error()));
        co_return;
      }
      self.names_[r->monitor.id] = s.name;
      say("spawned " + s.name + " " + std::string(r->child.node().name()) + " " +
          std::to_string(r->child.creation()) + " " + std::to_string(r->child.serial()));
    });
    h.info<otpp::down>([](starter& self, otpp::down d) {
      say("down " + self.names_[d.ref.id] + " " + d.reason.text() + " " + std::to_string(now_us()));
      self.names_.erase(d.ref.id);
    });
  }

 private:
  std::map<std::uint64_t, std::string> names_;
};

}  // namespace

int run_node(const std::string& id, const std::string& seeds) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlives the demo
  // The story is told by the demo; node logs only for errors (OTPP_DEMO_LOG=1: everything).
  otpp::set_log_level(std::getenv("OTPP_DEMO_LOG") ? otpp::log_level::info
                                                   : otpp::log_level::error);
  otpp::node node({.name = id, .threads = 2});
  node.start();
  auto count = node.spawn<counter>();
  auto start = node.spawn<starter>();
  // What other nodes may start here, by name (C++ cannot ship code: each node registers it).
  (void)otpp::register_behaviour<counter>(node, "demo.counter");
  otpp::cluster::options o;
  std::istringstream list(seeds);
  for (std::string s; std::getline(list, s, ',');) o.seeds.push_back(s);
  const char* secret = std::getenv("OTPP_DEMO_SECRET");
  o.transport.secret = secret ? secret : "";
  // The demo's cluster traffic is encrypted (AES-256-GCM records, negotiated at the handshake).
  o.transport.record_protections = {otpp::transport::record_protection::aes_256_gcm};
  // Set before joining, so no event is missed (a seed may answer before join returns).
  o.on_event = [](const otpp::cluster::node_event& e) {
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(
        std::chrono::steady_clock::now().time_since_epoch());
    std::ostringstream s;
    s << "event " << otpp::cluster::to_string(e.kind) << " " << e.node << " " << e.creation << " "
      << name_of(otpp::make_error_code(e.reason)) << " " << us.count();
    say(s.str());
  };
  auto cluster = otpp::join_cluster(node, o);  // + global names, groups, remote spawn
  if (!count || !start || !cluster) {
    std::fprintf(stderr, "%s: %s\n", id.c_str(),
                 (!count   ? count.fail()
                  : !start ? start.fail()
                           : cluster.fail())
                     .message()
                     .c_str());
    return 2;
  }
  say("ready " + id + " " + std::to_string(node.creation()) + " " +
      std::to_string(count->serial()));

  for (std::string line; std::getline(std::cin, line);) {
    std::istringstream in(line);
    std::string cmd, node_id;
    std::uint32_t creation = 0;
    std::uint64_t serial = 0;
    long amount = 0, times = 1;
    in >> cmd >> node_id >> creation >> serial >> amount >> times;
    if (cmd == "quit") break;
    if (cmd == "spawn" || cmd == "gcall" || cmd == "gwhereis") {
      std::istringstream args(line);
      std::string word, name;
      long value = 0;
      args >> word >> name;
      if (cmd == "spawn") {  // spawn <node id> <global name>: name is the node, then the name
        std::string global_name;
        args >> global_name;
        (void)otpp::send(node, *start, start_counter{name, global_name});
      } else if (cmd == "gcall") {  // gcall <global name> <amount>
        args >> value;
        // The registration completed at its home once the add was sent to every node: it
        // reaches this node's replica a moment later (wait for it, bounded).
        for (int i = 0; i < 200 && !otpp::whereis(node, otpp::global(name)); ++i) {
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        auto r = otpp::call(node, otpp::global(name), add{value}, asio::use_future).get();
        say(r ? "reply " + std::to_string(*r) : "error " + name_of(r.error()));
      } else {
        auto p = otpp::whereis(node, otpp::global(name));
        say(p ? "at " + std::string(p->node().name()) : "at none");
      }
      continue;
    }
    // Pids travel as text here only because the demo driver relays them; between nodes they
    // are plain values in messages.
    otpp::pid to(otpp::node_atom::intern(node_id), creation, serial);
    if (cmd == "call") {
      auto r = otpp::call(node, to, add{amount}, asio::use_future).get();
      say(r ? "reply " + std::to_string(*r) : "error " + name_of(r.error()));
    } else if (cmd == "cast") {
      std::string answer = "cast ok " + std::to_string(times);
      for (long i = 0; i < times; ++i) {
        if (auto r = otpp::cast(node, to, add_later{amount}); !r) {
          answer = "cast error " + name_of(r.error());
          break;
        }
      }
      say(answer);
    }
  }
  node.stop();  // announces the leave: peers see graceful_shutdown
  return 0;
}

}  // namespace demo
