#include "otpp/registry/groups.hpp"

#include <map>
#include <shared_mutex>
#include <unordered_map>

#include "otpp/log.hpp"
#include "replica.hpp"

namespace otpp::pg {
namespace {

using registry_detail::is_local;
using registry_detail::make_frame;
using registry_detail::max_key_length;
using registry_detail::origin_of;
using namespace registry_detail::groups_wire;  // the frames of channel groups

class groups_impl final : public registry_detail::replica_core {
 public:
  explicit groups_impl(node& n) : replica_core(n, cluster::channels::groups, "pg") {}

  // ---- API
  result<void> join(std::string_view group, const pid& p) {
    if (auto bad = check(group, p)) return *bad;
    if (!node_.alive(p)) return failure(errc::noproc, p.to_string());
    ensure_attached();
    node_.watch_exit(p, true);
    changes out;
    {
      std::unique_lock lock(mu_);
      // Peers refuse a count over the limit: the replica of every node stays the same.
      if (joins_locked(std::string(group), p) >= max_joins) {
        return failure(errc::invalid_argument, p.to_string() + " already joined '" +
                                                   std::string(group) + "' " +
                                                   std::to_string(max_joins) + " times");
      }
      add_locked(std::string(group), p, 1, out);
      broadcast(make_frame(join_kind, group, p, std::uint32_t{1}));
    }
    notify(out);
    // Its exit listener may have run before the insert.
    if (!node_.alive(p)) {
      process_exited(p);
      return failure(errc::noproc, p.to_string());
    }
    return {};
  }

  result<void> leave(std::string_view group, const pid& p) {
    if (auto bad = check(group, p)) return *bad;
    ensure_attached();
    changes out;
    {
      std::unique_lock lock(mu_);
      if (!remove_locked(std::string(group), p, 1, out)) {
        return failure(errc::not_found, p.to_string() + " is not in '" + std::string(group) + "'");
      }
      broadcast(make_frame(leave_kind, group, p, std::uint32_t{1}));
    }
    notify(out);
    return {};
  }

  std::vector<pid> members(std::string_view group, bool local_only) {
    ensure_attached();
    std::vector<pid> out;
    std::shared_lock lock(mu_);
    auto it = listed_.find(group);  // by string_view: no key is built
    if (it == listed_.end()) return out;
    if (!local_only) return it->second;  // one copy of a ready list
    for (const auto& p : it->second) {
      if (is_local(node_, p)) out.push_back(p);
    }
    return out;
  }

  std::vector<std::string> which_groups() {
    ensure_attached();
    std::shared_lock lock(mu_);
    std::vector<std::string> out;
    for (const auto& [g, ms] : groups_) out.push_back(g);
    return out;
  }

  subscription subscribe(std::string group, std::function<void(const membership_change&)> f) {
    ensure_attached();
    std::lock_guard lock(subs_mu_);
    auto id = ++next_sub_;
    subs_.emplace(id, sub{std::move(group), std::make_shared<decltype(f)>(std::move(f))});
    return id;
  }
  void unsubscribe(subscription s) {
    std::lock_guard lock(subs_mu_);
    subs_.erase(s);
  }

  groups_stats stats() {
    groups_stats s;
    {
      std::shared_lock lock(mu_);
      s.groups = groups_.size();
      s.memberships = memberships_;
      for (const auto& [p, gs] : homed_) {
        for (const auto& [g, n] : gs) s.homed += n;
      }
    }
    {
      std::lock_guard lock(subs_mu_);
      s.subscriptions = subs_.size();
    }
    s.bad_frames = bad_frames();
    return s;
  }

  // A local process ended: all its joins go, everywhere.
  void process_exited(const pid& p) {
    changes out;
    {
      std::unique_lock lock(mu_);
      auto it = homed_.find(p);
      if (it == homed_.end()) return;
      auto gs = it->second;
      for (const auto& [g, n] : gs) {
        remove_locked(g, p, n, out);
        broadcast(make_frame(leave_kind, g, p, n));
      }
    }
    notify(out);
  }

 protected:
  void send_snapshot(const cluster::peer& to) override {
    std::shared_lock lock(mu_);
    msgpack::sbuffer b;
    msgpack::packer<msgpack::sbuffer> pk(b);
    pk.pack_array(2);
    pk.pack(std::uint64_t{snapshot_kind});
    std::size_t count = 0;
    for (const auto& [p, gs] : homed_) count += gs.size();
    pk.pack_array(static_cast<std::uint32_t>(count));
    for (const auto& [p, gs] : homed_) {
      for (const auto& [g, n] : gs) {
        pk.pack_array(3);
        pk.pack(g);
        pk.pack(p);
        pk.pack(n);
      }
    }
    (void)send_to(to.atom, to.creation, b);
  }

  void handle(const cluster::peer& from, std::uint64_t kind,
              const msgpack::object_array& f) override {
    changes out;
    switch (kind) {
      case join_kind: {
        auto m = parse_change(f, origin_of(from));
        std::unique_lock lock(mu_);
        if (m.joins > max_joins - joins_locked(m.group, m.member)) {
          throw std::invalid_argument("joins over the limit");
        }
        add_locked(m.group, m.member, m.joins, out);
        break;
      }
      case leave_kind: {
        auto m = parse_change(f, origin_of(from));
        std::unique_lock lock(mu_);
        remove_locked(m.group, m.member, m.joins, out);
        break;
      }
      case snapshot_kind:
        on_snapshot(from, parse_snapshot(f, origin_of(from)), out);
        break;
      default:
        throw std::invalid_argument("unknown frame kind " + std::to_string(kind));
    }
    notify(out);
  }

  void node_event(const cluster::node_event& e) override {
    if (e.kind != cluster::node_event_kind::node_down) return;
    auto atom = node_atom::find(e.node);
    changes out;
    {
      std::unique_lock lock(mu_);
      drop_locked([&](const pid& p) { return p.node() == atom && p.creation() == e.creation; },
                  out);
    }
    notify(out);
  }

 private:
  using changes = std::map<std::string, membership_change>;
  struct sub {
    std::string group;  // empty: every group
    std::shared_ptr<std::function<void(const membership_change&)>> f;
  };

  std::optional<failure> check(std::string_view group, const pid& p) const {
    if (group.empty() || group.size() > max_key_length) {
      return failure(errc::invalid_argument, "a group name has 1 to 1024 bytes");
    }
    if (!is_local(node_, p)) {
      return failure(errc::invalid_argument,
                     p.to_string() + " is not a process of this node: join it there");
    }
    return std::nullopt;
  }

  static membership_change& change_of(changes& out, const std::string& g) {
    auto& c = out[g];
    c.group = g;
    return c;
  }
  // p's joins of g in the replica.
  std::uint32_t joins_locked(const std::string& g, const pid& p) const {
    auto it = groups_.find(g);
    if (it == groups_.end()) return 0;
    auto m = it->second.find(p);
    return m == it->second.end() ? 0 : m->second;
  }
  void add_locked(const std::string& g, const pid& p, std::uint32_t n, changes& out) {
    groups_[g][p] += n;
    auto& l = listed_[g];
    l.insert(l.end(), n, p);
    memberships_ += n;
    if (is_local(node_, p)) homed_[p][g] += n;
    auto& c = change_of(out, g);
    c.joined.insert(c.joined.end(), n, p);
  }
  // At most `n` of p's joins; false if it had none.
  bool remove_locked(const std::string& g, const pid& p, std::uint32_t n, changes& out) {
    auto it = groups_.find(g);
    if (it == groups_.end()) return false;
    auto m = it->second.find(p);
    if (m == it->second.end()) return false;
    auto gone = std::min(n, m->second);
    m->second -= gone;
    memberships_ -= gone;
    if (m->second == 0) it->second.erase(m);
    if (it->second.empty()) groups_.erase(it);
    if (auto l = listed_.find(g); l != listed_.end()) {
      // The latest joins of p go first (the order of the others is kept).
      auto left = gone;
      for (auto i = l->second.size(); i-- > 0 && left > 0;) {
        if (l->second[i] == p) {
          l->second.erase(l->second.begin() + static_cast<std::ptrdiff_t>(i));
          --left;
        }
      }
      if (l->second.empty()) listed_.erase(l);
    }
    if (is_local(node_, p)) {
      auto h = homed_.find(p);
      if (h != homed_.end()) {
        auto hg = h->second.find(g);
        if (hg != h->second.end()) {
          hg->second -= std::min(gone, hg->second);
          if (hg->second == 0) h->second.erase(hg);
        }
        if (h->second.empty()) homed_.erase(h);
      }
    }
    auto& c = change_of(out, g);
    c.left.insert(c.left.end(), gone, p);
    return true;
  }
  template <class Pred>
  void drop_locked(Pred pred, changes& out) {
    std::vector<std::tuple<std::string, pid, std::uint32_t>> gone;
    for (const auto& [g, ms] : groups_) {
      for (const auto& [p, n] : ms) {
        if (pred(p)) gone.emplace_back(g, p, n);
      }
    }
    for (const auto& [g, p, n] : gone) remove_locked(g, p, n, out);
  }

  // A peer's snapshot replaces everything held for its node; subscribers hear the difference.
  void on_snapshot(const cluster::peer& from, const std::vector<membership>& entries,
                   changes& out) {
    std::map<std::pair<std::string, pid>, std::uint32_t> fresh;
    for (const auto& e : entries) {
      auto& n = fresh[{e.group, e.member}];
      if (e.joins > max_joins - n) throw std::invalid_argument("joins over the limit");
      n += e.joins;
    }
    std::unique_lock lock(mu_);
    std::map<std::pair<std::string, pid>, std::uint32_t> held;
    for (const auto& [g, ms] : groups_) {
      for (const auto& [p, n] : ms) {
        if (p.node() == from.atom) held[{g, p}] = n;
      }
    }
    for (const auto& [k, n] : held) {
      auto f = fresh.find(k);
      auto keep = f == fresh.end() ? 0 : f->second;
      if (n > keep) remove_locked(k.first, k.second, n - keep, out);
    }
    for (const auto& [k, n] : fresh) {
      auto h = held.find(k);
      auto had = h == held.end() ? 0 : h->second;
      if (n > had) add_locked(k.first, k.second, n - had, out);
    }
  }

  void notify(changes& out) {
    if (out.empty()) return;
    std::vector<sub> subs;
    {
      std::lock_guard lock(subs_mu_);
      for (const auto& [id, s] : subs_) subs.push_back(s);
    }
    for (auto& [g, c] : out) {
      // A join and a leave of one pid in one step (a snapshot never does both) cancel out
      // only for counting; both are reported.
      if (c.joined.empty() && c.left.empty()) continue;
      for (const auto& s : subs) {
        if (!s.group.empty() && s.group != g) continue;
        try {
          (*s.f)(c);
        } catch (const std::exception& e) {
          log(log_level::error, "pg", node_.name(), ": subscriber threw: ", e.what());
        }
      }
    }
  }

  mutable std::shared_mutex mu_;
  std::unordered_map<std::string, std::unordered_map<pid, std::uint32_t>> groups_;
  // The same members as a ready list per group (a pid once per join), for members(): a lookup
  // copies one vector instead of walking a hash map. Keyed for lookups by string_view.
  struct key_hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view k) const noexcept {
      return std::hash<std::string_view>{}(k);
    }
  };
  std::unordered_map<std::string, std::vector<pid>, key_hash, std::equal_to<>> listed_;
  std::size_t memberships_ = 0;
  std::unordered_map<pid, std::map<std::string, std::uint32_t>> homed_;

  std::mutex subs_mu_;
  std::map<subscription, sub> subs_;
  subscription next_sub_ = 0;
};

class groups_service final : public node_service {
 public:
  explicit groups_service(node& n) : node_(n) {}
  ~groups_service() override {
    if (impl_) impl_->detach();
  }
  groups_impl& get() {
    if (auto* i = fast_.load(std::memory_order_acquire)) return *i;
    std::lock_guard lock(mu_);
    if (impl_) return *impl_;
    impl_ = std::make_shared<groups_impl>(node_);
    std::weak_ptr<groups_impl> weak = impl_;
    node_.add_exit_listener([weak](const pid& p, const exit_reason&) {
      if (auto self = weak.lock()) self->process_exited(p);
    });
    fast_.store(impl_.get(), std::memory_order_release);
    impl_->ensure_attached();
    return *impl_;
  }

 private:
  node& node_;
  std::mutex mu_;
  std::shared_ptr<groups_impl> impl_;  // the channel handlers hold it weakly
  std::atomic<groups_impl*> fast_{nullptr};
};

groups_impl& groups(node& n) {
  return n.use_service<groups_service>().get();
}

}  // namespace

void start(node& n) {
  (void)groups(n);
}
result<void> join(node& n, std::string_view group, const pid& p) {
  return groups(n).join(group, p);
}
result<void> leave(node& n, std::string_view group, const pid& p) {
  return groups(n).leave(group, p);
}
std::vector<pid> members(node& n, std::string_view group) {
  return groups(n).members(group, false);
}
std::vector<pid> local_members(node& n, std::string_view group) {
  return groups(n).members(group, true);
}
std::vector<std::string> which_groups(node& n) {
  return groups(n).which_groups();
}
subscription subscribe(node& n, std::string group,
                       std::function<void(const membership_change&)> f) {
  return groups(n).subscribe(std::move(group), std::move(f));
}
void unsubscribe(node& n, subscription s) {
  groups(n).unsubscribe(s);
}
result<subscription> monitor(node& n, std::string group, const pid& watcher) {
  if (!is_local(n, watcher)) {
    return failure(errc::invalid_argument, watcher.to_string() + " is not a process of this node");
  }
  auto& g = groups(n);
  auto id = g.subscribe(std::move(group), [&n, watcher](const membership_change& c) {
    (void)otpp::send(n, watcher, c);
  });
  // Ends with the watcher (at once, here, if it is not alive).
  std::weak_ptr<groups_impl> weak = std::static_pointer_cast<groups_impl>(g.shared_from_this());
  n.watch_process(watcher, [weak, id](const exit_reason&) {
    if (auto self = weak.lock()) self->unsubscribe(id);
  });
  if (!n.alive(watcher)) return failure(errc::noproc, watcher.to_string());
  return id;
}
groups_stats stats(node& n) {
  return groups(n).stats();
}

}  // namespace otpp::pg
