// call: request/reply with a timeout, completed through any Asio completion token
// (callback, asio::use_awaitable, asio::use_future). Completion signature: void(result<R>),
// where R is the message's ::reply type. Resolves exactly once: reply, timeout, noproc,
// mailbox_full, bad_message (no handler / payload does not decode), exit (the callee ended
// during the call, its reason in result::reason()).
#pragma once

#include <chrono>
#include <optional>

#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/dispatch.hpp>

#include "otpp/node.hpp"

namespace otpp {

inline constexpr std::chrono::milliseconds default_call_timeout{5000};
inline constexpr std::chrono::milliseconds infinity{-1};

namespace detail {

// Arms the timeout, registers the call with the calling process and delivers the request.
void start_call(node_impl& n, const pid& to, call_state_base* state, message_envelope* request,
                std::chrono::milliseconds timeout);
// Removes a completed call from the node's deadline list (no-op if not listed).
void forget_deadline(node_impl& n, call_state_base* state);
asio::io_context& node_context(node_impl& n);

template <class R, class Handler>
class call_state final : public call_state_base {
 public:
  call_state(node_impl& n, Handler&& h) : node_(n), handler_(std::move(h)) {}

  void complete_value(void* value, const value_codec*) override {
    finish(result<R>(std::move(*static_cast<R*>(value))));
  }
  void complete_error(failure f) override { finish(result<R>(std::move(f))); }
  void abandon() override {
    forget_deadline(node_, this);
    handler_.reset();
  }

 private:
  void finish(result<R> r) {
    forget_deadline(node_, this);
    Handler h = std::move(*handler_);
    handler_.reset();
    auto ex = asio::get_associated_executor(h, node_context(node_).get_executor());
    asio::dispatch(ex, [h = std::move(h), r = std::move(r)]() mutable { h(std::move(r)); });
  }
  node_impl& node_;
  std::optional<Handler> handler_;
};

}  // namespace detail

template <call_message M, class Token>
auto call(node& n, const pid& to, M msg, std::chrono::milliseconds timeout, Token&& token) {
  using R = typename M::reply;
  return asio::async_initiate<Token, void(result<R>)>(
      [&n, to, timeout](auto handler, M m) {
        using H = decltype(handler);
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
// it unanswered answers the caller with exit ("no_reply"), and a callee that ends with replies
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
std::string dropped_reply_reason(process* owner);
}

template <class R>
void reply_to<R>::drop() {
  if (state_) fail(failure(errc::exit, detail::dropped_reply_reason(owner_)));
}

// Dynamic call: `map` is a msgpack map with a "type" field; the reply comes back encoded.
void call_dynamic(node& n, const pid& to, msgpack::object_handle map,
                  std::chrono::milliseconds timeout,
                  std::function<void(result<msgpack::object_handle>)> done);

}  // namespace otpp
