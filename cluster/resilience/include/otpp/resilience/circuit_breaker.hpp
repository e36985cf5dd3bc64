// circuit_breaker: stops calling a failing target for a while. Closed, it records outcomes in
// a sliding window (the last N calls, or the last N seconds) and opens when, over at least
// minimum_calls, the failure rate or the slow-call rate reaches its threshold. Open, it refuses
// calls at once with circuit_open (the reason says when to retry: see retry_after()). After
// wait_in_open it lets half_open_calls trial calls through (half-open): they close it again, or
// reopen it (the wait growing by wait_multiplier, up to max_wait_in_open).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "otpp/resilience/async.hpp"
#include "otpp/resilience/errors.hpp"

namespace otpp::resilience {

enum class breaker_state { closed, open, half_open, disabled, forced_open };
const char* to_string(breaker_state s) noexcept;

enum class window_kind {
  count_based,  // the last window_size calls
  time_based,   // the calls of the last window_size seconds (one bucket per second)
};

struct breaker_options {
  std::string name = "breaker";  // in circuit_open reasons and logs
  window_kind window = window_kind::count_based;
  std::size_t window_size = 100;
  std::size_t minimum_calls = 10;        // no verdict on fewer calls than this in the window
  double failure_rate_threshold = 50.0;  // percent
  // percent; 100: only when every call is slow. Slow: took at least slow_call_duration.
  double slow_call_rate_threshold = 100.0;
  clock_type::duration slow_call_duration = std::chrono::seconds(60);
  clock_type::duration wait_in_open = std::chrono::seconds(60);
  double wait_multiplier = 1.0;             // each reopening from half-open multiplies the wait
  clock_type::duration max_wait_in_open{};  // cap of the growing wait; zero: no cap
  std::size_t half_open_calls = 10;         // trial calls let through in half-open
  // Which failures count against the target; empty: transient ones (is_transient) except the
  // refusals of local policies (circuit_open, bulkhead_full, rate_limited: the call never
  // reached the target). Other failures are ignored (neither success nor failure): a
  // caller's bad message says nothing about the target's health.
  std::function<bool(const failure&)> record_failure{};
  // Every transition (also the manual ones); runs on the thread that made it, breaker unlocked.
  std::function<void(breaker_state from, breaker_state to)> on_state_change{};
};

class circuit_breaker {
 public:
  circuit_breaker(node& n, breaker_options o = {});

  // Runs op (async.hpp) if the breaker permits it, else completes `token` with circuit_open
  // (never inline). The outcome and the call's duration (node clock) are recorded.
  template <class Op, class Token>
  auto execute(const Op& op, Token&& token) const;

  breaker_state state() const;
  // Figures of the current window (closed) or trials (half-open).
  struct metrics {
    std::size_t calls = 0, failures = 0, slow = 0;
    double failure_rate = -1, slow_rate = -1;  // percent; -1 under minimum_calls
  };
  metrics current() const;
  // When an open breaker lets trial calls through; the epoch when not open.
  time_point open_until() const;

  void force_open();  // refuses everything until reset()
  void disable();     // permits everything and records nothing until reset()
  void reset();       // closed, with an empty window and the initial wait
  const breaker_options& options() const noexcept;
  // Listeners added later (metrics): transitions (after options().on_state_change), and calls
  // refused with circuit_open. Run on the thread of the event, breaker unlocked.
  void add_listener(std::function<void(breaker_state from, breaker_state to)> f) const;
  void add_refusal_listener(std::function<void(const failure&)> f) const;

  // The parts execute uses (public for tests and other policies). acquire: a permit, or the
  // circuit_open failure; record: the outcome of a permitted call.
  struct permit {
    std::uint64_t generation = 0;  // outcomes of calls permitted before a transition are dropped
    time_point start{};
  };
  result<permit> acquire() const;
  void record(const permit& p, const failure* error) const;  // error: null on success

 private:
  node& owner() const;
  // The operation's handler: records the outcome, then completes the caller. A named type
  // exposing the caller's cancellation slot, rather than a lambda in
  // asio::bind_cancellation_slot, which would move the nested handler once more.
  template <class Handler>
  struct call_handler;
  class core;
  std::shared_ptr<core> core_;
};

template <class Handler>
struct circuit_breaker::call_handler {
  using cancellation_slot_type = asio::associated_cancellation_slot_t<Handler>;
  cancellation_slot_type get_cancellation_slot() const noexcept {
    return asio::get_associated_cancellation_slot(handler);
  }
  template <class R>
  void operator()(R&& r) {
    self.record(p, r ? nullptr : &r.fail());
    detail::complete(handler, std::forward<R>(r));
  }
  circuit_breaker self;
  permit p;
  Handler handler;
};

template <class Op, class Token>
auto circuit_breaker::execute(const Op& op, Token&& token) const {
  using T = op_value_t<Op>;
  // The policy borrowed while initiating (detail::initiate); the handler gets its own copy.
  return detail::initiate<void(result<T>)>(
      *this, op, std::forward<Token>(token),
      [](auto&& handler, const auto& op, const circuit_breaker& self) {
        if (detail::refuse_blocking_wait<Token, T>(handler)) return;
        auto p = self.acquire();
        if (!p) {
          detail::complete_later(self.owner(), handler, result<T>(p.fail()));
          return;
        }
        op(call_handler<std::decay_t<decltype(handler)>>{self, *p, std::move(handler)});
      });
}

}  // namespace otpp::resilience
