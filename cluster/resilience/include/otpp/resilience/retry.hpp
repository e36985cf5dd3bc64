// retry: runs an operation again after a failure worth retrying, with exponential backoff
// (capped, with full or decorrelated jitter) on the node's clock, within an overall deadline.
// Completes with the first success or the last failure, as it was.
//
// Cancellation (the handler's slot): an attempt in flight gets the slot (otpp::call completes
// with operation_canceled, an Asio operation with operation_aborted: never retried); a wait between
// attempts ends at once with operation_canceled, and no further attempt starts.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>

#include <asio/error.hpp>

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
  // decorate() hands it a shared_operation: every call keeps a copy of the operation.
  static constexpr bool copies_operation = true;

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
  template <class T, class Op, class Handler>
  struct first_attempt;
  std::shared_ptr<shared> state_;
};

namespace detail {
void log_gave_up(int attempts, const failure& last);
void log_cancelled(int attempts);
clock_type::duration retry_backoff(const retry_options& o, std::mt19937_64& random,
                                   std::mutex& mutex, int attempt, clock_type::duration previous);
}  // namespace detail

template <class T, class Op, class Handler>
struct retry::run : std::enable_shared_from_this<run<T, Op, Handler>> {
  run(std::shared_ptr<const shared> s, Op o, Handler h, time_point start, int tried)
      : policy(std::move(s)),
        op(std::move(o)),
        handler(std::move(h)),
        started(start),
        attempts(tried) {}

  void attempt() {
    ++attempts;
    op(asio::bind_cancellation_slot(
        detail::slot_of(*handler),
        [self = this->shared_from_this()](auto&& r) { self->done(std::forward<decltype(r)>(r)); }));
  }

  template <class R>
  void done(R&& r) {
    const auto& o = policy->options;
    retry_event e{.attempt = attempts};
    if (!r) {
      e.error = r.fail();
      // A cancelled attempt (otpp::call's operation_canceled, an Asio operation's
      // operation_aborted) is never retried: the caller gave up.
      const bool cancelled = e.error.code == errc::operation_canceled ||
                             e.error.code == asio::error::operation_aborted;
      bool wanted = !cancelled && (o.retry_on ? o.retry_on(e.error) : is_transient(e.error));
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
      waiting.store(true);
      // Between attempts the slot is the retry's own: a cancellation ends the wait. The next
      // attempt's operation takes the slot back (replacing this canceller).
      auto slot = detail::slot_of(*handler);
      if (slot.is_connected()) {
        slot.assign([weak = this->weak_from_this()](asio::cancellation_type) {
          if (auto self = weak.lock()) self->cancel_wait();
        });
      }
      policy->owner.run_after(e.delay, [self = this->shared_from_this()] {
        if (self->waiting.exchange(false)) self->attempt();
      });
      return;
    }
    if (!r && attempts > 1) detail::log_gave_up(attempts, r.fail());
    auto h = std::move(*handler);
    handler.reset();
    detail::complete(h, std::forward<decltype(r)>(r));
  }

  void cancel_wait() {
    if (!waiting.exchange(false)) return;  // the next attempt started first
    detail::log_cancelled(attempts);
    auto h = std::move(*handler);
    handler.reset();
    detail::complete(h, result<T>(failure(errc::operation_canceled, "retry cancelled")));
  }

  clock_type::duration retry_backoff(int n, clock_type::duration prev) const;

  std::shared_ptr<const shared> policy;
  std::atomic<bool> waiting{false};  // between attempts: the timer or a cancellation takes it
  Op op;
  std::optional<Handler> handler;
  time_point started;
  int attempts = 0;
  clock_type::duration previous{};
};

// The first attempt's handler: the common case (success at once) needs no allocation. It
// carries the policy, a copy of op and the caller's handler; only a failure moves them into a
// run on the heap, which decides whether to try again.
template <class T, class Op, class Handler>
struct retry::first_attempt {
  using cancellation_slot_type = asio::associated_cancellation_slot_t<Handler>;
  cancellation_slot_type get_cancellation_slot() const noexcept {
    return asio::get_associated_cancellation_slot(handler);
  }

  template <class R>
  void operator()(R&& r) {
    if (r) {
      // The event (with its empty failure) only when someone hears it.
      if (policy->options.on_attempt || policy->listeners.any()) {
        const retry_event first{.attempt = 1};
        if (policy->options.on_attempt) policy->options.on_attempt(first);
        policy->listeners(first);
      }
      detail::complete(handler, std::forward<R>(r));
      return;
    }
    auto later = std::make_shared<run<T, Op, Handler>>(std::move(policy), std::move(op),
                                                       std::move(handler), started, 1);
    later->done(std::forward<R>(r));
  }

  std::shared_ptr<const shared> policy;
  Op op;
  Handler handler;
  time_point started;  // for the deadline (the epoch when there is none)
};

template <class T, class Op, class Handler>
clock_type::duration retry::run<T, Op, Handler>::retry_backoff(int n,
                                                               clock_type::duration prev) const {
  return detail::retry_backoff(policy->options, policy->random, policy->mutex, n, prev);
}

template <class Op, class Token>
auto retry::execute(const Op& op, Token&& token) const {
  using T = op_value_t<Op>;
  // The policy borrowed while initiating (detail::initiate); the handler gets its own copy.
  return detail::initiate<void(result<T>)>(
      *this, op, std::forward<Token>(token), [](auto&& handler, const auto& op, const retry& self) {
        using H = std::decay_t<decltype(handler)>;
        using O = std::decay_t<decltype(op)>;
        if (detail::refuse_blocking_wait<Token, T>(handler)) return;
        const auto& policy = *self.state_;
        const auto started = policy.options.deadline > clock_type::duration::zero()
                                 ? policy.owner.now()
                                 : time_point{};
        op(first_attempt<T, O, H>{self.state_, op, std::move(handler), started});
      });
}

}  // namespace otpp::resilience
