// A lock for sections of a few instructions on a per-call path (a timeout's list of calls in
// flight): an uncontended lock and unlock are one atomic exchange and one store, against a
// mutex's library calls. A waiter spins briefly, then yields its thread.
#pragma once

#include <atomic>
#include <thread>

namespace otpp::resilience::detail {

class spin_lock {
 public:
  void lock() noexcept {
    for (int spins = 0; locked_.exchange(true, std::memory_order_acquire); ++spins) {
      while (locked_.load(std::memory_order_relaxed)) {
        if (++spins > 64) {
          std::this_thread::yield();
          spins = 0;
        }
      }
    }
  }
  void unlock() noexcept { locked_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> locked_{false};
};

}  // namespace otpp::resilience::detail
