#include "otpp/supervisor/distributed.hpp"

#include <algorithm>
#include <charconv>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <set>

#include "otpp/cluster/cluster.hpp"
#include "otpp/gen_server.hpp"
#include "otpp/log.hpp"
#include "otpp/registry/behaviours.hpp"
#include "otpp/supervisor/singleton.hpp"

namespace otpp {

using namespace std::chrono_literals;

// ---------------------------------------------------------------- placement (pure)

std::optional<std::string> place(const placement& p, const placement_input& in) {
  const auto& c = in.candidates;
  if (c.empty()) return std::nullopt;
  auto rr = [&]() -> std::optional<std::string> { return c[in.sequence % c.size()].node; };
  switch (p.how) {
    case placement::kind::local_first:
      for (const auto& x : c) {
        if (x.node == in.self_node) return x.node;
      }
      return rr();
    case placement::kind::round_robin:
      return rr();
    case placement::kind::least_loaded: {
      // The published load lags (gossip); the supervisor's own children are known exactly, so
      // a batch of starts spreads even before any tag moved. Ties: the lower node id (the
      // candidates are sorted).
      const placement_candidate* best = nullptr;
      for (const auto& x : c) {
        if (!best || x.load + x.children < best->load + best->children) best = &x;
      }
      return best->node;
    }
    case placement::kind::node:
      for (const auto& x : c) {
        if (x.node == p.node_id) return x.node;
      }
      return std::nullopt;
    case placement::kind::tag: {
      // Round robin among the nodes carrying the tag.
      std::vector<const placement_candidate*> fit;
      for (const auto& x : c) {
        auto it = x.tags.find(p.tag_key);
        if (it != x.tags.end() && it->second == p.tag_value) fit.push_back(&x);
      }
      if (fit.empty()) return std::nullopt;
      return fit[in.sequence % fit.size()]->node;
    }
    case placement::kind::custom: {
      if (!p.choose) return std::nullopt;
      auto chosen = p.choose(in);
      // Only a candidate: a user function cannot send a child to a node without a host.
      if (!chosen) return std::nullopt;
      for (const auto& x : c) {
        if (x.node == *chosen) return chosen;
      }
      return std::nullopt;
    }
  }
  return std::nullopt;
}

std::string dsup_global_name(std::string_view supervisor) {
  return "otpp.dsup/" + std::string(supervisor);
}
std::string dsup_host_name(std::string_view supervisor, std::string_view node_id) {
  return "otpp.dsup.host/" + std::string(supervisor) + "/" + std::string(node_id);
}

dsup_wire_child to_wire(const dist_child_spec& c) {
  dsup_wire_child w;
  w.id = c.id;
  w.behaviour = c.behaviour;
  w.global_name = c.global_name;
  w.restart = c.restart;
  if (c.args) {
    w.args.assign(c.args->data(), c.args->data() + c.args->size());
  } else {
    msgpack::sbuffer nil;
    msgpack::packer<msgpack::sbuffer>(nil).pack_nil();
    w.args.assign(nil.data(), nil.data() + nil.size());
  }
  if (c.where && c.where->how == placement::kind::node) w.place_node = c.where->node_id;
  if (c.where && c.where->how == placement::kind::tag) {
    w.tag_key = c.where->tag_key;
    w.tag_value = c.where->tag_value;
  }
  return w;
}

failure detail::restore_dsup_error(failure f) {
  if (f.code != make_error_code(errc::exit)) return f;
  for (auto e : {errc::not_found, errc::running, errc::restarting, errc::minority,
                 errc::reached_max_restart_intensity}) {
    auto name = make_error_code(e).message();
    if (f.reason == name) return failure(e);
    if (f.reason.starts_with(name + ": ")) return failure(e, f.reason.substr(name.size() + 2));
  }
  return f;
}

namespace {

dist_child_spec from_wire(const dsup_wire_child& w) {
  dist_child_spec c;
  c.id = w.id;
  c.behaviour = w.behaviour;
  c.global_name = w.global_name;
  c.restart = w.restart;
  auto buf = std::make_shared<msgpack::sbuffer>();
  buf->write(w.args.data(), w.args.size());
  c.args = std::move(buf);
  if (!w.place_node.empty()) c.where = placement::on_node(w.place_node);
  if (!w.tag_key.empty()) c.where = placement::with_tag(w.tag_key, w.tag_value);
  return c;
}

// The singleton manager's rule (singleton.cpp): this node sees a strict majority of the
// members the downing rule counts (at exactly half: the side with the lowest id). A host
// whose node fails it stops its children at once: about stable_after before the majority can
// see this node's node_down and restart them elsewhere.
bool sees_majority(node& n) {
  auto* c = cluster::find(n);
  if (!c || c->downed() || c->in_minority()) return false;
  std::size_t total = 0, reachable = 0;
  bool self_up = false, lowest_reachable = false;
  std::string lowest;
  for (const auto& m : c->members()) {
    if (m.status != cluster::member_status::up) continue;
    if (!m.self && !m.connected && m.up_since == time_point{}) continue;
    self_up = self_up || m.self;
    ++total;
    bool r = m.self || m.reachable;
    reachable += r;
    if (lowest.empty() || m.id < lowest) {
      lowest = m.id;
      lowest_reachable = r;
    }
  }
  if (!self_up) return false;
  return 2 * reachable > total || (2 * reachable == total && lowest_reachable);
}

constexpr std::string_view stale_prefix = "stale_epoch:";
constexpr std::string_view standby_reason = "dsup_standby";

// ---------------------------------------------------------------- node service

struct dsup_entry {
  dist_supervisor_spec spec;
  pid host;
};

class dsup_service final : public node_service {
 public:
  explicit dsup_service(node& n) : node_(n) {}
  result<void> add(const dist_supervisor_spec& spec) {
    std::lock_guard lock(mu_);
    auto [it, inserted] = entries_.try_emplace(spec.name, dsup_entry{spec, {}});
    if (!inserted) return failure(errc::already_registered, spec.name);
    return {};
  }
  void set_host(const std::string& name, const pid& h) {
    std::lock_guard lock(mu_);
    if (auto it = entries_.find(name); it != entries_.end()) it->second.host = h;
  }
  std::optional<dsup_entry> find(std::string_view name) {
    std::lock_guard lock(mu_);
    auto it = entries_.find(name);
    if (it == entries_.end()) return std::nullopt;
    return it->second;
  }
  void remove(std::string_view name) {
    std::lock_guard lock(mu_);
    if (auto it = entries_.find(name); it != entries_.end()) entries_.erase(it);
  }
  // Publishes this node's process count as tag otpp.load every 500 ms (least_loaded reads it
  // from members()). Started once per node.
  void start_load_publisher() {
    {
      std::lock_guard lock(mu_);
      if (publishing_) return;
      publishing_ = true;
    }
    publish();
  }

 private:
  void publish() {
    if (auto* c = cluster::find(node_)) {
      c->set_tag(std::string(load_tag), std::to_string(node_.process_count()));
    }
    node_.run_after(500ms, [this] { publish(); });
  }

  node& node_;
  std::mutex mu_;
  std::map<std::string, dsup_entry, std::less<>> entries_;
  bool publishing_ = false;
};

// ---------------------------------------------------------------- child host

struct host_check {
  static constexpr std::string_view tag = "otpp.dsup.host.check";
};
struct host_shutdown {
  static constexpr std::string_view tag = "otpp.dsup.host.shutdown";
  using reply = bool;
  OTPP_NO_FIELDS()
};

// One per supervisor per node: starts the supervisor's children on its node, fences epochs
// (a start whose epoch is not above the last one seen for that child is refused: a stale
// supervisor instance cannot start a second copy), answers which children run here (a new
// supervisor instance adopts them), and stops them all as soon as its node loses sight of the
// majority.
class dsup_host final : public gen_server<dsup_host> {
 public:
  dsup_host(std::string sup, std::chrono::milliseconds check)
      : sup_(std::move(sup)), check_(check) {}

  static void define_handlers(handlers<dsup_host>& h) {
    h.call<dsup_host_start>([](dsup_host& self, dsup_host_start m, reply_to<pid> reply) {
      self.on_start(std::move(m), std::move(reply));
    });
    h.call<dsup_host_which>([](dsup_host& self, dsup_host_which) { return self.which(); });
    h.call<dsup_host_stop>([](dsup_host& self, dsup_host_stop m) {
      auto it = self.running_.find(m.id);
      if (it == self.running_.end()) return false;
      self.this_node().stop_process(it->second.child, exit_reason::shutdown());
      return true;
    });
    h.call<host_shutdown>([](dsup_host& self, host_shutdown) {
      // The supervisor stops for good: this node stops managing it and hosting its children.
      (void)stop_singleton(self.this_node(), dsup_global_name(self.sup_));
      self.this_node().use_service<dsup_service>().remove(self.sup_);
      self.stop(exit_reason::shutdown());
      return true;
    });
    h.info<host_check>([](dsup_host& self, host_check) {
      self.check();
      self.this_node().send_after(self.check_, self.self(), host_check{});
    });
    h.info<cluster::node_event>([](dsup_host& self, cluster::node_event) { self.check(); });
    h.info<down>([](dsup_host& self, down d) {
      for (auto it = self.running_.begin(); it != self.running_.end(); ++it) {
        if (it->second.ref == d.ref) {
          self.running_.erase(it);
          return;
        }
      }
      // The older copy a newer start waits for is gone (its global name with it): start.
      for (auto it = self.replacing_.begin(); it != self.replacing_.end(); ++it) {
        if (it->second.old_ref == d.ref) {
          auto next = std::move(it->second);
          self.replacing_.erase(it);
          self.launch(std::move(next.start), std::move(next.reply));
          return;
        }
      }
    });
  }

  result<void> init() {
    auto* c = cluster::find(this_node());
    if (!c) return failure(errc::nodedown, "the node has not joined a cluster");
    c->monitor_nodes(self(), true);
    this_node().send_after(check_, self(), host_check{});
    return {};
  }
  void terminate(const exit_reason&) {
    if (auto* c = cluster::find(this_node())) c->monitor_nodes(self(), false);
    // Children do not outlive their host: nothing would fence or report them.
    for (auto& [id, r] : running_) this_node().stop_process(r.child, exit_reason::shutdown());
  }

 private:
  struct run {
    pid child;
    std::uint64_t epoch = 0;
    monitor_ref ref{};
    bool standby = false;  // asked to stop for lack of a majority (its down is on its way)
  };

  void check() {
    if (running_.empty() || sees_majority(this_node())) return;
    std::size_t stopping = 0;
    for (auto& [id, r] : running_) {
      if (r.standby) continue;
      r.standby = true;
      ++stopping;
      this_node().stop_process(r.child, exit_reason(std::string(standby_reason)));
    }
    if (stopping > 0) {
      log(log_level::warning, "dsup", this_node().name(), ": ", sup_,
          ": this node lost sight of the majority, stopped ", stopping, " children");
    }
  }

  std::vector<dsup_host_child> which() const {
    std::vector<dsup_host_child> out;
    for (const auto& [id, epoch] : last_epoch_) {
      dsup_host_child c{id, {}, epoch};
      if (auto it = running_.find(id); it != running_.end()) {
        c.child = it->second.child;
        c.epoch = it->second.epoch;
      }
      out.push_back(std::move(c));
    }
    return out;
  }

  void on_start(dsup_host_start m, reply_to<pid> reply) {
    auto& n = this_node();
    if (!sees_majority(n)) {
      reply.fail(failure(errc::minority, "this node does not see the majority"));
      return;
    }
    auto& last = last_epoch_[m.child.id];
    if (m.epoch <= last) {
      reply.fail(failure(errc::invalid_argument, std::string(stale_prefix) + std::to_string(last)));
      return;
    }
    last = m.epoch;
    // A start of this child still waiting for an older copy to go: this one overtakes it.
    if (auto w = replacing_.find(m.child.id); w != replacing_.end()) {
      w->second.reply.fail(
          failure(errc::invalid_argument, std::string(stale_prefix) + std::to_string(last)));
      w->second.start = std::move(m);
      w->second.reply = std::move(reply);
      return;
    }
    // A newer epoch means the supervisor considers the older one gone: make sure of it, and
    // start the new copy only once the old one ended (never two; its global name is free then).
    if (auto it = running_.find(m.child.id); it != running_.end()) {
      auto old_ref = it->second.ref;
      n.stop_process(it->second.child, exit_reason::kill());
      running_.erase(it);
      auto id = m.child.id;
      replacing_.emplace(std::move(id), replacement{old_ref, std::move(m), std::move(reply)});
      return;
    }
    launch(std::move(m), std::move(reply));
  }

  void launch(dsup_host_start m, reply_to<pid> reply) {
    auto& n = this_node();
    if (!sees_majority(n)) {  // lost meanwhile (a start that waited for an older copy)
      reply.fail(failure(errc::minority, "this node does not see the majority"));
      return;
    }
    remote_spawn_options o;
    o.monitor = true;
    o.global_name = m.child.global_name;
    // The registry fences the name too: a stale epoch cannot take it back from a newer copy.
    if (!o.global_name.empty()) o.global_epoch = m.epoch;
    auto packed = std::make_shared<msgpack::sbuffer>();
    packed->write(m.child.args.data(), m.child.args.size());
    auto id = m.child.id;
    auto epoch = m.epoch;
    detail::spawn_packed(
        n, n.name(), m.child.behaviour, std::move(packed), std::move(o),
        asio::bind_executor(get_executor(), [this, id, epoch, reply = std::move(reply)](
                                                result<remote_spawned> r) mutable {
          if (!r) {
            reply.fail(r.fail());
            return;
          }
          if (last_epoch_[id] != epoch) {
            // Overtaken by a newer start of the same child while this one ran its init.
            this_node().stop_process(r->child, exit_reason::kill());
            reply.fail(failure(errc::invalid_argument,
                               std::string(stale_prefix) + std::to_string(last_epoch_[id])));
            return;
          }
          running_[id] = run{r->child, epoch, r->monitor, false};
          reply(r->child);
        }));
  }

  std::string sup_;
  std::chrono::milliseconds check_;
  std::map<std::string, run> running_;
  std::map<std::string, std::uint64_t> last_epoch_;
  // Newer starts waiting for the older copy they replace to end (by its monitor's down).
  struct replacement {
    monitor_ref old_ref;
    dsup_host_start start;
    reply_to<pid> reply;
  };
  std::map<std::string, replacement> replacing_;
};

// ---------------------------------------------------------------- the supervisor

struct dsup_args {
  std::string name;
  MSGPACK_DEFINE_MAP(name)
};

// Local-only messages of the supervisor (no msgpack mapping: nothing on the wire forges them).
struct sup_adopt {
  static constexpr std::string_view tag = "otpp.dsup.adopt";
};
struct sup_adopted {
  static constexpr std::string_view tag = "otpp.dsup.adopted";
  // node -> what its host runs (hosts that did not answer are absent)
  std::vector<std::pair<std::string, std::vector<dsup_host_child>>> hosts;
  std::size_t asked = 0;
};
struct sup_started {
  static constexpr std::string_view tag = "otpp.dsup.started";
  std::string id;
  std::uint64_t generation = 0;
  std::string node;
  std::uint64_t epoch = 0;
  result<pid> outcome;
};
struct sup_retry {
  static constexpr std::string_view tag = "otpp.dsup.retry";
  std::string id;
  std::uint64_t generation = 0;
};
struct sup_tick {
  static constexpr std::string_view tag = "otpp.dsup.tick";
};

class dsup_server final : public gen_server<dsup_server> {
 public:
  explicit dsup_server(dsup_args a) : name_(std::move(a.name)), rng_(std::random_device{}()) {}

  static void define_handlers(handlers<dsup_server>& h) {
    h.info<sup_adopt>([](dsup_server& self, sup_adopt) { self.ask_hosts(); });
    h.info<sup_adopted>([](dsup_server& self, sup_adopted a) { self.on_adopted(std::move(a)); });
    h.info<sup_started>([](dsup_server& self, sup_started s) { self.on_started(std::move(s)); });
    h.info<sup_retry>([](dsup_server& self, sup_retry r) {
      auto* k = self.find(r.id);
      if (!k || k->generation != r.generation || k->state != dist_child_state::restarting) return;
      self.start_kid(*k);
    });
    h.info<sup_tick>([](dsup_server& self, sup_tick) {
      self.tick();
      self.this_node().send_after(self.spec_.check_interval, self.self(), sup_tick{});
    });
    h.info<cluster::node_event>(
        [](dsup_server& self, cluster::node_event e) { self.on_node_event(e); });
    h.info<down>([](dsup_server& self, down d) { self.on_down(d); });
    h.call<dsup_which_children>(
        [](dsup_server& self, dsup_which_children) { return self.which(); });
    h.call<dsup_start_child>([](dsup_server& self, dsup_start_child m) -> result<dist_child_info> {
      if (self.find(m.child.id)) return failure(errc::already_registered, m.child.id);
      self.kids_.push_back(kid{from_wire(m.child)});
      // While adopting, the adoption starts it (or adopts a copy an earlier instance started).
      if (self.ready_) self.start_kid(self.kids_.back());
      return self.info_of(self.kids_.back());
    });
    h.call<dsup_terminate_child>([](dsup_server& self, dsup_terminate_child m) -> result<bool> {
      auto* k = self.find(m.id);
      if (!k) return failure(errc::not_found, m.id);
      self.terminate_kid(*k);
      return true;
    });
    h.call<dsup_delete_child>([](dsup_server& self, dsup_delete_child m) -> result<bool> {
      auto* k = self.find(m.id);
      if (!k) return failure(errc::not_found, m.id);
      if (k->state != dist_child_state::stopped) return failure(errc::running, m.id);
      std::erase_if(self.kids_, [&](const kid& x) { return x.spec.id == m.id; });
      return true;
    });
    h.call<dsup_stop>([](dsup_server& self, dsup_stop) {
      self.stop_everywhere(exit_reason::shutdown());
      return true;
    });
  }

  result<void> init() {
    auto e = this_node().use_service<dsup_service>().find(name_);
    if (!e) return failure(errc::not_found, "no distributed supervisor " + name_ + " here");
    spec_ = std::move(e->spec);
    auto* c = cluster::find(this_node());
    if (!c) return failure(errc::nodedown, "the node has not joined a cluster");
    c->monitor_nodes(self(), true);
    for (const auto& s : spec_.children) kids_.push_back(kid{s});
    this_node().send_after(0ms, self(), sup_adopt{});
    this_node().send_after(spec_.check_interval, self(), sup_tick{});
    return {};
  }
  void terminate(const exit_reason& reason) {
    if (auto* c = cluster::find(this_node())) c->monitor_nodes(self(), false);
    // Children are left running on purpose (a node stop, a takeover): the next instance adopts
    // them. Stopping them is stop_dist_supervisor's (or the intensity's) job.
    log(log_level::info, "dsup", this_node().name(), ": ", name_, ": supervisor ends (",
        reason.text(), ")");
  }

 private:
  struct kid {
    dist_child_spec spec{};
    std::string node{};
    pid child{};
    monitor_ref ref{};
    std::uint64_t epoch = 0;
    dist_child_state state = dist_child_state::starting;
    std::uint64_t generation = 0;  // of the start or retry in flight
    std::uint64_t failures = 0;    // consecutive failed starts (backoff)
    bool terminating = false;      // terminate_child asked: not restarted
  };

  kid* find(std::string_view id) {
    for (auto& k : kids_) {
      if (k.spec.id == id) return &k;
    }
    return nullptr;
  }
  kid* find_ref(monitor_ref r) {
    for (auto& k : kids_) {
      if (k.child && k.ref == r) return &k;
    }
    return nullptr;
  }

  dist_child_info info_of(const kid& k) const {
    return {k.spec.id, k.node, k.child, k.epoch, k.state};
  }
  std::vector<dist_child_info> which() const {
    std::vector<dist_child_info> out;
    for (const auto& k : kids_) out.push_back(info_of(k));
    return out;
  }

  // Members that are up, reachable and run this supervisor's host.
  std::vector<std::string> host_nodes() {
    std::vector<std::string> out;
    auto* c = cluster::find(this_node());
    if (!c) return out;
    for (const auto& m : c->members()) {
      if (m.status != cluster::member_status::up || !(m.self || m.reachable)) continue;
      if (!whereis(this_node(), global(dsup_host_name(name_, m.id)))) continue;
      out.push_back(m.id);
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  // ---- adoption (a new instance first learns what already runs)
  void ask_hosts() {
    auto nodes = host_nodes();
    // A member that runs a host but is unreachable (not down) may run children this instance
    // cannot see: starting them elsewhere could run them twice. Wait until it is reachable
    // again (it is asked) or down (its children are gone: restarted).
    if (auto* c = cluster::find(this_node())) {
      for (const auto& m : c->members()) {
        if (m.self || m.reachable || m.status != cluster::member_status::up) continue;
        if (!whereis(this_node(), global(dsup_host_name(name_, m.id)))) continue;
        this_node().send_after(spec_.check_interval, self(), sup_adopt{});
        return;
      }
    }
    struct gather {
      std::mutex mu;
      std::size_t remaining = 0;
      sup_adopted out;
    };
    auto g = std::make_shared<gather>();
    g->remaining = nodes.size();
    g->out.asked = nodes.size();
    auto& n = this_node();
    auto me = self();
    if (nodes.empty()) {
      (void)send(n, me, sup_adopted{});
      return;
    }
    for (const auto& id : nodes) {
      call(n, global(dsup_host_name(name_, id)), dsup_host_which{}, 2000ms,
           [&n, me, g, id](result<std::vector<dsup_host_child>> r) {
             std::lock_guard lock(g->mu);
             if (r) g->out.hosts.emplace_back(id, std::move(*r));
             if (--g->remaining == 0) (void)send(n, me, std::move(g->out));
           });
    }
  }

  void on_adopted(sup_adopted a) {
    if (a.hosts.size() < a.asked) {
      // A host that did not answer may run children: starting them elsewhere now could run
      // them twice. Ask again (a node that went meanwhile is no longer asked after its
      // node_down).
      log(log_level::warning, "dsup", this_node().name(), ": ", name_, ": ",
          a.asked - a.hosts.size(), " hosts did not answer, asking again");
      this_node().send_after(spec_.check_interval, self(), sup_adopt{});
      return;
    }
    // The highest epoch seen per child (running or not), and the running copy with it.
    struct seen {
      std::uint64_t epoch = 0;
      pid child;
      std::string node;
    };
    std::map<std::string, seen> best;
    std::vector<std::pair<std::string, std::string>> extra;  // (node, id) older running copies
    for (auto& [node_id, list] : a.hosts) {
      for (auto& c : list) {
        auto& b = best[c.id];
        if (c.epoch > b.epoch || (c.epoch == b.epoch && c.child && !b.child)) {
          if (b.child) extra.emplace_back(b.node, c.id);
          b = seen{c.epoch, c.child, node_id};
        } else if (c.child) {
          extra.emplace_back(node_id, c.id);
        }
      }
    }
    if (best.empty() && a.hosts.size() < spec_.initial_hosts) {
      // A fresh start while the other nodes' hosts are not registered (or not replicated here)
      // yet: placing now would crowd every child onto the few nodes whose host is known.
      this_node().send_after(spec_.check_interval, self(), sup_adopt{});
      return;
    }
    // Older copies should not exist (the hosts fence): stop them to be sure.
    for (auto& [node_id, id] : extra) {
      dsup_host_stop m{id};
      call(this_node(), global(dsup_host_name(name_, node_id)), std::move(m), [](result<bool>) {});
    }
    // Children started at run time by an earlier instance are not in the spec: adopt them too
    // would need their spec; they are stopped (documented limitation).
    for (auto& [id, b] : best) {
      auto* k = find(id);
      if (!k) {
        if (b.child) {
          dsup_host_stop m{id};
          call(this_node(), global(dsup_host_name(name_, b.node)), std::move(m),
               [](result<bool>) {});
        }
        continue;
      }
      k->epoch = std::max(k->epoch, b.epoch);
      if (b.child) {
        k->child = b.child;
        k->node = b.node;
        k->ref = monitor(b.child);
        k->state = dist_child_state::running;
        ++adopted_;
        // terminate_dist_child asked while this instance was adopting.
        if (k->terminating) {
          k->terminating = false;
          terminate_kid(*k);
        }
        log(log_level::info, "dsup", this_node().name(), ": ", name_, ": adopted ", id, " on ",
            b.node, " (epoch ", b.epoch, ")");
      }
    }
    // A child whose last host is gone (its node went with the previous instance) has an epoch
    // nobody remembers: start it above every epoch the surviving hosts saw for this
    // supervisor, so its epoch still grows (a node that comes back has a fresh host anyway).
    std::uint64_t floor = 0;
    for (const auto& [id, b] : best) floor = std::max(floor, b.epoch);
    ready_ = true;
    for (auto& k : kids_) {
      if (k.child) continue;
      k.epoch = std::max(k.epoch, floor);
      start_kid(k);
    }
  }

  // ---- starting
  void start_kid(kid& k) {
    auto nodes = host_nodes();
    placement_input in;
    in.supervisor = name_;
    in.child_id = k.spec.id;
    in.self_node = this_node().name();
    in.sequence = sequence_++;
    if (auto* c = cluster::find(this_node())) {
      for (const auto& m : c->members()) {
        if (!std::binary_search(nodes.begin(), nodes.end(), m.id)) continue;
        placement_candidate pc{m.id, m.tags, 0, 0};
        if (auto it = m.tags.find(std::string(load_tag)); it != m.tags.end()) {
          std::from_chars(it->second.data(), it->second.data() + it->second.size(), pc.load);
        }
        for (const auto& x : kids_) {
          if (x.node == m.id && x.child) ++pc.children;
          if (x.node == m.id && !x.child && x.state == dist_child_state::starting) ++pc.children;
        }
        in.candidates.push_back(std::move(pc));
      }
    }
    std::sort(in.candidates.begin(), in.candidates.end(),
              [](const auto& a, const auto& b) { return a.node < b.node; });
    const auto& policy = k.spec.where ? *k.spec.where : spec_.where;
    auto target = place(policy, in);
    if (!target) {
      log(log_level::warning, "dsup", this_node().name(), ": ", name_, ": no node can take child ",
          k.spec.id, " (", in.candidates.size(), " candidates); retrying");
      k.node.clear();
      retry_later(k);
      return;
    }
    k.state = dist_child_state::starting;
    k.node = *target;
    k.child = pid{};
    auto epoch = ++k.epoch;
    auto generation = ++k.generation;
    dsup_host_start m{to_wire(k.spec), epoch};
    auto& n = this_node();
    auto me = self();
    auto id = k.spec.id;
    call(n, global(dsup_host_name(name_, *target)), std::move(m), k.spec.start_timeout + 1000ms,
         [&n, me, id, generation, node = *target, epoch](result<pid> r) {
           (void)send(n, me, sup_started{id, generation, node, epoch, std::move(r)});
         });
  }

  void on_started(sup_started s) {
    auto* k = find(s.id);
    if (!k || k->generation != s.generation || k->state != dist_child_state::starting) {
      // A start nobody waits for (the child was deleted, or a newer attempt runs).
      if (s.outcome) this_node().exit(*s.outcome, exit_reason::kill());
      return;
    }
    if (s.outcome) {
      k->child = *s.outcome;
      k->ref = monitor(k->child);
      k->state = dist_child_state::running;
      k->failures = 0;
      if (k->terminating) terminate_kid(*k);
      return;
    }
    const auto& f = s.outcome.fail();
    auto why = f.message();
    if (auto at = why.find(stale_prefix); at != std::string::npos) {
      // The host saw a later epoch (an earlier instance of this supervisor started it there):
      // continue above it.
      std::uint64_t last = 0;
      auto from = why.data() + at + stale_prefix.size();
      std::from_chars(from, why.data() + why.size(), last);
      k->epoch = std::max(k->epoch, last);
    }
    ++start_failures_;
    log(log_level::warning, "dsup", this_node().name(), ": ", name_, ": start of ", s.id, " on ",
        s.node, " failed (", why, "); retrying");
    retry_later(*k);
  }

  void retry_later(kid& k) {
    k.state = dist_child_state::restarting;
    k.child = pid{};
    auto base = spec_.backoff_initial;
    for (std::uint64_t i = 0; i < k.failures && base < spec_.backoff_max; ++i) base *= 2;
    if (base > spec_.backoff_max) base = spec_.backoff_max;
    ++k.failures;
    auto half = base / 2;
    std::uniform_int_distribution<long long> jitter(0, std::max<long long>(half.count(), 0));
    auto delay = (base - half) + std::chrono::milliseconds(jitter(rng_));
    this_node().send_after(delay, self(), sup_retry{k.spec.id, ++k.generation});
  }

  // ---- exits
  void on_down(const down& d) {
    auto* k = find_ref(d.ref);
    if (!k) return;
    if (d.reason.text() == exit_reason::noconnection().text() && !k->terminating) {
      // The connection is lost, the node not necessarily down: restarting now could run the
      // child twice (a flapping link). Wait for node_down (or the connection back).
      k->state = dist_child_state::unreachable;
      log(log_level::warning, "dsup", this_node().name(), ": ", name_, ": child ", k->spec.id,
          " on ", k->node, " unreachable");
      return;
    }
    child_ended(*k, d.reason);
  }

  void child_ended(kid& k, const exit_reason& reason) {
    k.child = pid{};
    k.ref = {};
    if (k.terminating) {
      k.terminating = false;
      k.state = dist_child_state::stopped;
      return;
    }
    log(log_level::info, "dsup", this_node().name(), ": ", name_, ": child ", k.spec.id, " on ",
        k.node, " ended (", reason.text(), ")");
    if (k.spec.restart == restart_type::temporary) {
      auto id = k.spec.id;
      std::erase_if(kids_, [&](const kid& x) { return x.spec.id == id; });
      return;
    }
    if (k.spec.restart == restart_type::transient && !reason.is_failure()) {
      k.state = dist_child_state::stopped;
      return;
    }
    if (reason.text() == standby_reason || !sees_majority(this_node())) {
      // Stopped by its host for lack of a majority, or this instance is itself cut off: not a
      // crash, and no ground for giving up (a minority instance that counted these would stop
      // the supervisor for good on its side). Retried with backoff; the hosts refuse starts
      // until a majority is back, and this instance stands by soon (singleton_standby).
      retry_later(k);
      return;
    }
    // Restart intensity (OTP): more than max_restarts within period and the supervisor gives
    // up, stopping every child everywhere.
    auto now = this_node().now();
    restarts_.push_back(now);
    while (!restarts_.empty() && now - restarts_.front() > spec_.period) restarts_.pop_front();
    if (static_cast<int>(restarts_.size()) > spec_.max_restarts) {
      log(log_level::error, "dsup", this_node().name(), ": ", name_,
          ": reached_max_restart_intensity, stopping");
      stop_everywhere(exit_reason(reached_max_restart_intensity_reason));
      return;
    }
    k.failures = 0;
    start_kid(k);
  }

  void terminate_kid(kid& k) {
    if (k.state == dist_child_state::stopped) return;
    if (!k.child) {
      // Starting: stopped once it answers; restarting: no process to stop.
      if (k.state == dist_child_state::starting) {
        k.terminating = true;
      } else {
        ++k.generation;  // cancels the retry
        k.state = dist_child_state::stopped;
      }
      return;
    }
    k.terminating = true;
    dsup_host_stop m{k.spec.id};
    call(this_node(), global(dsup_host_name(name_, k.node)), std::move(m), [](result<bool>) {});
  }

  // ---- membership
  void on_node_event(const cluster::node_event& e) {
    using k_t = cluster::node_event_kind;
    if (e.kind == k_t::node_down) {
      // By id: a restart may erase (temporary) or give up (intensity) on the way.
      std::vector<std::string> lost;
      for (const auto& k : kids_) {
        if (k.node == e.node && k.child) lost.push_back(k.spec.id);
      }
      for (const auto& id : lost) {
        if (dead_) return;
        if (auto* k = find(id); k && k->node == e.node && k->child) {
          child_ended(*k, exit_reason::noconnection());
        }
      }
    } else if (e.kind == k_t::node_reachable || e.kind == k_t::node_up) {
      // The connection is back before any node_down: watch the child again (a down with
      // noproc comes at once if it ended meanwhile).
      for (auto& k : kids_) {
        if (k.node == e.node && k.state == dist_child_state::unreachable && k.child) {
          k.ref = monitor(k.child);
          k.state = dist_child_state::running;
        }
      }
    }
  }

  void tick() {
    if (!ready_ || dead_) return;
    // A node_down missed (the event came before monitor_nodes): an unreachable child whose
    // node is no longer a member is gone.
    auto* c = cluster::find(this_node());
    if (!c) return;
    auto members = c->members();
    std::vector<std::string> lost;
    for (const auto& k : kids_) {
      if (k.state != dist_child_state::unreachable) continue;
      bool member = std::any_of(members.begin(), members.end(), [&](const auto& m) {
        return m.id == k.node && m.status == cluster::member_status::up;
      });
      if (!member) lost.push_back(k.spec.id);
    }
    for (const auto& id : lost) {
      if (dead_) return;
      if (auto* k = find(id); k && k->state == dist_child_state::unreachable) {
        child_ended(*k, exit_reason::noconnection());
      }
    }
  }

  // Stops every child and every node's host and manager of this supervisor, then itself.
  void stop_everywhere(const exit_reason& reason) {
    dead_ = true;
    for (auto& k : kids_) {
      if (k.child) this_node().exit(k.child, exit_reason::shutdown());
    }
    if (auto* c = cluster::find(this_node())) {
      for (const auto& m : c->members()) {
        if (m.status != cluster::member_status::up) continue;
        call(this_node(), global(dsup_host_name(name_, m.id)), host_shutdown{},
             [](result<bool>) {});
      }
    }
    stop(reason);
  }

  std::string name_;
  dist_supervisor_spec spec_;
  std::vector<kid> kids_;
  std::mt19937_64 rng_;
  std::deque<time_point> restarts_;
  std::uint64_t sequence_ = 0;
  std::uint64_t adopted_ = 0;
  std::uint64_t start_failures_ = 0;
  bool ready_ = false;
  bool dead_ = false;
};

}  // namespace

// ---------------------------------------------------------------- entry points

result<void> start_distributed_supervisor(node& n, dist_supervisor_spec spec) {
  if (spec.name.empty()) return failure(errc::invalid_argument, "a supervisor needs a name");
  if (spec.strategy != restart_strategy::one_for_one &&
      spec.strategy != restart_strategy::simple_one_for_one) {
    return failure(errc::invalid_argument, "one_for_one or simple_one_for_one only");
  }
  if (spec.strategy == restart_strategy::simple_one_for_one && !spec.children.empty()) {
    return failure(errc::invalid_argument, "simple_one_for_one: children come from start_child");
  }
  std::set<std::string> ids;
  for (const auto& c : spec.children) {
    if (c.id.empty() || c.behaviour.empty() || !ids.insert(c.id).second) {
      return failure(errc::invalid_argument, "child ids must be unique and non-empty: " + c.id);
    }
  }
  if (spec.backoff_initial <= 0ms || spec.backoff_max < spec.backoff_initial ||
      spec.check_interval <= 0ms) {
    return failure(errc::invalid_argument, "intervals must be positive");
  }
  if (!n.running()) return failure(errc::not_started, n.name());
  if (current_process()) return failure(errc::invalid_argument, "blocking: not from a process");
  if (!cluster::find(n)) return failure(errc::nodedown, "the node has not joined a cluster");
  auto& service = n.use_service<dsup_service>();
  if (auto r = service.add(spec); !r) return r;
  auto fail = [&](failure f) -> result<void> {
    service.remove(spec.name);
    return f;
  };
  // The supervisor's behaviour (one per node, for every distributed supervisor).
  auto known = registered_behaviours(n);
  if (std::find(known.begin(), known.end(), "otpp.dsup") == known.end()) {
    if (auto r = register_behaviour<dsup_server, dsup_args>(n, "otpp.dsup"); !r) {
      if (r.fail().code != make_error_code(errc::already_registered)) return fail(r.fail());
    }
  }
  service.start_load_publisher();
  auto host = n.spawn<dsup_host>(spec.name, spec.check_interval);
  if (!host) return fail(host.fail());
  if (auto r = register_name(n, global(dsup_host_name(spec.name, n.name())), *host, 10s); !r) {
    n.stop_process(*host, exit_reason::shutdown());
    return fail(r.fail());
  }
  service.set_host(spec.name, *host);
  auto s = singleton(dsup_global_name(spec.name), "otpp.dsup", dsup_args{spec.name});
  s.min_members = spec.min_members;
  s.check_interval = spec.check_interval;
  if (auto m = start_singleton(n, std::move(s)); !m) {
    n.stop_process(*host, exit_reason::shutdown());
    return fail(m.fail());
  }
  return {};
}

result<void> stop_distributed_supervisor(node& n, std::string_view name) {
  auto& service = n.use_service<dsup_service>();
  auto e = service.find(name);
  if (!e) return failure(errc::not_found, std::string(name));
  (void)stop_singleton(n, dsup_global_name(name));
  if (e->host) n.stop_process(e->host, exit_reason::shutdown());
  service.remove(name);
  return {};
}

}  // namespace otpp
