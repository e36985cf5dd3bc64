// Cluster singleton: one instance of a behaviour across the cluster, under a global name, moved
// to another node when its node goes (Akka's cluster singleton, Erlang's global + a watcher).
//
//   otpp::join_cluster(node, cluster_options);
//   otpp::register_behaviour<scheduler, scheduler_args>(node, "scheduler");
//   auto m = otpp::start_singleton(node, otpp::singleton("scheduler", "scheduler",
//                                                        scheduler_args{...}));
//   ...
//   otpp::call(node, otpp::global("scheduler"), tick{}, asio::use_awaitable);  // any node
//
// Every node that may host the instance starts the same singleton (same global name and
// behaviour); each runs a local manager process. Ownership is the global name: a manager
// whose node sees a majority and finds the name free spawns the behaviour locally under that
// name (the global registry's arbiter lets exactly one claim win); the others monitor the
// holder and race again when it ends. A manager whose node loses sight of the majority stops
// its local instance at once and stands by. See README.md, "Design notes", "Cluster singleton"
// for the algorithm and why a split never runs two instances.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <msgpack.hpp>

#include "otpp/node.hpp"
#include "otpp/pid.hpp"
#include "otpp/result.hpp"

namespace otpp {

struct singleton_spec {
  // The global name the instance runs under (how everyone reaches it). Required.
  std::string name;
  // A behaviour registered on this node (register_behaviour).
  std::string behaviour;
  // The behaviour's msgpack-encoded arguments; null: nil (a behaviour with Args = void).
  // singleton() below packs a typed value.
  std::shared_ptr<const msgpack::sbuffer> args;
  // Not before this many members (self included) are up and reachable from here (Akka's
  // min-nr-of-members): a node that just joined and has not met its peers yet sees a
  // "cluster" of one and would otherwise start its own instance at once.
  std::size_t min_members = 1;
  // Retry delays after a failed start (or an instance or holder that ended soon after it
  // started): doubling from backoff_initial up to backoff_max, each with jitter (half fixed,
  // half random). Reset once an instance or holder lived backoff_max.
  std::chrono::milliseconds backoff_initial{50};
  std::chrono::milliseconds backoff_max{2000};
  // The manager re-checks membership this often besides reacting to node events (a missed
  // edge cannot leave it idle for long).
  std::chrono::milliseconds check_interval{250};
  // Bounds one start (name claim and init).
  std::chrono::milliseconds start_timeout{5000};
};

// A spec with `args` packed.
template <class Args>
singleton_spec singleton(std::string name, std::string behaviour, const Args& args) {
  auto packed = std::make_shared<msgpack::sbuffer>();
  msgpack::pack(*packed, args);
  singleton_spec s;
  s.name = std::move(name);
  s.behaviour = std::move(behaviour);
  s.args = std::move(packed);
  return s;
}
inline singleton_spec singleton(std::string name, std::string behaviour) {
  singleton_spec s;
  s.name = std::move(name);
  s.behaviour = std::move(behaviour);
  return s;
}

// Starts this node's manager of the singleton (call after join_cluster, on every node that
// may host it, with the same name and behaviour). Answers the manager's pid. Errors:
// invalid_argument (empty name or behaviour, backoff or check interval not positive),
// unknown_behaviour (not registered on this node), already_registered (this singleton is
// already managed on this node: the manager's pid as reason), nodedown (the node has not
// joined a cluster), not_started (the node does not run).
result<pid> start_singleton(node& n, singleton_spec spec);

// Stops this node's manager of `name`, and the instance if it runs here (the name frees and
// another node's manager takes over). Returns once the stop is asked; the instance ends a
// moment later. not_found if this node does not manage `name`.
result<void> stop_singleton(node& n, std::string_view name);

struct singleton_info {
  pid manager;
  bool running_here = false;  // the instance runs on this node
  pid instance;               // the local instance, if running_here
  pid holder;                 // whereis(global(name)) on this node; empty if nobody holds it
  // This node may start the instance now (sees a majority, enough members, registry ready).
  bool eligible = false;
  std::uint64_t takeovers = 0;       // instances this node started
  std::uint64_t start_attempts = 0;  // spawns tried here (successes included)
  std::uint64_t start_failures = 0;  // spawns that failed other than by losing the race
};

// This node's view of the singleton. not_found if this node does not manage `name`.
result<singleton_info> singleton_status(node& n, std::string_view name);

}  // namespace otpp
