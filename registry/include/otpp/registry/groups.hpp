// Process groups across the cluster (Erlang's pg): a process joins named groups; every node
// holds a replica of every group, so members() is a local lookup. A process may join a group
// more than once (it is then listed, and must leave, that many times); its memberships go
// when it ends, and a node's go everywhere when the node goes down.
//
//   otpp::pg::join(node, "workers", *pid);
//   for (auto& p : otpp::pg::members(other_node, "workers")) ...;   // once the join arrived
//   otpp::pg::cast(node, "workers", job{...});                      // to every member
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "otpp/node.hpp"

namespace otpp::pg {

// Starts the node's groups (every entry point below does it otherwise). Call it right after
// cluster::join: a node fills its replica from its peers' snapshots once started.
void start(node& n);

// Joins local process `p` to `group` (again, if it already is a member). invalid_argument: an
// empty or over-long (1024 bytes) group name, `p` is not a process of this node (join on its
// node), or `p` already joined `group` 65536 times; noproc: `p` is not alive.
result<void> join(node& n, std::string_view group, const pid& p);
// Removes one of `p`'s joins. not_found if `p` is not a member; invalid_argument as above.
result<void> leave(node& n, std::string_view group, const pid& p);

// From this node's replica (no network). A pid that joined k times is listed k times.
std::vector<pid> members(node& n, std::string_view group);
std::vector<pid> local_members(node& n, std::string_view group);
std::vector<std::string> which_groups(node& n);

// To every member (once per join): how many sends were accepted (a member may still be gone
// by the time a message arrives, as with any send).
template <message M>
std::size_t cast(node& n, std::string_view group, const M& msg) {
  std::size_t reached = 0;
  for (const auto& p : members(n, group)) reached += static_cast<bool>(otpp::cast(n, p, msg));
  return reached;
}
template <message M>
std::size_t send(node& n, std::string_view group, const M& msg) {
  std::size_t reached = 0;
  for (const auto& p : members(n, group)) reached += static_cast<bool>(otpp::send(n, p, msg));
  return reached;
}

// A change of a group's membership as this node's replica saw it (also a message: see
// monitor below). A pid is listed once per join or leave.
struct membership_change {
  static constexpr std::string_view tag = "otpp.pg.membership_change";
  std::string group;
  std::vector<pid> joined;
  std::vector<pid> left;
  MSGPACK_DEFINE_MAP(group, joined, left)
};

using subscription = std::uint64_t;
// Calls `f` for every change of `group` (an empty group: of every group). Runs on the thread
// that applied the change (a caller of join/leave, an exiting process, a connection's I/O
// thread): keep it short, never block. Never 0.
subscription subscribe(node& n, std::string group, std::function<void(const membership_change&)> f);
void unsubscribe(node& n, subscription s);
// Local process `watcher` gets every change of `group` (empty: of every group) as a
// membership_change message (handle_info), until demonitor or its exit. invalid_argument if
// `watcher` is not a local process, noproc if it is not alive.
result<subscription> monitor(node& n, std::string group, const pid& watcher);
inline void demonitor(node& n, subscription s) {
  unsubscribe(n, s);
}

struct groups_stats {
  std::size_t groups = 0;       // groups with at least one member
  std::size_t memberships = 0;  // joins held in the replica (a pid counted once per join)
  std::size_t homed = 0;        // joins of this node's processes
  std::size_t subscriptions = 0;
  std::uint64_t bad_frames = 0;
};
groups_stats stats(node& n);

}  // namespace otpp::pg
