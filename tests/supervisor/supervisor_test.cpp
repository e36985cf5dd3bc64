// Supervisor tests: strategies, restart types, intensity and escalation, start rollback,
// shutdown timeouts and kill, dynamic children, run-time API, names, node shutdown order,
// bounded starts (start_timeout, also on a manual clock) and the node going while an init hangs.
#include <algorithm>
#include <any>
#include <atomic>
#include <chrono>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <asio/use_awaitable.hpp>
#include <asio/use_future.hpp>

#include "common/eventually.hpp"
#include "otpp/registry.hpp"
#include "otpp/supervisor.hpp"

namespace {

using namespace std::chrono_literals;
using otpp::child_type;
using otpp::errc;
using otpp::restart_strategy;
using otpp::restart_type;

// Thread-safe event log.
class probe {
 public:
  void add(std::string e) {
    std::lock_guard lock(mutex_);
    events_.push_back(std::move(e));
  }
  std::vector<std::string> events() const {
    std::lock_guard lock(mutex_);
    return events_;
  }
  void clear() {
    std::lock_guard lock(mutex_);
    events_.clear();
  }
  // Events starting with `prefix`, in order.
  std::vector<std::string> with(const std::string& prefix) const {
    std::vector<std::string> out;
    for (auto& e : events())
      if (e.starts_with(prefix)) out.push_back(e);
    return out;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::string> events_;
};

using otpp_test::eventually;

struct die {
  static constexpr std::string_view tag = "die";
  std::string why = "boom";  // "normal" / "shutdown": stop with it; else throw
  MSGPACK_DEFINE_MAP(why)
};
struct hang {  // blocks the handler until the worker's gate opens
  static constexpr std::string_view tag = "hang";
  OTPP_NO_FIELDS()
};
struct whoami {
  static constexpr std::string_view tag = "whoami";
  using reply = std::string;
  OTPP_NO_FIELDS()
};

struct behaviour {
  bool fail_init = false;
  std::shared_future<void> gate{};  // blocks terminate / hang until ready
  bool block_terminate = false;
};

class worker : public otpp::gen_server<worker> {
 public:
  worker(std::shared_ptr<probe> p, std::string id, behaviour b = {})
      : probe_(std::move(p)), id_(std::move(id)), b_(std::move(b)) {}
  static void define_handlers(otpp::handlers<worker>& h) {
    h.cast<die>([](worker& self, die d) {
      if (d.why == "normal" || d.why == "shutdown") {
        self.stop(otpp::exit_reason(d.why));
      } else {
        throw std::runtime_error(d.why);
      }
    });
    h.cast<hang>([](worker& self, hang) {
      self.probe_->add("hang:" + self.id_);
      self.b_.gate.wait();
    });
    h.call<whoami>([](worker& self, whoami) { return self.id_; });
  }
  otpp::result<void> init() {
    if (b_.fail_init) return otpp::failure(errc::init_failed, "refused:" + id_);
    probe_->add("start:" + id_);
    return {};
  }
  void terminate(const otpp::exit_reason& r) {
    probe_->add("stop:" + id_ + ":" + r.text());
    if (b_.block_terminate) b_.gate.wait();
  }

 private:
  std::shared_ptr<probe> probe_;
  std::string id_;
  behaviour b_;
};

class dyn_worker : public otpp::gen_server<dyn_worker> {
 public:
  explicit dyn_worker(int n) : n_(n) {}
  static void define_handlers(otpp::handlers<dyn_worker>& h) {
    h.cast<die>([](dyn_worker&, die d) -> void { throw std::runtime_error(d.why); });
  }

 private:
  int n_;
};

class supervisor_test : public ::testing::Test {
 protected:
  supervisor_test() : node_({.name = "sup@test", .threads = 2}) {}
  explicit supervisor_test(otpp::node_options o) : node_(std::move(o)) {}
  void SetUp() override {
    otpp::set_log_level(otpp::log_level::off);
    node_.start();
  }
  void TearDown() override { node_.stop(); }

  std::map<std::string, otpp::pid> pids(const otpp::pid& sup) {
    std::map<std::string, otpp::pid> out;
    auto r = otpp::which_children(node_, sup);
    if (!r) return out;
    for (auto& c : *r) out[c.id] = c.child;
    return out;
  }
  // All children of `sup` listed, running and alive.
  bool all_running(const otpp::pid& sup, std::size_t n) {
    auto r = otpp::which_children(node_, sup);
    if (!r || r->size() != n) return false;
    return std::all_of(r->begin(), r->end(),
                       [&](const auto& c) { return c.child && node_.alive(c.child); });
  }
  otpp::supervisor_spec abc(restart_strategy s, int max_restarts = 10) {
    otpp::supervisor_spec spec{.strategy = s, .max_restarts = max_restarts};
    for (const char* id : {"a", "b", "c"}) spec.children.push_back(otpp::child<worker>(id, p_, id));
    return spec;
  }
  void crash(const otpp::pid& p, std::string why = "boom") {
    ASSERT_TRUE(otpp::cast(node_, p, die{std::move(why)}));
  }
  // Waits until `old` ended and `sup` runs all n children again.
  // A supervisor whose one child "slow" is stuck in a handler until `gate` opens, with a 30 ms
  // shutdown timeout and `kill_wait` of grace after it.
  std::pair<otpp::pid, otpp::pid> start_with_stuck_child(std::shared_future<void> gate,
                                                         std::chrono::milliseconds kill_wait) {
    otpp::supervisor_spec spec{.kill_wait = kill_wait};
    auto c = otpp::child<worker>("slow", p_, "slow", behaviour{.gate = std::move(gate)});
    c.shutdown = otpp::shutdown_mode::timeout(30ms);
    spec.children.push_back(c);
    auto sup = otpp::start_supervisor(node_, spec);
    if (!sup) return {};
    auto slow = pids(*sup)["slow"];
    if (!otpp::cast(node_, slow, hang{})) return {};
    if (!eventually([&] { return !p_->with("hang:slow").empty(); })) return {};
    return {*sup, slow};
  }
  void await_restart(const otpp::pid& sup, const otpp::pid& old, std::size_t n = 3) {
    ASSERT_TRUE(eventually([&] {
      if (node_.alive(old)) return false;
      auto r = otpp::which_children(node_, sup);
      if (!r || r->size() != n) return false;
      for (auto& c : *r)
        if (!c.child || c.child == old || !node_.alive(c.child)) return false;
      return true;
    }));
  }

  std::shared_ptr<probe> p_ = std::make_shared<probe>();
  otpp::node node_;
};

// ---- strategies

TEST_F(supervisor_test, OneForOneRestartsOnlyTheCrashedChild) {
  auto sup = otpp::start_supervisor(node_, abc(restart_strategy::one_for_one));
  ASSERT_TRUE(sup) << sup.reason();
  EXPECT_EQ(p_->with("start:"), (std::vector<std::string>{"start:a", "start:b", "start:c"}));
  for (const char* victim : {"a", "b", "c"}) {
    auto before = pids(*sup);
    crash(before[victim]);
    await_restart(*sup, before[victim]);
    auto after = pids(*sup);
    for (const char* id : {"a", "b", "c"}) {
      if (std::string(id) == victim) {
        EXPECT_NE(after[id], before[id]);
      } else {
        EXPECT_EQ(after[id], before[id]) << "crash of " << victim << " touched " << id;
      }
    }
  }
}

TEST_F(supervisor_test, OneForAllRestartsEveryChildInOrder) {
  auto sup = otpp::start_supervisor(node_, abc(restart_strategy::one_for_all));
  ASSERT_TRUE(sup) << sup.reason();
  for (const char* victim : {"a", "b", "c"}) {
    auto before = pids(*sup);
    p_->clear();
    crash(before[victim]);
    await_restart(*sup, before[victim]);
    auto after = pids(*sup);
    for (const char* id : {"a", "b", "c"}) EXPECT_NE(after[id], before[id]) << id;
    // The others stop in reverse order, then all start in order.
    std::vector<std::string> stops;
    for (auto& e : p_->with("stop:"))
      if (e.ends_with(":shutdown")) stops.push_back(e.substr(0, 6));  // not the crashed one
    std::vector<std::string> expected_stops;
    for (const char* id : {"c", "b", "a"})
      if (std::string(id) != victim) expected_stops.push_back(std::string("stop:") + id);
    EXPECT_EQ(stops, expected_stops) << victim;
    EXPECT_EQ(p_->with("start:"), (std::vector<std::string>{"start:a", "start:b", "start:c"}));
  }
}

TEST_F(supervisor_test, RestForOneRestartsTheCrashedAndLaterChildren) {
  auto sup = otpp::start_supervisor(node_, abc(restart_strategy::rest_for_one));
  ASSERT_TRUE(sup) << sup.reason();
  const std::vector<std::string> ids{"a", "b", "c"};
  for (std::size_t v = 0; v < ids.size(); ++v) {
    auto before = pids(*sup);
    p_->clear();
    crash(before[ids[v]]);
    await_restart(*sup, before[ids[v]]);
    auto after = pids(*sup);
    std::vector<std::string> expected_starts;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      if (i < v) {
        EXPECT_EQ(after[ids[i]], before[ids[i]]) << ids[i];
      } else {
        EXPECT_NE(after[ids[i]], before[ids[i]]) << ids[i];
        expected_starts.push_back("start:" + ids[i]);
      }
    }
    EXPECT_EQ(p_->with("start:"), expected_starts);
  }
}

// ---- restart types

TEST_F(supervisor_test, TransientRestartedOnlyAfterAbnormalExit) {
  otpp::supervisor_spec spec;
  auto c = otpp::child<worker>("t", p_, "t");
  c.restart = restart_type::transient;
  spec.children.push_back(c);
  auto sup = otpp::start_supervisor(node_, spec);
  ASSERT_TRUE(sup);
  auto first = pids(*sup)["t"];
  crash(first, "boom");
  await_restart(*sup, first, 1);
  auto second = pids(*sup)["t"];
  crash(second, "normal");
  ASSERT_TRUE(eventually([&] { return !node_.alive(second); }));
  ASSERT_TRUE(eventually([&] {
    auto r = otpp::which_children(node_, *sup);
    return r && r->size() == 1 && !(*r)[0].child;
  }));
  auto counts = otpp::count_children(node_, *sup);
  ASSERT_TRUE(counts);
  EXPECT_EQ(counts->specs, 1u);
  EXPECT_EQ(counts->active, 0u);
  // shutdown is not abnormal either; the spec stays and restart_child starts it again.
  auto again = otpp::restart_child(node_, *sup, "t");
  ASSERT_TRUE(again) << again.reason();
  crash(*again, "shutdown");
  ASSERT_TRUE(eventually([&] {
    auto r = otpp::which_children(node_, *sup);
    return r && r->size() == 1 && !(*r)[0].child;
  }));
}

TEST_F(supervisor_test, TemporaryNeverRestartedAndForgotten) {
  otpp::supervisor_spec spec{.strategy = restart_strategy::one_for_all};
  auto t = otpp::child<worker>("t", p_, "t");
  t.restart = restart_type::temporary;
  spec.children.push_back(t);
  spec.children.push_back(otpp::child<worker>("p", p_, "p"));
  auto t2 = otpp::child<worker>("t2", p_, "t2");
  t2.restart = restart_type::temporary;
  spec.children.push_back(t2);
  auto sup = otpp::start_supervisor(node_, spec);
  ASSERT_TRUE(sup);
  auto before = pids(*sup);
  crash(before["t"]);
  ASSERT_TRUE(eventually([&] { return pids(*sup).size() == 2; }));
  EXPECT_EQ(pids(*sup)["p"], before["p"]);  // a temporary's exit restarts nobody
  // A sibling crash under one_for_all stops t2, which is not restarted either.
  crash(before["p"]);
  ASSERT_TRUE(eventually([&] {
    auto now = pids(*sup);
    return now.size() == 1 && now.count("p") && now["p"] != before["p"] && node_.alive(now["p"]);
  }));
  EXPECT_FALSE(node_.alive(before["t2"]));
}

// ---- intensity

TEST_F(supervisor_test, IntensityExceededEscalatesThroughTwoLevels) {
  otpp::supervisor_spec leaf{.max_restarts = 1};
  leaf.children.push_back(otpp::child<worker>("w", p_, "w"));
  otpp::supervisor_spec mid{.max_restarts = 0};
  mid.children.push_back(otpp::supervisor_child("leaf", leaf));
  otpp::supervisor_spec top{.max_restarts = 0};
  top.children.push_back(otpp::child<worker>("sibling", p_, "sibling"));
  top.children.push_back(otpp::supervisor_child("mid", mid));
  auto sup = otpp::start_supervisor(node_, top);
  ASSERT_TRUE(sup) << sup.reason();
  EXPECT_EQ(node_.process_count(), 5u);

  std::promise<std::string> top_exit;
  node_.watch_process(*sup, [&](const otpp::exit_reason& r) { top_exit.set_value(r.text()); });
  auto mid_pid = pids(*sup)["mid"];
  auto leaf_pid = pids(mid_pid)["leaf"];
  auto w1 = pids(leaf_pid)["w"];
  crash(w1);  // restart 1 of 1: fine
  await_restart(leaf_pid, w1, 1);
  crash(pids(leaf_pid)["w"]);  // restart 2: leaf gives up -> mid gives up -> top gives up
  auto f = top_exit.get_future();
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(f.get(), otpp::reached_max_restart_intensity_reason);
  EXPECT_TRUE(eventually([&] { return node_.process_count() == 0; }));
  // The sibling was stopped by top (terminate ran with shutdown).
  auto stops = p_->with("stop:sibling");
  ASSERT_EQ(stops.size(), 1u);
  EXPECT_EQ(stops[0], "stop:sibling:shutdown");
}

// The intensity window on virtual time: a manual node and a manual clock, no sleeps.
TEST(supervisor_virtual_time, RestartsOutsideThePeriodDoNotCountButInsideItDo) {
  auto clock = std::make_shared<otpp::manual_clock>();
  otpp::node n({.name = "sup_virtual", .clock = clock, .manual = true});
  n.start();
  auto p = std::make_shared<probe>();
  std::vector<otpp::supervisor_event> events;  // on_event runs on this thread (poll)
  otpp::supervisor_spec spec{.max_restarts = 1, .period = 5s};
  spec.on_event = [&events](const otpp::supervisor_event& e) { events.push_back(e); };
  spec.children.push_back(otpp::child<worker>("w", p, "w"));
  auto sup = otpp::start_supervisor(n, spec);
  ASSERT_TRUE(sup);
  n.poll();
  auto count = [&](otpp::supervisor_event::kind k) {
    return std::count_if(events.begin(), events.end(), [k](auto& e) { return e.what == k; });
  };
  auto current = [&] {
    otpp::pid w;
    for (auto& e : events)
      if (e.what == otpp::supervisor_event::kind::restarted) w = e.child;
    return w;
  };
  otpp::pid w;
  otpp::which_children(n, *sup, [&w](otpp::result<std::vector<otpp::child_info>> r) {
    if (r && !r->empty()) w = (*r)[0].child;
  });
  n.poll();
  ASSERT_TRUE(w);
  // Three crashes 6 s apart: each restart is alone in its 5 s window.
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(otpp::cast(n, w, die{"boom"}));
    n.poll();
    ASSERT_EQ(count(otpp::supervisor_event::kind::restarted), i + 1);
    w = current();
    clock->advance(6s);
    n.poll();
  }
  EXPECT_EQ(count(otpp::supervisor_event::kind::gave_up), 0);
  EXPECT_TRUE(n.alive(*sup));
  // Two crashes 1 s apart: the second exceeds the intensity.
  ASSERT_TRUE(otpp::cast(n, w, die{"boom"}));
  n.poll();
  w = current();
  clock->advance(1s);
  n.poll();
  ASSERT_TRUE(otpp::cast(n, w, die{"boom"}));
  n.poll();
  EXPECT_EQ(count(otpp::supervisor_event::kind::gave_up), 1);
  EXPECT_FALSE(n.alive(*sup));
}

TEST_F(supervisor_test, InitFailureMidStartRollsBack) {
  otpp::supervisor_spec spec;
  spec.children.push_back(otpp::child<worker>("a", p_, "a"));
  spec.children.push_back(otpp::child<worker>("b", p_, "b"));
  spec.children.push_back(otpp::child<worker>("c", p_, "c", behaviour{.fail_init = true}));
  spec.children.push_back(otpp::child<worker>("d", p_, "d"));
  auto sup = otpp::start_supervisor(node_, spec);
  ASSERT_FALSE(sup);
  EXPECT_EQ(sup.error(), errc::init_failed);
  EXPECT_NE(sup.reason().find("refused:c"), std::string::npos) << sup.reason();
  // Called from outside the node: the children already started are stopped when it returns,
  // in reverse order, and d never started.
  EXPECT_EQ(p_->with("stop:"), (std::vector<std::string>{"stop:b:shutdown", "stop:a:shutdown"}));
  EXPECT_TRUE(p_->with("start:d").empty());
  EXPECT_TRUE(eventually([&] { return node_.process_count() == 0; }));
}

TEST_F(supervisor_test, NestedInitFailureFailsTheWholeStart) {
  otpp::supervisor_spec inner;
  inner.children.push_back(otpp::child<worker>("x", p_, "x"));
  inner.children.push_back(otpp::child<worker>("y", p_, "y", behaviour{.fail_init = true}));
  otpp::supervisor_spec outer;
  outer.children.push_back(otpp::child<worker>("a", p_, "a"));
  outer.children.push_back(otpp::supervisor_child("inner", inner));
  auto sup = otpp::start_supervisor(node_, outer);
  ASSERT_FALSE(sup);
  EXPECT_NE(sup.reason().find("refused:y"), std::string::npos) << sup.reason();
  EXPECT_TRUE(eventually([&] { return node_.process_count() == 0; }));
  EXPECT_EQ(p_->with("stop:").size(), 2u);
}

// The helper stopping the started children is not the nested supervisor's parent: its EXIT
// carries a stop token, so the nested supervisor obeys (and start_supervisor returns).
TEST_F(supervisor_test, InitFailureAfterANestedSupervisorStopsIt) {
  otpp::supervisor_spec inner;
  inner.children.push_back(otpp::child<worker>("x", p_, "x"));
  otpp::supervisor_spec outer;
  outer.children.push_back(otpp::supervisor_child("inner", inner));
  outer.children.push_back(otpp::child<worker>("bad", p_, "bad", behaviour{.fail_init = true}));
  auto sup = otpp::start_supervisor(node_, outer);
  ASSERT_FALSE(sup);
  EXPECT_EQ(p_->with("stop:"), std::vector<std::string>{"stop:x:shutdown"});
  EXPECT_TRUE(eventually([&] { return node_.process_count() == 0; }));
}

// ---- shutdown

TEST_F(supervisor_test, ShutdownTimeoutThenKillWhileChildIsInAHandler) {
  std::promise<void> open;
  auto [sup, slow] = start_with_stuck_child(open.get_future().share(), 50ms);
  ASSERT_TRUE(sup && slow);
  // terminate_child returns after the timeout and the bounded kill wait, the child still busy.
  auto r = otpp::terminate_child(node_, sup, "slow");
  ASSERT_TRUE(r) << r.reason();
  EXPECT_TRUE(node_.alive(slow));
  EXPECT_FALSE(pids(sup)["slow"]);
  open.set_value();
  EXPECT_TRUE(eventually([&] { return !node_.alive(slow); }));
}

TEST_F(supervisor_test, ChildBlockingInTerminateIsLeftBehindAfterKillWait) {
  std::promise<void> open;
  behaviour b{.gate = open.get_future().share(), .block_terminate = true};
  otpp::supervisor_spec spec{.kill_wait = 50ms};
  auto c = otpp::child<worker>("stuck", p_, "stuck", b);
  c.shutdown = otpp::shutdown_mode::timeout(30ms);
  spec.children.push_back(c);
  spec.children.push_back(otpp::child<worker>("before", p_, "before"));
  // Order: "before" is started second, so it is stopped first; "stuck" last.
  std::swap(spec.children[0], spec.children[1]);
  auto sup = otpp::start_supervisor(node_, spec);
  ASSERT_TRUE(sup);
  auto stuck = pids(*sup)["stuck"];
  ASSERT_TRUE(otpp::stop_supervisor(node_, *sup));  // returns: the stuck child is abandoned
  EXPECT_FALSE(node_.alive(*sup));
  EXPECT_TRUE(node_.alive(stuck));  // still inside terminate
  EXPECT_EQ(p_->with("stop:"),
            (std::vector<std::string>{"stop:stuck:shutdown", "stop:before:shutdown"}));
  open.set_value();
  EXPECT_TRUE(eventually([&] { return !node_.alive(stuck); }));
}

TEST_F(supervisor_test, BrutalKillSkipsTerminate) {
  otpp::supervisor_spec spec;
  auto c = otpp::child<worker>("k", p_, "k");
  c.shutdown = otpp::shutdown_mode::brutal_kill();
  spec.children.push_back(c);
  auto sup = otpp::start_supervisor(node_, spec);
  ASSERT_TRUE(sup);
  auto k = pids(*sup)["k"];
  ASSERT_TRUE(otpp::terminate_child(node_, *sup, "k"));
  EXPECT_FALSE(node_.alive(k));
  EXPECT_TRUE(p_->with("stop:k").empty());
}

// ---- dynamic children

TEST_F(supervisor_test, ThousandDynamicChildrenCrashingAtRandomStayConsistent) {
  constexpr std::size_t n = 1000;
  otpp::supervisor_spec spec{.strategy = restart_strategy::simple_one_for_one,
                             .max_restarts = 1000000};
  spec.children.push_back(otpp::dynamic_child<dyn_worker, int>("dyn"));
  auto sup = otpp::start_supervisor(node_, spec);
  ASSERT_TRUE(sup);
  for (std::size_t i = 0; i < n; ++i) {
    auto c = otpp::start_dynamic_child(node_, *sup, otpp::child_args(static_cast<int>(i)));
    ASSERT_TRUE(c) << c.reason();
  }
  std::mt19937 rng(12345);
  std::size_t crashed = 0;
  std::vector<otpp::pid> victims;
  for (int round = 0; round < 20; ++round) {
    auto children = otpp::which_children(node_, *sup);
    ASSERT_TRUE(children);
    std::shuffle(children->begin(), children->end(), rng);
    std::size_t k = std::uniform_int_distribution<std::size_t>(1, 100)(rng);
    for (std::size_t i = 0; i < k && i < children->size(); ++i) {
      const auto& victim = (*children)[i].child;
      if (victim && otpp::cast(node_, victim, die{"random"})) {
        ++crashed;
        victims.push_back(victim);
      }
    }
  }
  auto consistent = [&](std::size_t expected) {
    auto counts = otpp::count_children(node_, *sup);
    return counts && counts->active == expected && counts->specs == 1 &&
           counts->workers == expected && node_.process_count() == expected + 1 &&
           all_running(*sup, expected);
  };
  // Every crash sent has happened (so the tree is stable), then it heals.
  ASSERT_TRUE(eventually([&] {
    return std::none_of(victims.begin(), victims.end(), [&](auto& v) { return node_.alive(v); });
  }));
  ASSERT_TRUE(eventually([&] { return consistent(n); }));
  // Also terminate a few through the API: they are gone for good.
  auto children = otpp::which_children(node_, *sup);
  ASSERT_TRUE(children);
  std::size_t removed = 0;
  for (std::size_t i = 0; i < 10; ++i) {
    if (otpp::terminate_child(node_, *sup, (*children)[i * 7].child)) ++removed;
  }
  EXPECT_EQ(removed, 10u);
  EXPECT_GT(crashed, 0u);
  const std::size_t expected = n - removed;
  ASSERT_TRUE(eventually([&] { return consistent(expected); }))
      << "count " << otpp::count_children(node_, *sup)->active << " processes "
      << node_.process_count();
  auto final_children = otpp::which_children(node_, *sup);
  std::vector<otpp::pid> ps;
  for (auto& c : *final_children) ps.push_back(c.child);
  std::sort(ps.begin(), ps.end(), [](auto& a, auto& b) { return a.serial() < b.serial(); });
  EXPECT_EQ(std::adjacent_find(ps.begin(), ps.end()), ps.end());
  ASSERT_TRUE(otpp::stop_supervisor(node_, *sup));
  EXPECT_TRUE(eventually([&] { return node_.process_count() == 0; }));
}

TEST_F(supervisor_test, DynamicChildApiErrors) {
  otpp::supervisor_spec spec{.strategy = restart_strategy::simple_one_for_one};
  auto t = otpp::dynamic_child<dyn_worker, int>("dyn");
  t.restart = restart_type::temporary;
  spec.children.push_back(t);
  auto sup = otpp::start_supervisor(node_, spec);
  ASSERT_TRUE(sup);
  auto bad = otpp::start_dynamic_child(node_, *sup, otpp::child_args(std::string("x")));
  EXPECT_EQ(bad.error(), errc::invalid_argument);
  EXPECT_EQ(otpp::start_child(node_, *sup, otpp::child<worker>("w", p_, "w")).error(),
            errc::invalid_argument);
  auto c = otpp::start_dynamic_child(node_, *sup, otpp::child_args(7));
  ASSERT_TRUE(c);
  EXPECT_EQ(otpp::restart_child(node_, *sup, "dyn").error(),
            otpp::supervisor_errc::simple_one_for_one);
  EXPECT_EQ(otpp::terminate_child(node_, *sup, otpp::pid{}).error(), errc::not_found);
  // A temporary dynamic child that crashes is forgotten.
  crash(*c);
  EXPECT_TRUE(eventually([&] { return otpp::count_children(node_, *sup)->workers == 0; }));
  EXPECT_EQ(otpp::count_children(node_, *sup)->specs, 1u);
}

// ---- run-time API

TEST_F(supervisor_test, RuntimeApiSuccessAndErrors) {
  otpp::supervisor_spec spec;
  spec.children.push_back(otpp::child<worker>("a", p_, "a"));
  auto sup = otpp::start_supervisor(node_, spec);
  ASSERT_TRUE(sup);

  auto b = otpp::start_child(node_, *sup, otpp::child<worker>("b", p_, "b"));
  ASSERT_TRUE(b) << b.reason();
  EXPECT_TRUE(node_.alive(*b));
  auto dup = otpp::start_child(node_, *sup, otpp::child<worker>("b", p_, "b"));
  EXPECT_EQ(dup.error(), errc::already_registered);
  EXPECT_NE(dup.reason().find("already_started"), std::string::npos);
  auto failing = otpp::start_child(node_, *sup,
                                   otpp::child<worker>("f", p_, "f", behaviour{.fail_init = true}));
  EXPECT_EQ(failing.error(), errc::init_failed);
  EXPECT_EQ(pids(*sup).size(), 2u);  // a failed start adds no spec

  EXPECT_EQ(otpp::restart_child(node_, *sup, "b").error(), errc::running);
  EXPECT_EQ(otpp::delete_child(node_, *sup, "b").error(), errc::running);
  EXPECT_EQ(otpp::terminate_child(node_, *sup, "nope").error(), errc::not_found);
  EXPECT_EQ(otpp::restart_child(node_, *sup, "nope").error(), errc::not_found);
  EXPECT_EQ(otpp::delete_child(node_, *sup, "nope").error(), errc::not_found);

  ASSERT_TRUE(otpp::terminate_child(node_, *sup, "b"));
  EXPECT_FALSE(node_.alive(*b));
  EXPECT_EQ(p_->with("stop:b"), std::vector<std::string>{"stop:b:shutdown"});
  auto present = otpp::start_child(node_, *sup, otpp::child<worker>("b", p_, "b"));
  EXPECT_EQ(present.error(), errc::already_registered);
  EXPECT_NE(present.reason().find("already_present"), std::string::npos);
  auto counts = otpp::count_children(node_, *sup);
  ASSERT_TRUE(counts);
  EXPECT_EQ(counts->specs, 2u);
  EXPECT_EQ(counts->active, 1u);
  EXPECT_EQ(counts->workers, 2u);
  EXPECT_EQ(counts->supervisors, 0u);

  auto b2 = otpp::restart_child(node_, *sup, "b");
  ASSERT_TRUE(b2);
  EXPECT_NE(*b2, *b);
  ASSERT_TRUE(otpp::terminate_child(node_, *sup, "b"));
  ASSERT_TRUE(otpp::delete_child(node_, *sup, "b"));
  EXPECT_EQ(pids(*sup).size(), 1u);

  // Completion-token forms.
  auto viaf = otpp::which_children(node_, *sup, asio::use_future);
  auto list = viaf.get();
  ASSERT_TRUE(list);
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].id, "a");
  EXPECT_EQ((*list)[0].type, child_type::worker);
  std::promise<otpp::result<otpp::child_counts>> cb;
  otpp::count_children(node_, *sup, [&](otpp::result<otpp::child_counts> r) { cb.set_value(r); });
  EXPECT_EQ(cb.get_future().get()->active, 1u);

  // A dead supervisor: the call fails (noproc).
  ASSERT_TRUE(otpp::stop_supervisor(node_, *sup));
  EXPECT_EQ(otpp::which_children(node_, *sup).error(), errc::noproc);
  EXPECT_EQ(otpp::stop_supervisor(node_, *sup).error(), errc::noproc);
}

// Start function that fails while `broken` is set.
struct flaky {
  std::shared_ptr<std::atomic<bool>> broken = std::make_shared<std::atomic<bool>>(false);
  std::shared_ptr<probe> p{};
  otpp::child_spec spec(const std::string& id) {
    otpp::child_spec c;
    c.id = id;
    c.start = [broken = broken, p = p, id](otpp::node& n) -> otpp::result<otpp::pid> {
      if (broken->load()) return otpp::failure(errc::init_failed, "broken");
      return n.spawn_opt<worker>(otpp::spawn_options{.link = true}, p, id);
    };
    return c;
  }
};

TEST_F(supervisor_test, FailedRestartIsRetriedAndReportedAsRestarting) {
  flaky f{.p = p_};
  otpp::supervisor_spec spec{.max_restarts = 100000000, .period = 1000s};
  spec.children.push_back(f.spec("r"));
  auto sup = otpp::start_supervisor(node_, spec);
  ASSERT_TRUE(sup);
  auto r1 = pids(*sup)["r"];
  f.broken->store(true);
  crash(r1);
  ASSERT_TRUE(eventually([&] {
    auto r = otpp::which_children(node_, *sup);
    return r && r->size() == 1 && (*r)[0].restarting;
  }));
  EXPECT_EQ(otpp::restart_child(node_, *sup, "r").error(), errc::restarting);
  EXPECT_EQ(otpp::delete_child(node_, *sup, "r").error(), errc::restarting);
  f.broken->store(false);
  ASSERT_TRUE(eventually([&] { return all_running(*sup, 1); }));
}

TEST_F(supervisor_test, FailedRestartsCountTowardsIntensity) {
  flaky f{.p = p_};
  otpp::supervisor_spec spec{.max_restarts = 3};
  spec.children.push_back(f.spec("r"));
  auto sup = otpp::start_supervisor(node_, spec);
  ASSERT_TRUE(sup);
  std::promise<std::string> exited;
  node_.watch_process(*sup, [&](const otpp::exit_reason& r) { exited.set_value(r.text()); });
  f.broken->store(true);
  crash(pids(*sup)["r"]);
  auto fut = exited.get_future();
  ASSERT_EQ(fut.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(fut.get(), otpp::reached_max_restart_intensity_reason);
}

// ---- names, nesting, node shutdown

TEST_F(supervisor_test, NamedSupervisor) {
  otpp::supervisor_spec spec{.name = "top"};
  spec.children.push_back(otpp::child<worker>("a", p_, "a"));
  auto sup = otpp::start_supervisor(node_, spec);
  ASSERT_TRUE(sup);
  auto found = otpp::whereis(node_, "top");
  ASSERT_TRUE(found);
  EXPECT_EQ(*found, *sup);
  auto again = otpp::start_supervisor(node_, spec);
  EXPECT_EQ(again.error(), errc::already_registered);
  auto who =
      otpp::call(node_, otpp::by_name("top"), otpp::detail::sup::count_children{}, asio::use_future)
          .get();
  ASSERT_TRUE(who);
  ASSERT_TRUE(otpp::stop_supervisor(node_, *sup));
  // The name is freed by the registry's exit listener, which the runtime runs just after the
  // exit watchers that stop_supervisor waits on.
  EXPECT_TRUE(eventually([&] { return otpp::whereis(node_, "top").error() == errc::noproc; }));
}

class named_worker : public otpp::gen_server<named_worker> {
 public:
  static void define_handlers(otpp::handlers<named_worker>& h) {
    h.cast<die>([](named_worker&, die d) -> void { throw std::runtime_error(d.why); });
  }
  otpp::result<void> init() { return otpp::register_name(this_node(), "named_worker", self()); }
};

// A child holding a registered name is restarted under the same name at the first attempt
// (with the default intensity, 1 restart in 5 s, a failed attempt would end the supervisor).
TEST_F(supervisor_test, RestartedChildReRegistersItsName) {
  otpp::supervisor_spec spec;
  spec.children.push_back(otpp::child<named_worker>("n"));
  auto sup = otpp::start_supervisor(node_, spec);
  ASSERT_TRUE(sup) << sup.reason();
  auto first = otpp::whereis(node_, "named_worker");
  ASSERT_TRUE(first);
  crash(*first);
  await_restart(*sup, *first, 1);
  auto second = otpp::whereis(node_, "named_worker");
  ASSERT_TRUE(second);
  EXPECT_EQ(*second, pids(*sup)["n"]);
  EXPECT_TRUE(node_.alive(*sup));
}

TEST_F(supervisor_test, NestedSupervisorRestartsItsSubtree) {
  otpp::supervisor_spec inner;
  inner.children.push_back(otpp::child<worker>("x", p_, "x"));
  inner.children.push_back(otpp::child<worker>("y", p_, "y"));
  otpp::supervisor_spec outer;
  outer.children.push_back(otpp::child<worker>("a", p_, "a"));
  outer.children.push_back(otpp::supervisor_child("inner", inner));
  auto sup = otpp::start_supervisor(node_, outer);
  ASSERT_TRUE(sup) << sup.reason();
  auto counts = otpp::count_children(node_, *sup);
  EXPECT_EQ(counts->supervisors, 1u);
  EXPECT_EQ(counts->workers, 1u);
  auto in = pids(*sup)["inner"];
  auto x = pids(in)["x"];
  crash(x);
  await_restart(in, x, 2);
  EXPECT_EQ(pids(*sup)["inner"], in);
  // Killing the inner supervisor: its children die through the links, outer restarts it.
  auto y = pids(in)["y"];
  node_.exit(in, otpp::exit_reason::kill());
  await_restart(*sup, in, 2);
  auto in2 = pids(*sup)["inner"];
  EXPECT_TRUE(eventually([&] { return all_running(in2, 2) && !node_.alive(y); }));
  // Every child of the killed inner supervisor goes (through its link, asynchronously).
  EXPECT_TRUE(eventually([&] { return node_.process_count() == 5u; }));
  // Stopping the outer stops inner's children first (reverse order throughout).
  p_->clear();
  ASSERT_TRUE(otpp::stop_supervisor(node_, *sup));
  EXPECT_EQ(p_->with("stop:"),
            (std::vector<std::string>{"stop:y:shutdown", "stop:x:shutdown", "stop:a:shutdown"}));
  EXPECT_TRUE(eventually([&] { return node_.process_count() == 0; }));
}

TEST(supervisor_node, NodeStopStopsTopLevelSupervisorsInReverseStartOrder) {
  otpp::set_log_level(otpp::log_level::off);
  auto p = std::make_shared<probe>();
  {
    otpp::node node({.name = "order@test", .threads = 2});
    node.start();
    for (const char* s : {"s1", "s2"}) {
      otpp::supervisor_spec spec;
      spec.children.push_back(otpp::child<worker>("a", p, std::string(s) + "a"));
      spec.children.push_back(otpp::child<worker>("b", p, std::string(s) + "b"));
      ASSERT_TRUE(otpp::start_supervisor(node, spec));
    }
    node.stop();
    EXPECT_EQ(node.process_count(), 0u);
  }
  EXPECT_EQ(p->with("stop:"), (std::vector<std::string>{"stop:s2b:shutdown", "stop:s2a:shutdown",
                                                        "stop:s1b:shutdown", "stop:s1a:shutdown"}));
}

struct asker : otpp::gen_server<asker> {
  struct go {
    static constexpr std::string_view tag = "go";
    using reply = int;
    otpp::pid sup;
    MSGPACK_DEFINE_MAP(sup)
  };
  struct go_async {
    static constexpr std::string_view tag = "go_async";
    using reply = int;
    otpp::pid sup;
    MSGPACK_DEFINE_MAP(sup)
  };
  static void define_handlers(otpp::handlers<asker>& h) {
    h.call<go>([](asker& self, go g) {
      return static_cast<int>(otpp::which_children(self.this_node(), g.sup).error().value());
    });
    // The token forms work from inside a process; the coroutine resumes on the process.
    h.call<go_async>([](asker& self, go_async g) -> asio::awaitable<int> {
      auto& n = self.this_node();
      // Named first: g++ 12 destroys a temporary inside a co_await expression twice.
      auto spec = otpp::child<worker>("late", std::make_shared<probe>(), "late");
      auto started = co_await otpp::start_child(n, g.sup, std::move(spec), asio::use_awaitable);
      if (!started) co_return -1;
      if (otpp::current_process() != &self) co_return -2;
      auto counts = co_await otpp::count_children(n, g.sup, asio::use_awaitable);
      if (!counts) co_return -3;
      co_return static_cast<int>(counts->active);
    });
  }
};

TEST_F(supervisor_test, BlockingApiRefusedFromInsideAProcess) {
  otpp::supervisor_spec spec;
  auto sup = otpp::start_supervisor(node_, spec);
  ASSERT_TRUE(sup);
  auto a = node_.spawn<asker>();
  ASSERT_TRUE(a);
  auto r = otpp::call(node_, *a, asker::go{*sup}, asio::use_future).get();
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, static_cast<int>(errc::invalid_argument));
  auto n = otpp::call(node_, *a, asker::go_async{*sup}, asio::use_future).get();
  ASSERT_TRUE(n) << n.reason();
  EXPECT_EQ(*n, 1);
}

// ---- OTP conformance (issue 9)

// Start function answering ignore (OTP: the spec is kept as not running; a temporary one is
// not kept at all).
otpp::child_spec ignoring(std::string id, restart_type restart = restart_type::permanent) {
  otpp::child_spec c;
  c.id = std::move(id);
  c.restart = restart;
  c.start = [](otpp::node&) -> otpp::result<otpp::pid> { return otpp::ignore_child(); };
  return c;
}

TEST_F(supervisor_test, StartAnsweringIgnoreKeepsTheSpecNotRunning) {
  otpp::supervisor_spec spec;
  spec.children.push_back(otpp::child<worker>("a", p_, "a"));
  spec.children.push_back(ignoring("ign"));
  spec.children.push_back(ignoring("tmp", restart_type::temporary));
  auto sup = otpp::start_supervisor(node_, spec);
  ASSERT_TRUE(sup) << sup.reason();
  auto kids = pids(*sup);
  ASSERT_EQ(kids.size(), 2u);  // the temporary one is not kept
  EXPECT_TRUE(kids["a"]);
  EXPECT_FALSE(kids["ign"]);
  auto counts = otpp::count_children(node_, *sup);
  ASSERT_TRUE(counts);
  EXPECT_EQ(counts->specs, 2u);
  EXPECT_EQ(counts->active, 1u);
  // restart_child runs the start again: ignore again, still kept.
  auto again = otpp::restart_child(node_, *sup, "ign");
  ASSERT_TRUE(again) << again.reason();
  EXPECT_FALSE(*again);
  // Run-time start: a permanent ignoring child is kept, a temporary one is not.
  auto p = otpp::start_child(node_, *sup, ignoring("ign2"));
  ASSERT_TRUE(p);
  EXPECT_FALSE(*p);
  auto t = otpp::start_child(node_, *sup, ignoring("tmp2", restart_type::temporary));
  ASSERT_TRUE(t);
  EXPECT_FALSE(*t);
  kids = pids(*sup);
  EXPECT_EQ(kids.size(), 3u);
  EXPECT_EQ(kids.count("ign2"), 1u);
  EXPECT_EQ(kids.count("tmp2"), 0u);
  EXPECT_TRUE(otpp::delete_child(node_, *sup, "ign2"));
}

TEST_F(supervisor_test, DynamicStartAnsweringIgnoreAddsNoChild) {
  otpp::supervisor_spec spec{.strategy = restart_strategy::simple_one_for_one};
  otpp::child_spec t;
  t.id = "dyn";
  t.start_with = [](otpp::node& n, const std::any& args) -> otpp::result<otpp::pid> {
    if (std::any_cast<int>(args) < 0) return otpp::ignore_child();
    return n.spawn_opt<dyn_worker>(otpp::spawn_options{.link = true}, std::any_cast<int>(args));
  };
  spec.children.push_back(t);
  auto sup = otpp::start_supervisor(node_, spec);
  ASSERT_TRUE(sup);
  auto ignored = otpp::start_dynamic_child(node_, *sup, std::any(-1));
  ASSERT_TRUE(ignored);
  EXPECT_FALSE(*ignored);
  auto started = otpp::start_dynamic_child(node_, *sup, std::any(1));
  ASSERT_TRUE(started);
  EXPECT_TRUE(*started);
  auto counts = otpp::count_children(node_, *sup);
  ASSERT_TRUE(counts);
  EXPECT_EQ(counts->workers, 1u);
  EXPECT_EQ(counts->active, 1u);
}

TEST_F(supervisor_test, SimpleOneForOneCountsOneSpec) {
  otpp::supervisor_spec spec{.strategy = restart_strategy::simple_one_for_one};
  spec.children.push_back(otpp::dynamic_child<dyn_worker, int>("dyn"));
  auto sup = otpp::start_supervisor(node_, spec);
  ASSERT_TRUE(sup);
  auto none = otpp::count_children(node_, *sup);
  ASSERT_TRUE(none);
  EXPECT_EQ(none->specs, 1u);
  EXPECT_EQ(none->active, 0u);
  EXPECT_EQ(none->workers, 0u);
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(otpp::start_dynamic_child(node_, *sup, otpp::child_args(i)));
  auto three = otpp::count_children(node_, *sup);
  ASSERT_TRUE(three);
  EXPECT_EQ(three->specs, 1u);
  EXPECT_EQ(three->active, 3u);
  EXPECT_EQ(three->workers, 3u);
  EXPECT_EQ(three->supervisors, 0u);
}

TEST_F(supervisor_test, ChildIdOnSimpleOneForOneAnswersItsOwnError) {
  otpp::supervisor_spec spec{.strategy = restart_strategy::simple_one_for_one};
  spec.children.push_back(otpp::dynamic_child<dyn_worker, int>("dyn"));
  auto sup = otpp::start_supervisor(node_, spec);
  ASSERT_TRUE(sup);
  auto c = otpp::start_dynamic_child(node_, *sup, otpp::child_args(1));
  ASSERT_TRUE(c);
  auto t = otpp::terminate_child(node_, *sup, std::string("dyn"));
  EXPECT_EQ(t.error(), otpp::supervisor_errc::simple_one_for_one);
  EXPECT_EQ(t.error().category().name(), std::string("otpp.supervisor"));
  EXPECT_NE(t.fail().message().find("simple_one_for_one"), std::string::npos);
  EXPECT_EQ(otpp::restart_child(node_, *sup, "dyn").error(),
            otpp::supervisor_errc::simple_one_for_one);
  EXPECT_EQ(otpp::delete_child(node_, *sup, "dyn").error(),
            otpp::supervisor_errc::simple_one_for_one);
  EXPECT_TRUE(node_.alive(*c));  // nothing happened to it
  // The other way round: a pid on a static supervisor is not_found.
  otpp::supervisor_spec st;
  st.children.push_back(otpp::child<worker>("a", p_, "a"));
  auto s2 = otpp::start_supervisor(node_, st);
  ASSERT_TRUE(s2);
  EXPECT_EQ(otpp::terminate_child(node_, *s2, pids(*s2)["a"]).error(), errc::not_found);
}

TEST_F(supervisor_test, TerminateChildByPidOfAnExitedChildIsOk) {
  otpp::supervisor_spec spec{.strategy = restart_strategy::simple_one_for_one};
  auto t = otpp::dynamic_child<dyn_worker, int>("dyn");
  t.restart = restart_type::temporary;
  spec.children.push_back(t);
  auto sup = otpp::start_supervisor(node_, spec);
  ASSERT_TRUE(sup);
  auto c = otpp::start_dynamic_child(node_, *sup, otpp::child_args(1));
  ASSERT_TRUE(c);
  crash(*c);
  ASSERT_TRUE(eventually([&] { return otpp::count_children(node_, *sup)->workers == 0; }));
  EXPECT_TRUE(otpp::terminate_child(node_, *sup, *c));
  // Failure paths: a live process that is not a child, and the empty pid.
  auto stranger = node_.spawn<dyn_worker>(5);
  ASSERT_TRUE(stranger);
  EXPECT_EQ(otpp::terminate_child(node_, *sup, *stranger).error(), errc::not_found);
  EXPECT_EQ(otpp::terminate_child(node_, *sup, otpp::pid{}).error(), errc::not_found);
  EXPECT_TRUE(node_.alive(*stranger));
  node_.exit(*stranger, otpp::exit_reason::kill());
}

// Blocks in terminate until the gate opens.
class gated : public otpp::gen_server<gated> {
 public:
  gated(std::shared_ptr<probe> p, int n, std::shared_future<void> gate)
      : p_(std::move(p)), n_(n), gate_(std::move(gate)) {}
  void terminate(const otpp::exit_reason&) {
    p_->add("terminating:" + std::to_string(n_));
    gate_.wait();
  }

 private:
  std::shared_ptr<probe> p_;
  int n_;
  std::shared_future<void> gate_;
};

// With shutdown infinity, stopping one after another would wait forever for the first child:
// the gate opens only once every child is inside terminate at the same time.
TEST(supervisor_shutdown, DynamicChildrenStopConcurrently) {
  otpp::set_log_level(otpp::log_level::off);
  otpp::node node({.name = "conc@test", .threads = 5});  // 3 blocked children + supervisor
  node.start();
  auto p = std::make_shared<probe>();
  std::promise<void> open;
  auto gate = open.get_future().share();
  otpp::supervisor_spec spec{.strategy = restart_strategy::simple_one_for_one};
  auto t = otpp::dynamic_child<gated, std::shared_ptr<probe>, int, std::shared_future<void>>("g");
  t.shutdown = otpp::shutdown_mode::infinity();
  spec.children.push_back(t);
  auto sup = otpp::start_supervisor(node, spec);
  ASSERT_TRUE(sup);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(otpp::start_dynamic_child(node, *sup, otpp::child_args(p, i, gate)));
  }
  auto stopped = std::async(std::launch::async, [&] { return otpp::stop_supervisor(node, *sup); });
  bool all = eventually([&] { return p->with("terminating:").size() == 3; });
  open.set_value();
  EXPECT_TRUE(all) << "children stopped one after another";
  EXPECT_TRUE(stopped.get());
  EXPECT_TRUE(eventually([&] { return node.process_count() == 0; }));
  node.stop();
}

// Children stuck in a handler are abandoned at their shutdown timeout plus kill_wait, all at
// once, and reported.
TEST(supervisor_shutdown, StuckDynamicChildrenAreAbandonedAndReported) {
  otpp::set_log_level(otpp::log_level::off);
  otpp::node node({.name = "stuck@test", .threads = 5});
  node.start();
  auto p = std::make_shared<probe>();
  std::promise<void> open;
  behaviour b{.gate = open.get_future().share()};
  otpp::supervisor_spec spec{.strategy = restart_strategy::simple_one_for_one, .kill_wait = 30ms};
  spec.on_event = [p](const otpp::supervisor_event& e) {
    if (e.what == otpp::supervisor_event::kind::abandoned) p->add("abandoned:" + e.child_id);
  };
  auto t = otpp::dynamic_child<worker, std::shared_ptr<probe>, std::string, behaviour>("w");
  t.shutdown = otpp::shutdown_mode::timeout(30ms);
  spec.children.push_back(t);
  auto sup = otpp::start_supervisor(node, spec);
  ASSERT_TRUE(sup);
  for (int i = 0; i < 3; ++i) {
    auto c = otpp::start_dynamic_child(node, *sup, otpp::child_args(p, std::to_string(i), b));
    ASSERT_TRUE(c);
    ASSERT_TRUE(otpp::cast(node, *c, hang{}));
  }
  ASSERT_TRUE(eventually([&] { return p->with("hang:").size() == 3; }));
  EXPECT_TRUE(otpp::stop_supervisor(node, *sup));  // returns although no child could stop
  EXPECT_EQ(p->with("abandoned:w").size(), 3u);
  // The supervisor is gone; the children are still in their handler.
  EXPECT_TRUE(eventually([&] { return node.process_count() == 3; }));
  open.set_value();
  EXPECT_TRUE(eventually([&] { return node.process_count() == 0; }));
  node.stop();
}

TEST(supervisor_shutdown, DefaultKillGraceIsShort) {
  // Documented default: well under the 5 s a stuck child used to add.
  EXPECT_LE(otpp::supervisor_spec{}.kill_wait, 1s);
}

TEST_F(supervisor_test, WhichChildrenListsNewestFirst) {
  auto sup = otpp::start_supervisor(node_, abc(restart_strategy::one_for_one));
  ASSERT_TRUE(sup);
  ASSERT_TRUE(otpp::start_child(node_, *sup, otpp::child<worker>("d", p_, "d")));
  auto list = otpp::which_children(node_, *sup);
  ASSERT_TRUE(list);
  std::vector<std::string> ids;
  for (auto& c : *list) ids.push_back(c.id);
  EXPECT_EQ(ids, (std::vector<std::string>{"d", "c", "b", "a"}));

  otpp::supervisor_spec dspec{.strategy = restart_strategy::simple_one_for_one};
  dspec.children.push_back(otpp::dynamic_child<dyn_worker, int>("dyn"));
  auto dsup = otpp::start_supervisor(node_, dspec);
  ASSERT_TRUE(dsup);
  std::vector<otpp::pid> started;
  for (int i = 0; i < 3; ++i)
    started.push_back(*otpp::start_dynamic_child(node_, *dsup, otpp::child_args(i)));
  auto dlist = otpp::which_children(node_, *dsup);
  ASSERT_TRUE(dlist);
  ASSERT_EQ(dlist->size(), 3u);
  EXPECT_EQ((*dlist)[0].child, started[2]);
  EXPECT_EQ((*dlist)[1].child, started[1]);
  EXPECT_EQ((*dlist)[2].child, started[0]);
}

// ---- restart events and counters

TEST_F(supervisor_test, RestartEventsAndCounters) {
  auto events = std::make_shared<probe>();
  auto spec = abc(restart_strategy::one_for_one);
  spec.on_event = [events](const otpp::supervisor_event& e) {
    using k = otpp::supervisor_event::kind;
    if (e.what == k::child_exited) events->add("exited:" + e.child_id + ":" + e.reason.text());
    if (e.what == k::restarted) events->add("restarted:" + e.child_id);
  };
  auto sup = otpp::start_supervisor(node_, spec);
  ASSERT_TRUE(sup);
  auto before = otpp::get_supervisor_stats(node_, *sup);
  ASSERT_TRUE(before);
  EXPECT_EQ(before->restarts, 0u);
  auto b = pids(*sup)["b"];
  crash(b);
  await_restart(*sup, b);
  ASSERT_TRUE(eventually([&] { return events->events().size() == 2; }));
  EXPECT_EQ(events->events(), (std::vector<std::string>{"exited:b:boom", "restarted:b"}));
  auto after = otpp::get_supervisor_stats(node_, *sup);
  ASSERT_TRUE(after);
  EXPECT_EQ(after->child_exits, 1u);
  EXPECT_EQ(after->restarts, 1u);
  EXPECT_EQ(after->restart_failures, 0u);
  // Token form.
  auto viaf = otpp::get_supervisor_stats(node_, *sup, asio::use_future).get();
  ASSERT_TRUE(viaf);
  EXPECT_EQ(viaf->restarts, 1u);
}

TEST_F(supervisor_test, FailedRestartsAndGivingUpAreReported) {
  auto events = std::make_shared<probe>();
  flaky f{.p = p_};
  otpp::supervisor_spec spec{.max_restarts = 3};
  spec.on_event = [events](const otpp::supervisor_event& e) {
    using k = otpp::supervisor_event::kind;
    if (e.what == k::restart_failed) events->add("failed:" + e.child_id);
    if (e.what == k::gave_up) events->add("gave_up");
    throw std::runtime_error("a throwing observer is logged and ignored");
  };
  spec.children.push_back(f.spec("r"));
  auto sup = otpp::start_supervisor(node_, spec);
  ASSERT_TRUE(sup);
  f.broken->store(true);
  crash(pids(*sup)["r"]);
  ASSERT_TRUE(eventually([&] { return !node_.alive(*sup); }));
  EXPECT_EQ(events->with("failed:r").size(), 3u);
  EXPECT_EQ(events->with("gave_up").size(), 1u);
  EXPECT_EQ(otpp::get_supervisor_stats(node_, *sup).error(), errc::noproc);
}

TEST_F(supervisor_test, AbandonedChildIsCounted) {
  std::promise<void> open;
  auto [sup, slow] = start_with_stuck_child(open.get_future().share(), 30ms);
  ASSERT_TRUE(sup && slow);
  ASSERT_TRUE(otpp::terminate_child(node_, sup, "slow"));
  auto stats = otpp::get_supervisor_stats(node_, sup);
  ASSERT_TRUE(stats);
  EXPECT_EQ(stats->abandoned, 1u);
  open.set_value();
  EXPECT_TRUE(eventually([&] { return !node_.alive(slow); }));
}

// ---- bounded child start

// init waits for the gate (a hung init until it opens).
class slow_init : public otpp::gen_server<slow_init> {
 public:
  slow_init(std::shared_ptr<probe> p, std::shared_future<void> gate)
      : p_(std::move(p)), gate_(std::move(gate)) {}
  static void define_handlers(otpp::handlers<slow_init>& h) {
    h.cast<die>([](slow_init&, die d) -> void { throw std::runtime_error(d.why); });
  }
  otpp::result<void> init() {
    p_->add("init_enter");
    gate_.wait();
    p_->add("init_done");
    return {};
  }

 private:
  std::shared_ptr<probe> p_;
  std::shared_future<void> gate_;
};

// Start bounds on a manual clock (worker threads as usual): a bound passes only when the test
// steps the clock, once it saw the init hang, so no start is ever timed out by a slow machine.
struct manual_clock_holder {
  std::shared_ptr<otpp::manual_clock> clock_ = std::make_shared<otpp::manual_clock>();
};

class supervisor_start_timeout : protected manual_clock_holder, public supervisor_test {
 protected:
  supervisor_start_timeout()
      : supervisor_test({.name = "sup@test", .threads = 2, .clock = clock_}) {}
  void TearDown() override {
    open_gate();  // a hung init holds a worker until it returns: node.stop() waits for it
    if (stepper_.joinable()) stepper_.join();
    supervisor_test::TearDown();
  }
  void open_gate() {
    if (!opened_) open_.set_value();
    opened_ = true;
  }
  // Steps the clock by `d` once `event` was probed (an init or start function about to hang),
  // from another thread: the test's own thread may be blocked in the start meanwhile.
  void step_when(std::string event, std::chrono::milliseconds d) {
    if (stepper_.joinable()) stepper_.join();
    stepper_ = std::thread([this, event = std::move(event), d] {
      (void)eventually([&] { return !p_->with(event).empty(); });
      clock_->advance(d);
    });
  }
  otpp::child_spec hung(std::string id, std::chrono::milliseconds bound = 50ms) {
    auto c = otpp::child<slow_init>(std::move(id), p_, gate_);
    c.start_timeout = bound;
    return c;
  }
  std::promise<void> open_;
  std::shared_future<void> gate_ = open_.get_future().share();
  bool opened_ = false;
  std::thread stepper_;
};

TEST_F(supervisor_start_timeout, HungInitFailsTheSupervisorStartWithTimeout) {
  otpp::supervisor_spec spec;
  spec.children.push_back(otpp::child<worker>("a", p_, "a"));
  spec.children.push_back(hung("h"));
  step_when("init_enter", 50ms);
  auto sup = otpp::start_supervisor(node_, spec);
  ASSERT_FALSE(sup);
  // As any failed child start: init_failed, the child's error in the reason.
  EXPECT_EQ(sup.error(), errc::init_failed);
  EXPECT_NE(sup.reason().find("'h' did not start within 50 ms"), std::string::npos) << sup.reason();
  EXPECT_EQ(p_->with("stop:"), std::vector<std::string>{"stop:a:shutdown"});  // rolled back
  open_gate();
  // The late child comes up after the timeout and is killed.
  EXPECT_TRUE(
      eventually([&] { return !p_->with("init_done").empty() && node_.process_count() == 0; }));
}

TEST_F(supervisor_start_timeout, HungStartChildAnswersTimeoutAndTheSupervisorGoesOn) {
  auto events = std::make_shared<probe>();
  std::mutex m;
  otpp::pid late;  // the child whose init hung, as the event names it
  otpp::supervisor_spec spec{.max_restarts = 10};
  spec.on_event = [&](const otpp::supervisor_event& e) {
    if (e.what != otpp::supervisor_event::kind::start_timeout) return;
    std::lock_guard lock(m);
    late = e.child;
    events->add("timeout:" + e.child_id);
  };
  spec.children.push_back(otpp::child<worker>("a", p_, "a"));
  auto sup = otpp::start_supervisor(node_, spec);
  ASSERT_TRUE(sup);
  step_when("init_enter", 50ms);
  auto r = otpp::start_child(node_, *sup, hung("h"));
  EXPECT_EQ(r.error(), errc::timeout);
  EXPECT_EQ(pids(*sup).size(), 1u);  // not added, and the supervisor answers
  auto stats = otpp::get_supervisor_stats(node_, *sup);
  ASSERT_TRUE(stats);
  EXPECT_EQ(stats->start_timeouts, 1u);
  EXPECT_EQ(events->events(), std::vector<std::string>{"timeout:h"});
  otpp::pid h;
  {
    std::lock_guard lock(m);
    h = late;
  }
  ASSERT_TRUE(h);
  EXPECT_TRUE(node_.alive(h));  // still inside its init: the kill waits for it to return
  // The late init completes: its outcome reaches a supervisor that moved on, and is ignored;
  // the kill takes the child.
  open_gate();
  EXPECT_TRUE(eventually([&] { return !node_.alive(h) && node_.process_count() == 2; }));
  EXPECT_EQ(pids(*sup).size(), 1u);
  stats = otpp::get_supervisor_stats(node_, *sup);
  ASSERT_TRUE(stats);
  EXPECT_EQ(stats->start_timeouts, 1u);
  EXPECT_EQ(stats->ignored_exits, 0u);
  EXPECT_EQ(stats->child_exits, 0u);
  // Healthy: it starts (and restarts) children as before.
  auto b = otpp::start_child(node_, *sup, otpp::child<worker>("b", p_, "b"));
  ASSERT_TRUE(b) << b.reason();
  crash(*b);
  await_restart(*sup, *b, 2);
}

// A hand-written start function with a bound runs in a starter process: a hung one times out
// the same way, and the child it brings up late is killed.
TEST_F(supervisor_start_timeout, HungStartFunctionTimesOutAndItsLateChildIsKilled) {
  otpp::supervisor_spec spec{.max_restarts = 10};
  spec.children.push_back(otpp::child<worker>("a", p_, "a"));
  auto sup = otpp::start_supervisor(node_, spec);
  ASSERT_TRUE(sup);
  otpp::child_spec c;
  c.id = "f";
  c.start_timeout = 50ms;
  c.start = [p = p_, gate = gate_](otpp::node& n) -> otpp::result<otpp::pid> {
    p->add("start_enter");
    gate.wait();
    return n.spawn_opt<worker>(otpp::spawn_options{.link = true}, p, std::string("f"));
  };
  step_when("start_enter", 50ms);
  auto r = otpp::start_child(node_, *sup, c);
  EXPECT_EQ(r.error(), errc::timeout);
  open_gate();
  // The child started late ran its init, then was killed (with its starter).
  EXPECT_TRUE(eventually([&] { return !p_->with("start:f").empty(); }));
  EXPECT_TRUE(eventually([&] { return node_.process_count() == 2; }));
  EXPECT_TRUE(p_->with("stop:f").empty());  // killed: no terminate
  EXPECT_EQ(pids(*sup).size(), 1u);
  // In time, the same start function hands its child over: linked to the supervisor.
  c.id = "g";
  auto g = otpp::start_child(node_, *sup, c);
  ASSERT_TRUE(g) << g.reason();
  EXPECT_TRUE(eventually([&] { return node_.process_count() == 3; }));  // the starter is gone
  crash(*g);
  await_restart(*sup, *g, 2);
  auto stats = otpp::get_supervisor_stats(node_, *sup);
  ASSERT_TRUE(stats);
  EXPECT_EQ(stats->start_timeouts, 1u);
  EXPECT_EQ(stats->ignored_exits, 0u);
}

TEST_F(supervisor_start_timeout, BoundedStartThatFinishesInTimeIsAnOrdinaryChild) {
  open_gate();
  otpp::supervisor_spec spec;
  spec.children.push_back(hung("h", 20s));
  auto sup = otpp::start_supervisor(node_, spec);
  ASSERT_TRUE(sup) << sup.reason();
  auto h = pids(*sup)["h"];
  ASSERT_TRUE(h);
  crash(h);  // linked: restarted
  await_restart(*sup, h, 1);
}

TEST_F(supervisor_start_timeout, HungRestartIsRetriedWithoutWedgingTheSupervisor) {
  auto events = std::make_shared<probe>();
  auto hang_next = std::make_shared<std::atomic<bool>>(false);
  otpp::supervisor_spec spec{.max_restarts = 1000000, .period = 1000s};
  spec.on_event = [events](const otpp::supervisor_event& e) {
    if (e.what == otpp::supervisor_event::kind::start_timeout) events->add("timeout");
  };
  otpp::child_spec c;
  c.id = "r";
  c.start_timeout = 50ms;
  c.start = [p = p_, gate = gate_, hang_next](otpp::node& n) -> otpp::result<otpp::pid> {
    if (hang_next->exchange(false)) {
      p->add("start_hang");
      gate.wait();
    }
    return n.spawn_opt<worker>(otpp::spawn_options{.link = true}, p, std::string("r"));
  };
  spec.children.push_back(c);
  auto sup = otpp::start_supervisor(node_, spec);
  ASSERT_TRUE(sup);
  auto r1 = pids(*sup)["r"];
  hang_next->store(true);
  step_when("start_hang", 50ms);
  crash(r1);
  ASSERT_TRUE(eventually([&] { return !events->with("timeout").empty(); }));
  // Retried: the next start does not hang.
  await_restart(*sup, r1, 1);
  auto stats = otpp::get_supervisor_stats(node_, *sup);
  ASSERT_TRUE(stats);
  EXPECT_EQ(stats->start_timeouts, 1u);
  EXPECT_GE(stats->restart_failures, 1u);
  open_gate();
  // The hung start's late child is killed; the supervisor still runs exactly one.
  EXPECT_TRUE(eventually([&] { return node_.process_count() == 2; }));
  ASSERT_TRUE(otpp::stop_supervisor(node_, *sup));
}

TEST_F(supervisor_start_timeout, BoundedSupervisorChildKnowsItsParent) {
  open_gate();
  otpp::supervisor_spec inner;
  inner.children.push_back(otpp::child<worker>("x", p_, "x"));
  otpp::supervisor_spec outer;
  auto c = otpp::supervisor_child("inner", inner);
  c.start_timeout = 20s;
  outer.children.push_back(c);
  auto sup = otpp::start_supervisor(node_, outer);
  ASSERT_TRUE(sup) << sup.reason();
  auto in = pids(*sup)["inner"];
  ASSERT_TRUE(in);
  // Stopping the outer stops the inner through its parent's EXIT, children first.
  ASSERT_TRUE(otpp::stop_supervisor(node_, *sup));
  EXPECT_EQ(p_->with("stop:"), std::vector<std::string>{"stop:x:shutdown"});
  EXPECT_TRUE(eventually([&] { return node_.process_count() == 0; }));
}

// The bound of a nested supervisor covers its whole start: it reports once its own children
// run. Past the bound it is killed, and its child with a hung init dies through the link once
// that init returns.
TEST_F(supervisor_start_timeout, BoundedNestedSupervisorWhoseChildHangsIsKilled) {
  otpp::supervisor_spec inner;
  inner.children.push_back(otpp::child<worker>("x", p_, "x"));
  inner.children.push_back(otpp::child<slow_init>("h", p_, gate_));  // no bound of its own
  otpp::supervisor_spec outer;
  outer.children.push_back(otpp::child<worker>("a", p_, "a"));
  auto c = otpp::supervisor_child("inner", inner);
  c.start_timeout = 50ms;
  outer.children.push_back(c);
  step_when("init_enter", 50ms);
  auto sup = otpp::start_supervisor(node_, outer);
  ASSERT_FALSE(sup);
  EXPECT_NE(sup.reason().find("'inner' did not start within 50 ms"), std::string::npos)
      << sup.reason();
  EXPECT_EQ(p_->with("stop:"), std::vector<std::string>{"stop:a:shutdown"});  // x was killed
  open_gate();
  EXPECT_TRUE(eventually([&] { return node_.process_count() == 0; }));
  EXPECT_EQ(p_->with("init_done").size(), 1u);
}

// init hangs on the gate once `hang` is set (it takes the flag).
class hang_once : public otpp::gen_server<hang_once> {
 public:
  hang_once(std::shared_ptr<probe> p, std::shared_ptr<std::atomic<bool>> hang,
            std::shared_future<void> gate)
      : p_(std::move(p)), hang_(std::move(hang)), gate_(std::move(gate)) {}
  static void define_handlers(otpp::handlers<hang_once>& h) {
    h.cast<die>([](hang_once&, die d) -> void { throw std::runtime_error(d.why); });
  }
  otpp::result<void> init() {
    if (hang_->exchange(false)) {
      p_->add("hang");
      gate_.wait();
    }
    p_->add("up");
    return {};
  }

 private:
  std::shared_ptr<probe> p_;
  std::shared_ptr<std::atomic<bool>> hang_;
  std::shared_future<void> gate_;
};

TEST_F(supervisor_start_timeout, CrashedChildIsRestartedWithinItsBoundAndAHungRestartRetried) {
  auto hang = std::make_shared<std::atomic<bool>>(false);
  auto events = std::make_shared<probe>();
  otpp::supervisor_spec spec{.max_restarts = 100, .period = 1000s};
  spec.on_event = [events](const otpp::supervisor_event& e) {
    using k = otpp::supervisor_event::kind;
    if (e.what == k::start_timeout) events->add("timeout:" + e.child_id);
    if (e.what == k::restarted) events->add("restarted:" + e.child_id);
  };
  auto c = otpp::child<hang_once>("r", p_, hang, gate_);
  c.start_timeout = 50ms;
  spec.children.push_back(c);
  auto sup = otpp::start_supervisor(node_, spec);
  ASSERT_TRUE(sup) << sup.reason();
  // A crash: restarted within the bound.
  auto r1 = pids(*sup)["r"];
  crash(r1);
  await_restart(*sup, r1, 1);
  EXPECT_TRUE(eventually([&] { return events->with("restarted:r").size() == 1; }));
  // A restart whose init hangs: timed out (its child killed), then retried; the retry comes up.
  auto r2 = pids(*sup)["r"];
  hang->store(true);
  step_when("hang", 50ms);
  crash(r2);
  ASSERT_TRUE(eventually([&] { return events->with("timeout:r").size() == 1; }));
  await_restart(*sup, r2, 1);
  auto stats = otpp::get_supervisor_stats(node_, *sup);
  ASSERT_TRUE(stats);
  EXPECT_EQ(stats->start_timeouts, 1u);
  EXPECT_GE(stats->restart_failures, 1u);
  EXPECT_EQ(stats->ignored_exits, 0u);
  // The hung init returns: that child is killed; the supervisor runs exactly the retried one.
  auto r3 = pids(*sup)["r"];
  open_gate();
  EXPECT_TRUE(eventually([&] { return p_->with("up").size() == 4 && node_.process_count() == 2; }));
  EXPECT_EQ(pids(*sup)["r"], r3);
  EXPECT_TRUE(node_.alive(r3));
}

// The node goes while a child's init is hung (the start still in flight, bound not reached):
// the node's stop waits for the init (it holds one of the node's workers, no other thread), the
// call answers once, nothing touches the node afterwards (run under ASan).

// Opens `open` a moment into the node's stop, from a thread of its own (`opener`, joined by
// the caller): stop hooks run last added first, so this one runs before the supervisor's,
// which waits for the supervisor to end while the init it starts is still hung.
void open_during_stop(otpp::node& node, std::promise<void>& open, std::thread& opener) {
  node.add_stop_hook([&open, &opener] {
    opener = std::thread([&open] {
      std::this_thread::sleep_for(50ms);
      open.set_value();
    });
  });
}

TEST(supervisor_start_timeout_node, NodeDestroyedWhileAChildInitIsHung) {
  otpp::set_log_level(otpp::log_level::off);
  auto p = std::make_shared<probe>();
  std::promise<void> open;
  auto gate = open.get_future().share();
  std::thread opener;
  auto answers = std::make_shared<std::atomic<int>>(0);
  {
    otpp::node node({.name = "hung@test", .threads = 2});
    node.start();
    otpp::supervisor_spec spec;
    spec.children.push_back(otpp::child<worker>("a", p, "a"));
    auto sup = otpp::start_supervisor(node, spec);
    ASSERT_TRUE(sup);
    open_during_stop(node, open, opener);
    auto c = otpp::child<slow_init>("h", p, gate);
    c.start_timeout = std::chrono::hours(1);
    otpp::start_child(node, *sup, std::move(c), [answers](otpp::result<otpp::pid>) { ++*answers; });
    EXPECT_TRUE(eventually([&] { return !p->with("init_enter").empty(); }));
  }
  if (opener.joinable()) opener.join();
  EXPECT_EQ(answers->load(), 1);
  EXPECT_EQ(p->with("init_done").size(), 1u);
  EXPECT_EQ(p->with("stop:a").size(), 1u);
}

// The old use-after-free: the start timed out, the supervisor moved on, and the late init is
// still hung when the node goes. It returns during the node's stop, its outcome reaches a
// supervisor that is gone (dropped), and the kill takes it.
TEST(supervisor_start_timeout_node, NodeDestroyedWhileATimedOutInitIsStillHung) {
  otpp::set_log_level(otpp::log_level::off);
  auto p = std::make_shared<probe>();
  std::promise<void> open;
  auto gate = open.get_future().share();
  std::thread opener;
  {
    otpp::node node({.name = "late@test", .threads = 2});
    node.start();
    otpp::supervisor_spec spec;
    spec.children.push_back(otpp::child<worker>("a", p, "a"));
    auto sup = otpp::start_supervisor(node, spec);
    ASSERT_TRUE(sup);
    open_during_stop(node, open, opener);
    auto c = otpp::child<slow_init>("h", p, gate);
    c.start_timeout = 20ms;
    EXPECT_EQ(otpp::start_child(node, *sup, std::move(c)).error(), errc::timeout);
    EXPECT_TRUE(node.alive(*sup));
  }
  if (opener.joinable()) opener.join();
  EXPECT_EQ(p->with("init_done").size(), 1u);
}

// Virtual time: the bound is a node timer, driven by the manual clock. The hung init runs in
// poll() on this thread; another thread steps the clock past the bound, then lets it return.
TEST(supervisor_virtual_time, StartTimeoutOnTheManualClock) {
  otpp::set_log_level(otpp::log_level::off);
  auto clock = std::make_shared<otpp::manual_clock>();
  otpp::node n({.name = "sup_vt_timeout", .clock = clock, .manual = true});
  n.start();
  auto p = std::make_shared<probe>();
  std::promise<void> open;
  auto gate = open.get_future().share();
  std::vector<otpp::supervisor_event> events;  // on_event runs on this thread (poll)
  otpp::supervisor_spec spec;
  spec.on_event = [&events](const otpp::supervisor_event& e) { events.push_back(e); };
  spec.children.push_back(otpp::child<worker>("a", p, "a"));
  auto h = otpp::child<slow_init>("h", p, gate);
  h.start_timeout = 5s;
  spec.children.push_back(h);
  std::thread stepper([&] {
    (void)eventually([&] { return !p->with("init_enter").empty(); });
    clock->advance(5s);  // the bound passes while the init still hangs
    open.set_value();
  });
  auto sup = otpp::start_supervisor(n, spec);  // polls the node until the start completes
  stepper.join();
  ASSERT_FALSE(sup);
  EXPECT_EQ(sup.error(), errc::init_failed);
  EXPECT_NE(sup.reason().find("'h' did not start within 5000 ms"), std::string::npos)
      << sup.reason();
  EXPECT_EQ(p->with("stop:"), std::vector<std::string>{"stop:a:shutdown"});
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].what, otpp::supervisor_event::kind::start_timeout);
  EXPECT_EQ(events[0].child_id, "h");
  n.poll();
  EXPECT_FALSE(n.alive(events[0].child));  // killed once its init returned
  EXPECT_EQ(p->with("init_done").size(), 1u);
  EXPECT_EQ(n.process_count(), 0u);
}

// A start only virtual time can settle (a spawn function that drops after_init: the bound
// alone ends it). The blocking form on a manual node cannot step the clock: it answers
// would_block and stops the supervisor. The token form completes once the clock passes the
// bound.
TEST(supervisor_virtual_time, StartWaitingForTheClockOnAManualNode) {
  otpp::set_log_level(otpp::log_level::off);
  auto clock = std::make_shared<otpp::manual_clock>();
  otpp::node n({.name = "sup_vt_mute", .clock = clock, .manual = true});
  n.start();
  auto p = std::make_shared<probe>();
  otpp::child_spec c;
  c.id = "mute";
  c.start_timeout = 5s;
  c.spawn = [p](otpp::node& node, const otpp::spawn_options& o, const std::any&) {
    auto mine = o;
    mine.after_init = nullptr;  // never tells the supervisor
    return node.spawn_opt<worker>(mine, p, std::string("mute"));
  };
  otpp::supervisor_spec spec;
  spec.children.push_back(c);
  auto blocked = otpp::start_supervisor(n, spec);
  EXPECT_EQ(blocked.error(), errc::would_block);
  EXPECT_EQ(n.process_count(), 0u);  // stopped, and the child it was waiting for killed
  std::optional<otpp::result<otpp::pid>> started;
  otpp::start_supervisor(n, spec, [&started](otpp::result<otpp::pid> r) { started = r; });
  n.poll();
  EXPECT_FALSE(started);  // waiting for the bound
  clock->advance(5s);
  n.poll();
  ASSERT_TRUE(started);
  EXPECT_EQ(started->error(), errc::init_failed);
  EXPECT_NE(started->reason().find("'mute' did not start within 5000 ms"), std::string::npos)
      << started->reason();
  EXPECT_EQ(n.process_count(), 0u);
}

// Virtual time: bounded starts and restarts that finish in time leave no timer behind; the
// supervisor's run-time API in token form, completed by poll().
TEST(supervisor_virtual_time, BoundedStartsInTimeNeverTimeOut) {
  otpp::set_log_level(otpp::log_level::off);
  auto clock = std::make_shared<otpp::manual_clock>();
  otpp::node n({.name = "sup_vt_bounded", .clock = clock, .manual = true});
  n.start();
  auto p = std::make_shared<probe>();
  std::vector<otpp::supervisor_event> events;
  otpp::supervisor_spec spec{.max_restarts = 10, .period = 1s};
  spec.on_event = [&events](const otpp::supervisor_event& e) { events.push_back(e); };
  auto w = otpp::child<worker>("w", p, "w");
  w.start_timeout = 5s;
  spec.children.push_back(w);
  auto sup = otpp::start_supervisor(n, spec);
  ASSERT_TRUE(sup) << sup.reason();
  auto count = [&](otpp::supervisor_event::kind k) {
    return std::count_if(events.begin(), events.end(), [k](auto& e) { return e.what == k; });
  };
  std::optional<otpp::result<otpp::pid>> added;
  auto x = otpp::child<worker>("x", p, "x");
  x.start_timeout = 5s;
  otpp::start_child(n, *sup, std::move(x), [&added](otpp::result<otpp::pid> r) { added = r; });
  n.poll();
  ASSERT_TRUE(added && *added) << (added ? added->reason() : "no answer");
  otpp::pid current;
  otpp::which_children(n, *sup, [&current](otpp::result<std::vector<otpp::child_info>> r) {
    if (r && r->size() == 2) current = r->back().child;  // newest first: w last
  });
  n.poll();
  ASSERT_TRUE(current);
  ASSERT_TRUE(otpp::cast(n, current, die{"boom"}));
  n.poll();
  ASSERT_EQ(count(otpp::supervisor_event::kind::restarted), 1);
  clock->advance(1h);  // past every bound: none of them fires
  n.poll();
  EXPECT_EQ(count(otpp::supervisor_event::kind::start_timeout), 0);
  std::optional<otpp::supervisor_stats> stats;
  otpp::get_supervisor_stats(n, *sup, [&stats](otpp::result<otpp::supervisor_stats> r) {
    if (r) stats = *r;
  });
  n.poll();
  ASSERT_TRUE(stats);
  EXPECT_EQ(stats->start_timeouts, 0u);
  EXPECT_EQ(stats->restarts, 1u);
  EXPECT_EQ(n.process_count(), 3u);
  EXPECT_TRUE(otpp::stop_supervisor(n, *sup));  // blocking form: polls this node
  EXPECT_EQ(n.process_count(), 0u);
}

// ---- forged EXIT messages (issue 8 item 3, supervisor side)

// The runtime refuses a dynamic EXIT before any handler sees it (system messages come only from
// the runtime); the supervisor's own checks (a child must really be gone, a parent must hold a
// stop token) stand behind that. A call after the forged message is a barrier: messages from
// one sender are handled in order.
bool forged_exit_refused(otpp::node& n, const otpp::pid& sup) {
  if (!otpp::which_children(n, sup)) return false;
  auto stats = otpp::get_supervisor_stats(n, sup);
  return stats && stats->ignored_exits == 0;
}

msgpack::object_handle forged_exit(const otpp::pid& from, const std::string& reason) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(3);
  pk.pack(std::string("type"));
  pk.pack(std::string("EXIT"));
  pk.pack(std::string("from"));
  pk.pack(from);
  pk.pack(std::string("reason"));
  pk.pack(otpp::exit_reason(reason));
  return msgpack::unpack(buf.data(), buf.size());
}

TEST_F(supervisor_test, ForgedExitOfALiveChildDoesNotRestartIt) {
  auto sup = otpp::start_supervisor(node_, abc(restart_strategy::one_for_all));
  ASSERT_TRUE(sup);
  auto before = pids(*sup);
  ASSERT_TRUE(otpp::send_dynamic(node_, *sup, forged_exit(before["b"], "boom")));
  ASSERT_TRUE(forged_exit_refused(node_, *sup));
  EXPECT_EQ(pids(*sup), before);
  EXPECT_EQ(node_.process_count(), 4u);
  EXPECT_EQ(otpp::get_supervisor_stats(node_, *sup)->restarts, 0u);
  // The real exit still restarts.
  crash(before["b"]);
  await_restart(*sup, before["b"]);
}

TEST_F(supervisor_test, ForgedExitOfALiveDynamicChildDoesNotRestartIt) {
  otpp::supervisor_spec spec{.strategy = restart_strategy::simple_one_for_one};
  spec.children.push_back(otpp::dynamic_child<dyn_worker, int>("dyn"));
  auto sup = otpp::start_supervisor(node_, spec);
  ASSERT_TRUE(sup);
  auto c = otpp::start_dynamic_child(node_, *sup, otpp::child_args(1));
  ASSERT_TRUE(c);
  ASSERT_TRUE(otpp::send_dynamic(node_, *sup, forged_exit(*c, "boom")));
  ASSERT_TRUE(forged_exit_refused(node_, *sup));
  auto list = otpp::which_children(node_, *sup);
  ASSERT_TRUE(list);
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].child, *c);
  EXPECT_EQ(node_.process_count(), 2u);
}

TEST_F(supervisor_test, ForgedExitFromNoProcessDoesNotStopATopLevelSupervisor) {
  auto sup = otpp::start_supervisor(node_, abc(restart_strategy::one_for_one));
  ASSERT_TRUE(sup);
  auto before = pids(*sup);
  ASSERT_TRUE(otpp::send_dynamic(node_, *sup, forged_exit(otpp::pid{}, "shutdown")));
  ASSERT_TRUE(forged_exit_refused(node_, *sup));
  EXPECT_TRUE(node_.alive(*sup));
  EXPECT_EQ(pids(*sup), before);
}

// Behind the runtime's refusal, the supervisor's own check: a real exit signal that is neither
// from a child that ended nor from its parent is ignored and counted.
TEST_F(supervisor_test, ExitSignalFromANonParentIsIgnoredAndCounted) {
  auto sup = otpp::start_supervisor(node_, abc(restart_strategy::one_for_one));
  ASSERT_TRUE(sup);
  auto before = pids(*sup);
  node_.exit(*sup, otpp::exit_reason::shutdown());  // from no process: not the parent's token
  ASSERT_TRUE(
      eventually([&] { return otpp::get_supervisor_stats(node_, *sup)->ignored_exits == 1; }));
  EXPECT_TRUE(node_.alive(*sup));
  EXPECT_EQ(pids(*sup), before);
}

TEST_F(supervisor_test, ForgedExitNamingTheLiveParentDoesNotStopANestedSupervisor) {
  otpp::supervisor_spec inner;
  inner.children.push_back(otpp::child<worker>("x", p_, "x"));
  otpp::supervisor_spec outer;
  outer.children.push_back(otpp::supervisor_child("inner", inner));
  auto sup = otpp::start_supervisor(node_, outer);
  ASSERT_TRUE(sup);
  auto in = pids(*sup)["inner"];
  auto x = pids(in)["x"];
  ASSERT_TRUE(otpp::send_dynamic(node_, in, forged_exit(*sup, "shutdown")));
  ASSERT_TRUE(forged_exit_refused(node_, in));
  EXPECT_TRUE(node_.alive(in));
  EXPECT_EQ(pids(in)["x"], x);
  // The real parent's stop still goes through.
  ASSERT_TRUE(otpp::terminate_child(node_, *sup, "inner"));
  EXPECT_FALSE(node_.alive(in));
  EXPECT_EQ(p_->with("stop:"), std::vector<std::string>{"stop:x:shutdown"});
}

// A supervisor started inside an ordinary process shuts down when that process ends.
class owner : public otpp::gen_server<owner> {
 public:
  struct start {
    static constexpr std::string_view tag = "owner:start";
    using reply = otpp::pid;
    OTPP_NO_FIELDS()
  };
  struct start_bad {
    static constexpr std::string_view tag = "owner:start_bad";
    using reply = std::string;
    OTPP_NO_FIELDS()
  };
  explicit owner(std::shared_ptr<probe> p) : p_(std::move(p)) {}
  static void define_handlers(otpp::handlers<owner>& h) {
    // The blocking form would wait on this thread: refused. The token form completes once the
    // children run; the supervisor then links to its caller.
    h.call<start>([](owner& self, start) -> asio::awaitable<otpp::pid> {
      auto& n = self.this_node();
      otpp::supervisor_spec spec;
      spec.children.push_back(otpp::child<worker>("w", self.p_, "w"));
      if (otpp::start_supervisor(n, spec).error() != errc::invalid_argument) co_return otpp::pid{};
      auto sup = co_await otpp::start_supervisor(n, std::move(spec), asio::use_awaitable);
      co_return sup.value_or(otpp::pid{});
    });
    // A failed start answers the error; the caller lives on (it was not linked yet).
    h.call<start_bad>([](owner& self, start_bad) -> asio::awaitable<std::string> {
      otpp::supervisor_spec spec;
      spec.children.push_back(
          otpp::child<worker>("bad", self.p_, "bad", behaviour{.fail_init = true}));
      auto sup =
          co_await otpp::start_supervisor(self.this_node(), std::move(spec), asio::use_awaitable);
      co_return sup ? std::string("started") : sup.reason();
    });
  }

 private:
  std::shared_ptr<probe> p_;
};

TEST_F(supervisor_test, RealExitOfTheParentStillShutsTheTreeDown) {
  auto o = node_.spawn<owner>(p_);
  ASSERT_TRUE(o);
  auto bad = otpp::call(node_, *o, owner::start_bad{}, asio::use_future).get();
  ASSERT_TRUE(bad);
  EXPECT_NE(bad->find("refused:bad"), std::string::npos) << *bad;
  EXPECT_TRUE(node_.alive(*o));
  EXPECT_TRUE(eventually([&] { return node_.process_count() == 1; }));
  auto sup = otpp::call(node_, *o, owner::start{}, asio::use_future).get();
  ASSERT_TRUE(sup && *sup);
  // While the owner lives, an EXIT naming it is not believed.
  ASSERT_TRUE(otpp::send_dynamic(node_, *sup, forged_exit(*o, "shutdown")));
  ASSERT_TRUE(forged_exit_refused(node_, *sup));
  EXPECT_TRUE(node_.alive(*sup));
  node_.exit(*o, otpp::exit_reason::kill());
  EXPECT_TRUE(eventually([&] { return node_.process_count() == 0; }));
  EXPECT_EQ(p_->with("stop:"), std::vector<std::string>{"stop:w:shutdown"});
}

// ---- awaiting the supervisor API with owning values (g++ 12 coroutine temporaries)

class admin : public otpp::gen_server<admin> {
 public:
  struct run {
    static constexpr std::string_view tag = "admin:run";
    using reply = std::vector<std::string>;
    otpp::pid sup;
    MSGPACK_DEFINE_MAP(sup)
  };
  static void define_handlers(otpp::handlers<admin>& h) {
    h.call<run>([](admin& self, run r) -> asio::awaitable<std::vector<std::string>> {
      auto& n = self.this_node();
      std::vector<std::string> out;
      auto spec = otpp::child<worker>("a-child-id-long-enough-to-be-on-the-heap",
                                      std::make_shared<probe>(), std::string(64, 'x'));
      auto started = co_await otpp::start_child(n, r.sup, std::move(spec), asio::use_awaitable);
      out.push_back(started ? "started" : started.fail().message());
      auto list = co_await otpp::which_children(n, r.sup, asio::use_awaitable);
      if (list) {
        for (auto& c : *list) out.push_back(c.id);
      }
      std::string id = "a-child-id-long-enough-to-be-on-the-heap";
      auto stopped = co_await otpp::terminate_child(n, r.sup, std::move(id), asio::use_awaitable);
      out.push_back(stopped ? "terminated" : stopped.fail().message());
      std::string missing = "no-such-child-with-a-long-heap-allocated-name";
      auto gone = co_await otpp::delete_child(n, r.sup, std::move(missing), asio::use_awaitable);
      out.push_back(gone.fail().message());
      co_return out;
    });
  }
};

TEST_F(supervisor_test, AwaitingTheApiWithHeapStringsFromACoroutine) {
  otpp::supervisor_spec spec;
  spec.children.push_back(otpp::child<worker>("first", p_, "first"));
  auto sup = otpp::start_supervisor(node_, spec);
  ASSERT_TRUE(sup);
  auto a = node_.spawn<admin>();
  ASSERT_TRUE(a);
  auto r = otpp::call(node_, *a, admin::run{*sup}, asio::use_future).get();
  ASSERT_TRUE(r) << r.reason();
  EXPECT_EQ(*r, (std::vector<std::string>{
                    "started", "a-child-id-long-enough-to-be-on-the-heap", "first", "terminated",
                    "not_found: no-such-child-with-a-long-heap-allocated-name"}));
}

}  // namespace
