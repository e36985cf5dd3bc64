// rate_limiter: a token bucket. It holds up to `capacity` permits and gains `refill` permits
// every `refill_period` (node clock). A call takes one; without one it may wait up to
// max_wait for the permit it reserves (a node timer, no thread), else it completes with
// rate_limited.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "otpp/resilience/async.hpp"
#include "otpp/resilience/errors.hpp"

namespace otpp::resilience {

struct rate_limiter_options {
  std::string name = "rate_limiter";
  std::size_t capacity = 50;  // the burst; the bucket starts full
  std::size_t refill = 50;    // permits added each period (capped at capacity)
  clock_type::duration refill_period = std::chrono::seconds(1);
  clock_type::duration max_wait{};  // zero: refuse at once when empty
};

class rate_limiter {
 public:
  rate_limiter(node& n, rate_limiter_options o = {});

  template <class Op, class Token>
  auto execute(const Op& op, Token&& token) const;

  // Takes a permit: the wait before the call may start (zero: now), or rate_limited when
  // that wait would exceed max_wait (the permit is then not taken).
  result<clock_type::duration> acquire() const;
  std::size_t available() const;  // permits now (0 while waiters hold reservations)
  const rate_limiter_options& options() const noexcept;
  // A listener added later (metrics): calls refused with rate_limited. Runs on the thread of
  // the refusal, limiter unlocked.
  void add_refusal_listener(std::function<void(const failure&)> f) const;

 private:
  node& owner() const;
  struct core;
  std::shared_ptr<core> core_;
};

template <class Op, class Token>
auto rate_limiter::execute(const Op& op, Token&& token) const {
  using T = op_value_t<Op>;
  return detail::initiate<void(result<T>)>(
      *this, op, std::forward<Token>(token),
      [](auto&& handler, const auto& op, const rate_limiter& self) {
        using H = std::decay_t<decltype(handler)>;
        if (detail::refuse_blocking_wait<Token, T>(handler)) return;
        auto wait = self.acquire();
        if (!wait) {
          detail::complete_later(self.owner(), handler, result<T>(wait.fail()));
          return;
        }
        if (*wait == clock_type::duration::zero()) {
          op(std::move(handler));  // nothing to do on completion: the caller's own handler
          return;
        }
        // A reserved permit: the call starts when it comes.
        using O = std::decay_t<decltype(op)>;
        struct waiter {
          O operation;
          H handler;
        };
        auto w = std::make_shared<waiter>(waiter{op, std::move(handler)});
        self.owner().run_after(*wait, [w] {
          auto slot = detail::slot_of(w->handler);
          w->operation(asio::bind_cancellation_slot(slot, [w](auto&& r) mutable {
            detail::complete(w->handler, std::forward<decltype(r)>(r));
          }));
        });
      });
}

}  // namespace otpp::resilience
