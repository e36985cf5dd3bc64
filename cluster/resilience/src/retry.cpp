#include "otpp/resilience/retry.hpp"

#include <algorithm>
#include <cmath>

#include "otpp/log.hpp"

namespace otpp::resilience {

retry::shared::shared(node& n, retry_options o)
    : owner(n),
      options(std::move(o)),
      random(options.seed ? options.seed : std::random_device{}()) {
  if (options.max_attempts < 1) options.max_attempts = 1;
  if (options.multiplier < 1.0) options.multiplier = 1.0;
  options.max_delay = std::max(options.max_delay, options.initial_delay);
}

retry::retry(node& n, retry_options o) : state_(std::make_shared<shared>(n, std::move(o))) {}

void retry::add_listener(std::function<void(const retry_event&)> f) const {
  state_->listeners.add(std::move(f));
}

clock_type::duration retry::backoff(int attempt, clock_type::duration previous) const {
  return detail::retry_backoff(state_->options, state_->random, state_->mutex, attempt, previous);
}

namespace detail {

void log_gave_up(int attempts, const failure& last) {
  log(log_level::debug, "resilience", "retry gave up after ", attempts,
      " attempts: ", last.message());
}

void log_cancelled(int attempts) {
  log(log_level::debug, "resilience", "retry cancelled while waiting after ", attempts,
      " attempts");
}

clock_type::duration retry_backoff(const retry_options& o, std::mt19937_64& random,
                                   std::mutex& mutex, int attempt, clock_type::duration previous) {
  using rep = clock_type::duration::rep;
  const rep cap = o.max_delay.count();
  const rep initial = o.initial_delay.count();
  auto uniform = [&](rep lo, rep hi) {
    if (hi <= lo) return lo;
    std::lock_guard lock(mutex);
    return std::uniform_int_distribution<rep>(lo, hi)(random);
  };
  if (o.jitter_kind == jitter::decorrelated) {
    rep prev = std::max(previous.count(), initial);
    rep hi = prev > cap / 3 ? cap : prev * 3;
    return clock_type::duration(std::min(cap, uniform(initial, hi)));
  }
  // initial * multiplier^(attempt-1), in floating point so a large attempt saturates at cap.
  double grown = static_cast<double>(initial) * std::pow(o.multiplier, attempt - 1);
  rep exp = grown >= static_cast<double>(cap) ? cap : static_cast<rep>(grown);
  if (o.jitter_kind == jitter::full) return clock_type::duration(uniform(0, exp));
  return clock_type::duration(exp);
}

}  // namespace detail
}  // namespace otpp::resilience
