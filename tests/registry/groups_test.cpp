// Process groups across in-process clusters on 127.0.0.1.
#include <gtest/gtest.h>

#include <algorithm>

#include "cluster/cluster_support.hpp"
#include "otpp/registry/groups.hpp"
#include "runtime/test_support.hpp"

namespace {

using namespace otpp_test;
using otpp::errc;
using otpp::cluster::node_event_kind;

std::unique_ptr<test_node> start_node(const std::string& name, std::uint16_t port,
                                      otpp::cluster::options o) {
  auto t = test_node::start(name, port, std::move(o));
  if (t->cluster) otpp::pg::start(*t->node);
  return t;
}

std::vector<otpp::pid> sorted(std::vector<otpp::pid> v) {
  std::sort(v.begin(), v.end());
  return v;
}

// Every node lists exactly `expected` (as a multiset) for `group`.
bool members_everywhere(const std::vector<test_node*>& nodes, const std::string& group,
                        std::vector<otpp::pid> expected) {
  expected = sorted(std::move(expected));
  return eventually([&] {
    for (auto* t : nodes) {
      if (sorted(otpp::pg::members(*t->node, group)) != expected) return false;
    }
    return true;
  });
}

bool all_empty(const std::vector<test_node*>& nodes) {
  return eventually([&] {
    for (auto* t : nodes) {
      auto s = otpp::pg::stats(*t->node);
      if (s.groups || s.memberships || s.homed) return false;
    }
    return true;
  });
}

struct three_nodes : ::testing::Test {
  void SetUp() override {
    pa = free_port(), pb = free_port(), pc = free_port();
    a = start_node("a", pa, fast_options());
    b = start_node("b", pb, fast_options({node_name("a", pa)}));
    c = start_node("c", pc, fast_options({node_name("a", pa)}));
    ASSERT_TRUE(converged(all(), 3)) << "three nodes did not converge";
  }
  std::vector<test_node*> all() { return {a.get(), b.get(), c.get()}; }
  // One counter per node, all joined to `group`.
  std::vector<otpp::pid> join_one_each(const std::string& group) {
    std::vector<otpp::pid> out;
    for (auto* t : all()) {
      auto p = t->node->spawn<counter>();
      EXPECT_TRUE(p);
      EXPECT_TRUE(otpp::pg::join(*t->node, group, *p));
      out.push_back(*p);
    }
    return out;
  }
  std::uint16_t pa = 0, pb = 0, pc = 0;
  std::unique_ptr<test_node> a, b, c;
};

TEST_F(three_nodes, JoinAndLeaveAreSeenEverywhere) {
  auto pids = join_one_each("g");
  ASSERT_TRUE(members_everywhere(all(), "g", pids));
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(otpp::pg::local_members(*all()[i]->node, "g"), std::vector<otpp::pid>{pids[i]});
    EXPECT_EQ(otpp::pg::which_groups(*all()[i]->node), std::vector<std::string>{"g"});
  }
  ASSERT_TRUE(otpp::pg::leave(*b->node, "g", pids[1]));
  ASSERT_TRUE(members_everywhere(all(), "g", {pids[0], pids[2]}));
  EXPECT_EQ(otpp::pg::leave(*b->node, "g", pids[1]).error(), make_error_code(errc::not_found));
  // Only on the pid's own node.
  EXPECT_EQ(otpp::pg::join(*b->node, "g", pids[0]).error(),
            make_error_code(errc::invalid_argument));
  EXPECT_EQ(otpp::pg::join(*b->node, "", pids[1]).error(), make_error_code(errc::invalid_argument));
  EXPECT_TRUE(otpp::pg::members(*a->node, "nobody").empty());
}

TEST_F(three_nodes, APidMayJoinSeveralTimes) {
  auto p = c->node->spawn<counter>();
  ASSERT_TRUE(p);
  ASSERT_TRUE(otpp::pg::join(*c->node, "multi", *p));
  ASSERT_TRUE(otpp::pg::join(*c->node, "multi", *p));
  ASSERT_TRUE(otpp::pg::join(*c->node, "other", *p));
  ASSERT_TRUE(members_everywhere(all(), "multi", {*p, *p}));
  ASSERT_TRUE(otpp::pg::leave(*c->node, "multi", *p));
  ASSERT_TRUE(members_everywhere(all(), "multi", {*p}));
  ASSERT_TRUE(otpp::pg::leave(*c->node, "multi", *p));
  ASSERT_TRUE(members_everywhere(all(), "multi", {}));
  EXPECT_EQ(otpp::pg::leave(*c->node, "multi", *p).error(), make_error_code(errc::not_found));
  ASSERT_TRUE(members_everywhere(all(), "other", {*p}));
}

TEST_F(three_nodes, MembersLeaveWhenTheyExit) {
  auto pids = join_one_each("g");
  auto q = a->node->spawn<counter>();
  ASSERT_TRUE(otpp::pg::join(*a->node, "g", *q));
  ASSERT_TRUE(otpp::pg::join(*a->node, "g", *q));
  ASSERT_TRUE(members_everywhere(all(), "g", {pids[0], pids[1], pids[2], *q, *q}));
  auto f = otpp::call(*b->node, pids[2], crash{"boom"}, asio::use_future);
  (void)get(f);
  otpp::stop(*a->node, *q, otpp::exit_reason::normal(), 10s, asio::use_future).get();
  ASSERT_TRUE(members_everywhere(all(), "g", {pids[0], pids[1]}));
  // A dead pid cannot join.
  EXPECT_EQ(otpp::pg::join(*c->node, "g", pids[2]).error(), make_error_code(errc::noproc));
}

TEST_F(three_nodes, MembersOfAStoppedNodeGoEverywhere) {
  auto pids = join_one_each("g");
  auto extra = c->node->spawn<counter>();
  ASSERT_TRUE(otpp::pg::join(*c->node, "only_c", *extra));
  ASSERT_TRUE(members_everywhere(all(), "g", pids));
  ASSERT_TRUE(members_everywhere(all(), "only_c", {*extra}));
  auto cid = c->id;
  c->node->stop();
  for (auto* t : {a.get(), b.get()}) {
    ASSERT_TRUE(eventually([&] { return t->log->count(node_event_kind::node_down, cid) == 1; }));
  }
  ASSERT_TRUE(members_everywhere({a.get(), b.get()}, "g", {pids[0], pids[1]}));
  ASSERT_TRUE(members_everywhere({a.get(), b.get()}, "only_c", {}));
  EXPECT_EQ(otpp::pg::which_groups(*a->node), std::vector<std::string>{"g"});
}

TEST_F(three_nodes, CastReachesEveryMember) {
  auto pids = join_one_each("workers");
  ASSERT_TRUE(members_everywhere(all(), "workers", pids));
  EXPECT_EQ(otpp::pg::cast(*a->node, "workers", increment{2}), 3u);
  EXPECT_EQ(otpp::pg::send(*a->node, "workers", ping{1}), 3u);
  EXPECT_EQ(otpp::pg::cast(*a->node, "nobody", increment{2}), 0u);
  for (auto& p : pids) {
    ASSERT_TRUE(eventually([&] { return *call_sync(*b->node, p, get_count{}, 10s) == 2; }));
  }
}

struct change_sink {
  std::mutex mu;
  std::vector<std::string> events;  // "+group:pid" / "-group:pid"
  void add(const otpp::pg::membership_change& c) {
    std::lock_guard lock(mu);
    for (auto& p : c.joined) events.push_back("+" + c.group + ":" + p.to_string());
    for (auto& p : c.left) events.push_back("-" + c.group + ":" + p.to_string());
  }
  std::size_t count(const std::string& e) {
    std::lock_guard lock(mu);
    return static_cast<std::size_t>(std::count(events.begin(), events.end(), e));
  }
};

class change_watcher : public otpp::gen_server<change_watcher> {
 public:
  explicit change_watcher(std::shared_ptr<change_sink> s) : sink_(std::move(s)) {}
  static void define_handlers(otpp::handlers<change_watcher>& h) {
    h.info<otpp::pg::membership_change>(
        [](change_watcher& self, otpp::pg::membership_change c) { self.sink_->add(c); });
  }

 private:
  std::shared_ptr<change_sink> sink_;
};

TEST_F(three_nodes, SubscribersHearJoinsAndLeaves) {
  auto one = std::make_shared<change_sink>();
  auto every = std::make_shared<change_sink>();
  auto by_message = std::make_shared<change_sink>();
  auto s1 = otpp::pg::subscribe(*b->node, "g", [one](const auto& c) { one->add(c); });
  auto s2 = otpp::pg::subscribe(*b->node, "", [every](const auto& c) { every->add(c); });
  auto w = b->node->spawn<change_watcher>(by_message);
  ASSERT_TRUE(w);
  auto m = otpp::pg::monitor(*b->node, "g", *w);
  ASSERT_TRUE(m);

  auto p = a->node->spawn<counter>();
  ASSERT_TRUE(otpp::pg::join(*a->node, "g", *p));
  ASSERT_TRUE(otpp::pg::join(*a->node, "h", *p));
  auto joined = "+g:" + p->to_string();
  ASSERT_TRUE(
      eventually([&] { return one->count(joined) == 1 && by_message->count(joined) == 1; }));
  ASSERT_TRUE(eventually([&] { return every->count("+h:" + p->to_string()) == 1; }));
  EXPECT_EQ(one->count("+h:" + p->to_string()), 0u);
  ASSERT_TRUE(otpp::pg::leave(*a->node, "g", *p));
  auto left = "-g:" + p->to_string();
  ASSERT_TRUE(eventually([&] { return one->count(left) == 1 && by_message->count(left) == 1; }));
  // An exit is a leave of every group.
  otpp::stop(*a->node, *p, otpp::exit_reason::normal(), 10s, asio::use_future).get();
  ASSERT_TRUE(eventually([&] { return every->count("-h:" + p->to_string()) == 1; }));

  otpp::pg::unsubscribe(*b->node, s1);
  otpp::pg::unsubscribe(*b->node, s2);
  EXPECT_EQ(otpp::pg::stats(*b->node).subscriptions, 1u);
  // The process form ends with its process.
  otpp::stop(*b->node, *w, otpp::exit_reason::normal(), 10s, asio::use_future).get();
  EXPECT_TRUE(eventually([&] { return otpp::pg::stats(*b->node).subscriptions == 0; }));
}

TEST_F(three_nodes, AJoiningNodeReceivesEveryGroup) {
  auto pids = join_one_each("g");
  auto d = start_node("d", free_port(), fast_options({node_name("c", pc)}));
  ASSERT_TRUE(converged({a.get(), b.get(), c.get(), d.get()}, 4));
  EXPECT_TRUE(members_everywhere({d.get()}, "g", pids));
}

TEST_F(three_nodes, MalformedFramesAreDropped) {
  auto foreign = *c->node->spawn<counter>();
  msgpack::sbuffer s;
  msgpack::packer<msgpack::sbuffer> pk(s);
  pk.pack_array(4);
  pk.pack(std::uint64_t{1});
  pk.pack(std::string("g"));
  pk.pack(foreign);  // a may not speak for c's process
  pk.pack(std::uint32_t{1});
  std::vector<std::uint8_t> join_for_c(s.data(), s.data() + s.size());
  // A's own process, but 2^32 - 1 joins in a few bytes (b would list it that many times).
  auto own = *a->node->spawn<counter>();
  s.clear();
  pk.pack_array(4);
  pk.pack(std::uint64_t{1});
  pk.pack(std::string("g"));
  pk.pack(own);
  pk.pack(std::uint32_t{0xffffffff});
  std::vector<std::uint8_t> too_many(s.data(), s.data() + s.size());
  auto atom_b = otpp::node_atom::find(b->id);
  ASSERT_TRUE(a->cluster->send_channel(atom_b, 0, otpp::cluster::channels::groups, join_for_c));
  ASSERT_TRUE(a->cluster->send_channel(atom_b, 0, otpp::cluster::channels::groups,
                                       std::vector<std::uint8_t>{0x93, 0x01}));
  ASSERT_TRUE(a->cluster->send_channel(atom_b, 0, otpp::cluster::channels::groups, too_many));
  ASSERT_TRUE(eventually([&] { return otpp::pg::stats(*b->node).bad_frames == 3; }));
  EXPECT_TRUE(otpp::pg::members(*b->node, "g").empty());
}

TEST(groups, JoinsOfOnePidAreBounded) {
  auto t = start_node("solo", free_port(), fast_options());
  auto p = *t->node->spawn<counter>();
  for (int i = 0; i < 65536; ++i) ASSERT_TRUE(otpp::pg::join(*t->node, "g", p)) << i;
  EXPECT_EQ(otpp::pg::join(*t->node, "g", p).error(), errc::invalid_argument);
  EXPECT_TRUE(otpp::pg::join(*t->node, "h", p));
  EXPECT_EQ(otpp::pg::members(*t->node, "g").size(), 65536u);
}

TEST_F(three_nodes, CountersBackToZero) {
  auto p = b->node->spawn<counter>();
  ASSERT_TRUE(p);
  for (int i = 0; i < 2000; ++i) {
    auto g = "cycle" + std::to_string(i % 5);
    ASSERT_TRUE(otpp::pg::join(*b->node, g, *p));
    ASSERT_TRUE(otpp::pg::leave(*b->node, g, *p));
  }
  auto pids = join_one_each("last");
  ASSERT_TRUE(members_everywhere(all(), "last", pids));
  for (auto* t : all()) {
    otpp::stop(*t->node, otpp::pg::local_members(*t->node, "last").at(0),
               otpp::exit_reason::normal(), 10s, asio::use_future)
        .get();
  }
  EXPECT_TRUE(all_empty(all()));
}

}  // namespace
