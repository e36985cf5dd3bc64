// gen_statem: a door lock on a manual node and a manual clock (deterministic, no sleeps).
#include <optional>

#include "otpp/gen_statem.hpp"
#include "test_support.hpp"

namespace otpp_test {
namespace {

using otpp::errc;

enum class door_state { locked, open };

std::string name_of(door_state s) {
  return s == door_state::locked ? "locked" : "open";
}

struct button {
  static constexpr std::string_view tag = "button";
  int digit = 0;
  MSGPACK_DEFINE_MAP(digit)
};
struct unlock {
  static constexpr std::string_view tag = "unlock";
  using reply = bool;
  std::string code;
  MSGPACK_DEFINE_MAP(code)
};
struct lock_door {
  static constexpr std::string_view tag = "lock";
  using reply = bool;
  OTPP_NO_FIELDS()
};
struct get_state {
  static constexpr std::string_view tag = "get_state";
  using reply = std::string;
  OTPP_NO_FIELDS()
};
// Delivered only while open: postponed while locked.
struct parcel {
  static constexpr std::string_view tag = "parcel";
  std::string label;
  MSGPACK_DEFINE_MAP(label)
};
// A call postponed while locked (its caller is handed over with the retried event).
struct peek {
  static constexpr std::string_view tag = "peek";
  using reply = std::string;
  OTPP_NO_FIELDS()
};
// A call answered later (through a reply_to) when the door opens.
struct wait_open {
  static constexpr std::string_view tag = "wait_open";
  using reply = bool;
  OTPP_NO_FIELDS()
};
struct relock {
  static constexpr std::string_view tag = "relock";
  OTPP_NO_FIELDS()
};
struct clear_code {
  static constexpr std::string_view tag = "clear_code";
  OTPP_NO_FIELDS()
};
struct break_door {
  static constexpr std::string_view tag = "break_door";
  std::string why;
  MSGPACK_DEFINE_MAP(why)
};
struct explode {
  static constexpr std::string_view tag = "explode";
  OTPP_NO_FIELDS()
};
struct arm_alarm {
  static constexpr std::string_view tag = "arm_alarm";
  int seconds = 0;  // 0: cancel
  MSGPACK_DEFINE_MAP(seconds)
};
struct alarm {
  static constexpr std::string_view tag = "alarm";
  OTPP_NO_FIELDS()
};
struct refresh {
  static constexpr std::string_view tag = "refresh";
  OTPP_NO_FIELDS()
};

// Code "42". Buttons enter digits (an event timeout clears a partial code after 3 s of
// silence); the door stays open 5 s (a state timeout), parcels wait until it opens.
class door : public otpp::gen_statem<door, door_state> {
 public:
  explicit door(std::shared_ptr<recorder> rec, std::chrono::milliseconds open_for = 5s)
      : gen_statem(door_state::locked), rec_(std::move(rec)), open_for_(open_for) {}

  static void define_handlers(handler_table& h) {
    using enum door_state;
    h.cast<button>(locked, &door::on_button);
    h.timeout<clear_code>(locked, [](door& d, const clear_code&) {
      d.rec_->add("cleared:" + d.entered_);
      d.entered_.clear();
    });
    h.call<unlock>(locked, [](door&, const unlock& u, otpp::call_from<bool>& from) -> transition {
      if (u.code != code) return keep_state().reply(from, false);
      return next_state(open).reply(from, true);
    });
    h.call<unlock>(open, [](door&, const unlock&) { return true; });
    h.call<lock_door>(open, [](door&, const lock_door&, otpp::call_from<bool>& from) {
      return next_state(locked).reply(from, true);
    });
    h.call<get_state>([](door& d, const get_state&) { return name_of(d.state()); });
    h.cast<parcel>(locked, [](door&, const parcel&) { return keep_state().postpone(); });
    h.cast<parcel>(open, [](door& d, const parcel& p) { d.rec_->add("parcel:" + p.label); });
    h.call<peek>(locked, [](door&, const peek&, otpp::call_from<std::string>&) {
      return keep_state().postpone();
    });
    h.call<peek>(open, [](door&, const peek&) { return std::string("inside"); });
    h.call<wait_open>(locked, [](door& d, const wait_open&, otpp::call_from<bool>& from) {
      d.waiting_.push_back(from.take());
    });
    h.call<wait_open>(open, [](door&, const wait_open&) { return true; });
    // In any state: a stale relock reaching a locked door would show here.
    h.timeout<relock>([](door& d, const relock&) {
      d.rec_->add("relock");
      return next_state(locked);
    });
    h.cast<refresh>(open, [](door&, const refresh&) { return repeat_state(); });
    h.cast<arm_alarm>([](door&, const arm_alarm& a) {
      if (a.seconds == 0) return keep_state().cancel_timeout("alarm");
      return keep_state().timeout("alarm", std::chrono::seconds(a.seconds), alarm{});
    });
    h.timeout<alarm>([](door& d, const alarm&) { d.rec_->add("alarm:" + name_of(d.state())); });
    h.cast<break_door>(
        [](door&, const break_door& b) { return keep_state().stop(otpp::exit_reason(b.why)); });
    h.cast<explode>([](door&, const explode&) -> transition { throw std::runtime_error("boom"); });
  }

  transition on_enter(door_state old, door_state now) {
    rec_->add("enter:" + name_of(old) + "->" + name_of(now));
    if (now == door_state::open) {
      for (auto& w : waiting_) w(true);
      waiting_.clear();
      return keep_state().state_timeout(open_for_, relock{});
    }
    entered_.clear();
    return keep_state();
  }

  void terminate(const otpp::exit_reason& r) { rec_->add("terminate:" + r.text()); }

 private:
  static constexpr std::string_view code = "42";

  transition on_button(const button& b) {
    entered_ += std::to_string(b.digit);
    if (entered_ == code) return next_state(door_state::open);
    return keep_state().event_timeout(3s, clear_code{});
  }

  std::shared_ptr<recorder> rec_;
  std::chrono::milliseconds open_for_;
  std::string entered_;
  std::vector<otpp::reply_to<bool>> waiting_;
};

// A machine without an enter call for its initial state.
enum class light { red, green };
struct go {
  static constexpr std::string_view tag = "go";
  OTPP_NO_FIELDS()
};
class traffic_light : public otpp::gen_statem<traffic_light, light> {
 public:
  static constexpr bool enter_initial_state = false;
  explicit traffic_light(std::shared_ptr<recorder> rec)
      : gen_statem(light::red), rec_(std::move(rec)) {}
  static void define_handlers(handler_table& h) {
    h.cast<go>(light::red, [](traffic_light&, const go&) { return next_state(light::green); });
    h.cast<go>(light::green, [](traffic_light&, const go&) { return next_state(light::red); });
  }
  void on_enter(light old, light now) {
    rec_->add(std::string(old == light::red ? "red" : "green") + "->" +
              (now == light::red ? "red" : "green"));
  }

 private:
  std::shared_ptr<recorder> rec_;
};

// Starts a call whose reply lands in the returned slot (after node.poll()).
template <class M>
auto ask(otpp::node& n, const otpp::pid& p, M msg) {
  using R = typename M::reply;
  auto slot = std::make_shared<std::optional<otpp::result<R>>>();
  otpp::call(n, p, std::move(msg), 60s, [slot](otpp::result<R> r) { *slot = std::move(r); });
  return slot;
}

struct gen_statem_fixture : ::testing::Test {
  std::shared_ptr<otpp::manual_clock> clock = std::make_shared<otpp::manual_clock>();
  otpp::node node{{.name = "statem", .clock = clock, .manual = true}};
  std::shared_ptr<recorder> rec = std::make_shared<recorder>();
  std::shared_ptr<recorder> watcher = std::make_shared<recorder>();
  otpp::pid door_pid;

  void SetUp() override {
    node.start();
    auto p = node.spawn<door>(rec);
    ASSERT_TRUE(p);
    door_pid = *p;
    node.poll();
  }

  template <class M>
  auto ask_now(M msg) {
    auto slot = ask(node, door_pid, std::move(msg));
    node.poll();
    EXPECT_TRUE(slot->has_value()) << "call not answered";
    return slot->has_value() ? std::move(**slot) : otpp::result<typename M::reply>(errc::timeout);
  }
  std::string state() {
    auto r = ask_now(get_state{});
    return r ? *r : "error:" + r.error().message();
  }
  template <class M>
  void cast_now(M msg) {
    ASSERT_TRUE(otpp::cast(node, door_pid, std::move(msg)));
    node.poll();
  }
  void advance(std::chrono::milliseconds d) {
    clock->advance(d);
    node.poll();
  }
  // An observer process monitoring the door; its down lands in `watcher`.
  void watch_door() {
    auto o = node.spawn<observer>(watcher, false);
    ASSERT_TRUE(o);
    ASSERT_TRUE(otpp::send(node, *o, watch{door_pid, false}));
    node.poll();
  }
  std::vector<std::string> events_after_start() {
    auto e = rec->events();
    if (!e.empty() && e.front() == "enter:locked->locked") e.erase(e.begin());
    return e;
  }
};

TEST_F(gen_statem_fixture, CallsAreAnsweredPerState) {
  EXPECT_EQ(state(), "locked");
  auto wrong = ask_now(unlock{"7"});
  ASSERT_TRUE(wrong);
  EXPECT_FALSE(*wrong);
  EXPECT_EQ(state(), "locked");
  auto right = ask_now(unlock{"42"});
  ASSERT_TRUE(right);
  EXPECT_TRUE(*right);
  EXPECT_EQ(state(), "open");
  auto again = ask_now(unlock{"anything"});  // the open state's handler
  ASSERT_TRUE(again);
  EXPECT_TRUE(*again);
  auto locked = ask_now(lock_door{});
  ASSERT_TRUE(locked);
  EXPECT_TRUE(*locked);
  EXPECT_EQ(state(), "locked");
}

TEST_F(gen_statem_fixture, CallWithoutHandlerInTheStateAnswersBadMessage) {
  auto r = ask_now(lock_door{});  // lock has a handler only when open
  EXPECT_EQ(r.error(), errc::bad_message);
  EXPECT_TRUE(node.alive(door_pid));
  EXPECT_EQ(state(), "locked");
}

TEST_F(gen_statem_fixture, CastsTransitionAndStateEnterCallsRun) {
  EXPECT_EQ(rec->events(), std::vector<std::string>{"enter:locked->locked"});  // initial state
  cast_now(button{4});
  EXPECT_EQ(state(), "locked");
  cast_now(button{2});
  EXPECT_EQ(state(), "open");
  ASSERT_TRUE(ask_now(lock_door{}));
  EXPECT_EQ(events_after_start(),
            (std::vector<std::string>{"enter:locked->open", "enter:open->locked"}));
}

TEST_F(gen_statem_fixture, InitialEnterCallCanBeTurnedOff) {
  auto p = node.spawn<traffic_light>(rec);
  ASSERT_TRUE(p);
  node.poll();
  ASSERT_TRUE(otpp::cast(node, *p, go{}));
  ASSERT_TRUE(otpp::cast(node, *p, go{}));
  node.poll();
  EXPECT_EQ(rec->events(),
            (std::vector<std::string>{"enter:locked->locked", "red->green", "green->red"}));
}

TEST_F(gen_statem_fixture, StateTimeoutFires) {
  ASSERT_TRUE(ask_now(unlock{"42"}));
  advance(4999ms);
  EXPECT_EQ(state(), "open");
  EXPECT_EQ(rec->count("relock"), 0u);
  advance(1ms);
  EXPECT_EQ(rec->count("relock"), 1u);
  EXPECT_EQ(state(), "locked");
  EXPECT_EQ(events_after_start(),
            (std::vector<std::string>{"enter:locked->open", "relock", "enter:open->locked"}));
}

TEST_F(gen_statem_fixture, StateTimeoutIsCancelledByAStateChange) {
  ASSERT_TRUE(ask_now(unlock{"42"}));  // relock due at 5 s
  advance(2s);
  ASSERT_TRUE(ask_now(lock_door{}));
  advance(1s);
  ASSERT_TRUE(ask_now(unlock{"42"}));  // relock due at 3 + 5 = 8 s
  advance(4s);                         // 7 s: the first one would have fired at 5 s
  EXPECT_EQ(rec->count("relock"), 0u);
  EXPECT_EQ(state(), "open");
  advance(1s);
  EXPECT_EQ(rec->count("relock"), 1u);
  EXPECT_EQ(state(), "locked");
}

TEST_F(gen_statem_fixture, CancelledTimeoutAlreadyQueuedIsNeverDelivered) {
  ASSERT_TRUE(ask_now(unlock{"42"}));
  // The lock call is queued, then the state timeout fires behind it before the door runs.
  auto locked = ask(node, door_pid, lock_door{});
  clock->advance(5s);
  node.poll();
  ASSERT_TRUE(locked->has_value());
  EXPECT_TRUE(**locked);
  EXPECT_EQ(rec->count("relock"), 0u);
  EXPECT_EQ(state(), "locked");
}

TEST_F(gen_statem_fixture, RepeatStateRunsTheEnterCallAgainAndRestartsTheStateTimeout) {
  ASSERT_TRUE(ask_now(unlock{"42"}));
  advance(3s);
  cast_now(refresh{});  // relock now due at 3 + 5 = 8 s
  EXPECT_EQ(events_after_start(),
            (std::vector<std::string>{"enter:locked->open", "enter:open->open"}));
  advance(4s);
  EXPECT_EQ(rec->count("relock"), 0u);
  advance(1s);
  EXPECT_EQ(rec->count("relock"), 1u);
}

TEST_F(gen_statem_fixture, EventTimeoutFiresAfterSilence) {
  cast_now(button{1});
  advance(2999ms);
  EXPECT_EQ(rec->count("cleared:1"), 0u);
  cast_now(button{9});  // restarts it
  advance(2999ms);
  EXPECT_EQ(rec->count("cleared:19"), 0u);
  advance(1ms);
  EXPECT_EQ(rec->count("cleared:19"), 1u);
  cast_now(button{4});
  cast_now(button{2});
  EXPECT_EQ(state(), "open");  // the partial code was cleared
}

TEST_F(gen_statem_fixture, EventTimeoutIsCancelledByAnyEvent) {
  cast_now(button{1});
  advance(2s);
  EXPECT_EQ(state(), "locked");  // a call is an event too
  advance(10s);
  for (const auto& e : rec->events()) EXPECT_EQ(e.rfind("cleared", 0), std::string::npos) << e;
}

TEST_F(gen_statem_fixture, PostponedEventsAreRetriedInOrderAfterAStateChange) {
  ASSERT_TRUE(otpp::cast(node, door_pid, parcel{"a"}));
  auto peeked = ask(node, door_pid, peek{});
  ASSERT_TRUE(otpp::cast(node, door_pid, parcel{"b"}));
  node.poll();
  EXPECT_FALSE(peeked->has_value());
  EXPECT_EQ(events_after_start(), std::vector<std::string>{});
  // The unlock and a newer parcel are queued together: the postponed ones go first.
  auto opened = ask(node, door_pid, unlock{"42"});
  ASSERT_TRUE(otpp::cast(node, door_pid, parcel{"c"}));
  node.poll();
  ASSERT_TRUE(opened->has_value());
  ASSERT_TRUE(peeked->has_value());
  ASSERT_TRUE(**peeked);
  EXPECT_EQ(***peeked, "inside");
  EXPECT_EQ(events_after_start(),
            (std::vector<std::string>{"enter:locked->open", "parcel:a", "parcel:b", "parcel:c"}));
}

TEST_F(gen_statem_fixture, PostponedEventsWaitWhileTheStateStaysTheSame) {
  cast_now(parcel{"a"});
  auto wrong = ask_now(unlock{"0"});  // keep_state: no state change, nothing retried
  ASSERT_TRUE(wrong);
  EXPECT_EQ(rec->count("parcel:a"), 0u);
  cast_now(button{4});
  cast_now(button{2});
  EXPECT_EQ(rec->count("parcel:a"), 1u);
}

TEST_F(gen_statem_fixture, CallAnsweredLaterThroughReplyTo) {
  auto first = ask(node, door_pid, wait_open{});
  auto second = ask(node, door_pid, wait_open{});
  node.poll();
  EXPECT_FALSE(first->has_value());
  EXPECT_FALSE(second->has_value());
  ASSERT_TRUE(ask_now(unlock{"42"}));
  ASSERT_TRUE(first->has_value() && second->has_value());
  EXPECT_TRUE(**first && ***first);
  EXPECT_TRUE(**second && ***second);
}

TEST_F(gen_statem_fixture, StopActionEndsTheMachineWithItsReason) {
  watch_door();
  auto held = ask(node, door_pid, wait_open{});  // taken: answered exit
  auto postponed = ask(node, door_pid, peek{});  // postponed: answered exit
  cast_now(break_door{"worn out"});
  EXPECT_FALSE(node.alive(door_pid));
  EXPECT_EQ(watcher->count("down:worn out"), 1u);
  EXPECT_EQ(rec->count("terminate:worn out"), 1u);
  ASSERT_TRUE(held->has_value() && postponed->has_value());
  EXPECT_EQ((*held)->error(), errc::exit);
  EXPECT_EQ((*held)->reason(), "worn out");
  EXPECT_EQ((*postponed)->error(), errc::exit);
  EXPECT_EQ((*postponed)->reason(), "worn out");
}

TEST_F(gen_statem_fixture, ThrowingHandlerEndsTheProcess) {
  watch_door();
  cast_now(explode{});
  EXPECT_FALSE(node.alive(door_pid));
  EXPECT_EQ(watcher->count("down:boom"), 1u);
  EXPECT_EQ(rec->count("terminate:boom"), 1u);
}

TEST_F(gen_statem_fixture, NamedTimeoutSurvivesStateChangesAndCanBeCancelled) {
  cast_now(arm_alarm{10});
  advance(2s);
  ASSERT_TRUE(ask_now(unlock{"42"}));
  advance(2s);
  ASSERT_TRUE(ask_now(lock_door{}));
  advance(5999ms);
  EXPECT_EQ(rec->count("alarm:locked"), 0u);
  advance(1ms);
  EXPECT_EQ(rec->count("alarm:locked"), 1u);

  cast_now(arm_alarm{10});
  advance(5s);
  cast_now(arm_alarm{0});
  advance(10s);
  EXPECT_EQ(rec->count("alarm:locked"), 1u);
}

TEST_F(gen_statem_fixture, TimerMessagesCannotBeForged) {
  // A plain message with a timeout's tag is an info, not a timeout: no handler takes it.
  ASSERT_TRUE(ask_now(unlock{"42"}));
  ASSERT_TRUE(otpp::send(node, door_pid, relock{}));
  node.poll();
  EXPECT_EQ(rec->count("relock"), 0u);
  EXPECT_EQ(state(), "open");
}

TEST_F(gen_statem_fixture, DynamicMessagesReachStateHandlersAndCanBePostponed) {
  auto dynamic_parcel = [](const std::string& label) {
    msgpack::sbuffer b;
    msgpack::packer<msgpack::sbuffer> pk(b);
    pk.pack_map(2);
    pk.pack("type");
    pk.pack("parcel");
    pk.pack("label");
    pk.pack(label);
    return msgpack::unpack(b.data(), b.size());
  };
  ASSERT_TRUE(otpp::cast_dynamic(node, door_pid, dynamic_parcel("x")));
  node.poll();
  EXPECT_EQ(rec->count("parcel:x"), 0u);  // postponed while locked
  ASSERT_TRUE(ask_now(unlock{"42"}));
  EXPECT_EQ(rec->count("parcel:x"), 1u);
  ASSERT_TRUE(otpp::cast_dynamic(node, door_pid, dynamic_parcel("y")));
  node.poll();
  EXPECT_EQ(rec->count("parcel:y"), 1u);
}

TEST_F(gen_statem_fixture, InspectReadsTheStateWithoutCancellingTimeouts) {
  cast_now(button{1});  // event timeout due at 3 s
  auto seen = std::make_shared<std::optional<otpp::result<std::string>>>();
  otpp::inspect<door>(
      node, door_pid, [](const door& d) { return name_of(d.state()); },
      [seen](otpp::result<std::string> r) { *seen = std::move(r); });
  advance(2s);
  ASSERT_TRUE(seen->has_value());
  ASSERT_TRUE(**seen);
  EXPECT_EQ(***seen, "locked");
  advance(1s);
  EXPECT_EQ(rec->count("cleared:1"), 1u);
}

// The same machine on a threaded node and the steady clock (bounded waits, no fixed sleeps).
TEST(gen_statem_threaded, DoorOpensAndRelocksOnARealClock) {
  otpp::node n({.name = "statem_threads", .threads = 2});
  n.start();
  auto rec = std::make_shared<recorder>();
  auto p = n.spawn<door>(rec, 20ms);
  ASSERT_TRUE(p);
  auto waiter = otpp::call(n, *p, wait_open{}, 20s, asio::use_future);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(otpp::cast(n, *p, parcel{std::to_string(i)}));
  auto opened = call_sync(n, *p, unlock{"42"});
  ASSERT_TRUE(opened);
  EXPECT_TRUE(*opened);
  auto waited = get(waiter);
  ASSERT_TRUE(waited);
  EXPECT_TRUE(*waited);
  ASSERT_TRUE(rec->wait_for_event("enter:open->locked"));
  EXPECT_EQ(*call_sync(n, *p, get_state{}), "locked");
  auto e = rec->events();
  auto at = [&](const std::string& ev) { return std::find(e.begin(), e.end(), ev) - e.begin(); };
  EXPECT_LT(at("enter:locked->open"), at("parcel:0"));
  EXPECT_LT(at("parcel:0"), at("parcel:1"));
  EXPECT_LT(at("parcel:1"), at("parcel:2"));
  EXPECT_LT(at("parcel:2"), at("relock"));
}

}  // namespace
}  // namespace otpp_test
