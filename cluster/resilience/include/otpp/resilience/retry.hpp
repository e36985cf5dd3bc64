// retry: runs an operation again after a failure worth retrying, with exponential backoff
// (capped, with full or decorrelated jitter) on the node's clock, within an overall deadline.
// Completes with the first success or the last failure, as it was.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>

#include "otpp/resilience/async.hpp"
#include "otpp/resilience/errors.hpp"
#include "otpp/resilience/listeners.hpp"

namespace otpp::resilience {

enum class jitter { none, full, decorrelated };

// One attempt's outcome (on_attempt): attempt counts from 1; error is empty on success;
// delay is the backoff before the next attempt when will_retry.
struct retry_event {
  int attempt = 0;
  failure error{};
  bool will_retry = false;
  clock_type::duration delay{};
};

struct retry_options {
  int max_attempts = 3;  // counting the first
  clock_type::duration initial_delay = std::chrono::milliseconds(100);
  double multiplier = 2.0;  // delay n = initial * multiplier^(n-1), capped at max_delay
  clock_type::duration max_delay = std::chrono::seconds(10);
  // none: the delay itself; full: uniform in [0, delay]; decorrelated (AWS): uniform in
  // [initial, 3 * previous delay], capped at max_delay.
  jitter jitter_kind = jitter::full;
  // No attempt starts later than this after the first (zero: no deadline); a backoff that
  // would end past it ends the retry with the last failure.
  clock_type::duration deadline{};
  std::function<bool(const failure&)> retry_on{};  // empty: is_transient
  std::function<void(const retry_event&)> on_attempt{};
  std::uint64_t seed = 0;  // jitter's random seed; 0: a random one
};

class retry {
 public:
  retry(node& n, retry_options o = {});

  // Runs op (see async.hpp) until it succeeds or the policy gives up; completes `token` with
  // void(result<T>). Backoff waits are node timers: no thread is blocked.
  template <class Op, class Token>
  auto execute(const Op& op, Token&& token) const;

  // The backoff after `attempt` (1: after the first) given the previous backoff.
  clock_type::duration backoff(int attempt, clock_type::duration previous) const;
  const retry_options& options() const noexcept { return state_->options; }
  // Another on_attempt, added later (metrics); runs after options().on_attempt.
  void add_listener(std::function<void(const retry_event&)> f) const;

 private:
  struct shared {
    shared(node& n, retry_options o);
    node& owner;
    retry_options options;
    mutable std::mutex mutex;  // the random engine
    mutable std::mt19937_64 random;
    detail::listener_list<retry_event> listeners;
  };
  template <class T, class Op, class Handler>
  struct run;
  std::shared_ptr<shared> state_;
};

namespace detail {
void log_gave_up(int attempts, const failure& last);
clock_type::duration retry_backoff(const retry_options& o, std::mt19937_64& random,
                                   std::mutex& mutex, int attempt, clock_type::duration previous);
}  // namespace detail

template <class T, class Op, class Handler>
struct retry::run : std::enable_shared_from_this<run<T, Op, Handler>> {
  run(std::shared_ptr<const shared> s, Op o, Handler h)
      : policy(std::move(s)),
        op(std::move(o)),
        handler(std::move(h)),
        started(policy->owner.now()) {}

  void attempt() {
    ++attempts;
    op(asio::bind_cancellation_slot(
        detail::slot_of(*handler),
        [self = this->shared_from_this()](result<T> r) { self->done(std::move(r)); }));
  }

  void done(result<T> r) {
    const auto& o = policy->options;
    retry_event e{.attempt = attempts};
    if (!r) {
      e.error = r.fail();
      bool wanted = o.retry_on ? o.retry_on(e.error) : is_transient(e.error);
      if (wanted && attempts < o.max_attempts) {
        auto wait = retry_backoff(attempts, previous);
        bool in_time = o.deadline <= clock_type::duration::zero() ||
                       policy->owner.now() + wait <= started + o.deadline;
        if (in_time) {
          previous = wait;
          e.will_retry = true;
          e.delay = wait;
        }
      }
    }
    if (o.on_attempt) o.on_attempt(e);
    policy->listeners(e);
    if (e.will_retry) {
      policy->owner.run_after(e.delay, [self = this->shared_from_this()] { self->attempt(); });
      return;
    }
    if (!r && attempts > 1) detail::log_gave_up(attempts, r.fail());
    auto h = std::move(*handler);
    handler.reset();
    detail::complete(h, std::move(r));
  }

  clock_type::duration retry_backoff(int n, clock_type::duration prev) const;

  std::shared_ptr<const shared> policy;
  Op op;
  std::optional<Handler> handler;
  time_point started;
  int attempts = 0;
  clock_type::duration previous{};
};

template <class T, class Op, class Handler>
clock_type::duration retry::run<T, Op, Handler>::retry_backoff(int n,
                                                               clock_type::duration prev) const {
  return detail::retry_backoff(policy->options, policy->random, policy->mutex, n, prev);
}

template <class Op, class Token>
auto retry::execute(const Op& op, Token&& token) const {
  using T = op_value_t<Op>;
  return asio::async_initiate<Token, void(result<T>)>(
      [policy = state_](auto handler, const auto& op) {
        using H = decltype(handler);
        using O = std::decay_t<decltype(op)>;
        if (detail::refuse_blocking_wait<Token, T>(handler)) return;
        std::make_shared<run<T, O, H>>(policy, op, std::move(handler))->attempt();
      },
      token, op);
}

}  // namespace otpp::resilience
