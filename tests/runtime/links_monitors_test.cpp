#include "test_support.hpp"

using namespace otpp_test;

namespace {

class LinksMonitors : public ::testing::Test {
 protected:
  void SetUp() override { node.start(); }
  otpp::node node{{.name = "links", .threads = 2}};
  std::shared_ptr<recorder> rec = std::make_shared<recorder>();

  otpp::pid observe(const otpp::pid& target, bool link, bool trap) {
    auto o = *node.spawn<observer>(rec, trap);
    EXPECT_TRUE(otpp::send(node, o, watch{target, link}));
    return o;
  }
  void wait_watching(std::size_t n = 1) {
    ASSERT_TRUE(rec->wait([n](const auto& e) {
      return static_cast<std::size_t>(std::count(e.begin(), e.end(), "watching")) >= n;
    }));
  }
};

TEST_F(LinksMonitors, MonitorOfDeadPidGivesNoproc) {
  otpp::pid ghost(node.atom(), node.creation(), 424242);
  observe(ghost, false, false);
  EXPECT_TRUE(rec->wait_for_event("down:noproc"));
}

TEST_F(LinksMonitors, MonitorSeesNormalAndCrashReasons) {
  auto a = *node.spawn<counter>();
  auto b = *node.spawn<counter>();
  observe(a, false, false);
  observe(b, false, false);
  wait_watching(2);
  node.stop_process(a, otpp::exit_reason::normal());
  EXPECT_TRUE(rec->wait_for_event("down:normal"));
  EXPECT_EQ(call_sync(node, b, crash{"bad things"}).error(), otpp::errc::exit);
  EXPECT_TRUE(rec->wait_for_event("down:bad things"));
}

struct watch_then_forget {
  static constexpr std::string_view tag = "watch_then_forget";
  using reply = int;
  otpp::pid target;
  MSGPACK_DEFINE_MAP(target)
};
class forgetter : public otpp::gen_server<forgetter> {
 public:
  explicit forgetter(std::shared_ptr<recorder> r) : rec_(std::move(r)) {}
  static void define_handlers(otpp::handlers<forgetter>& h) {
    h.call<watch_then_forget>([](forgetter& self, watch_then_forget w) {
      auto ref = self.monitor(w.target);
      self.demonitor(ref);
      self.monitor(otpp::pid(self.this_node().atom(), self.this_node().creation(), 777777));
      return 0;
    });
    h.info<otpp::down>(
        [](forgetter& self, otpp::down d) { self.rec_->add("down:" + d.reason.text()); });
  }

 private:
  std::shared_ptr<recorder> rec_;
};

TEST_F(LinksMonitors, DemonitorDropsTheMonitor) {
  auto target = *node.spawn<counter>();
  auto f = *node.spawn<forgetter>(rec);
  EXPECT_EQ(*call_sync(node, f, watch_then_forget{target}), 0);
  // The second monitor (of a dead pid) proves downs are flowing; the first never fires.
  ASSERT_TRUE(rec->wait_for_event("down:noproc"));
  std::promise<void> exited;  // watchers run after the target sent its downs
  node.watch_process(target, [&](const otpp::exit_reason&) { exited.set_value(); });
  node.stop_process(target, otpp::exit_reason("gone"));
  auto done = exited.get_future();
  get(done);
  // A round trip after the exit: a down already queued for f is handled before this call.
  (void)call_sync(node, f, watch_then_forget{target});
  EXPECT_EQ(rec->count("down:gone"), 0u);
}

TEST_F(LinksMonitors, LinkCascadeKillsChainWithoutTrap) {
  auto a = *node.spawn<counter>();
  auto b = observe(a, true, false);
  wait_watching();
  auto c = observe(b, true, false);
  wait_watching(2);
  EXPECT_EQ(call_sync(node, a, crash{"cascade"}).error(), otpp::errc::exit);
  ASSERT_TRUE(eventually([&] { return !node.alive(b) && !node.alive(c); }));
  EXPECT_EQ(rec->count("terminate:cascade"), 0u);  // killed by a signal: no terminate
}

TEST_F(LinksMonitors, TrapExitTurnsSignalIntoMessage) {
  auto a = *node.spawn<counter>();
  auto b = observe(a, true, true);
  wait_watching();
  EXPECT_EQ(call_sync(node, a, crash{"trapped"}).error(), otpp::errc::exit);
  ASSERT_TRUE(rec->wait_for_event("EXIT:trapped"));
  EXPECT_TRUE(node.alive(b));
}

TEST_F(LinksMonitors, NormalExitDoesNotKillLinkedProcess) {
  auto a = *node.spawn<counter>();
  auto b = observe(a, true, false);
  auto m = observe(b, false, false);
  wait_watching(2);
  std::promise<void> a_exited;  // watchers run after a signalled its links
  node.watch_process(a, [&](const otpp::exit_reason&) { a_exited.set_value(); });
  node.stop_process(a, otpp::exit_reason::normal());
  auto done = a_exited.get_future();
  get(done);
  node.exit(b, otpp::exit_reason::normal());  // ignored too
  // Signals go ahead of messages: once b handles a message sent after them, it has acted on
  // both exit signals.
  ASSERT_TRUE(otpp::send(node, b, watch{m, false}));
  wait_watching(3);
  EXPECT_TRUE(node.alive(b));
  EXPECT_EQ(rec->count("down:normal"), 0u);  // m monitors b
}

TEST_F(LinksMonitors, ShutdownReasonKillsUntrappedLinkedProcess) {
  auto a = *node.spawn<counter>();
  auto b = observe(a, true, false);
  wait_watching();
  node.stop_process(a, otpp::exit_reason::shutdown());
  ASSERT_TRUE(eventually([&] { return !node.alive(b); }));
}

TEST_F(LinksMonitors, KillCannotBeTrapped) {
  auto t = *node.spawn<observer>(rec, true);
  observe(t, false, false);
  wait_watching();
  node.exit(t, otpp::exit_reason("polite"));
  ASSERT_TRUE(rec->wait_for_event("EXIT:polite"));  // trapped: a message, t lives on
  EXPECT_TRUE(node.alive(t));
  node.exit(t, otpp::exit_reason::kill());
  EXPECT_TRUE(rec->wait_for_event("down:killed"));
  EXPECT_FALSE(node.alive(t));
}

TEST_F(LinksMonitors, LinkToDeadProcessDeliversNoproc) {
  otpp::pid ghost(node.atom(), node.creation(), 565656);
  observe(ghost, true, true);
  EXPECT_TRUE(rec->wait_for_event("EXIT:noproc"));
}

TEST_F(LinksMonitors, WatchProcessFiresOnceWithReason) {
  auto a = *node.spawn<counter>();
  std::promise<std::string> got;
  node.watch_process(a, [&](const otpp::exit_reason& r) { got.set_value(r.text()); });
  node.stop_process(a, otpp::exit_reason("watched"));
  auto f = got.get_future();
  EXPECT_EQ(get(f), "watched");
  std::promise<std::string> dead;
  node.watch_process(a, [&](const otpp::exit_reason& r) { dead.set_value(r.text()); });
  auto g = dead.get_future();
  EXPECT_EQ(get(g), "noproc");
}

}  // namespace
