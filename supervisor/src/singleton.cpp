#include "otpp/supervisor/singleton.hpp"

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "otpp/cluster/cluster.hpp"
#include "otpp/gen_server.hpp"
#include "otpp/log.hpp"
#include "otpp/registry/behaviours.hpp"
#include "otpp/registry/global.hpp"

namespace otpp {
namespace {

using namespace std::chrono_literals;

// What a manager shares with singleton_status and stop_singleton (read from any thread).
struct singleton_shared {
  std::string name;
  std::atomic<bool> running_here{false};
  std::atomic<bool> eligible{false};
  std::atomic<std::uint64_t> takeovers{0};
  std::atomic<std::uint64_t> start_attempts{0};
  std::atomic<std::uint64_t> start_failures{0};
  std::mutex mu;
  pid manager;   // guarded by mu (set once the manager exists)
  pid instance;  // guarded by mu
  pid get_manager() {
    std::lock_guard lock(mu);
    return manager;
  }
};

// The node's singleton managers, by global name.
class singleton_service final : public node_service {
 public:
  explicit singleton_service(node& n) : node_(n) {}

  // Adds `s` unless `name` is managed here already (then its manager's pid).
  result<void> add(const std::shared_ptr<singleton_shared>& s) {
    std::lock_guard lock(mu_);
    auto [it, inserted] = managers_.try_emplace(s->name, s);
    if (!inserted) {
      return failure(errc::already_registered,
                     "already_started: " + it->second->get_manager().to_string());
    }
    if (!hooked_) {
      hooked_ = true;
      // Runs before the cluster's own stop hook (added earlier, so run later): the local
      // instances end while the peers still count this node, so no peer takes the name over
      // while an instance of this node still runs.
      node_.add_stop_hook([this] { stop_local_instances(); });
    }
    return {};
  }
  // Removes `name` if it is still `s`'s entry (a manager that ends after a new start took
  // the name leaves the new entry alone).
  void remove(const std::string& name, const singleton_shared* s) {
    std::lock_guard lock(mu_);
    auto it = managers_.find(name);
    if (it != managers_.end() && it->second.get() == s) managers_.erase(it);
  }
  std::shared_ptr<singleton_shared> find(std::string_view name) {
    std::lock_guard lock(mu_);
    auto it = managers_.find(std::string(name));
    return it == managers_.end() ? nullptr : it->second;
  }

 private:
  void stop_local_instances() {
    std::vector<pid> managers, instances;
    {
      std::lock_guard lock(mu_);
      for (auto& [name, s] : managers_) {
        std::lock_guard l(s->mu);
        if (s->manager) managers.push_back(s->manager);
        if (s->instance) instances.push_back(s->instance);
      }
    }
    for (const auto& m : managers) node_.stop_process(m, exit_reason::shutdown());
    for (const auto& p : instances) node_.stop_process(p, exit_reason::shutdown());
    // Wait (bounded) for the instances to end, unless stop() runs on a thread of this node
    // (a handler: waiting would hold a worker the instance may need) or a manual node.
    if (current_process() || node_.manual()) return;
    auto until = std::chrono::steady_clock::now() + 2s;
    for (const auto& p : instances) {
      while (node_.alive(p) && std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(1ms);
      }
    }
  }

  node& node_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<singleton_shared>, std::less<>> managers_;
  bool hooked_ = false;
};

// Local-only messages of the manager (no msgpack mapping: nothing from the wire can forge
// them).
struct singleton_check {
  static constexpr std::string_view tag = "otpp.singleton.check";
};
struct singleton_retry {
  static constexpr std::string_view tag = "otpp.singleton.retry";
  std::uint64_t generation = 0;
};
struct singleton_started {
  static constexpr std::string_view tag = "otpp.singleton.started";
  std::uint64_t generation = 0;
  result<remote_spawned> outcome;
};

// One node's manager of one singleton. States: idle (nothing known; next check decides),
// starting (a spawn in flight), running (the instance is ours), watching (someone else
// holds the name: monitored), waiting (a retry timer armed). Traps exits: it is linked to
// its instance so that the instance never outlives it (a manager that ends takes its
// instance along, and the name frees for the other nodes).
class singleton_manager final : public gen_server<singleton_manager> {
 public:
  singleton_manager(singleton_spec spec, std::shared_ptr<singleton_shared> shared)
      : spec_(std::move(spec)), shared_(std::move(shared)), rng_(std::random_device{}()) {}

  static void define_handlers(handlers<singleton_manager>& h) {
    h.info<singleton_check>([](singleton_manager& self, singleton_check) {
      self.check();
      self.this_node().send_after(self.spec_.check_interval, self.self(), singleton_check{});
    });
    h.info<singleton_retry>([](singleton_manager& self, singleton_retry r) {
      if (r.generation != self.generation_ || self.phase_ != phase::waiting) return;
      self.phase_ = phase::idle;
      self.check();
    });
    h.info<cluster::node_event>([](singleton_manager& self, cluster::node_event) { self.check(); });
    h.info<singleton_started>(
        [](singleton_manager& self, singleton_started s) { self.on_started(std::move(s)); });
    h.info<down>([](singleton_manager& self, down d) { self.on_down(d); });
    // The instance's link: its down (monitor) says the same; other EXITs (a linked spawner)
    // are not ours to act on.
    h.info<exit_message>([](singleton_manager&, exit_message) {});
  }

  result<void> init() {
    auto* c = cluster::find(this_node());
    if (!c) return failure(errc::nodedown, "the node has not joined a cluster");
    {
      std::lock_guard lock(shared_->mu);
      shared_->manager = self();
    }
    c->monitor_nodes(self(), true);
    this_node().send_after(0ms, self(), singleton_check{});
    return {};
  }

  void terminate(const exit_reason& reason) {
    if (auto* c = cluster::find(this_node())) c->monitor_nodes(self(), false);
    if (instance_) {
      log(log_level::info, "singleton", this_node().name(), ": ", spec_.name, ": manager ends (",
          reason.text(), "), stopping the local instance");
      this_node().stop_process(instance_, exit_reason::shutdown());
    }
    set_instance(pid{});
    this_node().use_service<singleton_service>().remove(spec_.name, shared_.get());
  }

 private:
  enum class phase { idle, starting, running, watching, waiting };

  // Whether this node may keep an instance: stricter than the cluster's in_minority(), which
  // turns true only when the downing rule decides (after stable_after), the same moment the
  // majority downs this node and may take the name over. Here a node stands by as soon as
  // fewer than half of the members it counts are reachable from it (at an exact half, unless
  // it sees the lowest member id: the keep-majority tie-break), so a minority instance ends
  // about stable_after before the majority can claim the name. `reachable` answers how many
  // members (self included) this node reaches; `to_meet` how many other members its global
  // registry must have met before it may claim the name (see may_start).
  bool in_majority(std::size_t& reachable, std::size_t& to_meet) {
    reachable = 0;
    to_meet = 0;
    auto* c = cluster::find(this_node());
    if (!c || c->downed() || c->in_minority()) return false;
    std::size_t total = 0;
    bool self_up = false, lowest_reachable = false;
    std::string lowest;
    for (const auto& m : c->members()) {
      if (m.status != cluster::member_status::up) continue;  // leaving: about to go
      // A member heard of only by gossip may hold the name: a joining node that claimed before
      // meeting it could be granted the name by an arbiter that does not know that holder yet.
      if (!m.self && (m.reachable || (!m.connected && m.up_since == time_point{}))) ++to_meet;
      // As the downing rule counts: members this node saw up (a member only heard of by
      // gossip and never connected is not counted yet).
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
    // A node that leaves (stop) hands over rather than keeping anything.
    if (!self_up) return false;
    return 2 * reachable > total || (2 * reachable == total && lowest_reachable);
  }

  // Whether this node may start an instance: in the majority, and two conditions that only
  // gate a start (a running instance is not stopped for them, so a member joining causes no
  // churn while its registry says hello): enough members, and a global registry that has met
  // every reachable member and every member known only by gossip so far (a claim made before
  // could be granted by an arbiter that does not know the current holder). The registry's
  // peers are a subset of the connected reachable members, so counting them is enough.
  bool may_start(bool majority, std::size_t reachable, std::size_t to_meet) {
    return majority && reachable >= spec_.min_members && global_stats(this_node()).peers >= to_meet;
  }
  void check() {
    std::size_t reachable = 0, to_meet = 0;
    bool majority = in_majority(reachable, to_meet);
    bool ok = may_start(majority, reachable, to_meet);
    shared_->eligible.store(ok);
    if (!majority) {
      if (instance_ && !stopping_) {
        log(log_level::warning, "singleton", this_node().name(), ": ", spec_.name,
            ": this node lost sight of the majority, stopping the local instance");
        stopping_ = true;
        this_node().stop_process(instance_, exit_reason("singleton_standby"));
      }
      return;
    }
    if (!ok) return;
    if (phase_ != phase::idle) return;
    // Someone holds the name: watch it (a dead or unreachable holder answers down at once).
    if (auto h = whereis(this_node(), global(spec_.name))) {
      watch(*h);
      return;
    }
    start();
  }

  void watch(const pid& holder) {
    phase_ = phase::watching;
    holder_ = holder;
    holder_ref_ = monitor(holder);
    since_ = this_node().now();
  }

  void start() {
    phase_ = phase::starting;
    shared_->start_attempts.fetch_add(1);
    remote_spawn_options o;
    o.link = true;
    o.monitor = true;
    o.global_name = spec_.name;
    o.timeout = spec_.start_timeout;
    auto generation = ++generation_;
    auto me = self();
    auto& n = this_node();
    auto done = [&n, me, generation](result<remote_spawned> r) {
      (void)send(n, me, singleton_started{generation, std::move(r)});
    };
    auto args = spec_.args;
    if (!args) {
      auto nil = std::make_shared<msgpack::sbuffer>();
      msgpack::packer<msgpack::sbuffer>(*nil).pack_nil();
      args = std::move(nil);
    }
    // The spawn API takes a mutable buffer it only reads; copy so the spec's stays shared.
    auto packed = std::make_shared<msgpack::sbuffer>();
    packed->write(args->data(), args->size());
    detail::spawn_packed(n, n.name(), spec_.behaviour, std::move(packed), std::move(o),
                         std::move(done));
  }

  void on_started(singleton_started s) {
    if (s.generation != generation_ || phase_ != phase::starting) {
      // Not the spawn we wait for (cannot happen with one spawn at a time; be safe): an
      // instance nobody tracks must not hold the name.
      if (s.outcome) this_node().stop_process(s.outcome->child, exit_reason::shutdown());
      return;
    }
    if (s.outcome) {
      phase_ = phase::running;
      instance_ref_ = s.outcome->monitor;
      stopping_ = false;
      since_ = this_node().now();
      set_instance(s.outcome->child);
      shared_->takeovers.fetch_add(1);
      log(log_level::info, "singleton", this_node().name(), ": ", spec_.name, ": started here");
      // Membership may have changed while the spawn ran (check stops it if need be).
      check();
      return;
    }
    const auto& f = s.outcome.fail();
    if (f.code == make_error_code(errc::already_registered)) {
      // Lost the race: watch the winner if this replica knows it, else retry shortly.
      if (auto h = whereis(this_node(), global(spec_.name))) {
        watch(*h);
      } else {
        retry_later();
      }
      return;
    }
    shared_->start_failures.fetch_add(1);
    log(log_level::warning, "singleton", this_node().name(), ": ", spec_.name, ": start failed (",
        f.message(), "), retrying");
    retry_later();
  }

  void on_down(const down& d) {
    if (phase_ == phase::running && d.ref == instance_ref_) {
      log(log_level::info, "singleton", this_node().name(), ": ", spec_.name,
          ": local instance ended (", d.reason.text(), ")");
      set_instance(pid{});
      stopping_ = false;
    } else if (phase_ == phase::watching && d.ref == holder_ref_) {
      holder_ = pid{};
    } else {
      return;
    }
    // One that lived long enough says the previous starts went well: take over quickly.
    if (this_node().now() - since_ >= spec_.backoff_max) failures_ = 0;
    retry_later();
  }

  void retry_later() {
    auto base = spec_.backoff_initial;
    for (std::uint64_t i = 0; i < failures_ && base < spec_.backoff_max; ++i) base *= 2;
    if (base > spec_.backoff_max) base = spec_.backoff_max;
    ++failures_;
    auto half = base / 2;
    std::uniform_int_distribution<long long> jitter(0, std::max<long long>(half.count(), 0));
    auto delay = (base - half) + std::chrono::milliseconds(jitter(rng_));
    phase_ = phase::waiting;
    this_node().send_after(delay, self(), singleton_retry{++generation_});
  }

  void set_instance(const pid& p) {
    instance_ = p;
    std::lock_guard lock(shared_->mu);
    shared_->instance = p;
    shared_->running_here.store(static_cast<bool>(p));
  }

  singleton_spec spec_;
  std::shared_ptr<singleton_shared> shared_;
  std::mt19937_64 rng_;
  phase phase_ = phase::idle;
  std::uint64_t generation_ = 0;
  std::uint64_t failures_ = 0;  // consecutive short-lived or failed starts
  pid instance_, holder_;
  monitor_ref instance_ref_{}, holder_ref_{};
  bool stopping_ = false;
  time_point since_{};
};

}  // namespace

result<pid> start_singleton(node& n, singleton_spec spec) {
  if (spec.name.empty()) return failure(errc::invalid_argument, "a singleton needs a global name");
  if (spec.behaviour.empty())
    return failure(errc::invalid_argument, "a singleton needs a behaviour");
  if (spec.backoff_initial <= 0ms || spec.backoff_max < spec.backoff_initial ||
      spec.check_interval <= 0ms || spec.start_timeout <= 0ms) {
    return failure(errc::invalid_argument, "singleton intervals must be positive");
  }
  if (!n.running()) return failure(errc::not_started, n.name());
  if (!cluster::find(n)) return failure(errc::nodedown, "the node has not joined a cluster");
  auto known = registered_behaviours(n);
  if (std::find(known.begin(), known.end(), spec.behaviour) == known.end()) {
    return failure(errc::unknown_behaviour, spec.behaviour);
  }
  auto& service = n.use_service<singleton_service>();
  auto shared = std::make_shared<singleton_shared>();
  shared->name = spec.name;
  // Reserve the name before the manager exists, so two racing starts cannot both spawn one.
  if (auto r = service.add(shared); !r) return r.fail();
  spawn_options o;
  o.trap_exit = true;
  auto name = spec.name;
  auto manager = n.spawn_opt<singleton_manager>(o, std::move(spec), shared);
  if (!manager) {
    service.remove(name, shared.get());
    return manager.fail();
  }
  return *manager;
}

result<void> stop_singleton(node& n, std::string_view name) {
  auto s = n.use_service<singleton_service>().find(name);
  if (!s) return failure(errc::not_found, std::string(name));
  // Forget it now: a start_singleton right after this one starts a new manager.
  n.use_service<singleton_service>().remove(s->name, s.get());
  if (auto m = s->get_manager()) n.stop_process(m, exit_reason::shutdown());
  return {};
}

result<singleton_info> singleton_status(node& n, std::string_view name) {
  auto s = n.use_service<singleton_service>().find(name);
  if (!s) return failure(errc::not_found, std::string(name));
  singleton_info info;
  info.running_here = s->running_here.load();
  {
    std::lock_guard lock(s->mu);
    info.manager = s->manager;
    info.instance = s->instance;
  }
  if (auto h = whereis(n, global(s->name))) info.holder = *h;
  info.eligible = s->eligible.load();
  info.takeovers = s->takeovers.load();
  info.start_attempts = s->start_attempts.load();
  info.start_failures = s->start_failures.load();
  return info;
}

}  // namespace otpp
