// Supervisors: OTP supervision trees for otpp processes.
//
//   otpp::supervisor_spec spec{.strategy = otpp::restart_strategy::one_for_one,
//                              .max_restarts = 3, .period = 5s, .name = "top"};
//   spec.children.push_back(otpp::child<db_conn>("db", "localhost"));
//   spec.children.push_back(otpp::supervisor_child("workers", workers_spec));
//   otpp::result<otpp::pid> sup = otpp::start_supervisor(node, spec);
//
// A supervisor is itself an otpp process (a gen_server trapping exits, linked to its children).
// It starts its children in order right after its init, on its own turn (start_supervisor
// completes once the whole subtree runs), and stops them in reverse order. No wait of a
// supervisor blocks a thread: a child's init runs on the child's own first turn and its outcome
// comes back as a task; stops await exits and timers in coroutine handlers.
//
// start_supervisor and the run-time API come in two forms. With a completion token (callback,
// asio::use_awaitable, asio::use_future; completion void(result<T>)) they may be used anywhere.
// Without a token they block the calling thread: not from a process of the same node (they
// answer errc::invalid_argument there instead of risking a deadlock). On a manual node the
// blocking forms run the node (poll) on the calling thread until they complete.
#pragma once

#include <any>
#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
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
  // How the child starts: `spawn` (set by child<Server>(), dynamic_child<Server>() and
  // supervisor_child()), or a start function set by hand (`start`, or `start_with` for a
  // simple_one_for_one template), which wins over `spawn`.
  //
  // spawn: spawns the child with `options` as given (spawn_opt does). The supervisor asks for a
  // link, async_init (the child's init runs on its own first turn, never on the supervisor's)
  // and an after_init it waits for without holding a thread. `args`: start_dynamic_child's.
  std::function<result<pid>(node&, const spawn_options& options, const std::any& args)> spawn{};
  // A start function: starts the child and returns its pid. It should link the child to the
  // calling process (spawn_options{.link = true}); the supervisor links to the returned pid in
  // any case. Returning an empty pid{} (ignore_child()) means "ignore". It runs synchronously
  // in the supervisor's turn, or, with start_timeout, in a short-lived starter process linked
  // to the supervisor (the calling process then), so it must not block on the supervisor.
  std::function<result<pid>(node&)> start{};
  // simple_one_for_one template: started with the arguments given to start_dynamic_child.
  std::function<result<pid>(node&, const std::any&)> start_with{};
  restart_type restart = restart_type::permanent;
  // Default: 5000 ms for workers, infinity for supervisors (OTP defaults).
  std::optional<shutdown_mode> shutdown{};
  child_type type = child_type::worker;
  // Bound on the start (OTP: the start_link timeout), in node time (a manual clock drives it).
  // If it passes first, the start fails with errc::timeout (event and counter start_timeout;
  // start_supervisor then fails, a restart is retried) and the child is killed: a hung init
  // cannot be pre-empted, so it dies when its init returns, holding one of the node's worker
  // threads until then. Unset: unbounded (a start function then runs inline in the
  // supervisor's turn).
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
  c.spawn = [... a = std::forward<Args>(args)](node& n, const spawn_options& o,
                                               const std::any&) -> result<pid> {
    return n.spawn_opt<Server>(o, a...);
  };
  return c;
}

// simple_one_for_one template: Server(args...) with args given at run time by
// start_dynamic_child(node, sup, child_args(args...)); the decayed types must be exactly Args.
template <class Server, class... Args>
child_spec dynamic_child(std::string id) {
  child_spec c;
  c.id = std::move(id);
  c.spawn = [](node& n, const spawn_options& o, const std::any& args) -> result<pid> {
    const auto* t = std::any_cast<std::tuple<Args...>>(&args);
    if (!t) {
      return failure(errc::invalid_argument,
                     "start_dynamic_child: arguments do not match the child template");
    }
    return std::apply([&n, &o](const Args&... a) { return n.spawn_opt<Server>(o, a...); }, *t);
  };
  return c;
}

template <class... Args>
std::any child_args(Args&&... args) {
  return std::any(std::tuple<std::decay_t<Args>...>(std::forward<Args>(args)...));
}

// Starts a supervisor and completes once all its children run (OTP's start_link). Blocking
// form: from outside the node's processes only (a top-level supervisor, stopped by node.stop()
// in reverse start order); from a process of `n` it answers invalid_argument (use the token
// form, or supervisor_child() for a child of a supervisor). Fails with already_registered if
// spec.name is taken, not_started if the node is not running, init_failed (with the child's
// reason) if a child fails to start: the children already started are stopped in reverse
// order before it completes. On a manual node a start waiting for virtual time (a
// start_timeout) cannot complete in the blocking form: it answers would_block and the
// supervisor is stopped (use the token form and advance the clock).
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

// Starts a supervisor; `done` is called exactly once, on one of the node's threads: with its
// pid once all its children run, or with the failure (after the children it started were
// stopped again). Started from a process of `n`, the supervisor links to it once started (its
// parent: its exit shuts the tree down). Returns the pid spawned (empty if it failed at once).
pid start_supervisor(node& n, supervisor_spec spec, std::function<void(result<pid>)> done);

// Waits for `f` off the node's threads. A manual node runs only when polled: it is polled here
// until `f` is ready, or nothing is left to run (false: `f` waits for virtual time or another
// thread).
template <class T>
bool wait_ready(node& n, std::future<T>& f) {
  if (!n.manual()) {
    f.wait();
    return true;
  }
  for (int idle = 0; f.wait_for(std::chrono::seconds(0)) != std::future_status::ready;) {
    if (n.poll() > 0) {
      idle = 0;
    } else if (++idle >= 3) {
      return false;
    }
  }
  return true;
}

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
  auto f = request<T>(n, sup, std::move(msg), asio::use_future, convert);
  if (!wait_ready(n, f)) {
    return failure(errc::would_block, "manual node: the request waits for its clock to advance");
  }
  return f.get();
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

// ---- completion-token forms (anywhere)

// start_supervisor, completing with void(result<pid>) once all the children run. From a
// handler: co_await it with asio::use_awaitable (the supervisor links to the process once
// started); use_future from a process answers would_block.
template <class Token>
auto start_supervisor(node& n, supervisor_spec spec, Token&& token) {
  return asio::async_initiate<Token, void(result<pid>)>(
      [&n](auto handler, supervisor_spec s) {
        if (detail::refuse_blocking_wait<Token, pid>(handler)) return;
        auto shared = std::make_shared<decltype(handler)>(std::move(handler));
        (void)detail::sup::start_supervisor(n, std::move(s), [&n, shared](result<pid> r) {
          detail::complete_on(n.impl(), std::move(*shared), std::move(r));
        });
      },
      token, std::move(spec));
}

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
