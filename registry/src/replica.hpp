// Machinery shared by the global names and the process groups: each is a replica of a table
// whose entries are homed at their process's node. The home broadcasts every change of its
// entries on the layer's cluster channel and sends a snapshot of them to each peer that comes
// up; every node drops the entries of an incarnation that goes down.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <msgpack.hpp>

#include "otpp/cluster/cluster.hpp"
#include "otpp/node.hpp"
#include "replica_wire.hpp"

namespace otpp::registry_detail {

inline bool is_local(const node& n, const pid& p) {
  return p.node() == n.atom() && p.creation() == n.creation();
}
inline origin origin_of(const cluster::peer& p) {
  return {p.atom, p.creation};
}

// A total order on pids that is the same in every OS process (node atoms are interned per
// process, so their indices are not).
inline bool pid_less(const pid& a, const pid& b) {
  if (a.node() != b.node()) return a.node().name() < b.node().name();
  if (a.creation() != b.creation()) return a.creation() < b.creation();
  return a.serial() < b.serial();
}

class replica_core : public std::enable_shared_from_this<replica_core> {
 public:
  replica_core(node& n, cluster::channel_id channel, std::string component)
      : node_(n), channel_(channel), component_(std::move(component)) {}
  virtual ~replica_core() = default;
  replica_core(const replica_core&) = delete;
  replica_core& operator=(const replica_core&) = delete;

  // Opens the channel once the node has joined a cluster (a node without one is a cluster of
  // one). Cheap once attached; called by every entry point.
  void ensure_attached();
  // The service is going away with its node: no more frames or events reach it.
  void detach();
  bool attached() const { return cluster_.load() != nullptr; }
  std::uint64_t bad_frames() const { return bad_frames_.load(); }
  node& this_node() const { return node_; }

 protected:
  // Under the derived table's lock (so no broadcast of it slips between the snapshot and its
  // send): the entries homed here, to `to`.
  virtual void send_snapshot(const cluster::peer& to) = 0;
  // A decoded frame (an array, kind = element 0) of a non-hidden peer, parsed with
  // replica_wire.hpp. Throws on a malformed frame (msgpack::type_error or
  // std::invalid_argument): it is counted, logged and dropped.
  virtual void handle(const cluster::peer& from, std::uint64_t kind,
                      const msgpack::object_array& frame) = 0;
  virtual void peer_down(const cluster::peer&) {}
  virtual void node_event(const cluster::node_event&) {}

  result<void> send_to(node_atom to, std::uint32_t creation, const msgpack::sbuffer& frame);
  // To every ready non-hidden peer (the replicas).
  void broadcast(const msgpack::sbuffer& frame);
  // Peers that may arbitrate: ready, not hidden, attached (their hello arrived on this
  // connection) and reachable. Sorted by id.
  std::vector<cluster::peer> arbiters() const;
  void count_bad_frame(const cluster::peer& from, std::string_view why);

  node& node_;

 private:
  void on_frame(const cluster::peer& from, std::span<const std::uint8_t> payload);
  void on_peer_up(const cluster::peer& p, bool want_snapshot);
  void on_peer_down(const cluster::peer& p);
  void on_event(const cluster::node_event& e);

  const cluster::channel_id channel_;
  const std::string component_;
  std::atomic<cluster::service*> cluster_{nullptr};
  std::mutex attach_mu_;
  cluster::subscription subscription_ = 0;
  bool detached_ = false;

  mutable std::mutex peers_mu_;
  std::map<std::uint32_t, std::uint32_t> attached_peers_;  // atom index -> creation
  std::set<std::uint32_t> unreachable_;                    // atom indices
  std::atomic<std::uint64_t> bad_frames_{0};
};

}  // namespace otpp::registry_detail
