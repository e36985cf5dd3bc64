// Behaviour registry and remote spawn: a node_service per node. The caller's node keeps the
// pending spawns (one timer each) and adopts the link / monitor when the success reply arrives
// on the connection's I/O thread, before any later frame of that peer (the child's exit signal
// or down) is handled. The target's node spawns with async_init: the link and monitor are set
// up in before_init and the reply goes out from after_init, on the child's own first turn.
#include "otpp/registry/behaviours.hpp"

#include <algorithm>
#include <map>
#include <mutex>
#include <unordered_map>

#include "otpp/cluster/cluster.hpp"
#include "otpp/log.hpp"
#include "otpp/registry.hpp"
#include "otpp/router.hpp"
#include "spawn_wire.hpp"

namespace otpp {

namespace {

struct behaviour_entry {
  behaviour_options options;
  detail::behaviour_start start;
};

struct pending_spawn {
  std::uint64_t id = 0;
  bool local = false;
  node_atom peer;  // remote spawns: the target's connection (incarnation `creation`)
  std::uint32_t creation = 0;
  std::string target;
  std::string behaviour;
  pid caller;
  bool link = false;
  monitor_ref ref;
  std::function<void(result<remote_spawned>)> done;
  timer_ref timer;  // the node's timer service: no OS timer per spawn
};
using pending_ptr = std::shared_ptr<pending_spawn>;

bool allowed(const behaviour_entry& b, std::string_view from) {
  const auto& list = b.options.allowed_nodes;
  return list.empty() || std::find(list.begin(), list.end(), from) != list.end();
}

class spawn_core : public std::enable_shared_from_this<spawn_core> {
 public:
  explicit spawn_core(node& n) : node_(n) {}

  // ---- behaviour table
  result<void> add(std::string name, behaviour_options o, detail::behaviour_start start) {
    if (name.empty()) return failure(errc::invalid_argument, "empty behaviour name");
    {
      std::lock_guard lock(mu_);
      if (behaviours_.count(name)) {
        return failure(errc::already_registered, "behaviour '" + name + "'");
      }
      behaviours_.emplace(std::move(name), std::make_shared<const behaviour_entry>(
                                               behaviour_entry{std::move(o), std::move(start)}));
    }
    (void)open_channel();
    return {};
  }
  result<void> remove(std::string_view name) {
    std::lock_guard lock(mu_);
    auto it = behaviours_.find(name);
    if (it == behaviours_.end()) return failure(errc::not_found, std::string(name));
    behaviours_.erase(it);
    return {};
  }
  std::vector<std::string> names() {
    std::lock_guard lock(mu_);
    std::vector<std::string> out;
    for (const auto& [name, b] : behaviours_) out.push_back(name);
    return out;
  }
  std::shared_ptr<const behaviour_entry> find(std::string_view name) {
    std::lock_guard lock(mu_);
    auto it = behaviours_.find(name);
    return it == behaviours_.end() ? nullptr : it->second;
  }

  // Opens the spawn channel on the node's cluster (once per cluster service).
  cluster::service* open_channel() {
    auto* c = cluster::find(node_);
    if (!c) return nullptr;
    std::lock_guard lock(mu_);
    if (opened_ == c) return c;
    opened_ = c;
    std::weak_ptr<spawn_core> weak = shared_from_this();
    c->open_channel(cluster::channels::spawn,
                    cluster::channel_handlers{
                        .on_frame =
                            [weak](const cluster::peer& from, std::span<const std::uint8_t> b) {
                              if (auto self = weak.lock()) self->on_frame(from, b);
                            },
                        .on_peer_up = {},
                        .on_peer_down =
                            [weak](const cluster::peer& p) {
                              if (auto self = weak.lock()) self->on_peer_down(p);
                            },
                    });
    return c;
  }

  // ---- caller's side
  void start(std::string_view target, std::string behaviour, std::shared_ptr<msgpack::sbuffer> args,
             remote_spawn_options o, pid caller, std::function<void(result<remote_spawned>)> done) {
    auto fail = [&](failure f) {
      log(log_level::warning, "registry", node_.name(), ": spawn of '", behaviour, "' on ", target,
          ": ", f.message());
      done(std::move(f));
    };
    if ((o.link || o.monitor) && !caller) {
      return fail(failure(errc::invalid_argument, o.link ? "link needs a calling process"
                                                         : "monitor needs a calling "
                                                           "process"));
    }
    if (o.global_epoch != 0 && o.global_name.empty()) {
      return fail(failure(errc::invalid_argument, "a global_epoch needs a global_name"));
    }
    if (!node_.running()) return fail(failure(errc::node_stopped, node_.name()));
    auto p = std::make_shared<pending_spawn>();
    p->local = target == node_.name();
    p->target = std::string(target);
    p->behaviour = behaviour;
    p->caller = caller;
    p->link = o.link;
    if (o.monitor) p->ref = new_monitor_ref(node_);
    cluster::service* c = nullptr;
    if (!p->local) {
      c = open_channel();
      if (!c) return fail(failure(errc::nodedown, "this node has not joined a cluster"));
      auto atom = node_atom::find(target);
      bool ready = false;
      if (atom != node_atom{}) {
        for (const auto& peer : c->ready_peers()) {
          if (peer.atom == atom) {
            p->peer = atom;
            p->creation = peer.creation;
            ready = true;
          }
        }
      }
      if (!ready) return fail(failure(errc::nodedown, std::string(target) + ": no connection"));
    }
    // Registered (with its timer) before the request leaves: the reply, a peer down or the
    // node's stop may come at once on another thread.
    bool stopped = false;
    {
      std::lock_guard lock(mu_);
      stopped = stopped_;
      if (!stopped) {
        p->done = std::move(done);
        p->id = next_id_++;
        std::weak_ptr<spawn_core> weak = shared_from_this();
        p->timer = node_.run_after(o.timeout, [weak, id = p->id] {
          if (auto self = weak.lock()) self->expire(id);
        });
        pending_.emplace(p->id, p);
      }
    }
    if (stopped) return fail(failure(errc::node_stopped, node_.name()));
    if (p->local) return start_local(p, *args, o.local_name, o.global_name, o.global_epoch);
    spawn_wire::request req{.id = p->id,
                            .caller_serial = caller ? caller.serial() : 0,
                            .behaviour = behaviour,
                            .args = {},
                            .link = o.link,
                            .monitor_ref = p->ref.id,
                            .local_name = o.local_name,
                            .global_name = o.global_name,
                            .global_epoch = o.global_epoch};
    auto frame = spawn_wire::encode(req, {args->data(), args->size()});
    auto sent =
        c->send_channel(p->peer, p->creation, cluster::channels::spawn,
                        {reinterpret_cast<const std::uint8_t*>(frame.data()), frame.size()});
    if (!sent) finish(p->id, sent.fail());
  }

  // A spawn on this node itself: the same lookup and hooks, with local signals for the link
  // and the monitor.
  void start_local(const pending_ptr& p, const msgpack::sbuffer& args,
                   const std::string& local_name, const std::string& global_name,
                   std::uint64_t global_epoch) {
    auto b = find(p->behaviour);
    if (!b) return finish(p->id, failure(errc::unknown_behaviour, "'" + p->behaviour + "'"));
    if (!allowed(*b, node_.name())) {
      return finish(p->id, failure(errc::not_authorised,
                                   node_.name() + " may not spawn '" + p->behaviour + "'"));
    }
    msgpack::object_handle decoded;
    try {
      decoded = msgpack::unpack(args.data(), args.size());
    } catch (const std::exception& e) {
      return finish(p->id, failure(errc::bad_message, std::string("arguments: ") + e.what()));
    }
    spawn_options so = b->options.spawn;
    so.link = false;
    so.async_init = true;
    if (so.label.empty()) so.label = p->behaviour;
    so.before_init = [this, p, local_name](const pid& child) -> result<void> {
      if (!local_name.empty()) {
        auto named = register_name(node_, local_name, child);
        if (!named) return named;
      }
      if (p->ref.id)
        deliver_signal(node_, detail::envelope_kind::monitor, p->caller, child, {}, p->ref);
      if (p->link) deliver_signal(node_, detail::envelope_kind::link, p->caller, child);
      return {};
    };
    gate_on_global_name(so, global_name, global_epoch);
    std::weak_ptr<spawn_core> weak = shared_from_this();
    so.after_init = [weak, id = p->id](const pid& child, const result<void>& r) {
      if (auto self = weak.lock()) self->on_outcome(id, child, r);
    };
    auto started = b->start(node_, decoded.get(), so);
    if (!started) finish(p->id, started.fail());
  }

  // Local spawns: init's outcome, on the child's thread.
  void on_outcome(std::uint64_t id, const pid& child, const result<void>& r) {
    auto p = take(id);
    if (!p) {
      if (r) orphan(child, "its spawn already timed out or the node is stopping");
      return;
    }
    if (!r) return complete(p, r.fail());
    if (p->link && !deliver_signal(node_, detail::envelope_kind::link, child, p->caller)) {
      // The caller died meanwhile: the link it asked for carries its exit to the child.
      deliver_signal(node_, detail::envelope_kind::exit_signal, p->caller, child,
                     exit_reason::noproc(), {}, true);
    }
    if (p->ref.id && !adopt_monitor(node_, p->caller, p->ref, child)) {
      deliver_signal(node_, detail::envelope_kind::demonitor, p->caller, child, {}, p->ref);
    }
    complete(p, remote_spawned{child, p->ref});
  }

  // ---- frames (the connection's I/O thread: short, never blocking)
  void on_frame(const cluster::peer& from, std::span<const std::uint8_t> bytes) {
    spawn_wire::decode_error error;
    auto d = spawn_wire::decode(bytes, error);
    if (!d) {
      log(log_level::error, "registry", node_.name(), ": bad spawn frame from ", from.id(), ": ",
          error.why.message());
      if (error.id_known) {
        send_reply(from, spawn_wire::reply{.id = error.id,
                                           .code = error.code,
                                           .child_serial = 0,
                                           .reason = error.why.message()});
      }
      return;
    }
    if (d->kind == spawn_wire::op::reply) return on_reply(from, d->rep);
    // Served here, as a message is delivered: decoding the arguments and constructing the
    // server are short, and init (the part that may be long) runs on the child's first turn,
    // which the frame's inbound scope makes run next on this thread (no wake-up of another).
    serve(from, d->req);
  }

  void on_reply(const cluster::peer& from, const spawn_wire::reply& r) {
    const pid child(from.atom, from.creation, r.child_serial);
    pending_ptr p;
    {
      std::lock_guard lock(mu_);
      auto it = pending_.find(r.id);
      if (it != pending_.end() && !it->second->local && it->second->peer == from.atom &&
          it->second->creation == from.creation) {
        p = std::move(it->second);
        pending_.erase(it);
      }
    }
    if (!p) {
      if (r.code == spawn_wire::status::ok && r.child_serial != 0) {
        orphan(child, "its spawn timed out (or was never made) here");
      } else {
        log(log_level::warning, "registry", node_.name(), ": spawn reply ", r.id, " from ",
            from.id(), " for no pending spawn (dropped): ", r.reason);
      }
      return;
    }
    if (r.code != spawn_wire::status::ok) {
      return complete(p, spawn_wire::to_failure(r.code, r.reason));
    }
    // Adopted here, before the next frame of this peer (the child's exit or down) is handled.
    if (auto* c = cluster::find(node_)) {
      if (p->link && !c->accept_link(child, p->caller)) {
        // The caller died meanwhile: its link carries the exit to the child.
        node_.exit(child, exit_reason::noproc());
      }
      if (p->ref.id) c->adopt_monitor(p->caller, p->ref, child);
    }
    complete(p, remote_spawned{child, p->ref});
  }

  void on_peer_down(const cluster::peer& peer) {
    std::vector<pending_ptr> lost;
    {
      std::lock_guard lock(mu_);
      for (auto it = pending_.begin(); it != pending_.end();) {
        const auto& p = it->second;
        if (!p->local && p->peer == peer.atom && p->creation == peer.creation) {
          lost.push_back(std::move(it->second));
          it = pending_.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (auto& p : lost) {
      complete(p, failure(errc::nodedown, std::string(peer.id()) + ": connection lost"));
    }
  }

  // ---- target's side (a node thread)
  void serve(const cluster::peer& from, const spawn_wire::request& req) {
    auto refuse = [&](failure f) {
      log(log_level::warning, "registry", node_.name(), ": spawn of '", req.behaviour, "' for ",
          from.id(), " refused: ", f.message());
      send_reply(from, spawn_wire::reply{.id = req.id,
                                         .code = spawn_wire::to_status(f.code),
                                         .child_serial = 0,
                                         .reason = f.reason.empty() ? f.message() : f.reason});
    };
    if (!node_.running()) return refuse(failure(errc::node_stopped, node_.name()));
    auto b = find(req.behaviour);
    if (!b) return refuse(failure(errc::unknown_behaviour, "'" + req.behaviour + "'"));
    if (!allowed(*b, from.id())) {
      return refuse(failure(errc::not_authorised,
                            std::string(from.id()) + " may not spawn '" + req.behaviour + "'"));
    }
    if ((req.link || req.monitor_ref) && !req.caller_serial) {
      return refuse(failure(errc::invalid_argument, "link or monitor without a caller"));
    }
    auto* c = cluster::find(node_);
    if (!c) return;  // no cluster: no frame could have come
    const pid caller(from.atom, from.creation, req.caller_serial);
    spawn_options so = b->options.spawn;
    so.link = false;
    so.async_init = true;
    if (so.label.empty()) so.label = req.behaviour;
    so.before_init = [this, c, caller, req_link = req.link, ref = monitor_ref{req.monitor_ref},
                      name = req.local_name](const pid& child) -> result<void> {
      if (!name.empty()) {
        auto named = register_name(node_, name, child);
        if (!named) return named;
      }
      if (ref.id && !c->accept_monitor(caller, ref, child)) {
        return failure(errc::nodedown, "the caller's node is gone");
      }
      if (req_link && !c->accept_link(caller, child)) {
        return failure(errc::nodedown, "the caller's node is gone");
      }
      return {};
    };
    gate_on_global_name(so, req.global_name, req.global_epoch);
    std::weak_ptr<spawn_core> weak = shared_from_this();
    so.after_init = [weak, from, id = req.id](const pid& child, const result<void>& r) {
      auto self = weak.lock();
      if (!self) return;
      if (!r) {
        log(log_level::info, "registry", self->node_.name(), ": spawned ", child.to_string(),
            " for ", from.id(), ": init failed: ", r.reason());
      }
      auto sent = self->send_reply(
          from,
          spawn_wire::reply{.id = id,
                            .code = r ? spawn_wire::status::ok : spawn_wire::to_status(r.error()),
                            .child_serial = r ? child.serial() : 0,
                            .reason = r ? std::string{} : r.reason()});
      if (!sent && r) self->orphan(child, "its caller's node cannot be told of it");
    };
    auto started = b->start(node_, req.args, so);
    if (!started) refuse(started.fail());
  }

  // A global name is claimed before init runs (Erlang's gen_server:start({global, Name})): the
  // child waits, taking no message, until the registry answers; a refusal (the name is taken,
  // its arbiter did not answer, a stale epoch) ends it without init, and that is the spawn's
  // answer. An epoch without a name (only a forged frame has one) fences nothing.
  void gate_on_global_name(spawn_options& so, const std::string& name, std::uint64_t epoch) {
    if (name.empty()) return;
    std::weak_ptr<spawn_core> weak = shared_from_this();
    so.init_gate = [weak, name, epoch](const pid& child,
                                       std::function<void(result<void>)> release) {
      auto self = weak.lock();
      if (!self) return release(failure(errc::node_stopped, "the node is stopping"));
      detail::global_register(
          self->node_, name, child,
          global_register_options{.timeout = default_call_timeout, .epoch = epoch},
          [release = std::move(release)](result<void> r) { release(r); });
    };
  }

  // ---- stop
  void fail_all(const failure& why) {
    std::vector<pending_ptr> all;
    {
      std::lock_guard lock(mu_);
      stopped_ = true;
      for (auto& [id, p] : pending_) all.push_back(std::move(p));
      pending_.clear();
    }
    for (auto& p : all) complete(p, why);
  }

 private:
  pending_ptr take(std::uint64_t id) {
    std::lock_guard lock(mu_);
    auto it = pending_.find(id);
    if (it == pending_.end()) return nullptr;
    auto p = std::move(it->second);
    pending_.erase(it);
    return p;
  }
  void finish(std::uint64_t id, result<remote_spawned> r) {
    if (auto p = take(id)) complete(p, std::move(r));
  }
  void expire(std::uint64_t id) {
    auto p = take(id);
    if (!p) return;
    complete(p, failure(errc::timeout, "no answer from " + p->target));
  }
  // Taken out of the table (by whoever got there first): completes exactly once.
  void complete(const pending_ptr& p, result<remote_spawned> r) {
    // Ordered after the timer's arming by mu_ (take / fail_all).
    if (p->timer.id) node_.cancel_timer(p->timer);
    if (!r) {
      log(r.error() == make_error_code(errc::timeout) ||
                  r.error() == make_error_code(errc::nodedown)
              ? log_level::warning
              : log_level::info,
          "registry", node_.name(), ": spawn of '", p->behaviour, "' on ", p->target, ": ",
          r.fail().message());
    }
    auto done = std::move(p->done);
    if (done) done(std::move(r));
  }
  void orphan(const pid& child, std::string_view why) {
    log(log_level::warning, "registry", node_.name(), ": killing spawned ", child.to_string(), ": ",
        why);
    node_.exit(child, exit_reason::kill());
  }
  result<void> send_reply(const cluster::peer& to, const spawn_wire::reply& r) {
    auto* c = cluster::find(node_);
    if (!c) return failure(errc::nodedown, "no cluster");
    auto frame = spawn_wire::encode(r);
    auto sent =
        c->send_channel(to.atom, to.creation, cluster::channels::spawn,
                        {reinterpret_cast<const std::uint8_t*>(frame.data()), frame.size()});
    if (!sent) {
      log(log_level::warning, "registry", node_.name(), ": spawn reply to ", to.id(), ": ",
          sent.fail().message());
    }
    return sent;
  }

  node& node_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<const behaviour_entry>, std::less<>> behaviours_;
  std::unordered_map<std::uint64_t, pending_ptr> pending_;
  std::uint64_t next_id_ = 1;
  bool stopped_ = false;
  cluster::service* opened_ = nullptr;
};

// The node's instance. Pending spawns fail with node_stopped when the node stops (its stop
// hooks run before any process is stopped, while completions can still run).
class behaviour_service final : public node_service {
 public:
  explicit behaviour_service(node& n) : core(std::make_shared<spawn_core>(n)) {
    std::weak_ptr<spawn_core> weak = core;
    n.add_stop_hook([weak, name = n.name()] {
      if (auto c = weak.lock()) c->fail_all(failure(errc::node_stopped, name));
    });
  }
  ~behaviour_service() override { core->fail_all(failure(errc::node_stopped, "node destroyed")); }
  std::shared_ptr<spawn_core> core;
};

spawn_core& core_of(node& n) {
  return *n.use_service<behaviour_service>().core;
}

}  // namespace

namespace detail {

result<void> add_behaviour(node& n, std::string name, behaviour_options o, behaviour_start start) {
  return core_of(n).add(std::move(name), std::move(o), std::move(start));
}

void start_spawn(node& n, std::string_view target_node, std::string behaviour,
                 std::shared_ptr<msgpack::sbuffer> args, remote_spawn_options o, pid caller,
                 std::function<void(result<remote_spawned>)> done) {
  core_of(n).start(target_node, std::move(behaviour), std::move(args), std::move(o), caller,
                   std::move(done));
}

}  // namespace detail

result<void> unregister_behaviour(node& n, std::string_view name) {
  return core_of(n).remove(name);
}

std::vector<std::string> registered_behaviours(node& n) {
  return core_of(n).names();
}

result<void> serve_remote_spawn(node& n) {
  if (!core_of(n).open_channel()) {
    return failure(errc::nodedown, n.name() + " has not joined a cluster");
  }
  return {};
}

}  // namespace otpp
