#include "otpp/resilience/rate_limiter.hpp"

#include <algorithm>
#include <atomic>
#include <mutex>

#include "otpp/log.hpp"
#include "otpp/resilience/listeners.hpp"

namespace otpp::resilience {

struct rate_limiter::core {
  core(node& n, rate_limiter_options o) : owner(n), options(std::move(o)) {
    options.capacity = std::max<std::size_t>(options.capacity, 1);
    options.refill = std::max<std::size_t>(options.refill, 1);
    if (options.refill_period <= clock_type::duration::zero())
      options.refill_period = std::chrono::milliseconds(1);
    tokens.store(static_cast<std::int64_t>(options.capacity));
    last_refill.store(owner.now().time_since_epoch().count());
  }
  time_point refilled_at() const {
    return time_point(clock_type::duration(last_refill.load(std::memory_order_acquire)));
  }
  // A permit without the lock: only while no refill is due (the refill takes the lock) and
  // the bucket holds one.
  bool try_take(time_point now) {
    if (now >= refilled_at() + options.refill_period) return false;
    auto t = tokens.load(std::memory_order_relaxed);
    while (t > 0)
      if (tokens.compare_exchange_weak(t, t - 1, std::memory_order_acq_rel)) return true;
    return false;
  }
  // With the lock held: adds the permits of the periods passed since last_refill. Negative
  // tokens are permits reserved by waiters (only taken under the lock).
  void refill_to(time_point now) {
    const auto last = refilled_at();
    if (now < last + options.refill_period) return;
    const auto periods = (now - last) / options.refill_period;
    const auto cap = static_cast<std::int64_t>(options.capacity);
    auto t = tokens.load(std::memory_order_relaxed);
    for (;;) {
      // Periods past (cap - tokens) add nothing more: bounded, so the product cannot overflow.
      const auto useful = std::min<std::int64_t>(periods, std::max<std::int64_t>(cap - t, 0));
      const auto next = std::min(cap, t + static_cast<std::int64_t>(options.refill) * useful);
      if (next == t || tokens.compare_exchange_weak(t, next, std::memory_order_acq_rel)) break;
    }
    // After the tokens: a lock-free taker that sees the new time sees the new tokens.
    last_refill.store((last + periods * options.refill_period).time_since_epoch().count(),
                      std::memory_order_release);
  }
  // acquire's slow path, out of line: the fast path stays small.
  [[gnu::noinline]] result<clock_type::duration> acquire_locked(time_point now);

  node& owner;
  rate_limiter_options options;
  std::mutex mutex;  // refills and reservations
  std::atomic<std::int64_t> tokens{0};
  std::atomic<clock_type::duration::rep> last_refill{0};
  detail::listener_list<failure> refusals;
};

rate_limiter::rate_limiter(node& n, rate_limiter_options o)
    : core_(std::make_shared<core>(n, std::move(o))) {}

node& rate_limiter::owner() const {
  return core_->owner;
}
const rate_limiter_options& rate_limiter::options() const noexcept {
  return core_->options;
}

std::size_t rate_limiter::available() const {
  auto& c = *core_;
  const auto now = c.owner.coarse_now();
  std::lock_guard lock(c.mutex);
  c.refill_to(now);
  const auto t = c.tokens.load();
  return t > 0 ? static_cast<std::size_t>(t) : 0;
}

void rate_limiter::add_refusal_listener(std::function<void(const failure&)> f) const {
  core_->refusals.add(std::move(f));
}

result<clock_type::duration> rate_limiter::acquire() const {
  auto& c = *core_;
  // The coarse clock is never ahead of the precise one: a refill by it never comes early.
  auto now = c.owner.coarse_now();
  if (c.try_take(now)) return clock_type::duration::zero();  // the common case
  return c.acquire_locked(now);
}

result<clock_type::duration> rate_limiter::core::acquire_locked(time_point now) {
  auto& c = *this;
  clock_type::duration wait{};
  {
    std::lock_guard lock(c.mutex);
    c.refill_to(now);
    if (c.tokens.load() <= 0) {  // empty by the coarse clock: look again by the precise one
      now = c.owner.now();
      c.refill_to(now);
    }
    auto t = c.tokens.load();
    while (t > 0)
      if (c.tokens.compare_exchange_weak(t, t - 1)) return clock_type::duration::zero();
    // The permit this call would get: the (1 - tokens)th still to come, `refill` per period.
    // Tokens only go below zero under the lock, so t holds still here.
    const auto refill = static_cast<std::int64_t>(c.options.refill);
    const auto periods = (1 - t + refill - 1) / refill;
    wait = c.refilled_at() + periods * c.options.refill_period - now;
    if (wait <= c.options.max_wait && c.options.max_wait > clock_type::duration::zero()) {
      c.tokens.fetch_sub(1);
      return wait;
    }
  }
  log(log_level::debug, "resilience", "rate limiter '", c.options.name, "': call refused");
  failure refused(errc::rate_limited,
                  "rate limiter '" + c.options.name + "': next permit in " +
                      std::to_string(std::chrono::ceil<std::chrono::milliseconds>(wait).count()) +
                      "ms");
  c.refusals(refused);
  return refused;
}

}  // namespace otpp::resilience
