// The saga runner on virtual time: a manual node on a manual clock, scripted steps
// (saga_support.hpp), the in-memory store. Every backoff is checked exactly; nothing sleeps.
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <asio/use_awaitable.hpp>
#include <asio/use_future.hpp>

#include "otpp/resilience/saga.hpp"
#include "otpp/runtime.hpp"
#include "resilience/saga_support.hpp"

namespace otpp_test {
namespace {

using namespace std::chrono_literals;
using otpp::errc;
using otpp::failure;
using otpp::result;
namespace res = otpp::resilience;
using res::saga_status;
using res::step_event;

using strings = std::vector<std::string>;

struct saga : ::testing::Test {
  std::shared_ptr<otpp::manual_clock> clock = std::make_shared<otpp::manual_clock>();
  otpp::node node{{.name = "saga", .clock = clock, .manual = true}};
  res::saga_runner& runner = res::saga_runner::of(node);
  std::shared_ptr<res::memory_saga_store> store = res::memory_saga_store::make();
  saga_script s;

  void SetUp() override {
    node.start();
    s.node = &node;
    runner.use_store(store);
  }
  void step(otpp::clock_type::duration d) {
    node.poll();
    clock->advance(d);
    node.poll();
  }
  res::saga_definition order(std::string name = "order") {
    return {.name = std::move(name),
            .steps = {s.step("reserve"), s.step("charge"), s.step("confirm")},
            .compensation_retry = {.max_attempts = 3, .initial_delay = 100ms, .max_delay = 1s}};
  }
  // Starts a run and polls until it completes (it never needs time to pass unless a
  // compensation is retried: `advance` steps the clock that far in 10 ms steps).
  std::optional<result<res::saga_outcome>> run(const std::string& name, std::string input = "in",
                                               otpp::clock_type::duration advance = {}) {
    std::optional<result<res::saga_outcome>> got;
    runner.start(name, std::move(input), [&](result<res::saga_outcome> r) { got = std::move(r); });
    node.poll();
    for (auto t = otpp::clock_type::duration::zero(); !got && t < advance; t += 10ms) step(10ms);
    return got;
  }
  static strings events(const std::vector<res::step_record>& log) {
    strings out;
    for (const auto& e : log) out.push_back(e.step + ":" + res::to_string(e.event));
    return out;
  }
};

TEST_F(saga, AllStepsDoneCompletesWithOutputsAndLog) {
  ASSERT_TRUE(runner.define(order()));
  auto got = run("order", "sku-1");
  ASSERT_TRUE(got && *got) << (got ? got->fail().message() : "no completion");
  const auto& o = **got;
  EXPECT_EQ(o.status, saga_status::completed);
  EXPECT_FALSE(o.failed_step);
  EXPECT_TRUE(o.compensation_failures.empty());
  EXPECT_FALSE(o.recovered);
  EXPECT_EQ(s.whats(), (strings{"do reserve", "do charge", "do confirm"}));
  ASSERT_EQ(o.outputs.size(), 3u);
  EXPECT_EQ(o.outputs[1], (std::pair<std::string, std::string>{"charge", "charge-out"}));
  EXPECT_EQ(events(o.log), (strings{"reserve:started", "reserve:done", "charge:started",
                                    "charge:done", "confirm:started", "confirm:done"}));
  EXPECT_EQ(o.log[1].detail, "reserve-out");
  auto stored = store->load(o.run_id);
  ASSERT_TRUE(stored);
  EXPECT_EQ(stored->status, saga_status::completed);
  EXPECT_EQ(stored->saga, "order");
  EXPECT_EQ(stored->input, "sku-1");
  EXPECT_EQ(stored->log, o.log);
  auto open = store->unfinished();
  ASSERT_TRUE(open);
  EXPECT_TRUE(open->empty());
}

TEST_F(saga, AFailedStepCompensatesTheDoneStepsLastFirst) {
  const strings steps{"reserve", "charge", "confirm"};
  for (std::size_t k = 0; k < steps.size(); ++k) {
    s.calls.clear();
    auto name = "order" + std::to_string(k);
    ASSERT_TRUE(runner.define(order(name)));
    s.actions[steps[k]].push_back(failure(errc::invalid_argument, "payment_declined"));
    auto got = run(name);
    ASSERT_TRUE(got && *got) << k;
    const auto& o = **got;
    EXPECT_EQ(o.status, saga_status::compensated) << k;
    ASSERT_TRUE(o.failed_step) << k;
    EXPECT_EQ(o.failed_step->step, steps[k]);
    EXPECT_EQ(o.failed_step->error.code, errc::invalid_argument);
    EXPECT_EQ(o.failed_step->error.reason, "payment_declined");
    strings want;
    for (std::size_t i = 0; i <= k; ++i) want.push_back("do " + steps[i]);
    for (std::size_t i = k; i-- > 0;) want.push_back("undo " + steps[i]);  // not the failed one
    EXPECT_EQ(s.whats(), want) << k;
    EXPECT_EQ(o.outputs.size(), k);
    auto stored = store->load(o.run_id);
    ASSERT_TRUE(stored);
    EXPECT_EQ(stored->status, saga_status::compensated);
  }
  // The log of a failure at the last step, in full.
  auto runs = store->all();
  EXPECT_EQ(events(runs.back().log),
            (strings{"reserve:started", "reserve:done", "charge:started", "charge:done",
                     "confirm:started", "confirm:failed", "charge:compensation_started",
                     "charge:compensated", "reserve:compensation_started", "reserve:compensated"}));
  EXPECT_EQ(runs.back().log[5].detail, "invalid_argument: payment_declined");
}

TEST_F(saga, ACompensationIsRetriedWithBackoffOnTheNodeClock) {
  ASSERT_TRUE(runner.define(order()));
  s.actions["confirm"].push_back(failure(errc::nodedown));
  s.compensations["charge"] = {failure(errc::timeout), failure(errc::timeout)};
  std::optional<result<res::saga_outcome>> got;
  runner.start("order", "in", [&](result<res::saga_outcome> r) { got = std::move(r); });
  node.poll();
  const auto t0 = node.now();
  EXPECT_EQ(s.whats(), (strings{"do reserve", "do charge", "do confirm", "undo charge"}));
  step(99ms);
  EXPECT_EQ(s.calls.size(), 4u);  // the first backoff is 100 ms
  step(1ms);
  ASSERT_EQ(s.calls.size(), 5u);
  EXPECT_EQ(s.calls[4].at, t0 + 100ms);
  EXPECT_EQ(s.calls[4].context.attempt, 2);
  step(199ms);
  EXPECT_EQ(s.calls.size(), 5u);  // the second is 200 ms
  step(1ms);
  ASSERT_TRUE(got && *got);
  EXPECT_EQ(s.calls[5].at, t0 + 300ms);
  EXPECT_EQ(s.calls[5].context.attempt, 3);
  EXPECT_EQ(s.whats(), (strings{"do reserve", "do charge", "do confirm", "undo charge",
                                "undo charge", "undo charge", "undo reserve"}));
  const auto& o = **got;
  EXPECT_EQ(o.status, saga_status::compensated);
  EXPECT_TRUE(o.compensation_failures.empty());
  std::vector<std::pair<step_event, int>> charge;
  for (const auto& e : o.log) {
    if (e.step == "charge" && e.event != step_event::started && e.event != step_event::done)
      charge.emplace_back(e.event, e.attempt);
  }
  EXPECT_EQ(charge, (std::vector<std::pair<step_event, int>>{{step_event::compensation_started, 1},
                                                             {step_event::compensation_error, 1},
                                                             {step_event::compensation_started, 2},
                                                             {step_event::compensation_error, 2},
                                                             {step_event::compensation_started, 3},
                                                             {step_event::compensated, 3}}));
}

TEST_F(saga, ACompensationThatGivesUpIsReportedAndLoggedAndTheOthersStillRun) {
  auto def = order();
  def.compensation_retry = {.max_attempts = 3, .initial_delay = 100ms, .max_delay = 150ms};
  ASSERT_TRUE(runner.define(std::move(def)));
  s.actions["confirm"].push_back(failure(errc::nodedown));
  s.compensations["charge"] = {failure(errc::timeout), failure(errc::timeout),
                               failure(errc::connection_closed, "last")};
  std::vector<std::string> errors;
  auto previous =
      otpp::set_log_sink([&](otpp::log_level l, std::string_view c, std::string_view t) {
        if (l == otpp::log_level::error && c == "saga") errors.emplace_back(t);
      });
  std::optional<result<res::saga_outcome>> got;
  runner.start("order", "in", [&](result<res::saga_outcome> r) { got = std::move(r); });
  node.poll();
  const auto t0 = node.now();
  for (int i = 0; i < 50 && !got; ++i) step(10ms);
  otpp::set_log_sink(std::move(previous));
  ASSERT_TRUE(got && *got);
  const auto& o = **got;
  EXPECT_EQ(o.status, saga_status::compensation_failed);
  ASSERT_EQ(o.compensation_failures.size(), 1u);
  EXPECT_EQ(o.compensation_failures[0].step, "charge");
  EXPECT_EQ(o.compensation_failures[0].error.code, errc::connection_closed);
  EXPECT_EQ(o.compensation_failures[0].error.reason, "last");
  // Backoff capped: 100 ms, then 150 ms (not 200).
  ASSERT_EQ(s.calls.size(), 7u);
  EXPECT_EQ(s.calls[4].at, t0 + 100ms);
  EXPECT_EQ(s.calls[5].at, t0 + 250ms);
  EXPECT_EQ(s.calls[6].what, "undo reserve");  // the earlier step is still compensated
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_NE(errors[0].find("gave up after 3 attempt(s)"), std::string::npos) << errors[0];
  auto stored = store->load(o.run_id);
  ASSERT_TRUE(stored);
  EXPECT_EQ(stored->status, saga_status::compensation_failed);
  EXPECT_EQ(events(stored->log).at(11), "charge:compensation_failed");
  EXPECT_EQ(stored->log.at(11).detail, "connection_closed: last");
}

TEST_F(saga, AStepMayAskToBeCompensatedWhenItsOwnActionFails) {
  auto def = order();
  // A timeout may have charged: undo it too. A declined payment charged nothing.
  def.steps[1] = s.step("charge").compensate_on_failure(
      [](const failure& f) { return f.code == errc::timeout; });
  ASSERT_TRUE(runner.define(std::move(def)));
  s.actions["charge"] = {failure(errc::timeout), failure(errc::invalid_argument, "declined")};
  auto timed_out = run("order");
  ASSERT_TRUE(timed_out && *timed_out);
  EXPECT_EQ((*timed_out)->status, saga_status::compensated);
  EXPECT_EQ(s.whats(), (strings{"do reserve", "do charge", "undo charge", "undo reserve"}));
  EXPECT_EQ(events((*timed_out)->log).at(3), "charge:failed_compensate");
  s.calls.clear();
  auto declined = run("order");
  ASSERT_TRUE(declined && *declined);
  EXPECT_EQ(s.whats(), (strings{"do reserve", "do charge", "undo reserve"}));
  EXPECT_EQ(events((*declined)->log).at(3), "charge:failed");
}

TEST_F(saga, StepsGetTheirIdempotencyKeyInputAndEarlierOutputs) {
  res::saga_definition def{.name = "typed"};
  def.steps.push_back(s.step("reserve"));
  def.steps.push_back(res::saga_step::make("count", [](const res::saga_context&, auto&& token) {
    return asio::async_initiate<decltype(token), void(result<int>)>(
        [](auto h) { std::move(h)(result<int>(42)); }, token);
  }));
  def.steps.push_back(s.step("charge"));
  ASSERT_TRUE(runner.define(std::move(def)));
  auto got = run("typed", "order-7");
  ASSERT_TRUE(got && *got);
  const auto& o = **got;
  ASSERT_EQ(s.calls.size(), 2u);
  for (const auto& c : s.calls) {
    EXPECT_EQ(c.context.run_id, o.run_id);
    EXPECT_EQ(c.context.saga, "typed");
    EXPECT_EQ(c.context.input, "order-7");
    EXPECT_EQ(c.context.idempotency_key, o.run_id + "/" + c.context.step);
    EXPECT_FALSE(c.context.recovered);
  }
  const auto& charge = s.calls[1].context;
  EXPECT_EQ(charge.step, "charge");
  ASSERT_EQ(charge.outputs.size(), 2u);
  ASSERT_TRUE(charge.output("reserve"));
  EXPECT_EQ(*charge.output("reserve"), "reserve-out");
  EXPECT_EQ(charge.output_as<int>("count").value(), 42);
  EXPECT_EQ(charge.output_as<std::string>("reserve").value(), "reserve-out");
  EXPECT_EQ(charge.output_as<int>("charge").error(), errc::not_found);
  EXPECT_EQ(charge.output_as<std::vector<int>>("count").error(), errc::bad_message);
  EXPECT_EQ(s.calls[0].context.outputs.size(), 0u);
  // Two runs never share an id.
  auto again = run("typed");
  ASSERT_TRUE(again && *again);
  EXPECT_NE((*again)->run_id, o.run_id);
}

TEST_F(saga, TheLogIsWrittenBeforeTheActionRuns) {
  ASSERT_TRUE(runner.define(order()));
  s.hold["charge"] = true;
  std::optional<result<res::saga_outcome>> got;
  runner.start("order", "in", [&](result<res::saga_outcome> r) { got = std::move(r); });
  EXPECT_TRUE(s.calls.empty());  // never inside start()
  node.poll();
  ASSERT_EQ(s.held.size(), 1u);
  EXPECT_FALSE(got);
  auto open = store->unfinished();
  ASSERT_TRUE(open);
  ASSERT_EQ(open->size(), 1u);
  EXPECT_EQ(open->front().status, saga_status::running);
  EXPECT_EQ(events(open->front().log),
            (strings{"reserve:started", "reserve:done", "charge:started"}));
  s.held[0](result<std::string>(failure(errc::timeout)));
  node.poll();
  ASSERT_TRUE(got && *got);
  EXPECT_EQ((*got)->status, saga_status::compensated);
  EXPECT_EQ(s.whats(), (strings{"do reserve", "do charge", "undo reserve"}));
}

TEST_F(saga, DefinitionsAreCheckedAndAnUnknownSagaIsNotFound) {
  auto bad = [&](res::saga_definition d) { return runner.define(std::move(d)).error(); };
  EXPECT_EQ(bad({.name = "", .steps = {s.step("a")}}), errc::invalid_argument);
  EXPECT_EQ(bad({.name = "none"}), errc::invalid_argument);
  EXPECT_EQ(bad({.name = "twice", .steps = {s.step("a"), s.step("a")}}), errc::invalid_argument);
  EXPECT_EQ(bad({.name = "slash", .steps = {s.step("a/b")}}), errc::invalid_argument);
  EXPECT_EQ(bad({.name = "empty", .steps = {s.step("")}}), errc::invalid_argument);
  EXPECT_EQ(bad({.name = "no_attempts",
                 .steps = {s.step("a")},
                 .compensation_retry = {.max_attempts = 0}}),
            errc::invalid_argument);
  ASSERT_TRUE(runner.define(order()));
  EXPECT_EQ(runner.define(order()).error(), errc::already_registered);
  auto got = run("nope");
  ASSERT_TRUE(got);
  EXPECT_EQ(got->error(), errc::not_found);
  EXPECT_TRUE(store->all().empty());
}

// ---- from a process: a coroutine handler awaits a run; use_future there is refused

struct place_order {
  static constexpr std::string_view tag = "saga_test.place_order";
  using reply = std::string;
  std::string input;
  MSGPACK_DEFINE_MAP(input)
};
struct place_order_blocking {
  static constexpr std::string_view tag = "saga_test.place_order_blocking";
  using reply = int;
  OTPP_NO_FIELDS()
};
class order_desk : public otpp::gen_server<order_desk> {
 public:
  static void define_handlers(otpp::handlers<order_desk>& h) {
    h.call<place_order>([](order_desk& self, place_order m) -> asio::awaitable<std::string> {
      auto& runner = res::saga_runner::of(self.this_node());
      std::string saga_name = "order";
      auto r = co_await runner.start(std::move(saga_name), std::move(m.input), asio::use_awaitable);
      if (!r) co_return "error " + r.fail().message();
      co_return std::string(res::to_string(r->status)) + " " + r->outputs.back().second;
    });
    h.call<place_order_blocking>([](order_desk& self, place_order_blocking) -> result<int> {
      auto& runner = res::saga_runner::of(self.this_node());
      auto r = runner.start("order", "in", asio::use_future).get();
      if (r) return 0;
      return failure(r.fail());
    });
  }
};

TEST_F(saga, ACoroutineHandlerAwaitsARunAndAFutureThereIsRefused) {
  ASSERT_TRUE(runner.define(order()));
  auto desk = node.spawn<order_desk>();
  ASSERT_TRUE(desk);
  std::optional<result<std::string>> got;
  otpp::call(node, *desk, place_order{"sku-9"}, 5s,
             [&](result<std::string> r) { got = std::move(r); });
  for (int i = 0; i < 10 && !got; ++i) step(10ms);
  ASSERT_TRUE(got && *got) << (got ? got->fail().message() : "no reply");
  EXPECT_EQ(**got, "completed confirm-out");
  EXPECT_EQ(s.calls.at(0).context.input, "sku-9");

  std::optional<result<int>> refused;
  otpp::call(node, *desk, place_order_blocking{}, 5s,
             [&](result<int> r) { refused = std::move(r); });
  for (int i = 0; i < 10 && !refused; ++i) step(10ms);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->error(), errc::would_block);
  EXPECT_EQ(s.calls.size(), 3u);  // the refused run never started
}

// A store whose writes fail after `ok_writes` succeeded.
struct failing_store final : res::saga_store {
  std::shared_ptr<res::memory_saga_store> inner = res::memory_saga_store::make();
  int ok_writes = 0;
  result<void> fail_or(result<void> r) {
    if (ok_writes-- > 0) return r;
    return failure(errc::node_stopped, "disk gone");
  }
  result<void> create(const res::saga_record& run) override { return inner->create(run); }
  result<void> append(const std::string& id, const res::step_record& r) override {
    if (ok_writes <= 0) return fail_or({});
    return fail_or(inner->append(id, r));
  }
  result<void> set_status(const std::string& id, saga_status st) override {
    return inner->set_status(id, st);
  }
  result<res::saga_record> load(const std::string& id) override { return inner->load(id); }
  result<std::vector<res::saga_record>> unfinished() override {
    if (ok_writes < 0) return failure(errc::node_stopped, "disk gone");
    return inner->unfinished();
  }
};

TEST_F(saga, AStoreFailureEndsTheRunWithThatErrorAndLeavesItForRecovery) {
  auto failing = std::make_shared<failing_store>();
  failing->ok_writes = 2;  // reserve started + done; charge's "started" fails
  runner.use_store(failing);
  ASSERT_TRUE(runner.define(order()));
  auto got = run("order");
  ASSERT_TRUE(got);
  ASSERT_FALSE(*got);
  EXPECT_EQ(got->error(), errc::node_stopped);
  EXPECT_EQ(got->reason(), "disk gone");
  EXPECT_EQ(s.whats(), (strings{"do reserve"}));  // charge never ran: it was not logged
  auto open = failing->inner->unfinished();
  ASSERT_TRUE(open);
  ASSERT_EQ(open->size(), 1u);
  // recover() cannot list runs from a broken store: its error.
  std::optional<result<res::saga_recovery>> rec;
  runner.recover([&](result<res::saga_recovery> r) { rec = std::move(r); });
  node.poll();
  ASSERT_TRUE(rec);
  EXPECT_EQ(rec->error(), errc::node_stopped);
}

// ---- recovery from a store a stopped node left behind

struct saga_recover : saga {
  res::saga_record unfinished(std::vector<res::step_record> log,
                              saga_status st = saga_status::running) {
    res::saga_record r{
        .run_id = "order-old-1", .saga = "order", .input = "in", .status = st, .log = {}};
    EXPECT_TRUE(store->create(r));
    for (const auto& e : log) EXPECT_TRUE(store->append(r.run_id, e));
    EXPECT_TRUE(store->set_status(r.run_id, st));
    return r;
  }
  std::optional<result<res::saga_recovery>> recover() {
    std::optional<result<res::saga_recovery>> got;
    runner.recover([&](result<res::saga_recovery> r) { got = std::move(r); });
    node.poll();
    return got;
  }
};

TEST_F(saga_recover, ARunInterruptedMidStepIsCompensatedIncludingTheStepInFlight) {
  ASSERT_TRUE(runner.define(order()));
  unfinished({{"reserve", step_event::started},
              {"reserve", step_event::done, 1, "r1"},
              {"charge", step_event::started}});
  auto got = recover();
  ASSERT_TRUE(got && *got);
  ASSERT_EQ((*got)->runs.size(), 1u);
  const auto& o = (*got)->runs[0];
  EXPECT_EQ(o.run_id, "order-old-1");
  EXPECT_TRUE(o.recovered);
  EXPECT_EQ(o.status, saga_status::compensated);
  ASSERT_TRUE(o.failed_step);
  EXPECT_EQ(o.failed_step->step, "charge");
  EXPECT_EQ(o.failed_step->error.code, errc::node_stopped);
  EXPECT_EQ(s.whats(), (strings{"undo charge", "undo reserve"}));
  for (const auto& c : s.calls) {
    EXPECT_TRUE(c.context.recovered);
    EXPECT_EQ(c.context.idempotency_key, "order-old-1/" + c.context.step);
  }
  EXPECT_EQ(s.calls[0].context.output("reserve") ? *s.calls[0].context.output("reserve") : "",
            "r1");
  EXPECT_EQ(events(o.log).size(), 7u);  // the 3 from before and 4 now
  // Once finished, a second recovery finds nothing: each compensation ran once.
  auto again = recover();
  ASSERT_TRUE(again && *again);
  EXPECT_TRUE((*again)->runs.empty());
  EXPECT_EQ(s.calls.size(), 2u);
}

TEST_F(saga_recover, ACompensatingRunOnlyCompensatesWhatIsNotYetCompensated) {
  ASSERT_TRUE(runner.define(order()));
  unfinished({{"reserve", step_event::started},
              {"reserve", step_event::done},
              {"charge", step_event::started},
              {"charge", step_event::done},
              {"confirm", step_event::started},
              {"confirm", step_event::failed, 1, "nodedown"},
              {"charge", step_event::compensation_started},
              {"charge", step_event::compensated}},
             saga_status::compensating);
  auto got = recover();
  ASSERT_TRUE(got && *got);
  ASSERT_EQ((*got)->runs.size(), 1u);
  EXPECT_EQ((*got)->runs[0].status, saga_status::compensated);
  EXPECT_EQ((*got)->runs[0].failed_step->step, "confirm");
  EXPECT_EQ(s.whats(), (strings{"undo reserve"}));
}

TEST_F(saga_recover, ACompensationStartedButNotRecordedRunsAgainWithItsKey) {
  ASSERT_TRUE(runner.define(order()));
  unfinished({{"reserve", step_event::started},
              {"reserve", step_event::done},
              {"charge", step_event::started},
              {"charge", step_event::failed, 1, "declined"},
              {"reserve", step_event::compensation_started}},
             saga_status::compensating);
  auto got = recover();
  ASSERT_TRUE(got && *got);
  EXPECT_EQ(s.whats(), (strings{"undo reserve"}));
  EXPECT_EQ(s.calls[0].context.idempotency_key, "order-old-1/reserve");
}

TEST_F(saga_recover, AFailedStepThatAskedForItIsCompensatedAfterARestart) {
  ASSERT_TRUE(runner.define(order()));
  unfinished({{"reserve", step_event::started},
              {"reserve", step_event::done},
              {"charge", step_event::started},
              {"charge", step_event::failed_compensate, 1, "timeout"}},
             saga_status::running);
  auto got = recover();
  ASSERT_TRUE(got && *got);
  ASSERT_EQ((*got)->runs.size(), 1u);
  EXPECT_EQ((*got)->runs[0].failed_step->step, "charge");
  EXPECT_EQ((*got)->runs[0].failed_step->error.reason, "timeout");
  EXPECT_EQ(s.whats(), (strings{"undo charge", "undo reserve"}));
}

TEST_F(saga_recover, ResumeModeRunsTheStepInFlightAgainAndGoesOn) {
  auto def = order();
  def.on_recovery = res::recovery_mode::resume;
  ASSERT_TRUE(runner.define(std::move(def)));
  unfinished({{"reserve", step_event::started},
              {"reserve", step_event::done, 1, "r1"},
              {"charge", step_event::started}});
  auto got = recover();
  ASSERT_TRUE(got && *got);
  ASSERT_EQ((*got)->runs.size(), 1u);
  const auto& o = (*got)->runs[0];
  EXPECT_EQ(o.status, saga_status::completed);
  EXPECT_EQ(s.whats(), (strings{"do charge", "do confirm"}));
  EXPECT_EQ(s.calls[0].context.idempotency_key, "order-old-1/charge");
  EXPECT_TRUE(s.calls[0].context.recovered);
  ASSERT_EQ(o.outputs.size(), 3u);
  EXPECT_EQ(o.outputs[0].second, "r1");
}

TEST_F(saga_recover, RunsOfAnUndefinedSagaStayInTheStore) {
  unfinished({{"reserve", step_event::started}});
  auto got = recover();
  ASSERT_TRUE(got && *got);
  EXPECT_TRUE((*got)->runs.empty());
  EXPECT_EQ((*got)->undefined, (strings{"order-old-1"}));
  auto open = store->unfinished();
  ASSERT_TRUE(open);
  EXPECT_EQ(open->size(), 1u);
  // Defined later, the next recovery finishes it.
  ASSERT_TRUE(runner.define(order()));
  auto later = recover();
  ASSERT_TRUE(later && *later);
  ASSERT_EQ((*later)->runs.size(), 1u);
  EXPECT_EQ(s.whats(), (strings{"undo reserve"}));
}

TEST_F(saga_recover, ARunGoingOnHereIsNotRecoveredTwice) {
  ASSERT_TRUE(runner.define(order()));
  s.hold["charge"] = true;
  std::optional<result<res::saga_outcome>> got;
  runner.start("order", "in", [&](result<res::saga_outcome> r) { got = std::move(r); });
  node.poll();
  auto rec = recover();
  ASSERT_TRUE(rec && *rec);
  EXPECT_TRUE((*rec)->runs.empty());
  EXPECT_EQ(s.whats(), (strings{"do reserve", "do charge"}));
  s.held[0](std::string("paid"));
  node.poll();
  ASSERT_TRUE(got && *got);
  EXPECT_EQ((*got)->status, saga_status::completed);
}

}  // namespace
}  // namespace otpp_test
