// Membership of one node: who is in the cluster, in which incarnation, with which status, and
// when a member is up, unreachable or down. A plain component: driven by calls that say what
// happened (a connection came up or was lost, gossip arrived, time passed) and answering
// through a small io interface. No sockets, no threads, no clock of its own: the cluster
// service drives it from its connections, and tests and the simulator drive it on virtual
// time.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <msgpack.hpp>

#include "otpp/clock.hpp"
#include "otpp/cluster/downing.hpp"
#include "otpp/error.hpp"

namespace otpp::cluster {

// Wire-stable numbers (they travel in gossip).
enum class member_status : std::uint8_t { up = 0, leaving = 1, down = 2 };

enum class node_event_kind : std::uint8_t {
  node_up,           // a member incarnation is connected and counted
  node_down,         // a member incarnation is gone for good (reason says why)
  node_unreachable,  // silent or disconnected: not down yet (the downing rule decides)
  node_reachable,    // heard again before it was downed
  minority,          // this node is on the losing side of a split: not a member any more
  majority,          // a minority node sees every member again before anyone downed it
  downed,            // this node learned that the cluster downed it: restart to rejoin
};
std::string_view to_string(node_event_kind k) noexcept;
std::string_view to_string(member_status s) noexcept;

// What subscribers hear (also a message: monitor_nodes sends it to a process).
struct node_event {
  static constexpr std::string_view tag = "otpp.node_event";
  node_event_kind kind = node_event_kind::node_up;
  std::string node;  // node id; for minority / majority / downed: this node
  std::uint32_t creation = 0;
  // node_down / downed: connection_closed (its OS process is gone), graceful_shutdown (it
  // left), heartbeat_timeout (downed after silence), downed (removed by a split decision or a
  // newer incarnation); errc::ok otherwise.
  errc reason = errc::ok;
  std::string detail;
  MSGPACK_DEFINE_MAP(kind, node, creation, reason, detail)
};

// One member as gossip carries it. `heartbeat` is the member's own counter, bumped by that
// member on every gossip round: a member whose counter moves is alive somewhere.
struct gossip_entry {
  std::string id;
  std::uint32_t creation = 0;
  member_status status = member_status::up;
  std::uint64_t heartbeat = 0;
  errc reason = errc::ok;  // for down entries
  std::map<std::string, std::string> tags;
  MSGPACK_DEFINE(id, creation, status, heartbeat, reason, tags)
};

// One member as listings show it.
struct member {
  std::string id;
  std::uint32_t creation = 0;
  member_status status = member_status::up;
  bool self = false;
  bool connected = false;  // a connection to this incarnation is up
  bool reachable = true;   // this node's view (false: silent or disconnected)
  std::uint64_t heartbeat = 0;
  std::map<std::string, std::string> tags;
  time_point up_since{};  // when this node saw it up (or started, for self)
};

struct membership_options {
  downing_options downing{};
  std::size_t gossip_fanout = 3;  // peers a gossip round pushes the state to
  clock_type::duration gossip_interval = std::chrono::milliseconds(500);
  std::map<std::string, std::string> tags;
  // Down members stay in gossip this long (so every node learns the block), then only in
  // the local block list.
  clock_type::duration tombstone_ttl = std::chrono::seconds(60);
};

class membership {
 public:
  class io {
   public:
    virtual ~io() = default;
    virtual void send_gossip(const std::string& to, const std::vector<gossip_entry>& state) = 0;
    // Close the connection to (id, creation) if one is up (it was downed or replaced). Only
    // ever called for a member this node removed, so the service may tell that peer it was
    // downed; never for the peers of a node that was itself downed (see downed()).
    virtual void disconnect(const std::string& id, std::uint32_t creation, errc why) = 0;
    virtual void event(const node_event& e) = 0;
  };

  membership(std::string self_id, std::uint32_t creation, membership_options options, io& out,
             std::uint64_t seed, time_point now);

  // An authenticated connection to incarnation (id, creation) is up. False: that
  // incarnation is blocked (downed earlier): the caller tells it and closes. A newer creation
  // of a known id replaces the old incarnation (which goes down). Once this node is downed it
  // answers true and changes nothing: it has no verdict to give about others.
  bool peer_connected(const std::string& id, std::uint32_t creation, time_point now);
  // The connection is gone. `definite` (an immediate reconnect was refused, or the peer
  // announced its leave): the member is down with `why` at once. Otherwise it is
  // unreachable until it reconnects or the downing rule decides.
  void peer_disconnected(const std::string& id, std::uint32_t creation, bool definite, errc why,
                         time_point now);
  // The connection is open but silent (or heard again).
  void peer_silent(const std::string& id, std::uint32_t creation, bool silent, time_point now);
  // The peer announced a graceful leave: when its connection closes it is down with
  // graceful_shutdown, no reconnect.
  void peer_leaving(const std::string& id, std::uint32_t creation, time_point now);
  void gossip_received(const std::string& from, const std::vector<gossip_entry>& state,
                       time_point now);
  // The downing rule, and a gossip round (fanout random connected members) when
  // gossip_interval has passed since the last one. Call it often (the downing bound is as
  // coarse as the calls).
  void tick(time_point now);
  // This node leaves: its status becomes leaving (gossiped).
  void leave();
  // This node's tags (gossiped with its entry from the next round on).
  void set_tags(std::map<std::string, std::string> tags);

  std::vector<gossip_entry> state() const;
  std::vector<member> members() const;  // self first, then by id; down members omitted
  // Members this node should hold a connection to (alive, not connected): full mesh.
  std::vector<std::pair<std::string, std::uint32_t>> wanted_connections() const;
  bool is_blocked(const std::string& id, std::uint32_t creation) const;
  bool is_leaving(const std::string& id, std::uint32_t creation) const;
  bool is_up(const std::string& id, std::uint32_t creation) const;  // false once downed()
  bool in_minority() const noexcept { return minority_; }
  // Downed: inert from then on (no gossip, no dials, no decisions, no verdicts). It closes
  // no connection itself: the members that downed it close theirs, the others as soon as
  // gossip tells them.
  bool downed() const noexcept { return downed_; }
  std::size_t counted_members() const;  // up members this node counts, self included
  std::size_t blocked_incarnations() const { return blocked_.size(); }
  std::optional<time_point> next_deadline() const { return downing_.next_decision_time(); }
  const std::string& self_id() const noexcept { return self_; }

 private:
  struct record {
    std::uint32_t creation = 0;
    member_status status = member_status::up;
    std::uint64_t heartbeat = 0;
    errc reason = errc::ok;
    std::map<std::string, std::string> tags;
    bool connected = false;
    bool reachable = true;
    bool announced_up = false;  // node_up was emitted for this incarnation
    bool counted = false;       // known to the downing rule
    time_point up_since{};
    time_point down_since{};
  };
  void mark_down(const std::string& id, record& r, errc why, time_point now, bool spread);
  void set_reachable(const std::string& id, record& r, bool reachable, time_point now);
  void self_downed(errc why, const std::string& detail);
  void push_to_all();
  void gossip_round(time_point now);
  void emit(node_event_kind k, const std::string& id, std::uint32_t creation, errc why = errc::ok,
            std::string detail = {});
  gossip_entry self_entry() const;

  std::string self_;
  std::uint32_t creation_;
  membership_options options_;
  io& out_;
  std::mt19937_64 rng_;
  time_point started_;
  time_point last_gossip_{};
  std::uint64_t heartbeat_ = 0;
  member_status self_status_ = member_status::up;
  bool minority_ = false;
  bool downed_ = false;
  std::map<std::string, record> members_;                    // other members, by id
  std::set<std::pair<std::string, std::uint32_t>> blocked_;  // dead incarnations
  downing_rule downing_;
};

}  // namespace otpp::cluster

MSGPACK_ADD_ENUM(otpp::cluster::member_status);
MSGPACK_ADD_ENUM(otpp::cluster::node_event_kind);
MSGPACK_ADD_ENUM(otpp::errc);
