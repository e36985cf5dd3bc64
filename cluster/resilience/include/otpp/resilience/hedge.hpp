// hedge: when an operation has not answered within `delay`, starts it again (up to max_hedges
// more times, one more per delay); the first success wins and the attempts still running are
// cancelled (their cancellation slots emitted, their results dropped). A failed attempt starts
// the next hedge at once; when every attempt failed, the last failure is the result.
//
// An operation that takes a target index, op(index, token), gets 0 for the first attempt and
// 1, 2, ... for the hedges (to send each to another replica); a plain op(token) is started
// again as it is. Emitting the caller's cancellation slot cancels every attempt and completes
// with operation_canceled.
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include <asio/cancellation_signal.hpp>

#include "otpp/resilience/async.hpp"

namespace otpp::resilience {

namespace detail {
template <class Op>
inline constexpr bool is_indexed_op = requires(const Op& op) {
  op(std::size_t{0}, probe_token{});
};
template <class Op>
struct hedge_value {
  using type = op_value_t<Op>;
};
template <class Op>
requires is_indexed_op<Op>
struct hedge_value<Op> {
  using type = typename value_of_signature<typename decltype(std::declval<const Op&>()(
      std::size_t{0}, probe_token{}))::signature>::type;
};
void log_hedge(std::size_t index);
}  // namespace detail

class hedge {
 public:
  hedge(node& n, clock_type::duration delay, std::size_t max_hedges = 1)
      : node_(&n), delay_(delay), max_attempts_(max_hedges + 1) {}

  template <class Op, class Token>
  auto execute(const Op& op, Token&& token) const;

  clock_type::duration delay() const noexcept { return delay_; }
  std::size_t max_hedges() const noexcept { return max_attempts_ - 1; }

 private:
  template <class T, class Op, class Handler>
  struct run;
  node* node_;
  clock_type::duration delay_;
  std::size_t max_attempts_;
};

template <class T, class Op, class Handler>
struct hedge::run : std::enable_shared_from_this<run<T, Op, Handler>> {
  run(node& n, Op o, Handler h, clock_type::duration d, std::size_t max)
      : owner(n), op(std::move(o)), handler(std::move(h)), delay(d), max_attempts(max) {}

  // Starts the next attempt (if the race is still on and attempts are left), and arms the
  // timer of the one after it.
  void launch() {
    std::size_t index = 0;
    asio::cancellation_signal* signal = nullptr;
    {
      std::lock_guard lock(mutex);
      if (done || started >= max_attempts) return;
      index = started++;
      signals.push_back(std::make_unique<asio::cancellation_signal>());
      launched.push_back(false);
      signal = signals.back().get();
    }
    if (index > 0) detail::log_hedge(index);
    if (index + 1 < max_attempts) {
      owner.run_after(delay, [self = this->shared_from_this()] { self->launch(); });
    }
    auto on_done = asio::bind_cancellation_slot(
        signal->slot(), [self = this->shared_from_this(), index](result<T> r) {
          self->finished(index, std::move(r));
        });
    if constexpr (detail::is_indexed_op<Op>) {
      op(index, std::move(on_done));
    } else {
      op(std::move(on_done));
    }
    bool cancel_now = false;
    {
      std::lock_guard lock(mutex);
      launched[index] = true;
      // The race ended while this attempt was being started: it is a loser too.
      cancel_now = done && winner != index;
    }
    if (cancel_now) signal->emit(asio::cancellation_type::terminal);
  }

  void finished(std::size_t index, result<T> r) {
    bool next = false;
    {
      std::lock_guard lock(mutex);
      if (done) return;  // a loser's late result
      if (!r) {
        last = r.fail();
        ++failed;
        if (failed < started) return;             // others still running
        if (started < max_attempts) next = true;  // hedge at once
      }
      if (!next) {
        done = true;
        winner = index;
      }
    }
    if (next) {
      launch();
      return;
    }
    end(index, std::move(r));
  }

  // The caller cancelled: every attempt is cancelled.
  void cancel() {
    {
      std::lock_guard lock(mutex);
      if (done) return;
      done = true;
    }
    end(max_attempts, result<T>(failure(errc::operation_canceled, "hedge cancelled")));
  }

  // Cancels the attempts other than `keep` that are running, then completes the caller.
  void end(std::size_t keep, result<T> r) {
    std::vector<asio::cancellation_signal*> losers;
    {
      std::lock_guard lock(mutex);
      for (std::size_t i = 0; i < signals.size(); ++i) {
        if (i != keep && launched[i]) losers.push_back(signals[i].get());
      }
    }
    for (auto* s : losers) s->emit(asio::cancellation_type::terminal);
    auto h = std::move(*handler);
    handler.reset();
    detail::complete(h, std::move(r));
  }

  node& owner;
  Op op;
  std::optional<Handler> handler;
  const clock_type::duration delay;
  const std::size_t max_attempts;
  std::mutex mutex;
  std::vector<std::unique_ptr<asio::cancellation_signal>> signals;  // one per attempt
  std::vector<bool> launched;  // its operation has started (its slot may be emitted)
  std::size_t started = 0, failed = 0;
  bool done = false;
  std::size_t winner = static_cast<std::size_t>(-1);
  std::optional<failure> last;
};

template <class Op, class Token>
auto hedge::execute(const Op& op, Token&& token) const {
  using T = typename detail::hedge_value<Op>::type;
  return asio::async_initiate<Token, void(result<T>)>(
      [self = *this](auto handler, const auto& op) {
        using H = decltype(handler);
        using O = std::decay_t<decltype(op)>;
        if (detail::refuse_blocking_wait<Token, T>(handler)) return;
        auto slot = detail::slot_of(handler);
        auto r = std::make_shared<run<T, O, H>>(*self.node_, op, std::move(handler), self.delay_,
                                                self.max_attempts_);
        if (slot.is_connected()) {
          slot.assign([weak = std::weak_ptr<run<T, O, H>>(r)](asio::cancellation_type) {
            if (auto run = weak.lock()) run->cancel();
          });
        }
        r->launch();
      },
      token, op);
}

}  // namespace otpp::resilience
