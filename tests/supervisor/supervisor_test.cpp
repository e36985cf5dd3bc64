// Supervisor tests: strategies, restart types, intensity and escalation, start rollback,
// shutdown timeouts and kill, dynamic children, run-time API, names, node shutdown order.
#include <algorithm>
#include <chrono>
#include <future>
#include <map>
#include <memory>
#include <mutex>
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
  otpp::node node_{{.name = "sup@test", .threads = 2}};
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

TEST_F(supervisor_test, RestartsOutsideThePeriodDoNotCount) {
  otpp::supervisor_spec spec{.max_restarts = 1, .period = 20ms};
  spec.children.push_back(otpp::child<worker>("w", p_, "w"));
  auto sup = otpp::start_supervisor(node_, spec);
  ASSERT_TRUE(sup);
  for (int i = 0; i < 3; ++i) {
    auto w = pids(*sup)["w"];
    crash(w);
    await_restart(*sup, w, 1);
    // The restart is recorded by now: wait out the period (a condition on the clock, not on
    // the system under test) so the next one is alone in its window.
    auto restarted = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - restarted < 40ms) std::this_thread::sleep_for(1ms);
  }
  EXPECT_TRUE(node_.alive(*sup));
}

// ---- start

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

// ---- shutdown

TEST_F(supervisor_test, ShutdownTimeoutThenKillWhileChildIsInAHandler) {
  std::promise<void> open;
  behaviour b{.gate = open.get_future().share()};
  otpp::supervisor_spec spec{.kill_wait = 50ms};
  auto c = otpp::child<worker>("slow", p_, "slow", b);
  c.shutdown = otpp::shutdown_mode::timeout(30ms);
  spec.children.push_back(c);
  auto sup = otpp::start_supervisor(node_, spec);
  ASSERT_TRUE(sup);
  auto slow = pids(*sup)["slow"];
  ASSERT_TRUE(otpp::cast(node_, slow, hang{}));
  ASSERT_TRUE(eventually([&] { return !p_->with("hang:slow").empty(); }));
  // terminate_child returns after the timeout and the bounded kill wait, the child still busy.
  auto r = otpp::terminate_child(node_, *sup, "slow");
  ASSERT_TRUE(r) << r.reason();
  EXPECT_TRUE(node_.alive(slow));
  EXPECT_FALSE(pids(*sup)["slow"]);
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
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(otpp::stop_supervisor(node_, *sup));
  EXPECT_FALSE(node_.alive(*sup));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
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
    return counts && counts->active == expected && counts->specs == expected &&
           node_.process_count() == expected + 1 && all_running(*sup, expected);
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
  EXPECT_EQ(otpp::restart_child(node_, *sup, "dyn").error(), errc::invalid_argument);
  EXPECT_EQ(otpp::terminate_child(node_, *sup, otpp::pid{}).error(), errc::not_found);
  // A temporary dynamic child that crashes is forgotten.
  crash(*c);
  EXPECT_TRUE(eventually([&] { return otpp::count_children(node_, *sup)->specs == 0; }));
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
  EXPECT_EQ(node_.process_count(), 5u);
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
      auto started = co_await otpp::start_child(
          n, g.sup, otpp::child<worker>("late", std::make_shared<probe>(), "late"),
          asio::use_awaitable);
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

}  // namespace
