#include "otpp/resilience/timeout.hpp"

#include <mutex>
#include <vector>

#include "otpp/log.hpp"
#include "spin_lock.hpp"

namespace otpp::resilience {

struct timeout::core : std::enable_shared_from_this<core> {
  core(node& n, clock_type::duration l, asio::cancellation_type c)
      : owner(n), limit(l), slack(l + n.coarse_resolution()), cancel(c) {}
  ~core() {
    // Calls still listed when the last handle goes: their entries are released (not expired).
    for (entry* e = head; e;) {
      entry* next = e->next;
      e->prev = e->next = nullptr;
      auto keep = std::move(e->keep);
      e = next;
    }
  }

  // With the lock held: unlinks `e`; returns the list's reference for the caller to drop
  // unlocked.
  std::shared_ptr<entry> unlink_locked(entry& e) {
    if (!e.keep) return {};
    (e.prev ? e.prev->next : head) = e.next;
    (e.next ? e.next->prev : tail) = e.prev;
    e.prev = e.next = nullptr;
    --count;
    return std::move(e.keep);
  }

  void arm(clock_type::duration after) {
    std::weak_ptr<core> weak = shared_from_this();
    owner.run_after(after, [weak] {
      if (auto c = weak.lock()) c->fire();
    });
  }

  // The timer: expires the calls now due, then re-arms for the oldest left.
  void fire() {
    std::vector<std::shared_ptr<entry>> expired;
    std::optional<clock_type::duration> again;
    {
      std::lock_guard lock(mutex);
      const auto now = owner.now();
      while (head && head->due <= now) expired.push_back(unlink_locked(*head));
      armed = head != nullptr;
      if (armed) again = head->due - now;
    }
    for (auto& e : expired) {
      if (e->state.exchange(done) == done) continue;
      log(log_level::debug, "resilience", "timeout: no result within ",
          std::chrono::duration_cast<std::chrono::milliseconds>(limit).count(), "ms");
      e->expire(cancel, limit);
    }
    if (again) arm(*again);
  }

  node& owner;
  const clock_type::duration limit;
  const clock_type::duration slack;  // limit + the coarse clock's resolution
  const asio::cancellation_type cancel;
  mutable detail::spin_lock mutex;  // held for a few instructions per call
  entry* head = nullptr;            // calls in flight, oldest (first due) first
  entry* tail = nullptr;
  std::size_t count = 0;
  bool armed = false;  // a node timer is pending for this policy
};

timeout::timeout(node& n, clock_type::duration limit, asio::cancellation_type cancel)
    : core_(std::make_shared<core>(n, limit, cancel)) {}

clock_type::duration timeout::limit() const noexcept {
  return core_->limit;
}

std::size_t timeout::in_flight() const {
  std::lock_guard lock(core_->mutex);
  return core_->count;
}

void timeout::start(std::shared_ptr<entry> e) const {
  auto& c = *core_;
  if (e->state.load(std::memory_order_acquire) == done) return;  // completed at once
  bool arm = false;
  {
    std::lock_guard lock(c.mutex);
    // Read under the lock: entries are listed in deadline order. The coarse clock plus its
    // resolution: never earlier than the precise deadline, at most one tick later.
    e->due = c.owner.coarse_now() + c.slack;
    std::uint8_t expected = starting;
    // Completed since the look above: nothing to watch. Listing and this exchange happen
    // under the lock, so the timer only ever finds listed entries.
    if (!e->state.compare_exchange_strong(expected, listed)) return;
    e->prev = c.tail;
    (c.tail ? c.tail->next : c.head) = e.get();
    c.tail = e.get();
    auto* listed_entry = e.get();
    listed_entry->keep = std::move(e);
    ++c.count;
    arm = !c.armed;
    c.armed = true;
  }
  if (arm) c.arm(c.slack);
}

bool timeout::finish(entry& e) const {
  const auto was = e.state.exchange(done, std::memory_order_acq_rel);
  if (was == done) return false;  // expired first
  if (was == listed) {
    std::shared_ptr<entry> keep;
    std::lock_guard lock(core_->mutex);
    keep = core_->unlink_locked(e);
  }
  return true;
}

}  // namespace otpp::resilience
