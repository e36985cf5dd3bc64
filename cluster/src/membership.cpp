#include "otpp/cluster/membership.hpp"

#include <algorithm>

namespace otpp::cluster {

std::string_view to_string(node_event_kind k) noexcept {
  switch (k) {
    case node_event_kind::node_up:
      return "node_up";
    case node_event_kind::node_down:
      return "node_down";
    case node_event_kind::node_unreachable:
      return "node_unreachable";
    case node_event_kind::node_reachable:
      return "node_reachable";
    case node_event_kind::minority:
      return "minority";
    case node_event_kind::majority:
      return "majority";
    case node_event_kind::downed:
      return "downed";
  }
  return "unknown";
}

std::string_view to_string(member_status s) noexcept {
  switch (s) {
    case member_status::up:
      return "up";
    case member_status::leaving:
      return "leaving";
    case member_status::down:
      return "down";
  }
  return "unknown";
}

membership::membership(std::string self_id, std::uint32_t creation, membership_options options,
                       io& out, std::uint64_t seed, time_point now)
    : self_(std::move(self_id)),
      creation_(creation),
      options_(std::move(options)),
      out_(out),
      rng_(seed),
      started_(now),
      downing_(self_, options_.downing) {}

void membership::emit(node_event_kind k, const std::string& id, std::uint32_t creation, errc why,
                      std::string detail) {
  out_.event(node_event{k, id, creation, why, std::move(detail)});
}

gossip_entry membership::self_entry() const {
  return gossip_entry{self_, creation_, self_status_, heartbeat_, errc::ok, options_.tags};
}

std::vector<gossip_entry> membership::state() const {
  std::vector<gossip_entry> out;
  out.reserve(members_.size() + 1);
  out.push_back(self_entry());
  for (const auto& [id, r] : members_) {
    out.push_back(gossip_entry{id, r.creation, r.status, r.heartbeat, r.reason, r.tags});
  }
  return out;
}

std::vector<member> membership::members() const {
  std::vector<member> out;
  out.push_back(member{self_, creation_, self_status_, true, true, true, heartbeat_, options_.tags,
                       started_});
  for (const auto& [id, r] : members_) {
    if (r.status == member_status::down) continue;
    out.push_back(member{id, r.creation, r.status, false, r.connected, r.reachable, r.heartbeat,
                         r.tags, r.up_since});
  }
  return out;
}

std::vector<std::pair<std::string, std::uint32_t>> membership::wanted_connections() const {
  std::vector<std::pair<std::string, std::uint32_t>> out;
  if (downed_ || self_status_ != member_status::up) return out;
  for (const auto& [id, r] : members_) {
    if (r.status == member_status::up && !r.connected) out.emplace_back(id, r.creation);
  }
  return out;
}

bool membership::is_blocked(const std::string& id, std::uint32_t creation) const {
  return blocked_.count({id, creation}) != 0;
}
bool membership::is_leaving(const std::string& id, std::uint32_t creation) const {
  auto it = members_.find(id);
  return it != members_.end() && it->second.creation == creation &&
         it->second.status == member_status::leaving;
}
bool membership::is_up(const std::string& id, std::uint32_t creation) const {
  // A downed node counts nobody as up: a lost connection is not probed, nothing redialed.
  if (downed_) return false;
  auto it = members_.find(id);
  return it != members_.end() && it->second.creation == creation &&
         it->second.status != member_status::down;
}

std::size_t membership::counted_members() const {
  return downing_.members();
}

void membership::set_reachable(const std::string& id, record& r, bool reachable, time_point now) {
  if (r.reachable == reachable) return;
  r.reachable = reachable;
  if (r.counted) downing_.set_reachable(id, reachable, now);
  if (!r.announced_up) return;
  emit(reachable ? node_event_kind::node_reachable : node_event_kind::node_unreachable, id,
       r.creation);
  if (reachable && minority_ && downing_.unreachable() == 0) {
    minority_ = false;
    emit(node_event_kind::majority, self_, creation_);
  }
}

void membership::mark_down(const std::string& id, record& r, errc why, time_point now,
                           bool spread) {
  if (r.status == member_status::down) return;
  r.status = member_status::down;
  r.reason = why;
  r.down_since = now;
  blocked_.insert({id, r.creation});
  if (r.counted) {
    downing_.remove_member(id, now);
    r.counted = false;
  }
  if (r.connected) out_.disconnect(id, r.creation, why);
  r.connected = false;
  if (r.announced_up) emit(node_event_kind::node_down, id, r.creation, why);
  if (spread) push_to_all();
}

bool membership::peer_connected(const std::string& id, std::uint32_t creation, time_point now) {
  // Downed: not false (that would tell a healthy peer it is blocked, see self_downed).
  if (downed_) return id != self_;
  if (id == self_ || is_blocked(id, creation)) return false;
  auto it = members_.find(id);
  if (it != members_.end() && it->second.creation != creation) {
    // Creations are random, not ordered: an authenticated handshake from another creation is
    // what says the old incarnation is gone (a restarted node), wherever it was.
    mark_down(id, it->second, errc::connection_closed, now, false);
    members_.erase(it);
    it = members_.end();
  }
  if (it == members_.end()) {
    record fresh;
    fresh.creation = creation;
    it = members_.emplace(id, std::move(fresh)).first;
  }
  record& r = it->second;
  if (r.status == member_status::down) return false;
  r.connected = true;
  if (!r.announced_up) {
    r.announced_up = true;
    r.reachable = true;
    r.up_since = now;
    if (r.status == member_status::up) {
      r.counted = true;
      downing_.add_member(id, now);
    }
    emit(node_event_kind::node_up, id, creation);
  } else {
    set_reachable(id, r, true, now);
  }
  return true;
}

void membership::peer_disconnected(const std::string& id, std::uint32_t creation, bool definite,
                                   errc why, time_point now) {
  if (downed_) return;  // inert (see self_downed)
  auto it = members_.find(id);
  if (it == members_.end() || it->second.creation != creation) return;
  record& r = it->second;
  r.connected = false;
  if (r.status == member_status::down) return;
  if (definite || r.status == member_status::leaving) {
    mark_down(id, r, r.status == member_status::leaving ? errc::graceful_shutdown : why, now, true);
    return;
  }
  set_reachable(id, r, false, now);
}

void membership::peer_silent(const std::string& id, std::uint32_t creation, bool silent,
                             time_point now) {
  if (downed_) return;  // inert (see self_downed)
  auto it = members_.find(id);
  if (it == members_.end() || it->second.creation != creation) return;
  if (it->second.status == member_status::down) return;
  set_reachable(id, it->second, !silent, now);
}

void membership::peer_leaving(const std::string& id, std::uint32_t creation, time_point now) {
  if (downed_) return;  // inert (see self_downed)
  auto it = members_.find(id);
  if (it == members_.end() || it->second.creation != creation) return;
  record& r = it->second;
  if (r.status != member_status::up) return;
  r.status = member_status::leaving;
  // A leaving member is not counted: its silence must not tip a downing decision.
  if (r.counted) {
    downing_.remove_member(id, now);
    r.counted = false;
  }
}

void membership::self_downed(errc why, const std::string& detail) {
  if (downed_) return;
  downed_ = true;
  self_status_ = member_status::down;
  emit(node_event_kind::downed, self_, creation_, why, detail);
  // No disconnect() here: it means "that peer was removed" and the service tells the peer
  // so. A downed node closing its connections that way told healthy members, which had not
  // yet heard the verdict about it, that they were downed: each of them then did the same to
  // its peers and the whole cluster went down (an asymmetric cut was enough; see
  // tools/bench/cluster_sim). The members close these connections when they learn.
  for (auto& [id, r] : members_) r.connected = false;
}

void membership::gossip_received(const std::string& from, const std::vector<gossip_entry>& state,
                                 time_point now) {
  if (downed_) return;
  for (const auto& e : state) {
    if (e.id == self_) {
      // The cluster's verdict on this incarnation. Entries of other creations of this name are
      // earlier incarnations (tombstones, or not yet known dead): not this one's business.
      if (e.creation == creation_ && e.status == member_status::down) {
        self_downed(e.reason, "told by " + from);
        return;
      }
      continue;
    }
    if (is_blocked(e.id, e.creation)) continue;
    auto it = members_.find(e.id);
    if (it != members_.end() && it->second.creation != e.creation) {
      if (e.status == member_status::down) {
        blocked_.insert({e.id, e.creation});
        continue;
      }
      // Another incarnation said to be alive: believe it unless this node holds a live
      // connection to the one it knows (then the gossip is the stale side).
      if (it->second.connected && it->second.status != member_status::down) continue;
      mark_down(e.id, it->second, errc::connection_closed, now, false);
      members_.erase(it);
      it = members_.end();
    }
    if (it == members_.end()) {
      if (e.status == member_status::down) {
        blocked_.insert({e.id, e.creation});
        continue;
      }
      record r;
      r.creation = e.creation;
      r.status = e.status;
      r.heartbeat = e.heartbeat;
      r.tags = e.tags;
      members_.emplace(e.id, std::move(r));
      continue;
    }
    record& r = it->second;
    if (e.heartbeat > r.heartbeat) {
      r.heartbeat = e.heartbeat;
      r.tags = e.tags;
    }
    if (e.status == member_status::down) {
      mark_down(e.id, r, e.reason, now, false);
    } else if (e.status == member_status::leaving && r.status == member_status::up) {
      peer_leaving(e.id, e.creation, now);
    }
  }
}

void membership::push_to_all() {
  auto s = state();
  for (const auto& [id, r] : members_) {
    if (r.connected) out_.send_gossip(id, s);
  }
}

void membership::tick(time_point now) {
  if (downed_) return;
  if (now - last_gossip_ >= options_.gossip_interval) gossip_round(now);
  if (self_status_ != member_status::up) return;
  auto decision = downing_.evaluate(now);
  if (decision.minority && !minority_) {
    minority_ = true;
    emit(node_event_kind::minority, self_, creation_, errc::minority);
  }
  if (!decision.down.empty()) {
    for (const auto& id : decision.down) {
      auto it = members_.find(id);
      if (it == members_.end()) continue;
      mark_down(id, it->second, errc::heartbeat_timeout, now, false);
    }
    push_to_all();
  }
}

void membership::gossip_round(time_point now) {
  last_gossip_ = now;
  ++heartbeat_;
  // Forget old tombstones (their incarnations stay blocked here).
  for (auto it = members_.begin(); it != members_.end();) {
    if (it->second.status == member_status::down &&
        now - it->second.down_since > options_.tombstone_ttl) {
      it = members_.erase(it);
    } else {
      ++it;
    }
  }
  std::vector<const std::string*> peers;
  for (const auto& [id, r] : members_) {
    if (r.connected && r.status != member_status::down) peers.push_back(&id);
  }
  if (!peers.empty()) {
    auto s = state();
    std::size_t n = std::min(options_.gossip_fanout, peers.size());
    // Partial Fisher-Yates: n distinct random peers.
    for (std::size_t i = 0; i < n; ++i) {
      std::uniform_int_distribution<std::size_t> pick(i, peers.size() - 1);
      std::swap(peers[i], peers[pick(rng_)]);
      out_.send_gossip(*peers[i], s);
    }
  }
}

void membership::leave() {
  if (self_status_ != member_status::up) return;
  self_status_ = member_status::leaving;
  push_to_all();
}

void membership::set_tags(std::map<std::string, std::string> tags) {
  // Peers take an entry's tags with a newer heartbeat: the next gossip round carries them.
  options_.tags = std::move(tags);
}

}  // namespace otpp::cluster
