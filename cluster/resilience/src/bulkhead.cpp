#include "otpp/resilience/bulkhead.hpp"

#include <algorithm>

#include "otpp/log.hpp"
#include "otpp/resilience/listeners.hpp"

namespace otpp::resilience {

struct bulkhead::core {
  core(node& n, bulkhead_options o) : owner(n), options(std::move(o)) {
    options.max_concurrent = std::max<std::size_t>(options.max_concurrent, 1);
  }
  struct waiter {
    std::uint64_t id;
    std::function<void(result<void>)> start;
    timer_ref timer;
  };
  node& owner;
  bulkhead_options options;
  mutable std::mutex mutex;
  std::size_t in_flight = 0;
  std::deque<waiter> queue;
  std::uint64_t next_id = 1;
  detail::listener_list<failure> refusals;

  // Runs `start` on the node's pool: never inline in the caller's or a finishing call's turn
  // (a chain of calls that complete at once would otherwise recurse through the queue).
  void run_later(std::function<void(result<void>)> start, result<void> r) {
    asio::post(owner.context(), [start = std::move(start), r = std::move(r)] { start(r); });
  }
};

bulkhead::bulkhead(node& n, bulkhead_options o) : core_(std::make_shared<core>(n, std::move(o))) {}

node& bulkhead::owner() const {
  return core_->owner;
}
const bulkhead_options& bulkhead::options() const noexcept {
  return core_->options;
}
std::size_t bulkhead::in_flight() const {
  std::lock_guard lock(core_->mutex);
  return core_->in_flight;
}
std::size_t bulkhead::waiting() const {
  std::lock_guard lock(core_->mutex);
  return core_->queue.size();
}

void bulkhead::add_refusal_listener(std::function<void(const failure&)> f) const {
  core_->refusals.add(std::move(f));
}

bool bulkhead::try_enter() const {
  std::lock_guard lock(core_->mutex);
  // Waiters go first: a newcomer does not overtake the queue.
  if (core_->in_flight >= core_->options.max_concurrent || !core_->queue.empty()) return false;
  ++core_->in_flight;
  return true;
}

void bulkhead::enqueue(std::function<void(result<void>)> start) const {
  auto& c = *core_;
  std::unique_lock lock(c.mutex);
  if (c.in_flight < c.options.max_concurrent && c.queue.empty()) {  // freed meanwhile
    ++c.in_flight;
    lock.unlock();
    c.run_later(std::move(start), {});
    return;
  }
  if (c.queue.size() >= c.options.max_queue) {
    lock.unlock();
    log(log_level::debug, "resilience", "bulkhead '", c.options.name, "' full: call refused");
    failure full(errc::bulkhead_full, "bulkhead '" + c.options.name +
                                          "': " + std::to_string(c.options.max_concurrent) +
                                          " calls in flight, wait queue full");
    c.refusals(full);
    c.run_later(std::move(start), std::move(full));
    return;
  }
  const auto id = c.next_id++;
  c.queue.push_back({id, std::move(start), {}});
  lock.unlock();
  // Armed unlocked (the timer service has its own lock, taken before ours when it fires). The
  // timer holds the core weakly: a bulkhead destroyed with waiters drops them.
  std::weak_ptr<core> weak = core_;
  auto timer = c.owner.run_after(c.options.max_wait, [weak, id] {
    auto c = weak.lock();
    if (!c) return;
    std::function<void(result<void>)> expired;
    {
      std::lock_guard lock(c->mutex);
      auto it = std::find_if(c->queue.begin(), c->queue.end(),
                             [id](const core::waiter& w) { return w.id == id; });
      if (it == c->queue.end()) return;  // entered meanwhile
      expired = std::move(it->start);
      c->queue.erase(it);
    }
    const auto waited =
        std::chrono::duration_cast<std::chrono::milliseconds>(c->options.max_wait).count();
    log(log_level::debug, "resilience", "bulkhead '", c->options.name, "': wait timed out");
    failure late(errc::bulkhead_full, "bulkhead '" + c->options.name + "': waited " +
                                          std::to_string(waited) + "ms for a free slot");
    c->refusals(late);
    expired(std::move(late));
  });
  lock.lock();
  auto it = std::find_if(c.queue.rbegin(), c.queue.rend(),
                         [id](const core::waiter& w) { return w.id == id; });
  if (it != c.queue.rend()) it->timer = timer;
}

void bulkhead::leave() const {
  auto& c = *core_;
  std::unique_lock lock(c.mutex);
  if (c.queue.empty()) {
    --c.in_flight;
    return;
  }
  // The slot passes straight to the first waiter (in_flight unchanged).
  auto next = std::move(c.queue.front());
  c.queue.pop_front();
  lock.unlock();
  c.owner.cancel_timer(next.timer);
  c.run_later(std::move(next.start), {});
}

}  // namespace otpp::resilience
