// timeout: bounds a whole operation. When the limit (node clock) passes first, the caller gets
// errc::timeout at once, the operation's cancellation slot is emitted (an Asio operation that
// supports cancellation stops; see below) and its late result is dropped.
//
// The cancellation is emitted on the node thread that fires the timer: an operation whose
// cancellation handler must run on a strand binds itself to that strand.
#pragma once

#include <atomic>
#include <memory>
#include <optional>

#include <asio/cancellation_signal.hpp>

#include "otpp/resilience/async.hpp"

namespace otpp::resilience {

class timeout {
 public:
  timeout(node& n, clock_type::duration limit,
          asio::cancellation_type cancel = asio::cancellation_type::terminal)
      : node_(&n), limit_(limit), cancel_(cancel) {}

  template <class Op, class Token>
  auto execute(const Op& op, Token&& token) const;

  clock_type::duration limit() const noexcept { return limit_; }

 private:
  template <class T, class Handler>
  struct run {
    explicit run(Handler h) : handler(std::move(h)) {}
    std::atomic<bool> done{false};
    std::optional<Handler> handler;
    asio::cancellation_signal signal;
    timer_ref timer{};
  };
  node* node_;
  clock_type::duration limit_;
  asio::cancellation_type cancel_;
};

template <class Op, class Token>
auto timeout::execute(const Op& op, Token&& token) const {
  using T = op_value_t<Op>;
  return asio::async_initiate<Token, void(result<T>)>(
      [n = node_, limit = limit_, cancel = cancel_](auto handler, const auto& op) {
        using H = decltype(handler);
        if (detail::refuse_blocking_wait<Token, T>(handler)) return;
        auto r = std::make_shared<run<T, H>>(std::move(handler));
        // Armed before the call starts, so a call completing on another thread finds it set.
        r->timer = n->run_after(limit, [r, limit, cancel] {
          if (r->done.exchange(true)) return;
          auto h = std::move(*r->handler);
          r->handler.reset();
          r->signal.emit(cancel);
          const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(limit).count();
          detail::complete(h, result<T>(failure(errc::timeout,
                                                "no result within " + std::to_string(ms) + "ms")));
        });
        op(asio::bind_cancellation_slot(r->signal.slot(), [r, n](result<T> res) {
          if (r->done.exchange(true)) return;  // late: the caller already has its timeout
          n->cancel_timer(r->timer);
          auto h = std::move(*r->handler);
          r->handler.reset();
          detail::complete(h, std::move(res));
        }));
      },
      token, op);
}

}  // namespace otpp::resilience
