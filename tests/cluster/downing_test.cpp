// The downing rule on virtual time: each test passes the time points it computes.
#include "otpp/cluster/downing.hpp"

#include <gtest/gtest.h>

#include <system_error>

namespace {

using namespace std::chrono_literals;
using otpp::errc;
using otpp::time_point;
using otpp::cluster::downing_decision;
using otpp::cluster::downing_options;
using otpp::cluster::downing_rule;
using otpp::cluster::downing_strategy;
using strings = std::vector<std::string>;

const time_point t0 = time_point{} + 1h;
constexpr auto stable = 1000ms;

downing_options options(downing_strategy s = downing_strategy::keep_majority,
                        std::size_t quorum = 0) {
  downing_options o;
  o.strategy = s;
  o.stable_after = stable;
  o.quorum = quorum;
  return o;
}

// A rule for `self` that knows every id in `all` (self included) as reachable at t0.
downing_rule cluster_of(const std::string& self, const strings& all,
                        downing_options o = options()) {
  downing_rule rule(self, o);
  for (const auto& id : all) rule.add_member(id, t0);
  return rule;
}

const strings five = {"a@h:1", "b@h:1", "c@h:1", "d@h:1", "e@h:1"};

TEST(downing_test, MajoritySideDownsMinorityAfterStablePeriodOnly) {
  auto rule = cluster_of("a@h:1", five);
  EXPECT_EQ(rule.members(), 5U);
  const time_point split = t0 + 5s;
  rule.set_reachable("d@h:1", false, split);
  rule.set_reachable("e@h:1", false, split);
  EXPECT_EQ(rule.unreachable(), 2U);
  EXPECT_TRUE(rule.evaluate(split).empty());
  EXPECT_TRUE(rule.evaluate(split + stable - 1ms).empty());
  downing_decision d = rule.evaluate(split + stable);
  EXPECT_EQ(d.down, (strings{"d@h:1", "e@h:1"}));
  EXPECT_FALSE(d.minority);
  EXPECT_EQ(rule.members(), 3U);
  EXPECT_EQ(rule.unreachable(), 0U);
  EXPECT_FALSE(rule.is_member("d@h:1"));
}

TEST(downing_test, MinoritySideReportsMinority) {
  auto rule = cluster_of("d@h:1", five);
  const time_point split = t0 + 5s;
  for (auto id : {"a@h:1", "b@h:1", "c@h:1"}) rule.set_reachable(id, false, split);
  EXPECT_TRUE(rule.evaluate(split + stable - 1ms).empty());
  downing_decision d = rule.evaluate(split + stable);
  EXPECT_TRUE(d.minority);
  EXPECT_TRUE(d.down.empty());
  EXPECT_TRUE(rule.in_minority());
  EXPECT_FALSE(d.empty());
}

TEST(downing_test, TieGoesToTheSideHoldingTheLowestId) {
  const strings four = {"a@h:1", "b@h:1", "c@h:1", "d@h:1"};
  const time_point split = t0 + 1s;
  // Side {a, c} holds the lowest id "a@h:1"; side {b, d} loses.
  auto a = cluster_of("a@h:1", four);
  a.set_reachable("b@h:1", false, split);
  a.set_reachable("d@h:1", false, split);
  auto c = cluster_of("c@h:1", four);
  c.set_reachable("b@h:1", false, split);
  c.set_reachable("d@h:1", false, split);
  auto b = cluster_of("b@h:1", four);
  b.set_reachable("a@h:1", false, split);
  b.set_reachable("c@h:1", false, split);
  auto d = cluster_of("d@h:1", four);
  d.set_reachable("a@h:1", false, split);
  d.set_reachable("c@h:1", false, split);

  const time_point at = split + stable;
  EXPECT_EQ(a.evaluate(at).down, (strings{"b@h:1", "d@h:1"}));
  EXPECT_EQ(c.evaluate(at).down, (strings{"b@h:1", "d@h:1"}));
  auto db = b.evaluate(at);
  EXPECT_TRUE(db.minority);
  EXPECT_TRUE(db.down.empty());
  EXPECT_TRUE(d.evaluate(at).minority);
}

TEST(downing_test, TwoNodeTieLowerIdSurvives) {
  const strings two = {"a@h:1", "b@h:1"};
  auto a = cluster_of("a@h:1", two);
  auto b = cluster_of("b@h:1", two);
  a.set_reachable("b@h:1", false, t0);
  b.set_reachable("a@h:1", false, t0);
  EXPECT_EQ(a.evaluate(t0 + stable).down, (strings{"b@h:1"}));
  EXPECT_TRUE(b.evaluate(t0 + stable).minority);
}

TEST(downing_test, FlapBeforeStablePeriodIsNeverDowned) {
  auto rule = cluster_of("a@h:1", five);
  rule.set_reachable("e@h:1", false, t0 + 1s);
  rule.set_reachable("e@h:1", true, t0 + 1s + stable - 1ms);
  EXPECT_EQ(rule.unreachable(), 0U);
  EXPECT_FALSE(rule.next_decision_time().has_value());
  for (auto t = t0 + 1s; t < t0 + 10s; t += 100ms) EXPECT_TRUE(rule.evaluate(t).empty());
  EXPECT_EQ(rule.members(), 5U);
}

TEST(downing_test, AnyChangeRestartsTheStableTimer) {
  auto rule = cluster_of("a@h:1", five);
  rule.set_reachable("e@h:1", false, t0 + 1s);
  EXPECT_EQ(rule.next_decision_time(), t0 + 1s + stable);
  // Another member goes silent: the view changed, the wait starts again.
  rule.set_reachable("d@h:1", false, t0 + 1500ms);
  EXPECT_EQ(rule.next_decision_time(), t0 + 1500ms + stable);
  EXPECT_TRUE(rule.evaluate(t0 + 1s + stable).empty());
  // A new member joining is a change too.
  rule.add_member("f@h:1", t0 + 2s);
  EXPECT_EQ(rule.next_decision_time(), t0 + 2s + stable);
  EXPECT_TRUE(rule.evaluate(t0 + 1500ms + stable).empty());
  // And one leaving (a reachable one: the two silent ones stay pending).
  rule.remove_member("f@h:1", t0 + 2500ms);
  EXPECT_EQ(rule.next_decision_time(), t0 + 2500ms + stable);
  EXPECT_TRUE(rule.evaluate(t0 + 2s + stable).empty());
  // A repeated report of the same state is not a change.
  rule.set_reachable("d@h:1", false, t0 + 3s);
  rule.add_member("b@h:1", t0 + 3s);
  rule.remove_member("zzz@h:1", t0 + 3s);
  EXPECT_EQ(rule.next_decision_time(), t0 + 2500ms + stable);
  EXPECT_EQ(rule.evaluate(t0 + 2500ms + stable).down, (strings{"d@h:1", "e@h:1"}));
}

TEST(downing_test, StaticQuorumReachedDownsTheRest) {
  auto rule = cluster_of("a@h:1", five, options(downing_strategy::static_quorum, 3));
  rule.set_reachable("d@h:1", false, t0);
  rule.set_reachable("e@h:1", false, t0);
  EXPECT_TRUE(rule.evaluate(t0 + stable - 1ms).empty());
  EXPECT_EQ(rule.evaluate(t0 + stable).down, (strings{"d@h:1", "e@h:1"}));
}

TEST(downing_test, StaticQuorumMissedIsMinority) {
  // Quorum 4 of 5: even a 3-node majority side is not enough.
  auto rule = cluster_of("a@h:1", five, options(downing_strategy::static_quorum, 4));
  rule.set_reachable("d@h:1", false, t0);
  rule.set_reachable("e@h:1", false, t0);
  auto d = rule.evaluate(t0 + stable);
  EXPECT_TRUE(d.minority);
  EXPECT_TRUE(d.down.empty());
}

TEST(downing_test, StaticQuorumZeroIsInvalid) {
  auto bad = options(downing_strategy::static_quorum, 0);
  auto v = downing_rule::validate(bad);
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error(), otpp::make_error_code(errc::invalid_argument));
  EXPECT_NE(v.reason().find("quorum"), std::string::npos);
  EXPECT_THROW(downing_rule("a@h:1", bad), std::system_error);
  auto negative = options();
  negative.stable_after = -1ms;
  EXPECT_FALSE(downing_rule::validate(negative).has_value());
  EXPECT_TRUE(downing_rule::validate(options()).has_value());
}

TEST(downing_test, DownOnSilenceDownsEvenFromTheMinority) {
  const strings two = {"a@h:1", "b@h:1"};
  auto b = cluster_of("b@h:1", two, options(downing_strategy::down_on_silence));
  b.set_reachable("a@h:1", false, t0);
  EXPECT_TRUE(b.evaluate(t0 + stable - 1ms).empty());
  auto d = b.evaluate(t0 + stable);
  EXPECT_EQ(d.down, (strings{"a@h:1"}));
  EXPECT_FALSE(d.minority);
  // Also a 1-of-5 side downs the other four: never minority.
  auto e = cluster_of("e@h:1", five, options(downing_strategy::down_on_silence));
  for (auto id : {"a@h:1", "b@h:1", "c@h:1", "d@h:1"}) e.set_reachable(id, false, t0);
  auto de = e.evaluate(t0 + stable);
  EXPECT_EQ(de.down.size(), 4U);
  EXPECT_FALSE(de.minority);
}

TEST(downing_test, OffNeverDecides) {
  auto rule = cluster_of("a@h:1", five, options(downing_strategy::off));
  rule.set_reachable("b@h:1", false, t0);
  EXPECT_FALSE(rule.next_decision_time().has_value());
  EXPECT_TRUE(rule.evaluate(t0 + 1h).empty());
  EXPECT_EQ(rule.unreachable(), 1U);
  EXPECT_EQ(rule.members(), 5U);
}

TEST(downing_test, SingleNodeClusterNeverDecides) {
  downing_rule rule("a@h:1", options());
  EXPECT_EQ(rule.members(), 1U);
  EXPECT_TRUE(rule.is_member("a@h:1"));
  EXPECT_TRUE(rule.is_reachable("a@h:1"));
  rule.set_reachable("a@h:1", false, t0);  // self: ignored
  rule.add_member("a@h:1", t0);            // self: not counted twice
  EXPECT_EQ(rule.members(), 1U);
  EXPECT_EQ(rule.unreachable(), 0U);
  EXPECT_FALSE(rule.next_decision_time().has_value());
  EXPECT_TRUE(rule.evaluate(t0 + 1h).empty());
}

TEST(downing_test, RemoveMemberWhileUnreachable) {
  auto rule = cluster_of("a@h:1", five);
  rule.set_reachable("e@h:1", false, t0);
  // e left (or was replaced by a new incarnation) before the rule decided: nothing pending.
  rule.remove_member("e@h:1", t0 + 500ms);
  EXPECT_EQ(rule.unreachable(), 0U);
  EXPECT_EQ(rule.members(), 4U);
  EXPECT_FALSE(rule.next_decision_time().has_value());
  EXPECT_TRUE(rule.evaluate(t0 + 10s).empty());
  // With another one still silent, the removal restarts its wait.
  rule.set_reachable("d@h:1", false, t0 + 11s);
  rule.set_reachable("c@h:1", false, t0 + 11s);
  rule.remove_member("c@h:1", t0 + 11s + 500ms);
  EXPECT_EQ(rule.next_decision_time(), t0 + 11s + 500ms + stable);
  EXPECT_EQ(rule.evaluate(t0 + 11s + 500ms + stable).down, (strings{"d@h:1"}));
}

TEST(downing_test, NextDecisionTime) {
  auto rule = cluster_of("a@h:1", five);
  EXPECT_FALSE(rule.next_decision_time().has_value());  // everyone reachable
  rule.set_reachable("e@h:1", false, t0 + 1s);
  ASSERT_TRUE(rule.next_decision_time().has_value());
  const time_point due = *rule.next_decision_time();
  EXPECT_EQ(due, t0 + 1s + stable);
  EXPECT_TRUE(rule.evaluate(due - 1ns).empty());
  EXPECT_FALSE(rule.evaluate(due).empty());             // exactly at the time it announced
  EXPECT_FALSE(rule.next_decision_time().has_value());  // decided: nothing pending
  // Minority: nothing pending afterwards either.
  auto minority = cluster_of("e@h:1", five);
  for (auto id : {"a@h:1", "b@h:1", "c@h:1"}) minority.set_reachable(id, false, t0);
  EXPECT_TRUE(minority.evaluate(*minority.next_decision_time()).minority);
  EXPECT_FALSE(minority.next_decision_time().has_value());
  // A due time in the past means decide now.
  auto late = cluster_of("a@h:1", five);
  late.set_reachable("b@h:1", false, t0);
  EXPECT_EQ(late.evaluate(t0 + 1h).down, (strings{"b@h:1"}));
}

TEST(downing_test, DecisionIsGivenOnce) {
  auto rule = cluster_of("a@h:1", five);
  rule.set_reachable("d@h:1", false, t0);
  rule.set_reachable("e@h:1", false, t0);
  EXPECT_EQ(rule.evaluate(t0 + stable).down.size(), 2U);
  EXPECT_TRUE(rule.evaluate(t0 + stable).empty());
  EXPECT_TRUE(rule.evaluate(t0 + 10 * stable).empty());
  // Late reports about downed members are ignored: they are no longer members.
  rule.set_reachable("d@h:1", false, t0 + 20s);
  EXPECT_TRUE(rule.evaluate(t0 + 30s).empty());

  auto loser = cluster_of("d@h:1", five);
  for (auto id : {"a@h:1", "b@h:1", "c@h:1"}) loser.set_reachable(id, false, t0);
  EXPECT_TRUE(loser.evaluate(t0 + stable).minority);
  EXPECT_TRUE(loser.evaluate(t0 + stable).empty());
  // Still in minority after more changes: it decides nothing until reset.
  loser.set_reachable("a@h:1", true, t0 + 5s);
  loser.set_reachable("a@h:1", false, t0 + 6s);
  EXPECT_TRUE(loser.evaluate(t0 + 1h).empty());
  EXPECT_TRUE(loser.in_minority());
}

TEST(downing_test, ResetForgetsAllButSelf) {
  auto rule = cluster_of("d@h:1", five);
  for (auto id : {"a@h:1", "b@h:1", "c@h:1"}) rule.set_reachable(id, false, t0);
  EXPECT_TRUE(rule.evaluate(t0 + stable).minority);
  rule.reset();
  EXPECT_FALSE(rule.in_minority());
  EXPECT_EQ(rule.members(), 1U);
  EXPECT_EQ(rule.unreachable(), 0U);
  EXPECT_FALSE(rule.next_decision_time().has_value());
  // It decides again once it has rejoined.
  for (const auto& id : five) rule.add_member(id, t0 + 10s);
  rule.set_reachable("e@h:1", false, t0 + 11s);
  EXPECT_EQ(rule.evaluate(t0 + 11s + stable).down, (strings{"e@h:1"}));
}

TEST(downing_test, MemberReachableAgainIsReAddedCleanly) {
  auto rule = cluster_of("a@h:1", five);
  rule.set_reachable("e@h:1", false, t0);
  rule.add_member("e@h:1", t0 + 100ms);  // came back (e.g. reconnected): reachable
  EXPECT_TRUE(rule.is_reachable("e@h:1"));
  EXPECT_EQ(rule.unreachable(), 0U);
  EXPECT_TRUE(rule.evaluate(t0 + 1h).empty());
}

}  // namespace
