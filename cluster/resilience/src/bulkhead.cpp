#include "otpp/resilience/bulkhead.hpp"

#include <algorithm>
#include <atomic>
#include <vector>

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
  // Calls holding a slot, and queued waiters: atomics, so a call that finds a free slot and
  // no queue enters and leaves without the lock. The queue itself is under the lock.
  // in_flight and waiters are seq_cst on both sides (a leaver decrements in_flight then reads
  // waiters; an enqueuer counts itself in waiters then reads in_flight), so one of them always
  // sees the other and a freed slot never sits idle beside a waiter.
  std::atomic<std::size_t> in_flight{0};
  std::atomic<std::size_t> waiters{0};
  mutable std::mutex mutex;
  std::deque<waiter> queue;
  std::uint64_t next_id = 1;
  detail::listener_list<failure> refusals;

  bool take_slot() {
    auto n = in_flight.load();
    while (n < options.max_concurrent)
      if (in_flight.compare_exchange_weak(n, n + 1)) return true;
    return false;
  }
  // With the lock held: gives free slots to the first waiters, in order. Returns the started
  // waiters for the caller to run unlocked.
  std::vector<waiter> admit_locked() {
    std::vector<waiter> admitted;
    while (!queue.empty() && take_slot()) {
      admitted.push_back(std::move(queue.front()));
      queue.pop_front();
      waiters.fetch_sub(1);
    }
    return admitted;
  }
  void start_admitted(std::vector<waiter> admitted) {
    for (auto& w : admitted) {
      owner.cancel_timer(w.timer);
      run_later(std::move(w.start), {});
    }
  }

  // leave's slow path, out of line: the fast path stays small.
  [[gnu::noinline]] void admit_waiters();

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
  return core_->in_flight.load();
}
std::size_t bulkhead::waiting() const {
  return core_->waiters.load();
}

void bulkhead::add_refusal_listener(std::function<void(const failure&)> f) const {
  core_->refusals.add(std::move(f));
}

bool bulkhead::try_enter() const {
  // Waiters go first: a newcomer does not overtake the queue.
  return core_->waiters.load() == 0 && core_->take_slot();
}

std::uint64_t bulkhead::enqueue(std::function<void(result<void>)> start) const {
  auto& c = *core_;
  std::unique_lock lock(c.mutex);
  if (c.queue.empty() && c.take_slot()) {  // freed meanwhile
    lock.unlock();
    c.run_later(std::move(start), {});
    return 0;
  }
  if (c.queue.size() >= c.options.max_queue) {
    lock.unlock();
    log(log_level::debug, "resilience", "bulkhead '", c.options.name, "' full: call refused");
    failure full(errc::bulkhead_full, "bulkhead '" + c.options.name +
                                          "': " + std::to_string(c.options.max_concurrent) +
                                          " calls in flight, wait queue full");
    c.refusals(full);
    c.run_later(std::move(start), std::move(full));
    return 0;
  }
  const auto id = c.next_id++;
  c.queue.push_back({id, std::move(start), {}});
  c.waiters.fetch_add(1);
  // A slot freed since the look above, by a leaver that saw no waiter yet: taken here.
  auto admitted = c.admit_locked();
  lock.unlock();
  c.start_admitted(std::move(admitted));
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
      c->waiters.fetch_sub(1);
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
  return id;
}

bool bulkhead::withdraw(std::uint64_t id) const {
  auto& c = *core_;
  std::function<void(result<void>)> cancelled;
  timer_ref timer;
  {
    std::lock_guard lock(c.mutex);
    auto it = std::find_if(c.queue.begin(), c.queue.end(),
                           [id](const core::waiter& w) { return w.id == id; });
    if (id == 0 || it == c.queue.end()) return false;  // entered, refused or timed out
    cancelled = std::move(it->start);
    timer = it->timer;
    c.queue.erase(it);
    c.waiters.fetch_sub(1);
  }
  c.owner.cancel_timer(timer);
  log(log_level::debug, "resilience", "bulkhead '", c.options.name, "': waiter cancelled");
  cancelled(failure(errc::operation_canceled, "bulkhead '" + c.options.name + "': wait cancelled"));
  return true;
}

void bulkhead::leave() const {
  auto& c = *core_;
  c.in_flight.fetch_sub(1);
  if (c.waiters.load() == 0) return;  // the common case: nobody waits, no lock
  c.admit_waiters();
}

void bulkhead::core::admit_waiters() {
  auto& c = *this;
  std::unique_lock lock(c.mutex);
  auto admitted = c.admit_locked();
  lock.unlock();
  c.start_admitted(std::move(admitted));
}

}  // namespace otpp::resilience
