#include <atomic>
#include <thread>

#include <asio/use_awaitable.hpp>

#include "test_support.hpp"

using namespace otpp_test;

namespace {

class RuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override { node.start(); }
  otpp::node node{{.name = "test", .threads = 2}};
};

TEST_F(RuntimeTest, CallReturnsReply) {
  auto p = node.spawn<counter>(10);
  ASSERT_TRUE(p);
  auto r = call_sync(node, *p, increment{5});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(*r, 15);
  EXPECT_EQ(*call_sync(node, *p, increment{1}), 16);
}

TEST_F(RuntimeTest, CastsAreHandledInOrderBeforeLaterCall) {
  auto p = *node.spawn<counter>();
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(otpp::cast(node, p, increment{1}));
  ASSERT_TRUE(otpp::cast(node, p, reset{7}));
  EXPECT_EQ(*call_sync(node, p, get_count{}), 7);
}

TEST_F(RuntimeTest, CallbackToken) {
  auto p = *node.spawn<counter>(1);
  std::promise<otpp::result<int>> done;
  otpp::call(node, p, increment{2}, [&](otpp::result<int> r) { done.set_value(std::move(r)); });
  auto f = done.get_future();
  EXPECT_EQ(*get(f), 3);
}

TEST_F(RuntimeTest, CallToUnknownPidIsNoproc) {
  auto p = *node.spawn<counter>();
  node.stop_process(p);
  otpp::pid ghost(node.atom(), node.creation(), 999999);
  auto r = call_sync(node, ghost, increment{1});
  EXPECT_EQ(r.error(), otpp::errc::noproc);
}

TEST_F(RuntimeTest, HandlerExceptionEndsProcessWithReasonAndNodeLives) {
  auto p = *node.spawn<counter>();
  auto r = call_sync(node, p, crash{"kaboom"});
  EXPECT_EQ(r.error(), otpp::errc::exit);
  EXPECT_EQ(r.reason(), "kaboom");
  EXPECT_EQ(call_sync(node, p, get_count{}).error(), otpp::errc::noproc);
  auto q = *node.spawn<counter>(3);
  EXPECT_EQ(*call_sync(node, q, get_count{}), 3);
}

}  // namespace
