// The time a node reads: call timeouts, send_after, idle timeouts and every upper layer's
// timers (membership, downing, retries) go through it. Real nodes read steady_clock; tests
// give several nodes one manual_clock and step it, so timer logic runs deterministically
// without sleeping.
#pragma once

#include <chrono>
#include <mutex>
#include <vector>

namespace otpp {

using clock_type = std::chrono::steady_clock;
using time_point = clock_type::time_point;

// Virtual time: stands still until advance(). advance() fires every timer now due on every
// node that reads this clock, on the calling thread (their work is queued to the nodes, which
// then run it on their threads or in their poll()).
class manual_clock final {
 public:
  // Something that keeps timers against this clock (a node's timer service).
  class listener {
   public:
    virtual void on_time_advanced() = 0;

   protected:
    ~listener() = default;
  };

  explicit manual_clock(time_point start = time_point{} + std::chrono::hours(1)) : now_(start) {}

  time_point now() const noexcept {
    std::lock_guard lock(mutex_);
    return now_;
  }
  void advance(clock_type::duration d) {
    // Held while listeners run, so a node detaching (being destroyed) waits for them.
    std::lock_guard advancing(advance_mutex_);
    std::vector<listener*> to_tell;
    {
      std::lock_guard lock(mutex_);
      now_ += d;
      to_tell = listeners_;
    }
    for (auto* l : to_tell) l->on_time_advanced();
  }
  void attach(listener* l) {
    std::lock_guard lock(mutex_);
    listeners_.push_back(l);
  }
  void detach(listener* l) {
    std::lock_guard advancing(advance_mutex_);
    std::lock_guard lock(mutex_);
    std::erase(listeners_, l);
  }

 private:
  std::mutex advance_mutex_;
  mutable std::mutex mutex_;
  time_point now_;
  std::vector<listener*> listeners_;
};

}  // namespace otpp
