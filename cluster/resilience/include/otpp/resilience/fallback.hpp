// fallback: when the operation fails with an error `when` accepts (empty: any error), the
// alternative is called lazily, and its result is the result. The alternative is either
//   result<T> alt(const failure&)                  a value (or another error), or
//   alt(const failure&, token)                     another asynchronous call, as an operation.
#pragma once

#include <functional>
#include <memory>

#include "otpp/resilience/async.hpp"

namespace otpp::resilience {

template <class Alt>
class fallback {
 public:
  explicit fallback(Alt alt, std::function<bool(const failure&)> when = {})
      : data_(std::make_shared<const data>(data{std::move(alt), std::move(when)})) {}

  template <class Op, class Token>
  auto execute(const Op& op, Token&& token) const {
    using T = op_value_t<Op>;
    return asio::async_initiate<Token, void(result<T>)>(
        [d = data_](auto&& handler, const auto& op) mutable {
          if (detail::refuse_blocking_wait<Token, T>(handler)) return;
          auto slot = detail::slot_of(handler);
          op(asio::bind_cancellation_slot(
              slot, [d = std::move(d), slot, h = std::move(handler)](auto&& r) mutable {
                if (r || (d->when && !d->when(r.fail()))) {
                  detail::complete(h, std::forward<decltype(r)>(r));
                } else if constexpr (std::is_invocable_v<const Alt&, const failure&>) {
                  detail::complete(h, result<T>(d->alt(r.fail())));
                } else {
                  d->alt(r.fail(),
                         asio::bind_cancellation_slot(slot, [h = std::move(h)](auto&& alt) mutable {
                           detail::complete(h, std::forward<decltype(alt)>(alt));
                         }));
                }
              }));
        },
        token, op);
  }

 private:
  struct data {
    Alt alt;
    std::function<bool(const failure&)> when;
  };
  std::shared_ptr<const data> data_;
};

}  // namespace otpp::resilience
