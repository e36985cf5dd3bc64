// Distributed supervisor: children placed on cluster members by behaviour name, restarted
// elsewhere when their node goes, never run twice (epochs fenced by a child host on every node
// and by the global registry), the supervisor itself a cluster singleton that adopts running
// children, and moved on request (rebalance_dist_supervisor).
//
//   otpp::join_cluster(node, cluster_options);
//   otpp::register_behaviour<worker, worker_args>(node, "worker");   // on every node
//   otpp::dist_supervisor_spec spec{.name = "jobs", .where = otpp::placement::round_robin()};
//   spec.children.push_back(otpp::dist_child("w1", "worker", worker_args{1}, "w1"));
//   otpp::start_distributed_supervisor(node, spec);   // on every node, with the same spec
//   otpp::which_dist_children(node, "jobs", asio::use_awaitable);
//   otpp::rebalance_dist_supervisor(node, "jobs", asio::use_awaitable);  // after a node joined
//
// See README.md, "Design notes", "Distributed supervisor" for the algorithm.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/bind_executor.hpp>
#include <msgpack.hpp>

#include "otpp/call.hpp"
#include "otpp/node.hpp"
#include "otpp/registry/global.hpp"
#include "otpp/result.hpp"
#include "otpp/supervisor.hpp"

namespace otpp {

// ---- placement

// One node a child may go to, as a placement policy sees it.
struct placement_candidate {
  std::string node;                         // node id
  std::map<std::string, std::string> tags;  // its gossiped tags
  std::uint64_t load = 0;  // its published "otpp.load" (process count), 0 if unknown
  // This supervisor's children placed there (running or starting), known exactly.
  std::size_t children = 0;
};

struct placement_input {
  std::string supervisor;  // the supervisor's name
  std::string child_id;
  std::string self_node;                        // where the supervisor runs
  std::vector<placement_candidate> candidates;  // sorted by node id, never empty
  std::uint64_t sequence = 0;                   // grows with every placement (round robin)
  // rebalance_dist_supervisor asks a custom policy where a running child belongs now: the
  // node it runs on (answer it to keep the child there). Empty for a start.
  std::string current_node;
};

// A placement policy: a value. Answers a node id among the candidates, or nullopt (no node
// fits: the child waits and is retried).
struct placement {
  enum class kind : std::uint8_t { local_first, round_robin, least_loaded, node, tag, custom };
  kind how = kind::round_robin;
  std::string node_id{};                                                       // kind::node
  std::string tag_key{}, tag_value{};                                          // kind::tag
  std::function<std::optional<std::string>(const placement_input&)> choose{};  // kind::custom

  static placement of(kind k) {
    placement p;
    p.how = k;
    return p;
  }
  static placement local_first() { return of(kind::local_first); }
  static placement round_robin() { return of(kind::round_robin); }
  static placement least_loaded() { return of(kind::least_loaded); }
  static placement on_node(std::string id) {
    auto p = of(kind::node);
    p.node_id = std::move(id);
    return p;
  }
  static placement with_tag(std::string key, std::string value) {
    auto p = of(kind::tag);
    p.tag_key = std::move(key);
    p.tag_value = std::move(value);
    return p;
  }
  static placement custom(std::function<std::optional<std::string>(const placement_input&)> f) {
    auto p = of(kind::custom);
    p.choose = std::move(f);
    return p;
  }
};

// The pure decision (unit-testable): which candidate `p` picks. least_loaded: the smallest
// load + children (ties by node id); round_robin: candidates[sequence % size]; local_first:
// self_node if a candidate, else round robin; node / tag: the first matching candidate.
std::optional<std::string> place(const placement& p, const placement_input& in);

// The tag every node with a distributed supervisor publishes (its process count).
inline constexpr std::string_view load_tag = "otpp.load";

// ---- specs

struct dist_child_spec {
  std::string id;
  std::string behaviour;                         // registered on the nodes (register_behaviour)
  std::shared_ptr<const msgpack::sbuffer> args;  // packed; null: nil (Args = void)
  restart_type restart = restart_type::permanent;
  std::string global_name;         // empty: none
  std::optional<placement> where;  // overrides the supervisor's placement
  std::chrono::milliseconds start_timeout{5000};
  // How its host stops it (terminate_dist_child, a rebalance move, stop_dist_supervisor, the
  // intensity's stop), as the local supervisor's workers: timeout(t) asks it to stop with
  // reason shutdown (stop_process: its terminate runs) and sends `kill` if it has not ended
  // after t; brutal_kill sends `kill` at once. A kill lands when the child's running handler
  // returns (C++ cannot pre-empt it); the host waits 500 ms more, then logs the child as
  // abandoned and answers (the child ends when its handler returns). infinity: refused
  // (invalid_argument), a host bounds every stop.
  shutdown_mode shutdown = shutdown_mode::timeout(std::chrono::milliseconds(5000));
};

template <class Args>
dist_child_spec dist_child(std::string id, std::string behaviour, const Args& args,
                           std::string global_name = {}) {
  auto packed = std::make_shared<msgpack::sbuffer>();
  msgpack::pack(*packed, args);
  dist_child_spec c;
  c.id = std::move(id);
  c.behaviour = std::move(behaviour);
  c.args = std::move(packed);
  c.global_name = std::move(global_name);
  return c;
}

struct dist_supervisor_spec {
  std::string name;  // required; the supervisor runs under global name "otpp.dsup/<name>"
  // one_for_one or simple_one_for_one (children only through start_child, no template: each
  // start_child carries its spec). Others: invalid_argument.
  restart_strategy strategy = restart_strategy::one_for_one;
  int max_restarts = 3;
  std::chrono::milliseconds period{5000};
  std::vector<dist_child_spec> children;
  placement where = placement::round_robin();
  // The supervisor process (a cluster singleton) starts only where this many members are
  // reachable (the singleton's min_members). Keep it at most the size that survives a loss:
  // below it no takeover happens.
  std::size_t min_members = 1;
  // A fresh supervisor (no host reports any child of it: the first start, or after every
  // child was lost) places its children only once this many nodes run its child host: started
  // before its peers' hosts registered, it would otherwise crowd every child onto the first
  // nodes. A takeover that finds children proceeds at once. Set it to the nodes expected at
  // start for an even first placement.
  std::size_t initial_hosts = 1;
  // Retry of a child no node could take (or whose start failed): doubling, with jitter.
  std::chrono::milliseconds backoff_initial{50};
  std::chrono::milliseconds backoff_max{2000};
  // Hosts and supervisor re-check membership this often.
  std::chrono::milliseconds check_interval{250};
  // rebalance_dist_supervisor moves at most this many children at once (0: invalid_argument):
  // the others keep running meanwhile, so a rebalance never empties the cluster.
  std::size_t rebalance_in_flight = 2;
};

// Global names.
std::string dsup_global_name(std::string_view supervisor);
std::string dsup_host_name(std::string_view supervisor, std::string_view node_id);

// Starts, on this node, the child host of `spec.name` (global name dsup_host_name) and this
// node's singleton manager of the supervisor process. Call on every node, after join_cluster
// and after registering the children's behaviours. Errors: invalid_argument (empty name,
// strategy, duplicate child ids, a child's shutdown infinity or negative), nodedown (no
// join_cluster), already_registered, not_started, or the registration's error. Blocking: not from a
// process thread (invalid_argument).
result<void> start_distributed_supervisor(node& n, dist_supervisor_spec spec);
// This node stops hosting and managing `name`: its children here stop, its manager too (the
// supervisor moves elsewhere if it ran here). To stop the supervisor with all its children
// everywhere: stop_dist_supervisor (a call to the supervisor). not_found if not started here.
result<void> stop_distributed_supervisor(node& n, std::string_view name);

enum class dist_child_state : std::uint8_t {
  starting,     // a start is in flight
  running,      // monitored on `node`
  restarting,   // no node could take it, or its start failed: retried with backoff
  unreachable,  // its node is unreachable but not down: not restarted elsewhere (yet)
  stopped,      // terminate_child, or a transient child that ended normally: not running
};

struct dist_child_info {
  std::string id;
  std::string node;
  pid child;
  std::uint64_t epoch = 0;
  dist_child_state state = dist_child_state::starting;
  MSGPACK_DEFINE_MAP(id, node, child, epoch, state)
};

// ---- messages of the supervisor's run-time API (the supervisor answers them by global name)

struct dsup_which_children {
  static constexpr std::string_view tag = "otpp.dsup.which_children";
  using reply = std::vector<dist_child_info>;
  OTPP_NO_FIELDS()
};
// A child spec on the wire (no placement function: a custom placement cannot travel; the
// supervisor's own placement applies, or a node / tag / named policy).
struct dsup_wire_child {
  std::string id, behaviour, global_name;
  std::vector<char> args;
  restart_type restart = restart_type::permanent;
  std::string place_node;           // non-empty: placement::on_node
  std::string tag_key, tag_value;   // non-empty key: placement::with_tag
  bool brutal_kill = false;         // shutdown_mode::brutal_kill
  std::int64_t shutdown_ms = 5000;  // shutdown_mode::timeout; -1: infinity (refused)
  std::int64_t start_timeout_ms = 5000;
  // Set by the supervisor on the starts of children added by start_dist_child: a new instance
  // rebuilds those from their host's report (a spec child missing from its own spec stops).
  bool run_time = false;
  MSGPACK_DEFINE_MAP(id, behaviour, global_name, args, restart, place_node, tag_key, tag_value,
                     brutal_kill, shutdown_ms, start_timeout_ms, run_time)
};
struct dsup_start_child {
  static constexpr std::string_view tag = "otpp.dsup.start_child";
  using reply = dist_child_info;
  dsup_wire_child child;
  MSGPACK_DEFINE_MAP(child)
};
struct dsup_terminate_child {
  static constexpr std::string_view tag = "otpp.dsup.terminate_child";
  using reply = bool;
  std::string id;
  MSGPACK_DEFINE_MAP(id)
};
struct dsup_delete_child {
  static constexpr std::string_view tag = "otpp.dsup.delete_child";
  using reply = bool;
  std::string id;
  MSGPACK_DEFINE_MAP(id)
};
struct dsup_stop {
  static constexpr std::string_view tag = "otpp.dsup.stop";
  using reply = bool;
  OTPP_NO_FIELDS()
};
// One child a rebalance moved: stopped on `from` (its down seen), running on `to`.
struct dist_move {
  std::string id, from, to;
  std::uint64_t epoch = 0;  // of the copy now running on `to`
  MSGPACK_DEFINE_MAP(id, from, to, epoch)
};
struct dist_rebalance_report {
  std::vector<dist_move> moved;
  // Planned but not moved to their target: the child changed meanwhile (ended, terminated),
  // its host did not confirm the stop (it moves once its down comes), or the start on the
  // target failed (then it went the restart path: placed again, with backoff).
  std::vector<std::string> not_moved;
  MSGPACK_DEFINE_MAP(moved, not_moved)
};
struct dsup_rebalance {
  static constexpr std::string_view tag = "otpp.dsup.rebalance";
  using reply = dist_rebalance_report;
  OTPP_NO_FIELDS()
};

dsup_wire_child to_wire(const dist_child_spec& c);

namespace detail {
// A call to another node brings back only the wire's own error codes: the others arrive as
// `exit` with the original message as reason ("not_found: x"). Restores the supervisor's.
failure restore_dsup_error(failure f);

template <call_message M, class Token>
auto dsup_request(node& n, std::string_view sup, M msg, std::chrono::milliseconds timeout,
                  Token&& token) {
  using R = typename M::reply;
  return asio::async_initiate<Token, void(result<R>)>(
      [&n, timeout](auto handler, std::string name, M m) {
        if (refuse_blocking_wait<Token, R>(handler)) return;
        auto ex = asio::get_associated_executor(handler, n.context().get_executor());
        auto to = whereis(n, global(dsup_global_name(name)));
        call(n, to ? *to : pid{}, std::move(m), timeout,
             asio::bind_executor(ex, [h = std::move(handler)](result<R> r) mutable {
               if (!r) {
                 h(result<R>(restore_dsup_error(r.fail())));
               } else {
                 h(std::move(r));
               }
             }));
      },
      token, std::string(sup), std::move(msg));
}
}  // namespace detail

// Token forms (any Asio token; use_future not from a process thread: would_block), by the
// supervisor's global name, from any node. An unknown supervisor (not running right now,
// e.g. during a takeover): noproc.
template <class Token>
auto which_dist_children(node& n, std::string_view sup, Token&& token) {
  return detail::dsup_request(n, sup, dsup_which_children{}, default_call_timeout,
                              std::forward<Token>(token));
}
// Starts a child at run time (it joins the spec: restarted like the others, and adopted by a
// new supervisor instance after a takeover, its spec reported by its host). Answers once the
// child runs: its entry (state running, node, pid, epoch). Errors (the child is then not
// kept, as OTP's start_child): already_registered (id taken), the start's error as the host
// answered it (init_failed with init's reason, already_registered for a global name held,
// unknown_behaviour, bad_message, minority...), nodedown (no node fits its placement),
// invalid_argument (shutdown infinity), noproc (no supervisor, or it is stopping), timeout
// (the call's: the start may still complete, which_dist_children tells).
template <class Token>
auto start_dist_child(node& n, std::string_view sup, const dist_child_spec& c, Token&& token) {
  dsup_start_child m{to_wire(c)};
  return detail::dsup_request(n, sup, std::move(m), default_call_timeout,
                              std::forward<Token>(token));
}
// Stops a child (kept in the spec as stopped, not restarted); not_found.
template <class Token>
auto terminate_dist_child(node& n, std::string_view sup, std::string id, Token&& token) {
  dsup_terminate_child m{std::move(id)};
  return detail::dsup_request(n, sup, std::move(m), default_call_timeout,
                              std::forward<Token>(token));
}
// Forgets a stopped child; running (not stopped), not_found.
template <class Token>
auto delete_dist_child(node& n, std::string_view sup, std::string id, Token&& token) {
  dsup_delete_child m{std::move(id)};
  return detail::dsup_request(n, sup, std::move(m), default_call_timeout,
                              std::forward<Token>(token));
}
// Stops every child and the supervisor for good: answers once every host stopped its
// children (each per its shutdown), then every node's host and manager of it end
// (start_distributed_supervisor may be called again afterwards). The supervisor waits for the
// hosts at most the longest child shutdown plus 2.5 s; a host that did not confirm by then
// (unreachable, or a child still in a handler after its kill) answers timeout, its name in
// the reason: the supervisor is stopped anyway. `timeout` bounds the call (default 30 s).
template <class Token>
auto stop_dist_supervisor(node& n, std::string_view sup, std::chrono::milliseconds timeout,
                          Token&& token) {
  return detail::dsup_request(n, sup, dsup_stop{}, timeout, std::forward<Token>(token));
}
template <class Token>
auto stop_dist_supervisor(node& n, std::string_view sup, Token&& token) {
  return stop_dist_supervisor(n, sup, std::chrono::milliseconds(30000), std::forward<Token>(token));
}
// Moves running children so that they are spread as the supervisor's placement would spread
// them now, typically after a node joined or came back (children never move back by
// themselves). Only running permanent and transient children move. round_robin and
// least_loaded children: an even spread by count over the current candidates (within one;
// only those children are counted); on_node, with_tag and custom children: those not where
// their policy puts them now (with_tag: on a node without the tag; custom: asked with
// current_node set); local_first children stay. A move: the child's host stops it (its
// shutdown) and the supervisor sees its down, then starts it on the target with the next
// epoch (never two copies; its global name moves with it). At most rebalance_in_flight moves
// at once. A start on the target refused because the old copy's global name is still being
// removed is retried there (3 tries); any other failed start goes the restart path. Answers once
// every move ended: what moved (id, from, to, epoch) and what did not. Errors: noproc (no
// supervisor), running (a rebalance is already running, or the supervisor is still adopting its
// children: try again), timeout (the call's bound, default 60 s: the rebalance goes on).
template <class Token>
auto rebalance_dist_supervisor(node& n, std::string_view sup, std::chrono::milliseconds timeout,
                               Token&& token) {
  return detail::dsup_request(n, sup, dsup_rebalance{}, timeout, std::forward<Token>(token));
}
template <class Token>
auto rebalance_dist_supervisor(node& n, std::string_view sup, Token&& token) {
  return rebalance_dist_supervisor(n, sup, std::chrono::milliseconds(60000),
                                   std::forward<Token>(token));
}

// ---- child host (exposed for fencing tests and tools)

struct dsup_host_start {
  static constexpr std::string_view tag = "otpp.dsup.host.start";
  using reply = pid;
  dsup_wire_child child;
  std::uint64_t epoch = 0;
  MSGPACK_DEFINE_MAP(child, epoch)
};
struct dsup_host_child {
  std::string id;
  pid child;                // empty: not running (last_epoch only)
  std::uint64_t epoch = 0;  // of the running child, or the last seen
  // The running child's spec (empty id when not running): a new supervisor instance rebuilds
  // the children started at run time from it.
  dsup_wire_child spec;
  MSGPACK_DEFINE_MAP(id, child, epoch, spec)
};
struct dsup_host_which {
  static constexpr std::string_view tag = "otpp.dsup.host.which";
  using reply = std::vector<dsup_host_child>;
  OTPP_NO_FIELDS()
};
// Stops the child per its shutdown; answers once it ended (true), false if no such copy runs
// here, timeout if it was still in a handler 500 ms after its kill (abandoned).
struct dsup_host_stop {
  static constexpr std::string_view tag = "otpp.dsup.host.stop";
  using reply = bool;
  std::string id;
  std::uint64_t epoch = 0;  // 0: whichever copy runs; else only that epoch's
  MSGPACK_DEFINE_MAP(id, epoch)
};
// Stops every child here per its shutdown and refuses starts from then on; answers once they
// all ended (true) or some were abandoned (false). stop_dist_supervisor's first phase.
struct dsup_host_stop_all {
  static constexpr std::string_view tag = "otpp.dsup.host.stop_all";
  using reply = bool;
  OTPP_NO_FIELDS()
};

}  // namespace otpp

MSGPACK_ADD_ENUM(otpp::dist_child_state)
