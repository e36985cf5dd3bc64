// The policies' lock-free fast paths under real threads: a bulkhead never admits more than
// its limit and never strands a waiter beside a free slot, a rate limiter hands out exactly
// its permits, a breaker's count window keeps exact totals and opens once. No timing asserts:
// every check is a count.
#include <atomic>
#include <future>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <asio/post.hpp>

#include "otpp/resilience.hpp"
#include "otpp/runtime.hpp"

namespace otpp_test {
namespace {

using namespace std::chrono_literals;
using otpp::errc;
using otpp::result;
namespace res = otpp::resilience;

// Completes on the node's pool (never inline), recording how many run at once.
struct pooled_op {
  otpp::node* node;
  std::atomic<int>* running;
  std::atomic<int>* most;
  template <class Token>
  auto operator()(Token&& token) const {
    return asio::async_initiate<Token, void(result<int>)>(
        [n = node, running = running, most = most](auto h) {
          const int now = running->fetch_add(1) + 1;
          int seen = most->load();
          while (now > seen && !most->compare_exchange_weak(seen, now)) {
          }
          asio::post(n->context(), [h = std::move(h), running]() mutable {
            running->fetch_sub(1);
            std::move(h)(result<int>(1));
          });
        },
        token);
  }
};

// Starts `per_thread` calls of `op` from each of `threads` threads; true once every one has
// completed (within a bound far beyond the test's needs), counting successes and failures.
template <class Op>
bool run_from_threads(const Op& op, int threads, int per_thread, std::atomic<int>& ok,
                      std::atomic<int>& failed) {
  std::promise<void> all_done;
  std::atomic<int> left{threads * per_thread};
  std::vector<std::thread> callers;
  for (int t = 0; t < threads; ++t)
    callers.emplace_back([&] {
      for (int i = 0; i < per_thread; ++i)
        op([&](result<int> r) {
          (r ? ok : failed).fetch_add(1);
          if (left.fetch_sub(1) == 1) all_done.set_value();
        });
    });
  for (auto& c : callers) c.join();
  return all_done.get_future().wait_for(60s) == std::future_status::ready;
}

TEST(resilience_concurrency, BulkheadAdmitsAtMostItsLimitAndStrandsNoWaiter) {
  otpp::node node({.name = "bulkhead_threads", .threads = 2});
  node.start();
  // max_wait far beyond the test's bound: a stranded waiter shows as a missing completion.
  res::bulkhead bulkhead(node, {.max_concurrent = 3, .max_queue = 10'000, .max_wait = 120s});
  std::atomic<int> running{0}, most{0}, ok{0}, failed{0};
  constexpr int threads = 4, per_thread = 500;
  auto op = res::decorate(bulkhead, pooled_op{&node, &running, &most});
  ASSERT_TRUE(run_from_threads(op, threads, per_thread, ok, failed))
      << "completions missing: " << threads * per_thread - ok - failed << ", waiting "
      << bulkhead.waiting();
  EXPECT_EQ(ok.load(), threads * per_thread);
  EXPECT_EQ(failed.load(), 0);
  EXPECT_LE(most.load(), 3);
  EXPECT_GE(most.load(), 1);
  EXPECT_EQ(bulkhead.in_flight(), 0u);
  EXPECT_EQ(bulkhead.waiting(), 0u);
  node.stop();
}

TEST(resilience_concurrency, RateLimiterGrantsExactlyItsCapacity) {
  otpp::node node({.name = "limiter_threads", .threads = 1});
  node.start();
  res::rate_limiter limiter(node, {.capacity = 1000, .refill = 1, .refill_period = 1h});
  std::atomic<int> granted{0}, refused{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; ++t)
    callers.emplace_back([&] {
      for (int i = 0; i < 600; ++i) {
        auto r = limiter.acquire();
        if (r) {
          EXPECT_EQ(*r, otpp::clock_type::duration::zero());
          granted.fetch_add(1);
        } else {
          EXPECT_EQ(r.error(), errc::rate_limited);
          refused.fetch_add(1);
        }
      }
    });
  for (auto& c : callers) c.join();
  EXPECT_EQ(granted.load(), 1000);
  EXPECT_EQ(refused.load(), 4 * 600 - 1000);
  EXPECT_EQ(limiter.available(), 0u);
  node.stop();
}

TEST(resilience_concurrency, BreakerCountWindowKeepsExactTotalsAndOpensOnce) {
  otpp::node node({.name = "breaker_threads", .threads = 1});
  node.start();
  std::atomic<int> openings{0};
  res::circuit_breaker breaker(node,
                               {.window_size = 64,
                                .minimum_calls = 64,
                                .failure_rate_threshold = 50,
                                .on_state_change = [&](res::breaker_state, res::breaker_state to) {
                                  if (to == res::breaker_state::open) openings.fetch_add(1);
                                }});
  auto record_many = [&](bool fail, int n) {
    std::vector<std::thread> callers;
    for (int t = 0; t < 4; ++t)
      callers.emplace_back([&] {
        const otpp::failure down(errc::nodedown);
        for (int i = 0; i < n; ++i) {
          auto p = breaker.acquire();
          if (!p) continue;  // open: refused, as callers would be
          breaker.record(*p, fail ? &down : nullptr);
        }
      });
    for (auto& c : callers) c.join();
  };
  record_many(false, 1000);
  auto m = breaker.current();
  EXPECT_EQ(m.calls, 64u);
  EXPECT_EQ(m.failures, 0u);
  EXPECT_EQ(breaker.state(), res::breaker_state::closed);
  record_many(true, 1000);
  EXPECT_EQ(breaker.state(), res::breaker_state::open);
  EXPECT_EQ(openings.load(), 1);
  node.stop();
}

// Calls completing on pool threads race the timeout's listing of them: each completes once,
// with its value, and none is left listed (a listed call would expire in 60 s and hold memory).
TEST(resilience_concurrency, TimeoutListsOnlyCallsStillRunningAndUnlistsEveryOne) {
  otpp::node node({.name = "timeout_threads", .threads = 2});
  node.start();
  res::timeout limit(node, 60s);
  std::atomic<int> running{0}, most{0}, ok{0}, failed{0};
  constexpr int threads = 4, per_thread = 500;
  auto op = res::decorate(limit, pooled_op{&node, &running, &most});
  ASSERT_TRUE(run_from_threads(op, threads, per_thread, ok, failed));
  EXPECT_EQ(ok.load(), threads * per_thread);
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(limit.in_flight(), 0u);

  // A call answered at once is never listed.
  auto instant = res::decorate(limit, [](auto&& token) {
    return asio::async_initiate<decltype(token), void(result<int>)>(
        [](auto h) { std::move(h)(result<int>(7)); }, token);
  });
  int value = 0;
  instant([&](result<int> r) { value = r.value_or(-1); });
  EXPECT_EQ(value, 7);
  EXPECT_EQ(limit.in_flight(), 0u);
  node.stop();
}

TEST(resilience_concurrency, CoarseClockIsNeverAheadAndIsTheManualClockInTests) {
  otpp::node real({.name = "coarse_real", .threads = 1});
  for (int i = 0; i < 1000; ++i) {
    const auto coarse = real.coarse_now();
    const auto precise = real.now();
    ASSERT_LE(coarse, precise);
  }
  EXPECT_GE(real.coarse_resolution(), otpp::clock_type::duration::zero());
  auto clock = std::make_shared<otpp::manual_clock>();
  otpp::node virtual_time({.name = "coarse_manual", .threads = 1, .clock = clock});
  clock->advance(1234ms);
  EXPECT_EQ(virtual_time.coarse_now(), clock->now());
  EXPECT_EQ(virtual_time.coarse_resolution(), otpp::clock_type::duration::zero());
}

}  // namespace
}  // namespace otpp_test
