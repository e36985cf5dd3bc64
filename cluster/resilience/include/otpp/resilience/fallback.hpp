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
    // The policy borrowed while initiating (detail::initiate); the handler gets its own copy.
    return detail::initiate<void(result<T>)>(
        *this, op, std::forward<Token>(token),
        [](auto&& handler, const auto& op, const fallback& self) {
          using H = std::decay_t<decltype(handler)>;
          if (detail::refuse_blocking_wait<Token, T>(handler)) return;
          op(call_handler<T, H>{self.data_, std::move(handler)});
        });
  }

 private:
  struct data {
    Alt alt;
    std::function<bool(const failure&)> when;
  };
  // The operation's handler: a named type exposing the caller's cancellation slot, rather than
  // a lambda in asio::bind_cancellation_slot, which would move the nested handler once more.
  template <class T, class Handler>
  struct call_handler {
    using cancellation_slot_type = asio::associated_cancellation_slot_t<Handler>;
    cancellation_slot_type get_cancellation_slot() const noexcept {
      return asio::get_associated_cancellation_slot(handler);
    }
    template <class R>
    void operator()(R&& r) {
      if (r || (d->when && !d->when(r.fail()))) {
        detail::complete(handler, std::forward<R>(r));
      } else if constexpr (std::is_invocable_v<const Alt&, const failure&>) {
        detail::complete(handler, result<T>(d->alt(r.fail())));
      } else {
        auto slot = get_cancellation_slot();
        d->alt(r.fail(),
               asio::bind_cancellation_slot(slot, [h = std::move(handler)](auto&& alt) mutable {
                 detail::complete(h, std::forward<decltype(alt)>(alt));
               }));
      }
    }
    std::shared_ptr<const data> d;
    Handler handler;
  };
  std::shared_ptr<const data> data_;
};

}  // namespace otpp::resilience
