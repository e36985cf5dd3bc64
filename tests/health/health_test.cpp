// Health checks on virtual time (a manual node on a manual clock: every timeout and duration
// is exact), readiness before and after joining a cluster (real nodes on 127.0.0.1), and the
// metrics text, node and policy metrics included, read back by a strict parser.
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "cluster/cluster_support.hpp"
#include "health/prometheus_parser.hpp"
#include "otpp/health.hpp"
#include "otpp/node_counters.hpp"
#include "otpp/resilience.hpp"
#include "otpp/runtime.hpp"

namespace otpp_test {
namespace {

using namespace std::chrono_literals;
using otpp::errc;
using otpp::failure;
using otpp::result;
namespace health = otpp::health;
namespace res = otpp::resilience;
using health::check_result;
using health::status;

struct health_virtual : ::testing::Test {
  std::shared_ptr<otpp::manual_clock> clock = std::make_shared<otpp::manual_clock>();
  otpp::node node{{.name = "health", .clock = clock, .manual = true}};
  health::registry& reg = health::of(node);
  std::optional<health::health_report> got;

  void SetUp() override {
    node.start();
    reg.require_cluster(false);
  }
  void step(otpp::clock_type::duration d) {
    node.poll();
    clock->advance(d);
    node.poll();
  }
  void ready() {
    got.reset();
    reg.ready([this](health::health_report r) { got = std::move(r); });
    node.poll();
  }
  const health::check_report& check(const std::string& name) {
    for (const auto& c : got->checks) {
      if (c.name == name) return c;
    }
    throw std::runtime_error("no check " + name);
  }
};

// A check the test answers: it keeps `done` until answer().
struct held_check {
  std::vector<health::check_done> pending;
  int starts = 0;
  health::check_fn fn() {
    return [this](health::check_done done) {
      ++starts;
      pending.push_back(std::move(done));
    };
  }
  void answer(check_result r) {
    auto d = std::move(pending.front());
    pending.erase(pending.begin());
    d(std::move(r));
  }
};

TEST_F(health_virtual, NoChecksIsHealthy) {
  ready();
  ASSERT_TRUE(got);
  EXPECT_EQ(got->state, status::healthy);
  EXPECT_TRUE(got->checks.empty());
}

TEST_F(health_virtual, AddCheckErrors) {
  auto ok = [](health::check_done d) { d(check_result::healthy()); };
  EXPECT_EQ(reg.add_check("", ok).error(), errc::invalid_argument);
  EXPECT_EQ(reg.add_check("x", nullptr).error(), errc::invalid_argument);
  ASSERT_TRUE(reg.add_check("x", ok));
  EXPECT_EQ(reg.add_check("x", ok).error(), errc::already_registered);
  EXPECT_TRUE(reg.remove_check("x"));
  EXPECT_FALSE(reg.remove_check("x"));
  EXPECT_TRUE(reg.add_check("x", ok));
}

TEST_F(health_virtual, CriticalCheckTimesOutOnItsOwnTimeout) {
  held_check slow;
  ASSERT_TRUE(reg.add_check("db", slow.fn(), {.timeout = 500ms}));
  ready();
  EXPECT_EQ(slow.starts, 1);
  EXPECT_FALSE(got);
  step(499ms);
  EXPECT_FALSE(got) << "complete before its timeout";
  step(1ms);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->state, status::unhealthy);
  EXPECT_EQ(check("db").state, status::unhealthy);
  EXPECT_EQ(check("db").detail, "timed out after 500ms");
  EXPECT_EQ(check("db").duration, 500ms);
  EXPECT_EQ(got->duration, 500ms);
  // Its late answer changes nothing (and does not crash).
  slow.answer(check_result::healthy());
  EXPECT_EQ(check("db").state, status::unhealthy);
}

TEST_F(health_virtual, NonCriticalCheckTimingOutDegrades) {
  held_check slow;
  ASSERT_TRUE(reg.add_check("cache", slow.fn(), {.timeout = 200ms, .critical = false}));
  ready();
  step(200ms);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->state, status::degraded);
  EXPECT_EQ(check("cache").state, status::degraded);
  EXPECT_EQ(check("cache").detail, "timed out after 200ms");
}

TEST_F(health_virtual, ChecksRunConcurrentlyEachWithItsDuration) {
  held_check a, b, c;
  ASSERT_TRUE(reg.add_check("a", a.fn(), {.timeout = 1s}));
  ASSERT_TRUE(reg.add_check("b", b.fn(), {.timeout = 1s}));
  ASSERT_TRUE(reg.add_check("c", c.fn(), {.timeout = 1s}));
  ready();
  // All three started before any answered.
  EXPECT_EQ(a.starts + b.starts + c.starts, 3);
  step(100ms);
  c.answer(check_result::healthy("c ok"));
  step(200ms);
  a.answer(check_result::healthy());
  EXPECT_FALSE(got);
  step(50ms);
  b.answer(check_result::degraded("slow disk"));
  ASSERT_TRUE(got);
  ASSERT_EQ(got->checks.size(), 3u);
  EXPECT_EQ(got->checks[0].name, "a");  // registration order, not completion order
  EXPECT_EQ(got->checks[1].name, "b");
  EXPECT_EQ(got->checks[2].name, "c");
  EXPECT_EQ(check("c").duration, 100ms);
  EXPECT_EQ(check("a").duration, 300ms);
  EXPECT_EQ(check("b").duration, 350ms);
  EXPECT_EQ(check("c").detail, "c ok");
  EXPECT_EQ(got->state, status::degraded);
  // The answered checks' timers were cancelled: nothing changes at their timeouts.
  step(2s);
  EXPECT_EQ(got->state, status::degraded);
}

TEST_F(health_virtual, OverallStatusIsTheWorstWithNonCriticalCapped) {
  auto answer = [](check_result r) { return [r](health::check_done d) { d(r); }; };
  ASSERT_TRUE(reg.add_check("ok", answer(check_result::healthy())));
  ready();
  EXPECT_EQ(got->state, status::healthy);
  ASSERT_TRUE(reg.add_check("soft", answer(check_result::unhealthy("optional feed down")),
                            {.critical = false}));
  ready();
  EXPECT_EQ(got->state, status::degraded);
  EXPECT_EQ(check("soft").state, status::unhealthy);  // the check says what it saw
  ASSERT_TRUE(reg.add_check("slowish", answer(check_result::degraded("p99 high"))));
  ready();
  EXPECT_EQ(got->state, status::degraded);
  ASSERT_TRUE(reg.add_check("hard", answer(check_result::unhealthy("db down"))));
  ready();
  EXPECT_EQ(got->state, status::unhealthy);
  EXPECT_EQ(check("hard").detail, "db down");
}

TEST_F(health_virtual, ThrowingCheckIsUnhealthy) {
  ASSERT_TRUE(reg.add_check("bad", [](health::check_done) { throw std::runtime_error("boom"); }));
  ready();
  ASSERT_TRUE(got);
  EXPECT_EQ(got->state, status::unhealthy);
  EXPECT_EQ(check("bad").detail, "check threw: boom");
}

TEST_F(health_virtual, SecondAnswerOfACheckIsIgnored) {
  health::check_done keep;
  ASSERT_TRUE(reg.add_check("twice", [&](health::check_done d) {
    keep = d;
    d(check_result::unhealthy("first"));
  }));
  ready();
  ASSERT_TRUE(got);
  keep(check_result::healthy("second"));
  EXPECT_EQ(check("twice").detail, "first");
  EXPECT_EQ(got->state, status::unhealthy);
}

TEST_F(health_virtual, LivenessAnswersThroughAProcess) {
  std::optional<health::health_report> live;
  reg.live(100ms, [&](health::health_report r) { live = std::move(r); });
  node.poll();
  ASSERT_TRUE(live);
  EXPECT_EQ(live->state, status::healthy);
  ASSERT_EQ(live->checks.size(), 1u);
  EXPECT_EQ(live->checks[0].name, "liveness");
  EXPECT_EQ(live->checks[0].detail, "schedulers answered in 0ms");
}

TEST_F(health_virtual, ReadinessNeedsTheClusterByDefault) {
  reg.require_cluster(true);
  ready();
  ASSERT_TRUE(got);
  EXPECT_EQ(got->state, status::unhealthy);
  EXPECT_EQ(check("cluster").detail, "not joined to a cluster");
}

TEST(health_node, LivenessOfAStoppedNodeIsUnhealthy) {
  otpp::node n({.name = "stopped", .threads = 1});
  n.start();
  auto& reg = health::of(n);
  n.stop();
  std::optional<health::health_report> live;
  reg.live(100ms, [&](health::health_report r) { live = std::move(r); });
  ASSERT_TRUE(live);
  EXPECT_EQ(live->state, status::unhealthy);
  EXPECT_EQ(live->checks.at(0).detail, "the node is not running");
}

// A process that holds its (only) worker thread until released: the scheduler cannot answer.
struct hold {
  static constexpr std::string_view tag = "hold";
};
struct worker_hold {
  std::atomic<bool> holding{false};  // the blocker has the worker
  std::atomic<bool> release{false};
};
class blocker : public otpp::gen_server<blocker> {
 public:
  explicit blocker(std::shared_ptr<worker_hold> h) : hold_(std::move(h)) {}
  static void define_handlers(otpp::handlers<blocker>& h) {
    h.cast<hold>([](blocker& self, hold) {
      self.hold_->holding.store(true);
      auto until = std::chrono::steady_clock::now() + 30s;  // bounded
      while (!self.hold_->release.load() && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(1ms);
    });
  }

 private:
  std::shared_ptr<worker_hold> hold_;
};

TEST(health_node, LivenessFailsWhileTheSchedulersAreStuck) {
  otpp::node n({.name = "stuck", .threads = 1});
  n.start();
  auto& reg = health::of(n);
  auto held = std::make_shared<worker_hold>();
  auto b = n.spawn<blocker>(held);
  ASSERT_TRUE(b);
  ASSERT_TRUE(otpp::cast(n, *b, hold{}));
  ASSERT_TRUE(eventually([&] { return held->holding.load(); }));  // it has the only worker
  auto answer = std::make_shared<std::promise<health::health_report>>();
  reg.live(200ms, [answer](health::health_report r) { answer->set_value(std::move(r)); });
  auto f = answer->get_future();
  // While the worker is held the probe cannot answer: the report (if any arrives) is unhealthy.
  if (f.wait_for(500ms) == std::future_status::ready) {
    EXPECT_EQ(f.get().state, status::unhealthy);
  } else {
    held->release.store(true);
    ASSERT_EQ(f.wait_for(20s), std::future_status::ready);
    auto r = f.get();
    EXPECT_EQ(r.state, status::unhealthy);
    EXPECT_EQ(r.checks.at(0).detail, "schedulers did not answer within 200ms");
  }
  held->release.store(true);
}

TEST(health_cluster, ReadinessBeforeAndAfterJoining) {
  auto pa = free_port(), pb = free_port();
  auto a = test_node::start("hc_a", pa, fast_options());
  otpp::node b_node({.name = node_name("hc_b", pb), .threads = 2});
  b_node.start();
  auto& reg = health::of(b_node);
  auto ready_now = [&] {
    auto p = std::make_shared<std::promise<health::health_report>>();
    reg.ready([p](health::health_report r) { p->set_value(std::move(r)); });
    auto f = p->get_future();
    EXPECT_EQ(f.wait_for(20s), std::future_status::ready);
    return f.get();
  };
  auto before = ready_now();
  EXPECT_EQ(before.state, status::unhealthy);
  ASSERT_EQ(before.checks.size(), 1u);
  EXPECT_EQ(before.checks[0].name, "cluster");
  EXPECT_EQ(before.checks[0].detail, "not joined to a cluster");

  auto joined = otpp::cluster::join(b_node, fast_options({"127.0.0.1:" + std::to_string(pa)}));
  ASSERT_TRUE(joined);
  EXPECT_TRUE(eventually(
      [&] {
        std::size_t up = 0;
        for (const auto& m : (*joined)->members())
          up += m.status == otpp::cluster::member_status::up;
        return up == 2;
      },
      30s));
  auto after = ready_now();
  EXPECT_EQ(after.state, status::healthy);
  EXPECT_EQ(after.checks.at(0).detail, "2 members up");

  // A user check joins the cluster check.
  ASSERT_TRUE(
      reg.add_check("db", [](health::check_done d) { d(check_result::unhealthy("down")); }));
  auto with_check = ready_now();
  EXPECT_EQ(with_check.state, status::unhealthy);
  EXPECT_EQ(with_check.checks.size(), 2u);

  // The node's metrics see the cluster.
  std::string error;
  auto text = parse_prometheus(reg.metrics().render(), error);
  ASSERT_TRUE(text) << error;
  const std::map<std::string, std::string> self{{"node", b_node.name()}};
  EXPECT_EQ(text->value("otpp_cluster_joined", self), 1);
  EXPECT_EQ(text->value("otpp_cluster_members", {{"node", b_node.name()}, {"status", "up"}}), 2);
  EXPECT_GT(
      *text->value("otpp_cluster_frames_total", {{"node", b_node.name()}, {"direction", "in"}}), 0);
  EXPECT_GT(
      *text->value("otpp_cluster_bytes_total", {{"node", b_node.name()}, {"direction", "in"}}), 0);
  EXPECT_GT(
      *text->value("otpp_cluster_bytes_total", {{"node", b_node.name()}, {"direction", "out"}}), 0);
  EXPECT_EQ(text->value("otpp_cluster_connections", self), 1);
  EXPECT_EQ(text->types["otpp_cluster_frames_total"], "counter");
  b_node.stop();
}

// ---- metrics

TEST(metrics, RegistryErrors) {
  health::metrics_registry m;
  EXPECT_EQ(m.make_counter("", "h").error(), errc::invalid_argument);
  EXPECT_EQ(m.make_counter("1abc", "h").error(), errc::invalid_argument);
  EXPECT_EQ(m.make_counter("a-b", "h").error(), errc::invalid_argument);
  EXPECT_EQ(m.make_counter("ok", "h", {{"__reserved", "x"}}).error(), errc::invalid_argument);
  EXPECT_EQ(m.make_counter("ok", "h", {{"a:b", "x"}}).error(), errc::invalid_argument);
  EXPECT_EQ(m.make_counter("ok", "h", {{"a", "x"}, {"a", "y"}}).error(), errc::invalid_argument);
  ASSERT_TRUE(m.make_counter("ok_total", "h"));
  EXPECT_EQ(m.make_gauge("ok_total", "h").error(), errc::invalid_argument);
  EXPECT_TRUE(health::valid_metric_name("a:b_c9"));
  EXPECT_FALSE(health::valid_label_name("9a"));
}

TEST(metrics, RendersParsableTextWithEscapes) {
  health::metrics_registry m;
  auto c = m.make_counter("jobs_total", "Jobs done.\nBy \\ queue.", {{"queue", "a\"b\\c\nd"}});
  ASSERT_TRUE(c);
  c->inc();
  c->inc(2);
  c->inc(-5);  // a counter never goes down
  auto same = m.make_counter("jobs_total", "ignored", {{"queue", "a\"b\\c\nd"}});
  ASSERT_TRUE(same);
  same->inc();  // the same series
  auto g = m.make_gauge("temperature", "Degrees.", {{"b", "2"}, {"a", "1"}});
  ASSERT_TRUE(g);
  g->set(-1.5);
  auto nan = m.make_gauge("ratio", "Undefined so far.");
  ASSERT_TRUE(nan);
  nan->set(std::nan(""));
  m.add_collector([](health::sample_sink& s) {
    s.gauge("collected", "From a collector.", {{"k", "v"}}, 7);
    s.gauge("bad-name", "dropped", {}, 1);
    s.counter("temperature", "type clash: dropped", {}, 1);
  });
  const auto text = m.render();
  std::string error;
  auto p = parse_prometheus(text, error);
  ASSERT_TRUE(p) << error << "\n" << text;
  EXPECT_EQ(p->value("jobs_total", {{"queue", "a\"b\\c\nd"}}), 4);
  EXPECT_EQ(p->value("temperature", {{"a", "1"}, {"b", "2"}}), -1.5);
  EXPECT_TRUE(std::isnan(*p->value("ratio")));
  EXPECT_EQ(p->value("collected", {{"k", "v"}}), 7);
  EXPECT_EQ(p->helps["jobs_total"], "Jobs done.\\nBy \\\\ queue.");
  EXPECT_EQ(p->types["jobs_total"], "counter");
  EXPECT_EQ(p->types["temperature"], "gauge");
  EXPECT_EQ(p->samples.size(), 4u);  // the two bad samples dropped
  EXPECT_NE(text.find("jobs_total{queue=\"a\\\"b\\\\c\\nd\"} 4\n"), std::string::npos) << text;
  EXPECT_NE(text.find("temperature{a=\"1\",b=\"2\"} -1.5\n"), std::string::npos) << text;
}

TEST(metrics, TheParserRejectsMalformedText) {
  std::string e;
  EXPECT_FALSE(parse_prometheus("x 1\n", e));                             // no TYPE
  EXPECT_FALSE(parse_prometheus("# TYPE x gauge\nx{a=\"\\t\"} 1\n", e));  // bad escape
  EXPECT_FALSE(parse_prometheus("# TYPE x gauge\nx{a=b} 1\n", e));        // unquoted
  EXPECT_FALSE(parse_prometheus("# TYPE x gauge\nx one\n", e));           // bad value
  EXPECT_FALSE(parse_prometheus("# TYPE x gauge\nx 1\nx 2\n", e));        // duplicate
  EXPECT_FALSE(parse_prometheus("# TYPE x counter\nx -1\n", e));          // negative counter
  EXPECT_TRUE(parse_prometheus("# HELP x h\n# TYPE x gauge\nx{a=\"\\\"\"} +Inf\n", e)) << e;
}

struct bump {
  static constexpr std::string_view tag = "bump";
};
class bumper : public otpp::gen_server<bumper> {
 public:
  static void define_handlers(otpp::handlers<bumper>& h) {
    h.cast<bump>([](bumper&, bump) {});
  }
};

TEST_F(health_virtual, NodeMetrics) {
  const std::map<std::string, std::string> self{{"node", "health"}};
  auto scrape = [&] {
    std::string error;
    auto p = parse_prometheus(reg.metrics().render(), error);
    EXPECT_TRUE(p) << error;
    return p.value_or(prom_text{});
  };
  auto p = scrape();
  EXPECT_EQ(p.value("otpp_processes", self), 0);
  EXPECT_EQ(p.value("otpp_cluster_joined", self), 0);
  EXPECT_EQ(p.value("otpp_mailbox_messages", self), 0);
  EXPECT_EQ(p.value("otpp_messages_handled_total", self), 0);
  EXPECT_EQ(p.types["otpp_processes"], "gauge");
  EXPECT_EQ(p.types["otpp_messages_handled_total"], "counter");

  auto b = node.spawn<bumper>();
  ASSERT_TRUE(b);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(otpp::cast(node, *b, bump{}));
  p = scrape();  // not handled yet: waiting in the mailbox
  EXPECT_EQ(p.value("otpp_processes", self), 1);
  EXPECT_EQ(p.value("otpp_processes_spawned_total", self), 1);
  node.poll();
  p = scrape();
  EXPECT_EQ(p.value("otpp_messages_handled_total", self), 3);
  EXPECT_EQ(p.value("otpp_mailbox_messages", self), 0);
  // The count survives the process's end.
  node.stop_process(*b, otpp::exit_reason::shutdown());
  node.poll();
  p = scrape();
  EXPECT_EQ(p.value("otpp_processes", self), 0);
  EXPECT_EQ(p.value("otpp_processes_exited_total", self), 1);
  EXPECT_EQ(p.value("otpp_messages_handled_total", self), 3);
  auto c = otpp::counters(node);
  EXPECT_EQ(c.spawned, 1u);
  EXPECT_EQ(c.exited, 1u);
  EXPECT_EQ(c.messages_handled, 3u);
}

struct ask {
  static constexpr std::string_view tag = "ask";
  using reply = int;
  bool answer = true;
};
class answerer : public otpp::gen_server<answerer> {
 public:
  static void define_handlers(otpp::handlers<answerer>& h) {
    // A request with answer = false is never answered: its caller times out.
    h.call<ask>([](answerer& self, ask m, otpp::reply_to<int> to) {
      if (m.answer) {
        to(1);
      } else {
        self.held_.push_back(std::move(to));
      }
    });
  }

 private:
  std::vector<otpp::reply_to<int>> held_;
};

TEST_F(health_virtual, CallsByOutcome) {
  auto a = node.spawn<answerer>();
  ASSERT_TRUE(a);
  std::vector<std::future<result<int>>> calls;
  calls.push_back(otpp::call(node, *a, ask{true}, 1s, asio::use_future));
  calls.push_back(otpp::call(node, *a, ask{false}, 1s, asio::use_future));
  auto gone = node.spawn<answerer>();
  ASSERT_TRUE(gone);
  node.stop_process(*gone, otpp::exit_reason::shutdown());
  node.poll();
  calls.push_back(otpp::call(node, *gone, ask{true}, 1s, asio::use_future));
  step(2s);
  EXPECT_TRUE(calls[0].get());
  EXPECT_EQ(calls[1].get().error(), errc::timeout);
  EXPECT_EQ(calls[2].get().error(), errc::noproc);
  const auto c = otpp::counters(node);
  EXPECT_EQ(c.calls[0], 1u);
  EXPECT_EQ(c.calls[static_cast<int>(errc::timeout)], 1u);
  EXPECT_EQ(c.calls[static_cast<int>(errc::noproc)], 1u);
  std::string error;
  auto p = parse_prometheus(reg.metrics().render(), error);
  ASSERT_TRUE(p) << error;
  using L = std::map<std::string, std::string>;
  EXPECT_EQ(p->value("otpp_calls_total", L{{"node", "health"}, {"outcome", "ok"}}), 1);
  EXPECT_EQ(p->value("otpp_calls_total", L{{"node", "health"}, {"outcome", "timeout"}}), 1);
  EXPECT_EQ(p->value("otpp_calls_total", L{{"node", "health"}, {"outcome", "noproc"}}), 1);
  EXPECT_EQ(p->types["otpp_calls_total"], "counter");
}

TEST_F(health_virtual, PolicyMetrics) {
  auto& m = reg.metrics();
  res::retry retry(node,
                   {.max_attempts = 2, .initial_delay = 10ms, .jitter_kind = res::jitter::none});
  res::circuit_breaker breaker(node, {.name = "pay",
                                      .window_size = 2,
                                      .minimum_calls = 2,
                                      .failure_rate_threshold = 50,
                                      .wait_in_open = 1s});
  res::bulkhead bulkhead(node, {.name = "db", .max_concurrent = 1, .max_queue = 0});
  res::rate_limiter limiter(node, {.name = "api", .capacity = 1, .refill = 1, .refill_period = 1s});
  health::observe(m, retry, "fetch");
  health::observe(m, breaker);
  health::observe(m, bulkhead);
  health::observe(m, limiter);

  int calls = 0;
  auto failing = [&](auto&& token) {
    return asio::async_initiate<std::decay_t<decltype(token)>, void(result<int>)>(
        [&calls](auto h) {
          ++calls;
          std::move(h)(result<int>(errc::timeout));
        },
        token);
  };
  std::vector<result<int>> out;
  auto collect = [&](result<int> r) { out.push_back(std::move(r)); };
  // Retry: attempt 1 fails (retried), attempt 2 fails (failed).
  retry.execute(failing, collect);
  step(10ms);
  // Breaker: two failures open it; the third call is refused.
  breaker.execute(failing, collect);
  breaker.execute(failing, collect);
  breaker.execute(failing, collect);
  node.poll();
  // Bulkhead: one slot held by a call that never completes; the second is refused.
  std::function<void(result<int>)> held;
  auto holding = [&](auto&& token) {
    return asio::async_initiate<std::decay_t<decltype(token)>, void(result<int>)>(
        [&held](auto h) {
          held = [h = std::make_shared<decltype(h)>(std::move(h))](result<int> r) mutable {
            std::move (*h)(std::move(r));
          };
        },
        token);
  };
  bulkhead.execute(holding, collect);
  bulkhead.execute(holding, collect);
  // Rate limiter: one permit; the second call is refused.
  limiter.execute(failing, collect);
  limiter.execute(failing, collect);
  node.poll();

  std::string error;
  auto p = parse_prometheus(m.render(), error);
  ASSERT_TRUE(p) << error;
  using L = std::map<std::string, std::string>;
  EXPECT_EQ(p->value("otpp_retry_attempts_total", L{{"policy", "fetch"}, {"outcome", "retried"}}),
            1);
  EXPECT_EQ(p->value("otpp_retry_attempts_total", L{{"policy", "fetch"}, {"outcome", "failed"}}),
            1);
  EXPECT_EQ(p->value("otpp_retry_attempts_total", L{{"policy", "fetch"}, {"outcome", "success"}}),
            0);
  EXPECT_EQ(p->value("otpp_breaker_state", L{{"breaker", "pay"}, {"state", "open"}}), 1);
  EXPECT_EQ(p->value("otpp_breaker_state", L{{"breaker", "pay"}, {"state", "closed"}}), 0);
  EXPECT_EQ(p->value("otpp_breaker_transitions_total", L{{"breaker", "pay"}, {"to", "open"}}), 1);
  EXPECT_EQ(p->value("otpp_breaker_refused_total", L{{"breaker", "pay"}}), 1);
  EXPECT_EQ(p->value("otpp_bulkhead_rejected_total", L{{"bulkhead", "db"}}), 1);
  EXPECT_EQ(p->value("otpp_bulkhead_in_flight", L{{"bulkhead", "db"}}), 1);
  EXPECT_EQ(p->value("otpp_rate_limiter_rejected_total", L{{"rate_limiter", "api"}}), 1);
  EXPECT_EQ(p->value("otpp_rate_limiter_available_permits", L{{"rate_limiter", "api"}}), 0);
  EXPECT_EQ(calls, 5);  // 2 by the retry, 2 through the breaker, 1 through the limiter
  ASSERT_TRUE(held);
  held(result<int>(1));
  node.poll();
}

}  // namespace
}  // namespace otpp_test
