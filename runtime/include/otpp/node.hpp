// A node: the thread pool and every process on it. Several nodes may live in one OS process.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include <asio/io_context.hpp>

#include "otpp/clock.hpp"
#include "otpp/detail/envelope.hpp"
#include "otpp/message.hpp"
#include "otpp/pid.hpp"
#include "otpp/process.hpp"
#include "otpp/result.hpp"

namespace otpp {

struct node_options {
  std::string name = "nonode@nohost";  // node id; cluster nodes use name@host:port
  std::size_t threads = 0;             // worker threads; 0: hardware threads
  std::uint32_t creation = 0;          // incarnation; 0: a fresh random one per start
  // Time source of every timer of the node; null: the steady clock. Tests share one
  // manual_clock between nodes and step it.
  std::shared_ptr<manual_clock> clock{};
  // No worker threads: the owner runs the node's work on its own thread with poll(). With a
  // manual_clock this makes a node (or several) fully deterministic.
  bool manual = false;
  // How long an idle worker polls for work before it sleeps (one worker at a time). Worth
  // tens of microseconds on CPUs where cross-core wake-ups are expensive (AMD EPYC); 0 (the
  // default) sleeps at once, which an idle node and cheap wake-ups prefer.
  std::chrono::microseconds idle_spin{0};
};

// One process as introspection sees it (node::processes, node::info).
struct process_info {
  pid self;
  std::string type;   // the C++ class it runs (demangled)
  std::string label;  // spawn_options::label (a remote spawn's behaviour name), or empty
  // Messages waiting, as of the process's last look at its inbox (a process stuck in one
  // long handler shows what it had when that handler began).
  std::size_t mailbox = 0;
  std::uint64_t handled = 0;  // messages handled so far (calls, casts, infos)
  // Bytes: its object plus the envelopes waiting. A lower bound: what its members and the
  // messages own on the heap is not counted.
  std::size_t memory = 0;
  time_point started{};
};

// State of an upper layer (registry, cluster, ...) owned by a node: created on first
// use_service, destroyed with the node after every process ended, last created first.
class node_service {
 public:
  virtual ~node_service() = default;
};

namespace detail {
class node_impl;
// Non-template entry points used by the inline templates below.
result<void> route(node_impl& n, const pid& to, message_envelope* e);
result<pid> start_process(node_impl& n, process* p, const spawn_options& o);
pid current_self() noexcept;
timer_ref start_timer(node_impl& n, clock_type::duration d, const pid& to, message_envelope* e);
node_service& find_service(node_impl& n, std::size_t index, node_service* (*make)(node&));
std::size_t new_service_index() noexcept;
template <class S>
std::size_t service_index() {
  static const std::size_t index = new_service_index();
  return index;
}
}  // namespace detail

class node {
 public:
  explicit node(node_options options = {});
  ~node();  // stops (gracefully) and joins
  node(const node&) = delete;
  node& operator=(const node&) = delete;

  void start();  // starts the worker threads; idempotent
  // Graceful stop: stop hooks (reverse order), then every process gets stop(shutdown) and runs
  // terminate(shutdown); then the threads end. Blocks until done unless called from a handler
  // of this node, in which case it starts the stop and returns (join() waits).
  void stop();
  void join();
  bool running() const noexcept;
  // options.manual: the node's work runs only in poll(), on its owner's thread.
  bool manual() const noexcept;

  // Manual nodes (options.manual): runs every ready piece of work on this thread, including
  // work that running it makes ready; returns how many ran. Not for threaded nodes.
  std::size_t poll();

  asio::io_context& context() noexcept;
  const std::string& name() const noexcept;
  node_atom atom() const noexcept;
  std::uint32_t creation() const noexcept;
  // The node's time (its clock option): what timers and timeouts are measured against.
  time_point now() const noexcept;
  // now() read cheaply (CLOCK_MONOTONIC_COARSE: a few ns instead of a few tens), at most one
  // clock tick behind now() (coarse_resolution()), never ahead: for bookkeeping that tolerates
  // that lag on every call (breaker windows, rate-limiter refills). The manual clock when the
  // node has one.
  time_point coarse_now() const noexcept;
  clock_type::duration coarse_resolution() const noexcept;

  // The node's instance of service S (constructed as S(node&) on first use; thread-safe).
  template <class S>
  S& use_service() {
    static_assert(std::is_base_of_v<node_service, S>, "a service derives from node_service");
    return static_cast<S&>(detail::find_service(*impl_, detail::service_index<S>(),
                                                [](node& n) -> node_service* { return new S(n); }));
  }

  // Constructs Server(args...) and runs its init() on this thread before returning: the
  // process exists (and is linked if asked) exactly when this returns a pid.
  template <class Server, class... Args>
  result<pid> spawn(Args&&... args) {
    return spawn_opt<Server>(spawn_options{}, std::forward<Args>(args)...);
  }
  template <class Server, class... Args>
  result<pid> spawn_opt(const spawn_options& options, Args&&... args) {
    Server* server = nullptr;
    try {
      server = new Server(std::forward<Args>(args)...);
    } catch (const std::exception& e) {
      return failure(errc::init_failed, e.what());
    } catch (...) {
      return failure(errc::init_failed, "unknown exception");
    }
    server->type_ = &typeid(Server);
    server->object_size_ = sizeof(Server);
    return detail::start_process(*impl_, server, options);
  }

  bool alive(const pid& p) const;
  std::size_t process_count() const;
  // Every live process of this node, by pid (Erlang's processes() with process_info): a
  // snapshot taken without stopping anyone, so a busy node's figures are a moment old.
  std::vector<process_info> processes() const;
  // One process: noproc if it is not alive here (or not of this node).
  result<process_info> info(const pid& p) const;

  // Exit signal to `to` from the current process (or from no process). `kill` cannot be
  // trapped; `normal` is ignored unless trapped.
  void exit(const pid& to, exit_reason reason);
  // Asks a process to stop with `reason`: it runs terminate(reason) and ends, even when its
  // handler is suspended in a coroutine. Urgent: never waits behind queued user messages.
  void stop_process(const pid& to, exit_reason reason = exit_reason::normal());

  // Calls `on_exit(reason)` exactly once when `p` ends (at once, with noproc, if it is not
  // alive). Runs on the exiting process's thread: keep it short (post elsewhere for more).
  // Unlike monitor() it needs no mailbox, so a suspended coroutine can await it.
  void watch_process(const pid& p, std::function<void(const exit_reason&)> on_exit);

  // Delivers `msg` to handle_info of `to` after `delay` (node time). Cancel with cancel_timer.
  template <message M>
  timer_ref send_after(clock_type::duration delay, const pid& to, M msg) {
    return detail::start_timer(
        *impl_, delay, to,
        new detail::typed_envelope<M>(detail::envelope_kind::system_info, detail::current_self(),
                                      std::move(msg)));
  }
  // Runs `f` on process `to` after `delay` (node time), as a task of its own: unlike a
  // send_after message it runs even while a coroutine handler of `to` is suspended (a timeout
  // for the waits such a handler makes). Dropped if `to` has ended. Cancel with cancel_timer.
  timer_ref post_after(clock_type::duration delay, const pid& to, std::function<void()> f);
  // Runs `f` on a node thread, outside any process, after `delay` (node time): timeouts of
  // upper layers that belong to no process (a remote spawn, a name claim). Keep it short.
  // Dropped if the node is destroyed first. Cancel with cancel_timer.
  timer_ref run_after(clock_type::duration delay, std::function<void()> f);
  // True if the timer was cancelled before it fired.
  bool cancel_timer(timer_ref ref);

  // Extension points for upper layers (registry, supervisor, cluster).
  // Called on the exiting process's thread for processes flagged with watch_exit(), after
  // the process left the process table and before links and monitors hear of the exit.
  using exit_listener = std::function<void(const pid&, const exit_reason&)>;
  void add_exit_listener(exit_listener listener);
  void watch_exit(const pid& p, bool on);
  // Run at the start of stop(), last added first.
  void add_stop_hook(std::function<void()> hook);

  detail::node_impl& impl() noexcept { return *impl_; }

 private:
  std::unique_ptr<detail::node_impl> impl_;
};

// Fire-and-forget sends. They fail (noproc, mailbox_full, node_stopped) only when the failure
// is known locally at once; like Erlang, a sent message may still be lost if the target dies.
template <message M>
result<void> cast(node& n, const pid& to, M msg) {
  return detail::route(n.impl(), to,
                       new detail::typed_envelope<M>(detail::envelope_kind::cast,
                                                     detail::current_self(), std::move(msg)));
}
// A plain message: reaches handle_info.
template <message M>
result<void> send(node& n, const pid& to, M msg) {
  return detail::route(n.impl(), to,
                       new detail::typed_envelope<M>(detail::envelope_kind::info,
                                                     detail::current_self(), std::move(msg)));
}
// Dynamic form: a msgpack map with a "type" field naming the tag; reaches the same handlers.
// kind: cast or info.
result<void> cast_dynamic(node& n, const pid& to, msgpack::object_handle map);
result<void> send_dynamic(node& n, const pid& to, msgpack::object_handle map);

inline void exit(node& n, const pid& to, exit_reason reason) {
  n.exit(to, std::move(reason));
}

template <class Server, class... Args>
result<pid> process::spawn_link(Args&&... args) {
  return this_node().template spawn_opt<Server>(spawn_options{.link = true},
                                                std::forward<Args>(args)...);
}

template <class Server, class... Args>
result<std::pair<pid, monitor_ref>> process::spawn_monitor(Args&&... args) {
  monitor_ref ref{};
  spawn_options o;
  o.before_init = [this, &ref](const pid& child) -> result<void> {
    ref = monitor(child);
    return {};
  };
  auto p = this_node().template spawn_opt<Server>(o, std::forward<Args>(args)...);
  if (!p) return p.fail();
  return std::pair<pid, monitor_ref>{*p, ref};
}

}  // namespace otpp
