// The OTP pieces people reach for first: named and linked/monitored spawns, handle_continue,
// catch-all handlers, inspect (sys:get_state), synchronous stop, deferred replies on stop.
#include "otpp/registry.hpp"
#include "test_support.hpp"

namespace otpp_test {
namespace {

using otpp::errc;

std::atomic<int> named_inits{0};
class named_server : public otpp::gen_server<named_server> {
 public:
  otpp::result<void> init() {
    ++named_inits;
    // The name is ours already while init runs.
    auto me = otpp::whereis(this_node(), "the_one");
    if (!me || *me != self()) return otpp::failure(errc::init_failed, "name not held in init");
    return {};
  }
  static void define_handlers(otpp::handlers<named_server>& h) {
    h.call<get_count>([](named_server&, get_count) { return 1; });
  }
};

TEST(otp, NamedStartIsAtomicAndTheLoserNeverRunsInit) {
  otpp::node n({.name = "otp_a", .threads = 2});
  n.start();
  named_inits = 0;
  auto first = otpp::spawn_named<named_server>(n, "the_one", {});
  ASSERT_TRUE(first) << first.reason();
  auto second = otpp::spawn_named<named_server>(n, "the_one", {});
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error(), errc::already_registered);
  EXPECT_EQ(second.reason(), first->to_string());  // the holder
  EXPECT_EQ(named_inits.load(), 1);
  EXPECT_EQ(n.process_count(), 1u);
  EXPECT_EQ(call_sync(n, otpp::whereis(n, "the_one").value(), get_count{}).value(), 1);
}

class failing_init : public otpp::gen_server<failing_init> {
 public:
  otpp::result<void> init() { return otpp::failure(errc::init_failed, "no database"); }
};
struct spawn_children {
  static constexpr std::string_view tag = "spawn_children";
  OTPP_NO_FIELDS()
};
class parent : public otpp::gen_server<parent> {
 public:
  explicit parent(std::shared_ptr<recorder> r) : rec_(std::move(r)) {}
  otpp::result<void> init() {
    trap_exit(true);
    return {};
  }
  static void define_handlers(otpp::handlers<parent>& h) {
    h.cast<spawn_children>([](parent& self, spawn_children) {
      auto linked = self.spawn_link<counter>();
      self.rec_->add(linked ? "linked" : "link failed");
      if (linked) self.this_node().stop_process(*linked, otpp::exit_reason("bye"));
      auto monitored = self.spawn_monitor<failing_init>();
      self.rec_->add(monitored ? "monitored" : "spawn_monitor: " + monitored.error().message());
    });
    h.info<otpp::exit_message>(
        [](parent& self, otpp::exit_message m) { self.rec_->add("EXIT:" + m.reason.text()); });
    h.info<otpp::down>(
        [](parent& self, otpp::down d) { self.rec_->add("down:" + d.reason.text()); });
  }

 private:
  std::shared_ptr<recorder> rec_;
};

TEST(otp, SpawnLinkAndSpawnMonitorFromAHandler) {
  otpp::node n({.name = "otp_b", .threads = 2});
  n.start();
  auto rec = std::make_shared<recorder>();
  auto p = n.spawn<parent>(rec);
  ASSERT_TRUE(p);
  ASSERT_TRUE(otpp::cast(n, *p, spawn_children{}));
  EXPECT_TRUE(rec->wait_for_event("EXIT:bye"));
  // The monitor was in place before the failing init: its DOWN arrives.
  EXPECT_TRUE(rec->wait_for_event("down:no database"));
  EXPECT_EQ(rec->count("linked"), 1u);
}

struct early {
  static constexpr std::string_view tag = "early";
  OTPP_NO_FIELDS()
};
class continuer : public otpp::gen_server<continuer> {
 public:
  explicit continuer(std::shared_ptr<recorder> r) : rec_(std::move(r)) {}
  otpp::result<void> init() {
    (void)otpp::send(this_node(), self(), early{});  // queued during init
    rec_->add("init");
    return {};
  }
  void handle_continue() { rec_->add("continue"); }
  static void define_handlers(otpp::handlers<continuer>& h) {
    h.info<early>([](continuer& self, early) { self.rec_->add("early"); });
  }

 private:
  std::shared_ptr<recorder> rec_;
};
class coro_continuer : public otpp::gen_server<coro_continuer> {
 public:
  explicit coro_continuer(std::shared_ptr<recorder> r, otpp::pid peer)
      : rec_(std::move(r)), peer_(peer) {}
  asio::awaitable<void> handle_continue() {
    auto r = co_await otpp::call(this_node(), peer_, get_count{}, 20s, asio::use_awaitable);
    rec_->add("continued:" + std::to_string(r.value_or(-1)));
  }
  static void define_handlers(otpp::handlers<coro_continuer>& h) {
    h.info<early>([](coro_continuer& self, early) { self.rec_->add("early"); });
  }

 private:
  std::shared_ptr<recorder> rec_;
  otpp::pid peer_;
};

TEST(otp, HandleContinueRunsBeforeAnyOtherMessage) {
  otpp::node n({.name = "otp_c", .threads = 2});
  n.start();
  auto rec = std::make_shared<recorder>();
  ASSERT_TRUE(n.spawn<continuer>(rec));
  ASSERT_TRUE(rec->wait_count(3));
  EXPECT_EQ(rec->events(), (std::vector<std::string>{"init", "continue", "early"}));

  auto rec2 = std::make_shared<recorder>();
  auto peer = n.spawn<counter>(41);
  ASSERT_TRUE(peer);
  auto c = n.spawn<coro_continuer>(rec2, *peer);
  ASSERT_TRUE(c);
  ASSERT_TRUE(otpp::send(n, *c, early{}));
  ASSERT_TRUE(rec2->wait_count(2));
  EXPECT_EQ(rec2->events(), (std::vector<std::string>{"continued:41", "early"}));
}

class catch_all : public otpp::gen_server<catch_all> {
 public:
  explicit catch_all(std::shared_ptr<recorder> r) : rec_(std::move(r)) {}
  static void define_handlers(otpp::handlers<catch_all>& h) {
    h.unknown([](catch_all& self, const otpp::unknown_message& m) {
      self.rec_->add(std::string(m.is_cast ? "cast:" : "info:") + std::string(m.tag));
    });
  }

 private:
  std::shared_ptr<recorder> rec_;
};

TEST(otp, CatchAllSeesUnknownCastsAndInfosAndCallsStillAnswerBadMessage) {
  otpp::node n({.name = "otp_d", .threads = 2});
  n.start();
  auto rec = std::make_shared<recorder>();
  auto p = n.spawn<catch_all>(rec);
  ASSERT_TRUE(p);
  ASSERT_TRUE(otpp::cast(n, *p, reset{}));
  ASSERT_TRUE(otpp::send(n, *p, ping{}));
  EXPECT_EQ(call_sync(n, *p, get_count{}).error(), errc::bad_message);
  ASSERT_TRUE(rec->wait_count(2));
  EXPECT_EQ(rec->events(), (std::vector<std::string>{"cast:reset", "info:ping"}));
  EXPECT_TRUE(n.alive(*p));
}

TEST(otp, InspectReadsStateInTheProcessTurn) {
  otpp::node n({.name = "otp_e", .threads = 2});
  n.start();
  auto p = n.spawn<counter>(5);
  ASSERT_TRUE(p);
  ASSERT_TRUE(otpp::cast(n, *p, increment{2}));
  auto f = otpp::inspect<counter>(
      n, *p, [](const counter& c) { return c.on_increment_peek(); }, asio::use_future);
  EXPECT_EQ(get(f).value(), 7);
  auto wrong = otpp::inspect<catch_all>(
      n, *p, [](const catch_all&) { return 0; }, asio::use_future);
  EXPECT_EQ(get(wrong).error(), errc::invalid_argument);
}

struct stuck {
  static constexpr std::string_view tag = "stuck";
  OTPP_NO_FIELDS()
};
class slow_stopper : public otpp::gen_server<slow_stopper> {
 public:
  slow_stopper(std::shared_ptr<gate> g, std::shared_ptr<recorder> r)
      : gate_(std::move(g)), rec_(std::move(r)) {}
  static void define_handlers(otpp::handlers<slow_stopper>& h) {
    h.cast<stuck>([](slow_stopper& self, stuck) {
      self.rec_->add("stuck");
      self.gate_->pass();
    });
  }

 private:
  std::shared_ptr<gate> gate_;
  std::shared_ptr<recorder> rec_;
};

TEST(otp, SynchronousStop) {
  otpp::node n({.name = "otp_f", .threads = 2});
  n.start();
  auto rec = std::make_shared<recorder>();
  auto p = n.spawn<observer>(rec, false);
  ASSERT_TRUE(p);
  auto f = otpp::stop(n, *p, otpp::exit_reason("done"), 20s, asio::use_future);
  EXPECT_TRUE(get(f));
  EXPECT_FALSE(n.alive(*p));
  EXPECT_EQ(rec->events(), std::vector<std::string>{"terminate:done"});  // already ran

  auto again = otpp::stop(n, *p, otpp::exit_reason::normal(), 20s, asio::use_future);
  EXPECT_EQ(get(again).error(), errc::noproc);

  // A process stuck in a handler cannot stop before the timeout.
  auto g = std::make_shared<gate>();
  auto entered = std::make_shared<recorder>();
  auto s = n.spawn<slow_stopper>(g, entered);
  ASSERT_TRUE(s);
  ASSERT_TRUE(otpp::cast(n, *s, stuck{}));
  ASSERT_TRUE(entered->wait_for_event("stuck"));
  auto late = otpp::stop(n, *s, otpp::exit_reason::shutdown(), 50ms, asio::use_future);
  EXPECT_EQ(get(late).error(), errc::timeout);
  g->open();
  EXPECT_TRUE(eventually([&] { return !n.alive(*s); }));
}

struct hold_reply {
  static constexpr std::string_view tag = "hold_reply";
  using reply = int;
  OTPP_NO_FIELDS()
};
struct stop_with {
  static constexpr std::string_view tag = "stop_with";
  std::string why;
  MSGPACK_DEFINE_MAP(why)
};
class holder : public otpp::gen_server<holder> {
 public:
  static void define_handlers(otpp::handlers<holder>& h) {
    h.call<hold_reply>(
        [](holder& self, hold_reply, otpp::reply_to<int> r) { self.held_ = std::move(r); });
    h.cast<stop_with>([](holder& self, stop_with m) { self.stop(otpp::exit_reason(m.why)); });
  }

 private:
  otpp::reply_to<int> held_;
};

TEST(otp, StoppingWithAHeldReplyAnswersExitWithTheReason) {
  otpp::node n({.name = "otp_g", .threads = 2});
  n.start();
  auto p = n.spawn<holder>();
  ASSERT_TRUE(p);
  auto f = otpp::call(n, *p, hold_reply{}, 20s, asio::use_future);
  ASSERT_TRUE(otpp::cast(n, *p, stop_with{"maintenance"}));
  auto r = get(f);
  EXPECT_EQ(r.error(), errc::exit);
  EXPECT_EQ(r.reason(), "maintenance");
}

}  // namespace
}  // namespace otpp_test

namespace otpp_test {
namespace {

// ---- init on the process's own turn (proc_lib-style start)

class slow_init : public otpp::gen_server<slow_init> {
 public:
  slow_init(std::shared_ptr<gate> g, std::shared_ptr<recorder> r, bool fail)
      : gate_(std::move(g)), rec_(std::move(r)), fail_(fail) {}
  otpp::result<void> init() {
    gate_->pass();
    rec_->add("init");
    if (fail_) return otpp::failure(errc::init_failed, "no disk");
    return {};
  }
  static void define_handlers(otpp::handlers<slow_init>& h) {
    h.cast<reset>([](slow_init& self, reset) { self.rec_->add("reset"); });
  }

 private:
  std::shared_ptr<gate> gate_;
  std::shared_ptr<recorder> rec_;
  bool fail_;
};

TEST(otp, AsyncInitReturnsAtOnceAndReportsOnce) {
  otpp::node n({.name = "otp_h", .threads = 2});
  n.start();
  auto g = std::make_shared<gate>();
  auto rec = std::make_shared<recorder>();
  otpp::spawn_options o;
  o.async_init = true;
  o.after_init = [rec](const otpp::pid&, const otpp::result<void>& r) {
    rec->add(r ? "after_init:ok" : "after_init:" + r.fail().message());
  };
  auto p = n.spawn_opt<slow_init>(o, g, rec, false);  // returns while init waits on the gate
  ASSERT_TRUE(p);
  ASSERT_TRUE(otpp::cast(n, *p, reset{}));  // queued behind init
  EXPECT_TRUE(rec->events().empty());
  g->open();
  ASSERT_TRUE(rec->wait_count(3));
  EXPECT_EQ(rec->events(), (std::vector<std::string>{"init", "after_init:ok", "reset"}));
}

TEST(otp, AsyncInitFailureEndsTheProcessAndTellsTheSpawnerOnce) {
  otpp::node n({.name = "otp_i", .threads = 2});
  n.start();
  auto g = std::make_shared<gate>();
  g->open();
  auto rec = std::make_shared<recorder>();
  otpp::spawn_options o;
  o.async_init = true;
  o.after_init = [rec](const otpp::pid&, const otpp::result<void>& r) {
    rec->add(r ? "after_init:ok" : "after_init:" + r.reason());
  };
  auto p = n.spawn_opt<slow_init>(o, g, rec, true);
  ASSERT_TRUE(p);
  EXPECT_TRUE(rec->wait_for_event("after_init:no disk"));
  EXPECT_TRUE(eventually([&] { return !n.alive(*p); }));
  EXPECT_EQ(rec->count("after_init:no disk"), 1u);
}

TEST(otp, AsyncInitKilledBeforeItRanStillReports) {
  auto clock = std::make_shared<otpp::manual_clock>();
  otpp::node n({.name = "otp_j", .clock = clock, .manual = true});
  n.start();
  auto g = std::make_shared<gate>();
  g->open();
  auto rec = std::make_shared<recorder>();
  otpp::spawn_options o;
  o.async_init = true;
  o.after_init = [rec](const otpp::pid&, const otpp::result<void>& r) {
    rec->add(r ? "after_init:ok" : "after_init:failed");
  };
  auto p = n.spawn_opt<slow_init>(o, g, rec, false);
  ASSERT_TRUE(p);
  n.exit(*p, otpp::exit_reason::kill());  // before the node ran anything: overtakes init
  n.poll();
  EXPECT_EQ(rec->events(), std::vector<std::string>{"after_init:failed"});
  EXPECT_FALSE(n.alive(*p));
}

// ---- init held by a gate until an answer from elsewhere (a global name claimed first)

TEST(otp, GatedInitWaitsForItsReleaseAndTakesNoMessageBefore) {
  auto clock = std::make_shared<otpp::manual_clock>();
  otpp::node n({.name = "otp_k", .clock = clock, .manual = true});
  n.start();
  auto g = std::make_shared<gate>();
  g->open();
  auto rec = std::make_shared<recorder>();
  std::function<void(otpp::result<void>)> release;
  otpp::spawn_options o;
  o.async_init = true;
  o.init_gate = [&](const otpp::pid&, std::function<void(otpp::result<void>)> r) {
    release = std::move(r);
  };
  o.after_init = [rec](const otpp::pid&, const otpp::result<void>& r) {
    rec->add(r ? "after_init:ok" : "after_init:" + r.fail().message());
  };
  auto p = n.spawn_opt<slow_init>(o, g, rec, false);
  ASSERT_TRUE(p);
  ASSERT_TRUE(otpp::cast(n, *p, reset{}));
  n.poll();
  EXPECT_TRUE(rec->events().empty()) << "a message was handled before init";
  ASSERT_TRUE(release);
  std::thread([&] { release({}); }).join();  // any thread
  release({});                               // a second release is ignored
  n.poll();
  EXPECT_EQ(rec->events(), (std::vector<std::string>{"init", "after_init:ok", "reset"}));
  EXPECT_TRUE(n.alive(*p));
}

TEST(otp, GateRefusalEndsTheProcessWithoutInitAndReportsTheRefusal) {
  auto clock = std::make_shared<otpp::manual_clock>();
  otpp::node n({.name = "otp_l", .clock = clock, .manual = true});
  n.start();
  auto g = std::make_shared<gate>();
  g->open();
  auto rec = std::make_shared<recorder>();
  otpp::spawn_options o;
  o.async_init = true;
  o.init_gate = [](const otpp::pid&, std::function<void(otpp::result<void>)> r) {
    r(otpp::failure(errc::already_registered, "db"));  // at once, on the spawner's thread
  };
  o.after_init = [rec](const otpp::pid&, const otpp::result<void>& r) {
    rec->add(r ? "after_init:ok" : std::string("after_init:") + r.error().message());
  };
  auto p = n.spawn_opt<slow_init>(o, g, rec, false);
  ASSERT_TRUE(p);
  n.poll();
  ASSERT_EQ(rec->events().size(), 1u);
  EXPECT_EQ(rec->events()[0],
            "after_init:" + otpp::make_error_code(errc::already_registered).message());
  EXPECT_FALSE(n.alive(*p));
  // A gate that throws refuses the start the same way.
  otpp::spawn_options t = o;
  t.init_gate = [](const otpp::pid&, std::function<void(otpp::result<void>)>) {
    throw std::runtime_error("gate broke");
  };
  auto q = n.spawn_opt<slow_init>(t, g, rec, false);
  ASSERT_TRUE(q);
  n.poll();
  EXPECT_EQ(rec->events().size(), 2u);
  EXPECT_FALSE(n.alive(*q));
  EXPECT_EQ(rec->count("init"), 0u);
}

TEST(otp, GatedProcessCanBeKilledAndALateReleaseIsHarmless) {
  auto clock = std::make_shared<otpp::manual_clock>();
  otpp::node n({.name = "otp_m", .clock = clock, .manual = true});
  n.start();
  auto g = std::make_shared<gate>();
  g->open();
  auto rec = std::make_shared<recorder>();
  std::function<void(otpp::result<void>)> release;
  otpp::spawn_options o;
  o.async_init = true;
  o.init_gate = [&](const otpp::pid&, std::function<void(otpp::result<void>)> r) {
    release = std::move(r);
  };
  o.after_init = [rec](const otpp::pid&, const otpp::result<void>& r) {
    rec->add(r ? "after_init:ok" : "after_init:failed");
  };
  auto p = n.spawn_opt<slow_init>(o, g, rec, false);
  ASSERT_TRUE(p);
  n.poll();
  n.exit(*p, otpp::exit_reason::kill());
  n.poll();
  EXPECT_FALSE(n.alive(*p));
  release({});
  n.poll();
  EXPECT_EQ(rec->events(), std::vector<std::string>{"after_init:failed"});
}

}  // namespace
}  // namespace otpp_test
