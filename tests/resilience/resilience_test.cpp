// Resilience policies on virtual time: a manual node on a manual clock, stepped by the test,
// so every delay, window and wait is checked exactly and nothing sleeps.
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <asio/error.hpp>
#include <asio/use_awaitable.hpp>

#include "otpp/resilience.hpp"
#include "otpp/runtime.hpp"

namespace otpp_test {
namespace {

using namespace std::chrono_literals;
using otpp::errc;
using otpp::failure;
using otpp::result;
namespace res = otpp::resilience;

// ---- a scripted operation: completes inline with the next scripted outcome, or, with none
// left, is held until the test completes it. It counts starts and cancellations (a held call
// that is cancelled completes with operation_aborted, as an Asio operation does).
struct script {
  std::deque<result<int>> outcomes;
  std::vector<std::function<void(result<int>)>> held;
  std::vector<otpp::time_point> starts;
  int cancelled = 0;

  void complete(std::size_t i, result<int> r) {
    auto f = std::move(held.at(i));
    held.at(i) = nullptr;
    if (f) f(std::move(r));
  }
};

struct scripted_op {
  otpp::node* node;
  script* s;  // the test owns it (a shared_ptr here would form a cycle through the handler)

  template <class Token>
  auto operator()(Token&& token) const {
    return asio::async_initiate<Token, void(result<int>)>(
        [n = node, s = s](auto h) {
          s->starts.push_back(n->now());
          if (!s->outcomes.empty()) {
            auto r = std::move(s->outcomes.front());
            s->outcomes.pop_front();
            std::move(h)(std::move(r));
            return;
          }
          auto slot = asio::get_associated_cancellation_slot(h);
          auto shared = std::make_shared<decltype(h)>(std::move(h));
          const auto index = s->held.size();
          s->held.push_back([shared](result<int> r) { (*shared)(std::move(r)); });
          if (slot.is_connected()) {
            slot.assign([s, index](asio::cancellation_type) {
              ++s->cancelled;
              s->complete(index, result<int>(failure(asio::error::operation_aborted)));
            });
          }
        },
        token);
  }
};

// Completions a test waits for.
struct outcomes {
  std::vector<result<int>> got;
  auto callback() {
    return [this](result<int> r) { got.push_back(std::move(r)); };
  }
};

struct resilience : ::testing::Test {
  std::shared_ptr<otpp::manual_clock> clock = std::make_shared<otpp::manual_clock>();
  otpp::node node{{.name = "resilience", .clock = clock, .manual = true}};
  script s;
  outcomes out;

  void SetUp() override { node.start(); }
  void step(otpp::clock_type::duration d) {
    node.poll();
    clock->advance(d);
    node.poll();
  }
  scripted_op op() { return {&node, &s}; }
  void script_errors(errc e, int n) {
    for (int i = 0; i < n; ++i) s.outcomes.push_back(result<int>(e));
  }
  void script_values(int n) {
    for (int i = 0; i < n; ++i) s.outcomes.push_back(result<int>(i));
  }
};

// ---- errors

TEST(resilience_errors, ClassifiesTransientAndPermanent) {
  for (auto e : {errc::timeout, errc::nodedown, errc::mailbox_full, errc::connection_closed,
                 errc::circuit_open, errc::bulkhead_full, errc::rate_limited, errc::exit,
                 errc::connection_refused, errc::overloaded})
    EXPECT_TRUE(res::is_transient(e)) << otpp::make_error_code(e).message();
  for (auto e : {errc::bad_message, errc::unknown_behaviour, errc::not_authorised, errc::noproc,
                 errc::invalid_argument, errc::not_serializable, errc::node_stopped})
    EXPECT_EQ(res::classify(e), res::error_class::permanent) << otpp::make_error_code(e).message();
  EXPECT_EQ(res::classify({}), res::error_class::none);
  EXPECT_TRUE(res::is_transient(std::make_error_code(std::errc::connection_reset)));
  EXPECT_FALSE(res::is_transient(asio::error::operation_aborted));
  EXPECT_FALSE(res::is_transient(std::make_error_code(std::errc::permission_denied)));
}

TEST(resilience_errors, NewCodesHaveMessagesAndCircuitOpenSaysWhenToRetry) {
  EXPECT_EQ(otpp::make_error_code(errc::circuit_open).message().rfind("circuit_open", 0), 0u);
  EXPECT_EQ(otpp::make_error_code(errc::bulkhead_full).message().rfind("bulkhead_full", 0), 0u);
  EXPECT_EQ(otpp::make_error_code(errc::rate_limited).message().rfind("rate_limited", 0), 0u);
  failure f(errc::circuit_open, res::circuit_open_reason("db", 1500ms));
  EXPECT_EQ(f.reason, "circuit 'db' open: retry after 1500ms");
  EXPECT_EQ(res::retry_after(f), std::chrono::milliseconds(1500));
  EXPECT_EQ(res::retry_after(failure(errc::timeout, "retry after 5ms")), std::nullopt);
  EXPECT_EQ(res::retry_after(failure(errc::circuit_open, "forced open")), std::nullopt);
}

// ---- retry

TEST_F(resilience, RetryBacksOffExponentiallyAndReturnsTheLastError) {
  std::vector<res::retry_event> events;
  res::retry retry(node, {.max_attempts = 4,
                          .initial_delay = 100ms,
                          .multiplier = 2.0,
                          .max_delay = 300ms,
                          .jitter_kind = res::jitter::none,
                          .on_attempt = [&](const res::retry_event& e) { events.push_back(e); }});
  script_errors(errc::timeout, 3);
  s.outcomes.push_back(result<int>(failure(errc::nodedown, "the last one")));
  const auto t0 = node.now();
  retry.execute(op(), out.callback());
  for (int i = 0; i < 20; ++i) step(50ms);
  ASSERT_EQ(out.got.size(), 1u);
  EXPECT_EQ(out.got[0].error(), errc::nodedown);
  EXPECT_EQ(out.got[0].reason(), "the last one");
  // 100, 200, then 400 capped at 300.
  ASSERT_EQ(s.starts.size(), 4u);
  EXPECT_EQ(s.starts[0] - t0, 0ms);
  EXPECT_EQ(s.starts[1] - t0, 100ms);
  EXPECT_EQ(s.starts[2] - t0, 300ms);
  EXPECT_EQ(s.starts[3] - t0, 600ms);
  ASSERT_EQ(events.size(), 4u);
  EXPECT_TRUE(events[0].will_retry);
  EXPECT_EQ(events[2].delay, 300ms);
  EXPECT_EQ(events[3].attempt, 4);
  EXPECT_FALSE(events[3].will_retry);
}

TEST_F(resilience, RetryStopsOnSuccessAndOnPermanentErrors) {
  res::retry retry(node, {.initial_delay = 10ms, .jitter_kind = res::jitter::none});
  script_errors(errc::timeout, 1);
  script_values(1);
  retry.execute(op(), out.callback());
  step(10ms);
  ASSERT_EQ(out.got.size(), 1u);
  EXPECT_TRUE(out.got[0].has_value());
  EXPECT_EQ(s.starts.size(), 2u);

  script_errors(errc::bad_message, 1);
  retry.execute(op(), out.callback());
  step(1s);
  ASSERT_EQ(out.got.size(), 2u);
  EXPECT_EQ(out.got[1].error(), errc::bad_message);
  EXPECT_EQ(s.starts.size(), 3u);  // not retried

  // A predicate of its own: noproc is worth retrying here (a name being re-registered).
  res::retry by_name(node, {.initial_delay = 10ms,
                            .jitter_kind = res::jitter::none,
                            .retry_on = [](const failure& f) { return f.code == errc::noproc; }});
  script_errors(errc::noproc, 1);
  script_values(1);
  by_name.execute(op(), out.callback());
  step(10ms);
  ASSERT_EQ(out.got.size(), 3u);
  EXPECT_TRUE(out.got[2].has_value());
}

TEST_F(resilience, RetryHonoursItsOverallDeadline) {
  res::retry retry(node, {.max_attempts = 10,
                          .initial_delay = 100ms,
                          .jitter_kind = res::jitter::none,
                          .deadline = 250ms});
  script_errors(errc::timeout, 10);
  retry.execute(op(), out.callback());
  for (int i = 0; i < 20; ++i) step(50ms);
  // Attempts at 0 and 100ms; the next would start at 300ms, past the deadline.
  ASSERT_EQ(out.got.size(), 1u);
  EXPECT_EQ(out.got[0].error(), errc::timeout);
  EXPECT_EQ(s.starts.size(), 2u);
}

TEST_F(resilience, RetryJitterStaysInItsBounds) {
  res::retry full(
      node, {.initial_delay = 100ms, .max_delay = 1s, .jitter_kind = res::jitter::full, .seed = 7});
  std::set<otpp::clock_type::duration> seen;
  for (int attempt = 1; attempt <= 6; ++attempt) {
    const auto bound = std::min<otpp::clock_type::duration>(1s, 100ms * (1 << (attempt - 1)));
    for (int i = 0; i < 200; ++i) {
      auto d = full.backoff(attempt, {});
      ASSERT_GE(d, 0ms);
      ASSERT_LE(d, bound);
      seen.insert(d);
    }
  }
  EXPECT_GT(seen.size(), 100u);  // spread, not one value

  res::retry decorrelated(node, {.initial_delay = 100ms,
                                 .max_delay = 2s,
                                 .jitter_kind = res::jitter::decorrelated,
                                 .seed = 7});
  otpp::clock_type::duration previous = 100ms;
  for (int i = 0; i < 500; ++i) {
    auto d = decorrelated.backoff(i + 1, previous);
    ASSERT_GE(d, 100ms);
    ASSERT_LE(d, std::min<otpp::clock_type::duration>(2s, previous * 3));
    previous = d;
  }
}

// ---- circuit breaker

TEST_F(resilience, BreakerCountWindowOpensHalfOpensWithLimitedTrialsAndCloses) {
  std::vector<std::string> changes;
  res::circuit_breaker breaker(
      node, {.name = "db",
             .window = res::window_kind::count_based,
             .window_size = 4,
             .minimum_calls = 4,
             .failure_rate_threshold = 50,
             .wait_in_open = 1s,
             .half_open_calls = 2,
             .on_state_change = [&](res::breaker_state from, res::breaker_state to) {
               changes.push_back(std::string(res::to_string(from)) + ">" + res::to_string(to));
             }});
  // 1 failure in 4 (25%): stays closed; the window slides: the next 2 failures make 3 in 4.
  script_errors(errc::nodedown, 1);
  script_values(3);
  for (int i = 0; i < 4; ++i) breaker.execute(op(), out.callback());
  EXPECT_EQ(breaker.state(), res::breaker_state::closed);
  EXPECT_EQ(breaker.current().failure_rate, 25.0);
  script_errors(errc::nodedown, 1);
  breaker.execute(op(), out.callback());
  EXPECT_EQ(breaker.state(), res::breaker_state::closed);  // 1 of the last 4
  script_errors(errc::timeout, 1);
  breaker.execute(op(), out.callback());
  EXPECT_EQ(breaker.state(), res::breaker_state::open);  // 2 of the last 4: 50%
  EXPECT_EQ(s.starts.size(), 6u);

  // Open: refused without a call, never inline, with the wait in the reason.
  breaker.execute(op(), out.callback());
  EXPECT_EQ(out.got.size(), 6u);
  step(400ms);
  ASSERT_EQ(out.got.size(), 7u);
  EXPECT_EQ(out.got[6].error(), errc::circuit_open);
  EXPECT_EQ(res::retry_after(out.got[6].fail()), std::chrono::milliseconds(1000));
  EXPECT_EQ(s.starts.size(), 6u);
  breaker.execute(op(), out.callback());
  node.poll();
  EXPECT_EQ(res::retry_after(out.got[7].fail()), std::chrono::milliseconds(600));

  // After the wait: half-open, 2 trials let through (held), the third refused.
  step(600ms);
  breaker.execute(op(), out.callback());
  breaker.execute(op(), out.callback());
  EXPECT_EQ(breaker.state(), res::breaker_state::half_open);
  breaker.execute(op(), out.callback());
  node.poll();
  EXPECT_EQ(out.got.back().error(), errc::circuit_open);
  EXPECT_EQ(s.held.size(), 2u);
  s.complete(0, 1);
  EXPECT_EQ(breaker.state(), res::breaker_state::half_open);
  s.complete(1, 2);
  EXPECT_EQ(breaker.state(), res::breaker_state::closed);
  EXPECT_EQ(changes,
            (std::vector<std::string>{"closed>open", "open>half_open", "half_open>closed"}));
}

TEST_F(resilience, BreakerTimeWindowForgetsOldCallsAndReopensWithAGrowingWait) {
  res::circuit_breaker breaker(node, {.window = res::window_kind::time_based,
                                      .window_size = 2,  // seconds
                                      .minimum_calls = 3,
                                      .failure_rate_threshold = 60,
                                      .wait_in_open = 1s,
                                      .wait_multiplier = 2.0,
                                      .max_wait_in_open = 3s,
                                      .half_open_calls = 1});
  script_errors(errc::nodedown, 2);
  breaker.execute(op(), out.callback());
  breaker.execute(op(), out.callback());
  step(3s);  // those two leave the window
  script_errors(errc::nodedown, 2);
  breaker.execute(op(), out.callback());
  breaker.execute(op(), out.callback());
  EXPECT_EQ(breaker.current().calls, 2u);
  EXPECT_EQ(breaker.state(), res::breaker_state::closed);  // 2 calls: under minimum_calls
  step(1s);                                                // still in the 2 s window
  script_errors(errc::nodedown, 1);
  breaker.execute(op(), out.callback());
  EXPECT_EQ(breaker.state(), res::breaker_state::open);
  const auto opened = node.now();
  EXPECT_EQ(breaker.open_until() - opened, 1s);

  // A failing trial reopens it for 2 s, then 3 s (capped), and a good one closes it.
  step(1s);
  script_errors(errc::timeout, 1);
  breaker.execute(op(), out.callback());
  EXPECT_EQ(breaker.state(), res::breaker_state::open);
  EXPECT_EQ(breaker.open_until() - node.now(), 2s);
  step(2s);
  script_errors(errc::timeout, 1);
  breaker.execute(op(), out.callback());
  EXPECT_EQ(breaker.open_until() - node.now(), 3s);
  step(3s);
  script_values(1);
  breaker.execute(op(), out.callback());
  EXPECT_EQ(breaker.state(), res::breaker_state::closed);
  EXPECT_EQ(breaker.current().calls, 0u);  // a fresh window
}

TEST_F(resilience, BreakerOpensOnSlowCalls) {
  res::circuit_breaker breaker(node, {.window_size = 4,
                                      .minimum_calls = 4,
                                      .slow_call_rate_threshold = 50,
                                      .slow_call_duration = 1s});
  for (int i = 0; i < 4; ++i) breaker.execute(op(), out.callback());
  s.complete(0, 0);
  s.complete(1, 1);
  step(1s);
  s.complete(2, 2);
  EXPECT_EQ(breaker.state(), res::breaker_state::closed);
  s.complete(3, 3);  // 2 of 4 took 1 s: slow
  EXPECT_EQ(breaker.current().slow_rate, 50.0);
  EXPECT_EQ(breaker.state(), res::breaker_state::open);
  EXPECT_EQ(out.got.size(), 4u);  // every one answered, with its value
  EXPECT_TRUE(out.got[3].has_value());
}

TEST_F(resilience, BreakerCountsOnlyChosenErrorsAndObeysManualControl) {
  res::circuit_breaker breaker(node, {.window_size = 2, .minimum_calls = 2});
  script_errors(errc::bad_message, 4);    // permanent: the caller's fault, ignored
  script_errors(errc::bulkhead_full, 2);  // a local refusal: the target was not asked
  for (int i = 0; i < 6; ++i) breaker.execute(op(), out.callback());
  EXPECT_EQ(breaker.state(), res::breaker_state::closed);
  EXPECT_EQ(breaker.current().calls, 0u);

  breaker.force_open();
  breaker.execute(op(), out.callback());
  node.poll();
  EXPECT_EQ(out.got.back().error(), errc::circuit_open);
  EXPECT_EQ(s.starts.size(), 6u);
  step(1h);
  EXPECT_EQ(breaker.state(), res::breaker_state::forced_open);  // no wait ends it

  breaker.disable();
  script_errors(errc::timeout, 4);
  for (int i = 0; i < 4; ++i) breaker.execute(op(), out.callback());
  EXPECT_EQ(breaker.state(), res::breaker_state::disabled);
  EXPECT_EQ(s.starts.size(), 10u);

  breaker.reset();
  script_errors(errc::timeout, 2);
  breaker.execute(op(), out.callback());
  breaker.execute(op(), out.callback());
  EXPECT_EQ(breaker.state(), res::breaker_state::open);

  // A predicate of its own: bad_message counts too.
  res::circuit_breaker strict(node, {.window_size = 2,
                                     .minimum_calls = 2,
                                     .record_failure = [](const failure&) { return true; }});
  script_errors(errc::bad_message, 2);
  strict.execute(op(), out.callback());
  strict.execute(op(), out.callback());
  EXPECT_EQ(strict.state(), res::breaker_state::open);
}

// ---- bulkhead

TEST_F(resilience, BulkheadQueuesRefusesAndTimesOutWaiters) {
  res::bulkhead bulkhead(node,
                         {.name = "pool", .max_concurrent = 2, .max_queue = 2, .max_wait = 100ms});
  for (int i = 0; i < 5; ++i) bulkhead.execute(op(), out.callback());
  EXPECT_EQ(bulkhead.in_flight(), 2u);
  EXPECT_EQ(bulkhead.waiting(), 2u);
  EXPECT_EQ(s.starts.size(), 2u);
  node.poll();
  ASSERT_EQ(out.got.size(), 1u);  // the fifth: queue full
  EXPECT_EQ(out.got[0].error(), errc::bulkhead_full);
  EXPECT_NE(out.got[0].reason().find("wait queue full"), std::string::npos);

  // A slot frees: the first waiter takes it (on the node's pool).
  s.complete(0, 10);
  node.poll();
  EXPECT_EQ(s.starts.size(), 3u);
  EXPECT_EQ(bulkhead.waiting(), 1u);
  EXPECT_EQ(bulkhead.in_flight(), 2u);

  // The other waiter waits out its 100 ms.
  step(99ms);
  EXPECT_EQ(out.got.size(), 2u);
  step(1ms);
  ASSERT_EQ(out.got.size(), 3u);
  EXPECT_EQ(out.got[2].error(), errc::bulkhead_full);
  EXPECT_NE(out.got[2].reason().find("waited 100ms"), std::string::npos);
  EXPECT_EQ(bulkhead.waiting(), 0u);

  s.complete(1, 11);
  s.complete(2, 12);
  node.poll();
  EXPECT_EQ(bulkhead.in_flight(), 0u);
  EXPECT_EQ(s.starts.size(), 3u);

  res::bulkhead no_queue(node, {.max_concurrent = 1});
  no_queue.execute(op(), out.callback());
  no_queue.execute(op(), out.callback());
  node.poll();
  EXPECT_EQ(out.got.back().error(), errc::bulkhead_full);
}

// ---- rate limiter

TEST_F(resilience, RateLimiterRefillsEachPeriodAndWaitsWithinItsBound) {
  res::rate_limiter limiter(node, {.capacity = 2, .refill = 1, .refill_period = 100ms});
  script_values(10);
  for (int i = 0; i < 3; ++i) limiter.execute(op(), out.callback());
  node.poll();
  ASSERT_EQ(out.got.size(), 3u);
  EXPECT_EQ(s.starts.size(), 2u);
  EXPECT_EQ(out.got[2].error(), errc::rate_limited);
  EXPECT_NE(out.got[2].reason().find("next permit in 100ms"), std::string::npos);
  step(100ms);
  EXPECT_EQ(limiter.available(), 1u);
  step(500ms);
  EXPECT_EQ(limiter.available(), 2u);  // capped at capacity

  res::rate_limiter waiting(
      node, {.capacity = 1, .refill = 1, .refill_period = 100ms, .max_wait = 150ms});
  const auto t0 = node.now();
  for (int i = 0; i < 3; ++i) waiting.execute(op(), out.callback());
  node.poll();
  // First now; second reserves the permit of 100 ms; third would wait 200 ms > 150 ms.
  EXPECT_EQ(s.starts.size(), 3u);
  EXPECT_EQ(out.got.back().error(), errc::rate_limited);
  step(99ms);
  EXPECT_EQ(s.starts.size(), 3u);
  step(1ms);
  ASSERT_EQ(s.starts.size(), 4u);
  EXPECT_EQ(s.starts.back() - t0, 100ms);
  EXPECT_TRUE(out.got.back().has_value());
}

// ---- timeout

TEST_F(resilience, TimeoutCancelsTheCallAndDropsItsLateResult) {
  res::timeout limit(node, 200ms);
  limit.execute(op(), out.callback());
  step(199ms);
  EXPECT_TRUE(out.got.empty());
  step(1ms);
  ASSERT_EQ(out.got.size(), 1u);
  EXPECT_EQ(out.got[0].error(), errc::timeout);
  EXPECT_EQ(s.cancelled, 1);  // the slot was emitted; the op's operation_aborted was dropped
  EXPECT_EQ(out.got.size(), 1u);

  // In time: the value, and no timeout later.
  limit.execute(op(), out.callback());
  s.complete(1, 5);
  step(1s);
  ASSERT_EQ(out.got.size(), 2u);
  EXPECT_EQ(*out.got[1], 5);
  EXPECT_EQ(s.cancelled, 1);
  EXPECT_EQ(limit.in_flight(), 0u);

  // Calls started at different times each get their own 200 ms (one timer serves them all).
  limit.execute(op(), out.callback());  // held 2
  step(50ms);
  limit.execute(op(), out.callback());  // held 3
  step(50ms);
  limit.execute(op(), out.callback());  // held 4
  s.complete(3, 6);                     // the middle one answers in time
  EXPECT_EQ(limit.in_flight(), 2u);
  step(100ms);  // 200 ms after the first
  ASSERT_EQ(out.got.size(), 4u);
  EXPECT_EQ(*out.got[2], 6);
  EXPECT_EQ(out.got[3].error(), errc::timeout);
  step(99ms);
  EXPECT_EQ(out.got.size(), 4u);
  step(1ms);  // 200 ms after the third
  ASSERT_EQ(out.got.size(), 5u);
  EXPECT_EQ(out.got[4].error(), errc::timeout);
  EXPECT_EQ(s.cancelled, 3);
  EXPECT_EQ(limit.in_flight(), 0u);
}

// ---- fallback

TEST_F(resilience, FallbackRunsOnlyOnChosenErrors) {
  int asked = 0;
  res::fallback cached(
      [&](const failure&) -> result<int> {
        ++asked;
        return 42;
      },
      [](const failure& f) { return f.code == errc::nodedown; });
  script_errors(errc::nodedown, 1);
  script_errors(errc::bad_message, 1);
  script_values(1);
  for (int i = 0; i < 3; ++i) cached.execute(op(), out.callback());
  ASSERT_EQ(out.got.size(), 3u);
  EXPECT_EQ(*out.got[0], 42);
  EXPECT_EQ(out.got[1].error(), errc::bad_message);
  EXPECT_EQ(*out.got[2], 0);
  EXPECT_EQ(asked, 1);  // lazily: only when chosen

  // Another asynchronous call as the alternative.
  script other;
  other.outcomes.push_back(result<int>(7));
  res::fallback elsewhere([&](const failure&, auto&& token) {
    return scripted_op{&node, &other}(std::forward<decltype(token)>(token));
  });
  script_errors(errc::timeout, 1);
  elsewhere.execute(op(), out.callback());
  ASSERT_EQ(out.got.size(), 4u);
  EXPECT_EQ(*out.got[3], 7);
  EXPECT_EQ(other.starts.size(), 1u);
}

// ---- composition

TEST_F(resilience, OrderMatters) {
  // Retry outside the breaker: the breaker sees every attempt and opens; the retry's later
  // attempts get circuit_open. Breaker outside the retry: it sees one call.
  res::breaker_options bo{.window_size = 3, .minimum_calls = 3, .wait_in_open = 10s};
  res::retry_options ro{.max_attempts = 5,
                        .initial_delay = 10ms,
                        .multiplier = 1.0,
                        .jitter_kind = res::jitter::none};
  {
    res::circuit_breaker breaker(node, bo);
    res::pipeline outer_retry(res::retry(node, ro), breaker);
    script_errors(errc::timeout, 10);
    outer_retry.execute(op(), out.callback());
    for (int i = 0; i < 10; ++i) step(10ms);
    ASSERT_EQ(out.got.size(), 1u);
    EXPECT_EQ(out.got[0].error(), errc::circuit_open);  // the last attempt's error
    EXPECT_EQ(s.starts.size(), 3u);
    EXPECT_EQ(breaker.state(), res::breaker_state::open);
  }
  s = {};
  {
    res::circuit_breaker breaker(node, bo);
    res::pipeline outer_breaker(breaker, res::retry(node, ro));
    script_errors(errc::timeout, 10);
    outer_breaker.execute(op(), out.callback());
    for (int i = 0; i < 10; ++i) step(10ms);
    ASSERT_EQ(out.got.size(), 2u);
    EXPECT_EQ(out.got[1].error(), errc::timeout);
    EXPECT_EQ(s.starts.size(), 5u);
    EXPECT_EQ(breaker.state(), res::breaker_state::closed);
    EXPECT_EQ(breaker.current().calls, 1u);
  }
  // Timeout inside the retry bounds each attempt (the retry tries again); outside, the whole.
  s = {};
  {
    res::pipeline per_attempt(
        res::retry(node,
                   {.max_attempts = 3, .initial_delay = 10ms, .jitter_kind = res::jitter::none}),
        res::timeout(node, 100ms));
    per_attempt.execute(op(), out.callback());
    for (int i = 0; i < 40; ++i) step(10ms);
    ASSERT_EQ(out.got.size(), 3u);
    EXPECT_EQ(out.got[2].error(), errc::timeout);
    EXPECT_EQ(s.starts.size(), 3u);
    EXPECT_EQ(s.cancelled, 3);
  }
  s = {};
  {
    res::pipeline whole(
        res::timeout(node, 100ms),
        res::retry(node,
                   {.max_attempts = 3, .initial_delay = 10ms, .jitter_kind = res::jitter::none}));
    whole.execute(op(), out.callback());
    for (int i = 0; i < 40; ++i) step(10ms);
    ASSERT_EQ(out.got.size(), 4u);
    EXPECT_EQ(out.got[3].error(), errc::timeout);
    EXPECT_EQ(s.starts.size(), 1u);
  }
}

// ---- the default pipeline around otpp::call, awaited by a coroutine handler

struct ask {
  static constexpr std::string_view tag = "ask";
  using reply = int;
  int x = 0;
  MSGPACK_DEFINE_MAP(x)
};
// Fails the first call with each x with a transient error.
class flaky : public otpp::gen_server<flaky> {
 public:
  static void define_handlers(otpp::handlers<flaky>& h) {
    h.call<ask>([](flaky& self, ask a) -> result<int> {
      if (self.seen_.insert(a.x).second) return failure(errc::mailbox_full, "first time");
      return a.x * 2;
    });
  }

 private:
  std::set<int> seen_;
};
struct via_pipeline {
  static constexpr std::string_view tag = "via_pipeline";
  using reply = int;
  otpp::pid target;
  MSGPACK_DEFINE_MAP(target)
};
using value_fallback = res::fallback<std::function<result<int>(const failure&)>>;
using default_pipeline = res::pipeline<value_fallback, res::retry, res::circuit_breaker,
                                       res::rate_limiter, res::timeout, res::bulkhead>;
class client : public otpp::gen_server<client> {
 public:
  explicit client(std::shared_ptr<default_pipeline> p) : pipeline_(std::move(p)) {}
  static void define_handlers(otpp::handlers<client>& h) {
    h.call<via_pipeline>([](client& self, via_pipeline m) -> asio::awaitable<int> {
      auto& n = self.this_node();
      auto call = [&n, to = m.target](auto&& token) {
        ask question{21};
        return otpp::call(n, to, std::move(question), 500ms, std::forward<decltype(token)>(token));
      };
      auto r = co_await self.pipeline_->execute(call, asio::use_awaitable);
      co_return r ? *r : -100;
    });
  }

 private:
  std::shared_ptr<default_pipeline> pipeline_;
};

TEST_F(resilience, DefaultPipelineFromACoroutineHandler) {
  auto pipeline = std::make_shared<default_pipeline>(
      value_fallback([](const failure&) -> result<int> { return -1; }),
      res::retry(node, {.initial_delay = 10ms, .jitter_kind = res::jitter::none}),
      res::circuit_breaker(node), res::rate_limiter(node), res::timeout(node, 1s),
      res::bulkhead(node));
  auto target = node.spawn<flaky>();
  auto c = node.spawn<client>(pipeline);
  ASSERT_TRUE(target && c);
  otpp::call(node, *c, via_pipeline{*target}, 5s, out.callback());
  for (int i = 0; i < 10 && out.got.empty(); ++i) step(10ms);
  ASSERT_EQ(out.got.size(), 1u);
  ASSERT_TRUE(out.got[0].has_value()) << out.got[0].fail().message();
  EXPECT_EQ(*out.got[0], 42);  // the first attempt failed with mailbox_full, the retry won
}

// A process thread may not wait on a future (it could be the thread the call needs).
struct block_on_future {
  static constexpr std::string_view tag = "block_on_future";
  using reply = int;
  OTPP_NO_FIELDS()
};
class blocker : public otpp::gen_server<blocker> {
 public:
  explicit blocker(res::circuit_breaker b) : breaker_(std::move(b)) {}
  static void define_handlers(otpp::handlers<blocker>& h) {
    h.call<block_on_future>([](blocker& self, block_on_future) -> result<int> {
      auto op = [](auto&& token) {
        return asio::async_initiate<decltype(token), void(result<int>)>(
            [](auto h) { std::move(h)(result<int>(1)); }, token);
      };
      return self.breaker_.execute(op, asio::use_future).get();
    });
  }

 private:
  res::circuit_breaker breaker_;
};

TEST_F(resilience, UseFutureOnAProcessThreadIsRefusedWithWouldBlock) {
  auto p = node.spawn<blocker>(res::circuit_breaker(node));
  ASSERT_TRUE(p);
  otpp::call(node, *p, block_on_future{}, 5s, out.callback());
  node.poll();
  ASSERT_EQ(out.got.size(), 1u);
  EXPECT_EQ(out.got[0].error(), errc::would_block);
}

// ---- shared between processes on a threaded node (real time; run under TSan in CI)

struct run_many {
  static constexpr std::string_view tag = "run_many";
  using reply = int;
  otpp::pid target;
  int calls = 0;
  int base = 0;  // asks base, base + 1, ...
  MSGPACK_DEFINE_MAP(target, calls, base)
};
// Runs `calls` sequential calls through the shared pipeline; replies how many succeeded.
class worker : public otpp::gen_server<worker> {
 public:
  explicit worker(std::shared_ptr<default_pipeline> p) : pipeline_(std::move(p)) {}
  static void define_handlers(otpp::handlers<worker>& h) {
    h.call<run_many>([](worker& self, run_many m) -> asio::awaitable<int> {
      auto& n = self.this_node();
      int ok = 0;
      for (int i = 0; i < m.calls; ++i) {
        auto call = [&n, to = m.target, x = m.base + i](auto&& token) {
          ask question{x};
          return otpp::call(n, to, std::move(question), 20s, std::forward<decltype(token)>(token));
        };
        auto r = co_await self.pipeline_->execute(call, asio::use_awaitable);
        if (r && *r == 2 * (m.base + i)) ++ok;
      }
      co_return ok;
    });
  }

 private:
  std::shared_ptr<default_pipeline> pipeline_;
};

TEST(resilience_threads, OnePipelineSharedByManyProcesses) {
  otpp::node node({.name = "resilience_threads", .threads = 2});
  node.start();
  res::bulkhead bulkhead(node, {.max_concurrent = 2, .max_queue = 64, .max_wait = 20s});
  res::circuit_breaker breaker(node, {.window_size = 50, .minimum_calls = 1000});
  auto pipeline = std::make_shared<default_pipeline>(
      value_fallback([](const failure&) -> result<int> { return -1; }),
      res::retry(node, {.max_attempts = 5, .initial_delay = 1ms, .max_delay = 5ms}), breaker,
      res::rate_limiter(node, {.capacity = 100000, .refill = 100000}), res::timeout(node, 20s),
      bulkhead);
  auto target = node.spawn<flaky>();
  ASSERT_TRUE(target);
  std::vector<std::future<result<int>>> runs;
  for (int w = 0; w < 6; ++w) {
    auto p = node.spawn<worker>(pipeline);
    ASSERT_TRUE(p);
    runs.push_back(otpp::call(node, *p, run_many{*target, 40, 1000 * w}, 60s, asio::use_future));
  }
  for (auto& f : runs) {
    auto r = f.get();
    ASSERT_TRUE(r) << r.fail().message();
    EXPECT_EQ(*r, 40);  // every call fails once and its retry wins
  }
  EXPECT_EQ(bulkhead.in_flight(), 0u);
  EXPECT_EQ(bulkhead.waiting(), 0u);
  EXPECT_EQ(breaker.state(), res::breaker_state::closed);
  EXPECT_EQ(breaker.current().calls, 50u);  // the window is full: it saw the attempts
  node.stop();
}

}  // namespace
}  // namespace otpp_test
