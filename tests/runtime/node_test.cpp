#include "otpp/registry.hpp"
#include "test_support.hpp"

using namespace otpp_test;

namespace {

class busy : public otpp::gen_server<busy> {
 public:
  busy(std::shared_ptr<gate> g, std::shared_ptr<recorder> r)
      : gate_(std::move(g)), rec_(std::move(r)) {}
  static void define_handlers(otpp::handlers<busy>& h) {
    h.cast<ping>([](busy& self, ping) {
      self.rec_->add("busy");
      self.gate_->pass();
    });
  }
  void terminate(const otpp::exit_reason& r) { rec_->add("terminate:" + r.text()); }

 private:
  std::shared_ptr<gate> gate_;
  std::shared_ptr<recorder> rec_;
};

TEST(Node, GracefulStopTerminatesEveryProcessEvenBusyOnes) {
  auto rec = std::make_shared<recorder>();
  auto g = std::make_shared<gate>();
  {
    otpp::node node({.name = "stopper", .threads = 2});
    node.start();
    for (int i = 0; i < 50; ++i) ASSERT_TRUE(node.spawn<observer>(rec, false));
    auto b = *node.spawn<busy>(g, rec);
    ASSERT_TRUE(otpp::cast(node, b, ping{}));
    ASSERT_TRUE(rec->wait_for_event("busy"));
    std::thread opener([&] {
      // The stop below waits for the busy handler; open the gate once stop is under way.
      rec->wait(
          [](const auto& e) { return std::count(e.begin(), e.end(), "terminate:shutdown") >= 50; });
      g->open();
    });
    node.stop();
    opener.join();
    EXPECT_EQ(node.process_count(), 0u);
    auto late = node.spawn<counter>();
    EXPECT_EQ(late.error(), otpp::errc::node_stopped);
  }
  EXPECT_EQ(rec->count("terminate:shutdown"), 51u);
}

TEST(Node, SeveralNodesInOneProcessAreIndependent) {
  otpp::node a({.name = "a", .threads = 1});
  otpp::node b({.name = "b", .threads = 1});
  a.start();
  b.start();
  auto pa = *a.spawn<counter>(1);
  auto pb = *b.spawn<counter>(2);
  EXPECT_NE(pa, pb);
  EXPECT_EQ(*call_sync(a, pa, get_count{}), 1);
  EXPECT_EQ(*call_sync(b, pb, get_count{}), 2);
  // A pid of another node is not local: without a cluster it is unreachable.
  EXPECT_EQ(call_sync(a, pb, get_count{}).error(), otpp::errc::noproc);
}

TEST(Node, StopWithoutStartStillTerminates) {
  auto rec = std::make_shared<recorder>();
  otpp::node node({.name = "lazy", .threads = 1});
  ASSERT_TRUE(node.spawn<observer>(rec, false));
  node.stop();
  EXPECT_EQ(rec->count("terminate:shutdown"), 1u);
}

TEST(Pid, PrintsComparesAndRoundTripsThroughMsgpack) {
  otpp::pid p(otpp::node_atom::intern("api@127.0.0.1:4370"), 7, 42);
  EXPECT_EQ(p.to_string(), "<api@127.0.0.1:4370.7.42>");
  otpp::pid q(otpp::node_atom::intern("api@127.0.0.1:4370"), 7, 43);
  EXPECT_LT(p, q);
  EXPECT_NE(std::hash<otpp::pid>{}(p), std::hash<otpp::pid>{}(q));
  msgpack::sbuffer buf;
  msgpack::pack(buf, p);
  auto back = msgpack::unpack(buf.data(), buf.size()).get().as<otpp::pid>();
  EXPECT_EQ(back, p);
  EXPECT_FALSE(otpp::pid{}.valid());
}

TEST(Registry, RegisterWhereisUnregisterAndCleanupOnExit) {
  otpp::node node({.name = "reg", .threads = 2});
  node.start();
  auto a = *node.spawn<counter>(3);
  auto b = *node.spawn<counter>(4);
  ASSERT_TRUE(otpp::register_name(node, "a", a));
  EXPECT_EQ(otpp::register_name(node, "a", b).error(), otpp::errc::already_registered);
  EXPECT_EQ(otpp::register_name(node, "other", a).error(), otpp::errc::already_registered);
  EXPECT_EQ(otpp::register_name(node, "", b).error(), otpp::errc::invalid_argument);
  EXPECT_EQ(*otpp::whereis(node, "a"), a);
  auto f = otpp::call(node, otpp::by_name("a"), increment{1}, asio::use_future);
  EXPECT_EQ(*get(f), 4);
  ASSERT_TRUE(otpp::cast(node, otpp::by_name("a"), reset{0}));
  EXPECT_EQ(otpp::whereis(node, "nobody").error(), otpp::errc::noproc);
  auto g = otpp::call(node, otpp::by_name("nobody"), increment{1}, asio::use_future);
  EXPECT_EQ(get(g).error(), otpp::errc::noproc);
  EXPECT_EQ(otpp::cast(node, otpp::by_name("nobody"), reset{}).error(), otpp::errc::noproc);
  EXPECT_EQ(otpp::unregister_name(node, "nobody").error(), otpp::errc::not_found);
  ASSERT_TRUE(otpp::unregister_name(node, "a"));
  ASSERT_TRUE(otpp::register_name(node, "b", b));
  node.stop_process(b);
  ASSERT_TRUE(eventually([&] { return !otpp::whereis(node, "b"); }));
  otpp::pid ghost(node.atom(), node.creation(), 999);
  EXPECT_EQ(otpp::register_name(node, "ghost", ghost).error(), otpp::errc::noproc);
  EXPECT_FALSE(otpp::whereis(node, "ghost"));
}

}  // namespace
