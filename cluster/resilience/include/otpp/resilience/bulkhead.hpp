// bulkhead: at most max_concurrent calls in flight; up to max_queue more wait (FIFO) at most
// max_wait each for a free slot. A call that finds the queue full, or waits out max_wait,
// completes with bulkhead_full. Waiting takes no thread: a waiter is a queued continuation.
// A waiter whose cancellation slot is emitted leaves the queue at once with
// operation_canceled; once it runs, the slot is its operation's.
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "otpp/resilience/async.hpp"
#include "otpp/resilience/errors.hpp"

namespace otpp::resilience {

struct bulkhead_options {
  std::string name = "bulkhead";
  std::size_t max_concurrent = 25;
  std::size_t max_queue = 0;  // waiters beyond max_concurrent; 0: refuse at once when full
  clock_type::duration max_wait = std::chrono::seconds(1);
};

class bulkhead {
 public:
  bulkhead(node& n, bulkhead_options o = {});

  template <class Op, class Token>
  auto execute(const Op& op, Token&& token) const;

  std::size_t in_flight() const;
  std::size_t waiting() const;
  const bulkhead_options& options() const noexcept;
  // A listener added later (metrics): calls refused with bulkhead_full (queue full or wait
  // over). Runs on the thread of the refusal, bulkhead unlocked.
  void add_refusal_listener(std::function<void(const failure&)> f) const;

  // The parts execute uses. try_enter: a slot now (true), else false. enqueue: `start` runs
  // (on a node thread) with {} once it holds a slot, or with bulkhead_full when the queue is
  // full (at once, never inline) or max_wait passed; it returns the waiter's id (0: not
  // queued). withdraw: takes waiter `id` out of the queue, running its start with
  // operation_canceled (false: it left the queue already). leave: frees a finished call's slot.
  bool try_enter() const;
  std::uint64_t enqueue(std::function<void(result<void>)> start) const;
  bool withdraw(std::uint64_t id) const;
  void leave() const;

 private:
  node& owner() const;
  // The handler of an operation holding a slot: frees it, then completes the caller. A named
  // type exposing the caller's cancellation slot, rather than a lambda in
  // asio::bind_cancellation_slot, which would move the nested handler once more.
  template <class Handler>
  struct call_handler;
  struct core;
  std::shared_ptr<core> core_;
};

template <class Handler>
struct bulkhead::call_handler {
  using cancellation_slot_type = asio::associated_cancellation_slot_t<Handler>;
  cancellation_slot_type get_cancellation_slot() const noexcept {
    return asio::get_associated_cancellation_slot(handler);
  }
  template <class R>
  void operator()(R&& r) {
    self.leave();
    detail::complete(handler, std::forward<R>(r));
  }
  bulkhead self;
  Handler handler;
};

template <class Op, class Token>
auto bulkhead::execute(const Op& op, Token&& token) const {
  using T = op_value_t<Op>;
  // The policy borrowed while initiating (detail::initiate); handlers get their own copies.
  return detail::initiate<void(result<T>)>(
      *this, op, std::forward<Token>(token),
      [](auto&& handler, const auto& op, const bulkhead& self) {
        using H = std::decay_t<decltype(handler)>;
        if (detail::refuse_blocking_wait<Token, T>(handler)) return;
        if (self.try_enter()) {  // the common case: no allocation, no copy of op
          op(call_handler<H>{self, std::move(handler)});
          return;
        }
        // Waits: op and handler move to the heap until a slot frees or the wait ends.
        using O = std::decay_t<decltype(op)>;
        struct waiter {
          O operation;
          H handler;
          std::atomic<std::uint64_t> id{0};
        };
        std::shared_ptr<waiter> w(new waiter{op, std::move(handler)});
        // Before enqueueing: once queued, the waiter may enter and its operation take the slot.
        auto slot = detail::slot_of(w->handler);
        if (slot.is_connected()) {
          slot.assign([self, weak = std::weak_ptr<waiter>(w)](asio::cancellation_type) {
            if (auto waiting = weak.lock()) self.withdraw(waiting->id.load());
          });
        }
        w->id = self.enqueue([self, w](result<void> entered) {
          if (!entered) {
            detail::complete(w->handler, result<T>(entered.fail()));
            return;
          }
          auto slot = detail::slot_of(w->handler);
          w->operation(asio::bind_cancellation_slot(slot, [self, w](auto&& r) mutable {
            self.leave();
            detail::complete(w->handler, std::forward<decltype(r)>(r));
          }));
        });
      });
}

}  // namespace otpp::resilience
