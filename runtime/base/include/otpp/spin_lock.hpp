// A lock for sections of a few instructions on a hot path (a connection's send queue, a
// timeout's list of calls in flight): an uncontended lock and unlock are one atomic exchange
// and one plain store, against a mutex's library calls, and the release does not wait for
// the section's stores to reach the cache (a mutex's release is an atomic exchange, which on
// x86 does). A waiter spins briefly, then yields its thread (the holder may be preempted).
#pragma once

#include <atomic>
#include <thread>

namespace otpp {

class spin_lock {
 public:
  void lock() noexcept {
    for (int spins = 0; locked_.exchange(true, std::memory_order_acquire); ++spins) {
      while (locked_.load(std::memory_order_relaxed)) {
        if (++spins > 64) {
          std::this_thread::yield();
          spins = 0;
        } else {
          relax();
        }
      }
    }
  }
  void unlock() noexcept { locked_.store(false, std::memory_order_release); }

 private:
  static void relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
  std::atomic<bool> locked_{false};
};

}  // namespace otpp
