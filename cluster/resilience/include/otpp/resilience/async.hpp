// What every policy shares. An *operation* is a callable `op(token)` that starts one
// asynchronous call completing with void(result<T>), e.g.
//   auto op = [&](auto&& token) { return otpp::call(node, p, msg, 1s, std::move(token)); };
// A policy runs it (once or more) and completes its own token; a policy's decorate(op) is
// again an operation, so policies nest.
#pragma once

#include <memory>
#include <type_traits>
#include <utility>

#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/dispatch.hpp>
#include <asio/post.hpp>
#include <asio/system_executor.hpp>

#include "otpp/call.hpp"
#include "otpp/node.hpp"
#include "otpp/result.hpp"

namespace otpp::resilience {
namespace detail {

// A completion token that starts nothing: op(probe_token{}) names the operation's
// completion signature at compile time (so policies deduce T).
struct probe_token {};
template <class Signature>
struct probed {
  using signature = Signature;
};
template <class Signature>
struct value_of_signature;
template <class T>
struct value_of_signature<void(result<T>)> {
  using type = T;
};

}  // namespace detail

// T of an operation completing with void(result<T>).
template <class Op>
using op_value_t =
    typename detail::value_of_signature<typename decltype(std::declval<std::decay_t<Op>&>()(
        detail::probe_token{}))::signature>::type;

namespace detail {

// Completes `h` on its associated executor: inline when it has none (a policy's own inner
// handler, a use_future promise), queued when it has one (a coroutine's process executor).
// The result is passed through by reference: a pipeline's layers hand one result<T> down
// to the caller without moving it once per layer.
template <class Handler, class R>
void complete(Handler& h, R&& r) {
  auto ex = asio::get_associated_executor(h);
  if constexpr (std::is_same_v<decltype(ex), asio::system_executor>) {
    std::move(h)(std::forward<R>(r));
  } else {
    asio::dispatch(ex, [h = std::move(h), r = std::decay_t<R>(std::forward<R>(r))]() mutable {
      std::move(h)(std::move(r));
    });
  }
}

// Completes `h` from inside its initiating function (a refusal): never inline, as Asio
// requires; a handler without an executor of its own runs on the node's pool.
template <class Handler, class R>
void complete_later(node& n, Handler& h, R r) {
  auto fallback = n.context().get_executor();
  auto ex = asio::get_associated_executor(h, fallback);
  asio::post(ex, [h = std::move(h), r = std::move(r)]() mutable { std::move(h)(std::move(r)); });
}

// The cancellation slot of `h`: a policy passing a call through gives its own inner handler
// the same slot, so an outer timeout can still cancel the call. On the per-call paths the
// inner handler is a named type whose get_cancellation_slot() asks the handler it holds (one
// move of the nested handler less than a lambda in asio::bind_cancellation_slot); elsewhere
// the slot is bound, read before moving `h` into the bound handler.
template <class Handler>
auto slot_of(const Handler& h) {
  return asio::get_associated_cancellation_slot(h);
}

// use_future from a process thread would block it: refused with would_block (as otpp::call).
template <class Token, class T, class Handler>
bool refuse_blocking_wait(Handler& h) {
  return otpp::detail::refuse_blocking_wait<Token, T>(h);
}

// True when `Token` is a completion handler: the initiation then runs inside async_initiate,
// while the policy that started it is alive, so it may borrow the policy instead of copying
// its handle (a reference count per call saved). A deferred token (use_awaitable, deferred)
// runs it later and gets a copy.
template <class Token, class Signature>
inline constexpr bool initiates_at_once =
    std::is_void_v<typename asio::async_result<std::decay_t<Token>, Signature>::return_type>;

// Runs `body(handler, op, policy)` as the initiation of an operation completing with
// `Signature`, with `policy` borrowed or copied as initiates_at_once allows.
template <class Signature, class Policy, class Op, class Token, class Body>
auto initiate(const Policy& policy, const Op& op, Token&& token, Body body) {
  if constexpr (initiates_at_once<Token, Signature>) {
    return asio::async_initiate<Token, Signature>(
        [p = &policy, body](auto&& handler, const auto& o) {
          body(std::forward<decltype(handler)>(handler), o, *p);
        },
        token, op);
  } else {
    return asio::async_initiate<Token, Signature>(
        [policy, body](auto&& handler, const auto& o) {
          body(std::forward<decltype(handler)>(handler), o, policy);
        },
        token, op);
  }
}

}  // namespace detail

// An operation kept once on the heap, for a policy that copies its operation on every call
// (a retry keeps one for its later attempts): the copy is one reference count, not one per
// policy handle nested inside the operation.
template <class Op>
class shared_operation {
 public:
  explicit shared_operation(Op op) : op_(std::make_shared<const Op>(std::move(op))) {}
  template <class Token>
  auto operator()(Token&& token) const {
    return (*op_)(std::forward<Token>(token));
  }

 private:
  std::shared_ptr<const Op> op_;
};

namespace detail {
// decorate(), with the choice of sharing: worth it for an operation wrapped once and started
// often, not for one wrapped per call (pipeline::execute), where it costs an allocation.
template <bool Share, class Policy, class Op>
auto wrap(Policy policy, Op op) {
  if constexpr (Share && requires { Policy::copies_operation; }) {
    return [policy = std::move(policy), op = shared_operation<Op>(std::move(op))](auto&& token) {
      return policy.execute(op, std::forward<decltype(token)>(token));
    };
  } else {
    return [policy = std::move(policy), op = std::move(op)](auto&& token) {
      return policy.execute(op, std::forward<decltype(token)>(token));
    };
  }
}
}  // namespace detail

// Wraps `op` in `policy`: an operation again (policy.execute(op, token) per start). A policy
// with `copies_operation` gets the operation as a shared_operation.
template <class Policy, class Op>
auto decorate(Policy policy, Op op) {
  return detail::wrap<true>(std::move(policy), std::move(op));
}

}  // namespace otpp::resilience

template <class Signature>
struct asio::async_result<otpp::resilience::detail::probe_token, Signature> {
  using return_type = otpp::resilience::detail::probed<Signature>;
  template <class Initiation, class... Args>
  static return_type initiate(Initiation&&, otpp::resilience::detail::probe_token, Args&&...) {
    return {};
  }
};
