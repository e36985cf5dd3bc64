// Cancellation, hedging and domain errors on virtual time: a manual node on a manual clock,
// stepped by the test. otpp::call honours its handler's cancellation slot; retry's wait and a
// bulkhead's queue react to cancellation; hedge races attempts; a handler's domain error
// reaches its caller as a value of its own that breakers do not count.
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/error.hpp>

#include "holding_shop.hpp"
#include "otpp/resilience.hpp"
#include "otpp/runtime.hpp"

namespace otpp_test {
namespace {

using namespace std::chrono_literals;
using otpp::errc;
using otpp::failure;
using otpp::result;
namespace res = otpp::resilience;

struct outcomes {
  std::vector<result<int>> got;
  auto callback() {
    return [this](result<int> r) { got.push_back(std::move(r)); };
  }
};

// A scripted operation (as in resilience_test.cpp): the next scripted outcome inline, or held
// until the test completes it; a held one that is cancelled completes with operation_aborted.
struct script {
  std::deque<result<int>> outcomes;
  std::vector<std::function<void(result<int>)>> held;
  std::vector<std::size_t> targets;  // indexed ops: the target index of each start
  int cancelled = 0;
  void complete(std::size_t i, result<int> r) {
    auto f = std::move(held.at(i));
    held.at(i) = nullptr;
    if (f) f(std::move(r));
  }
  template <class Handler>
  void start(Handler h) {
    if (!outcomes.empty()) {
      auto r = std::move(outcomes.front());
      outcomes.pop_front();
      std::move(h)(std::move(r));
      return;
    }
    auto slot = asio::get_associated_cancellation_slot(h);
    auto shared = std::make_shared<Handler>(std::move(h));
    const auto index = held.size();
    held.push_back([shared](result<int> r) { (*shared)(std::move(r)); });
    if (slot.is_connected()) {
      slot.assign([this, index](asio::cancellation_type) {
        ++cancelled;
        complete(index, result<int>(failure(asio::error::operation_aborted)));
      });
    }
  }
};
struct scripted_op {
  script* s;
  template <class Token>
  auto operator()(Token&& token) const {
    return asio::async_initiate<Token, void(result<int>)>(
        [s = s](auto h) { s->start(std::move(h)); }, token);
  }
};
struct indexed_op {
  script* s;
  template <class Token>
  auto operator()(std::size_t target, Token&& token) const {
    return asio::async_initiate<Token, void(result<int>)>(
        [s = s, target](auto h) {
          s->targets.push_back(target);
          s->start(std::move(h));
        },
        token);
  }
};

struct cancellation : ::testing::Test {
  std::shared_ptr<otpp::manual_clock> clock = std::make_shared<otpp::manual_clock>();
  otpp::node node{{.name = "cancel", .clock = clock, .manual = true}};
  script s;
  outcomes out;

  void SetUp() override { node.start(); }
  void step(otpp::clock_type::duration d) {
    node.poll();
    clock->advance(d);
    node.poll();
  }
  int release_held(const otpp::pid& p) {
    std::vector<result<int>> r;
    otpp::call(node, p, answer_held{7}, 1s, [&](result<int> x) { r.push_back(std::move(x)); });
    node.poll();
    EXPECT_EQ(r.size(), 1u);
    return r.empty() || !r[0] ? -1 : *r[0];
  }
};

// ---- otpp::call and its cancellation slot

TEST_F(cancellation, LocalCallCompletesWithOperationCanceledAndDropsTheLateReply) {
  auto p = node.spawn<shop>();
  ASSERT_TRUE(p);
  asio::cancellation_signal signal;
  otpp::call(node, *p, hold{}, 10s, asio::bind_cancellation_slot(signal.slot(), out.callback()));
  node.poll();
  EXPECT_TRUE(out.got.empty());
  signal.emit(asio::cancellation_type::terminal);
  node.poll();
  ASSERT_EQ(out.got.size(), 1u);
  EXPECT_EQ(out.got[0].error(), errc::operation_canceled);
  // The shop's reply comes too late: nobody wants it, and nothing else completes.
  EXPECT_EQ(release_held(*p), 0);
  step(20s);  // its own timeout was disarmed
  EXPECT_EQ(out.got.size(), 1u);

  // total cancellation is not honoured (the request may have been handled): it answers.
  otpp::call(node, *p, hold{}, 10s, asio::bind_cancellation_slot(signal.slot(), out.callback()));
  node.poll();
  signal.emit(asio::cancellation_type::total);
  node.poll();
  EXPECT_EQ(out.got.size(), 1u);
  EXPECT_EQ(release_held(*p), 1);
  node.poll();
  ASSERT_EQ(out.got.size(), 2u);
  EXPECT_EQ(*out.got[1], 7);

  // Emitted after the call completed: nothing happens.
  signal.emit(asio::cancellation_type::terminal);
  node.poll();
  EXPECT_EQ(out.got.size(), 2u);
}

TEST_F(cancellation, TimeoutPolicyCancelsALocalCall) {
  auto p = node.spawn<shop>();
  ASSERT_TRUE(p);
  res::timeout limit(node, 100ms);
  auto op = [&](auto&& token) {
    return otpp::call(node, *p, hold{}, 30s, std::forward<decltype(token)>(token));
  };
  limit.execute(op, out.callback());
  step(99ms);
  EXPECT_TRUE(out.got.empty());
  step(1ms);
  ASSERT_EQ(out.got.size(), 1u);
  EXPECT_EQ(out.got[0].error(), errc::timeout);
  EXPECT_EQ(release_held(*p), 0);  // the call was cancelled, not left to wait 30 s
  step(31s);
  EXPECT_EQ(out.got.size(), 1u);
}

// ---- retry and bulkhead waits

TEST_F(cancellation, RetryWaitEndsOnCancellation) {
  s.outcomes = {result<int>(errc::nodedown), result<int>(errc::nodedown)};
  res::retry retry(node,
                   {.max_attempts = 3, .initial_delay = 100ms, .jitter_kind = res::jitter::none});
  asio::cancellation_signal signal;
  retry.execute(scripted_op{&s}, asio::bind_cancellation_slot(signal.slot(), out.callback()));
  node.poll();
  EXPECT_TRUE(out.got.empty());  // waiting 100 ms after the first failure
  step(50ms);
  signal.emit(asio::cancellation_type::terminal);
  ASSERT_EQ(out.got.size(), 1u);
  EXPECT_EQ(out.got[0].error(), errc::operation_canceled);
  step(1s);  // no further attempt
  EXPECT_EQ(s.outcomes.size(), 1u);
  EXPECT_EQ(out.got.size(), 1u);

  // Cancelled during an attempt: the attempt gets the slot; its cancellation is not retried.
  s.outcomes.clear();
  res::retry everything(
      node,
      {.max_attempts = 3, .initial_delay = 10ms, .retry_on = [](const failure&) { return true; }});
  everything.execute(scripted_op{&s}, asio::bind_cancellation_slot(signal.slot(), out.callback()));
  signal.emit(asio::cancellation_type::terminal);
  EXPECT_EQ(s.cancelled, 1);
  step(1s);
  EXPECT_EQ(s.held.size(), 1u);  // no second attempt
  ASSERT_EQ(out.got.size(), 2u);
  EXPECT_EQ(out.got[1].error(), asio::error::operation_aborted);
}

TEST_F(cancellation, BulkheadWaiterLeavesTheQueueOnCancellation) {
  res::bulkhead bulkhead(node,
                         {.name = "pool", .max_concurrent = 1, .max_queue = 2, .max_wait = 1s});
  asio::cancellation_signal first, second;
  bulkhead.execute(scripted_op{&s}, out.callback());  // runs (held)
  bulkhead.execute(scripted_op{&s}, asio::bind_cancellation_slot(first.slot(), out.callback()));
  bulkhead.execute(scripted_op{&s}, asio::bind_cancellation_slot(second.slot(), out.callback()));
  EXPECT_EQ(bulkhead.waiting(), 2u);
  first.emit(asio::cancellation_type::terminal);
  ASSERT_EQ(out.got.size(), 1u);
  EXPECT_EQ(out.got[0].error(), errc::operation_canceled);
  EXPECT_EQ(bulkhead.waiting(), 1u);
  // The slot frees: the remaining waiter runs, and its slot is now its operation's.
  s.complete(0, 1);
  node.poll();
  EXPECT_EQ(bulkhead.waiting(), 0u);
  ASSERT_EQ(s.held.size(), 2u);
  second.emit(asio::cancellation_type::terminal);
  EXPECT_EQ(s.cancelled, 1);
  ASSERT_EQ(out.got.size(), 3u);
  EXPECT_EQ(out.got[2].error(), asio::error::operation_aborted);
  step(2s);  // no wait timeout fires for the cancelled waiter
  EXPECT_EQ(out.got.size(), 3u);
  EXPECT_EQ(bulkhead.in_flight(), 0u);
}

// ---- hedge

TEST_F(cancellation, HedgeStartsASecondAttemptAfterItsDelayAndTheFirstAnswerWins) {
  res::hedge hedge(node, 50ms, 2);
  hedge.execute(indexed_op{&s}, out.callback());
  step(49ms);
  EXPECT_EQ(s.targets, (std::vector<std::size_t>{0}));
  step(1ms);
  EXPECT_EQ(s.targets, (std::vector<std::size_t>{0, 1}));  // to another target
  s.complete(1, 42);
  ASSERT_EQ(out.got.size(), 1u);
  EXPECT_EQ(*out.got[0], 42);
  EXPECT_EQ(s.cancelled, 1);  // the loser
  step(1s);                   // no third attempt after the race ended
  EXPECT_EQ(s.targets.size(), 2u);
  EXPECT_EQ(out.got.size(), 1u);

  // Answered before the delay: no hedge at all.
  res::hedge plain(node, 50ms);
  plain.execute(scripted_op{&s}, out.callback());
  s.complete(2, 5);
  step(1s);
  ASSERT_EQ(out.got.size(), 2u);
  EXPECT_EQ(*out.got[1], 5);
  EXPECT_EQ(s.held.size(), 3u);
}

TEST_F(cancellation, HedgeFailuresStartTheNextAttemptAndTheLastFailureIsTheResult) {
  res::hedge hedge(node, 1s, 1);
  s.outcomes = {result<int>(errc::nodedown), result<int>(errc::noproc)};
  hedge.execute(indexed_op{&s}, out.callback());
  node.poll();
  EXPECT_EQ(s.targets, (std::vector<std::size_t>{0, 1}));  // the failure hedged at once
  ASSERT_EQ(out.got.size(), 1u);
  EXPECT_EQ(out.got[0].error(), errc::noproc);

  // Cancelled by the caller: every attempt is cancelled.
  asio::cancellation_signal signal;
  hedge.execute(scripted_op{&s}, asio::bind_cancellation_slot(signal.slot(), out.callback()));
  step(1s);
  EXPECT_EQ(s.held.size(), 2u);
  signal.emit(asio::cancellation_type::terminal);
  ASSERT_EQ(out.got.size(), 2u);
  EXPECT_EQ(out.got[1].error(), errc::operation_canceled);
  EXPECT_EQ(s.cancelled, 2);
}

// ---- domain errors

TEST_F(cancellation, DomainErrorReachesTheCallerWithItsDetailsAndBreakersIgnoreIt) {
  auto p = node.spawn<shop>();
  ASSERT_TRUE(p);
  res::circuit_breaker breaker(
      node, {.window_size = 2, .minimum_calls = 2, .failure_rate_threshold = 50});
  auto op = [&](auto&& token) {
    return otpp::call(node, *p, charge{500}, 1s, std::forward<decltype(token)>(token));
  };
  for (int i = 0; i < 4; ++i) breaker.execute(op, out.callback());
  node.poll();
  ASSERT_EQ(out.got.size(), 4u);
  EXPECT_EQ(breaker.state(), res::breaker_state::closed);
  EXPECT_EQ(breaker.current().failures, 0u);
  const auto& r = out.got[0];
  ASSERT_EQ(r.error(), errc::domain_error);
  EXPECT_TRUE(otpp::is_domain(r));
  EXPECT_EQ(res::classify(r.error()), res::error_class::permanent);
  auto d = otpp::domain_of(r.fail());
  ASSERT_TRUE(d);
  EXPECT_EQ(d->code, "payment_declined");
  EXPECT_EQ(d->message, "over the card's limit");
  EXPECT_EQ(r.fail().message(), "domain_error: payment_declined: over the card's limit");
  auto details = otpp::domain_details<declined>(r.fail());
  ASSERT_TRUE(details) << details.fail().message();
  EXPECT_EQ(details->card, "4242");
  EXPECT_EQ(details->amount, 500);
  // Details of another type do not decode.
  EXPECT_EQ(otpp::domain_details<std::vector<int>>(r.fail()).error(), errc::bad_message);

  std::vector<result<int>> ok;
  otpp::call(node, *p, charge{50}, 1s, [&](result<int> x) { ok.push_back(std::move(x)); });
  node.poll();
  ASSERT_EQ(ok.size(), 1u);
  EXPECT_EQ(*ok[0], 50);
}

TEST(domain_error, PartsAndAccessorErrors) {
  auto f = otpp::domain_failure("out:of:stock", "none left");
  EXPECT_EQ(otpp::domain_of(f)->code, "out_of_stock");  // ':' ends a code: replaced
  EXPECT_EQ(otpp::domain_of(f)->message, "none left");
  EXPECT_EQ(otpp::domain_details<int>(f).error(), errc::not_found);  // no details
  EXPECT_TRUE(otpp::domain_details_bytes(f).empty());

  auto bare = otpp::domain_failure("gone");
  EXPECT_EQ(otpp::domain_of(bare), (otpp::domain_info{"gone", ""}));
  EXPECT_EQ(bare.message(), "domain_error: gone");

  failure system(errc::timeout);
  EXPECT_FALSE(otpp::is_domain(system));
  EXPECT_FALSE(otpp::domain_of(system));
  EXPECT_EQ(otpp::domain_details<int>(system).error(), errc::invalid_argument);

  auto with = otpp::domain_failure("limit", "too much", 12);
  EXPECT_EQ(*otpp::domain_details<int>(with), 12);
  EXPECT_EQ(with.message(), "domain_error: limit: too much");  // the details stay out of text
  EXPECT_EQ(otpp::make_error_code(errc::domain_error).message(), "domain_error");
  EXPECT_EQ(otpp::make_error_code(errc::operation_canceled).message(),
            "operation_canceled: cancelled by the caller");
}

}  // namespace
}  // namespace otpp_test
