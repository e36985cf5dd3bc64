// A node joins a cluster: it listens on the address of its node id, reaches its seeds, learns
// every member by gossip and holds one authenticated connection to each (full mesh). From then
// on call, cast, send, link and monitor take pids of any member with the same API as local
// ones: this layer is the router the runtime hands every non-local envelope to.
//
//   otpp::node node({.name = "api@127.0.0.1:4370"});
//   node.start();
//   otpp::cluster::options o{.seeds = {"127.0.0.1:4371"}};
//   o.on_event = [](const otpp::cluster::node_event& e) { ... };  // every event from the first
//   auto joined = otpp::cluster::join(node, std::move(o));
//   if (!joined) ...;                       // invalid node id, port taken, bad secret, ...
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
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
  // Hears every node event from the first: a subscriber in place before this node listens or
  // dials (service::subscribe, called after join, misses what happened before it, such as the
  // node_up of a seed that answered at once). Same rules as subscribe.
  std::function<void(const node_event&)> on_event;
};

struct cluster_stats {
  std::uint64_t frames_in = 0, frames_out = 0;
  // Bytes of the member connections, ended ones included (with TLS: the plaintext).
  std::uint64_t bytes_in = 0, bytes_out = 0;
  std::uint64_t bad_frames = 0;     // undecodable frames (logged, dropped)
  std::uint64_t undeliverable = 0;  // frames whose target process was not alive
  std::uint64_t connect_attempts = 0;
  std::uint64_t rejected_peers = 0;  // blocked incarnations refused
  std::size_t connections = 0;
  std::size_t links = 0;                     // local-remote link pairs tracked for noconnection
  std::size_t monitors = 0;                  // remote monitors tracked (both directions)
  std::size_t node_monitors = 0;             // monitor_node entries waiting for a nodedown
  std::uint64_t channel_frames_dropped = 0;  // channel frames for a channel nobody opened
};

// How dialing one seed goes (service::seeds): why a node (or a tool) cannot join yet.
struct seed_status {
  std::string seed;              // as given in options::seeds
  unsigned failed_attempts = 0;  // since the last success
  std::error_code last_error;    // of the last failed attempt (not_authorised: bad secret)
  bool connected = false;        // the last attempt reached it (and passed the handshake)
};

// A peer connection as the channel users below see it.
struct peer {
  node_atom atom;
  std::uint32_t creation = 0;
  bool hidden = false;  // a hidden node (a tool): not a member, no replication toward it
  std::string_view id() const { return atom.name(); }
};

// Upper layers (the registry's global names, process groups and remote spawn) run their own
// small protocols over the member connections, each on a channel number it reserves (see
// channels below). Frames of a channel from one peer arrive in the order they were sent, and
// in order with that peer's messages and signals (one connection carries everything).
using channel_id = std::uint8_t;
namespace channels {
inline constexpr channel_id spawn = 1;       // registry: remote spawn by behaviour name
inline constexpr channel_id global = 2;      // registry: global names
inline constexpr channel_id groups = 3;      // registry: process groups
inline constexpr channel_id introspect = 4;  // registry: introspection (the otpp tool)
inline constexpr channel_id user_first = 64;
}  // namespace channels

struct channel_handlers {
  // A frame from `from`. Runs on the connection's I/O thread, in an inbound_scope (a process
  // it wakes runs next on this thread): keep it short, never block. `payload` is valid only
  // during the call.
  std::function<void(const peer& from, std::span<const std::uint8_t> payload)> on_frame;
  // A peer is ready: its hello arrived, and frames sent to it from now on reach it (the first
  // one after every frame sent before). Runs on the cluster's control strand.
  std::function<void(const peer&)> on_peer_up;
  // The connection to a ready peer is gone (frames sent to it before may be lost), also when
  // another connection to it took over. Runs on the control strand, after that connection's
  // on_peer_up and before the node events of its loss. Not called at node stop.
  std::function<void(const peer&)> on_peer_down;
};

// Erlang's {nodedown, Node}: what monitor_node sends.
struct nodedown {
  static constexpr std::string_view tag = "otpp.nodedown";
  std::string node;
  std::uint64_t ref = 0;  // the monitor_node reference
  std::string reason;
  MSGPACK_DEFINE_MAP(node, ref, reason)
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
  // Node events (exactly once per transition) from now on: events before the call are not
  // replayed (options::on_event hears them all; members() shows the current state). Runs on a
  // node thread: keep it short.
  virtual subscription subscribe(std::function<void(const node_event&)> f) = 0;
  virtual void unsubscribe(subscription s) = 0;
  // Erlang's net_kernel:monitor_nodes: `p` gets every node_event as a message (handle_info).
  virtual void monitor_nodes(const pid& p, bool on) = 0;
  // Announces the leave (peers see graceful_shutdown) and closes the connections; node.stop()
  // does it too.
  virtual void leave() = 0;
  // Sets (or, with an empty value, removes) one of this node's tags: members() of every node
  // shows it after the next gossip rounds (about gossip_interval; placement reads loads this
  // way). Any thread.
  virtual void set_tag(std::string key, std::string value) = 0;
  virtual bool in_minority() const = 0;
  virtual bool downed() const = 0;
  virtual cluster_stats stats() const = 0;
  // Each seed's dialing so far (any thread): a seed that refuses this node's secret shows
  // not_authorised, one where nothing listens connection_refused.
  virtual std::vector<seed_status> seeds() const = 0;

  // Erlang's monitor_node: `watcher` gets one `nodedown` message when the connection to
  // `node_id` is lost, or at once if there is none. Removed when it fires, on
  // demonitor_node, or when the watcher ends. Returns the reference (never 0).
  virtual std::uint64_t monitor_node(const pid& watcher, std::string_view node_id) = 0;
  // False if the monitor already fired or never existed.
  virtual bool demonitor_node(std::uint64_t ref) = 0;

  // ---- for upper layers (see channel_handlers)
  // Opens (or replaces) the handlers of a channel; frames for a channel nobody opened are
  // dropped and counted (channel_frames_dropped).
  virtual void open_channel(channel_id channel, channel_handlers handlers) = 0;
  virtual void close_channel(channel_id channel) = 0;
  // Sends a frame to `to` (creation 0: whichever incarnation is connected). nodedown if no
  // ready connection to it (or another incarnation), frame_too_large, mailbox_full (its
  // outgoing queue is full). Any thread; never blocks.
  virtual result<void> send_channel(node_atom to, std::uint32_t creation, channel_id channel,
                                    std::span<const std::uint8_t> payload) = 0;
  // Peers whose hello arrived and whose connection is up (members and hidden nodes).
  virtual std::vector<peer> ready_peers() const = 0;
  // Remote spawn's link and monitor options, set up by the spawned process's node on behalf of
  // a caller on another node, so they are in place before the process runs: as if `remote`
  // had sent a link (a monitor with `ref`) to local process `local`: delivered and tracked as
  // one from the wire (noconnection when the connection goes). False: `local` is not alive.
  virtual bool accept_link(const pid& remote, const pid& local) = 0;
  virtual bool accept_monitor(const pid& remote_watcher, monitor_ref ref, const pid& local) = 0;
  // The caller's side: local process `watcher` monitors remote `target` with `ref`, which
  // target's node already holds (accept_monitor): recorded as if watcher had called
  // monitor(target) and tracked for noconnection. Call it before any down for `ref` can be
  // routed to the watcher (from the handler of the frame that told the watcher of `target`).
  virtual void adopt_monitor(const pid& watcher, monitor_ref ref, const pid& target) = 0;
};

}  // namespace otpp::cluster
