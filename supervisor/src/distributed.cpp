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
  w.brutal_kill = c.shutdown.how == shutdown_mode::kind::brutal_kill;
  w.shutdown_ms = c.shutdown.how == shutdown_mode::kind::infinity ? -1 : c.shutdown.after.count();
  w.start_timeout_ms = c.start_timeout.count();
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
  if (w.brutal_kill) {
    c.shutdown = shutdown_mode::brutal_kill();
  } else if (w.shutdown_ms < 0) {
    c.shutdown = shutdown_mode::infinity();
  } else {
    c.shutdown = shutdown_mode::timeout(std::chrono::milliseconds(w.shutdown_ms));
  }
  c.start_timeout = std::chrono::milliseconds(std::max<std::int64_t>(w.start_timeout_ms, 1));
  return c;
}

// A host bounds every stop: infinity would let one child hold a move or a supervisor stop.
bool valid_shutdown(const shutdown_mode& m) {
  if (m.how == shutdown_mode::kind::brutal_kill) return true;
  return m.how == shutdown_mode::kind::timeout && m.after >= std::chrono::milliseconds(0);
}

// How long a host may take to stop a child: its shutdown, the grace after the kill, slack.
constexpr std::chrono::milliseconds kill_wait{500};
std::chrono::milliseconds stop_bound(const dist_child_spec& c) {
  auto t = c.shutdown.how == shutdown_mode::kind::timeout ? c.shutdown.after : 0ms;
  return t + kill_wait + 2000ms;
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
// Local only (no msgpack mapping): a child's shutdown timeout (killed false) or the grace
// after its kill (killed true) passed.
struct host_stop_timer {
  static constexpr std::string_view tag = "otpp.dsup.host.stop_timer";
  std::string id;
  pid child;
  bool killed = false;
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
    h.call<dsup_host_stop>([](dsup_host& self, dsup_host_stop m, reply_to<bool> reply) {
      auto it = self.running_.find(m.id);
      if (it == self.running_.end() || (m.epoch != 0 && it->second.epoch != m.epoch)) {
        reply(false);
        return;
      }
      it->second.stop_waiters.push_back(std::move(reply));
      self.begin_stop(it->first, it->second);
    });
    h.call<dsup_host_stop_all>([](dsup_host& self, dsup_host_stop_all, reply_to<bool> reply) {
      // The supervisor stops for good: no start from now on (a stale instance's included).
      self.closing_ = true;
      self.stop_all_waiters_.push_back(std::move(reply));
      for (auto& [id, r] : self.running_) self.begin_stop(id, r);
      self.check_stopped_all();
    });
    h.info<host_stop_timer>([](dsup_host& self, host_stop_timer t) { self.on_stop_timer(t); });
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
          auto waiters = std::move(it->second.stop_waiters);
          self.running_.erase(it);
          for (auto& w : waiters) w(true);
          self.check_stopped_all();
          return;
        }
      }
      // The older copy a newer start waits for is gone (its global name with it): start.
      for (auto it = self.replacing_.begin(); it != self.replacing_.end(); ++it) {
        if (it->second.old_ref == d.ref) {
          auto next = std::move(it->second);
          self.replacing_.erase(it);
          for (auto& w : next.old_waiters) w(true);
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
    bool standby = false;    // asked to stop for lack of a majority (its down is on its way)
    bool stopping = false;   // asked to stop per its shutdown (dsup_host_stop, stop_all)
    bool abandoned = false;  // still in a handler kill_wait after its kill
    std::vector<reply_to<bool>> stop_waiters{};  // answered at its down
  };

  // Stops a child per its spec's shutdown: stop_process(shutdown) (its terminate runs), then
  // kill at the timeout; brutal_kill: kill at once. Answers come with its down.
  void begin_stop(const std::string& id, run& r) {
    if (r.stopping) return;
    r.stopping = true;
    auto spec = spec_of(id);
    if (spec.shutdown.how == shutdown_mode::kind::brutal_kill) {
      kill_child(id, r);
      return;
    }
    this_node().stop_process(r.child, exit_reason::shutdown());
    this_node().send_after(spec.shutdown.after, self(), host_stop_timer{id, r.child, false});
  }
  void kill_child(const std::string& id, run& r) {
    this_node().exit(r.child, exit_reason::kill());
    this_node().send_after(kill_wait, self(), host_stop_timer{id, r.child, true});
  }
  void on_stop_timer(const host_stop_timer& t) {
    auto it = running_.find(t.id);
    if (it == running_.end() || it->second.child != t.child) return;  // ended in time
    auto& r = it->second;
    if (!t.killed) {
      log(log_level::warning, "dsup", this_node().name(), ": ", sup_, ": child ", t.id, " ",
          t.child.to_string(), " did not stop within ", spec_of(t.id).shutdown.after.count(),
          " ms: killing it");
      kill_child(t.id, r);
      return;
    }
    // A kill lands only when the running handler returns: give up waiting (it is still fenced
    // here: a newer start of it waits for its down).
    log(log_level::warning, "dsup", this_node().name(), ": ", sup_, ": child ", t.id, " ",
        t.child.to_string(), " abandoned: still in a handler ", kill_wait.count(),
        " ms after kill; it ends when that returns");
    r.abandoned = true;
    auto waiters = std::move(r.stop_waiters);
    for (auto& w : waiters) {
      w.fail(failure(errc::timeout, "child " + t.id + " still in a handler after its kill"));
    }
    check_stopped_all();
  }
  // stop_all answers once no child here is left but abandoned ones.
  void check_stopped_all() {
    if (stop_all_waiters_.empty()) return;
    bool abandoned = false;
    for (const auto& [id, r] : running_) {
      if (!r.abandoned) return;
      abandoned = true;
    }
    auto waiters = std::move(stop_all_waiters_);
    stop_all_waiters_.clear();
    for (auto& w : waiters) w(!abandoned);
  }
  dist_child_spec spec_of(const std::string& id) const {
    auto it = specs_.find(id);
    return it == specs_.end() ? dist_child_spec{} : from_wire(it->second);
  }

  void check() {
    if (running_.empty() || sees_majority(this_node())) return;
    std::size_t stopping = 0;
    for (auto& [id, r] : running_) {
      if (r.standby || r.stopping) continue;
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
      dsup_host_child c{id, {}, epoch, {}};
      if (auto it = running_.find(id); it != running_.end()) {
        c.child = it->second.child;
        c.epoch = it->second.epoch;
        if (auto s = specs_.find(id); s != specs_.end()) c.spec = s->second;
      }
      out.push_back(std::move(c));
    }
    return out;
  }

  void on_start(dsup_host_start m, reply_to<pid> reply) {
    auto& n = this_node();
    if (closing_) {
      reply.fail(failure(errc::noproc, "the supervisor " + sup_ + " is stopping"));
      return;
    }
    if (!sees_majority(n)) {
      reply.fail(failure(errc::minority, "this node does not see the majority"));
      return;
    }
    auto& last = last_epoch_[m.child.id];
    if (m.epoch <= last) {
      reply.fail(failure(errc::stale_epoch, std::to_string(last)));
      return;
    }
    last = m.epoch;
    // A start of this child still waiting for an older copy to go: this one overtakes it.
    if (auto w = replacing_.find(m.child.id); w != replacing_.end()) {
      w->second.reply.fail(failure(errc::stale_epoch, std::to_string(last)));
      w->second.start = std::move(m);
      w->second.reply = std::move(reply);
      return;
    }
    // A newer epoch means the supervisor considers the older one gone: make sure of it, and
    // start the new copy only once the old one ended (never two; its global name is free then).
    if (auto it = running_.find(m.child.id); it != running_.end()) {
      auto old_ref = it->second.ref;
      auto old_waiters = std::move(it->second.stop_waiters);
      n.stop_process(it->second.child, exit_reason::kill());
      running_.erase(it);
      auto id = m.child.id;
      replacing_.emplace(std::move(id), replacement{old_ref, std::move(m), std::move(reply),
                                                    std::move(old_waiters)});
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
    specs_[m.child.id] = m.child;  // which() reports it: a new instance rebuilds the child
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
            reply.fail(failure(errc::stale_epoch, std::to_string(last_epoch_[id])));
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
  std::map<std::string, dsup_wire_child> specs_;  // of the last start of each child here
  // Newer starts waiting for the older copy they replace to end (by its monitor's down).
  struct replacement {
    monitor_ref old_ref;
    dsup_host_start start;
    reply_to<pid> reply;
    std::vector<reply_to<bool>> old_waiters;  // stops of the older copy
  };
  std::map<std::string, replacement> replacing_;
  std::vector<reply_to<bool>> stop_all_waiters_;
  bool closing_ = false;  // stop_all asked: the supervisor stops for good
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
// A rebalance move's stop, as the old copy's host answered it.
struct sup_move_stopped {
  static constexpr std::string_view tag = "otpp.dsup.move_stopped";
  std::string id;
  std::uint64_t run = 0;
  result<bool> outcome;
};
// stop_dist_supervisor's first phase ended: the hosts that did not confirm (node ids).
struct sup_hosts_stopped {
  static constexpr std::string_view tag = "otpp.dsup.hosts_stopped";
  std::vector<std::string> unconfirmed;
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
      if (self.dead_ || !k || k->generation != r.generation ||
          k->state != dist_child_state::restarting) {
        return;
      }
      self.start_kid(*k, k->move_to);  // a move retried on its target (on_started)
    });
    h.info<sup_tick>([](dsup_server& self, sup_tick) {
      self.tick();
      self.this_node().send_after(self.spec_.check_interval, self.self(), sup_tick{});
    });
    h.info<sup_move_stopped>(
        [](dsup_server& self, sup_move_stopped m) { self.on_move_stopped(std::move(m)); });
    h.info<sup_hosts_stopped>(
        [](dsup_server& self, sup_hosts_stopped m) { self.on_hosts_stopped(std::move(m)); });
    h.info<cluster::node_event>(
        [](dsup_server& self, cluster::node_event e) { self.on_node_event(e); });
    h.info<down>([](dsup_server& self, down d) { self.on_down(d); });
    h.call<dsup_which_children>(
        [](dsup_server& self, dsup_which_children) { return self.which(); });
    h.call<dsup_start_child>(
        [](dsup_server& self, dsup_start_child m, reply_to<dist_child_info> reply) {
          self.on_start_child(std::move(m), std::move(reply));
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
    h.call<dsup_stop>([](dsup_server& self, dsup_stop, reply_to<bool> reply) {
      // A second stop while the first waits for the hosts hears the same answer.
      self.stop_waiters_.push_back(std::move(reply));
      self.stop_everywhere(exit_reason::shutdown());
    });
    h.call<dsup_rebalance>(
        [](dsup_server& self, dsup_rebalance, reply_to<dist_rebalance_report> reply) {
          self.on_rebalance(std::move(reply));
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
    // start_dist_child callers, answered by the first start's outcome.
    std::vector<reply_to<dist_child_info>> start_waiters{};
    // A rebalance move: its host was asked to stop it; its down starts it on move_to.
    std::string move_to{};
    std::string move_from{};
    pid move_old{};  // the copy stopped for the move
    std::uint64_t move_run = 0;
    bool run_time = false;  // added by start_dist_child (its hosts report its spec)
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
  failure stopping() const {
    return failure(errc::noproc, "the supervisor " + name_ + " is stopping");
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

  // Where children may go now (host_nodes), with their tags, load and this supervisor's
  // children there (running or starting), sorted by node id.
  std::vector<placement_candidate> candidates() {
    auto nodes = host_nodes();
    std::vector<placement_candidate> out;
    if (auto* c = cluster::find(this_node())) {
      for (const auto& m : c->members()) {
        if (!std::binary_search(nodes.begin(), nodes.end(), m.id)) continue;
        placement_candidate pc{m.id, m.tags, 0, 0};
        if (auto it = m.tags.find(std::string(load_tag)); it != m.tags.end()) {
          std::from_chars(it->second.data(), it->second.data() + it->second.size(), pc.load);
        }
        for (const auto& x : kids_) {
          if (x.node == m.id && (x.child || x.state == dist_child_state::starting)) ++pc.children;
        }
        out.push_back(std::move(pc));
      }
    }
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.node < b.node; });
    return out;
  }

  // ---- adoption (a new instance first learns what already runs)
  void ask_hosts() {
    if (dead_) return;
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
    if (dead_) return;
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
      dsup_wire_child spec;
    };
    std::map<std::string, seen> best;
    std::vector<std::pair<std::string, std::string>> extra;  // (node, id) older running copies
    for (auto& [node_id, list] : a.hosts) {
      for (auto& c : list) {
        auto& b = best[c.id];
        if (c.epoch > b.epoch || (c.epoch == b.epoch && c.child && !b.child)) {
          if (b.child) extra.emplace_back(b.node, c.id);
          b = seen{c.epoch, c.child, node_id, std::move(c.spec)};
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
      dsup_host_stop m{id, 0};
      call(this_node(), global(dsup_host_name(name_, node_id)), std::move(m), [](result<bool>) {});
    }
    for (auto& [id, b] : best) {
      auto* k = find(id);
      if (!k && b.child && b.spec.run_time && b.spec.id == id) {
        // Started at run time by an earlier instance: its host keeps its spec.
        kids_.push_back(kid{from_wire(b.spec)});
        k = &kids_.back();
        k->run_time = true;
        log(log_level::info, "dsup", this_node().name(), ": ", name_, ": rebuilt run-time child ",
            id, " from its host's spec");
      }
      if (!k) {
        // Neither in the spec nor started at run time (a spec child this instance's spec no
        // longer has): stopped.
        if (b.child) {
          dsup_host_stop m{id, 0};
          call(this_node(), global(dsup_host_name(name_, b.node)), std::move(m),
               [](result<bool>) {});
        }
        continue;
      }
      k->epoch = std::max(k->epoch, b.epoch);
      if (b.child) {
        if (!k->start_waiters.empty()) {
          // start_dist_child asked while this instance was adopting, for an id that runs.
          auto waiters = std::move(k->start_waiters);
          k->start_waiters.clear();
          for (auto& w : waiters) {
            w.fail(failure(errc::already_registered, "already_started: " + b.child.to_string()));
          }
          if (b.spec.run_time && b.spec.id == id) {
            k->spec = from_wire(b.spec);
          }
        }
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
  void on_start_child(dsup_start_child m, reply_to<dist_child_info> reply) {
    if (dead_) {
      reply.fail(stopping());
      return;
    }
    if (find(m.child.id)) {
      reply.fail(failure(errc::already_registered, m.child.id));
      return;
    }
    auto spec = from_wire(m.child);
    if (spec.id.empty() || spec.behaviour.empty() || !valid_shutdown(spec.shutdown)) {
      log(log_level::warning, "dsup", this_node().name(), ": ", name_,
          ": start_dist_child refused: empty id or behaviour, or shutdown infinity (", spec.id,
          ")");
      reply.fail(failure(errc::invalid_argument,
                         "a child needs an id, a behaviour and a bounded shutdown: " + spec.id));
      return;
    }
    kids_.push_back(kid{std::move(spec)});
    auto& k = kids_.back();
    k.run_time = true;
    k.start_waiters.push_back(std::move(reply));
    // While adopting, the adoption starts it (or adopts a copy an earlier instance started).
    if (ready_) start_kid(k);
  }

  // `preferred`: a rebalance move's target, taken if it is still a candidate.
  void start_kid(kid& k, const std::string& preferred = {}) {
    placement_input in;
    in.supervisor = name_;
    in.child_id = k.spec.id;
    in.self_node = this_node().name();
    in.sequence = sequence_++;
    in.candidates = candidates();
    std::optional<std::string> target;
    if (!preferred.empty()) {
      for (const auto& c : in.candidates) {
        if (c.node == preferred) target = preferred;
      }
    }
    const auto& policy = k.spec.where ? *k.spec.where : spec_.where;
    if (!target) target = place(policy, in);
    if (!target) {
      log(log_level::warning, "dsup", this_node().name(), ": ", name_, ": no node can take child ",
          k.spec.id, " (", in.candidates.size(), " candidates); retrying");
      k.node.clear();
      if (!k.start_waiters.empty()) {
        // A start_dist_child: answered like a failed start (the child is not kept).
        k.state = dist_child_state::starting;
        k.child = pid{};
        (void)send(this_node(), self(),
                   sup_started{k.spec.id,
                               ++k.generation,
                               {},
                               k.epoch,
                               failure(errc::nodedown, "no node can take child " + k.spec.id)});
        return;
      }
      if (!k.move_to.empty()) {
        k.move_to.clear();
        move_finished(k, std::nullopt);
      }
      retry_later(k);
      return;
    }
    k.state = dist_child_state::starting;
    k.node = *target;
    k.child = pid{};
    auto epoch = ++k.epoch;
    auto generation = ++k.generation;
    dsup_host_start m{to_wire(k.spec), epoch};
    m.child.run_time = k.run_time;
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
    if (dead_ || !k || k->generation != s.generation || k->state != dist_child_state::starting) {
      // A start nobody waits for (the child was deleted, or a newer attempt runs).
      if (s.outcome) this_node().exit(*s.outcome, exit_reason::kill());
      return;
    }
    if (s.outcome) {
      k->child = *s.outcome;
      k->ref = monitor(k->child);
      k->state = dist_child_state::running;
      k->failures = 0;
      auto waiters = std::move(k->start_waiters);
      k->start_waiters.clear();
      for (auto& w : waiters) w(info_of(*k));
      if (!k->move_to.empty()) {
        dist_move mv{k->spec.id, k->move_from, k->node, k->epoch};
        k->move_to.clear();
        move_finished(*k, std::move(mv));
      }
      if (k->terminating) terminate_kid(*k);
      return;
    }
    const auto& f = s.outcome.fail();
    auto why = f.message();
    // The host (reason: the last epoch it saw, from an earlier instance of this supervisor) or
    // the registry saw a later epoch: continue above it.
    const bool stale = f.code == errc::stale_epoch;
    if (stale) {
      std::uint64_t last = 0;
      std::from_chars(f.reason.data(), f.reason.data() + f.reason.size(), last);
      k->epoch = std::max(k->epoch, last);
    }
    if (!k->start_waiters.empty()) {
      if (stale) {
        start_kid(*k);  // bookkeeping of epochs, not the caller's failure
        return;
      }
      // start_dist_child's first start failed: answered with its error, not kept (OTP).
      log(log_level::warning, "dsup", this_node().name(), ": ", name_, ": start_dist_child ", s.id,
          " failed (", why, "): not kept");
      auto waiters = std::move(k->start_waiters);
      auto id = k->spec.id;
      std::erase_if(kids_, [&](const kid& x) { return x.spec.id == id; });
      for (auto& w : waiters) w.fail(f);
      return;
    }
    ++start_failures_;
    log(log_level::warning, "dsup", this_node().name(), ": ", name_, ": start of ", s.id, " on ",
        s.node, " failed (", why, "); retrying");
    if (!k->move_to.empty()) {
      if (f.code == make_error_code(errc::already_registered) &&
          why.find(k->move_old.to_string()) != std::string::npos && k->failures < 3) {
        // Its global name is still held by the old copy: that copy ended (its down came), the
        // name's removal is on its way to the target or the arbiter. Retried on the target,
        // with backoff.
        retry_later(*k);
        return;
      }
      // A move whose start failed on its target: the restart path places it again.
      k->move_to.clear();
      move_finished(*k, std::nullopt);
    }
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
    if (dead_) return;
    auto* k = find_ref(d.ref);
    if (!k) return;
    if (d.reason.text() == exit_reason::noconnection().text() && !k->terminating) {
      // The connection is lost, the node not necessarily down: restarting now could run the
      // child twice (a flapping link). Wait for node_down (or the connection back).
      k->state = dist_child_state::unreachable;
      log(log_level::warning, "dsup", this_node().name(), ": ", name_, ": child ", k->spec.id,
          " on ", k->node, " unreachable");
      if (!k->move_to.empty()) {
        k->move_to.clear();
        move_finished(*k, std::nullopt);
      }
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
      if (!k.move_to.empty()) {
        k.move_to.clear();
        move_finished(k, std::nullopt);
      }
      return;
    }
    if (!k.move_to.empty()) {
      // Stopped for a rebalance (its down seen: never two copies): start it on the target.
      // Not a crash: no restart counted. move_to stays set until the start answers.
      log(log_level::info, "dsup", this_node().name(), ": ", name_, ": moving ", k.spec.id,
          ": ended on ", k.node, " (", reason.text(), "), starting on ", k.move_to);
      k.failures = 0;
      auto to = k.move_to;
      start_kid(k, to);
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
        if (!k.move_to.empty()) {  // a move retried on its target
          k.move_to.clear();
          move_finished(k, std::nullopt);
        }
      }
      return;
    }
    k.terminating = true;
    // Its host stops it per its shutdown; our monitor's down marks it stopped.
    dsup_host_stop m{k.spec.id, k.epoch};
    call(this_node(), global(dsup_host_name(name_, k.node)), std::move(m), stop_bound(k.spec),
         [](result<bool>) {});
  }

  // ---- rebalance
  struct planned_move {
    std::string id, from, to;
    pid child;
  };
  struct rebalance_state {
    std::uint64_t run = 0;
    reply_to<dist_rebalance_report> reply;
    std::deque<planned_move> queue;
    std::set<std::string> in_flight;
    dist_rebalance_report report;
  };

  void on_rebalance(reply_to<dist_rebalance_report> reply) {
    if (dead_) {
      reply.fail(stopping());
      return;
    }
    if (rebalance_ || !ready_) {
      auto why = rebalance_ ? "a rebalance of " + name_ + " is already running"
                            : "the supervisor " + name_ + " is still adopting its children";
      log(log_level::warning, "dsup", this_node().name(), ": ", name_,
          ": rebalance refused: ", why);
      reply.fail(failure(errc::running, why));
      return;
    }
    auto plan = plan_moves();
    log(log_level::info, "dsup", this_node().name(), ": ", name_, ": rebalance: ", plan.size(),
        " moves planned");
    if (plan.empty()) {
      reply(dist_rebalance_report{});
      return;
    }
    rebalance_.emplace();
    rebalance_->run = ++rebalance_runs_;
    rebalance_->reply = std::move(reply);
    for (auto& m : plan) rebalance_->queue.push_back(std::move(m));
    pump_moves();
  }

  // What moves where (see rebalance_dist_supervisor).
  std::vector<planned_move> plan_moves() {
    std::vector<planned_move> out;
    auto cands = candidates();
    auto candidate = [&](const std::string& id) -> const placement_candidate* {
      for (const auto& c : cands) {
        if (c.node == id) return &c;
      }
      return nullptr;
    };
    // round_robin / least_loaded children per candidate node; a child moved in is put in
    // front, so it is not picked to move again.
    std::map<std::string, std::deque<const kid*>> spread;
    for (const auto& c : cands) spread[c.node];
    std::map<std::string, std::size_t> tag_planned;  // children planned onto a node by tag
    for (const auto& k : kids_) {
      if (!k.child || k.state != dist_child_state::running || k.terminating || !k.move_to.empty() ||
          k.spec.restart == restart_type::temporary) {
        continue;
      }
      // A child whose node has no known host (or is unreachable) cannot be stopped through it.
      const auto* here = candidate(k.node);
      if (!here) continue;
      const auto& policy = k.spec.where ? *k.spec.where : spec_.where;
      switch (policy.how) {
        case placement::kind::round_robin:
        case placement::kind::least_loaded:
          spread[k.node].push_back(&k);
          break;
        case placement::kind::local_first:
          break;  // stays: following the supervisor around would churn at every takeover
        case placement::kind::node:
          if (k.node != policy.node_id && candidate(policy.node_id)) {
            out.push_back({k.spec.id, k.node, policy.node_id, k.child});
          }
          break;
        case placement::kind::tag: {
          auto fits = [&](const placement_candidate& c) {
            auto it = c.tags.find(policy.tag_key);
            return it != c.tags.end() && it->second == policy.tag_value;
          };
          if (fits(*here)) break;
          // To the fitting node with the fewest of this supervisor's children.
          const placement_candidate* best = nullptr;
          std::size_t best_n = 0;
          for (const auto& c : cands) {
            if (!fits(c)) continue;
            auto n = c.children + tag_planned[c.node];
            if (!best || n < best_n) {
              best = &c;
              best_n = n;
            }
          }
          if (best) {
            out.push_back({k.spec.id, k.node, best->node, k.child});
            ++tag_planned[best->node];
          }
          break;
        }
        case placement::kind::custom: {
          placement_input in;
          in.supervisor = name_;
          in.child_id = k.spec.id;
          in.self_node = this_node().name();
          in.candidates = cands;
          in.sequence = sequence_;
          in.current_node = k.node;
          auto t = place(policy, in);
          if (t && *t != k.node) out.push_back({k.spec.id, k.node, *t, k.child});
          break;
        }
      }
    }
    // Even spread: one from the node with the most to the node with the fewest (ties: lower
    // node id) until they differ by at most one. Moves the fewest children.
    while (spread.size() > 1) {
      auto most = spread.begin(), fewest = spread.begin();
      for (auto it = spread.begin(); it != spread.end(); ++it) {
        if (it->second.size() > most->second.size()) most = it;
        if (it->second.size() < fewest->second.size()) fewest = it;
      }
      if (most->second.size() <= fewest->second.size() + 1) break;
      const kid* k = most->second.back();
      most->second.pop_back();
      fewest->second.push_front(k);
      out.push_back({k->spec.id, k->node, fewest->first, k->child});
    }
    return out;
  }

  // Starts planned moves while fewer than rebalance_in_flight run; answers when none is left.
  void pump_moves() {
    if (!rebalance_) return;
    auto& r = *rebalance_;
    auto nodes = host_nodes();
    while (r.in_flight.size() < spec_.rebalance_in_flight && !r.queue.empty()) {
      auto m = std::move(r.queue.front());
      r.queue.pop_front();
      auto* k = find(m.id);
      // Changed since the plan (ended, restarted, terminated, target gone): left alone.
      bool still = k && k->child == m.child && k->state == dist_child_state::running &&
                   !k->terminating && k->move_to.empty() &&
                   std::binary_search(nodes.begin(), nodes.end(), m.to);
      if (!still) {
        r.report.not_moved.push_back(m.id);
        continue;
      }
      begin_move(*k, m.to);
    }
    if (!r.in_flight.empty() || !r.queue.empty()) return;
    log(log_level::info, "dsup", this_node().name(), ": ", name_,
        ": rebalance done: ", r.report.moved.size(), " moved, ", r.report.not_moved.size(),
        " not moved");
    auto done = std::move(r);
    rebalance_.reset();
    done.reply(std::move(done.report));
  }

  // A move: the old copy's host stops it (its shutdown); its down (child_ended) starts it on
  // the target with the next epoch, so two copies never run and its global name is free.
  void begin_move(kid& k, const std::string& to) {
    k.move_to = to;
    k.move_from = k.node;
    k.move_old = k.child;
    k.move_run = rebalance_->run;
    rebalance_->in_flight.insert(k.spec.id);
    log(log_level::info, "dsup", this_node().name(), ": ", name_, ": rebalance: moving ", k.spec.id,
        " from ", k.node, " to ", to);
    auto& n = this_node();
    auto me = self();
    auto id = k.spec.id;
    auto run = k.move_run;
    dsup_host_stop m{k.spec.id, k.epoch};
    call(n, global(dsup_host_name(name_, k.node)), std::move(m), stop_bound(k.spec),
         [&n, me, id, run](result<bool> r) {
           (void)send(n, me, sup_move_stopped{id, run, std::move(r)});
         });
  }

  void on_move_stopped(sup_move_stopped m) {
    if (dead_) return;
    auto* k = find(m.id);
    if (!k || k->move_to.empty() || k->move_run != m.run) return;
    // Confirmed (true), or no such copy there (false): its down comes, or came, and moves it.
    if (m.outcome || k->state != dist_child_state::running) return;
    // Not confirmed (its host gone or unreachable, or the child still in a handler after its
    // kill): it may still run. It stays until its down, which then starts it on the target.
    log(log_level::warning, "dsup", this_node().name(), ": ", name_, ": rebalance: stop of ", m.id,
        " on ", k->node, " not confirmed (", m.outcome.fail().message(), ")");
    move_finished(*k, std::nullopt);
  }

  // Counts a move of the running rebalance as ended (once).
  void move_finished(const kid& k, std::optional<dist_move> mv) {
    if (!rebalance_ || k.move_run != rebalance_->run || !rebalance_->in_flight.erase(k.spec.id)) {
      return;
    }
    if (mv) {
      log(log_level::info, "dsup", this_node().name(), ": ", name_, ": rebalance: moved ", mv->id,
          " from ", mv->from, " to ", mv->to, " (epoch ", mv->epoch, ")");
      rebalance_->report.moved.push_back(std::move(*mv));
    } else {
      rebalance_->report.not_moved.push_back(k.spec.id);
    }
    pump_moves();
  }

  // ---- membership
  void on_node_event(const cluster::node_event& e) {
    if (dead_) return;
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

  // ---- stop
  // Phase 1: every node's host stops this supervisor's children there (each per its
  // shutdown) and refuses starts; the supervisor waits for them all, bounded by the longest
  // shutdown plus kill_wait plus slack. Phase 2 (on_hosts_stopped): the callers hear it, every
  // node's host and manager end, then this process.
  void stop_everywhere(const exit_reason& reason) {
    if (dead_) return;
    dead_ = true;
    stop_reason_ = reason;
    for (auto& k : kids_) {
      auto waiters = std::move(k.start_waiters);
      k.start_waiters.clear();
      for (auto& w : waiters) w.fail(stopping());
    }
    if (rebalance_) {
      auto done = std::move(*rebalance_);
      rebalance_.reset();
      for (const auto& id : done.in_flight) done.report.not_moved.push_back(id);
      for (const auto& m : done.queue) done.report.not_moved.push_back(m.id);
      done.reply(std::move(done.report));
    }
    auto bound = kill_wait + 2000ms;
    for (const auto& k : kids_) bound = std::max(bound, stop_bound(k.spec));
    std::vector<std::string> hosts;
    if (auto* c = cluster::find(this_node())) {
      for (const auto& m : c->members()) {
        if (m.status != cluster::member_status::up) continue;
        if (!whereis(this_node(), global(dsup_host_name(name_, m.id)))) continue;
        hosts.push_back(m.id);
      }
    }
    log(log_level::info, "dsup", this_node().name(), ": ", name_, ": stopping (", reason.text(),
        "): ", hosts.size(), " hosts stop its children");
    struct gather {
      std::mutex mu;
      std::size_t remaining = 0;
      sup_hosts_stopped out;
    };
    auto g = std::make_shared<gather>();
    g->remaining = hosts.size();
    auto& n = this_node();
    auto me = self();
    if (hosts.empty()) {
      (void)send(n, me, sup_hosts_stopped{});
      return;
    }
    for (const auto& id : hosts) {
      call(n, global(dsup_host_name(name_, id)), dsup_host_stop_all{}, bound,
           [&n, me, g, id](result<bool> r) {
             std::lock_guard lock(g->mu);
             if (!r || !*r) g->out.unconfirmed.push_back(id);
             if (--g->remaining == 0) (void)send(n, me, std::move(g->out));
           });
    }
  }

  void on_hosts_stopped(sup_hosts_stopped m) {
    auto waiters = std::move(stop_waiters_);
    stop_waiters_.clear();
    if (m.unconfirmed.empty()) {
      for (auto& w : waiters) w(true);
    } else {
      std::string list;
      for (const auto& id : m.unconfirmed) list += (list.empty() ? "" : ", ") + id;
      log(log_level::warning, "dsup", this_node().name(), ": ", name_,
          ": hosts did not confirm their children stopped: ", list);
      for (auto& w : waiters) {
        w.fail(failure(errc::timeout, "hosts did not confirm their children stopped: " + list));
      }
    }
    // Every node stops managing and hosting it (ours ends this process too).
    if (auto* c = cluster::find(this_node())) {
      for (const auto& mb : c->members()) {
        if (mb.status != cluster::member_status::up) continue;
        call(this_node(), global(dsup_host_name(name_, mb.id)), host_shutdown{},
             [](result<bool>) {});
      }
    }
    stop(stop_reason_);
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
  bool dead_ = false;  // stopping for good
  exit_reason stop_reason_{};
  std::vector<reply_to<bool>> stop_waiters_;
  std::optional<rebalance_state> rebalance_;
  std::uint64_t rebalance_runs_ = 0;
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
    if (!valid_shutdown(c.shutdown)) {
      return failure(errc::invalid_argument, "a child's shutdown must be bounded: " + c.id);
    }
  }
  if (spec.rebalance_in_flight == 0) {
    return failure(errc::invalid_argument, "rebalance_in_flight must be at least 1");
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
