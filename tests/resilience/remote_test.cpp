// Policies around calls to another node over real TCP (two cluster nodes in this process on
// 127.0.0.1): a circuit breaker opens when its remote node goes away and its calls fail with
// nodedown, refuses calls at once while open, and closes after the node is back; a retry
// reaches a global name registered again after its process died; a bulkhead keeps a slow remote
// process from seeing more calls than its limit.
#include <atomic>
#include <deque>
#include <future>

#include <gtest/gtest.h>
#include <asio/use_future.hpp>

#include "cluster/cluster_support.hpp"
#include "otpp/registry/global.hpp"
#include "otpp/resilience.hpp"

namespace otpp_test {
namespace {

using namespace std::chrono_literals;
using otpp::errc;
using otpp::result;
namespace res = otpp::resilience;

struct square {
  static constexpr std::string_view tag = "square";
  using reply = int;
  int x = 0;
  MSGPACK_DEFINE_MAP(x)
};
class squarer : public otpp::gen_server<squarer> {
 public:
  static void define_handlers(otpp::handlers<squarer>& h) {
    h.call<square>([](squarer&, square s) { return s.x * s.x; });
  }
};

TEST(resilience_remote, BreakerOpensWhenItsNodeGoesAndClosesWhenItIsBack) {
  auto pa = free_port(), pb = free_port();
  auto a = test_node::start("res_a", pa, fast_options());
  auto b = test_node::start("res_b", pb, fast_options({"127.0.0.1:" + std::to_string(pa)}));
  ASSERT_TRUE(converged({a.get(), b.get()}, 2));
  auto target = b->node->spawn<squarer>();
  ASSERT_TRUE(target);

  std::vector<std::string> changes;
  std::mutex changes_mutex;
  res::circuit_breaker breaker(*a->node,
                               {.name = "res_b",
                                .window_size = 3,
                                .minimum_calls = 3,
                                .failure_rate_threshold = 100,
                                .wait_in_open = 300ms,
                                .half_open_calls = 1,
                                .on_state_change = [&](res::breaker_state, res::breaker_state to) {
                                  std::lock_guard lock(changes_mutex);
                                  changes.push_back(res::to_string(to));
                                }});
  std::mutex target_mutex;  // the test swaps the target when b comes back
  auto call_b = [&] {
    otpp::pid to;
    {
      std::lock_guard lock(target_mutex);
      to = *target;
    }
    auto op = [&a, to](auto&& token) {
      return otpp::call(*a->node, to, square{7}, 5s, std::forward<decltype(token)>(token));
    };
    return breaker.execute(op, asio::use_future).get();
  };

  auto r = call_b();
  ASSERT_TRUE(r) << r.fail().message();
  EXPECT_EQ(*r, 49);

  b.reset();  // graceful stop: a sees it leave
  ASSERT_TRUE(
      eventually([&] { return a->log->count(otpp::cluster::node_event_kind::node_down) == 1; }));
  int nodedown = 0;
  for (int i = 0; i < 3; ++i) {
    auto failed = call_b();
    ASSERT_FALSE(failed);
    EXPECT_TRUE(res::is_transient(failed.error())) << failed.fail().message();
    nodedown += failed.error() == errc::nodedown;
  }
  EXPECT_EQ(nodedown, 3);
  EXPECT_EQ(breaker.state(), res::breaker_state::open);
  auto refused = call_b();
  EXPECT_EQ(refused.error(), errc::circuit_open);
  ASSERT_TRUE(res::retry_after(refused.fail()));
  EXPECT_LE(*res::retry_after(refused.fail()), 300ms);

  // b comes back (a new incarnation, a new process); after the wait the trial call closes it.
  b = test_node::start("res_b", pb, fast_options({"127.0.0.1:" + std::to_string(pa)}));
  ASSERT_TRUE(converged({a.get(), b.get()}, 2));
  auto again = b->node->spawn<squarer>();
  ASSERT_TRUE(again);
  {
    std::lock_guard lock(target_mutex);
    target = again;
  }
  ASSERT_TRUE(eventually([&] {
    auto tried = call_b();
    return tried && *tried == 49;
  }));
  EXPECT_EQ(breaker.state(), res::breaker_state::closed);
  std::lock_guard lock(changes_mutex);
  EXPECT_EQ(changes, (std::vector<std::string>{"open", "half_open", "closed"}));
}

TEST(resilience_remote, RetryReachesAGlobalNameRegisteredAgain) {
  auto pa = free_port(), pb = free_port();
  auto a = test_node::start("retry_a", pa, fast_options());
  auto b = test_node::start("retry_b", pb, fast_options({"127.0.0.1:" + std::to_string(pa)}));
  ASSERT_TRUE(converged({a.get(), b.get()}, 2));
  ASSERT_TRUE(otpp::start_global(*a->node));
  ASSERT_TRUE(otpp::start_global(*b->node));
  ASSERT_TRUE(eventually([&] {
    return otpp::global_stats(*a->node).peers == 1 && otpp::global_stats(*b->node).peers == 1;
  }));
  auto first = b->node->spawn<squarer>();
  ASSERT_TRUE(first);
  ASSERT_TRUE(otpp::register_name(*b->node, otpp::global("pricing"), *first));
  ASSERT_TRUE(
      eventually([&] { return otpp::whereis(*a->node, otpp::global("pricing")).has_value(); }));

  // The process dies: its name goes with it, everywhere.
  b->node->stop_process(*first, otpp::exit_reason::shutdown());
  ASSERT_TRUE(eventually([&] { return !otpp::whereis(*a->node, otpp::global("pricing")); }));

  // A name being restarted is briefly absent (noproc, permanent by default): this caller opts
  // in to retrying it. Each attempt looks the name up again.
  std::atomic<int> failed_attempts{0};
  res::retry retry(*a->node, {.max_attempts = 50,
                              .initial_delay = 50ms,
                              .max_delay = 100ms,
                              .jitter_kind = res::jitter::none,
                              .retry_on =
                                  [](const otpp::failure& f) {
                                    return res::is_transient(f) || f.code == errc::noproc;
                                  },
                              .on_attempt =
                                  [&](const res::retry_event& e) {
                                    if (!e.error.code) return;
                                    EXPECT_EQ(e.error.code, errc::noproc);
                                    failed_attempts.fetch_add(1);
                                  }});
  auto op = [&a](auto&& token) {
    return otpp::call(*a->node, otpp::global("pricing"), square{3}, 2s,
                      std::forward<decltype(token)>(token));
  };
  auto answer = retry.execute(op, asio::use_future);
  ASSERT_TRUE(eventually([&] { return failed_attempts.load() >= 2; }));
  auto second = b->node->spawn<squarer>();
  ASSERT_TRUE(second);
  ASSERT_TRUE(otpp::register_name(*b->node, otpp::global("pricing"), *second));
  ASSERT_EQ(answer.wait_for(30s), std::future_status::ready);
  auto r = answer.get();
  ASSERT_TRUE(r) << r.fail().message();
  EXPECT_EQ(*r, 9);
  EXPECT_GE(failed_attempts.load(), 2);
}

// A slow server: answers each call 1 s after it came, and records how many it held at once.
std::atomic<int> slow_held_most{0};
struct slow_square {
  static constexpr std::string_view tag = "slow_square";
  using reply = int;
  int x = 0;
  MSGPACK_DEFINE_MAP(x)
};
struct answer_oldest {
  static constexpr std::string_view tag = "answer_oldest";
};
class slow_squarer : public otpp::gen_server<slow_squarer> {
 public:
  static void define_handlers(otpp::handlers<slow_squarer>& h) {
    h.call<slow_square>([](slow_squarer& self, slow_square m, otpp::reply_to<int> to) {
      self.held_.emplace_back(m.x, std::move(to));
      int most = slow_held_most.load();
      const int now = static_cast<int>(self.held_.size());
      while (now > most && !slow_held_most.compare_exchange_weak(most, now)) {
      }
      self.this_node().send_after(1s, self.self(), answer_oldest{});
    });
    h.info<answer_oldest>([](slow_squarer& self, answer_oldest) {
      if (self.held_.empty()) return;
      auto [x, to] = std::move(self.held_.front());
      self.held_.pop_front();
      to(x * x);
    });
  }

 private:
  std::deque<std::pair<int, otpp::reply_to<int>>> held_;
};

TEST(resilience_remote, BulkheadProtectsASlowRemoteProcess) {
  auto pa = free_port(), pb = free_port();
  auto a = test_node::start("bulk_a", pa, fast_options());
  auto b = test_node::start("bulk_b", pb, fast_options({"127.0.0.1:" + std::to_string(pa)}));
  ASSERT_TRUE(converged({a.get(), b.get()}, 2));
  auto slow = b->node->spawn<slow_squarer>();
  ASSERT_TRUE(slow);
  res::bulkhead bulkhead(*a->node, {.name = "slow", .max_concurrent = 2, .max_queue = 0});
  auto op = [&a, to = *slow](auto&& token) {
    return otpp::call(*a->node, to, slow_square{4}, 10s, std::forward<decltype(token)>(token));
  };
  std::vector<std::future<result<int>>> calls;
  for (int i = 0; i < 6; ++i) calls.push_back(bulkhead.execute(op, asio::use_future));
  int answered = 0, refused = 0;
  for (auto& c : calls) {
    ASSERT_EQ(c.wait_for(30s), std::future_status::ready);
    auto r = c.get();
    if (r) {
      EXPECT_EQ(*r, 16);
      ++answered;
    } else {
      EXPECT_EQ(r.error(), errc::bulkhead_full) << r.fail().message();
      ++refused;
    }
  }
  // Two slots, no queue: the first two calls went through, the other four were refused at once
  // while those two were held by the slow process (1 s each).
  EXPECT_EQ(answered, 2);
  EXPECT_EQ(refused, 4);
  EXPECT_LE(slow_held_most.load(), 2);
  EXPECT_EQ(bulkhead.in_flight(), 0u);
  // Once they are answered, the slots are free again.
  auto later = bulkhead.execute(op, asio::use_future);
  ASSERT_EQ(later.wait_for(30s), std::future_status::ready);
  auto r = later.get();
  ASSERT_TRUE(r) << r.fail().message();
  EXPECT_EQ(*r, 16);
}

}  // namespace
}  // namespace otpp_test
