// A node joins a cluster: it listens on the address of its node id, reaches its seeds, learns
// every member by gossip and holds one authenticated connection to each (full mesh). From then
// on call, cast, send, link and monitor take pids of any member with the same API as local
// ones: this layer is the router the runtime hands every non-local envelope to.
//
//   otpp::node node({.name = "api@127.0.0.1:4370"});
//   node.start();
//   auto joined = otpp::cluster::join(node, {.seeds = {"127.0.0.1:4371"}});
//   if (!joined) ...;                       // invalid node id, port taken, bad secret, ...
//   joined->subscribe([](const otpp::cluster::node_event& e) { ... });
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "otpp/cluster/downing.hpp"
#include "otpp/cluster/membership.hpp"
#include "otpp/cluster/node_id.hpp"
#include "otpp/node.hpp"
#include "otpp/result.hpp"
#include "otpp/transport/config.hpp"

namespace otpp::cluster {

struct options {
  // Where to find the cluster: "host:port" or node ids "name@host:port". A host name that
  // resolves to several addresses is tried at each. This node's own address is skipped.
  std::vector<std::string> seeds;
  // Listen address; empty: the host of the node id. "0.0.0.0" / "::" to listen everywhere.
  std::string bind_address;
  // Listen port; 0: the port of the node id. Differs when something forwards the id's port
  // to this node (a NAT, a proxy, a test's relay).
  std::uint16_t listen_port = 0;
  // Where to dial a member instead of the host:port of its id ("host:port" by node id): a
  // proxy in front of it, or a relay a test controls.
  std::map<std::string, std::string> addresses;
  // Authentication and limits of the connections (secret, cookie_path, insecure, tls, frame
  // and queue bounds). node_id, creation and the heartbeat settings below are filled in.
  transport::config transport{};
  // Gossiped with this node's membership entry (placement, roles).
  std::map<std::string, std::string> tags;
  // A hidden node (a tool) connects to its seeds only: it is not gossiped, not counted, and not
  // listed as a member, but can call and be called.
  bool hidden = false;

  std::chrono::milliseconds gossip_interval{500};
  std::size_t gossip_fanout = 3;
  // Heartbeats on every connection; a connection silent this long makes its node unreachable
  // (the downing rule then decides); silence_timeout closes the connection.
  std::chrono::milliseconds heartbeat_interval{100};
  std::chrono::milliseconds unreachable_after{600};
  std::chrono::milliseconds silence_timeout{10000};
  downing_options downing{};
  // Seeds and lost members are retried with exponential backoff and full jitter.
  std::chrono::milliseconds retry_initial{50};
  std::chrono::milliseconds retry_max{2000};
  // Bound of one connect (TCP + handshake): a hung peer accepts TCP but never answers.
  std::chrono::milliseconds connect_timeout{2000};
  // How long node.stop() waits for its leave announcement to reach the peers.
  std::chrono::milliseconds leave_timeout{1000};
};

struct cluster_stats {
  std::uint64_t frames_in = 0, frames_out = 0;
  std::uint64_t bad_frames = 0;     // undecodable frames (logged, dropped)
  std::uint64_t undeliverable = 0;  // frames whose target process was not alive
  std::uint64_t connect_attempts = 0;
  std::uint64_t rejected_peers = 0;  // blocked incarnations refused
  std::size_t connections = 0;
  std::size_t links = 0;     // local-remote link pairs tracked for noconnection
  std::size_t monitors = 0;  // remote monitors tracked (both directions)
};

class service;

using subscription = std::uint64_t;

// Joins the cluster (call after node.start()). The node's name must be a valid node id
// (name@host:port). Errors: invalid_argument (node id, options), an error of the transport
// (weak_secret, cookie_error, tls_error), or the listen failure (address in use...).
// Joining twice answers the same service.
result<service*> join(node& n, options o);
// The node's cluster service, or nullptr before join.
service* find(node& n);

class service {
 public:
  virtual ~service() = default;
  virtual const node_id& self() const = 0;
  virtual std::uint16_t port() const = 0;  // the bound port
  // Members with status, creation, reachability, tags and uptime (self first).
  virtual std::vector<member> members() const = 0;
  // Node events (exactly once per transition). Runs on a node thread: keep it short.
  virtual subscription subscribe(std::function<void(const node_event&)> f) = 0;
  virtual void unsubscribe(subscription s) = 0;
  // Erlang's net_kernel:monitor_nodes: `p` gets every node_event as a message (handle_info).
  virtual void monitor_nodes(const pid& p, bool on) = 0;
  // Announces the leave (peers see graceful_shutdown) and closes the connections; node.stop()
  // does it too.
  virtual void leave() = 0;
  virtual bool in_minority() const = 0;
  virtual bool downed() const = 0;
  virtual cluster_stats stats() const = 0;
};

}  // namespace otpp::cluster
