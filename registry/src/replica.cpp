#include "replica.hpp"

#include <algorithm>

#include "otpp/log.hpp"

namespace otpp::registry_detail {

void replica_core::ensure_attached() {
  if (cluster_.load(std::memory_order_acquire)) return;
  auto* c = cluster::find(node_);
  if (!c) return;
  std::lock_guard lock(attach_mu_);
  if (detached_ || cluster_.load()) return;
  std::weak_ptr<replica_core> weak = weak_from_this();
  cluster::channel_handlers h;
  h.on_frame = [weak](const cluster::peer& from, std::span<const std::uint8_t> payload) {
    if (auto self = weak.lock()) self->on_frame(from, payload);
  };
  h.on_peer_up = [weak](const cluster::peer& p) {
    if (auto self = weak.lock()) self->on_peer_up(p, false);
  };
  h.on_peer_down = [weak](const cluster::peer& p) {
    if (auto self = weak.lock()) self->on_peer_down(p);
  };
  subscription_ = c->subscribe([weak](const cluster::node_event& e) {
    if (auto self = weak.lock()) self->on_event(e);
  });
  c->open_channel(channel_, std::move(h));
  cluster_.store(c, std::memory_order_release);
  // Peers that came up before the channel opened sent their snapshots into the void: ask.
  for (const auto& p : c->ready_peers()) on_peer_up(p, true);
}

void replica_core::detach() {
  std::lock_guard lock(attach_mu_);
  detached_ = true;
  if (auto* c = cluster_.exchange(nullptr)) {
    c->close_channel(channel_);
    c->unsubscribe(subscription_);
  }
}

result<void> replica_core::send_to(node_atom to, std::uint32_t creation,
                                   const msgpack::sbuffer& frame) {
  auto* c = cluster_.load(std::memory_order_acquire);
  if (!c) return failure(errc::nodedown, std::string(to.name()));
  return c->send_channel(
      to, creation, channel_,
      std::span(reinterpret_cast<const std::uint8_t*>(frame.data()), frame.size()));
}

void replica_core::broadcast(const msgpack::sbuffer& frame) {
  auto* c = cluster_.load(std::memory_order_acquire);
  if (!c) return;
  for (const auto& p : c->ready_peers()) {
    if (p.hidden) continue;
    // A lost frame is repaired by the snapshot the peer gets when its connection comes back
    // (or made moot by its node_down).
    (void)send_to(p.atom, p.creation, frame);
  }
}

std::vector<cluster::peer> replica_core::arbiters() const {
  auto* c = cluster_.load(std::memory_order_acquire);
  std::vector<cluster::peer> out;
  if (!c) return out;
  auto ready = c->ready_peers();
  std::lock_guard lock(peers_mu_);
  for (const auto& p : ready) {
    if (p.hidden || unreachable_.contains(p.atom.index())) continue;
    auto it = attached_peers_.find(p.atom.index());
    if (it == attached_peers_.end() || it->second != p.creation) continue;
    out.push_back(p);
  }
  std::sort(out.begin(), out.end(),
            [](const cluster::peer& a, const cluster::peer& b) { return a.id() < b.id(); });
  return out;
}

void replica_core::count_bad_frame(const cluster::peer& from, std::string_view why) {
  auto n = bad_frames_.fetch_add(1) + 1;
  // Logged, but a flood of them is not a flood of lines.
  if (n <= 10 || n % 1000 == 0) {
    log(log_level::warning, component_, node_.name(), ": malformed frame from ", from.id(),
        " dropped (", why, "), ", n, " so far");
  }
}

void replica_core::on_frame(const cluster::peer& from, std::span<const std::uint8_t> payload) {
  if (from.hidden) return;  // hidden nodes are not replicas
  try {
    msgpack::zone zone;
    const auto frame = unpack_frame(zone, payload);
    auto kind = frame_kind(frame);
    if (kind == hello_kind) {
      bool want = parse_hello(frame);
      {
        std::lock_guard lock(peers_mu_);
        attached_peers_[from.atom.index()] = from.creation;
      }
      if (want) on_peer_up(from, false);
      return;
    }
    handle(from, kind, frame);
  } catch (const std::exception& e) {
    count_bad_frame(from, e.what());
  }
}

void replica_core::on_peer_up(const cluster::peer& p, bool want_snapshot) {
  if (p.hidden) return;
  // The snapshot goes first: the peer counts this node as met (its hello) only once it holds
  // what this node homes, so a start gated on "every reachable registry met" (the singleton)
  // never decides on a replica that still lacks this node's names.
  send_snapshot(p);
  (void)send_to(p.atom, p.creation, make_frame(hello_kind, want_snapshot));
}

void replica_core::on_peer_down(const cluster::peer& p) {
  {
    std::lock_guard lock(peers_mu_);
    auto it = attached_peers_.find(p.atom.index());
    if (it != attached_peers_.end() && it->second == p.creation) attached_peers_.erase(it);
  }
  peer_down(p);
}

void replica_core::on_event(const cluster::node_event& e) {
  auto atom = node_atom::find(e.node);
  {
    std::lock_guard lock(peers_mu_);
    switch (e.kind) {
      case cluster::node_event_kind::node_unreachable:
        unreachable_.insert(atom.index());
        break;
      case cluster::node_event_kind::node_reachable:
      case cluster::node_event_kind::node_up:
      case cluster::node_event_kind::node_down:
        unreachable_.erase(atom.index());
        break;
      default:
        break;
    }
  }
  node_event(e);
}

}  // namespace otpp::registry_detail
