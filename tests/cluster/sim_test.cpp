// The cluster simulator (tools/bench/cluster_sim/simulator.hpp) at small sizes: the real
// membership + downing core of every node over a simulated network on virtual time. Asserts
// the outcomes otpp_cluster_sim reports as figures for 50..1,000 nodes.
#include <gtest/gtest.h>

#include <string>
#include <vector>

// The simulator lives with its program; the test shares the header, not a library.
#include "../../tools/bench/cluster_sim/simulator.hpp"

namespace {

using namespace std::chrono_literals;
using namespace otpp::cluster::sim;
using otpp::errc;
using otpp::cluster::node_event;
using otpp::cluster::node_event_kind;

sim_options options(std::uint64_t seed) {
  sim_options o;
  o.seed = seed;
  return o;
}

void expect_full_mesh(const simulator& s) {
  std::size_t alive = 0;
  for (std::size_t i = 0; i < s.size(); ++i) alive += s.alive(i) ? 1 : 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (!s.alive(i)) continue;
    EXPECT_EQ(s.up_count(i), alive - 1) << s.id(i);
    EXPECT_EQ(s.of(i).members().size(), alive) << s.id(i);
    EXPECT_TRUE(s.of(i).wanted_connections().empty()) << s.id(i);
  }
}

TEST(sim_test, NodesJoiningThroughAChainOfSeedsConverge) {
  simulator s(options(1));
  s.reserve(8);
  s.add_node(std::nullopt);  // alone: runs as a one-node cluster
  for (std::size_t i = 1; i < 8; ++i) {
    s.add_node(i - 1);  // each knows only the previous one
    s.run_for(20ms);
  }
  s.run_for(3s);
  expect_full_mesh(s);
  EXPECT_EQ(s.counters().node_down, 0U);
  EXPECT_EQ(s.counters().node_unreachable, 0U);
}

TEST(sim_test, JoinThenCrashConvergeFor8And30Nodes) {
  for (std::size_t n : {8, 30}) {
    SCOPED_TRACE(n);
    simulator s(options(n));
    s.reserve(n + 1);
    s.bootstrap(n);
    s.run_for(1s);
    expect_full_mesh(s);
    auto j = measure_join(s, 0, 10s);
    EXPECT_TRUE(j.converged);
    // One hello round trip to the seed, then every member dials or is dialed in parallel.
    EXPECT_LT(j.time, 100ms);
    EXPECT_EQ(j.hello_messages, 2 * n);  // one connection to each member, hello both ways
    s.run_for(1s);
    expect_full_mesh(s);

    auto c = measure_crash(s, 3, 10s);
    EXPECT_TRUE(c.converged);
    EXPECT_EQ(c.survivors, n);
    EXPECT_EQ(c.reason_connection_closed, n);  // a refused probe: no waiting for the rule
    EXPECT_LT(c.time, 20ms);
    s.run_for(2s);
    expect_full_mesh(s);
    EXPECT_EQ(s.counters().minority, 0U);
    EXPECT_EQ(s.counters().downed, 0U);
  }
}

TEST(sim_test, NoFalseDowningsAtOnePercentLoss) {
  simulator s(options(3));
  s.reserve(30);
  s.bootstrap(30);
  s.run_for(1s);
  auto l = measure_loss(s, 0.01, 30s);
  EXPECT_EQ(l.node_down, 0U);
  EXPECT_EQ(l.downed, 0U);
  EXPECT_EQ(l.minority, 0U);
  EXPECT_GT(l.gossip_lost, 0U);  // the loss was real
  s.run_for(2s);
  expect_full_mesh(s);
}

TEST(sim_test, HeavyLossMakesFlapsButTheStablePeriodPreventsDowning) {
  // 30% loss: six heartbeats lost in a row (600 ms of silence) happens often, a member
  // silent for 1.6 s almost never: flaps are seen, nobody is downed.
  simulator s(options(4));
  s.reserve(8);
  s.bootstrap(8);
  s.run_for(1s);
  auto l = measure_loss(s, 0.3, 30s);
  EXPECT_GT(l.unreachable, 0U);
  EXPECT_EQ(l.node_down, 0U);
  EXPECT_EQ(l.downed, 0U);
}

TEST(sim_test, SixtyFortySplitMajorityDownsMinorityReports) {
  for (std::size_t n : {8, 30}) {
    SCOPED_TRACE(n);
    simulator s(options(10 + n));
    s.reserve(n);
    s.bootstrap(n);
    s.run_for(1s);
    auto p = measure_partition(s, 0.6, 10s);
    EXPECT_TRUE(p.decided);
    EXPECT_EQ(p.majority + p.minority, n);
    EXPECT_EQ(p.majority_reported_minority, 0U);
    EXPECT_EQ(p.minority_downed_someone, 0U);
    EXPECT_EQ(p.majority_downed_majority, 0U);
    EXPECT_EQ(p.downed, 0U);
    // unreachable_after (600 ms) + stable_after (1000 ms), from the last heartbeat heard
    // (up to 100 ms before the split) to a tick or two after.
    EXPECT_GE(p.majority_time, 1500ms);
    EXPECT_LT(p.majority_time, 2000ms);
    EXPECT_GE(p.minority_time, 1500ms);
    EXPECT_LT(p.minority_time, 2000ms);
    for (std::size_t i = 0; i < n; ++i) {
      if (i < p.majority) {
        EXPECT_EQ(s.of(i).counted_members(), p.majority);
        EXPECT_FALSE(s.of(i).in_minority());
      } else {
        EXPECT_TRUE(s.of(i).in_minority());
      }
    }
    // Healed: the minority learns it was downed (its incarnations are blocked), the
    // majority is untouched.
    s.partition({});
    s.run_for(15s);
    for (std::size_t i = 0; i < n; ++i) {
      if (i < p.majority) {
        EXPECT_FALSE(s.of(i).downed()) << s.id(i);
        EXPECT_EQ(s.up_count(i), p.majority - 1) << s.id(i);
      } else {
        EXPECT_TRUE(s.of(i).downed()) << s.id(i);
      }
    }
  }
}

TEST(sim_test, AsymmetricCutDownsOnlyTheNodeNotHeard) {
  // Node 1 stops hearing node 0 (0 still hears 1, and everyone else hears both). Node 1
  // downs 0 by the rule; nobody else may go down, whatever order the verdicts arrive in.
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    SCOPED_TRACE(seed);
    simulator s(options(seed));
    s.reserve(5);
    s.bootstrap(5);
    s.run_for(1s);
    s.cut(0, 1);
    s.run_for(5s);
    EXPECT_TRUE(s.of(0).downed());
    for (std::size_t i = 1; i < 5; ++i) {
      EXPECT_FALSE(s.of(i).downed()) << s.id(i);
      EXPECT_FALSE(s.of(i).in_minority()) << s.id(i);
      EXPECT_EQ(s.up_count(i), 3U) << s.id(i);
    }
  }
}

TEST(sim_test, SameSeedSameRun) {
  auto run = [](std::uint64_t seed) {
    simulator s(options(seed));
    s.reserve(13);
    s.bootstrap(12);
    s.run_for(1s);
    auto j = measure_join(s, 0, 10s);
    auto l = measure_loss(s, 0.05, 5s);
    return std::vector<std::uint64_t>{static_cast<std::uint64_t>(j.time.count()), j.hello_bytes,
                                      l.gossip_lost, l.unreachable, s.counters().events};
  };
  EXPECT_EQ(run(5), run(5));
  EXPECT_NE(run(5), run(6));
}

}  // namespace
