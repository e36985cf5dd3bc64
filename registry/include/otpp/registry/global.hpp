// Global names: one name for one process across the cluster (Erlang's global). Every node
// holds a replica of the table, so whereis is a local lookup; registration is serialised by an
// arbiter node per name, so nodes racing for a name end with exactly one winner. A name is
// removed on every node when its process ends or its node goes down; after a split where both
// sides took a name, the resolver picks one winner everywhere and the loser is told (by
// default an exit signal `name_conflict`). A registration may carry an epoch (a fencing token
// that grows with every restart of what holds the name, as the distributed supervisor's): every
// replica remembers the highest epoch registered per name, and a claim below it is refused
// with stale_epoch, so an instance started by a stale supervisor never takes the name back.
// See README.md, "Design notes", "registry" for the algorithm and costs.
//
//   otpp::cluster::join(node, {...});
//   auto r = otpp::register_name(node, otpp::global("db"), *pid);  // blocking form
//   auto db = otpp::whereis(node, otpp::global("db"));              // any node
//   otpp::call(node, otpp::global("db"), query{...}, asio::use_awaitable);
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "otpp/call.hpp"
#include "otpp/node.hpp"
#include "otpp/process.hpp"

namespace otpp {

struct global_name {
  std::string name;
};
inline global_name global(std::string name) {
  return {std::move(name)};
}

// One registration of a name, as the resolver (and global_lookup) sees it.
struct global_candidate {
  std::string name;
  pid holder;
  // The registrant's system clock (nanoseconds since the epoch) when it registered.
  std::int64_t stamp = 0;
  // The registration's fencing token (global_register_options::epoch); 0: none.
  std::uint64_t epoch = 0;
};

struct global_options {
  // After a split healed (or arbiters disagreed during a view change) a name may have two
  // holders: true if `a` keeps the name over `b`. Must be a pure function and the same on
  // every node (every node picks the winner alone). Empty: the higher epoch wins when both
  // have one (non-zero), even if it registered later (the lower one is stale: its supervisor
  // restarted the name's holder elsewhere since); otherwise the earlier stamp, ties by pid
  // (node id, creation, serial).
  std::function<bool(const global_candidate& a, const global_candidate& b)> resolve{};
  // Runs on the loser's node, once, after the loser's name was removed. Empty: exit signal
  // with reason `name_conflict` to the loser (a process that traps exits gets it as a
  // message and lives on, without the name).
  std::function<void(node& n, const global_candidate& loser, const global_candidate& winner)>
      on_conflict{};
  // How many names' highest epochs a replica remembers, held or not. Past it, the name whose
  // epoch was registered or released longest ago is forgotten first (logged, counted in
  // global_registry_stats::epochs_forgotten): a stale claim of a forgotten free name is no
  // longer refused by this replica (a held name stays fenced by its holder's epoch, remembered
  // afresh when the holder leaves). Every replica sends what it remembers in its snapshots, so
  // a snapshot carries at most this many. 0: remember nothing beyond the current holders.
  std::size_t max_epoch_names = 16384;
};

// Starts the node's global registry with `options` (every entry point below starts it with
// defaults otherwise). Call it right after cluster::join: a node fills its replica from its
// peers' snapshots once started, so a node that starts late answers whereis from an empty
// table for a moment. invalid_argument if it already runs (options are fixed at start).
result<void> start_global(node& n, global_options options = {});

struct global_registry_stats {
  std::size_t names = 0;        // names with at least one holder in the replica
  std::size_t candidates = 0;   // holders (more than names only during a conflict)
  std::size_t homed = 0;        // registrations of this node's processes
  std::size_t pending = 0;      // registrations waiting for their arbiter
  std::uint64_t conflicts = 0;  // local holders that lost a conflict
  std::uint64_t bad_frames = 0;
  std::size_t peers = 0;        // peers whose registry answered (arbiters: ready and reachable)
  std::size_t epoch_names = 0;  // names whose highest epoch this replica remembers
  std::uint64_t stale_refusals = 0;    // claims this node refused with stale_epoch
  std::uint64_t epochs_forgotten = 0;  // epochs dropped past max_epoch_names
};
global_registry_stats global_stats(node& n);

// How register_name registers.
struct global_register_options {
  // Bounds the wait for the name's arbiter; otpp::infinity waits.
  std::chrono::milliseconds timeout = default_call_timeout;
  // A fencing token, 0 for none. Non-zero: refused with stale_epoch if the name was ever
  // registered with a higher epoch (held now or not, as far as the replicas remember: see
  // global_options::max_epoch_names), or with this same epoch by another process. A
  // registration without an epoch is never refused for one and leaves none behind.
  std::uint64_t epoch = 0;
};

namespace detail {
void global_register(node& n, std::string name, const pid& p, global_register_options o,
                     std::function<void(result<void>)> done);
}  // namespace detail

// Registers local process `p` under the global name. Completes (void(result<void>)) once
// every ready peer has been sent the registration (a message `p`'s node sends afterwards
// reaches each peer after it). Errors: already_registered (the holder's pid as reason),
// stale_epoch (options.epoch is below the name's highest epoch, or equal to it and registered
// by another process: the reason names it), noproc (`p` is not alive), invalid_argument (empty
// or over-long name, or `p` is not a process of this node: register on the pid's node),
// timeout (the arbiter did not answer in time; infinity waits), node_stopped, would_block
// (use_future from a process thread). A process may hold several global names. The epoch is
// checked before the holder: a stale claim of a held name answers stale_epoch.
template <class Token>
auto register_name(node& n, const global_name& name, const pid& p, global_register_options o,
                   Token&& token) {
  return asio::async_initiate<Token, void(result<void>)>(
      [&n, p, o](auto handler, std::string key) {
        if (detail::refuse_blocking_wait<Token, void>(handler)) return;
        auto shared = std::make_shared<decltype(handler)>(std::move(handler));
        detail::global_register(n, std::move(key), p, o, [&n, shared](result<void> r) {
          detail::complete_on(n.impl(), std::move(*shared), std::move(r));
        });
      },
      token, name.name);
}
template <class Token>
auto register_name(node& n, const global_name& name, const pid& p,
                   std::chrono::milliseconds timeout, Token&& token) {
  return register_name(n, name, p, global_register_options{.timeout = timeout},
                       std::forward<Token>(token));
}
template <class Token>
requires(!std::is_convertible_v<Token, std::chrono::milliseconds> &&
         !std::is_convertible_v<
             Token, global_register_options>) auto register_name(node& n, const global_name& name,
                                                                 const pid& p, Token&& token) {
  return register_name(n, name, p, global_register_options{}, std::forward<Token>(token));
}
// Blocking forms: would_block from a process thread (use a token there), not_started if the
// node does not run.
result<void> register_name(node& n, const global_name& name, const pid& p,
                           std::chrono::milliseconds timeout = default_call_timeout);
result<void> register_name(node& n, const global_name& name, const pid& p,
                           global_register_options o);

// Removes the name. Its holder's node removes it everywhere: at once if that is this node,
// else when this node's request reaches it (this replica follows a moment later).
// not_found if the name is unknown here, nodedown if the holder's node is not connected.
result<void> unregister_name(node& n, const global_name& name);

// From this node's replica (no network): noproc if nobody holds the name.
result<pid> whereis(node& n, const global_name& name);
// The same, with the registration: its holder, stamp and epoch (to adopt a running instance
// by name and epoch). noproc if nobody holds the name.
result<global_candidate> global_lookup(node& n, const global_name& name);
// The highest epoch this replica remembers registered for the name, held or not (0: none, or
// forgotten past global_options::max_epoch_names). A new instance started above it is not
// fenced off.
std::uint64_t global_epoch(node& n, const global_name& name);
std::vector<std::string> global_names(node& n);

template <message M>
result<void> cast(node& n, const global_name& to, M msg) {
  auto p = whereis(n, to);
  if (!p) return p.fail();
  return cast(n, *p, std::move(msg));
}
template <message M>
result<void> send(node& n, const global_name& to, M msg) {
  auto p = whereis(n, to);
  if (!p) return p.fail();
  return send(n, *p, std::move(msg));
}
// An unknown name completes with noproc through the token, like an unknown pid.
template <call_message M, class Token>
auto call(node& n, const global_name& to, M msg, std::chrono::milliseconds timeout, Token&& token) {
  auto p = whereis(n, to);
  return call(n, p ? *p : pid{}, std::move(msg), timeout, std::forward<Token>(token));
}
template <call_message M, class Token>
auto call(node& n, const global_name& to, M msg, Token&& token) {
  return call(n, to, std::move(msg), default_call_timeout, std::forward<Token>(token));
}

// From a handler of `self`: monitors (links to) the current holder of the name. A name
// nobody holds behaves like a dead pid: a `down` (an exit signal) with noproc at once.
inline monitor_ref monitor(process& self, const global_name& name) {
  auto p = whereis(self.this_node(), name);
  return self.monitor(p ? *p : pid{});
}
inline void link(process& self, const global_name& name) {
  auto p = whereis(self.this_node(), name);
  self.link(p ? *p : pid{});
}

}  // namespace otpp
