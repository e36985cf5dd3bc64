// Private: the node's process table, scheduler and timers.
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
#include <asio/steady_timer.hpp>

#include "otpp/node.hpp"

namespace otpp::detail {

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
  exit_reason stop_reason;
  std::chrono::milliseconds idle_timeout{0};
  std::chrono::steady_clock::time_point last_active;
  std::unique_ptr<asio::steady_timer> idle_timer;
  bool idle_armed = false;
};

class node_impl {
 public:
  node_impl(node& owner, node_options o);
  ~node_impl();

  void start();
  void stop();
  void join();
  bool running() const { return state_.load() == state::running; }

  ref_ptr<process> find(const pid& p) const;
  bool is_local(const pid& p) const { return p.node() == atom_ && p.creation() == creation_; }
  result<void> deliver(const pid& to, message_envelope* e);
  // Signals (urgent lane). Returns false if `to` is not a live local process.
  bool signal(const pid& to, envelope* e);
  // Pushes onto `p`'s inbox and schedules it on the idle edge; false if it has ended.
  bool enqueue(process& p, envelope* e);
  void schedule(process* p);
  void note_send();  // a send from the current turn (see schedule)
  // The scheduled unit of work: runs `p` unless another copy of this wake-up already did.
  static auto run_op(process* p, std::uint32_t epoch) {
    return [p, epoch] {
      auto expected = epoch;
      if (p->sched_epoch_.compare_exchange_strong(expected, epoch + 1, std::memory_order_acq_rel)) {
        p->run();
      }
      p->release();
    };
  }
  pid new_pid() {
    return pid(atom_, creation_, next_serial_.fetch_add(1, std::memory_order_relaxed));
  }
  std::uint64_t new_ref() { return next_ref_.fetch_add(1, std::memory_order_relaxed); }
  result<pid> start_process(process* p, const spawn_options& o);
  void publish(process* p);
  void unpublish(const pid& p);
  void process_exited(process& p, const exit_reason& reason);
  // Remembers a call made by `self` so its continuation is dropped if `self` ends first.
  static void track_call(process& self, const ref_ptr<call_state_base>& state);
  timer_ref start_timer(std::chrono::steady_clock::duration d, const pid& to, message_envelope* e);
  bool cancel_timer(timer_ref ref);

  // Call timeouts without an asio timer per call (that cost a timerfd syscall and a reactor
  // wake-up per call): calls with the same timeout expire in the order they started, so each
  // timeout value keeps a FIFO list, and one asio timer is armed at the earliest head. A reply
  // unlinks its entry in O(1); the timer is re-armed only when an earlier deadline appears.
  void arm_deadline(call_state_base* s, std::chrono::milliseconds timeout);
  void forget_deadline(call_state_base* s);

  node& owner;

 private:
  std::size_t thread_count_;  // before ctx: its concurrency hint

 public:
  asio::io_context ctx;
  std::string name;
  node_atom atom_;
  std::uint32_t creation_;
  std::mutex hooks_mutex;
  std::vector<node::exit_listener> exit_listeners;
  std::vector<std::function<void()>> stop_hooks;

 private:
  enum class state { idle, running, stopping, stopped };
  void worker();

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

  std::atomic<state> state_{state::idle};
  mutable std::array<shard, shard_count> shards_;
  std::atomic<std::uint64_t> next_serial_{1};
  std::atomic<std::uint64_t> next_ref_{1};
  std::atomic<std::size_t> live_{0};
  std::mutex life_mutex_;
  std::condition_variable life_cv_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::vector<std::thread> threads_;
  std::mutex threads_mutex_;

  struct timer_entry {
    asio::steady_timer timer;
    pid to;
    std::unique_ptr<message_envelope> message;
    explicit timer_entry(asio::io_context& c) : timer(c) {}
  };
  struct deadline_bucket {
    std::chrono::milliseconds timeout;
    call_state_base* head = nullptr;
    call_state_base* tail = nullptr;
  };
  void on_deadline(const std::error_code& ec);
  void rearm_deadline_locked();
  std::mutex deadline_mutex_;
  std::vector<std::unique_ptr<deadline_bucket>> deadline_buckets_;
  std::optional<asio::steady_timer> deadline_timer_;
  std::chrono::steady_clock::time_point deadline_armed_ =
      std::chrono::steady_clock::time_point::max();

  std::mutex timers_mutex_;
  std::unordered_map<std::uint64_t, std::shared_ptr<timer_entry>> timers_;

  friend class otpp::node;
};

void new_turn() noexcept;  // a process turn starts or ends on this thread

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
