// What the cluster offers the layers above it and processes across nodes: channels for the
// registry's protocols, monitor_node, and remote monitors and links with Erlang semantics and
// no entries left behind.
#include <gtest/gtest.h>

#include "cluster/cluster_support.hpp"
#include "otpp/router.hpp"
#include "runtime/test_support.hpp"

namespace {

using namespace otpp_test;
using otpp::errc;
using otpp::cluster::peer;

struct two_nodes : ::testing::Test {
  void SetUp() override {
    pa = free_port(), pb = free_port();
    a = test_node::start("a", pa, fast_options());
    b = test_node::start("b", pb, fast_options({"127.0.0.1:" + std::to_string(pa)}));
    ASSERT_TRUE(converged({a.get(), b.get()}, 2)) << "two nodes did not converge";
  }
  std::uint16_t pa = 0, pb = 0;
  std::unique_ptr<test_node> a, b;
};

std::vector<std::uint8_t> bytes_of(std::uint64_t n) {
  std::vector<std::uint8_t> out(8);
  for (int i = 0; i < 8; ++i) out[i] = static_cast<std::uint8_t>(n >> (8 * i));
  return out;
}
std::uint64_t number_of(std::span<const std::uint8_t> b) {
  std::uint64_t n = 0;
  for (std::size_t i = 0; i < 8 && i < b.size(); ++i) n |= std::uint64_t{b[i]} << (8 * i);
  return n;
}

struct channel_sink {
  std::mutex mu;
  std::vector<std::uint64_t> frames;
  std::vector<std::string> peers;  // "up:<id>" / "down:<id>"
  std::size_t count() {
    std::lock_guard lock(mu);
    return frames.size();
  }
  bool saw(const std::string& what) {
    std::lock_guard lock(mu);
    return std::find(peers.begin(), peers.end(), what) != peers.end();
  }
  // The handlers hold the sink: a peer's down may be told after the test body ended.
  static otpp::cluster::channel_handlers handlers(const std::shared_ptr<channel_sink>& sink) {
    return {.on_frame =
                [sink](const peer&, std::span<const std::uint8_t> p) {
                  std::lock_guard lock(sink->mu);
                  sink->frames.push_back(number_of(p));
                },
            .on_peer_up =
                [sink](const peer& p) {
                  std::lock_guard lock(sink->mu);
                  sink->peers.push_back("up:" + std::string(p.id()));
                },
            .on_peer_down =
                [sink](const peer& p) {
                  std::lock_guard lock(sink->mu);
                  sink->peers.push_back("down:" + std::string(p.id()));
                }};
  }
};

TEST_F(two_nodes, ChannelFramesArriveInOrder) {
  auto sink = std::make_shared<channel_sink>();
  b->cluster->open_channel(otpp::cluster::channels::user_first, channel_sink::handlers(sink));
  auto to = otpp::node_atom::intern(b->id);
  constexpr std::uint64_t total = 20000;
  for (std::uint64_t i = 0; i < total; ++i) {
    auto payload = bytes_of(i);
    while (true) {
      auto r = a->cluster->send_channel(to, 0, otpp::cluster::channels::user_first, payload);
      if (r) break;
      ASSERT_EQ(r.error(), errc::mailbox_full) << r.fail().message();
      std::this_thread::sleep_for(1ms);
    }
  }
  ASSERT_TRUE(eventually([&] { return sink->count() == total; }, 60s)) << sink->count();
  std::lock_guard lock(sink->mu);
  for (std::uint64_t i = 0; i < total; ++i) ASSERT_EQ(sink->frames[i], i);
}

TEST_F(two_nodes, ChannelErrorsAreValues) {
  auto payload = bytes_of(1);
  // A node nobody is connected to: nodedown.
  auto nowhere = otpp::node_atom::intern("zz@127.0.0.1:1");
  EXPECT_EQ(a->cluster->send_channel(nowhere, 0, 70, payload).error(), errc::nodedown);
  // Another incarnation than the connected one: nodedown.
  auto to = otpp::node_atom::intern(b->id);
  EXPECT_EQ(a->cluster->send_channel(to, b->node->creation() + 1, 70, payload).error(),
            errc::nodedown);
  // A channel nobody opened on the receiver: dropped there, counted, the connection lives on.
  ASSERT_TRUE(a->cluster->send_channel(to, b->node->creation(), 71, payload));
  ASSERT_TRUE(eventually([&] { return b->cluster->stats().channel_frames_dropped == 1; }));
  // Over the frame bound: frame_too_large at once.
  std::vector<std::uint8_t> huge(80u << 20);
  EXPECT_EQ(a->cluster->send_channel(to, 0, 70, huge).error(), errc::frame_too_large);
  auto sink = std::make_shared<channel_sink>();
  b->cluster->open_channel(70, channel_sink::handlers(sink));
  ASSERT_TRUE(a->cluster->send_channel(to, 0, 70, payload));
  ASSERT_TRUE(eventually([&] { return sink->count() == 1; }));
  // A closed channel drops again.
  b->cluster->close_channel(70);
  ASSERT_TRUE(a->cluster->send_channel(to, 0, 70, payload));
  ASSERT_TRUE(eventually([&] { return b->cluster->stats().channel_frames_dropped == 2; }));
  EXPECT_EQ(sink->count(), 1u);
  EXPECT_EQ(b->cluster->stats().bad_frames, 0u);
}

TEST(cluster_channels, PeersComeAndGo) {
  auto pa = free_port(), pb = free_port();
  auto a = test_node::start("a", pa, fast_options());
  auto sink = std::make_shared<channel_sink>();
  a->cluster->open_channel(80, channel_sink::handlers(sink));
  EXPECT_TRUE(a->cluster->ready_peers().empty());
  auto b = test_node::start("b", pb, fast_options({"127.0.0.1:" + std::to_string(pa)}));
  auto bid = b->id;
  ASSERT_TRUE(eventually([&] { return sink->saw("up:" + bid); }));
  auto ready = a->cluster->ready_peers();
  ASSERT_EQ(ready.size(), 1u);
  EXPECT_EQ(ready[0].id(), bid);
  EXPECT_EQ(ready[0].creation, b->node->creation());
  EXPECT_FALSE(ready[0].hidden);
  b.reset();
  ASSERT_TRUE(eventually([&] { return sink->saw("down:" + bid); }));
  EXPECT_TRUE(a->cluster->ready_peers().empty());
  // A hidden node is a ready peer too (it may spawn and call), flagged hidden.
  auto ph = free_port();
  auto o = fast_options({"127.0.0.1:" + std::to_string(pa)});
  o.hidden = true;
  auto h = test_node::start("tool", ph, o);
  ASSERT_TRUE(eventually([&] { return sink->saw("up:" + h->id); }));
  ready = a->cluster->ready_peers();
  ASSERT_EQ(ready.size(), 1u);
  EXPECT_TRUE(ready[0].hidden);
}

// Records nodedown messages.
class node_watcher : public otpp::gen_server<node_watcher> {
 public:
  explicit node_watcher(std::shared_ptr<recorder> r) : rec_(std::move(r)) {}
  static void define_handlers(otpp::handlers<node_watcher>& h) {
    h.info<otpp::cluster::nodedown>([](node_watcher& self, otpp::cluster::nodedown d) {
      self.rec_->add("nodedown:" + d.node + ":" + std::to_string(d.ref));
    });
  }

 private:
  std::shared_ptr<recorder> rec_;
};

TEST_F(two_nodes, MonitorNodeFiresOnceWhenTheConnectionGoes) {
  auto rec = std::make_shared<recorder>();
  auto w = a->node->spawn<node_watcher>(rec);
  ASSERT_TRUE(w);
  auto r1 = a->cluster->monitor_node(*w, b->id);
  auto r2 = a->cluster->monitor_node(*w, b->id);
  auto r3 = a->cluster->monitor_node(*w, b->id);
  EXPECT_NE(r1, 0u);
  EXPECT_NE(r1, r2);
  EXPECT_TRUE(a->cluster->demonitor_node(r3));
  EXPECT_FALSE(a->cluster->demonitor_node(r3));
  EXPECT_EQ(a->cluster->stats().node_monitors, 2u);
  auto bid = b->id;
  b.reset();
  ASSERT_TRUE(rec->wait_for_event("nodedown:" + bid + ":" + std::to_string(r1)));
  ASSERT_TRUE(rec->wait_for_event("nodedown:" + bid + ":" + std::to_string(r2)));
  EXPECT_EQ(a->cluster->stats().node_monitors, 0u);
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(rec->count_prefix("nodedown:"), 2u) << "a demonitored or fired monitor fired again";
  // A node that is not connected: nodedown at once.
  auto r4 = a->cluster->monitor_node(*w, bid);
  ASSERT_TRUE(rec->wait_for_event("nodedown:" + bid + ":" + std::to_string(r4)));
  EXPECT_EQ(a->cluster->stats().node_monitors, 0u);
}

TEST_F(two_nodes, MonitorNodeEntriesGoWithTheirWatcher) {
  auto rec = std::make_shared<recorder>();
  auto w = a->node->spawn<node_watcher>(rec);
  ASSERT_TRUE(w);
  for (int i = 0; i < 100; ++i) (void)a->cluster->monitor_node(*w, b->id);
  EXPECT_EQ(a->cluster->stats().node_monitors, 100u);
  a->node->stop_process(*w);
  ASSERT_TRUE(eventually([&] { return a->cluster->stats().node_monitors == 0; }));
}

// A process on B that ends with the reason it is told to, or traps exits and records them.
struct finish {
  static constexpr std::string_view tag = "finish";
  std::string reason;
  MSGPACK_DEFINE_MAP(reason)
};
class mortal : public otpp::gen_server<mortal> {
 public:
  static void define_handlers(otpp::handlers<mortal>& h) {
    h.cast<finish>([](mortal& self, finish f) {
      if (f.reason == "throw") throw std::runtime_error("crashed on purpose");
      self.stop(otpp::exit_reason(f.reason));
    });
  }
};

struct unwatch {
  static constexpr std::string_view tag = "unwatch";
  otpp::pid target;
  std::uint32_t cycles = 0;
  MSGPACK_DEFINE_MAP(target, cycles)
};
// Monitors and demonitors a remote process `cycles` times in one handler.
class cycler : public otpp::gen_server<cycler> {
 public:
  explicit cycler(std::shared_ptr<recorder> r) : rec_(std::move(r)) {}
  static void define_handlers(otpp::handlers<cycler>& h) {
    h.info<unwatch>([](cycler& self, unwatch u) {
      for (std::uint32_t i = 0; i < u.cycles; ++i) self.demonitor(self.monitor(u.target));
      self.rec_->add("cycled");
    });
    h.info<otpp::down>(
        [](cycler& self, otpp::down d) { self.rec_->add("down:" + d.reason.text()); });
  }

 private:
  std::shared_ptr<recorder> rec_;
};

TEST_F(two_nodes, RemoteMonitorFiresOnceWithTheExitReason) {
  for (const std::string reason : {"normal", "shutdown", "throw", "custom_reason"}) {
    auto target = b->node->spawn<mortal>();
    ASSERT_TRUE(target);
    auto rec = std::make_shared<recorder>();
    auto obs = a->node->spawn<observer>(rec, false);
    ASSERT_TRUE(obs);
    ASSERT_TRUE(otpp::send(*a->node, *obs, watch{*target, false}));
    ASSERT_TRUE(rec->wait_for_event("watching"));
    ASSERT_TRUE(eventually([&] { return b->cluster->stats().monitors == 1; }));
    ASSERT_TRUE(otpp::cast(*a->node, *target, finish{reason}));
    const std::string expect = reason == "throw" ? "down:crashed on purpose" : "down:" + reason;
    ASSERT_TRUE(rec->wait_for_event(expect)) << reason;
    std::this_thread::sleep_for(50ms);
    EXPECT_EQ(rec->count_prefix("down:"), 1u) << reason;
    EXPECT_TRUE(eventually([&] {
      return a->cluster->stats().monitors == 0 && b->cluster->stats().monitors == 0;
    })) << reason;
    a->node->stop_process(*obs);
  }
}

TEST_F(two_nodes, LinkAcrossNodesKillsThePartnerUnlessItTrapsExits) {
  // Not trapping: a crash on B kills the linked process on A with the same reason.
  {
    auto target = b->node->spawn<mortal>();
    auto rec = std::make_shared<recorder>();
    auto obs = a->node->spawn<observer>(rec, false);
    ASSERT_TRUE(target && obs);
    ASSERT_TRUE(otpp::send(*a->node, *obs, watch{*target, true}));
    ASSERT_TRUE(rec->wait_for_event("watching"));
    ASSERT_TRUE(eventually([&] { return b->cluster->stats().links == 1; }));
    // A spy on A sees the partner's exit reason (an exit signal kills without terminate).
    auto spy_rec = std::make_shared<recorder>();
    auto spy = a->node->spawn<observer>(spy_rec, false);
    ASSERT_TRUE(spy);
    ASSERT_TRUE(otpp::send(*a->node, *spy, watch{*obs, false}));
    ASSERT_TRUE(spy_rec->wait_for_event("watching"));
    ASSERT_TRUE(otpp::cast(*a->node, *target, finish{"throw"}));
    ASSERT_TRUE(eventually([&] { return !a->node->alive(*obs); }));
    EXPECT_TRUE(spy_rec->wait_for_event("down:crashed on purpose"));
  }
  // normal does not kill a linked process that does not trap.
  {
    auto target = b->node->spawn<mortal>();
    auto rec = std::make_shared<recorder>();
    auto obs = a->node->spawn<observer>(rec, false);
    ASSERT_TRUE(target && obs);
    ASSERT_TRUE(otpp::send(*a->node, *obs, watch{*target, true}));
    ASSERT_TRUE(rec->wait_for_event("watching"));
    ASSERT_TRUE(eventually([&] { return b->cluster->stats().links == 1; }));
    ASSERT_TRUE(otpp::cast(*a->node, *target, finish{"normal"}));
    ASSERT_TRUE(eventually([&] { return !b->node->alive(*target); }));
    std::this_thread::sleep_for(100ms);
    EXPECT_TRUE(a->node->alive(*obs));
    a->node->stop_process(*obs);
  }
  // Trapping: the partner gets an EXIT message with the reason and lives on.
  {
    auto target = b->node->spawn<mortal>();
    auto rec = std::make_shared<recorder>();
    auto obs = a->node->spawn<observer>(rec, true);
    ASSERT_TRUE(target && obs);
    ASSERT_TRUE(otpp::send(*a->node, *obs, watch{*target, true}));
    ASSERT_TRUE(rec->wait_for_event("watching"));
    ASSERT_TRUE(eventually([&] { return b->cluster->stats().links == 1; }));
    ASSERT_TRUE(otpp::cast(*a->node, *target, finish{"custom_reason"}));
    ASSERT_TRUE(rec->wait_for_event("EXIT:custom_reason"));
    EXPECT_TRUE(a->node->alive(*obs));
    a->node->stop_process(*obs);
  }
  // And the other way: the process on A dies, the one on B (linked, not trapping) follows.
  {
    auto target = b->node->spawn<mortal>();
    auto rec = std::make_shared<recorder>();
    auto obs = a->node->spawn<observer>(rec, false);
    ASSERT_TRUE(target && obs);
    ASSERT_TRUE(otpp::send(*a->node, *obs, watch{*target, true}));
    ASSERT_TRUE(rec->wait_for_event("watching"));
    ASSERT_TRUE(eventually([&] { return b->cluster->stats().links == 1; }));
    a->node->exit(*obs, otpp::exit_reason("bye"));
    ASSERT_TRUE(eventually([&] { return !b->node->alive(*target); }));
  }
  EXPECT_TRUE(
      eventually([&] { return a->cluster->stats().links == 0 && b->cluster->stats().links == 0; }));
}

TEST_F(two_nodes, TenThousandMonitorCyclesLeaveNothingBehind) {
  auto target = b->node->spawn<mortal>();
  ASSERT_TRUE(target);
  auto rec = std::make_shared<recorder>();
  auto c = a->node->spawn<cycler>(rec);
  ASSERT_TRUE(c);
  for (int round = 0; round < 10; ++round) {
    ASSERT_TRUE(otpp::send(*a->node, *c, unwatch{*target, 1000}));
  }
  ASSERT_TRUE(eventually([&] { return rec->count_prefix("cycled") == 10; }, 60s));
  // Every monitor signal and its demonitor reached B: nothing is tracked on either side.
  EXPECT_TRUE(eventually([&] {
    return a->cluster->stats().monitors == 0 && b->cluster->stats().monitors == 0;
  })) << a->cluster->stats().monitors
      << " " << b->cluster->stats().monitors;
  // And the target still works, and a real monitor still fires once.
  ASSERT_TRUE(otpp::send(*a->node, *c, unwatch{*target, 0}));
  ASSERT_TRUE(otpp::cast(*a->node, *target, finish{"normal"}));
  EXPECT_TRUE(eventually([&] { return !b->node->alive(*target); }));
  EXPECT_EQ(rec->count_prefix("down:"), 0u) << "a demonitored monitor fired";
}

// The remote spawn path: the spawned process's node sets up the caller's link and monitor on
// its behalf (accept_link / accept_monitor), the caller's node adopts them.
TEST_F(two_nodes, AcceptedLinksAndMonitorsBehaveAsMadeByHand) {
  auto rec = std::make_shared<recorder>();
  auto obs = a->node->spawn<observer>(rec, true);
  auto target = b->node->spawn<mortal>();
  ASSERT_TRUE(obs && target);
  auto ref = otpp::new_monitor_ref(*a->node);
  ASSERT_TRUE(b->cluster->accept_monitor(*obs, ref, *target));
  a->cluster->adopt_monitor(*obs, ref, *target);
  ASSERT_TRUE(b->cluster->accept_link(*obs, *target));
  ASSERT_TRUE(a->cluster->accept_link(*target, *obs));
  EXPECT_EQ(a->cluster->stats().links, 1u);
  EXPECT_EQ(b->cluster->stats().links, 1u);
  ASSERT_TRUE(eventually(
      [&] { return a->cluster->stats().monitors == 1 && b->cluster->stats().monitors == 1; }));
  ASSERT_TRUE(otpp::cast(*a->node, *target, finish{"done"}));
  ASSERT_TRUE(rec->wait_for_event("down:done"));
  ASSERT_TRUE(rec->wait_for_event("EXIT:done"));
  EXPECT_TRUE(eventually([&] {
    auto sa = a->cluster->stats(), sb = b->cluster->stats();
    return sa.links == 0 && sb.links == 0 && sa.monitors == 0 && sb.monitors == 0;
  }));
  // Accepting for a dead local process answers false and tracks nothing.
  EXPECT_FALSE(b->cluster->accept_link(*obs, *target));
  EXPECT_FALSE(b->cluster->accept_monitor(*obs, otpp::new_monitor_ref(*a->node), *target));
  EXPECT_EQ(b->cluster->stats().links + b->cluster->stats().monitors, 0u);
  // Adopting for a remote target whose node is gone: down noconnection at once.
  auto target2 = b->node->spawn<mortal>();
  ASSERT_TRUE(target2);
  b.reset();
  ASSERT_TRUE(eventually([&] { return a->cluster->ready_peers().empty(); }))
      << a->cluster->ready_peers().size() << " " << a->cluster->stats().connections;
  a->cluster->adopt_monitor(*obs, otpp::new_monitor_ref(*a->node), *target2);
  ASSERT_TRUE(rec->wait_for_event("down:noconnection"));
  EXPECT_EQ(a->cluster->stats().monitors, 0u);
}

TEST_F(two_nodes, TagsSetAtRunTimeReachEveryMember) {
  auto tag_of = [](test_node& at, const std::string& id,
                   const std::string& key) -> std::optional<std::string> {
    for (const auto& m : at.cluster->members()) {
      if (m.id != id) continue;
      auto it = m.tags.find(key);
      if (it != m.tags.end()) return it->second;
    }
    return std::nullopt;
  };
  a->cluster->set_tag("load", "17");
  EXPECT_TRUE(
      eventually([&] { return tag_of(*a, a->id, "load") == std::optional<std::string>("17"); }));
  EXPECT_TRUE(
      eventually([&] { return tag_of(*b, a->id, "load") == std::optional<std::string>("17"); }));
  a->cluster->set_tag("load", "3");
  EXPECT_TRUE(
      eventually([&] { return tag_of(*b, a->id, "load") == std::optional<std::string>("3"); }));
  a->cluster->set_tag("load", "");
  EXPECT_TRUE(eventually([&] { return !tag_of(*b, a->id, "load"); }));
}

}  // namespace
