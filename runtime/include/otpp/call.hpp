// call: request/reply with a timeout, completed through any Asio completion token
// (callback, asio::use_awaitable, asio::use_future). Completion signature: void(result<R>),
// where R is the message's ::reply type. Resolves exactly once with the reply or one of:
//   timeout       no reply in time (a late reply is dropped)
//   noproc        no such process (or it ended before taking the call)
//   mailbox_full  the callee's bounded mailbox is full
//   bad_message   no handler for the message, or its payload/reply does not decode
//   exit          the callee ended during the call (its reason in result::reason())
//   no_reply      the callee dropped its reply_to unanswered
//   node_stopped  the node stopped (or was destroyed) with the call waiting
//   not_started   the node was never started
//   calling_self  a process called itself
//   would_block   use_future from a process thread (future.get() would block the thread)
//   operation_canceled  the handler's cancellation slot was emitted (terminal or partial):
//                 the call is forgotten at once (timer and pending-remote entry freed) and a
//                 late reply is dropped; the request may still have been handled
//   nodedown / not_serializable / any error a router returns, for calls to other nodes
// A plain callback runs as a handler of its own on the node's pool (never as the callee).
#pragma once

#include <chrono>
#include <optional>

#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/cancellation_type.hpp>
#include <asio/dispatch.hpp>
#include <asio/post.hpp>
#include <asio/use_future.hpp>

#include "otpp/node.hpp"

namespace otpp {

inline constexpr std::chrono::milliseconds default_call_timeout{5000};
inline constexpr std::chrono::milliseconds infinity{-1};

namespace detail {

// Arms the timeout, registers the call with the calling process and routes the request.
void start_call(node_impl& n, const pid& to, call_state_base* state, message_envelope* request,
                std::chrono::milliseconds timeout);
// A completed call leaves the node's timer service and pending-remote table; `outcome` (null:
// success) goes to the remote call gate that admitted it. Without it: the caller went away.
void call_finished(node_impl& n, call_state_base* state);
void call_finished(node_impl& n, call_state_base* state, const failure* outcome);
asio::io_context& node_context(node_impl& n);

template <class Token>
inline constexpr bool is_use_future = false;
template <class A>
inline constexpr bool is_use_future<asio::use_future_t<A>> = true;

// future.get() on a process thread blocks that thread, which the awaited process may need (one
// thread: a hang). Such a wait is refused at once: the handler (the promise) is completed
// inline with would_block. True if it was refused.
template <class Token, class R, class Handler>
bool refuse_blocking_wait(Handler& handler) {
  if constexpr (is_use_future<std::decay_t<Token>>) {
    if (current_process()) {
      handler(
          result<R>(failure(errc::would_block, "use_future inside a handler: use use_awaitable")));
      return true;
    }
  }
  return false;
}

// Completes `handler` with `r` on its associated executor. A plain callback (no executor of
// its own) runs as a handler of its own on the node's pool, never inline in the turn of the
// process that answered: it would run as that process, its sends and calls the callee's.
template <class Handler, class R>
void complete_on(node_impl& n, Handler handler, R r) {
  auto fallback = node_context(n).get_executor();
  auto ex = asio::get_associated_executor(handler, fallback);
  auto run = [h = std::move(handler), r = std::move(r)]() mutable { h(std::move(r)); };
  if constexpr (std::is_same_v<decltype(ex), decltype(fallback)>) {
    asio::post(ex, std::move(run));
  } else {
    asio::dispatch(ex, std::move(run));  // a process executor always queues
  }
}

// Installed in a call's cancellation slot: completes the call with operation_canceled. It is
// never cleared by the call (a slot may be emitted from another thread, the timeout policy's
// timer, while the call completes): left behind, it finds the call done and does nothing.
struct call_canceller {
  explicit call_canceller(ref_ptr<call_state_base> s) : state(std::move(s)) {}
  ref_ptr<call_state_base> state;
  // Out of line: inlined into callers' code, g++ 12 -O2 reports false stringop-overflow.
  void operator()(asio::cancellation_type type) const;
};

template <class R, class Handler>
class call_state final : public call_state_base {
 public:
  call_state(node_impl& n, Handler&& h) : node_(n), handler_(std::move(h)) {
    auto slot = asio::get_associated_cancellation_slot(*handler_);
    if (slot.is_connected()) slot.template emplace<call_canceller>(ref_ptr<call_state_base>(this));
  }

  void complete_value(void* value, const value_codec*) override {
    finish(result<R>(std::move(*static_cast<R*>(value))));
  }
  void complete_error(failure f) override { finish(result<R>(std::move(f))); }
  void complete_encoded(const msgpack::object& reply) override {
    if constexpr (wire_encodable<R>) {
      try {
        finish(result<R>(reply.as<R>()));
      } catch (const std::exception& e) {
        finish(result<R>(failure(errc::bad_message, std::string("reply: ") + e.what())));
      }
    } else {
      finish(result<R>(failure(errc::not_serializable, "the reply type has no msgpack mapping")));
    }
  }
  void abandon() override {
    call_finished(node_, this);
    handler_.reset();
  }

 private:
  void finish(result<R> r) {
    call_finished(node_, this, r ? nullptr : &r.fail());
    Handler h = std::move(*handler_);
    handler_.reset();
    complete_on(node_, std::move(h), std::move(r));
  }
  node_impl& node_;
  std::optional<Handler> handler_;
};

// A call whose reply is wanted encoded (dynamic callers, and callers on other nodes).
class encoded_call_state final : public call_state_base {
 public:
  encoded_call_state(node_impl& n, std::function<void(result<msgpack::object_handle>)> done);
  void complete_value(void* value, const value_codec* codec) override;
  void complete_error(failure f) override;
  void complete_encoded(const msgpack::object& reply) override;
  void abandon() override;

 private:
  void finish(result<msgpack::object_handle> r);
  node_impl& node_;
  std::function<void(result<msgpack::object_handle>)> done_;
};

}  // namespace detail

template <call_message M, class Token>
auto call(node& n, const pid& to, M msg, std::chrono::milliseconds timeout, Token&& token) {
  using R = typename M::reply;
  return asio::async_initiate<Token, void(result<R>)>(
      [&n, to, timeout](auto handler, M m) {
        using H = decltype(handler);
        if (detail::refuse_blocking_wait<Token, R>(handler)) return;
        auto* state = new detail::call_state<R, H>(n.impl(), std::move(handler));
        auto* request = new detail::typed_envelope<M>(detail::envelope_kind::call,
                                                      detail::current_self(), std::move(m));
        detail::start_call(n.impl(), to, state, request, timeout);
      },
      token, std::move(msg));
}

template <call_message M, class Token>
auto call(node& n, const pid& to, M msg, Token&& token) {
  return call(n, to, std::move(msg), default_call_timeout, std::forward<Token>(token));
}

// Deferred reply: a call handler taking reply_to<R> may answer later, from anywhere. Dropping
// it unanswered answers the caller with no_reply, and a callee that ends with replies
// outstanding answers them with exit and its exit reason: no caller waits for a reply that
// cannot come.
template <class R>
class reply_to {
 public:
  reply_to() = default;
  explicit reply_to(detail::ref_ptr<detail::call_state_base> s, process* owner)
      : state_(std::move(s)), owner_(owner) {}
  reply_to(reply_to&& o) noexcept : state_(std::move(o.state_)), owner_(o.owner_) {}
  reply_to& operator=(reply_to&& o) noexcept {
    if (this != &o) {
      drop();
      state_ = std::move(o.state_);
      owner_ = o.owner_;
    }
    return *this;
  }
  ~reply_to() { drop(); }

  // Returns false if the call was already resolved (timed out, for instance).
  bool operator()(R value) {
    auto s = std::move(state_);
    if (!s || !s->claim()) return false;
    s->complete_value(&value, codec_of<R>());
    return true;
  }
  bool fail(failure f) {
    auto s = std::move(state_);
    if (!s || !s->claim()) return false;
    s->complete_error(std::move(f));
    return true;
  }
  explicit operator bool() const { return state_ && !state_->done(); }

 private:
  void drop();
  detail::ref_ptr<detail::call_state_base> state_;
  process* owner_ = nullptr;  // identity only: a strong ref would keep a dead owner alive
};

namespace detail {
// The owner's exit reason if it is ending on this thread, else empty.
std::string dropped_reply_reason(process* owner);
}  // namespace detail

template <class R>
void reply_to<R>::drop() {
  if (!state_) return;
  auto ending = detail::dropped_reply_reason(owner_);
  if (ending.empty()) {
    fail(failure(errc::no_reply, "the reply_to was dropped unanswered"));
  } else {
    fail(failure(errc::exit, std::move(ending)));
  }
}

namespace detail {
void stop_and_wait(node_impl& n, const pid& p, exit_reason reason,
                   std::chrono::milliseconds timeout, std::function<void(result<void>)> done);

}  // namespace detail

// gen_server:stop: asks `p` to stop with `reason` (terminate runs) and completes when it has
// ended: ok, or noproc (it was not alive), timeout, calling_self, would_block (use_future from
// a process thread).
template <class Token>
auto stop(node& n, const pid& p, exit_reason reason, std::chrono::milliseconds timeout,
          Token&& token) {
  return asio::async_initiate<Token, void(result<void>)>(
      [&n, p, timeout](auto handler, exit_reason why) {
        if (detail::refuse_blocking_wait<Token, void>(handler)) return;
        auto shared = std::make_shared<decltype(handler)>(std::move(handler));
        detail::stop_and_wait(n.impl(), p, std::move(why), timeout, [&n, shared](result<void> r) {
          detail::complete_on(n.impl(), std::move(*shared), std::move(r));
        });
      },
      token, std::move(reason));
}

// Dynamic call: `map` is a msgpack map with a "type" field; the reply comes back encoded.
void call_dynamic(node& n, const pid& to, msgpack::object_handle map,
                  std::chrono::milliseconds timeout,
                  std::function<void(result<msgpack::object_handle>)> done);

}  // namespace otpp
