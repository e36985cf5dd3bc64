// Supervisors: OTP supervision trees for otpp processes.
//
//   otpp::supervisor_spec spec{.strategy = otpp::restart_strategy::one_for_one,
//                              .max_restarts = 3, .period = 5s, .name = "top"};
//   spec.children.push_back(otpp::child<db_conn>("db", "localhost"));
//   spec.children.push_back(otpp::supervisor_child("workers", workers_spec));
//   otpp::result<otpp::pid> sup = otpp::start_supervisor(node, spec);
//
// A supervisor is itself an otpp process (a gen_server trapping exits, linked to its children).
// It starts its children in order inside its own init (so start_supervisor returns once the
// whole subtree runs) and stops them in reverse order. Waits for children to stop never block
// a worker thread: they are coroutine handlers awaiting exits and timers.
//
// Run-time API: every function comes in two forms. With a completion token (callback,
// asio::use_awaitable, asio::use_future; completion void(result<T>)) it may be used anywhere.
// Without a token it blocks the calling thread: not from a process of the same node (it
// answers errc::invalid_argument there instead of risking a deadlock).
#pragma once

#include <any>
#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <optional>
#include <string>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <asio/async_result.hpp>
#include <asio/bind_executor.hpp>
#include <asio/use_future.hpp>

#include "otpp/call.hpp"
#include "otpp/gen_server.hpp"
#include "otpp/node.hpp"
#include "otpp/registry.hpp"

namespace otpp {

enum class restart_strategy : std::uint8_t {
  one_for_one,         // restart only the child that ended
  one_for_all,         // stop all other children (reverse order), restart all (in order)
  rest_for_one,        // stop the children started after it, restart it and them
  simple_one_for_one,  // one child template, children added at run time with arguments
};

enum class restart_type : std::uint8_t {
  permanent,  // always restarted
  transient,  // restarted only after an abnormal exit (not normal, not shutdown)
  temporary,  // never restarted; its spec is removed when it ends
};

enum class child_type : std::uint8_t { worker, supervisor };

// Errors only the supervisor answers (category "otpp.supervisor"); the others are otpp::errc.
enum class supervisor_errc {
  // A child id given to terminate_child / restart_child / delete_child of a
  // simple_one_for_one supervisor (OTP: {error, simple_one_for_one}); use the child's pid.
  simple_one_for_one = 1,
};
const std::error_category& supervisor_category() noexcept;
inline std::error_code make_error_code(supervisor_errc e) noexcept {
  return {static_cast<int>(e), supervisor_category()};
}

}  // namespace otpp

template <>
struct std::is_error_code_enum<otpp::supervisor_errc> : std::true_type {};

MSGPACK_ADD_ENUM(otpp::child_type)
MSGPACK_ADD_ENUM(otpp::restart_type)

namespace otpp {

// How a child is stopped (OTP's shutdown field).
struct shutdown_mode {
  enum class kind : std::uint8_t { brutal_kill, timeout, infinity };
  kind how = kind::timeout;
  std::chrono::milliseconds after{5000};

  static shutdown_mode brutal_kill() { return {kind::brutal_kill, std::chrono::milliseconds(0)}; }
  static shutdown_mode timeout(std::chrono::milliseconds t) { return {kind::timeout, t}; }
  static shutdown_mode infinity() { return {kind::infinity, std::chrono::milliseconds(-1)}; }
};

// A start function answering this means OTP's `ignore`: no process runs; a static child's spec
// is kept as not running (a temporary one is not kept), a dynamic child is not added.
inline pid ignore_child() {
  return pid{};
}

struct child_spec {
  std::string id{};
  // Starts the child and returns its pid. It should link the child to the calling process
  // (spawn_options{.link = true}); the supervisor links to the returned pid in any case.
  // Returning an empty pid{} (ignore_child()) means "ignore".
  std::function<result<pid>(node&)> start{};
  // simple_one_for_one template: started with the arguments given to start_dynamic_child.
  std::function<result<pid>(node&, const std::any&)> start_with{};
  restart_type restart = restart_type::permanent;
  // Default: 5000 ms for workers, infinity for supervisors (OTP defaults).
  std::optional<shutdown_mode> shutdown{};
  child_type type = child_type::worker;
  // Bound on the start function (OTP: the start_link timeout). Unset: the start runs inline
  // on the supervisor's thread, unbounded. Set: it runs on a helper thread (a process's init
  // cannot be pre-empted) and the supervisor gives up after this long: the start fails with
  // errc::timeout (a failed start at init, a failed and retried restart later), and a child
  // that still comes up afterwards is killed at once. The supervisor keeps working meanwhile,
  // except at its own init, which waits (bounded) as start_supervisor always does.
  std::optional<std::chrono::milliseconds> start_timeout{};
};

// What a supervisor reports through supervisor_spec::on_event.
struct supervisor_event {
  enum class kind : std::uint8_t {
    child_exited,    // a child ended on its own (reason: its exit reason)
    restarted,       // a child was started again after an exit (child: the new pid)
    restart_failed,  // a restart failed (reason: the error); it is retried
    start_timeout,   // a start function did not finish within start_timeout
    abandoned,       // a child ignored its shutdown and kill: left running (see kill_wait)
    gave_up,         // restart intensity exceeded: the supervisor stops
  };
  kind what = kind::child_exited;
  pid supervisor{};
  std::string child_id{};
  pid child{};
  exit_reason reason{};
};

// Counters of a supervisor since it started (get_supervisor_stats).
struct supervisor_stats {
  std::uint64_t child_exits = 0;       // children that ended on their own
  std::uint64_t restarts = 0;          // children started again (each sibling counts too)
  std::uint64_t restart_failures = 0;  // failed restart attempts (each retried)
  std::uint64_t start_timeouts = 0;    // starts abandoned at start_timeout
  std::uint64_t abandoned = 0;         // children left running after shutdown + kill_wait
  std::uint64_t ignored_exits = 0;     // EXIT messages not from a child that ended nor the parent
  MSGPACK_DEFINE_MAP(child_exits, restarts, restart_failures, start_timeouts, abandoned,
                     ignored_exits)
};

struct supervisor_spec {
  restart_strategy strategy = restart_strategy::one_for_one;
  // Restart intensity: more than max_restarts restarts within period ends the supervisor
  // (children stopped, exit reason "reached_max_restart_intensity").
  int max_restarts = 1;
  std::chrono::milliseconds period = std::chrono::seconds(5);
  // Static children, started in this order. For simple_one_for_one: exactly one template.
  std::vector<child_spec> children{};
  std::string name{};  // registered in the local registry when not empty
  // Grace after `kill` (sent at a child's shutdown timeout, or at once for brutal_kill): a
  // killed child ends as soon as its running handler returns (C++ cannot pre-empt it). A child
  // still running after this grace is logged and abandoned (event `abandoned`): the supervisor
  // moves on, the child ends whenever its handler returns.
  std::chrono::milliseconds kill_wait = std::chrono::milliseconds(500);
  // Restart events, called on the supervisor's thread: keep it short and do not block (cast or
  // post elsewhere for more). An exception it throws is logged and ignored.
  std::function<void(const supervisor_event&)> on_event{};
};

// Exit reason of a supervisor that gave up.
inline const std::string reached_max_restart_intensity_reason = "reached_max_restart_intensity";

struct child_info {
  std::string id{};
  pid child{};  // empty when not running
  child_type type = child_type::worker;
  restart_type restart = restart_type::permanent;
  bool restarting = false;  // a restart failed and is retried
  MSGPACK_DEFINE_MAP(id, child, type, restart, restarting)
};

// As OTP: a simple_one_for_one supervisor has one spec; its children count as workers or
// supervisors (running or being restarted), the running ones as active.
struct child_counts {
  std::size_t specs = 0;        // child specs
  std::size_t active = 0;       // running children
  std::size_t supervisors = 0;  // children of type supervisor
  std::size_t workers = 0;      // children of type worker
  MSGPACK_DEFINE_MAP(specs, active, supervisors, workers)
};

// ---- child spec helpers

// A worker running Server(args...), linked to the supervisor.
template <class Server, class... Args>
child_spec child(std::string id, Args&&... args) {
  child_spec c;
  c.id = std::move(id);
  c.start = [... a = std::forward<Args>(args)](node& n) -> result<pid> {
    return n.spawn_opt<Server>(spawn_options{.link = true}, a...);
  };
  return c;
}

// simple_one_for_one template: Server(args...) with args given at run time by
// start_dynamic_child(node, sup, child_args(args...)); the decayed types must be exactly Args.
template <class Server, class... Args>
child_spec dynamic_child(std::string id) {
  child_spec c;
  c.id = std::move(id);
  c.start_with = [](node& n, const std::any& args) -> result<pid> {
    const auto* t = std::any_cast<std::tuple<Args...>>(&args);
    if (!t) {
      return failure(errc::invalid_argument,
                     "start_dynamic_child: arguments do not match the child template");
    }
    return std::apply(
        [&n](const Args&... a) { return n.spawn_opt<Server>(spawn_options{.link = true}, a...); },
        *t);
  };
  return c;
}

template <class... Args>
std::any child_args(Args&&... args) {
  return std::any(std::tuple<std::decay_t<Args>...>(std::forward<Args>(args)...));
}

// Starts a supervisor. From inside a process it is linked to that process (its parent, whose
// exit signal makes it shut down); from outside any process of `n` it is a top-level
// supervisor, stopped by node.stop() in reverse start order. Fails with already_registered if
// spec.name is taken, init_failed (with the child's reason) if a child fails to start; the
// children already started are then stopped in reverse order (before this returns when called
// from outside the node's processes).
result<pid> start_supervisor(node& n, supervisor_spec spec);

// A child spec whose child is a supervisor (shutdown infinity, type supervisor).
child_spec supervisor_child(std::string id, supervisor_spec spec,
                            restart_type restart = restart_type::permanent);

// Asks a supervisor to stop its children (reverse order) and exit with `reason`. Blocks until
// it ended unless called from a process of `n`. noproc if it is not alive.
result<void> stop_supervisor(node& n, const pid& sup, exit_reason reason = exit_reason::shutdown());

// ---- internal control messages (local only: they do not cross the wire)
namespace detail::sup {

// Local only, like every supervisor control message: no msgpack mapping (the runtime needs
// one only for types that cross the wire), so the error keeps its own category.
struct reply {
  std::error_code error;
  std::string reason;
  pid child;
  std::vector<child_info> children;
  child_counts counts;
  supervisor_stats stats;
};

struct start_child {
  static constexpr std::string_view tag = "supervisor:start_child";
  using reply = sup::reply;
  child_spec spec;
};
struct start_dynamic {
  static constexpr std::string_view tag = "supervisor:start_dynamic_child";
  using reply = sup::reply;
  std::any args;
};
struct terminate_child {
  static constexpr std::string_view tag = "supervisor:terminate_child";
  using reply = sup::reply;
  std::string id;       // static children
  pid child;            // simple_one_for_one children
  bool by_pid = false;  // which of the two was given
};
struct restart_child {
  static constexpr std::string_view tag = "supervisor:restart_child";
  using reply = sup::reply;
  std::string id;
};
struct delete_child {
  static constexpr std::string_view tag = "supervisor:delete_child";
  using reply = sup::reply;
  std::string id;
};
struct which_children {
  static constexpr std::string_view tag = "supervisor:which_children";
  using reply = sup::reply;
};
struct count_children {
  static constexpr std::string_view tag = "supervisor:count_children";
  using reply = sup::reply;
};
struct get_stats {
  static constexpr std::string_view tag = "supervisor:get_stats";
  using reply = sup::reply;
};
struct shutdown {
  static constexpr std::string_view tag = "supervisor:shutdown";
  exit_reason reason;
};
struct try_again {
  static constexpr std::string_view tag = "supervisor:try_again";
};

// True when the caller runs a handler of a process of `n` (blocking there could deadlock).
bool on_node_thread(node& n);

inline failure to_failure(const reply& r) {
  return failure(r.error, r.reason);
}

// Start helper threads (child_spec::start_timeout) still running. A helper whose start
// outlived its timeout kills the late child, touching the node: wait for this to be 0 before
// destroying a node whose supervisors use start timeouts (tests do).
std::size_t start_helpers_running() noexcept;

// Sends `msg` to the supervisor and completes `token` with convert(reply) or the call error.
template <class T, call_message M, class Token, class Convert>
auto request(node& n, const pid& sup, M msg, Token&& token, Convert convert) {
  return asio::async_initiate<Token, void(result<T>)>(
      [&n, sup, convert](auto handler, M m) {
        auto ex = asio::get_associated_executor(handler, n.context().get_executor());
        otpp::call(
            n, sup, std::move(m), otpp::infinity,
            asio::bind_executor(ex, [h = std::move(handler), convert](result<reply> r) mutable {
              if (!r) {
                h(result<T>(r.fail()));
              } else if (r->error) {
                h(result<T>(to_failure(*r)));
              } else {
                h(convert(std::move(*r)));
              }
            }));
      },
      token, std::move(msg));
}

template <class T, call_message M, class Convert>
result<T> request_blocking(node& n, const pid& sup, M msg, Convert convert) {
  if (on_node_thread(n)) {
    return failure(errc::invalid_argument,
                   "blocking supervisor API called from a process of the same node: "
                   "use the completion-token form");
  }
  return request<T>(n, sup, std::move(msg), asio::use_future, convert).get();
}

inline result<pid> to_pid(reply r) {
  return r.child;
}
inline result<void> to_void(reply) {
  return {};
}
inline result<std::vector<child_info>> to_children(reply r) {
  return std::move(r.children);
}
inline result<child_counts> to_counts(reply r) {
  return r.counts;
}
inline result<supervisor_stats> to_stats(reply r) {
  return r.stats;
}

}  // namespace detail::sup

// ---- run-time API (completion-token forms)

// Adds and starts a static child. already_registered ("already_started" / "already_present")
// if the id is taken; the child's start error if it fails (the spec is then not added);
// invalid_argument for a simple_one_for_one supervisor.
template <class Token>
auto start_child(node& n, const pid& sup, child_spec spec, Token&& token) {
  return detail::sup::request<pid>(n, sup, detail::sup::start_child{std::move(spec)},
                                   std::forward<Token>(token), detail::sup::to_pid);
}
// simple_one_for_one: starts a child of the template with `args` (see child_args).
template <class Token>
auto start_dynamic_child(node& n, const pid& sup, std::any args, Token&& token) {
  return detail::sup::request<pid>(n, sup, detail::sup::start_dynamic{std::move(args)},
                                   std::forward<Token>(token), detail::sup::to_pid);
}
// Stops a child (per its shutdown mode). The spec stays (restart_child restarts it) unless the
// child is temporary. not_found for an unknown id; supervisor_errc::simple_one_for_one on a
// simple_one_for_one supervisor (give the pid).
template <class Token>
auto terminate_child(node& n, const pid& sup, std::string id, Token&& token) {
  return detail::sup::request<void>(n, sup, detail::sup::terminate_child{std::move(id), {}, false},
                                    std::forward<Token>(token), detail::sup::to_void);
}
// simple_one_for_one: stops a dynamic child and forgets it. ok for the pid of a process that
// already ended (OTP); not_found for a live process that is not a child, or the empty pid.
template <class Token>
auto terminate_child(node& n, const pid& sup, const pid& child, Token&& token) {
  return detail::sup::request<void>(n, sup, detail::sup::terminate_child{{}, child, true},
                                    std::forward<Token>(token), detail::sup::to_void);
}
// Starts a terminated child again. not_found, running, restarting,
// supervisor_errc::simple_one_for_one.
template <class Token>
auto restart_child(node& n, const pid& sup, std::string id, Token&& token) {
  return detail::sup::request<pid>(n, sup, detail::sup::restart_child{std::move(id)},
                                   std::forward<Token>(token), detail::sup::to_pid);
}
// Removes the spec of a terminated child. not_found, running, restarting,
// supervisor_errc::simple_one_for_one.
template <class Token>
auto delete_child(node& n, const pid& sup, std::string id, Token&& token) {
  return detail::sup::request<void>(n, sup, detail::sup::delete_child{std::move(id)},
                                    std::forward<Token>(token), detail::sup::to_void);
}
// Newest first, as OTP (static children in reverse start order, then dynamic children by
// start, newest first, then dynamic children waiting for a restart).
template <class Token>
auto which_children(node& n, const pid& sup, Token&& token) {
  return detail::sup::request<std::vector<child_info>>(
      n, sup, detail::sup::which_children{}, std::forward<Token>(token), detail::sup::to_children);
}
template <class Token>
auto count_children(node& n, const pid& sup, Token&& token) {
  return detail::sup::request<child_counts>(n, sup, detail::sup::count_children{},
                                            std::forward<Token>(token), detail::sup::to_counts);
}
// Counters since the supervisor started (restarts, failures, abandoned children, ...).
template <class Token>
auto get_supervisor_stats(node& n, const pid& sup, Token&& token) {
  return detail::sup::request<supervisor_stats>(n, sup, detail::sup::get_stats{},
                                                std::forward<Token>(token), detail::sup::to_stats);
}

// ---- run-time API (blocking forms; not from a process of the same node)
inline result<pid> start_child(node& n, const pid& sup, child_spec spec) {
  return detail::sup::request_blocking<pid>(n, sup, detail::sup::start_child{std::move(spec)},
                                            detail::sup::to_pid);
}
inline result<pid> start_dynamic_child(node& n, const pid& sup, std::any args) {
  return detail::sup::request_blocking<pid>(n, sup, detail::sup::start_dynamic{std::move(args)},
                                            detail::sup::to_pid);
}
inline result<void> terminate_child(node& n, const pid& sup, std::string id) {
  return detail::sup::request_blocking<void>(
      n, sup, detail::sup::terminate_child{std::move(id), {}, false}, detail::sup::to_void);
}
inline result<void> terminate_child(node& n, const pid& sup, const pid& child) {
  return detail::sup::request_blocking<void>(n, sup, detail::sup::terminate_child{{}, child, true},
                                             detail::sup::to_void);
}
inline result<pid> restart_child(node& n, const pid& sup, std::string id) {
  return detail::sup::request_blocking<pid>(n, sup, detail::sup::restart_child{std::move(id)},
                                            detail::sup::to_pid);
}
inline result<void> delete_child(node& n, const pid& sup, std::string id) {
  return detail::sup::request_blocking<void>(n, sup, detail::sup::delete_child{std::move(id)},
                                             detail::sup::to_void);
}
inline result<std::vector<child_info>> which_children(node& n, const pid& sup) {
  return detail::sup::request_blocking<std::vector<child_info>>(
      n, sup, detail::sup::which_children{}, detail::sup::to_children);
}
inline result<child_counts> count_children(node& n, const pid& sup) {
  return detail::sup::request_blocking<child_counts>(n, sup, detail::sup::count_children{},
                                                     detail::sup::to_counts);
}
inline result<supervisor_stats> get_supervisor_stats(node& n, const pid& sup) {
  return detail::sup::request_blocking<supervisor_stats>(n, sup, detail::sup::get_stats{},
                                                         detail::sup::to_stats);
}

}  // namespace otpp
