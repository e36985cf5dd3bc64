// One node of the worker pool (otpp_worker_pool re-runs itself in this mode, once per node):
// registers the `worker` behaviour, joins the cluster through its seed list and starts its part
// of the distributed supervisor "pool" (every node runs the same spec: a child host here, and a
// standby for the supervisor process itself). Then it serves until SIGTERM or SIGINT, and stops
// gracefully (its peers see it leave). It tells the director what it sees on stdout:
//   ready <node id> <creation>
//   event <kind> <node id> <creation> <reason> <steady clock, us>   one per node event
// Exit codes: 0 after a graceful stop, 2 when it could not start (the reason on stderr).
#include <pthread.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>

#include <otpp/cluster/cluster.hpp>
#include <otpp/registry/join_cluster.hpp>
#include <otpp/runtime.hpp>
#include <otpp/supervisor/distributed.hpp>

#include "pool.hpp"

namespace pool {
namespace {

using namespace std::chrono_literals;

// The worker: a plain gen_server. The supervisor starts it by behaviour name on some node,
// under its global name; callers never need to know where it runs.
class worker : public otpp::gen_server<worker> {
 public:
  explicit worker(worker_args a) : id_(std::move(a.id)) {}
  static void define_handlers(otpp::handlers<worker>& h) {
    h.call<job>([](worker& self, job j) {
      return job_done{collatz_steps(j.n), self.id_, self.this_node().name(), ++self.served_};
    });
    h.call<where>([](worker& self, where) { return self.this_node().name(); });
  }

 private:
  std::string id_;
  std::uint64_t served_ = 0;
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

int cannot_start(const std::string& id, const char* what, std::error_code e) {
  std::fprintf(stderr, "%s: %s: %s\n", id.c_str(), what, e.message().c_str());
  return 2;
}

}  // namespace

int run_node(const std::string& id, const std::string& seeds) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlives the director
  // SIGTERM / SIGINT are taken by sigwait below: blocked here, before the node's threads exist,
  // so every thread inherits the mask and none of them is killed by the signal.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  ::pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  // The director tells the story; nodes log errors only (OTPP_WORKER_POOL_LOG=1: everything).
  otpp::set_log_level(std::getenv("OTPP_WORKER_POOL_LOG") ? otpp::log_level::info
                                                          : otpp::log_level::error);

  otpp::node node({.name = id, .threads = 2});
  node.start();
  // What the supervisor may start here, by name (C++ cannot ship code: every node registers it).
  if (auto r = otpp::register_behaviour<worker, worker_args>(node, std::string(behaviour)); !r) {
    return cannot_start(id, "register_behaviour", r.error());
  }
  otpp::cluster::options o;
  std::istringstream list(seeds);
  for (std::string s; std::getline(list, s, ',');) o.seeds.push_back(s);
  const char* secret = std::getenv(secret_env);
  o.transport.secret = secret ? secret : "";
  o.unreachable_after = unreachable_after;
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
  if (!cluster) return cannot_start(id, "join_cluster", cluster.error());

  // The same spec on every node. Round robin over the members that run a child host (not the
  // director: it runs none). initial_hosts = 3: the first placement waits for all three nodes,
  // so the workers spread evenly. min_members = 2: the supervisor process itself may run (or
  // take over) wherever two members are reachable, which a 3-node pool keeps after one loss.
  // max_restarts counts one restart per child a lost node ran: 12 in 10 s lets the pool lose
  // nodes without the supervisor giving up (the default, 3 in 5 s, would stop it at once).
  otpp::dist_supervisor_spec spec{.name = std::string(supervisor),
                                  .max_restarts = workers,
                                  .period = 10s,
                                  .children = {},
                                  .where = otpp::placement::round_robin(),
                                  .min_members = 2,
                                  .initial_hosts = 3};
  for (int i = 1; i <= workers; ++i) {
    auto wid = worker_id(i);
    spec.children.push_back(
        otpp::dist_child(wid, std::string(behaviour), worker_args{wid}, global_name_of(wid)));
  }
  if (auto r = otpp::start_distributed_supervisor(node, std::move(spec)); !r) {
    return cannot_start(id, "start_distributed_supervisor", r.error());
  }
  say("ready " + id + " " + std::to_string(node.creation()));

  // A node stopped from inside (a peer's `otpp stop`) wakes the wait below as SIGTERM does.
  node.add_stop_hook([] { ::kill(::getpid(), SIGTERM); });
  int sig = 0;
  ::sigwait(&stop_signals, &sig);
  // A last resort: a stop that hangs must not keep the director waiting forever.
  std::thread([] {
    std::this_thread::sleep_for(20s);
    std::fputs("node stop did not finish in 20 s\n", stderr);
    std::_Exit(4);
  }).detach();
  node.stop();  // stops this node's part of the pool, announces the leave: peers see
                // graceful_shutdown
  return 0;
}

}  // namespace pool
