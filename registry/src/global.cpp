#include "otpp/registry/global.hpp"

#include <algorithm>
#include <future>
#include <list>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <unordered_map>
#include <unordered_set>

#include "otpp/log.hpp"
#include "replica.hpp"

namespace otpp {
namespace {

using registry_detail::is_local;
using registry_detail::make_frame;
using registry_detail::max_key_length;
using registry_detail::origin_of;
using registry_detail::pid_less;
using namespace registry_detail::global_wire;  // the frames of channel global
namespace wire = registry_detail::global_wire;

// One holder of a name. (holder, seq) identifies a registration: seq is unique per home
// incarnation, so a late message about an earlier registration of the same pid does nothing.
struct candidate {
  pid holder;
  std::uint64_t seq = 0;
  std::int64_t stamp = 0;
  std::uint64_t epoch = 0;  // 0: none
};

std::uint64_t rendezvous_score(std::string_view name, std::string_view node) {
  // FNV-1a then a mixer: the same in every OS process (std::hash is not guaranteed to be).
  std::uint64_t h = 0xcbf29ce484222325ull;
  auto eat = [&h](std::string_view s) {
    for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  };
  eat(name);
  h = (h ^ 0xff) * 0x100000001b3ull;
  eat(node);
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return h;
}

class global_impl final : public registry_detail::replica_core {
 public:
  struct claim {
    std::string name;
    pid holder;
    std::int64_t stamp = 0;
    std::uint64_t epoch = 0;
    std::uint64_t seq = 0;
    node_atom arbiter;
    std::set<std::uint32_t> excluded;  // arbiters that went away during this claim
    std::function<void(result<void>)> done;
    // Armed again by each retry (same deadline), cancelled by whoever completes: from
    // different threads. The node's timer service: no OS timer per claim.
    std::mutex timer_mu;
    std::optional<time_point> deadline;
    timer_ref timer;
  };

  global_impl(node& n, global_options o)
      : replica_core(n, cluster::channels::global, "global"), options_(std::move(o)) {
    if (!options_.resolve) {
      options_.resolve = [](const global_candidate& a, const global_candidate& b) {
        // The lower epoch is stale (its holder was restarted since): the higher keeps the
        // name whatever its stamp. Without an epoch on either side, the earlier registration.
        if (a.epoch != 0 && b.epoch != 0 && a.epoch != b.epoch) return a.epoch > b.epoch;
        if (a.stamp != b.stamp) return a.stamp < b.stamp;
        return pid_less(a.holder, b.holder);
      };
    }
    if (!options_.on_conflict) {
      options_.on_conflict = [](node& n, const global_candidate& loser, const global_candidate&) {
        n.exit(loser.holder, exit_reason("name_conflict"));
      };
    }
  }

  // ---- API
  void register_name(std::string name, const pid& p, global_register_options o,
                     std::function<void(result<void>)> done) {
    if (name.empty() || name.size() > max_key_length) {
      return done(failure(errc::invalid_argument, "a global name has 1 to 1024 bytes"));
    }
    if (!is_local(node_, p)) {
      return done(failure(errc::invalid_argument,
                          p.to_string() + " is not a process of this node: register it there"));
    }
    if (stopping_.load()) return done(failure(errc::node_stopped, node_.name()));
    if (!node_.alive(p)) return done(failure(errc::noproc, p.to_string()));
    ensure_attached();
    node_.watch_exit(p, true);
    // A refusal this replica can see costs no message.
    std::optional<failure> refused;
    {
      std::shared_lock lock(mu_);
      refused = refusal_locked(name, o.epoch, p);
    }
    if (refused) return done(noted(std::move(*refused), p));
    auto c = std::make_shared<claim>();
    c->name = std::move(name);
    c->holder = p;
    c->epoch = o.epoch;
    c->stamp = std::chrono::duration_cast<std::chrono::nanoseconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count();
    c->done = std::move(done);
    if (o.timeout.count() >= 0) c->deadline = node_.now() + o.timeout;
    try_claim(std::move(c));
  }

  result<void> unregister_name(const std::string& name) {
    ensure_attached();
    std::unique_lock lock(mu_);
    auto w = winner_locked(name);
    if (!w) return failure(errc::not_found, name);
    auto holder = *w;
    if (is_local(node_, holder.holder)) {
      remove_locked(name, holder.holder, holder.seq);
      broadcast(make_frame(remove_kind, name, holder.holder, holder.seq));
      return {};
    }
    lock.unlock();
    return send_to(holder.holder.node(), holder.holder.creation(),
                   make_frame(unregister_kind, name, holder.holder, holder.seq));
  }

  result<pid> whereis(const std::string& name) {
    ensure_attached();
    std::shared_lock lock(mu_);
    if (auto w = winner_locked(name)) return w->holder;
    return failure(errc::noproc, name);
  }

  result<global_candidate> lookup(const std::string& name) {
    ensure_attached();
    std::shared_lock lock(mu_);
    if (auto w = winner_locked(name)) return as_public(name, *w);
    return failure(errc::noproc, name);
  }

  std::uint64_t epoch_of(const std::string& name) {
    ensure_attached();
    std::shared_lock lock(mu_);
    return highest_locked(name).first;
  }

  std::vector<std::string> names() {
    ensure_attached();
    std::shared_lock lock(mu_);
    std::vector<std::string> out;
    out.reserve(names_.size());
    for (const auto& [name, cs] : names_) out.push_back(name);
    return out;
  }

  global_registry_stats stats() {
    global_registry_stats s;
    {
      std::shared_lock lock(mu_);
      s.names = names_.size();
      s.candidates = candidates_;
      for (const auto& [p, regs] : homed_) s.homed += regs.size();
      s.epoch_names = fences_.size();
      s.epochs_forgotten = epochs_forgotten_;
    }
    {
      std::lock_guard lock(claims_mu_);
      s.pending = claims_.size();
    }
    s.conflicts = conflicts_.load();
    s.stale_refusals = stale_refusals_.load();
    s.bad_frames = bad_frames();
    s.peers = arbiters().size();
    return s;
  }

  const global_options& options() const { return options_; }

  // The node stops: waiting registrations end now.
  void stop() {
    stopping_.store(true);
    std::vector<std::shared_ptr<claim>> all;
    {
      std::lock_guard lock(claims_mu_);
      for (auto& [seq, c] : claims_) all.push_back(c);
      claims_.clear();
    }
    for (auto& c : all) finish(c, failure(errc::node_stopped, node_.name()));
  }

  // A local process ended: its registrations go, everywhere.
  void process_exited(const pid& p) {
    std::unique_lock lock(mu_);
    auto it = homed_.find(p);
    if (it == homed_.end()) return;
    auto regs = it->second;
    for (const auto& [name, seq] : regs) {
      remove_locked(name, p, seq);
      broadcast(make_frame(remove_kind, name, p, seq));
    }
  }

 protected:
  void send_snapshot(const cluster::peer& to) override {
    std::shared_lock lock(mu_);
    msgpack::sbuffer b;
    msgpack::packer<msgpack::sbuffer> pk(b);
    pk.pack_array(3);
    pk.pack(std::uint64_t{snapshot_kind});
    std::size_t count = 0;
    for (const auto& [p, regs] : homed_) count += regs.size();
    pk.pack_array(static_cast<std::uint32_t>(count));
    for (const auto& [p, regs] : homed_) {
      for (const auto& [name, seq] : regs) {
        auto c = find_locked(name, p, seq);
        pk.pack_array(5);
        pk.pack(name);
        pk.pack(p);
        pk.pack(seq);
        pk.pack(c ? c->stamp : 0);
        pk.pack(c ? c->epoch : 0);
      }
    }
    // What this replica remembers of every name's epochs, least recently raised first (the
    // receiver's memory then forgets in the same order): a replica that started or came back
    // later learns the epochs of names nobody holds any more.
    pk.pack_array(static_cast<std::uint32_t>(fence_order_.size()));
    for (const auto* name : fence_order_) {
      const auto& f = fences_.at(*name);
      pk.pack_array(3);
      pk.pack(*name);
      pk.pack(f.epoch);
      pk.pack(f.holder);
    }
    (void)send_to(to.atom, to.creation, b);
  }

  void handle(const cluster::peer& from, std::uint64_t kind,
              const msgpack::object_array& f) override {
    switch (kind) {
      case claim_kind: {
        auto m = parse_claim(f, origin_of(from));
        return on_claim(from, m);
      }
      case grant_kind: {
        auto m = parse_grant(f);
        return on_answer(from, m.seq, std::nullopt, m.name, m.holder);
      }
      case refuse_kind: {
        auto m = parse_refuse(f);
        return on_answer(
            from, m.seq,
            failure(m.why == refusal::stale_epoch ? errc::stale_epoch : errc::already_registered,
                    std::move(m.holder)),
            {}, {});
      }
      case add_kind: {
        // A stale epoch (registered where the newer one was not known: the other side of a
        // split) is not refused here, only its home could: it is a second holder, a conflict
        // the resolver settles (by default in favour of the higher epoch).
        auto m = parse_add(f, origin_of(from));
        std::vector<conflict> lost;
        {
          std::unique_lock lock(mu_);
          insert_locked(m.name, candidate{m.holder, m.seq, m.stamp, m.epoch});
          resolve_locked(m.name, lost);
        }
        return tell_losers(lost);
      }
      case remove_kind: {
        auto m = parse_remove(f, origin_of(from));
        std::unique_lock lock(mu_);
        remove_locked(m.name, m.holder, m.seq);
        return;
      }
      case snapshot_kind:
        return on_snapshot(from, parse_snapshot(f, origin_of(from)));
      case unregister_kind: {
        auto m = parse_unregister(f);
        std::unique_lock lock(mu_);
        if (!is_local(node_, m.holder) || !has_locked(m.name, m.holder, m.seq)) return;
        remove_locked(m.name, m.holder, m.seq);
        broadcast(make_frame(remove_kind, m.name, m.holder, m.seq));
        return;
      }
      default:
        throw std::invalid_argument("unknown frame kind " + std::to_string(kind));
    }
  }

  void peer_down(const cluster::peer& p) override { fail_over(p.atom); }

  void node_event(const cluster::node_event& e) override {
    using cluster::node_event_kind;
    if (e.kind == node_event_kind::node_unreachable) {
      fail_over(node_atom::find(e.node));
    } else if (e.kind == node_event_kind::node_down) {
      auto atom = node_atom::find(e.node);
      {
        std::unique_lock lock(mu_);
        drop_locked([&](const pid& p) { return p.node() == atom && p.creation() == e.creation; });
      }
      fail_over(atom);
    }
  }

 private:
  struct conflict {
    global_candidate loser, winner;
  };

  // ---- the replica (mu_ held)
  std::optional<candidate> winner_locked(const std::string& name) const {
    auto it = names_.find(name);
    if (it == names_.end() || it->second.empty()) return std::nullopt;
    const auto& cs = it->second;
    if (cs.size() == 1) return cs.front();
    return cs[winner_index(name, cs)];
  }
  // The resolver folded over the candidates in one canonical order: the same winner on every
  // node that holds the same candidates, whatever order they arrived in.
  std::size_t winner_index(const std::string& name, const std::vector<candidate>& cs) const {
    std::vector<std::size_t> order(cs.size());
    for (std::size_t i = 0; i < cs.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
      if (cs[a].stamp != cs[b].stamp) return cs[a].stamp < cs[b].stamp;
      if (cs[a].holder != cs[b].holder) return pid_less(cs[a].holder, cs[b].holder);
      return cs[a].seq < cs[b].seq;
    });
    std::size_t w = order[0];
    for (std::size_t k = 1; k < order.size(); ++k) {
      auto i = order[k];
      if (options_.resolve(as_public(name, cs[i]), as_public(name, cs[w]))) w = i;
    }
    return w;
  }
  static global_candidate as_public(const std::string& name, const candidate& c) {
    return {name, c.holder, c.stamp, c.epoch};
  }
  bool has_locked(const std::string& name, const pid& p, std::uint64_t seq) const {
    auto it = names_.find(name);
    if (it == names_.end()) return false;
    return std::any_of(it->second.begin(), it->second.end(),
                       [&](const candidate& c) { return c.holder == p && c.seq == seq; });
  }
  const candidate* find_locked(const std::string& name, const pid& p, std::uint64_t seq) const {
    auto it = names_.find(name);
    if (it != names_.end()) {
      for (const auto& c : it->second) {
        if (c.holder == p && c.seq == seq) return &c;
      }
    }
    return nullptr;
  }
  void insert_locked(const std::string& name, const candidate& c) {
    auto& cs = names_[name];
    for (const auto& x : cs) {
      if (x.holder == c.holder && x.seq == c.seq) return;
    }
    cs.push_back(c);
    ++candidates_;
    if (is_local(node_, c.holder)) homed_[c.holder].emplace_back(name, c.seq);
    raise_fence_locked(name, c.epoch, c.holder);
  }
  // A holder leaves: its epoch is remembered afresh (while the name was held, the memory of
  // it may have been forgotten past the bound: the holder carried it).
  void released_locked(const std::string& name, const candidate& c) {
    raise_fence_locked(name, c.epoch, c.holder);
  }
  void remove_locked(const std::string& name, const pid& p, std::uint64_t seq) {
    auto it = names_.find(name);
    if (it != names_.end()) {
      auto& cs = it->second;
      auto before = cs.size();
      std::erase_if(cs, [&](const candidate& c) {
        if (!(c.holder == p && c.seq == seq)) return false;
        released_locked(name, c);
        return true;
      });
      candidates_ -= before - cs.size();
      if (cs.empty()) names_.erase(it);
    }
    if (is_local(node_, p)) {
      auto h = homed_.find(p);
      if (h != homed_.end()) {
        std::erase_if(h->second, [&](const auto& r) { return r.first == name && r.second == seq; });
        if (h->second.empty()) homed_.erase(h);
      }
    }
  }
  template <class Pred>
  void drop_locked(Pred pred) {
    for (auto it = names_.begin(); it != names_.end();) {
      auto& cs = it->second;
      auto before = cs.size();
      std::erase_if(cs, [&](const candidate& c) {
        if (!pred(c.holder)) return false;
        released_locked(it->first, c);
        return true;
      });
      candidates_ -= before - cs.size();
      it = cs.empty() ? names_.erase(it) : std::next(it);
    }
  }
  // ---- epochs (mu_ held)
  // The highest epoch registered for `name` (by this replica's knowledge: the remembered one
  // and the current holders'), and by whom; {0, none} if none.
  std::pair<std::uint64_t, pid> highest_locked(const std::string& name) const {
    std::pair<std::uint64_t, pid> high{0, pid{}};
    if (auto f = fences_.find(name); f != fences_.end()) high = {f->second.epoch, f->second.holder};
    if (auto it = names_.find(name); it != names_.end()) {
      for (const auto& c : it->second) {
        if (c.epoch > high.first) high = {c.epoch, c.holder};
      }
    }
    return high;
  }
  // Why a claim of `name` by `p` at `epoch` is refused, if it is: a stale epoch first (a stale
  // instance learns so even while the name is held), then a holder.
  std::optional<failure> stale_locked(const std::string& name, std::uint64_t epoch,
                                      const pid& p) const {
    if (epoch == 0) return std::nullopt;
    auto [high, by] = highest_locked(name);
    if (epoch > high || (epoch == high && by == p)) return std::nullopt;
    return failure(errc::stale_epoch, "'" + name + "' at epoch " + std::to_string(epoch) +
                                          ": epoch " + std::to_string(high) +
                                          " was registered by " + by.to_string());
  }
  std::optional<failure> refusal_locked(const std::string& name, std::uint64_t epoch,
                                        const pid& p) const {
    if (auto stale = stale_locked(name, epoch, p)) return stale;
    if (auto w = winner_locked(name))
      return failure(errc::already_registered, w->holder.to_string());
    return std::nullopt;
  }
  // A refusal this node decided: a stale epoch is counted (before the claimant can hear of
  // it) and logged (after: outside the table's lock).
  static bool is_stale(const failure& f) { return f.code == make_error_code(errc::stale_epoch); }
  void count_refusal(const failure& f) {
    if (is_stale(f)) stale_refusals_.fetch_add(1);
  }
  void log_refusal(const failure& f, const pid& claimant) {
    if (!is_stale(f)) return;
    log(log_level::warning, "global", node_.name(), ": claim by ", claimant.to_string(),
        " refused: stale_epoch: ", f.reason);
  }
  failure noted(failure f, const pid& claimant) {
    count_refusal(f);
    log_refusal(f, claimant);
    return f;
  }
  // Remembers that `name` was registered at `epoch` by `p`: a higher epoch replaces what was
  // remembered, an equal one keeps its first registrant (the pid the equal-epoch rule allows).
  // Least recently raised first out past max_epoch_names.
  void raise_fence_locked(const std::string& name, std::uint64_t epoch, const pid& p) {
    if (epoch == 0 || options_.max_epoch_names == 0) return;
    auto [it, fresh] = fences_.try_emplace(name);
    auto& f = it->second;
    if (fresh) {
      fence_order_.push_back(&it->first);
      f.order = std::prev(fence_order_.end());
    } else if (epoch < f.epoch) {
      return;
    } else {
      fence_order_.splice(fence_order_.end(), fence_order_, f.order);
    }
    if (epoch > f.epoch) {
      f.epoch = epoch;
      f.holder = p;
    }
    while (fences_.size() > options_.max_epoch_names) forget_oldest_locked();
  }
  void forget_oldest_locked() {
    auto oldest = fences_.find(*fence_order_.front());
    auto n = ++epochs_forgotten_;
    // Logged, but a table that keeps overflowing is not a flood of lines.
    if (n <= 10 || n % 1000 == 0) {
      log(log_level::warning, "global", node_.name(), ": forgot the epoch ", oldest->second.epoch,
          " of '", oldest->first, "' (max_epoch_names ", options_.max_epoch_names,
          " reached): a stale claim of it is no longer refused here; ", n, " forgotten so far");
    }
    fence_order_.pop_front();
    fences_.erase(oldest);
  }

  // Local holders of `name` that lose to another holder give the name up: removed here and
  // everywhere; their processes are told once the lock is released (tell_losers).
  void resolve_locked(const std::string& name, std::vector<conflict>& lost) {
    auto it = names_.find(name);
    if (it == names_.end() || it->second.size() < 2) return;
    auto cs = it->second;
    auto w = cs[winner_index(name, cs)];
    for (const auto& c : cs) {
      if (c.holder == w.holder && c.seq == w.seq) continue;
      if (!is_local(node_, c.holder)) continue;  // its home decides
      remove_locked(name, c.holder, c.seq);
      broadcast(make_frame(remove_kind, name, c.holder, c.seq));
      lost.push_back({as_public(name, c), as_public(name, w)});
    }
  }
  void tell_losers(const std::vector<conflict>& lost) {
    for (const auto& c : lost) {
      conflicts_.fetch_add(1);
      log(log_level::warning, "global", node_.name(), ": '", c.loser.name, "' held by ",
          c.loser.holder.to_string(), " lost to ", c.winner.holder.to_string());
      try {
        options_.on_conflict(node_, c.loser, c.winner);
      } catch (const std::exception& e) {
        log(log_level::error, "global", node_.name(), ": on_conflict threw: ", e.what());
      }
    }
  }

  // ---- registration
  // Asks the arbiter of the name (rendezvous hash over this node and the arbiter peers).
  void try_claim(std::shared_ptr<claim> c) {
    for (;;) {
      auto peers = arbiters();
      std::string_view best_id = node_.name();
      node_atom best = node_.atom();
      std::uint32_t best_creation = node_.creation();
      auto best_score = rendezvous_score(c->name, best_id);
      for (const auto& p : peers) {
        if (c->excluded.contains(p.atom.index())) continue;
        auto s = rendezvous_score(c->name, p.id());
        if (s > best_score || (s == best_score && p.id() < best_id)) {
          best_score = s;
          best_id = p.id();
          best = p.atom;
          best_creation = p.creation;
        }
      }
      if (best == node_.atom()) return decide_here(std::move(c));
      // Once in claims_, the claim belongs to whoever takes it out: fail_over (its arbiter went
      // away) may retry it on another thread at once. So this thread reads nothing of it after
      // publishing: the frame is built before, the timer armed under the same lock.
      const auto seq = next_seq_.fetch_add(1);
      auto frame = make_frame(claim_kind, seq, c->name, c->holder, c->stamp, c->epoch);
      {
        std::lock_guard lock(claims_mu_);
        if (stopping_.load()) break;
        c->seq = seq;
        c->arbiter = best;
        claims_[seq] = c;
        arm_timer(c);
      }
      auto sent = send_to(best, best_creation, frame);
      if (sent) return;
      // Not connected after all: another arbiter.
      std::lock_guard lock(claims_mu_);
      if (claims_.erase(seq) == 0) return;  // taken meanwhile (timeout, stop, fail_over)
      c->excluded.insert(best.index());
    }
    finish(c, failure(errc::node_stopped, node_.name()));
  }

  void arm_timer(const std::shared_ptr<claim>& c) {
    if (!c->deadline) return;
    std::weak_ptr<global_impl> weak = std::static_pointer_cast<global_impl>(shared_from_this());
    // The expiry stays the one set at the start: retries do not extend it.
    std::lock_guard lock(c->timer_mu);
    if (c->timer.id) node_.cancel_timer(c->timer);
    auto left = std::max(clock_type::duration::zero(), *c->deadline - node_.now());
    c->timer = node_.run_after(left, [weak, seq = c->seq] {
      auto self = weak.lock();
      if (!self) return;
      std::shared_ptr<claim> mine;
      {
        std::lock_guard lock(self->claims_mu_);
        auto it = self->claims_.find(seq);
        if (it == self->claims_.end()) return;
        mine = it->second;
        self->claims_.erase(it);
      }
      self->finish(mine,
                   failure(errc::timeout, "no answer from the arbiter of '" + mine->name + "' (" +
                                              std::string(mine->arbiter.name()) + ")"));
    });
  }

  void finish(const std::shared_ptr<claim>& c, result<void> r) {
    {
      std::lock_guard lock(c->timer_mu);
      if (c->timer.id) node_.cancel_timer(c->timer);
    }
    auto done = std::move(c->done);
    if (done) done(std::move(r));
  }

  // This node arbitrates its own claim: check and insert under one lock.
  void decide_here(std::shared_ptr<claim> c) {
    candidate mine{c->holder, next_seq_.fetch_add(1), c->stamp, c->epoch};
    {
      std::unique_lock lock(mu_);
      if (auto no = refusal_locked(c->name, c->epoch, c->holder)) {
        lock.unlock();
        return finish(c, noted(std::move(*no), c->holder));
      }
      insert_locked(c->name, mine);
      broadcast(make_frame(add_kind, c->name, mine.holder, mine.seq, mine.stamp, mine.epoch));
    }
    complete_registered(c, mine);
  }

  // The registration is in the replica and broadcast: unless the process died meanwhile
  // (its exit listener may have run before the insert), the caller has the name.
  void complete_registered(const std::shared_ptr<claim>& c, const candidate& mine) {
    if (!node_.alive(c->holder)) {
      {
        std::unique_lock lock(mu_);
        if (has_locked(c->name, mine.holder, mine.seq)) {
          remove_locked(c->name, mine.holder, mine.seq);
          broadcast(make_frame(remove_kind, c->name, mine.holder, mine.seq));
        }
      }
      return finish(c, failure(errc::noproc, c->holder.to_string()));
    }
    finish(c, {});
  }

  // An arbiter's claim from `from` (the home of `p`).
  void on_claim(const cluster::peer& from, const wire::claim& m) {
    std::unique_lock lock(mu_);
    if (auto no = refusal_locked(m.name, m.epoch, m.holder)) {
      auto why = is_stale(*no) ? refusal::stale_epoch : refusal::taken;
      count_refusal(*no);
      (void)send_to(from.atom, from.creation,
                    make_frame(refuse_kind, m.seq, no->reason, static_cast<std::uint8_t>(why)));
      lock.unlock();
      log_refusal(*no, m.holder);
      return;
    }
    // Recorded at once: a second claim is refused before the home's add arrives.
    insert_locked(m.name, candidate{m.holder, m.seq, m.stamp, m.epoch});
    (void)send_to(from.atom, from.creation, make_frame(grant_kind, m.seq, m.name, m.holder));
  }

  // The arbiter's answer: granted (refused empty) or refused (the holder, or a stale epoch).
  void on_answer(const cluster::peer& from, std::uint64_t seq, std::optional<failure> refused,
                 const std::string& name, const pid& p) {
    std::shared_ptr<claim> c;
    {
      std::lock_guard lock(claims_mu_);
      auto it = claims_.find(seq);
      if (it != claims_.end() && it->second->arbiter == from.atom) {
        c = it->second;
        claims_.erase(it);
      }
    }
    if (!c) {
      // Late (timed out, or failed over to another arbiter): the arbiter recorded a
      // registration nobody wants; it goes.
      if (!refused) {
        if (!is_local(node_, p)) throw std::invalid_argument("grant for a foreign pid");
        (void)send_to(from.atom, from.creation, make_frame(remove_kind, name, p, seq));
      }
      return;
    }
    if (refused) return finish(c, std::move(*refused));
    candidate mine{c->holder, seq, c->stamp, c->epoch};
    std::vector<conflict> lost;
    {
      std::unique_lock lock(mu_);
      // A newer epoch arrived meanwhile (registered through another arbiter during a view
      // change): the grant is withdrawn.
      if (auto stale = stale_locked(c->name, c->epoch, c->holder)) {
        (void)send_to(from.atom, from.creation, make_frame(remove_kind, c->name, c->holder, seq));
        lock.unlock();
        return finish(c, noted(std::move(*stale), c->holder));
      }
      // Another holder arrived meanwhile (a different arbiter during a view change): if it
      // wins, this registration is withdrawn instead of taking the name from it.
      if (auto w = winner_locked(c->name)) {
        auto cs = names_[c->name];
        cs.push_back(mine);
        auto win = cs[winner_index(c->name, cs)];
        if (!(win.holder == mine.holder && win.seq == mine.seq)) {
          (void)send_to(from.atom, from.creation, make_frame(remove_kind, c->name, c->holder, seq));
          lock.unlock();
          return finish(c, failure(errc::already_registered, w->holder.to_string()));
        }
      }
      insert_locked(c->name, mine);
      broadcast(make_frame(add_kind, c->name, mine.holder, mine.seq, mine.stamp, mine.epoch));
      resolve_locked(c->name, lost);
    }
    tell_losers(lost);
    complete_registered(c, mine);
  }

  // A peer's snapshot replaces everything held for its node; the epochs it remembers are
  // merged into this replica's (the higher epoch of each name stays).
  void on_snapshot(const cluster::peer& from, const wire::snapshot& s) {
    std::vector<conflict> lost;
    {
      std::unique_lock lock(mu_);
      drop_locked([&](const pid& p) { return p.node() == from.atom; });
      for (const auto& f : s.fences) raise_fence_locked(f.name, f.epoch, f.holder);
      for (const auto& e : s.entries) {
        insert_locked(e.name, candidate{e.holder, e.seq, e.stamp, e.epoch});
      }
      for (const auto& e : s.entries) resolve_locked(e.name, lost);
    }
    tell_losers(lost);
  }

  // Claims waiting for `arbiter` ask another one (a fresh seq: a late answer to the old one
  // is undone, see on_answer).
  void fail_over(node_atom arbiter) {
    std::vector<std::shared_ptr<claim>> moved;
    {
      std::lock_guard lock(claims_mu_);
      for (auto it = claims_.begin(); it != claims_.end();) {
        if (it->second->arbiter == arbiter) {
          moved.push_back(it->second);
          it = claims_.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (auto& c : moved) {
      log(log_level::info, "global", node_.name(), ": arbiter ", arbiter.name(), " of '", c->name,
          "' went away: asking another");
      c->excluded.insert(arbiter.index());
      try_claim(std::move(c));
    }
  }

  global_options options_;
  mutable std::shared_mutex mu_;
  std::unordered_map<std::string, std::vector<candidate>> names_;
  std::size_t candidates_ = 0;
  // Registrations of this node's processes: pid -> (name, seq).
  std::unordered_map<pid, std::vector<std::pair<std::string, std::uint64_t>>> homed_;

  std::mutex claims_mu_;
  std::unordered_map<std::uint64_t, std::shared_ptr<claim>> claims_;
  std::atomic<std::uint64_t> next_seq_{1};
  std::atomic<bool> stopping_{false};
  std::atomic<std::uint64_t> conflicts_{0};
  std::atomic<std::uint64_t> stale_refusals_{0};
  // The highest epoch registered per name (under mu_), kept once the name is free; bounded by
  // options_.max_epoch_names, least recently raised first out (fence_order_, front: oldest;
  // it points at fences_' keys, which stay put while their element lives).
  struct fence_memory {
    std::uint64_t epoch = 0;
    pid holder;
    std::list<const std::string*>::iterator order;
  };
  std::unordered_map<std::string, fence_memory> fences_;
  std::list<const std::string*> fence_order_;
  std::uint64_t epochs_forgotten_ = 0;
};

// The node's global registry: a service of the node (it lives exactly as long as the node).
class global_service final : public node_service {
 public:
  explicit global_service(node& n) : node_(n) {}
  ~global_service() override {
    if (impl_) impl_->detach();
  }

  // The registry, started with `o` (or defaults) on first use.
  global_impl& get(const global_options* o, bool& created) {
    created = false;
    if (auto* i = fast_.load(std::memory_order_acquire)) return *i;
    std::lock_guard lock(mu_);
    if (impl_) return *impl_;
    impl_ = std::make_shared<global_impl>(node_, o ? *o : global_options{});
    std::weak_ptr<global_impl> weak = impl_;
    node_.add_exit_listener([weak](const pid& p, const exit_reason&) {
      if (auto self = weak.lock()) self->process_exited(p);
    });
    node_.add_stop_hook([weak] {
      if (auto self = weak.lock()) self->stop();
    });
    fast_.store(impl_.get(), std::memory_order_release);
    created = true;
    impl_->ensure_attached();
    return *impl_;
  }

 private:
  node& node_;
  std::mutex mu_;
  std::shared_ptr<global_impl> impl_;  // the channel handlers hold it weakly
  std::atomic<global_impl*> fast_{nullptr};
};

global_impl& registry(node& n) {
  bool created = false;
  return n.use_service<global_service>().get(nullptr, created);
}

}  // namespace

result<void> start_global(node& n, global_options options) {
  bool created = false;
  n.use_service<global_service>().get(&options, created);
  if (!created) return failure(errc::invalid_argument, "the global registry already runs");
  return {};
}

global_registry_stats global_stats(node& n) {
  return registry(n).stats();
}

namespace detail {
void global_register(node& n, std::string name, const pid& p, global_register_options o,
                     std::function<void(result<void>)> done) {
  registry(n).register_name(std::move(name), p, o, std::move(done));
}
}  // namespace detail

result<void> register_name(node& n, const global_name& name, const pid& p,
                           std::chrono::milliseconds timeout) {
  return register_name(n, name, p, global_register_options{.timeout = timeout});
}

result<void> register_name(node& n, const global_name& name, const pid& p,
                           global_register_options o) {
  if (current_process()) {
    return failure(errc::would_block, "blocking register_name inside a handler: use a token");
  }
  if (!n.running()) return failure(errc::not_started, n.name());
  // Completed inline or from a frame handler or timer: never needs this thread.
  std::promise<result<void>> promise;
  auto future = promise.get_future();
  detail::global_register(n, name.name, p, o,
                          [&promise](result<void> r) { promise.set_value(std::move(r)); });
  return future.get();
}

result<void> unregister_name(node& n, const global_name& name) {
  return registry(n).unregister_name(name.name);
}

result<pid> whereis(node& n, const global_name& name) {
  return registry(n).whereis(name.name);
}

result<global_candidate> global_lookup(node& n, const global_name& name) {
  return registry(n).lookup(name.name);
}

std::uint64_t global_epoch(node& n, const global_name& name) {
  return registry(n).epoch_of(name.name);
}

std::vector<std::string> global_names(node& n) {
  return registry(n).names();
}

}  // namespace otpp
