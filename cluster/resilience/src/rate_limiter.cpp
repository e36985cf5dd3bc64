#include "otpp/resilience/rate_limiter.hpp"

#include <algorithm>

#include "otpp/log.hpp"
#include "otpp/resilience/listeners.hpp"

namespace otpp::resilience {

struct rate_limiter::core {
  core(node& n, rate_limiter_options o) : owner(n), options(std::move(o)) {
    options.capacity = std::max<std::size_t>(options.capacity, 1);
    options.refill = std::max<std::size_t>(options.refill, 1);
    if (options.refill_period <= clock_type::duration::zero())
      options.refill_period = std::chrono::milliseconds(1);
    tokens = static_cast<std::int64_t>(options.capacity);
    last_refill = owner.now();
  }
  // Adds the permits of the periods passed since last_refill. Negative tokens are permits
  // reserved by waiters.
  void refill_to(time_point now) {
    if (now < last_refill + options.refill_period) return;
    const auto periods = (now - last_refill) / options.refill_period;
    last_refill += periods * options.refill_period;
    const auto cap = static_cast<std::int64_t>(options.capacity);
    // Periods past (cap - tokens) add nothing more: bounded, so the product cannot overflow.
    const auto useful = std::min<std::int64_t>(periods, cap - tokens);
    tokens = std::min(cap, tokens + static_cast<std::int64_t>(options.refill) * useful);
  }
  node& owner;
  rate_limiter_options options;
  mutable std::mutex mutex;
  std::int64_t tokens = 0;
  time_point last_refill;
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
  const auto now = c.owner.now();
  std::lock_guard lock(c.mutex);
  c.refill_to(now);
  return c.tokens > 0 ? static_cast<std::size_t>(c.tokens) : 0;
}

void rate_limiter::add_refusal_listener(std::function<void(const failure&)> f) const {
  core_->refusals.add(std::move(f));
}

result<clock_type::duration> rate_limiter::acquire() const {
  auto& c = *core_;
  const auto now = c.owner.now();
  clock_type::duration wait{};
  {
    std::lock_guard lock(c.mutex);
    c.refill_to(now);
    if (c.tokens > 0) {
      --c.tokens;
      return clock_type::duration::zero();
    }
    // The permit this call would get: the (1 - tokens)th still to come, `refill` per period.
    const auto refill = static_cast<std::int64_t>(c.options.refill);
    const auto periods = (1 - c.tokens + refill - 1) / refill;
    wait = c.last_refill + periods * c.options.refill_period - now;
    if (wait <= c.options.max_wait && c.options.max_wait > clock_type::duration::zero()) {
      --c.tokens;
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
