// Listeners a policy takes after construction (metrics: otpp::health::observe). Events are
// rare (a retry, a transition, a refusal); with no listener the event path pays one load.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

namespace otpp::resilience::detail {

template <class... Args>
class listener_list {
 public:
  void add(std::function<void(Args...)> f) {
    std::lock_guard lock(mutex_);
    auto next = list_ ? std::make_shared<list>(*list_) : std::make_shared<list>();
    next->push_back(std::move(f));
    list_ = std::move(next);
    any_.store(true, std::memory_order_release);
  }
  // Whether a listener was added: lets a caller skip building an event nobody hears.
  bool any() const noexcept { return any_.load(std::memory_order_acquire); }
  // Runs every listener on this thread, unlocked (a listener may add another).
  void operator()(const Args&... args) const {
    if (!any_.load(std::memory_order_acquire)) return;
    std::shared_ptr<const list> now;
    {
      std::lock_guard lock(mutex_);
      now = list_;
    }
    for (const auto& f : *now) f(args...);
  }

 private:
  using list = std::vector<std::function<void(Args...)>>;
  mutable std::mutex mutex_;
  std::shared_ptr<const list> list_;
  std::atomic<bool> any_{false};
};

}  // namespace otpp::resilience::detail
