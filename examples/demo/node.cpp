// One demo node (otpp_demo re-runs itself in this mode, once per node): a cluster node holding a
// counter process. It reports on stdout and takes its orders on stdin, one line each:
//   ready <node id> <creation> <counter serial>
//   event <kind> <node id> <creation> <reason> <steady clock, us>
//   call <node id> <creation> <serial> <amount>          -> reply <total> | error <errc>
//   cast <node id> <creation> <serial> <amount> <times>  -> cast ok <times> | cast error <errc>
//   quit (or end of stdin)                               -> leaves the cluster and exits 0
#include <sys/prctl.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <sstream>
#include <string>

#include <otpp/cluster/cluster.hpp>
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

}  // namespace

int run_node(const std::string& id, const std::string& seeds) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlives the demo
  // The story is told by the demo; node logs only for errors (OTPP_DEMO_LOG=1: everything).
  otpp::set_log_level(std::getenv("OTPP_DEMO_LOG") ? otpp::log_level::info
                                                   : otpp::log_level::error);
  otpp::node node({.name = id, .threads = 2});
  node.start();
  auto count = node.spawn<counter>();
  otpp::cluster::options o;
  std::istringstream list(seeds);
  for (std::string s; std::getline(list, s, ',');) o.seeds.push_back(s);
  const char* secret = std::getenv("OTPP_DEMO_SECRET");
  o.transport.secret = secret ? secret : "";
  auto cluster = otpp::cluster::join(node, o);
  if (!count || !cluster) {
    std::fprintf(stderr, "%s: %s\n", id.c_str(),
                 (count ? cluster.fail() : count.fail()).message().c_str());
    return 2;
  }
  (*cluster)->subscribe([](const otpp::cluster::node_event& e) {
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(
        std::chrono::steady_clock::now().time_since_epoch());
    std::ostringstream s;
    s << "event " << otpp::cluster::to_string(e.kind) << " " << e.node << " " << e.creation << " "
      << name_of(otpp::make_error_code(e.reason)) << " " << us.count();
    say(s.str());
  });
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
