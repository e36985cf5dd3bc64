// Distributed supervisor: placement policies as pure functions, then in-process 3-node
// clusters over TCP on 127.0.0.1 (join_cluster).
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "cluster/cluster_support.hpp"
#include "otpp/registry/join_cluster.hpp"
#include "otpp/supervisor/distributed.hpp"
#include "otpp_test/tcp_relay.hpp"

namespace {

using namespace otpp_test;
using otpp::dist_child_state;
using otpp::errc;

// ---------------------------------------------------------------- placement (pure)

otpp::placement_input input(std::vector<otpp::placement_candidate> c, std::uint64_t seq = 0) {
  otpp::placement_input in;
  in.supervisor = "s";
  in.child_id = "c";
  in.self_node = "b@h:2";
  in.candidates = std::move(c);
  in.sequence = seq;
  return in;
}

std::vector<otpp::placement_candidate> three() {
  return {{"a@h:1", {}, 10, 0}, {"b@h:2", {{"role", "db"}}, 5, 0}, {"c@h:3", {}, 5, 0}};
}

TEST(dist_placement, RoundRobinCyclesInNodeOrder) {
  auto p = otpp::placement::round_robin();
  EXPECT_EQ(otpp::place(p, input(three(), 0)), "a@h:1");
  EXPECT_EQ(otpp::place(p, input(three(), 1)), "b@h:2");
  EXPECT_EQ(otpp::place(p, input(three(), 2)), "c@h:3");
  EXPECT_EQ(otpp::place(p, input(three(), 3)), "a@h:1");
  EXPECT_EQ(otpp::place(p, input({})), std::nullopt);
}

TEST(dist_placement, LocalFirstThenRoundRobin) {
  auto p = otpp::placement::local_first();
  EXPECT_EQ(otpp::place(p, input(three(), 7)), "b@h:2");
  auto in = input({{"a@h:1", {}, 0, 0}, {"c@h:3", {}, 0, 0}}, 1);
  EXPECT_EQ(otpp::place(p, in), "c@h:3");
}

TEST(dist_placement, LeastLoadedCountsOwnChildrenTiesByNodeId) {
  auto p = otpp::placement::least_loaded();
  EXPECT_EQ(otpp::place(p, input(three())), "b@h:2");  // 5 = 5 < 10: lower id
  auto c = three();
  c[1].children = 1;
  EXPECT_EQ(otpp::place(p, input(c)), "c@h:3");
  c[2].children = 6;
  EXPECT_EQ(otpp::place(p, input(c)), "b@h:2");
}

TEST(dist_placement, NamedNodeTagAndCustom) {
  EXPECT_EQ(otpp::place(otpp::placement::on_node("c@h:3"), input(three())), "c@h:3");
  EXPECT_EQ(otpp::place(otpp::placement::on_node("z@h:9"), input(three())), std::nullopt);
  EXPECT_EQ(otpp::place(otpp::placement::with_tag("role", "db"), input(three(), 5)), "b@h:2");
  EXPECT_EQ(otpp::place(otpp::placement::with_tag("role", "web"), input(three())), std::nullopt);
  auto last =
      otpp::placement::custom([](const otpp::placement_input& in) -> std::optional<std::string> {
        return in.candidates.back().node;
      });
  EXPECT_EQ(otpp::place(last, input(three())), "c@h:3");
  // A custom answer that is not a candidate is refused.
  auto bogus = otpp::placement::custom(
      [](const otpp::placement_input&) -> std::optional<std::string> { return "x@h:0"; });
  EXPECT_EQ(otpp::place(bogus, input(three())), std::nullopt);
}

// ---------------------------------------------------------------- cluster

std::mutex counts_mu;
std::map<std::string, int> live_by_node;  // node id -> live workers
std::map<std::string, int> live_by_id;    // child id -> live copies
std::map<std::string, std::string> ends;  // child id -> "terminate:<reason>" of its last copy
std::atomic<int> inits{0};
std::atomic<int> twice{0};  // inits that found another live copy of the same child id
std::atomic<int> stopping_now{0}, max_stopping{0};  // terminates running at once

struct work_args {
  std::string id;
  bool fail_init = false;
  int stop_ms = 0;  // terminate takes this long (a slow stop)
  MSGPACK_DEFINE_MAP(id, fail_init, stop_ms)
};
struct whoami {
  static constexpr std::string_view tag = "test.dsup.whoami";
  using reply = std::string;
  OTPP_NO_FIELDS()
};
struct crash {
  static constexpr std::string_view tag = "test.dsup.crash";
  OTPP_NO_FIELDS()
};
struct finish {
  static constexpr std::string_view tag = "test.dsup.finish";
  OTPP_NO_FIELDS()
};
// Blocks the child's thread in a handler for `ms`: a child that cannot stop meanwhile.
struct hang {
  static constexpr std::string_view tag = "test.dsup.hang";
  int ms = 0;
  MSGPACK_DEFINE_MAP(ms)
};
std::atomic<int> hanging{0};

class worker : public otpp::gen_server<worker> {
 public:
  explicit worker(work_args a) : args_(std::move(a)) {}
  ~worker() override { release(); }
  static void define_handlers(otpp::handlers<worker>& h) {
    h.call<whoami>([](worker& self, whoami) { return self.this_node().name(); });
    h.cast<crash>([](worker&, crash) { throw std::runtime_error("asked to crash"); });
    h.cast<finish>([](worker& self, finish) { self.stop(otpp::exit_reason::normal()); });
    h.cast<hang>([](worker&, hang m) {
      ++hanging;
      std::this_thread::sleep_for(std::chrono::milliseconds(m.ms));
    });
  }
  otpp::result<void> init() {
    ++inits;
    if (args_.fail_init) return otpp::failure(errc::invalid_argument, "refuses to start");
    node_ = this_node().name();
    std::lock_guard lock(counts_mu);
    ++live_by_node[node_];
    if (++live_by_id[args_.id] > 1) ++twice;
    return {};
  }
  void terminate(const otpp::exit_reason& r) {
    if (args_.stop_ms > 0) {
      int now = ++stopping_now;
      for (int m = max_stopping.load(); now > m && !max_stopping.compare_exchange_weak(m, now);) {
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(args_.stop_ms));
      --stopping_now;
    }
    {
      std::lock_guard lock(counts_mu);
      ends[args_.id] = "terminate:" + r.text();
    }
    release();
  }

 private:
  void release() {
    if (node_.empty()) return;
    std::lock_guard lock(counts_mu);
    --live_by_node[node_];
    --live_by_id[args_.id];
    node_.clear();
  }
  work_args args_;
  std::string node_;
};

int live_of(const std::string& id) {
  std::lock_guard lock(counts_mu);
  auto it = live_by_id.find(id);
  return it == live_by_id.end() ? 0 : it->second;
}

int live_total() {
  std::lock_guard lock(counts_mu);
  int n = 0;
  for (auto& [k, v] : live_by_node) n += v;
  return n;
}

std::unique_ptr<test_node> start_node(const std::string& name, std::uint16_t port,
                                      otpp::cluster::options o) {
  auto t = std::make_unique<test_node>();
  t->id = node_name(name, port);
  t->node = std::make_unique<otpp::node>(otpp::node_options{.name = t->id, .threads = 2});
  t->node->start();
  EXPECT_TRUE((otpp::register_behaviour<worker, work_args>(*t->node, "worker")));
  auto c = otpp::join_cluster(*t->node, std::move(o));
  if (!c) {
    ADD_FAILURE() << "join " << t->id << ": " << c.fail().message();
    return t;
  }
  t->cluster = *c;
  return t;
}

otpp::dist_child_spec kid(const std::string& id, bool named = true, bool fail_init = false,
                          int stop_ms = 0) {
  return otpp::dist_child(id, "worker", work_args{id, fail_init, stop_ms}, named ? "w/" + id : "");
}

struct dist_cluster : ::testing::Test {
  void SetUp() override {
    {
      std::lock_guard lock(counts_mu);
      live_by_node.clear();
      live_by_id.clear();
      ends.clear();
    }
    inits = 0;
    twice = 0;
    hanging = 0;
    stopping_now = 0;
    max_stopping = 0;
    // free_port() releases its port: two calls may answer the same one.
    pa = free_port();
    do {
      pb = free_port();
    } while (pb == pa);
    do {
      pc = free_port();
    } while (pc == pa || pc == pb);
    a = start_node("a", pa, fast_options());
    b = start_node("b", pb, fast_options({node_name("a", pa)}));
    c = start_node("c", pc, fast_options({node_name("a", pa)}));
    ASSERT_TRUE(converged(all(), 3)) << "three nodes did not converge";
    ASSERT_TRUE(eventually([&] {
      for (auto* t : all()) {
        if (otpp::global_stats(*t->node).peers != 2) return false;
      }
      return true;
    }));
  }
  void TearDown() override {
    d.reset();
    c.reset();
    b.reset();
    a.reset();
    EXPECT_EQ(live_total(), 0);
  }
  std::vector<test_node*> all() {
    std::vector<test_node*> out;
    for (auto* p : {a.get(), b.get(), c.get(), d.get()}) {
      if (p) out.push_back(p);
    }
    return out;
  }
  void start_everywhere(const otpp::dist_supervisor_spec& spec) {
    for (auto* t : all()) {
      auto r = otpp::start_distributed_supervisor(*t->node, spec);
      ASSERT_TRUE(r) << r.fail().message();
    }
  }
  // Supervisor "fence" on every node, its instance done adopting (its one child, "probe", runs
  // on c): only then may a test drive a host directly, since adoption stops any child on a host
  // that the instance does not know (a test's own child, on a slow machine).
  bool start_fence_settled() {
    otpp::dist_supervisor_spec s;
    s.name = "fence";
    s.min_members = 3;
    s.initial_hosts = 3;
    auto probe = kid("probe", false);
    probe.where = otpp::placement::on_node(c->id);
    s.children = {probe};
    start_everywhere(s);
    return !::testing::Test::HasFatalFailure() && all_running(a.get(), 1, "fence");
  }
  // The children as the supervisor reports them, asked through `via` (empty on error).
  std::vector<otpp::dist_child_info> children(test_node* via, const std::string& sup = "sup") {
    auto f = otpp::which_dist_children(*via->node, sup, asio::use_future);
    auto r = f.get();
    if (!r) return {};
    return *r;
  }
  // All `n` children running, as seen through `via`.
  bool all_running(test_node* via, std::size_t n, const std::string& sup = "sup") {
    return eventually(
        [&] {
          auto k = children(via, sup);
          std::size_t running = 0;
          for (auto& x : k) running += x.state == dist_child_state::running;
          if (running == n && k.size() == n) return true;
          std::this_thread::sleep_for(20ms);
          return false;
        },
        30s);
  }
  test_node* by_id(const std::string& id) {
    for (auto* t : all()) {
      if (t->id == id) return t;
    }
    return nullptr;
  }
  std::unique_ptr<test_node>* slot_of(const std::string& id) {
    for (auto* s : {&a, &b, &c, &d}) {
      if (*s && (*s)->id == id) return s;
    }
    return nullptr;
  }
  std::string supervisor_node() {
    auto p = otpp::whereis(*all()[0]->node, otpp::global(otpp::dsup_global_name("sup")));
    if (!p) return {};
    return std::string(p->node().name());
  }
  // Waits until every node's replica knows the child host of `sup` on each of `hosts`.
  bool hosts_known(const std::vector<test_node*>& hosts, const std::string& sup = "sup") {
    return eventually([&] {
      for (auto* t : all()) {
        for (auto* h : hosts) {
          if (!otpp::whereis(*t->node, otpp::global(otpp::dsup_host_name(sup, h->id)))) {
            return false;
          }
        }
      }
      return true;
    });
  }
  // Every node's replica knows the supervisor's global name (the run-time API resolves it there).
  bool sup_everywhere(const std::string& sup = "sup") {
    return eventually([&] {
      for (auto* t : all()) {
        if (!otpp::whereis(*t->node, otpp::global(otpp::dsup_global_name(sup)))) return false;
      }
      return true;
    });
  }
  std::map<std::string, int> per_node(test_node* via) {
    std::map<std::string, int> out;
    for (auto& k : children(via)) ++out[k.node];
    return out;
  }
  otpp::result<otpp::dist_rebalance_report> rebalance(test_node* via,
                                                      const std::string& sup = "sup") {
    return otpp::rebalance_dist_supervisor(*via->node, sup, asio::use_future).get();
  }
  std::uint16_t pa = 0, pb = 0, pc = 0;
  std::unique_ptr<test_node> a, b, c, d;  // d: a node that joins later (some tests)
};

otpp::dist_supervisor_spec nine(otpp::placement where = otpp::placement::round_robin()) {
  otpp::dist_supervisor_spec s;
  s.name = "sup";
  s.max_restarts = 20;
  s.min_members = 3;
  s.initial_hosts = 3;
  s.where = std::move(where);
  for (int i = 0; i < 9; ++i) s.children.push_back(kid("k" + std::to_string(i)));
  return s;
}

TEST_F(dist_cluster, ErrorsAreValues) {
  otpp::dist_supervisor_spec s;
  EXPECT_EQ(otpp::start_distributed_supervisor(*a->node, s).fail().code, errc::invalid_argument);
  s.name = "x";
  s.strategy = otpp::restart_strategy::one_for_all;
  EXPECT_EQ(otpp::start_distributed_supervisor(*a->node, s).fail().code, errc::invalid_argument);
  s.strategy = otpp::restart_strategy::one_for_one;
  s.children = {kid("d"), kid("d")};
  EXPECT_EQ(otpp::start_distributed_supervisor(*a->node, s).fail().code, errc::invalid_argument);
  s.children = {kid("d")};
  s.children[0].shutdown = otpp::shutdown_mode::infinity();  // a host bounds every stop
  EXPECT_EQ(otpp::start_distributed_supervisor(*a->node, s).fail().code, errc::invalid_argument);
  s.children[0].shutdown = otpp::shutdown_mode::timeout(-1ms);
  EXPECT_EQ(otpp::start_distributed_supervisor(*a->node, s).fail().code, errc::invalid_argument);
  s.children[0].shutdown = otpp::shutdown_mode::timeout(100ms);
  s.rebalance_in_flight = 0;
  EXPECT_EQ(otpp::start_distributed_supervisor(*a->node, s).fail().code, errc::invalid_argument);
  s.rebalance_in_flight = 2;
  s.children = {kid("d")};
  ASSERT_TRUE(otpp::start_distributed_supervisor(*a->node, s));
  EXPECT_EQ(otpp::start_distributed_supervisor(*a->node, s).fail().code, errc::already_registered);
  EXPECT_EQ(otpp::stop_distributed_supervisor(*a->node, "nope").fail().code, errc::not_found);
  ASSERT_TRUE(otpp::stop_distributed_supervisor(*a->node, "x"));
  EXPECT_TRUE(eventually([] { return live_total() == 0; }));
}

TEST_F(dist_cluster, RoundRobinThenFailoverToSurvivorsWithNames) {
  start_everywhere(nine());
  ASSERT_TRUE(all_running(a.get(), 9));
  std::map<std::string, int> per_node;
  for (auto& k : children(a.get())) {
    ++per_node[k.node];
    EXPECT_EQ(k.epoch, 1u);
  }
  ASSERT_EQ(per_node.size(), 3u);
  for (auto& [n, count] : per_node) EXPECT_EQ(count, 3) << n;
  EXPECT_EQ(live_total(), 9);

  // Stop a node that does not run the supervisor: its children come back on the others.
  auto sup_at = supervisor_node();
  ASSERT_FALSE(sup_at.empty());
  std::string victim;
  for (auto* t : all()) {
    if (t->id != sup_at) victim = t->id;
  }
  slot_of(victim)->reset();
  auto* via = by_id(sup_at);
  ASSERT_TRUE(eventually(
      [&] {
        auto k = children(via);
        if (k.size() != 9) return false;
        for (auto& x : k) {
          if (x.state != dist_child_state::running || x.node == victim) return false;
        }
        return true;
      },
      30s));
  for (auto& k : children(via)) {
    auto f = otpp::call(*via->node, otpp::global("w/" + k.id), whoami{}, 5s, asio::use_future);
    auto r = f.get();
    ASSERT_TRUE(r) << k.id << ": " << r.fail().message();
    EXPECT_EQ(*r, k.node);
    EXPECT_NE(*r, victim);
    // The host claimed the name with the child's epoch: the registry fences it too.
    auto held = otpp::global_lookup(*via->node, otpp::global("w/" + k.id));
    ASSERT_TRUE(held) << k.id;
    EXPECT_EQ(held->epoch, k.epoch) << k.id;
  }
  EXPECT_EQ(live_total(), 9);
}

TEST_F(dist_cluster, CrashRestartsWithGrowingEpochThenIntensityStops) {
  otpp::dist_supervisor_spec s;
  s.name = "sup";
  s.max_restarts = 2;
  s.period = 60s;
  s.min_members = 3;
  s.initial_hosts = 3;
  s.children = {kid("k0")};
  start_everywhere(s);
  ASSERT_TRUE(all_running(a.get(), 1));
  // A restart's name claim may race the old holder's removal (retried with a new epoch): the
  // epoch grows by at least one per restart.
  for (int round = 1; round <= 2; ++round) {
    auto before = children(a.get());
    ASSERT_EQ(before.size(), 1u);
    ASSERT_TRUE(otpp::cast(*a->node, before[0].child, crash{}));
    ASSERT_TRUE(eventually([&] {
      auto k = children(a.get());
      std::this_thread::sleep_for(10ms);
      return k.size() == 1 && k[0].state == dist_child_state::running &&
             k[0].epoch > before[0].epoch && k[0].child != before[0].child;
    }));
  }
  // The third crash within the period is one too many: everything stops, for good.
  auto last = children(a.get());
  ASSERT_EQ(last.size(), 1u);
  ASSERT_TRUE(otpp::cast(*a->node, last[0].child, crash{}));
  ASSERT_TRUE(eventually([&] {
    for (auto* t : all()) {
      if (otpp::whereis(*t->node, otpp::global(otpp::dsup_global_name("sup")))) return false;
    }
    return live_total() == 0;
  }));
  std::this_thread::sleep_for(500ms);  // no manager starts it again
  for (auto* t : all()) {
    EXPECT_FALSE(otpp::whereis(*t->node, otpp::global(otpp::dsup_global_name("sup"))));
  }
  EXPECT_EQ(live_total(), 0);
}

TEST_F(dist_cluster, TemporaryDroppedTransientNormalNotRestarted) {
  otpp::dist_supervisor_spec s;
  s.name = "sup";
  s.min_members = 3;
  s.initial_hosts = 3;
  auto t = kid("temp");
  t.restart = otpp::restart_type::temporary;
  auto tr = kid("trans");
  tr.restart = otpp::restart_type::transient;
  s.children = {t, tr};
  start_everywhere(s);
  ASSERT_TRUE(all_running(a.get(), 2));
  auto k = children(a.get());
  for (auto& x : k) ASSERT_TRUE(otpp::cast(*a->node, x.child, crash{}));
  // temporary: gone from the list; transient after a crash: restarted.
  ASSERT_TRUE(eventually([&] {
    auto now = children(a.get());
    std::this_thread::sleep_for(10ms);
    return now.size() == 1 && now[0].id == "trans" && now[0].state == dist_child_state::running &&
           now[0].epoch >= 2;
  }));
  // transient ending normally: kept, stopped, not restarted.
  auto now = children(a.get());
  ASSERT_TRUE(otpp::cast(*a->node, now[0].child, finish{}));
  ASSERT_TRUE(eventually([&] {
    auto x = children(a.get());
    std::this_thread::sleep_for(10ms);
    return x.size() == 1 && x[0].state == dist_child_state::stopped;
  }));
  std::this_thread::sleep_for(300ms);
  auto x = children(a.get());
  ASSERT_EQ(x.size(), 1u);
  EXPECT_EQ(x[0].state, dist_child_state::stopped);
  EXPECT_EQ(live_total(), 0);
}

TEST_F(dist_cluster, LeastLoadedSpreadsEvenly) {
  otpp::dist_supervisor_spec s;
  s.name = "sup";
  s.min_members = 3;
  s.initial_hosts = 3;
  s.where = otpp::placement::least_loaded();
  // 100 children over 3 nodes: within one of even (33 or 34 each, give or take one).
  for (int i = 0; i < 100; ++i) s.children.push_back(kid("k" + std::to_string(i), false));
  start_everywhere(s);
  ASSERT_TRUE(all_running(a.get(), 100));
  std::map<std::string, int> per_node;
  for (auto& k : children(a.get())) ++per_node[k.node];
  ASSERT_EQ(per_node.size(), 3u);
  for (auto& [n, count] : per_node) {
    EXPECT_GE(count, 32) << n;
    EXPECT_LE(count, 35) << n;
  }
}

TEST_F(dist_cluster, TagPlacement) {
  b->cluster->set_tag("role", "db");
  ASSERT_TRUE(eventually([&] {
    for (const auto& m : a->cluster->members()) {
      auto it = m.tags.find("role");
      if (m.id == b->id && it != m.tags.end() && it->second == "db") return true;
    }
    return false;
  }));
  // Every node must see the tag (whichever runs the supervisor).
  ASSERT_TRUE(eventually([&] {
    for (const auto& m : c->cluster->members()) {
      auto it = m.tags.find("role");
      if (m.id == b->id && it != m.tags.end() && it->second == "db") return true;
    }
    return false;
  }));
  auto s = nine(otpp::placement::with_tag("role", "db"));
  s.children.resize(4);
  s.children[3].where = otpp::placement::on_node(c->id);
  start_everywhere(s);
  ASSERT_TRUE(all_running(a.get(), 4));
  for (auto& k : children(a.get())) EXPECT_EQ(k.node, k.id == "k3" ? c->id : b->id) << k.id;
}

TEST_F(dist_cluster, HostRefusesAStaleEpoch) {
  ASSERT_TRUE(start_fence_settled());
  auto host = otpp::global(otpp::dsup_host_name("fence", a->id));
  ASSERT_TRUE(eventually([&] { return otpp::whereis(*b->node, host).has_value(); }));
  auto start = [&](std::uint64_t epoch) {
    otpp::dsup_host_start m{otpp::to_wire(kid("f", false)), epoch};
    return otpp::call(*b->node, host, std::move(m), 5s, asio::use_future).get();
  };
  auto first = start(5);
  ASSERT_TRUE(first) << first.fail().message();
  auto same = start(5);
  ASSERT_FALSE(same);
  EXPECT_EQ(same.fail().code, errc::stale_epoch);
  EXPECT_EQ(same.fail().reason, "5") << same.fail().message();
  EXPECT_EQ(start(3).fail().code, errc::stale_epoch);
  // A newer epoch replaces the running copy (never two).
  auto newer = start(6);
  ASSERT_TRUE(newer) << newer.fail().message();
  EXPECT_TRUE(eventually([&] { return !a->node->alive(*first) && live_of("f") == 1; }));
  auto which = otpp::call(*b->node, host, otpp::dsup_host_which{}, 5s, asio::use_future).get();
  ASSERT_TRUE(which);
  ASSERT_EQ(which->size(), 1u);
  EXPECT_EQ((*which)[0].epoch, 6u);
  EXPECT_EQ((*which)[0].child, *newer);
}

TEST_F(dist_cluster, SupervisorNodeStoppedAnotherAdoptsRunningChildren) {
  auto spec = nine();
  spec.min_members = 2;  // the takeover runs with two nodes left
  start_everywhere(spec);
  ASSERT_TRUE(all_running(a.get(), 9));
  auto before = children(a.get());
  auto sup_at = supervisor_node();
  ASSERT_FALSE(sup_at.empty());
  slot_of(sup_at)->reset();
  auto* via = all()[0];
  ASSERT_TRUE(eventually(
      [&] {
        auto s = supervisor_node();
        if (s.empty() || s == sup_at) return false;
        auto k = children(via);
        std::this_thread::sleep_for(20ms);
        if (k.size() != 9) return false;
        for (auto& x : k) {
          if (x.state != dist_child_state::running) return false;
        }
        return true;
      },
      30s));
  auto after = children(via);
  std::map<std::string, otpp::dist_child_info> old;
  for (auto& k : before) old[k.id] = k;
  int adopted = 0, restarted = 0;
  for (auto& k : after) {
    auto& o = old[k.id];
    if (o.node == sup_at) {
      ++restarted;
      EXPECT_NE(k.node, sup_at);
      EXPECT_GT(k.epoch, o.epoch) << k.id;
    } else {
      ++adopted;
      EXPECT_EQ(k.child, o.child) << k.id;
      EXPECT_EQ(k.epoch, o.epoch) << k.id;
      EXPECT_EQ(k.node, o.node) << k.id;
    }
  }
  int lost = 0;
  for (auto& k : before) lost += k.node == sup_at;
  EXPECT_EQ(restarted, lost);
  EXPECT_EQ(adopted, 9 - lost);
  EXPECT_EQ(live_total(), 9);
}

TEST_F(dist_cluster, AChildFailingInitEverywhereIsReportedWithoutSpinning) {
  otpp::dist_supervisor_spec s;
  s.name = "sup";
  s.min_members = 3;
  s.initial_hosts = 3;
  s.children = {kid("bad", true, true), kid("good")};
  start_everywhere(s);
  ASSERT_TRUE(eventually([&] {
    auto k = children(a.get());
    std::this_thread::sleep_for(20ms);
    if (k.size() != 2) return false;
    return k[0].state == dist_child_state::restarting && k[1].state == dist_child_state::running;
  }));
  std::this_thread::sleep_for(3s);
  int first = inits.load();
  std::this_thread::sleep_for(3s);
  // Backoff capped at 2 s (with jitter): at most a few attempts in 3 s, and still trying.
  EXPECT_LE(inits.load() - first, 5);
  auto k = children(a.get());
  ASSERT_EQ(k.size(), 2u);
  EXPECT_EQ(k[0].state, dist_child_state::restarting);
  EXPECT_EQ(k[1].state, dist_child_state::running);
}

TEST_F(dist_cluster, RunTimeApi) {
  otpp::dist_supervisor_spec s;
  s.name = "sup";
  s.min_members = 3;
  s.initial_hosts = 3;
  start_everywhere(s);
  ASSERT_TRUE(eventually([&] {
    return otpp::whereis(*b->node, otpp::global(otpp::dsup_global_name("sup"))).has_value();
  }));
  auto extra = kid("x");
  extra.where = otpp::placement::on_node(c->id);
  auto started = otpp::start_dist_child(*b->node, "sup", extra, asio::use_future).get();
  ASSERT_TRUE(started) << started.fail().message();
  ASSERT_TRUE(all_running(b.get(), 1));
  EXPECT_EQ(children(b.get())[0].node, c->id);
  auto dup = otpp::start_dist_child(*b->node, "sup", extra, asio::use_future).get();
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.fail().code, errc::already_registered);
  auto del = otpp::delete_dist_child(*b->node, "sup", "x", asio::use_future).get();
  EXPECT_EQ(del.fail().code, errc::running);
  ASSERT_TRUE(otpp::terminate_dist_child(*b->node, "sup", "x", asio::use_future).get());
  ASSERT_TRUE(eventually([&] {
    auto k = children(b.get());
    std::this_thread::sleep_for(10ms);
    return k.size() == 1 && k[0].state == dist_child_state::stopped && live_total() == 0;
  }));
  ASSERT_TRUE(otpp::delete_dist_child(*b->node, "sup", "x", asio::use_future).get());
  EXPECT_TRUE(children(b.get()).empty());
  EXPECT_EQ(otpp::terminate_dist_child(*b->node, "sup", "x", asio::use_future).get().fail().code,
            errc::not_found);
  // Stopping the supervisor stops its children everywhere, and it stays stopped.
  auto y = kid("y");
  ASSERT_TRUE(otpp::start_dist_child(*b->node, "sup", y, asio::use_future).get());
  ASSERT_TRUE(all_running(b.get(), 1));
  ASSERT_TRUE(otpp::stop_dist_supervisor(*a->node, "sup", asio::use_future).get());
  ASSERT_TRUE(eventually([&] { return live_total() == 0; }));
  std::this_thread::sleep_for(500ms);
  for (auto* t : all()) {
    EXPECT_FALSE(otpp::whereis(*t->node, otpp::global(otpp::dsup_global_name("sup"))));
  }
}

// ---------------------------------------------------------------- rebalance

// A fourth node joins: nothing moves by itself; a rebalance moves the fewest children (two) to
// it, each stopped on its node before it starts on d, with the next epoch and its global name.
TEST_F(dist_cluster, RebalanceAfterANodeJoinsSpreadsEvenlyAndNeverRunsAChildTwice) {
  start_everywhere(nine());
  ASSERT_TRUE(all_running(a.get(), 9));
  auto before = children(a.get());
  auto pd = free_port();
  while (pd == pa || pd == pb || pd == pc) pd = free_port();
  d = start_node("d", pd, fast_options({node_name("a", pa)}));
  ASSERT_TRUE(converged(all(), 4)) << "d did not join";
  ASSERT_TRUE(eventually([&] {
    for (auto* t : all()) {
      if (otpp::global_stats(*t->node).peers != 3) return false;
    }
    return true;
  }));
  ASSERT_TRUE(otpp::start_distributed_supervisor(*d->node, nine()));
  ASSERT_TRUE(hosts_known({d.get()}));
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(per_node(a.get())[d->id], 0) << "children moved by themselves";
  ASSERT_TRUE(sup_everywhere());
  auto r = rebalance(b.get());
  ASSERT_TRUE(r) << r.fail().message();
  // 9 over 4 nodes: 3/2/2/2, two moves, both to d.
  ASSERT_EQ(r->moved.size(), 2u);
  EXPECT_TRUE(r->not_moved.empty());
  std::map<std::string, otpp::dist_child_info> old;
  for (auto& k : before) old[k.id] = k;
  std::set<std::string> moved;
  for (auto& m : r->moved) {
    moved.insert(m.id);
    EXPECT_EQ(m.to, d->id) << m.id;
    EXPECT_EQ(m.from, old[m.id].node) << m.id;
    EXPECT_GT(m.epoch, old[m.id].epoch) << m.id;  // one more per try on the target
  }
  EXPECT_EQ(moved.size(), 2u);
  auto after = children(a.get());
  ASSERT_EQ(after.size(), 9u);
  std::map<std::string, int> counts;
  for (auto& k : after) {
    EXPECT_EQ(k.state, dist_child_state::running) << k.id;
    ++counts[k.node];
    if (moved.count(k.id)) {
      EXPECT_EQ(k.node, d->id) << k.id;
      EXPECT_NE(k.child, old[k.id].child) << k.id;
    } else {
      EXPECT_EQ(k.child, old[k.id].child) << k.id << " moved or restarted";
      EXPECT_EQ(k.epoch, old[k.id].epoch) << k.id;
    }
  }
  ASSERT_EQ(counts.size(), 4u);
  EXPECT_EQ(counts[d->id], 2);
  for (auto& [n, count] : counts) {
    EXPECT_GE(count, 2) << n;
    EXPECT_LE(count, 3) << n;
  }
  // The global names moved with them.
  for (const auto& id : moved) {
    EXPECT_TRUE(eventually([&] {
      auto w = otpp::call(*a->node, otpp::global("w/" + id), whoami{}, 5s, asio::use_future).get();
      return w && *w == d->id;
    })) << id;
  }
  EXPECT_EQ(live_total(), 9);
  EXPECT_EQ(twice.load(), 0) << "a child ran twice";
  // Spread now: a second rebalance moves nothing.
  auto again = rebalance(c.get());
  ASSERT_TRUE(again) << again.fail().message();
  EXPECT_TRUE(again->moved.empty());
}

TEST_F(dist_cluster, RebalanceWithNothingToMoveMovesNothing) {
  auto spec = nine();
  spec.children.push_back(kid("pinned"));
  spec.children.back().where = otpp::placement::on_node(b->id);
  start_everywhere(spec);
  ASSERT_TRUE(all_running(a.get(), 10));
  auto before = children(a.get());
  ASSERT_TRUE(sup_everywhere());
  auto r = rebalance(c.get());
  ASSERT_TRUE(r) << r.fail().message();
  EXPECT_TRUE(r->moved.empty());
  EXPECT_TRUE(r->not_moved.empty());
  auto after = children(a.get());
  ASSERT_EQ(after.size(), before.size());
  for (std::size_t i = 0; i < after.size(); ++i) {
    EXPECT_EQ(after[i].child, before[i].child) << after[i].id;
    EXPECT_EQ(after[i].epoch, before[i].epoch) << after[i].id;
  }
  EXPECT_EQ(inits.load(), 10);
}

// The supervisor starts on a and b only; c's host comes later. One move at a time
// (rebalance_in_flight 1), each child slow to stop: a second rebalance meanwhile is refused.
TEST_F(dist_cluster, RebalanceWhileOneRunsIsRefusedAndMovesAreBounded) {
  auto spec = nine();
  spec.initial_hosts = 2;
  spec.rebalance_in_flight = 1;
  spec.children.clear();
  for (int i = 0; i < 9; ++i)
    spec.children.push_back(kid("k" + std::to_string(i), true, false, 150));
  for (auto* t : {a.get(), b.get()}) {
    ASSERT_TRUE(otpp::start_distributed_supervisor(*t->node, spec));
  }
  ASSERT_TRUE(all_running(a.get(), 9));
  auto first_counts = per_node(a.get());
  EXPECT_EQ(first_counts[c->id], 0);
  ASSERT_TRUE(otpp::start_distributed_supervisor(*c->node, spec));
  ASSERT_TRUE(hosts_known({c.get()}));
  auto first = otpp::rebalance_dist_supervisor(*a->node, "sup", asio::use_future);
  auto second = otpp::rebalance_dist_supervisor(*a->node, "sup", asio::use_future).get();
  ASSERT_FALSE(second);
  EXPECT_EQ(second.fail().code, errc::running) << second.fail().message();
  auto r = first.get();
  ASSERT_TRUE(r) << r.fail().message();
  // 5/4/0 (round robin over two) to 3/3/3: three moves.
  EXPECT_EQ(r->moved.size(), 3u);
  EXPECT_TRUE(r->not_moved.empty());
  for (auto& m : r->moved) EXPECT_EQ(m.to, c->id) << m.id;
  auto counts = per_node(a.get());
  for (auto* t : all()) EXPECT_EQ(counts[t->id], 3) << t->id;
  EXPECT_EQ(max_stopping.load(), 1) << "more moves at once than rebalance_in_flight";
  EXPECT_EQ(live_total(), 9);
  EXPECT_EQ(twice.load(), 0) << "a child ran twice";
}

TEST_F(dist_cluster, RebalanceErrors) {
  // No such supervisor.
  auto none = rebalance(a.get(), "nobody");
  ASSERT_FALSE(none);
  EXPECT_EQ(none.fail().code, errc::noproc);
  // A supervisor still waiting for its hosts (initial_hosts 4 of 3 nodes) is adopting.
  auto spec = nine();
  spec.initial_hosts = 4;
  start_everywhere(spec);
  ASSERT_TRUE(sup_everywhere());
  auto adopting = rebalance(b.get());
  ASSERT_FALSE(adopting);
  EXPECT_EQ(adopting.fail().code, errc::running);
  EXPECT_NE(adopting.fail().message().find("adopting"), std::string::npos)
      << adopting.fail().message();
}

// ---------------------------------------------------------------- run-time children

TEST_F(dist_cluster, StartDistChildAnswersOnceRunningOrWithTheStartError) {
  auto spec = nine();
  spec.children.clear();
  start_everywhere(spec);
  ASSERT_TRUE(sup_everywhere());
  auto x = kid("x");
  auto r = otpp::start_dist_child(*b->node, "sup", x, asio::use_future).get();
  ASSERT_TRUE(r) << r.fail().message();
  EXPECT_EQ(r->id, "x");
  EXPECT_EQ(r->state, dist_child_state::running);
  EXPECT_EQ(r->epoch, 1u);
  ASSERT_TRUE(r->child);
  ASSERT_NE(by_id(r->node), nullptr) << r->node;
  EXPECT_TRUE(by_id(r->node)->node->alive(r->child));
  EXPECT_EQ(live_total(), 1);
  // An init that fails: its error, and the child is not kept (OTP's start_child).
  auto bad =
      otpp::start_dist_child(*b->node, "sup", kid("bad", true, true), asio::use_future).get();
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.fail().code, errc::init_failed) << bad.fail().message();
  EXPECT_NE(bad.fail().message().find("refuses to start"), std::string::npos)
      << bad.fail().message();
  // No node fits its placement.
  auto lost = kid("lost");
  lost.where = otpp::placement::on_node("nobody@127.0.0.1:1");
  auto nofit = otpp::start_dist_child(*b->node, "sup", lost, asio::use_future).get();
  ASSERT_FALSE(nofit);
  EXPECT_EQ(nofit.fail().code, errc::nodedown) << nofit.fail().message();
  // An unbounded shutdown.
  auto inf = kid("inf");
  inf.shutdown = otpp::shutdown_mode::infinity();
  auto unbounded = otpp::start_dist_child(*b->node, "sup", inf, asio::use_future).get();
  ASSERT_FALSE(unbounded);
  EXPECT_EQ(unbounded.fail().code, errc::invalid_argument) << unbounded.fail().message();
  auto k = children(b.get());
  ASSERT_EQ(k.size(), 1u);
  EXPECT_EQ(k[0].id, "x");
  EXPECT_EQ(live_total(), 1);
}

// A child started at run time survives its supervisor's node: the new instance rebuilds it from
// its host's report (same pid, same epoch) and keeps supervising it (a crash restarts it, on
// its node policy's node).
TEST_F(dist_cluster, RunTimeChildAdoptedAfterTakeover) {
  auto spec = nine();
  spec.children.clear();
  spec.min_members = 2;  // the takeover runs with two nodes left
  start_everywhere(spec);
  ASSERT_TRUE(sup_everywhere());
  auto sup_at = supervisor_node();
  std::string home;
  for (auto* t : all()) {
    if (t->id != sup_at) home = t->id;
  }
  auto x = kid("x");
  x.where = otpp::placement::on_node(home);
  x.restart = otpp::restart_type::transient;
  auto started = otpp::start_dist_child(*by_id(home)->node, "sup", x, asio::use_future).get();
  ASSERT_TRUE(started) << started.fail().message();
  ASSERT_EQ(started->node, home);
  slot_of(sup_at)->reset();
  auto* via = by_id(home);
  ASSERT_TRUE(eventually(
      [&] {
        auto s = supervisor_node();
        if (s.empty() || s == sup_at) return false;
        auto k = children(via);
        std::this_thread::sleep_for(20ms);
        return k.size() == 1 && k[0].state == dist_child_state::running;
      },
      30s));
  auto k = children(via);
  ASSERT_EQ(k.size(), 1u);
  EXPECT_EQ(k[0].id, "x");
  EXPECT_EQ(k[0].child, started->child);
  EXPECT_EQ(k[0].epoch, started->epoch);
  EXPECT_EQ(k[0].node, home);
  EXPECT_EQ(inits.load(), 1);
  // Still supervised with its own spec: a crash (transient, abnormal) restarts it on `home`.
  ASSERT_TRUE(otpp::cast(*via->node, started->child, crash{}));
  ASSERT_TRUE(eventually([&] {
    auto now = children(via);
    std::this_thread::sleep_for(10ms);
    return now.size() == 1 && now[0].state == dist_child_state::running &&
           now[0].child != started->child && now[0].epoch > started->epoch && now[0].node == home;
  }));
  EXPECT_TRUE(eventually([&] {
    auto w = otpp::call(*via->node, otpp::global("w/x"), whoami{}, 5s, asio::use_future).get();
    return w && *w == home;
  }));
}

// ---------------------------------------------------------------- shutdown and stop

// A child stuck in a handler cannot stop: its host kills it at its shutdown timeout (the kill
// lands when the handler returns, and terminate does not run); a child with a longer timeout
// is let finish and stops with shutdown; brutal_kill kills at once.
TEST_F(dist_cluster, ShutdownTimeoutKillsAChildThatDoesNotStop) {
  auto spec = nine();
  spec.children.clear();
  auto slow = kid("slow");
  slow.where = otpp::placement::on_node(b->id);
  slow.shutdown = otpp::shutdown_mode::timeout(100ms);
  auto patient = kid("patient");
  patient.where = otpp::placement::on_node(c->id);
  patient.shutdown = otpp::shutdown_mode::timeout(20s);
  auto brutal = kid("brutal");
  brutal.where = otpp::placement::on_node(a->id);
  brutal.shutdown = otpp::shutdown_mode::brutal_kill();
  spec.children = {slow, patient, brutal};
  start_everywhere(spec);
  ASSERT_TRUE(all_running(a.get(), 3));
  std::mutex mu;
  std::map<std::string, std::string> exits;
  for (auto& k : children(a.get())) {
    by_id(k.node)->node->watch_process(k.child,
                                       [&mu, &exits, id = k.id](const otpp::exit_reason& r) {
                                         std::lock_guard lock(mu);
                                         exits[id] = r.text();
                                       });
    if (k.id != "brutal") {
      ASSERT_TRUE(otpp::cast(*a->node, k.child, hang{3000}));
    }
  }
  ASSERT_TRUE(eventually([&] { return hanging.load() == 2; }));
  for (const char* id : {"slow", "patient", "brutal"}) {
    ASSERT_TRUE(otpp::terminate_dist_child(*a->node, "sup", id, asio::use_future).get()) << id;
  }
  ASSERT_TRUE(eventually(
      [&] {
        auto k = children(a.get());
        std::this_thread::sleep_for(20ms);
        return k.size() == 3 && std::all_of(k.begin(), k.end(), [](const auto& x) {
                 return x.state == dist_child_state::stopped;
               });
      },
      30s));
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lock(mu);
    return exits.size() == 3;
  }));
  std::lock_guard lock(mu);
  EXPECT_EQ(exits["slow"], otpp::exit_reason::killed().text());
  EXPECT_EQ(exits["patient"], otpp::exit_reason::shutdown().text());
  EXPECT_EQ(exits["brutal"], otpp::exit_reason::killed().text());
  std::lock_guard lock2(counts_mu);
  EXPECT_EQ(ends.count("slow"), 0u) << "terminate ran after the kill";
  EXPECT_EQ(ends["patient"], "terminate:" + otpp::exit_reason::shutdown().text());
  EXPECT_EQ(ends.count("brutal"), 0u);
}

// stop_dist_supervisor answers once every host stopped its children: their terminate (slow)
// has run when it answers.
TEST_F(dist_cluster, StopWaitsUntilEveryHostStoppedItsChildren) {
  auto spec = nine();
  spec.children.clear();
  for (int i = 0; i < 6; ++i)
    spec.children.push_back(kid("k" + std::to_string(i), true, false, 200));
  start_everywhere(spec);
  ASSERT_TRUE(all_running(a.get(), 6));
  ASSERT_TRUE(sup_everywhere());
  auto r = otpp::stop_dist_supervisor(*b->node, "sup", asio::use_future).get();
  ASSERT_TRUE(r) << r.fail().message();
  EXPECT_EQ(live_total(), 0) << "answered before the children stopped";
  {
    std::lock_guard lock(counts_mu);
    EXPECT_EQ(ends.size(), 6u);
    for (auto& [id, how] : ends)
      EXPECT_EQ(how, "terminate:" + otpp::exit_reason::shutdown().text()) << id;
  }
  EXPECT_TRUE(eventually([&] {
    for (auto* t : all()) {
      if (otpp::whereis(*t->node, otpp::global(otpp::dsup_global_name("sup")))) return false;
      if (otpp::whereis(*t->node, otpp::global(otpp::dsup_host_name("sup", t->id)))) return false;
    }
    return true;
  }));
}

// A child that cannot stop (stuck in a handler past its kill) does not hold the stop: its host
// gives up after the kill's grace and the stop answers timeout naming that host; meanwhile the
// stopping supervisor takes no new work.
TEST_F(dist_cluster, StopAnswersTimeoutForAHostWithAStuckChild) {
  auto spec = nine();
  spec.children.clear();
  auto stuck = kid("stuck");
  stuck.where = otpp::placement::on_node(b->id);
  stuck.shutdown = otpp::shutdown_mode::timeout(100ms);
  spec.children = {stuck, kid("fine")};
  start_everywhere(spec);
  ASSERT_TRUE(all_running(a.get(), 2));
  otpp::pid stuck_pid;
  for (auto& k : children(a.get())) {
    if (k.id == "stuck") stuck_pid = k.child;
  }
  ASSERT_TRUE(otpp::cast(*a->node, stuck_pid, hang{4000}));
  ASSERT_TRUE(eventually([&] { return hanging.load() == 1; }));
  auto stopping = otpp::stop_dist_supervisor(*a->node, "sup", asio::use_future);
  auto refused = otpp::start_dist_child(*a->node, "sup", kid("late"), asio::use_future).get();
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.fail().code, errc::noproc) << refused.fail().message();
  auto r = stopping.get();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.fail().code, errc::timeout) << r.fail().message();
  EXPECT_NE(r.fail().message().find(b->id), std::string::npos) << r.fail().message();
  EXPECT_TRUE(b->node->alive(stuck_pid)) << "the stop waited for the stuck handler";
  EXPECT_TRUE(eventually([&] { return live_total() == 0; }, 30s));
  EXPECT_TRUE(eventually([&] {
    for (auto* t : all()) {
      if (otpp::whereis(*t->node, otpp::global(otpp::dsup_global_name("sup")))) return false;
    }
    return true;
  }));
}

// The host's stop_all stops its children per their shutdown, answers once they ended, and
// refuses starts afterwards; a stop of a copy that does not run there answers false.
TEST_F(dist_cluster, HostStopAllStopsItsChildrenAndRefusesStarts) {
  ASSERT_TRUE(start_fence_settled());
  auto host = otpp::global(otpp::dsup_host_name("fence", a->id));
  ASSERT_TRUE(eventually([&] { return otpp::whereis(*b->node, host).has_value(); }));
  auto start = [&](std::uint64_t epoch) {
    otpp::dsup_host_start m{otpp::to_wire(kid("f", false, false, 200)), epoch};
    return otpp::call(*b->node, host, std::move(m), 5s, asio::use_future).get();
  };
  auto first = start(1);
  ASSERT_TRUE(first) << first.fail().message();
  auto stop = [&](std::string id, std::uint64_t epoch) {
    otpp::dsup_host_stop m{std::move(id), epoch};
    return otpp::call(*b->node, host, std::move(m), 5s, asio::use_future).get();
  };
  auto unknown = stop("nope", 0);
  ASSERT_TRUE(unknown);
  EXPECT_FALSE(*unknown);
  auto other_epoch = stop("f", 7);
  ASSERT_TRUE(other_epoch);
  EXPECT_FALSE(*other_epoch);
  EXPECT_EQ(live_of("f"), 1);
  auto all_stopped =
      otpp::call(*b->node, host, otpp::dsup_host_stop_all{}, 10s, asio::use_future).get();
  ASSERT_TRUE(all_stopped) << all_stopped.fail().message();
  EXPECT_TRUE(*all_stopped);
  EXPECT_EQ(live_of("f"), 0) << "answered before the child stopped";
  auto refused = start(2);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.fail().code, errc::noproc) << refused.fail().message();
}

// 3 nodes; c reaches a and b (and they reach c) only through relays the test cuts: a 2|1
// split with keep-majority. c's children stop on c (its host loses the majority) before the
// majority restarts them (after c's node_down): never two copies of a child at once.
TEST(dist_split, MinorityStopsItsChildrenBeforeTheMajorityRestartsThem) {
  {
    std::lock_guard lock(counts_mu);
    live_by_node.clear();
  }
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
  ASSERT_TRUE(eventually([&] {
    for (auto* t : nodes) {
      if (otpp::global_stats(*t->node).peers != 2) return false;
    }
    return true;
  }));
  // Three hosts before the first placement (c gets its three children). The supervisor runs
  // on a (started there first) or, if c won, moves to the majority side.
  auto spec = nine();
  spec.min_members = 2;  // the majority side takes over if the supervisor ran on c
  spec.initial_hosts = 3;
  for (auto* t : nodes) ASSERT_TRUE(otpp::start_distributed_supervisor(*t->node, spec));
  auto running_on = [&](test_node* via, const std::string& exclude) {
    auto f = otpp::which_dist_children(*via->node, "sup", asio::use_future);
    auto r = f.get();
    if (!r || r->size() != 9) return false;
    for (auto& x : *r) {
      if (x.state != dist_child_state::running || x.node == exclude) return false;
    }
    return true;
  };
  ASSERT_TRUE(eventually([&] {
    std::this_thread::sleep_for(20ms);
    return running_on(a.get(), "") && live_total() == 9;
  }));
  {
    std::lock_guard lock(counts_mu);
    ASSERT_EQ(live_by_node[c->id], 3);
  }
  std::atomic<bool> sampling{true};
  std::atomic<int> over{0}, samples{0};
  std::thread sampler([&] {
    while (sampling) {
      over += live_total() > 9;
      ++samples;
      std::this_thread::sleep_for(2ms);
    }
  });
  to_c->cut_both();
  c_to_a->cut_both();
  c_to_b->cut_both();
  bool moved = eventually(
      [&] {
        std::this_thread::sleep_for(20ms);
        return running_on(a.get(), c->id) && live_total() == 9;
      },
      30s);
  sampling = false;
  sampler.join();
  ASSERT_TRUE(moved);
  EXPECT_EQ(over.load(), 0) << "a child ran twice";
  EXPECT_GT(samples.load(), 100);
  {
    std::lock_guard lock(counts_mu);
    EXPECT_EQ(live_by_node[c->id], 0);
  }
  c.reset();
  b.reset();
  a.reset();
  EXPECT_EQ(live_total(), 0);
}

// A lost connection is not a down node: c's children show unreachable while c cannot be
// reached, and are watched again (same pids, same epochs, no restart) once it can.
TEST(dist_split, ALostConnectionIsNotANodeDown) {
  {
    std::lock_guard lock(counts_mu);
    live_by_node.clear();
  }
  inits = 0;
  auto pa = free_port(), pb = free_port(), pc = free_port();
  auto to_c = tcp_relay::start("127.0.0.1", pc);
  auto b_to_c = tcp_relay::start("127.0.0.1", pc);
  auto c_to_a = tcp_relay::start("127.0.0.1", pa);
  auto c_to_b = tcp_relay::start("127.0.0.1", pb);
  auto relay = [](const std::unique_ptr<tcp_relay>& r) {
    return "127.0.0.1:" + std::to_string(r->port());
  };
  auto oa = fast_options();
  oa.addresses[node_name("c", pc)] = relay(to_c);
  auto ob = fast_options({node_name("a", pa)});
  ob.addresses[node_name("c", pc)] = relay(b_to_c);
  auto oc = fast_options({relay(c_to_a)});
  oc.addresses[node_name("a", pa)] = relay(c_to_a);
  oc.addresses[node_name("b", pb)] = relay(c_to_b);
  auto a = start_node("a", pa, oa);
  auto b = start_node("b", pb, ob);
  auto c = start_node("c", pc, oc);
  std::vector<test_node*> nodes = {a.get(), b.get(), c.get()};
  ASSERT_TRUE(converged(nodes, 3));
  ASSERT_TRUE(eventually([&] {
    for (auto* t : nodes) {
      if (otpp::global_stats(*t->node).peers != 2) return false;
    }
    return true;
  }));
  auto spec = nine(otpp::placement::on_node(c->id));
  spec.children.resize(3);
  spec.min_members = 3;
  spec.initial_hosts = 3;
  // a first, and its supervisor running before the others start: they find its name held.
  ASSERT_TRUE(otpp::start_distributed_supervisor(*a->node, spec));
  ASSERT_TRUE(eventually([&] {
    auto p = otpp::whereis(*a->node, otpp::global(otpp::dsup_global_name("sup")));
    return p && p->node().name() == a->id;
  }));
  for (auto* t : {b.get(), c.get()}) {
    ASSERT_TRUE(otpp::start_distributed_supervisor(*t->node, spec));
  }
  auto which = [&] {
    auto f = otpp::which_dist_children(*a->node, "sup", asio::use_future);
    auto r = f.get();
    return r ? *r : std::vector<otpp::dist_child_info>{};
  };
  ASSERT_TRUE(eventually([&] {
    std::this_thread::sleep_for(20ms);
    auto k = which();
    return k.size() == 3 && std::all_of(k.begin(), k.end(), [](const auto& x) {
             return x.state == dist_child_state::running;
           });
  }));
  auto sup = otpp::whereis(*a->node, otpp::global(otpp::dsup_global_name("sup")));
  ASSERT_TRUE(sup);
  if (sup->node().name() != a->id) GTEST_SKIP() << "the supervisor started on another node";
  auto before = which();
  int inits_before = inits.load();
  // Only the a-c connection: c still sees b (a majority), so its host keeps the children.
  for (auto* r : {to_c.get(), c_to_a.get()}) r->reset_connections();
  // Reconnected at once (the relays still pass): the children may be seen unreachable for a
  // moment, then watched again; nothing restarts.
  ASSERT_TRUE(eventually([&] { return a->cluster->stats().connections == 2; }));
  std::this_thread::sleep_for(300ms);
  ASSERT_TRUE(eventually([&] {
    std::this_thread::sleep_for(20ms);
    auto k = which();
    return k.size() == 3 && std::all_of(k.begin(), k.end(), [](const auto& x) {
             return x.state == dist_child_state::running;
           });
  }));
  auto after = which();
  ASSERT_EQ(after.size(), before.size());
  for (std::size_t i = 0; i < after.size(); ++i) {
    EXPECT_EQ(after[i].child, before[i].child) << after[i].id;
    EXPECT_EQ(after[i].epoch, before[i].epoch) << after[i].id;
  }
  EXPECT_EQ(inits.load(), inits_before);
  EXPECT_EQ(a->log->count(otpp::cluster::node_event_kind::node_down), 0u);
  c.reset();
  b.reset();
  a.reset();
  EXPECT_EQ(live_total(), 0);
}

}  // namespace
