// The membership core alone, on virtual time: a fake io records what it says, each test
// passes the time points it computes. No sockets, no threads.
#include "otpp/cluster/membership.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;
using otpp::errc;
using otpp::time_point;
using otpp::cluster::gossip_entry;
using otpp::cluster::member_status;
using otpp::cluster::membership;
using otpp::cluster::membership_options;
using otpp::cluster::node_event;
using otpp::cluster::node_event_kind;

const time_point t0 = time_point{} + 1h;

struct fake_io final : membership::io {
  struct sent {
    std::string to;
    std::vector<gossip_entry> state;
  };
  struct closed {
    std::string id;
    std::uint32_t creation;
    errc why;
  };
  std::vector<sent> gossip;
  std::vector<closed> disconnects;
  std::vector<node_event> events;

  void send_gossip(const std::string& to, const std::vector<gossip_entry>& state) override {
    gossip.push_back({to, state});
  }
  void disconnect(const std::string& id, std::uint32_t creation, errc why) override {
    disconnects.push_back({id, creation, why});
  }
  void event(const node_event& e) override { events.push_back(e); }

  std::size_t count(node_event_kind k, const std::string& node = {}) const {
    return static_cast<std::size_t>(std::count_if(events.begin(), events.end(), [&](auto& e) {
      return e.kind == k && (node.empty() || e.node == node);
    }));
  }
  const node_event* last(node_event_kind k) const {
    for (auto it = events.rbegin(); it != events.rend(); ++it) {
      if (it->kind == k) return &*it;
    }
    return nullptr;
  }
  void clear() {
    gossip.clear();
    disconnects.clear();
    events.clear();
  }
};

const std::string A = "a@h:1", B = "b@h:1", C = "c@h:1", D = "d@h:1", E = "e@h:1";

gossip_entry up(const std::string& id, std::uint32_t creation, std::uint64_t hb = 1) {
  return gossip_entry{id, creation, member_status::up, hb, errc::ok, {}};
}

membership_options opts() {
  membership_options o;
  o.downing.stable_after = 1000ms;
  o.gossip_interval = 500ms;
  o.gossip_fanout = 3;
  o.tombstone_ttl = 60s;
  return o;
}

// This node (A, creation 1) connected to every other id in `others` (creation 10 + index),
// all learned and up at t0.
struct fixture {
  fake_io io;
  membership m;
  std::vector<std::string> others;
  explicit fixture(std::vector<std::string> o = {B, C}, membership_options mo = opts())
      : m(A, 1, mo, io, 7, t0), others(std::move(o)) {
    for (std::size_t i = 0; i < others.size(); ++i) {
      EXPECT_TRUE(m.peer_connected(others[i], creation(i), t0));
    }
  }
  static std::uint32_t creation(std::size_t i) { return static_cast<std::uint32_t>(10 + i); }
};

bool lists(const membership& m, const std::string& id) {
  auto ms = m.members();
  return std::any_of(ms.begin(), ms.end(), [&](auto& x) { return x.id == id; });
}

TEST(membership_test, JoinOfThreeByGossipLearnsMembersFromHello) {
  fake_io io;
  membership c(C, 3, opts(), io, 1, t0);
  // C reached only B; B's hello carries A and B.
  ASSERT_TRUE(c.peer_connected(B, 2, t0));
  c.gossip_received(B, {up(A, 1), up(B, 2)}, t0);
  auto ms = c.members();
  ASSERT_EQ(ms.size(), 3U);
  EXPECT_EQ(ms[0].id, C);
  EXPECT_TRUE(ms[0].self);
  EXPECT_EQ(ms[1].id, A);
  EXPECT_FALSE(ms[1].connected);
  EXPECT_EQ(ms[2].id, B);
  EXPECT_TRUE(ms[2].connected);
  // Full mesh: C wants a connection to A, which it only knows by gossip so far.
  auto want = c.wanted_connections();
  ASSERT_EQ(want.size(), 1U);
  EXPECT_EQ(want[0].first, A);
  EXPECT_EQ(want[0].second, 1U);
  // Learned members are not announced (nor counted) until connected.
  EXPECT_EQ(io.count(node_event_kind::node_up), 1U);
  EXPECT_EQ(c.counted_members(), 2U);
  ASSERT_TRUE(c.peer_connected(A, 1, t0 + 5ms));
  EXPECT_TRUE(c.wanted_connections().empty());
  EXPECT_EQ(io.count(node_event_kind::node_up, A), 1U);
  EXPECT_EQ(c.counted_members(), 3U);
  // The state it gossips lists all three.
  EXPECT_EQ(c.state().size(), 3U);
}

TEST(membership_test, NodeUpOncePerIncarnation) {
  fixture f({B});
  EXPECT_EQ(f.io.count(node_event_kind::node_up, B), 1U);
  // A second connection of the same incarnation (a reconnect) is no new node_up.
  f.m.peer_disconnected(B, 10, false, errc::connection_closed, t0 + 1s);
  EXPECT_TRUE(f.m.peer_connected(B, 10, t0 + 1100ms));
  f.m.gossip_received(B, {up(B, 10, 5)}, t0 + 1200ms);
  EXPECT_EQ(f.io.count(node_event_kind::node_up, B), 1U);
  // It was unreachable in between and is reachable again: one transition each.
  EXPECT_EQ(f.io.count(node_event_kind::node_unreachable, B), 1U);
  EXPECT_EQ(f.io.count(node_event_kind::node_reachable, B), 1U);
}

TEST(membership_test, DefiniteLossIsDownOnceWithConnectionClosed) {
  fixture f;
  f.m.peer_disconnected(B, 10, true, errc::connection_closed, t0 + 1s);
  ASSERT_EQ(f.io.count(node_event_kind::node_down, B), 1U);
  EXPECT_EQ(f.io.last(node_event_kind::node_down)->reason, errc::connection_closed);
  EXPECT_EQ(f.io.last(node_event_kind::node_down)->creation, 10U);
  // Every other connected member hears at once (not at the next gossip round).
  ASSERT_EQ(f.io.gossip.size(), 1U);
  EXPECT_EQ(f.io.gossip[0].to, C);
  // Repeats (the refused probe, a late close, gossip saying down) change nothing.
  f.m.peer_disconnected(B, 10, true, errc::connection_closed, t0 + 1s);
  f.m.peer_disconnected(B, 10, false, errc::connection_closed, t0 + 1s);
  gossip_entry dead{B, 10, member_status::down, 3, errc::connection_closed, {}};
  f.m.gossip_received(C, {dead}, t0 + 2s);
  f.m.tick(t0 + 5s);
  EXPECT_EQ(f.io.count(node_event_kind::node_down, B), 1U);
  EXPECT_FALSE(lists(f.m, B));
  EXPECT_TRUE(f.m.is_blocked(B, 10));
  EXPECT_FALSE(f.m.is_up(B, 10));
  EXPECT_EQ(f.m.counted_members(), 2U);
}

TEST(membership_test, SilenceIsUnreachableThenReachableNeverDown) {
  fixture f;
  f.m.peer_silent(B, 10, true, t0 + 1s);
  EXPECT_EQ(f.io.count(node_event_kind::node_unreachable, B), 1U);
  auto ms = f.m.members();
  EXPECT_FALSE(ms[1].reachable);
  // Heard again before the stable period ends: no decision.
  f.m.tick(t0 + 1500ms);
  f.m.peer_silent(B, 10, false, t0 + 1800ms);
  EXPECT_EQ(f.io.count(node_event_kind::node_reachable, B), 1U);
  for (auto t = t0 + 1800ms; t < t0 + 10s; t += 100ms) f.m.tick(t);
  EXPECT_EQ(f.io.count(node_event_kind::node_down), 0U);
  EXPECT_EQ(f.io.count(node_event_kind::minority), 0U);
  EXPECT_TRUE(f.m.is_up(B, 10));
  // Repeating the same view is no new event.
  f.m.peer_silent(B, 10, false, t0 + 11s);
  EXPECT_EQ(f.io.count(node_event_kind::node_reachable, B), 1U);
}

TEST(membership_test, SilenceHeldPastStableAfterDownsTheSilentInFiveNodeView) {
  fixture f({B, C, D, E});
  const auto split = t0 + 2s;
  f.m.peer_silent(D, 12, true, split);
  f.m.peer_silent(E, 13, true, split + 50ms);
  // Not before the view has been stable for stable_after (since the last change).
  f.m.tick(split + 1049ms);
  EXPECT_EQ(f.io.count(node_event_kind::node_down), 0U);
  f.io.gossip.clear();  // that tick's gossip round
  f.m.tick(split + 1050ms);
  ASSERT_EQ(f.io.count(node_event_kind::node_down), 2U);
  for (const auto& e : f.io.events) {
    if (e.kind == node_event_kind::node_down) {
      EXPECT_EQ(e.reason, errc::heartbeat_timeout);
    }
  }
  EXPECT_EQ(f.io.count(node_event_kind::minority), 0U);
  EXPECT_FALSE(f.m.in_minority());
  // Connections to the downed closed, with the reason.
  ASSERT_EQ(f.io.disconnects.size(), 2U);
  EXPECT_EQ(f.io.disconnects[0].id, D);
  EXPECT_EQ(f.io.disconnects[0].why, errc::heartbeat_timeout);
  // The verdict is pushed to the connected members still up (B, C), with D and E down.
  std::vector<std::string> to;
  for (const auto& g : f.io.gossip) {
    to.push_back(g.to);
    auto d = std::find_if(g.state.begin(), g.state.end(), [](auto& e) { return e.id == D; });
    ASSERT_NE(d, g.state.end());
    EXPECT_EQ(d->status, member_status::down);
  }
  std::sort(to.begin(), to.end());
  to.erase(std::unique(to.begin(), to.end()), to.end());
  EXPECT_EQ(to, (std::vector<std::string>{B, C}));
  EXPECT_EQ(f.m.counted_members(), 3U);
  EXPECT_TRUE(f.m.is_blocked(D, 12));
  EXPECT_TRUE(f.m.is_blocked(E, 13));
}

TEST(membership_test, MinorityReportedOnceAndNobodyDowned) {
  // A sees only B of five: it is on the losing side.
  fixture f({B, C, D, E});
  const auto split = t0 + 2s;
  f.m.peer_silent(C, 11, true, split);
  f.m.peer_silent(D, 12, true, split);
  f.m.peer_silent(E, 13, true, split);
  for (auto t = split; t < split + 10s; t += 100ms) f.m.tick(t);
  EXPECT_EQ(f.io.count(node_event_kind::minority), 1U);
  EXPECT_EQ(f.io.last(node_event_kind::minority)->reason, errc::minority);
  EXPECT_EQ(f.io.last(node_event_kind::minority)->node, A);
  EXPECT_TRUE(f.m.in_minority());
  EXPECT_EQ(f.io.count(node_event_kind::node_down), 0U);
  EXPECT_TRUE(f.io.disconnects.empty());
  // Every member comes back before anyone downed this node: majority again.
  f.m.peer_silent(C, 11, false, split + 11s);
  f.m.peer_silent(D, 12, false, split + 11s);
  EXPECT_EQ(f.io.count(node_event_kind::majority), 0U);
  f.m.peer_silent(E, 13, false, split + 11s);
  EXPECT_EQ(f.io.count(node_event_kind::majority), 1U);
  EXPECT_FALSE(f.m.in_minority());
}

TEST(membership_test, GracefulLeaveIsGracefulShutdown) {
  fixture f;
  // B's leave arrives (a leave frame, or gossip carrying its status leaving).
  f.m.gossip_received(B, {gossip_entry{B, 10, member_status::leaving, 4, errc::ok, {}}}, t0 + 1s);
  EXPECT_TRUE(f.m.is_leaving(B, 10));
  // A leaving member is not counted: its silence cannot tip a decision.
  EXPECT_EQ(f.m.counted_members(), 2U);
  EXPECT_TRUE(f.m.wanted_connections().empty() || f.m.wanted_connections()[0].first != B);
  // Its connection closes (not definite by itself: the leave makes it so).
  f.m.peer_disconnected(B, 10, false, errc::connection_closed, t0 + 1100ms);
  ASSERT_EQ(f.io.count(node_event_kind::node_down, B), 1U);
  EXPECT_EQ(f.io.last(node_event_kind::node_down)->reason, errc::graceful_shutdown);
  EXPECT_EQ(f.io.count(node_event_kind::node_unreachable), 0U);
}

TEST(membership_test, PeerLeavingThenDisconnectIsGracefulShutdown) {
  fixture f;
  f.m.peer_leaving(B, 10, t0 + 1s);
  f.m.peer_disconnected(B, 10, true, errc::graceful_shutdown, t0 + 1001ms);
  ASSERT_EQ(f.io.count(node_event_kind::node_down, B), 1U);
  EXPECT_EQ(f.io.last(node_event_kind::node_down)->reason, errc::graceful_shutdown);
}

TEST(membership_test, OwnLeaveIsGossipedAsLeaving) {
  fixture f;
  f.m.leave();
  ASSERT_EQ(f.io.gossip.size(), 2U);
  EXPECT_EQ(f.io.gossip[0].state[0].id, A);
  EXPECT_EQ(f.io.gossip[0].state[0].status, member_status::leaving);
  EXPECT_TRUE(f.m.wanted_connections().empty());
}

TEST(membership_test, RestartedNodeReplacesOldIncarnationWhichStaysBlocked) {
  fixture f;
  // B restarted: its new creation (99) connects; the old one (10) is gone.
  ASSERT_TRUE(f.m.peer_connected(B, 99, t0 + 3s));
  ASSERT_EQ(f.io.count(node_event_kind::node_down, B), 1U);
  const auto* down = f.io.last(node_event_kind::node_down);
  EXPECT_EQ(down->creation, 10U);
  EXPECT_EQ(down->reason, errc::connection_closed);
  const auto* upev = f.io.last(node_event_kind::node_up);
  EXPECT_EQ(upev->node, B);
  EXPECT_EQ(upev->creation, 99U);
  // Down before up, so subscribers never see two incarnations up.
  auto down_at = std::find_if(f.io.events.begin(), f.io.events.end(),
                              [](auto& e) { return e.kind == node_event_kind::node_down; });
  auto up_at = std::find_if(f.io.events.begin(), f.io.events.end(), [](auto& e) {
    return e.kind == node_event_kind::node_up && e.creation == 99U;
  });
  EXPECT_LT(down_at, up_at);
  EXPECT_TRUE(f.m.is_up(B, 99));
  EXPECT_FALSE(f.m.is_up(B, 10));
  EXPECT_TRUE(f.m.is_blocked(B, 10));
  EXPECT_EQ(f.m.counted_members(), 3U);
  // The old incarnation can never come back, neither by connecting nor by gossip.
  EXPECT_FALSE(f.m.peer_connected(B, 10, t0 + 4s));
  f.m.gossip_received(C, {up(B, 10, 1000)}, t0 + 4s);
  EXPECT_TRUE(f.m.is_up(B, 99));
  EXPECT_EQ(f.io.count(node_event_kind::node_up, B), 2U);
}

TEST(membership_test, GossipSayingThisNodeIsDownDownsIt) {
  fixture f;
  f.io.clear();
  f.m.gossip_received(
      B, {gossip_entry{A, 1, member_status::down, 9, errc::heartbeat_timeout, {}}, up(B, 10, 9)},
      t0 + 5s);
  ASSERT_EQ(f.io.count(node_event_kind::downed), 1U);
  const auto* e = f.io.last(node_event_kind::downed);
  EXPECT_EQ(e->node, A);
  EXPECT_EQ(e->creation, 1U);
  EXPECT_EQ(e->reason, errc::heartbeat_timeout);
  EXPECT_TRUE(f.m.downed());
  // Its connections are not closed through disconnect(): the service turns that into "you
  // were downed" for the peer, and B and C are healthy (the members close on their own).
  EXPECT_TRUE(f.io.disconnects.empty());
  // A downed node is inert: no gossip, no dials, no decisions, no events.
  f.io.clear();
  f.m.peer_silent(C, 11, true, t0 + 5s);
  for (auto t = t0 + 5s; t < t0 + 10s; t += 100ms) f.m.tick(t);
  f.m.gossip_received(C, {up(D, 20)}, t0 + 10s);
  EXPECT_TRUE(f.io.gossip.empty());
  EXPECT_TRUE(f.m.wanted_connections().empty());
  // A connection from a healthy peer is not refused as blocked (that would be a verdict
  // about it) and changes nothing.
  EXPECT_TRUE(f.m.peer_connected(D, 20, t0 + 11s));
  EXPECT_FALSE(f.m.is_up(D, 20));
  EXPECT_TRUE(f.io.events.empty());
  EXPECT_TRUE(f.io.disconnects.empty());
}

TEST(membership_test, DownVerdictForAnEarlierIncarnationIsIgnored) {
  fixture f;
  f.m.gossip_received(B, {gossip_entry{A, 77, member_status::down, 9, errc::downed, {}}}, t0 + 1s);
  EXPECT_FALSE(f.m.downed());
  EXPECT_EQ(f.io.count(node_event_kind::downed), 0U);
}

TEST(membership_test, TombstonesLeaveStateAfterTtlButStayBlocked) {
  auto o = opts();
  o.tombstone_ttl = 10s;
  fixture f({B, C}, o);
  f.m.peer_disconnected(B, 10, true, errc::connection_closed, t0 + 1s);
  auto has_b = [&] {
    auto s = f.m.state();
    return std::any_of(s.begin(), s.end(), [](auto& e) { return e.id == B; });
  };
  f.m.tick(t0 + 1s + 500ms);
  EXPECT_TRUE(has_b());  // still gossiped as down, so every node learns the block
  for (auto t = t0 + 2s; t <= t0 + 12s; t += 500ms) f.m.tick(t);
  EXPECT_FALSE(has_b());
  EXPECT_TRUE(f.m.is_blocked(B, 10));
  EXPECT_FALSE(f.m.peer_connected(B, 10, t0 + 13s));
  f.m.gossip_received(C, {up(B, 10, 50)}, t0 + 13s);
  EXPECT_FALSE(lists(f.m, B));
  EXPECT_EQ(f.io.count(node_event_kind::node_up, B), 1U);
}

TEST(membership_test, GossipRoundPushesToFanoutDistinctConnectedPeers) {
  fixture f({B, C, D, E});
  f.io.gossip.clear();
  f.m.tick(t0 + 500ms);
  ASSERT_EQ(f.io.gossip.size(), 3U);
  std::vector<std::string> to;
  for (const auto& g : f.io.gossip) to.push_back(g.to);
  std::sort(to.begin(), to.end());
  EXPECT_EQ(std::unique(to.begin(), to.end()), to.end());
  // The own heartbeat moves every round.
  auto hb = f.io.gossip[0].state[0].heartbeat;
  f.io.gossip.clear();
  f.m.tick(t0 + 700ms);  // interval not over: no round
  EXPECT_TRUE(f.io.gossip.empty());
  f.m.tick(t0 + 1s);
  ASSERT_FALSE(f.io.gossip.empty());
  EXPECT_EQ(f.io.gossip[0].state[0].heartbeat, hb + 1);
}

}  // namespace
