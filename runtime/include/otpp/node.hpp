// A node: the thread pool and every process on it. Several nodes may live in one OS process.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <asio/io_context.hpp>

#include "otpp/detail/envelope.hpp"
#include "otpp/message.hpp"
#include "otpp/pid.hpp"
#include "otpp/process.hpp"
#include "otpp/result.hpp"

namespace otpp {

struct node_options {
  std::string name = "nonode@nohost";  // node id; cluster nodes use name@host:port
  std::size_t threads = 0;             // worker threads; 0: hardware threads
  std::uint32_t creation = 0;          // incarnation; 0: chosen so a restart differs
};

namespace detail {
class node_impl;
// Non-template entry points used by the inline templates below.
result<void> deliver(node_impl& n, const pid& to, message_envelope* e);
result<pid> start_process(node_impl& n, process* p, const spawn_options& o);
pid current_self() noexcept;
timer_ref start_timer(node_impl& n, std::chrono::steady_clock::duration d, const pid& to,
                      message_envelope* e);
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

  asio::io_context& context() noexcept;
  const std::string& name() const noexcept;
  node_atom atom() const noexcept;
  std::uint32_t creation() const noexcept;

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
    return detail::start_process(*impl_, server, options);
  }

  bool alive(const pid& p) const;
  std::size_t process_count() const;

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

  // Delivers `msg` to handle_info of `to` after `delay` (urgent lane). Cancel with cancel_timer.
  template <message M>
  timer_ref send_after(std::chrono::steady_clock::duration delay, const pid& to, M msg) {
    return detail::start_timer(
        *impl_, delay, to,
        new detail::typed_envelope<M>(detail::envelope_kind::system_info, detail::current_self(),
                                      std::move(msg)));
  }
  // True if the timer was cancelled before it fired.
  bool cancel_timer(timer_ref ref);

  // Extension points for upper layers (registry, supervisor, cluster).
  // Called on the exiting process's thread for processes flagged with watch_exit().
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
  return detail::deliver(n.impl(), to,
                         new detail::typed_envelope<M>(detail::envelope_kind::cast,
                                                       detail::current_self(), std::move(msg)));
}
// A plain message: reaches handle_info.
template <message M>
result<void> send(node& n, const pid& to, M msg) {
  return detail::deliver(n.impl(), to,
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

}  // namespace otpp
