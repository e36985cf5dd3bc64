// Policies around calls to another node over real TCP (two cluster nodes in this process on
// 127.0.0.1): a circuit breaker opens when its remote node goes away and its calls fail with
// nodedown, refuses calls at once while open, and closes after the node is back.
#include <future>

#include <gtest/gtest.h>
#include <asio/use_future.hpp>

#include "cluster/cluster_support.hpp"
#include "otpp/resilience.hpp"

namespace otpp_test {
namespace {

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

}  // namespace
}  // namespace otpp_test
