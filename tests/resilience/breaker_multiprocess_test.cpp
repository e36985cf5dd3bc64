// A circuit breaker in this process around calls to a node that is a real OS process
// (otpp_test_node): SIGKILLed, its calls fail with nodedown until the breaker opens and refuses
// them at once; restarted as a new incarnation, the breaker's trial call closes it again.
#include <future>
#include <mutex>

#include <gtest/gtest.h>
#include <asio/use_future.hpp>

#include "cluster/cluster_support.hpp"
#include "cluster/process_support.hpp"
#include "otpp/resilience.hpp"

namespace otpp_test {
namespace {

using namespace std::chrono_literals;
using otpp::errc;
using otpp::result;
namespace res = otpp::resilience;

// otpp_test_node's worker message (the same tag and fields: the wire matches by tag).
struct echo {
  static constexpr std::string_view tag = "test_node.echo";
  using reply = std::string;
  std::string text;
  MSGPACK_DEFINE_MAP(text)
};

std::optional<otpp::pid> worker_of(const node_process* p) {
  return otpp::pid::parse("<" + p->id + "." + std::to_string(p->creation) + "." +
                          std::to_string(p->serial) + ">");
}

using breaker_processes = multiprocess_fixture;

TEST_F(breaker_processes, OpensWhenItsNodeIsKilledAndClosesWhenItIsBack) {
  const auto pa = free_port();
  auto a = test_node::start("breaker_a", pa, fast_options());
  auto* b = start("breaker_b", 0, {"127.0.0.1:" + std::to_string(pa)});
  ASSERT_TRUE(b);
  const auto b_id = b->id;
  ASSERT_TRUE(b->wait_event("node_up", a->id, 30s));
  auto worker = worker_of(b);
  ASSERT_TRUE(worker) << b->worker();

  std::mutex mutex;  // the target changes when b comes back; transitions come from any thread
  std::vector<std::string> changes;
  res::circuit_breaker breaker(*a->node,
                               {.name = "breaker_b",
                                .window_size = 3,
                                .minimum_calls = 3,
                                .failure_rate_threshold = 100,
                                .wait_in_open = 300ms,
                                .half_open_calls = 1,
                                .on_state_change = [&](res::breaker_state, res::breaker_state to) {
                                  std::lock_guard lock(mutex);
                                  changes.push_back(res::to_string(to));
                                }});
  auto call_b = [&](std::string text) {
    otpp::pid to;
    {
      std::lock_guard lock(mutex);
      to = *worker;
    }
    auto op = [&a, to, text](auto&& token) {
      return otpp::call(*a->node, to, echo{text}, 5s, std::forward<decltype(token)>(token));
    };
    return breaker.execute(op, asio::use_future).get();
  };
  ASSERT_TRUE(eventually([&] { return call_b("hello").has_value(); }, 30s));
  auto r = call_b("hello");
  ASSERT_TRUE(r) << r.fail().message();
  EXPECT_EQ(*r, "echo:hello");

  ASSERT_TRUE(b->proc->kill(SIGKILL));
  ASSERT_EQ(b->proc->wait_exit(10s), 128 + SIGKILL);
  ASSERT_TRUE(eventually(
      [&] { return a->log->count(otpp::cluster::node_event_kind::node_down) >= 1; }, 30s));
  for (int i = 0; i < 3; ++i) {
    auto failed = call_b("lost");
    ASSERT_FALSE(failed);
    EXPECT_EQ(failed.error(), errc::nodedown) << failed.fail().message();
  }
  EXPECT_EQ(breaker.state(), res::breaker_state::open);
  auto refused = call_b("refused");
  EXPECT_EQ(refused.error(), errc::circuit_open);

  // The same name and port: a new incarnation with a new worker.
  auto* b2 = start_id(b_id, {"127.0.0.1:" + std::to_string(pa)});
  ASSERT_TRUE(b2);
  ASSERT_TRUE(b2->wait_event("node_up", a->id, 30s));
  {
    std::lock_guard lock(mutex);
    worker = worker_of(b2);
  }
  ASSERT_TRUE(worker);
  ASSERT_TRUE(eventually(
      [&] {
        auto tried = call_b("back");
        return tried && *tried == "echo:back";
      },
      60s));
  EXPECT_EQ(breaker.state(), res::breaker_state::closed);
  std::lock_guard lock(mutex);
  ASSERT_GE(changes.size(), 3u);
  EXPECT_EQ(changes.front(), "open");
  EXPECT_EQ(changes.back(), "closed");
}

}  // namespace
}  // namespace otpp_test
