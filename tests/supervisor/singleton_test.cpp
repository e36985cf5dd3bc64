// Cluster singleton: in-process 3-node clusters over TCP on 127.0.0.1 (join_cluster), with a
// relay to split one node off.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <thread>

#include "cluster/cluster_support.hpp"
#include "otpp/registry/join_cluster.hpp"
#include "otpp/supervisor/singleton.hpp"
#include "otpp_test/tcp_relay.hpp"

namespace {

using namespace otpp_test;
using otpp::errc;
using otpp::cluster::node_event_kind;

// Live instances per node slot (init done, not ended), and init attempts.
std::array<std::atomic<int>, 4> live{};
std::atomic<int> inits{0};

void reset_counters() {
  for (auto& l : live) l = 0;
  inits = 0;
}
int total_live() {
  return live[0].load() + live[1].load() + live[2].load() + live[3].load();
}

struct single_args {
  int slot = 0;
  bool fail_init = false;
  MSGPACK_DEFINE_MAP(slot, fail_init)
};

struct whoami {
  static constexpr std::string_view tag = "test.whoami";
  using reply = int;
  OTPP_NO_FIELDS()
};
struct crash {
  static constexpr std::string_view tag = "test.crash";
  OTPP_NO_FIELDS()
};

class single : public otpp::gen_server<single> {
 public:
  explicit single(single_args a) : args_(a) {}
  ~single() override { release(); }
  static void define_handlers(otpp::handlers<single>& h) {
    h.call<whoami>([](single& self, whoami) { return self.args_.slot; });
    h.cast<crash>([](single&, crash) { throw std::runtime_error("asked to crash"); });
  }
  otpp::result<void> init() {
    ++inits;
    if (args_.fail_init) return otpp::failure(errc::invalid_argument, "refuses to start");
    ++live[args_.slot];
    counted_ = true;
    return {};
  }
  void terminate(const otpp::exit_reason&) { release(); }

 private:
  void release() {
    if (counted_) {
      counted_ = false;
      --live[args_.slot];
    }
  }
  single_args args_;
  bool counted_ = false;
};

std::unique_ptr<test_node> start_node(const std::string& name, std::uint16_t port,
                                      otpp::cluster::options o) {
  auto t = std::make_unique<test_node>();
  t->id = node_name(name, port);
  t->node = std::make_unique<otpp::node>(otpp::node_options{.name = t->id, .threads = 2});
  t->node->start();
  EXPECT_TRUE((otpp::register_behaviour<single, single_args>(*t->node, "single")));
  o.on_event = [log = t->log](const otpp::cluster::node_event& e) { log->add(e); };
  auto c = otpp::join_cluster(*t->node, std::move(o));
  if (!c) {
    ADD_FAILURE() << "join " << t->id << ": " << c.fail().message();
    return t;
  }
  t->cluster = *c;
  return t;
}

bool registries_ready(const std::vector<test_node*>& nodes) {
  return eventually([&] {
    for (auto* t : nodes) {
      if (otpp::global_stats(*t->node).peers != nodes.size() - 1) return false;
    }
    return true;
  });
}

otpp::singleton_spec spec_for(int slot, const std::string& name = "the_one",
                              bool fail_init = false) {
  auto s = otpp::singleton(name, "single", single_args{slot, fail_init});
  s.min_members = 2;
  return s;
}

// Exactly one instance runs, on the node of `slot` in `nodes` (index = slot), and every node
// in `watchers` resolves the name to it. Answers the slot, or -1.
int exactly_one(const std::vector<test_node*>& nodes, const std::vector<test_node*>& watchers,
                const std::string& name = "the_one") {
  if (total_live() != 1) return -1;
  int slot = -1;
  for (int i = 0; i < 4; ++i) {
    if (live[i] == 1) slot = i;
  }
  if (slot < 0 || slot >= static_cast<int>(nodes.size()) || !nodes[slot]) return -1;
  auto st = otpp::singleton_status(*nodes[slot]->node, name);
  if (!st || !st->running_here) return -1;
  for (auto* t : watchers) {
    auto w = otpp::whereis(*t->node, otpp::global(name));
    if (!w || *w != st->instance) return -1;
  }
  return slot;
}

int wait_one(const std::vector<test_node*>& nodes, const std::vector<test_node*>& watchers) {
  int slot = -1;
  EXPECT_TRUE(eventually([&] { return (slot = exactly_one(nodes, watchers)) >= 0; }, 20s));
  return slot;
}

struct singleton_cluster : ::testing::Test {
  void SetUp() override {
    reset_counters();
    pa = free_port(), pb = free_port(), pc = free_port();
    a = start_node("a", pa, fast_options());
    b = start_node("b", pb, fast_options({node_name("a", pa)}));
    c = start_node("c", pc, fast_options({node_name("a", pa)}));
    ASSERT_TRUE(converged(all(), 3)) << "three nodes did not converge";
    ASSERT_TRUE(registries_ready(all()));
  }
  void TearDown() override {
    // Stop the nodes one by one (the singleton hops as they go) and then check nothing is
    // left running.
    c.reset();
    b.reset();
    a.reset();
    EXPECT_EQ(total_live(), 0);
  }
  std::vector<test_node*> all() { return {a.get(), b.get(), c.get()}; }
  void start_everywhere() {
    for (int i = 0; i < 3; ++i) {
      auto m = otpp::start_singleton(*all()[i]->node, spec_for(i));
      ASSERT_TRUE(m) << m.fail().message();
    }
  }
  std::uint16_t pa = 0, pb = 0, pc = 0;
  std::unique_ptr<test_node> a, b, c;
};

TEST_F(singleton_cluster, ErrorsAreValues) {
  auto empty = spec_for(0, "");
  EXPECT_EQ(otpp::start_singleton(*a->node, empty).fail().code, errc::invalid_argument);
  auto unknown = otpp::singleton("x", "no_such_behaviour");
  EXPECT_EQ(otpp::start_singleton(*a->node, unknown).fail().code, errc::unknown_behaviour);
  auto first = otpp::start_singleton(*a->node, spec_for(0));
  ASSERT_TRUE(first);
  auto twice = otpp::start_singleton(*a->node, spec_for(0));
  ASSERT_FALSE(twice);
  EXPECT_EQ(twice.fail().code, errc::already_registered);
  EXPECT_EQ(otpp::stop_singleton(*a->node, "unknown").fail().code, errc::not_found);
  EXPECT_EQ(otpp::singleton_status(*a->node, "unknown").fail().code, errc::not_found);

  // A node that never joined a cluster.
  otpp::node lone({.name = node_name("lone", free_port()), .threads = 1});
  lone.start();
  ASSERT_TRUE((otpp::register_behaviour<single, single_args>(lone, "single")));
  EXPECT_EQ(otpp::start_singleton(lone, spec_for(0)).fail().code, errc::nodedown);
  lone.stop();
  ASSERT_TRUE(otpp::stop_singleton(*a->node, "the_one"));
  EXPECT_TRUE(eventually([] { return total_live() == 0; }));
}

TEST_F(singleton_cluster, ExactlyOneInstanceReachableByName) {
  start_everywhere();
  int owner = wait_one(all(), all());
  ASSERT_GE(owner, 0);
  // It stays one (no second start once every manager watches the holder).
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(exactly_one(all(), all()), owner);
  EXPECT_LE(inits.load(), 3);
  std::uint64_t takeovers = 0;
  for (auto* t : all()) {
    auto call = otpp::call(*t->node, otpp::global("the_one"), whoami{}, 5s, asio::use_future);
    auto r = call.get();
    ASSERT_TRUE(r) << r.fail().message();
    EXPECT_EQ(*r, owner);
    auto st = otpp::singleton_status(*t->node, "the_one");
    ASSERT_TRUE(st);
    EXPECT_EQ(st->running_here, t == all()[owner]);
    EXPECT_TRUE(st->eligible);
    takeovers += st->takeovers;
  }
  EXPECT_EQ(takeovers, 1u);
}

TEST_F(singleton_cluster, AJoiningNodeCausesNoChurn) {
  start_everywhere();
  int owner = wait_one(all(), all());
  ASSERT_GE(owner, 0);
  auto before = *otpp::whereis(*a->node, otpp::global("the_one"));
  auto d = start_node("d", free_port(), fast_options({node_name("b", pb)}));
  ASSERT_TRUE(d->cluster);
  // Started at once, before d met anyone: min_members and the registry gate hold it back.
  ASSERT_TRUE(otpp::start_singleton(*d->node, spec_for(3)));
  std::vector<test_node*> four = {a.get(), b.get(), c.get(), d.get()};
  ASSERT_TRUE(converged(four, 4));
  ASSERT_TRUE(registries_ready(four));
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(exactly_one(four, four), owner);
  EXPECT_EQ(*otpp::whereis(*d->node, otpp::global("the_one")), before);
  EXPECT_EQ(inits.load(), 1);
  auto st = otpp::singleton_status(*d->node, "the_one");
  ASSERT_TRUE(st);
  EXPECT_EQ(st->takeovers, 0u);
  EXPECT_EQ(st->holder, before);
  d.reset();
  EXPECT_EQ(exactly_one(all(), all()), owner);
}

TEST_F(singleton_cluster, OwnerNodeStoppedAnotherTakesOver) {
  start_everywhere();
  int owner = wait_one(all(), all());
  ASSERT_GE(owner, 0);
  std::unique_ptr<test_node>* nodes[] = {&a, &b, &c};
  nodes[owner]->reset();  // graceful stop: peers see node_down graceful_shutdown
  EXPECT_EQ(live[owner].load(), 0);
  std::vector<test_node*> rest;
  std::vector<test_node*> by_slot = {a.get(), b.get(), c.get()};
  for (auto* t : by_slot) {
    if (t) rest.push_back(t);
  }
  int next = wait_one(by_slot, rest);
  ASSERT_GE(next, 0);
  EXPECT_NE(next, owner);
  auto r = otpp::call(*rest[0]->node, otpp::global("the_one"), whoami{}, 5s, asio::use_future);
  auto v = r.get();
  ASSERT_TRUE(v) << v.fail().message();
  EXPECT_EQ(*v, next);
}

TEST_F(singleton_cluster, CrashedInstanceIsRestartedOnce) {
  start_everywhere();
  int owner = wait_one(all(), all());
  ASSERT_GE(owner, 0);
  auto old = *otpp::whereis(*a->node, otpp::global("the_one"));
  ASSERT_TRUE(otpp::cast(*a->node, old, crash{}));
  ASSERT_TRUE(eventually([&] {
    auto w = otpp::whereis(*a->node, otpp::global("the_one"));
    return w && *w != old && exactly_one(all(), all()) >= 0;
  }));
  std::this_thread::sleep_for(300ms);
  EXPECT_GE(exactly_one(all(), all()), 0);
}

TEST_F(singleton_cluster, StopSingletonHandsOver) {
  start_everywhere();
  int owner = wait_one(all(), all());
  ASSERT_GE(owner, 0);
  auto* on = all()[owner];
  ASSERT_TRUE(otpp::stop_singleton(*on->node, "the_one"));
  EXPECT_EQ(otpp::singleton_status(*on->node, "the_one").fail().code, errc::not_found);
  int next = -1;
  ASSERT_TRUE(eventually([&] {
    next = exactly_one(all(), all());
    return next >= 0 && next != owner;
  }));
  // The node that stopped its manager does not take it back.
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(exactly_one(all(), all()), next);
  EXPECT_EQ(live[owner].load(), 0);
}

TEST_F(singleton_cluster, AnInitThatAlwaysFailsBacksOff) {
  auto s = spec_for(0, "failing", true);
  s.min_members = 1;
  ASSERT_TRUE(otpp::start_singleton(*a->node, s));
  std::this_thread::sleep_for(2s);
  // Doubling from 50 ms with jitter: at most 7 tries in the first 2 s (a slow machine makes
  // fewer, never more).
  int first = inits.load();
  EXPECT_GE(first, 1);
  EXPECT_LE(first, 10);
  // It keeps trying ...
  EXPECT_TRUE(eventually([&] { return inits.load() > first; }, 20s));
  // ... at most about once a second once the backoff reached its cap: no spin.
  int before = inits.load();
  std::this_thread::sleep_for(3s);
  EXPECT_LE(inits.load() - before, 4);
  auto st = otpp::singleton_status(*a->node, "failing");
  ASSERT_TRUE(st);
  EXPECT_FALSE(st->running_here);
  EXPECT_GE(st->start_failures, 2u);
  EXPECT_EQ(total_live(), 0);
}

// 3 nodes; c reaches a and b (and they reach c) only through relays the test cuts, so the
// split is 2|1 with the default keep-majority downing.
TEST(singleton_split, TheMinorityStopsBeforeTheMajorityStarts) {
  reset_counters();
  auto pa = free_port(), pb = free_port(), pc = free_port();
  auto to_c = tcp_relay::start("127.0.0.1", pc);
  auto c_to_a = tcp_relay::start("127.0.0.1", pa);
  auto c_to_b = tcp_relay::start("127.0.0.1", pb);
  auto relay = [](const std::unique_ptr<tcp_relay>& r) {
    return "127.0.0.1:" + std::to_string(r->port());
  };
  auto oa = fast_options();
  oa.addresses[node_name("c", pc)] = relay(to_c);
  auto ob = fast_options({node_name("a", pa)});
  ob.addresses[node_name("c", pc)] = relay(to_c);
  auto oc = fast_options({relay(c_to_a)});
  oc.addresses[node_name("a", pa)] = relay(c_to_a);
  oc.addresses[node_name("b", pb)] = relay(c_to_b);
  auto a = start_node("a", pa, oa);
  auto b = start_node("b", pb, ob);
  auto c = start_node("c", pc, oc);
  std::vector<test_node*> nodes = {a.get(), b.get(), c.get()};
  ASSERT_TRUE(converged(nodes, 3));
  ASSERT_TRUE(registries_ready(nodes));
  // The instance on c first (the side to be cut off), then the managers of a and b.
  ASSERT_TRUE(otpp::start_singleton(*c->node, spec_for(2)));
  ASSERT_EQ(wait_one(nodes, nodes), 2);
  ASSERT_TRUE(otpp::start_singleton(*a->node, spec_for(0)));
  ASSERT_TRUE(otpp::start_singleton(*b->node, spec_for(1)));
  std::this_thread::sleep_for(200ms);
  ASSERT_EQ(exactly_one(nodes, nodes), 2);

  // Sample both sides every 2 ms from the cut until the majority runs its own.
  std::atomic<bool> sampling{true};
  std::atomic<int> overlaps{0}, doubles{0}, samples{0};
  std::thread sampler([&] {
    while (sampling) {
      int minority = live[2], majority = live[0] + live[1];
      overlaps += minority > 0 && majority > 0;
      doubles += majority > 1 || minority > 1;
      ++samples;
      std::this_thread::sleep_for(2ms);
    }
  });
  to_c->cut_both();
  c_to_a->cut_both();
  c_to_b->cut_both();
  bool downed = eventually([&] {
    return a->log->count(node_event_kind::node_down, c->id) >= 1 &&
           b->log->count(node_event_kind::node_down, c->id) >= 1;
  });
  bool taken_over = eventually([&] { return exactly_one(nodes, {a.get(), b.get()}) >= 0; });
  std::this_thread::sleep_for(300ms);
  sampling = false;
  sampler.join();
  ASSERT_TRUE(downed);
  ASSERT_TRUE(taken_over);
  EXPECT_EQ(overlaps.load(), 0) << "both sides ran an instance at once";
  EXPECT_EQ(doubles.load(), 0);
  EXPECT_GT(samples.load(), 100);
  int owner = exactly_one(nodes, {a.get(), b.get()});
  EXPECT_TRUE(owner == 0 || owner == 1) << owner;
  EXPECT_EQ(live[2].load(), 0);
  auto st = otpp::singleton_status(*c->node, "the_one");
  ASSERT_TRUE(st);
  EXPECT_FALSE(st->running_here);
  EXPECT_FALSE(st->eligible);
  EXPECT_TRUE(c->cluster->in_minority());
  c.reset();
  b.reset();
  a.reset();
  EXPECT_EQ(total_live(), 0);
}

// Two nodes split with downing off (nobody is downed, the split heals): x holds the tie-break
// (lowest id) and starts the singleton, after y registered the name for a process of its own.
// Once healed, the resolver keeps y's earlier registration and kills x's instance
// (name_conflict): x's manager must stand by, watching the winner, not start again.
TEST(singleton_split, ALoserOfAConflictIsNotRestarted) {
  reset_counters();
  auto px = free_port(), py = free_port();
  auto to_y = tcp_relay::start("127.0.0.1", py);
  auto to_x = tcp_relay::start("127.0.0.1", px);
  auto opts = [](std::vector<std::string> seeds) {
    auto o = fast_options(std::move(seeds));
    o.downing.strategy = otpp::cluster::downing_strategy::off;
    o.silence_timeout = 60s;
    return o;
  };
  auto ox = opts({"127.0.0.1:" + std::to_string(to_y->port())});
  ox.addresses[node_name("y", py)] = "127.0.0.1:" + std::to_string(to_y->port());
  auto oy = opts({});
  oy.addresses[node_name("x", px)] = "127.0.0.1:" + std::to_string(to_x->port());
  auto x = start_node("x", px, ox);
  auto y = start_node("y", py, oy);
  ASSERT_TRUE(converged({x.get(), y.get()}, 2));
  ASSERT_TRUE(registries_ready({x.get(), y.get()}));
  to_y->cut_both();
  to_x->cut_both();
  ASSERT_TRUE(eventually([&] {
    return otpp::global_stats(*x->node).peers == 0 && otpp::global_stats(*y->node).peers == 0;
  }));
  auto winner = y->node->spawn<single>(single_args{1});
  ASSERT_TRUE(winner);
  auto reg = otpp::register_name(*y->node, otpp::global("the_one"), *winner, 10s);
  ASSERT_TRUE(reg) << reg.fail().message();
  std::this_thread::sleep_for(5ms);  // a later stamp for x's instance
  auto s = spec_for(0);
  s.min_members = 1;
  ASSERT_TRUE(otpp::start_singleton(*x->node, s));
  ASSERT_TRUE(eventually([] { return live[0] == 1; }));
  to_y->heal();
  to_x->heal();
  ASSERT_TRUE(eventually([&] {
    auto wx = otpp::whereis(*x->node, otpp::global("the_one"));
    auto wy = otpp::whereis(*y->node, otpp::global("the_one"));
    return live[0] == 0 && wx && *wx == *winner && wy && *wy == *winner;
  }));
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(live[0].load(), 0);
  EXPECT_EQ(live[1].load(), 1);
  auto st = otpp::singleton_status(*x->node, "the_one");
  ASSERT_TRUE(st);
  EXPECT_FALSE(st->running_here);
  EXPECT_TRUE(st->eligible);
  EXPECT_EQ(st->holder, *winner);
  EXPECT_EQ(st->takeovers, 1u);
  EXPECT_EQ(otpp::global_stats(*x->node).conflicts, 1u);
  x.reset();
  y.reset();
}

}  // namespace
