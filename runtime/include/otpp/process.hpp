// The process: one mailbox, one handler at a time, its own identity, links and monitors.
// Behaviours (gen_server) derive from it. A process is its own strand: the inbox's state bit
// serialises its turns on the node's thread pool (an asio::strand would add a second queue and
// a lock per message on top of the mailbox we need anyway).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <typeinfo>
#include <vector>

#include <asio/any_io_executor.hpp>
#include <asio/execution.hpp>
#include <asio/execution_context.hpp>

#include "otpp/clock.hpp"
#include "otpp/detail/envelope.hpp"
#include "otpp/detail/intrusive.hpp"
#include "otpp/detail/mailbox.hpp"
#include "otpp/message.hpp"
#include "otpp/pid.hpp"
#include "otpp/result.hpp"

namespace otpp {

class node;
class process;
namespace detail {
class node_impl;
struct process_extras;

const exit_reason* ending_reason(process* p);
}  // namespace detail

struct spawn_options {
  bool link = false;              // link to the spawning process (if spawned from one)
  bool trap_exit = false;         // start trapping exits
  std::size_t mailbox_bound = 0;  // 0: unbounded; else sends over the bound fail with mailbox_full
  std::chrono::milliseconds idle_timeout{0};  // 0: none; else handle_info(idle_timeout{})
  // Runs once the pid exists (the process is reachable) and before init, on the spawner's
  // thread. A failure aborts the spawn: init never runs, and spawn answers that failure. This
  // is how a named start is atomic (the registry's spawn_named).
  std::function<result<void>(const pid&)> before_init{};
  // Runs init as the process's own first turn instead of on the spawner's thread (Erlang's
  // proc_lib start): spawn returns the pid at once, and `after_init` (if set) is called exactly
  // once on the process's thread with init's outcome (or the reason it never ran: killed
  // first, node stopped) before the process handles anything else. A failing init ends the
  // process with that reason (a linked spawner gets its EXIT). For remote spawns, and for
  // starts that must not hold the spawner.
  bool async_init = false;
  std::function<void(const pid&, const result<void>&)> after_init{};
  // With async_init: init waits until `init_gate` calls `release` (once, from any thread),
  // for a start that needs an answer from elsewhere first (a global name claimed before init
  // runs, as Erlang's gen_server:start({global, Name})). Until then the process exists and
  // takes signals (it can be killed) but no message. release(failure) ends it without init,
  // and after_init hears that failure as it is. `release` must not outlive the node (keep it
  // in a node_service).
  std::function<void(const pid&, std::function<void(result<void>)> release)> init_gate{};
  // What the process is, for introspection (node::processes): remote spawns put the
  // behaviour's name here.
  std::string label{};
};

class process : public detail::ref_counted {
 public:
  class executor_type;

  pid self() const noexcept { return self_; }
  otpp::node& this_node() const noexcept;

  // --- inside the process's own handlers only ---
  void trap_exit(bool on) noexcept { trap_exit_ = on; }
  bool trapping_exits() const noexcept { return trap_exit_; }
  // Bidirectional exit propagation. Linking to a dead process delivers an exit signal noproc.
  void link(const pid& other);
  void unlink(const pid& other);
  // One-way: a `down` message arrives when `other` ends (at once with noproc if it is dead).
  monitor_ref monitor(const pid& other);
  // Removes the monitor and drops a `down` for it that may already be queued.
  void demonitor(monitor_ref ref);
  // End this process with `reason` once the current handler returns; terminate() runs.
  void stop(exit_reason reason = exit_reason::normal());
  // Erlang's spawn_link / spawn_monitor from inside a handler: the link or monitor is in place
  // before the child's init runs (a child whose init fails still reports to us).
  template <class Server, class... Args>
  result<pid> spawn_link(Args&&... args);
  template <class Server, class... Args>
  result<std::pair<pid, monitor_ref>> spawn_monitor(Args&&... args);
  // Executor of this process: work posted to it runs on the process, one at a time.
  executor_type get_executor() noexcept;

 protected:
  process();  // out of line: process_extras is incomplete here
  ~process() override;

  // Behaviour hooks (implemented by gen_server).
  virtual result<void> do_init() { return {}; }
  virtual void dispatch(detail::message_envelope& m) = 0;
  virtual void do_terminate(const exit_reason&) {}

  // Coroutine handlers: the process takes no user message until `done` ran.
  void mark_suspended(bool on) noexcept { suspended_ = on; }
  // Queues `e` ahead of every message (from init only: handle_continue).
  void run_first(detail::envelope* e);
  // Ends the process from inside its own turn (handler exceptions, coroutine failures).
  void fail(exit_reason reason, std::string_view where = "coroutine handler");
  // A call this process took but has not answered yet (deferred or coroutine): answered with
  // exit and the exit reason if the process ends first.
  void hold_inbound(detail::ref_ptr<detail::call_state_base> state);

 private:
  friend class detail::node_impl;
  friend struct detail::process_extras;
  friend class otpp::node;
  friend class executor_type;
  friend const exit_reason* detail::ending_reason(process* p);

  // Called by the node's scheduler on a worker thread.
  void run();
  void handle_signal(detail::envelope* e);
  bool accept_system_info(detail::envelope* e);
  void exit_now(exit_reason reason, bool call_terminate);
  void fetch();
  void arm_idle_timer();
  void on_idle_timer();
  result<void> run_init();  // init, ending the process if it fails (then init_failed + why)
  void run_async_init();
  void release_init(result<void> gate);
  detail::process_extras& extras();

  detail::node_impl* node_ = nullptr;
  pid self_;
  detail::inbox inbox_;
  // Messages (cast, info, call, and the runtime's down / EXIT / timer messages) in arrival
  // order: a DOWN never overtakes a message its process sent before exiting.
  detail::envelope_fifo user_;
  // Introspection (node::processes): written only by the process's own thread, as relaxed
  // stores next to user_ (a cache line the message path writes anyway, no read-modify-write),
  // read by anyone.
  std::atomic<std::uint32_t> backlog_{0};
  std::atomic<std::uint64_t> handled_{0};
  detail::envelope_fifo urgent_;          // signals and tasks
  std::atomic<std::uint32_t> queued_{0};  // user messages queued (bounded mailboxes only)
  std::uint32_t bound_ = 0;
  bool trap_exit_ = false;
  bool suspended_ = false;
  bool dead_ = false;
  bool stop_requested_ = false;
  bool idle_armed_ = false;
  // Tells the node's exit listeners (registry names) when this process exits.
  std::atomic<bool> watched_{false};
  // Counts runs: a wake-up runs the process only if the epoch it saw is still current, so a
  // wake-up queued twice (deferred and posted) runs once.
  std::atomic<std::uint32_t> sched_epoch_{0};
  std::unique_ptr<detail::process_extras> extras_;  // links, monitors, timers: often empty

  // Introspection (node::processes), fixed before the process is published.
  const std::type_info* type_ = nullptr;
  std::size_t object_size_ = 0;
  std::string label_;
  time_point started_{};
};

// Asio executor that runs work on a process. Work reaching a dead process is dropped, which
// destroys a suspended coroutine frame without resuming it. It names the process by pid, not
// by a reference: an I/O object the process owns (a timer, a socket on its executor) holds
// this executor, and a reference would keep the process alive through its own member.
class process::executor_type {
 public:
  executor_type(detail::node_impl* n, pid p) : node_(n), pid_(p) {}
  asio::execution_context& query(asio::execution::context_t) const noexcept;
  static constexpr asio::execution::blocking_t query(asio::execution::blocking_t) noexcept {
    return asio::execution::blocking.never;
  }
  executor_type require(asio::execution::blocking_t::never_t) const { return *this; }
  template <class F>
  void execute(F f) const {
    post_task(new detail::task_envelope<F>(std::move(f)));
  }
  friend bool operator==(const executor_type& a, const executor_type& b) noexcept {
    return a.pid_ == b.pid_;
  }
  friend bool operator!=(const executor_type& a, const executor_type& b) noexcept {
    return !(a == b);
  }
  const pid& owner() const noexcept { return pid_; }

 private:
  void post_task(detail::task_envelope_base* task) const;
  detail::node_impl* node_;
  pid pid_;
};

inline process::executor_type process::get_executor() noexcept {
  return executor_type(node_, self_);
}

// The process whose handler runs on this thread, or nullptr.
process* current_process() noexcept;

}  // namespace otpp
