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

namespace otpp::registry_detail {

// Names and groups are bounded: they travel in every snapshot.
inline constexpr std::size_t max_key_length = 1024;

inline bool is_local(const node& n, const pid& p) {
  return p.node() == n.atom() && p.creation() == n.creation();
}
inline bool homed_at(const pid& p, const cluster::peer& from) {
  return p.node() == from.atom && p.creation() == from.creation;
}

// A total order on pids that is the same in every OS process (node atoms are interned per
// process, so their indices are not).
inline bool pid_less(const pid& a, const pid& b) {
  if (a.node() != b.node()) return a.node().name() < b.node().name();
  if (a.creation() != b.creation()) return a.creation() < b.creation();
  return a.serial() < b.serial();
}

// Frame kind 0 of every replica channel: [0, want_snapshot]. A node sends it to a peer when it
// attaches (want_snapshot: it missed what came before) and when the peer comes up.
inline constexpr std::uint64_t hello_kind = 0;

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
  // A decoded frame (an array, kind = element 0) of a non-hidden peer. Throws on a malformed
  // frame (msgpack::type_error or std::invalid_argument): it is counted, logged and dropped.
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

// Helpers to build frames: msgpack arrays whose first element is the kind.
template <class... T>
msgpack::sbuffer make_frame(std::uint64_t kind, const T&... fields) {
  msgpack::sbuffer b;
  msgpack::packer<msgpack::sbuffer> pk(b);
  pk.pack_array(static_cast<std::uint32_t>(1 + sizeof...(T)));
  pk.pack(kind);
  (pk.pack(fields), ...);
  return b;
}

// Element i of a frame, or a type_error when the frame is too short.
inline const msgpack::object& field(const msgpack::object_array& a, std::uint32_t i) {
  if (i >= a.size) throw msgpack::type_error();
  return a.ptr[i];
}
// A bounded key (name or group): non-empty, at most max_key_length bytes.
inline std::string key_field(const msgpack::object_array& a, std::uint32_t i) {
  auto s = field(a, i).as<std::string>();
  if (s.empty() || s.size() > max_key_length) throw msgpack::type_error();
  return s;
}

}  // namespace otpp::registry_detail
