// Across two cluster nodes over real TCP on 127.0.0.1 (in this process): a timeout cancels a
// remote call (its pending entry freed at once, the late reply dropped), a handler's domain
// error arrives with its details and is not counted by a breaker, and the per-node breakers
// open when their node stops and close when it is back.
#include <future>
#include <mutex>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <asio/use_future.hpp>

#include "cluster/cluster_support.hpp"
#include "holding_shop.hpp"
#include "otpp/resilience.hpp"
#include "otpp/router.hpp"

namespace otpp_test {
namespace {

using otpp::errc;
using otpp::result;
namespace res = otpp::resilience;

// Captures log lines containing `needle` (at debug level) while it lives.
struct log_capture {
  std::mutex mutex;
  std::vector<std::string> lines;
  otpp::log_sink previous;
  otpp::log_level level;
  explicit log_capture(std::string needle) : level(otpp::get_log_level()) {
    otpp::set_log_level(otpp::log_level::debug);
    previous = otpp::set_log_sink(
        [this, needle](otpp::log_level, std::string_view, std::string_view text) {
          if (text.find(needle) == std::string_view::npos) return;
          std::lock_guard lock(mutex);
          lines.emplace_back(text);
        });
  }
  ~log_capture() {
    otpp::set_log_level(level);
    otpp::set_log_sink(previous);
  }
  std::size_t count() {
    std::lock_guard lock(mutex);
    return lines.size();
  }
};

struct two_nodes : ::testing::Test {
  std::uint16_t pa = free_port(), pb = free_port();
  std::unique_ptr<test_node> a, b;
  void SetUp() override {
    a = test_node::start("rc_a", pa, fast_options());
    b = test_node::start("rc_b", pb, fast_options({"127.0.0.1:" + std::to_string(pa)}));
    ASSERT_TRUE(converged({a.get(), b.get()}, 2));
  }
  void restart_b() {
    b = test_node::start("rc_b", pb, fast_options({"127.0.0.1:" + std::to_string(pa)}));
    ASSERT_TRUE(converged({a.get(), b.get()}, 2));
  }
};

TEST_F(two_nodes, TimeoutCancelsARemoteCallAndItsLateReplyIsDropped) {
  auto target = b->node->spawn<shop>();
  ASSERT_TRUE(target);
  const auto b_atom = otpp::node_atom::find(b->id);
  log_capture late("late reply to call");

  res::timeout limit(*a->node, 300ms);
  auto op = [&](auto&& token) {
    return otpp::call(*a->node, *target, hold{}, 60s, std::forward<decltype(token)>(token));
  };
  auto r = limit.execute(op, asio::use_future).get();
  ASSERT_EQ(r.error(), errc::timeout);
  // Cancelled before the timeout completed: no entry waits for b's reply any more.
  EXPECT_EQ(otpp::pending_remote_calls(*a->node, b_atom), 0u);
  EXPECT_EQ(otpp::pending_remote_calls(*a->node), 0u);

  // b answers now: a drops the reply (logged), and nothing else completes.
  auto answered = otpp::call(*a->node, *target, answer_held{7}, 10s, asio::use_future).get();
  ASSERT_TRUE(answered) << answered.fail().message();
  EXPECT_EQ(*answered, 1);  // b does not know the caller gave up
  EXPECT_TRUE(eventually([&] { return late.count() == 1; }));
  EXPECT_EQ(otpp::pending_remote_calls(*a->node, b_atom), 0u);
}

TEST_F(two_nodes, DomainErrorCrossesTheWireWithItsDetailsAndIsNotCountedByABreaker) {
  auto target = b->node->spawn<shop>();
  ASSERT_TRUE(target);
  res::circuit_breaker breaker(
      *a->node, {.window_size = 2, .minimum_calls = 2, .failure_rate_threshold = 50});
  auto op = [&](auto&& token) {
    return otpp::call(*a->node, *target, charge{500}, 10s, std::forward<decltype(token)>(token));
  };
  for (int i = 0; i < 3; ++i) {
    auto r = breaker.execute(op, asio::use_future).get();
    ASSERT_EQ(r.error(), errc::domain_error) << r.fail().message();
    auto d = otpp::domain_of(r.fail());
    ASSERT_TRUE(d);
    EXPECT_EQ(d->code, "payment_declined");
    EXPECT_EQ(d->message, "over the card's limit");
    auto details = otpp::domain_details<declined>(r.fail());
    ASSERT_TRUE(details) << details.fail().message();
    EXPECT_EQ(details->card, "4242");
    EXPECT_EQ(details->amount, 500);
  }
  EXPECT_EQ(breaker.state(), res::breaker_state::closed);
  EXPECT_EQ(breaker.current().failures, 0u);

  auto ok = otpp::call(*a->node, *target, charge{20}, 10s, asio::use_future).get();
  ASSERT_TRUE(ok) << ok.fail().message();
  EXPECT_EQ(*ok, 20);
}

TEST_F(two_nodes, NodeBreakerOpensWhenItsNodeStopsAndClosesWhenItIsBack) {
  std::mutex changes_mutex;
  std::vector<std::string> changes;
  ASSERT_TRUE(res::enable_node_breakers(
      *a->node, {.minimum_calls = 100,  // only the node events move it in this test
                 .on_state_change = [&](res::breaker_state, res::breaker_state to) {
                   std::lock_guard lock(changes_mutex);
                   changes.push_back(res::to_string(to));
                 }}));
  auto target = b->node->spawn<shop>();
  ASSERT_TRUE(target);
  auto first = otpp::call(*a->node, *target, charge{3}, 10s, asio::use_future).get();
  ASSERT_TRUE(first) << first.fail().message();
  auto breaker = res::node_breaker(*a->node, b->id);
  ASSERT_TRUE(breaker);
  EXPECT_EQ(breaker->state(), res::breaker_state::closed);
  EXPECT_EQ(breaker->current().calls, 1u);  // the call went through it

  const std::string b_id = b->id;
  b.reset();  // b stops: a sees node_down
  ASSERT_TRUE(
      eventually([&] { return a->log->count(otpp::cluster::node_event_kind::node_down) == 1; }));
  EXPECT_EQ(breaker->state(), res::breaker_state::forced_open);
  auto refused = otpp::call(*a->node, *target, charge{3}, 10s, asio::use_future).get();
  EXPECT_EQ(refused.error(), errc::circuit_open) << refused.fail().message();
  EXPECT_NE(refused.reason().find("node " + b_id), std::string::npos) << refused.reason();

  restart_b();
  EXPECT_TRUE(eventually([&] { return breaker->state() == res::breaker_state::closed; }));
  auto again = b->node->spawn<shop>();
  ASSERT_TRUE(again);
  auto back = otpp::call(*a->node, *again, charge{4}, 10s, asio::use_future).get();
  ASSERT_TRUE(back) << back.fail().message();
  EXPECT_EQ(*back, 4);
  {
    std::lock_guard lock(changes_mutex);
    EXPECT_EQ(changes, (std::vector<std::string>{"forced_open", "closed"}));
  }

  // Disabled: calls no longer pass a breaker.
  res::disable_node_breakers(*a->node);
  EXPECT_FALSE(res::node_breaker(*a->node, b_id));
}

TEST(node_breakers, NeedAJoinedCluster) {
  otpp::node n({.name = "alone"});
  n.start();
  EXPECT_EQ(res::enable_node_breakers(n).error(), errc::invalid_argument);
  EXPECT_FALSE(res::node_breaker(n, "x@127.0.0.1:1"));
}

}  // namespace
}  // namespace otpp_test
