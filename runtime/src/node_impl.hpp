// Private: the node's process table, scheduler, routing, calls, timers and services. Each part
// has its own source file (scheduler.cpp, routing.cpp, calls.cpp, timers.cpp, node.cpp).
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>

#include "otpp/node.hpp"
#include "otpp/node_counters.hpp"
#include "otpp/router.hpp"
#include "timers.hpp"

namespace otpp::detail {

struct worker_slot;

// Per-process state that most processes never use: allocated on first need.
struct process_extras {
  std::vector<pid> links;
  struct watcher {
    monitor_ref ref;
    pid who;
  };
  std::vector<watcher> monitored_by;                                    // who monitors me
  std::vector<std::function<void(const exit_reason&)>> exit_callbacks;  // watch_process
  struct watched {
    monitor_ref ref;
    pid target;
  };
  std::vector<watched> monitors;                      // whom I monitor
  std::vector<ref_ptr<call_state_base>> outstanding;  // my calls in flight
  std::vector<ref_ptr<call_state_base>> inbound;      // calls to me not answered yet
  std::optional<exit_reason> reason;                  // set once the process is ending
  // spawn_options::after_init of an async init not yet reported (see run_async_init).
  std::function<void(const pid&, const result<void>&)> after_init;
  exit_reason stop_reason;
  clock_type::duration idle_timeout{0};
  time_point last_active{};
  // Idle timeout: one timer entry, re-armed when it fires early (activity since it was armed).
  struct idle_timer final : timer_entry {
    process* owner = nullptr;
    void expire() override;
    void discard() override;
  };
  idle_timer idle;
};

class node_impl {
 public:
  node_impl(node& owner, node_options o);
  ~node_impl();

  // ---- lifecycle (node.cpp)
  void start();
  void stop();
  void join();
  bool running() const { return state_.load() == state::running; }
  bool stopping() const {
    auto s = state_.load();
    return s == state::stopping || s == state::stopped;
  }
  bool started() const { return state_.load() != state::idle; }
  bool manual() const noexcept { return manual_; }
  std::size_t poll();  // manual scheduler: runs ready work on this thread

  node& owner() noexcept { return owner_; }
  asio::io_context& context() noexcept { return ctx_; }
  const std::string& name() const noexcept { return name_; }
  node_atom atom() const noexcept { return atom_; }
  std::uint32_t creation() const noexcept { return creation_; }
  std::size_t live() const noexcept { return live_.load(); }

  // ---- process table (node.cpp)
  ref_ptr<process> find(const pid& p) const;
  // Every published process, under each shard's lock in turn (keep `f` short).
  template <class F>
  void for_each_process(F&& f) const {
    for (auto& s : shards_) {
      std::lock_guard lock(s.mutex);
      for (const auto& [serial, p] : s.table) f(p);
    }
  }
  process_info info_of(const process& p) const;
  node_counters counters() const;  // node_counters.hpp
  bool is_local(const pid& p) const { return p.node() == atom_ && p.creation() == creation_; }
  pid new_pid() {
    return pid(atom_, creation_, next_serial_.fetch_add(1, std::memory_order_relaxed));
  }
  std::uint64_t new_ref() { return next_ref_.fetch_add(1, std::memory_order_relaxed); }
  result<pid> start_process(process* p, const spawn_options& o);
  void unpublish(const pid& p);
  void process_exited();  // the live count drops (join waits for zero)
  void notify_exit_listeners(const pid& p, const exit_reason& reason);
  void add_exit_listener(node::exit_listener l);
  // watch_process: nullopt once the callback is registered with a live local process; else
  // the callback is handed back (the caller answers noproc).
  std::optional<std::function<void(const exit_reason&)>> watch(
      const pid& p, std::function<void(const exit_reason&)> on_exit);
  void add_stop_hook(std::function<void()> hook);

  // ---- routing: the one door every envelope leaving a process goes through (routing.cpp)
  enum class outcome { delivered, dead, refused };
  // Delivers `e` to a local inbox, or forwards it through the router (then frees it). On
  // `dead` or `refused` (bounded mailbox full, router failure: `why` says which) the caller
  // still owns `e`. route() and send_signal() below are the owning wrappers.
  outcome dispatch(const pid& to, envelope* e, failure* why = nullptr);
  // Messages: takes ownership; a call that cannot be delivered is answered at once.
  result<void> route(const pid& to, message_envelope* e);
  // Signals: takes ownership; false if `to` is dead or unreachable.
  bool send_signal(const pid& to, envelope* e);
  bool send_signal(envelope_kind k, const pid& from, const pid& to, exit_reason reason = {},
                   monitor_ref ref = {}, bool from_link = false);
  void set_router(otpp::router* r) { router_.store(r, std::memory_order_release); }
  otpp::router* router() const { return router_.load(std::memory_order_acquire); }

  // ---- scheduler (scheduler.cpp)
  // Pushes onto `p`'s inbox and schedules it on the idle edge; false if it has ended.
  bool enqueue(process& p, envelope* e);
  void schedule(process* p);

  // ---- calls (calls.cpp)
  void start_call(const pid& to, call_state_base* state, message_envelope* request,
                  std::chrono::milliseconds timeout);
  // A completed call leaves the timer service and the pending-remote table.
  void call_finished(call_state_base* s);
  void count_call(const failure* outcome) noexcept;  // node_counters::calls; null: success
  // The remote call gate (router.hpp): admission before the request leaves, and the outcome.
  result<void> admit_remote_call(call_state_base* s, const pid& to);
  void report_outcome(call_state_base* s, const failure* outcome);
  void set_gate(std::shared_ptr<remote_call_gate> g);
  // Remembers a call made by `self` so its continuation is dropped if `self` ends first.
  static void track_call(process& self, const ref_ptr<call_state_base>& state);
  result<void> complete_remote_call(std::uint64_t call_id, result<msgpack::object_handle> reply,
                                    std::optional<node_atom> from = std::nullopt);
  // Fails the calls waiting on `peer` (every remote call: nullopt) with `why`; returns how many.
  std::size_t fail_remote_calls(std::optional<node_atom> peer, const failure& why);
  std::size_t pending_remote_calls(std::optional<node_atom> peer) const;  // nullopt: all

  // ---- timers (timers.cpp / node.cpp)
  timer_service& timers() noexcept { return timers_; }
  time_point now() const noexcept { return timers_.now(); }
  timer_ref start_timer(clock_type::duration d, const pid& to, message_envelope* e);
  bool cancel_timer(timer_ref ref);

  // ---- services (node.cpp)
  node_service& service(std::size_t index, node_service* (*make)(node&));

 private:
  enum class state { idle, running, stopping, stopped };
  void worker(worker_slot* slot);
  void run_worker_loop(worker_slot* slot);
  bool spin_for_work();
  void steal_stale_deferred(std::vector<std::pair<std::uint64_t, std::uint64_t>>& seen);
  struct wake_up;
  void post_run(process* p, std::uint32_t epoch);
  void hand_over_watch();
  void start_threads_locked();
  void register_remote_call(call_state_base* s, const pid& to);
  outcome dispatch_local(const pid& to, envelope* e, failure* why);
  result<void> route_failed(const pid& to, message_envelope* e, outcome out, failure why);
  outcome dispatch_remote(const pid& to, envelope* e, failure* why);

  node& owner_;
  std::size_t thread_count_;  // before ctx_: its concurrency hint
  bool manual_;
  std::chrono::microseconds idle_spin_;
  asio::io_context ctx_;
  std::string name_;
  node_atom atom_;
  std::uint32_t creation_;
  timer_service timers_;
  std::atomic<otpp::router*> router_{nullptr};

  std::mutex hooks_mutex_;
  std::vector<node::exit_listener> exit_listeners_;
  std::vector<std::function<void()>> stop_hooks_;

  static constexpr std::size_t shard_count = 32;
  // Shard lock for the process table: the critical sections are one hash lookup, so a
  // spinning test-and-set lock (no syscall, one atomic each way) beats a pthread mutex.
  class spin_lock {
   public:
    void lock() noexcept {
      for (int spins = 0; flag_.exchange(true, std::memory_order_acquire);) {
        while (flag_.load(std::memory_order_relaxed)) {
          // The holder may have been preempted: after a short spin, give the CPU away.
          if (++spins > 64) {
            std::this_thread::yield();
          } else {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
          }
        }
      }
    }
    void unlock() noexcept {
      flag_.store(false, std::memory_order_release);
    }

   private:
    std::atomic<bool> flag_{false};
  };
  struct shard {
    mutable spin_lock mutex;
    std::unordered_map<std::uint64_t, ref_ptr<process>> table;
  };
  shard& shard_of(std::uint64_t serial) const {
    return shards_[serial % shard_count];
  }
  void publish(process* p);

  std::atomic<state> state_{state::idle};
  mutable std::array<shard, shard_count> shards_;
  std::atomic<std::uint64_t> next_serial_{1};
  std::atomic<std::uint64_t> next_ref_{1};
  std::atomic<std::size_t> live_{0};
  // Monitoring (node_counters.hpp): next to live_, which the same events touch.
  std::atomic<std::uint64_t> spawned_{0}, exited_{0}, retired_handled_{0};
  // Calls completed, by outcome (node_counters::calls): one relaxed add per call, striped by
  // thread so that callers on different threads do not write one cache line.
  struct alignas(64) call_outcome_stripe {
    std::array<std::atomic<std::uint64_t>, node_counters::other_outcome + 1> by_outcome{};
  };
  std::array<call_outcome_stripe, 4> call_outcomes_{};
  // The remote call gate (router.hpp); remote calls skip the lock while none is installed.
  std::atomic<bool> gate_set_{false};
  std::mutex gate_mutex_;
  std::shared_ptr<remote_call_gate> gate_;
  std::mutex life_mutex_;
  std::condition_variable life_cv_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::vector<std::thread> threads_;
  std::mutex threads_mutex_;
  // Scheduler: whether a worker is spinning for work, whether one naps as the watchman, and
  // each worker's deferred wake-up.
  std::atomic<bool> spinner_{false};
  std::atomic<bool> watchman_{false};
  std::atomic<int> sleepers_{0};
  std::vector<std::unique_ptr<worker_slot>> slots_;

  // Calls whose request left for another node, by call id: the reply finds them here.
  struct remote_call {
    ref_ptr<call_state_base> state;
    node_atom peer;
  };
  mutable std::mutex remote_calls_mutex_;
  std::unordered_map<std::uint64_t, remote_call> remote_calls_;

  static constexpr std::size_t max_services = 64;
  std::recursive_mutex services_mutex_;
  std::array<std::atomic<node_service*>, max_services> service_slots_{};
  std::vector<std::unique_ptr<node_service>> services_;  // creation order

  friend class otpp::node;
  friend class otpp::process;
};

void new_turn() noexcept;            // a process turn starts or ends on this thread
node_impl* current_node() noexcept;  // the node whose work runs on this thread, if any

// Marks this thread as running `n`'s work for a scope (workers, manual poll).
class node_scope {
 public:
  explicit node_scope(node_impl* n);
  ~node_scope();
  node_scope(const node_scope&) = delete;
  node_scope& operator=(const node_scope&) = delete;

 private:
  node_impl* saved_;
};

// Makes `p` the current process of this thread for a scope (init runs as the new process).
class process_scope {
 public:
  explicit process_scope(process* p);
  ~process_scope();
  process_scope(const process_scope&) = delete;
  process_scope& operator=(const process_scope&) = delete;

 private:
  process* saved_;
};

}  // namespace otpp::detail
