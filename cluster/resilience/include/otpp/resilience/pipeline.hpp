// pipeline: policies around one operation, the first listed outermost. The documented order
// (resilience4j's) is
//   fallback, retry, circuit_breaker, rate_limiter, timeout, bulkhead, operation
// so every retry attempt goes through the breaker (which records each attempt; its refusal is
// a transient failure the retry may wait out), takes its own rate permit, is bounded by its own
// timeout (which covers the wait for a bulkhead slot too), and holds a bulkhead slot only while
// it runs. Any subset, in any order, is allowed: the order changes the behaviour (tests show
// a retry inside a breaker's window, or a timeout outside a retry, differ).
#pragma once

#include <tuple>

#include "otpp/resilience/async.hpp"

namespace otpp::resilience {

template <class... Policies>
class pipeline {
 public:
  explicit pipeline(Policies... p) : policies_(std::move(p)...) {}

  // `op` wrapped by every policy: an operation to start as often as wanted (cheaper than
  // execute, which wraps on each call).
  template <class Op>
  auto decorate(Op op) const {
    return wrap<sizeof...(Policies), true>(std::move(op));
  }
  template <class Op, class Token>
  auto execute(const Op& op, Token&& token) const {
    return wrap<sizeof...(Policies), false>(op)(std::forward<Token>(token));
  }

 private:
  // The innermost `n` policies... wrap from the last one outwards.
  template <std::size_t N, bool Share, class Op>
  auto wrap(Op op) const {
    if constexpr (N == 0) {
      return op;
    } else {
      return wrap<N - 1, Share>(detail::wrap<Share>(std::get<N - 1>(policies_), std::move(op)));
    }
  }
  std::tuple<Policies...> policies_;
};

}  // namespace otpp::resilience
