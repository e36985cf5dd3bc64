#include <atomic>
#include <thread>

#include <asio/use_awaitable.hpp>

#include "test_support.hpp"

using namespace otpp_test;

namespace {

class RuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override { node.start(); }
  otpp::node node{{.name = "test", .threads = 2}};
};

TEST_F(RuntimeTest, CallReturnsReply) {
  auto p = node.spawn<counter>(10);
  ASSERT_TRUE(p);
  auto r = call_sync(node, *p, increment{5});
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(*r, 15);
  EXPECT_EQ(*call_sync(node, *p, increment{1}), 16);
}

TEST_F(RuntimeTest, CastsAreHandledInOrderBeforeLaterCall) {
  auto p = *node.spawn<counter>();
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(otpp::cast(node, p, increment{1}));
  ASSERT_TRUE(otpp::cast(node, p, reset{7}));
  EXPECT_EQ(*call_sync(node, p, get_count{}), 7);
}

TEST_F(RuntimeTest, CallbackToken) {
  auto p = *node.spawn<counter>(1);
  std::promise<otpp::result<int>> done;
  otpp::call(node, p, increment{2}, [&](otpp::result<int> r) { done.set_value(std::move(r)); });
  auto f = done.get_future();
  EXPECT_EQ(*get(f), 3);
}

TEST_F(RuntimeTest, CallToUnknownPidIsNoproc) {
  auto p = *node.spawn<counter>();
  node.stop_process(p);
  otpp::pid ghost(node.atom(), node.creation(), 999999);
  auto r = call_sync(node, ghost, increment{1});
  EXPECT_EQ(r.error(), otpp::errc::noproc);
}

TEST_F(RuntimeTest, HandlerExceptionEndsProcessWithReasonAndNodeLives) {
  auto p = *node.spawn<counter>();
  auto r = call_sync(node, p, crash{"kaboom"});
  EXPECT_EQ(r.error(), otpp::errc::exit);
  EXPECT_EQ(r.reason(), "kaboom");
  EXPECT_EQ(call_sync(node, p, get_count{}).error(), otpp::errc::noproc);
  auto q = *node.spawn<counter>(3);
  EXPECT_EQ(*call_sync(node, q, get_count{}), 3);
}

}  // namespace

namespace {

// ---- coroutines, deferred replies, timeouts

struct hold {  // the server keeps the reply handle until `release`
  static constexpr std::string_view tag = "hold";
  using reply = int;
  OTPP_NO_FIELDS()
};
struct let_go {
  static constexpr std::string_view tag = "let_go";
  int value = 0;
  MSGPACK_DEFINE_MAP(value)
};
struct note {
  static constexpr std::string_view tag = "note";
  std::string text;
  MSGPACK_DEFINE_MAP(text)
};

class holder : public otpp::gen_server<holder> {
 public:
  explicit holder(std::shared_ptr<recorder> r) : rec_(std::move(r)) {}
  static void define_handlers(otpp::handlers<holder>& h) {
    h.call<hold>([](holder& self, hold, otpp::reply_to<int> reply) {
      self.held_.push_back(std::move(reply));
      self.rec_->add("held");
    });
    h.cast<let_go>([](holder& self, let_go r) {
      for (auto& h : self.held_) self.rec_->add(h(r.value) ? "replied" : "late");
      self.held_.clear();
    });
  }

 private:
  std::shared_ptr<recorder> rec_;
  std::vector<otpp::reply_to<int>> held_;
};

struct relay {  // a coroutine call handler that calls another process
  static constexpr std::string_view tag = "relay";
  using reply = int;
  otpp::pid to;
  MSGPACK_DEFINE_MAP(to)
};

class relayer : public otpp::gen_server<relayer> {
 public:
  explicit relayer(std::shared_ptr<recorder> r) : rec_(std::move(r)) {}
  static void define_handlers(otpp::handlers<relayer>& h) {
    h.call<relay>([](relayer& self, relay m) -> asio::awaitable<int> {
      self.rec_->add("relay:start");
      auto r = co_await otpp::call(self.this_node(), m.to, hold{}, otpp::default_call_timeout,
                                   asio::use_awaitable);
      self.rec_->add("relay:end");
      co_return r ? *r * 2 : -1;
    });
    h.cast<note>([](relayer& self, note n) { self.rec_->add(n.text); });
  }

 private:
  std::shared_ptr<recorder> rec_;
};

TEST_F(RuntimeTest, CoroutineHandlerHoldsMailboxUntilDone) {
  auto rec = std::make_shared<recorder>();
  auto h = *node.spawn<holder>(rec);
  auto r = *node.spawn<relayer>(rec);
  auto f = otpp::call(node, r, relay{h}, asio::use_future);
  ASSERT_TRUE(rec->wait_for_event("held"));
  ASSERT_TRUE(otpp::cast(node, r, note{"cast-while-suspended"}));
  ASSERT_TRUE(otpp::cast(node, h, let_go{21}));
  auto result = get(f);
  ASSERT_TRUE(result) << result.fail().message();
  EXPECT_EQ(*result, 42);
  ASSERT_TRUE(rec->wait_for_event("cast-while-suspended"));
  auto ev = rec->events();
  auto pos = [&](const std::string& s) { return std::find(ev.begin(), ev.end(), s) - ev.begin(); };
  EXPECT_LT(pos("relay:end"), pos("cast-while-suspended"));
}

TEST_F(RuntimeTest, TimeoutThenLateReplyIsDropped) {
  auto rec = std::make_shared<recorder>();
  auto h = *node.spawn<holder>(rec);
  auto r = call_sync(node, h, hold{}, std::chrono::milliseconds(20));
  EXPECT_EQ(r.error(), otpp::errc::timeout);
  ASSERT_TRUE(otpp::cast(node, h, let_go{1}));
  ASSERT_TRUE(rec->wait_for_event("late"));
  EXPECT_EQ(rec->count("replied"), 0u);
}

TEST_F(RuntimeTest, DeferredReplyArrives) {
  auto rec = std::make_shared<recorder>();
  auto h = *node.spawn<holder>(rec);
  auto f = otpp::call(node, h, hold{}, asio::use_future);
  ASSERT_TRUE(rec->wait_for_event("held"));
  ASSERT_TRUE(otpp::cast(node, h, let_go{9}));
  EXPECT_EQ(*get(f), 9);
}

TEST_F(RuntimeTest, CalleeDiesMidCallAnswersExitWithReason) {
  auto rec = std::make_shared<recorder>();
  auto h = *node.spawn<holder>(rec);
  auto f = otpp::call(node, h, hold{}, asio::use_future);
  ASSERT_TRUE(rec->wait_for_event("held"));
  node.exit(h, otpp::exit_reason::kill());
  auto r = get(f);
  EXPECT_EQ(r.error(), otpp::errc::exit);
  EXPECT_EQ(r.reason(), "killed");
}

TEST_F(RuntimeTest, SuspendedCoroutineIsDroppedWhenProcessStops) {
  auto rec = std::make_shared<recorder>();
  auto h = *node.spawn<holder>(rec);
  auto r = *node.spawn<relayer>(rec);
  auto f = otpp::call(node, r, relay{h}, asio::use_future);
  ASSERT_TRUE(rec->wait_for_event("held"));
  node.stop_process(r, otpp::exit_reason("stopped-while-suspended"));
  auto result = get(f);
  EXPECT_EQ(result.error(), otpp::errc::exit);
  EXPECT_EQ(result.reason(), "stopped-while-suspended");
  ASSERT_TRUE(eventually([&] { return !node.alive(r); }));
  // The held call's caller (the relayer) is gone: replying reports it was already resolved
  // or goes nowhere, and the coroutine never resumed.
  ASSERT_TRUE(otpp::cast(node, h, let_go{1}));
  ASSERT_TRUE(rec->wait([](const auto& e) {
    return std::find(e.begin(), e.end(), "late") != e.end() ||
           std::find(e.begin(), e.end(), "replied") != e.end();
  }));
  EXPECT_EQ(rec->count("relay:end"), 0u);
}

// ---- queued calls, bad messages, init failures, bounded mailbox

struct block {
  static constexpr std::string_view tag = "block";
  using reply = int;
  OTPP_NO_FIELDS()
};

class blocker : public otpp::gen_server<blocker> {
 public:
  blocker(std::shared_ptr<gate> g, std::shared_ptr<recorder> r)
      : gate_(std::move(g)), rec_(std::move(r)) {}
  static void define_handlers(otpp::handlers<blocker>& h) {
    h.call<block>([](blocker& self, block) {
      self.rec_->add("blocked");
      self.gate_->pass();
      return 1;
    });
    h.cast<note>([](blocker& self, note n) { self.rec_->add(n.text); });
  }
  void terminate(const otpp::exit_reason& r) { rec_->add("terminate:" + r.text()); }

 private:
  std::shared_ptr<gate> gate_;
  std::shared_ptr<recorder> rec_;
};

TEST_F(RuntimeTest, QueuedCallsAnswerNoprocWhenProcessExits) {
  auto g = std::make_shared<gate>();
  auto rec = std::make_shared<recorder>();
  auto b = *node.spawn<blocker>(g, rec);
  auto first = otpp::call(node, b, block{}, asio::use_future);
  ASSERT_TRUE(rec->wait_for_event("blocked"));
  auto q1 = otpp::call(node, b, increment{1}, asio::use_future);
  auto q2 = otpp::call(node, b, block{}, otpp::infinity, asio::use_future);
  node.stop_process(b, otpp::exit_reason::shutdown());  // urgent: acts after the current handler
  g->open();
  EXPECT_EQ(*get(first), 1);
  EXPECT_EQ(get(q1).error(), otpp::errc::noproc);
  EXPECT_EQ(get(q2).error(), otpp::errc::noproc);
  EXPECT_TRUE(rec->wait_for_event("terminate:shutdown"));
}

TEST_F(RuntimeTest, CallWithoutHandlerIsBadMessage) {
  auto g = std::make_shared<gate>();
  g->open();
  auto b = *node.spawn<blocker>(g, std::make_shared<recorder>());
  auto r = call_sync(node, b, get_count{});
  EXPECT_EQ(r.error(), otpp::errc::bad_message);
  EXPECT_EQ(*call_sync(node, b, block{}), 1);  // still alive
}

msgpack::object_handle make_map(std::function<void(msgpack::packer<msgpack::sbuffer>&)> fill) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  fill(pk);
  return msgpack::unpack(buf.data(), buf.size());
}

TEST_F(RuntimeTest, DynamicMessagesReachTypedHandlers) {
  auto p = *node.spawn<counter>(0);
  auto cast_map = make_map([](auto& pk) {
    pk.pack_map(2);
    pk.pack("type");
    pk.pack("increment");
    pk.pack("by");
    pk.pack(5);
  });
  ASSERT_TRUE(otpp::cast_dynamic(node, p, std::move(cast_map)));
  std::promise<otpp::result<msgpack::object_handle>> done;
  auto call_map = make_map([](auto& pk) {
    pk.pack_map(2);
    pk.pack("type");
    pk.pack("increment");
    pk.pack("by");
    pk.pack(1);
  });
  otpp::call_dynamic(node, p, std::move(call_map), otpp::default_call_timeout,
                     [&](otpp::result<msgpack::object_handle> r) { done.set_value(std::move(r)); });
  auto f = done.get_future();
  auto r = get(f);
  ASSERT_TRUE(r) << r.fail().message();
  EXPECT_EQ(r->get().as<int>(), 6);
}

TEST_F(RuntimeTest, DynamicMessageWithWrongFieldTypeIsBadMessage) {
  auto p = *node.spawn<counter>(0);
  auto bad = make_map([](auto& pk) {
    pk.pack_map(2);
    pk.pack("type");
    pk.pack("increment");
    pk.pack("by");
    pk.pack("not a number");
  });
  std::promise<otpp::result<msgpack::object_handle>> done;
  otpp::call_dynamic(node, p, std::move(bad), otpp::default_call_timeout,
                     [&](otpp::result<msgpack::object_handle> r) { done.set_value(std::move(r)); });
  auto f = done.get_future();
  EXPECT_EQ(get(f).error(), otpp::errc::bad_message);
  auto untyped = make_map([](auto& pk) {
    pk.pack_map(1);
    pk.pack("by");
    pk.pack(1);
  });
  EXPECT_EQ(otpp::cast_dynamic(node, p, std::move(untyped)).error(), otpp::errc::bad_message);
  EXPECT_EQ(*call_sync(node, p, get_count{}), 0);  // alive, untouched
}

class failing_init : public otpp::gen_server<failing_init> {
 public:
  explicit failing_init(bool throws) : throws_(throws) {}
  otpp::result<void> init() {
    if (throws_) throw std::runtime_error("init threw");
    return otpp::failure(otpp::errc::init_failed, "refused");
  }

 private:
  bool throws_;
};

TEST_F(RuntimeTest, InitFailureIsReturnedBySpawn) {
  auto a = node.spawn<failing_init>(false);
  EXPECT_EQ(a.error(), otpp::errc::init_failed);
  EXPECT_EQ(a.reason(), "refused");
  auto b = node.spawn<failing_init>(true);
  EXPECT_EQ(b.error(), otpp::errc::init_failed);
  EXPECT_EQ(b.reason(), "init threw");
  EXPECT_EQ(node.process_count(), 0u);
}

TEST_F(RuntimeTest, BoundedMailboxRefusesOverloadButNotSignals) {
  auto g = std::make_shared<gate>();
  auto rec = std::make_shared<recorder>();
  auto b = *node.spawn_opt<blocker>({.mailbox_bound = 3}, g, rec);
  auto first = otpp::call(node, b, block{}, asio::use_future);
  ASSERT_TRUE(rec->wait_for_event("blocked"));
  int accepted = 0, refused = 0;
  for (int i = 0; i < 10; ++i) {
    auto r = otpp::cast(node, b, note{"n"});
    if (r) {
      ++accepted;
    } else {
      EXPECT_EQ(r.error(), otpp::errc::mailbox_full);
      ++refused;
    }
  }
  EXPECT_EQ(accepted, 3);
  EXPECT_EQ(refused, 7);
  auto over = call_sync(node, b, block{}, std::chrono::milliseconds(5000));
  EXPECT_EQ(over.error(), otpp::errc::mailbox_full);
  node.stop_process(b, otpp::exit_reason::shutdown());  // a signal: never refused by the bound
  g->open();
  EXPECT_EQ(*get(first), 1);
  EXPECT_TRUE(rec->wait_for_event("terminate:shutdown"));
}

// ---- timers

struct tick {
  static constexpr std::string_view tag = "tick";
  int n = 0;
  MSGPACK_DEFINE_MAP(n)
};
class ticker : public otpp::gen_server<ticker> {
 public:
  explicit ticker(std::shared_ptr<recorder> r) : rec_(std::move(r)) {}
  static void define_handlers(otpp::handlers<ticker>& h) {
    h.info<tick>([](ticker& self, tick t) { self.rec_->add("tick" + std::to_string(t.n)); });
    h.info<otpp::idle_timeout>([](ticker& self, otpp::idle_timeout) { self.rec_->add("idle"); });
  }

 private:
  std::shared_ptr<recorder> rec_;
};

TEST_F(RuntimeTest, SendAfterDeliversAndCancelPrevents) {
  auto rec = std::make_shared<recorder>();
  auto t = *node.spawn<ticker>(rec);
  auto cancelled = node.send_after(std::chrono::milliseconds(30), t, tick{1});
  node.send_after(std::chrono::milliseconds(60), t, tick{2});
  EXPECT_TRUE(node.cancel_timer(cancelled));
  EXPECT_FALSE(node.cancel_timer(cancelled));
  ASSERT_TRUE(rec->wait_for_event("tick2"));
  EXPECT_EQ(rec->count("tick1"), 0u);
}

TEST_F(RuntimeTest, IdleTimeoutReachesHandleInfo) {
  auto rec = std::make_shared<recorder>();
  auto t = *node.spawn_opt<ticker>({.idle_timeout = std::chrono::milliseconds(20)}, rec);
  ASSERT_TRUE(rec->wait_for_event("idle"));
  node.stop_process(t);
}

// ---- volume and ordering

struct seq {
  static constexpr std::string_view tag = "seq";
  int n = 0;
  MSGPACK_DEFINE_MAP(n)
};
struct blast {
  static constexpr std::string_view tag = "blast";
  otpp::pid to;
  int count = 0;
  MSGPACK_DEFINE_MAP(to, count)
};
class sequencer : public otpp::gen_server<sequencer> {
 public:
  sequencer(std::shared_ptr<recorder> r, int expect) : rec_(std::move(r)), expect_(expect) {}
  static void define_handlers(otpp::handlers<sequencer>& h) {
    h.info<seq>([](sequencer& self, seq s) {
      if (s.n != self.next_) self.rec_->add("out-of-order");
      self.next_ = s.n + 1;
      if (self.next_ == self.expect_) self.rec_->add("complete");
    });
    h.cast<blast>([](sequencer& self, blast b) {
      for (int i = 0; i < b.count; ++i) (void)otpp::send(self.this_node(), b.to, seq{i});
    });
  }

 private:
  std::shared_ptr<recorder> rec_;
  int expect_;
  int next_ = 0;
};

TEST_F(RuntimeTest, MessagesBetweenTwoProcessesKeepOrder) {
  auto rec = std::make_shared<recorder>();
  constexpr int n = 20000;
  auto sink = *node.spawn<sequencer>(rec, n);
  auto source = *node.spawn<sequencer>(rec, -1);
  ASSERT_TRUE(otpp::cast(node, source, blast{sink, n}));
  ASSERT_TRUE(rec->wait_for_event("complete"));
  EXPECT_EQ(rec->count("out-of-order"), 0u);
}

TEST_F(RuntimeTest, TenThousandProcessesExchangeMessagesWithNoneLost) {
  auto rec = std::make_shared<recorder>();
  constexpr int procs = 10000, per = 10;
  std::vector<otpp::pid> sinks, sources;
  for (int i = 0; i < procs; ++i) sinks.push_back(*node.spawn<sequencer>(rec, per));
  for (int i = 0; i < procs; ++i) sources.push_back(*node.spawn<sequencer>(rec, -1));
  for (int i = 0; i < procs; ++i) ASSERT_TRUE(otpp::cast(node, sources[i], blast{sinks[i], per}));
  ASSERT_TRUE(
      rec->wait([](const auto& e) { return std::count(e.begin(), e.end(), "complete") == procs; },
                std::chrono::seconds(60)));
  EXPECT_EQ(rec->count("out-of-order"), 0u);
  EXPECT_EQ(node.process_count(), static_cast<std::size_t>(2 * procs));
}

TEST_F(RuntimeTest, CrashStormLeavesNodeHealthy) {
  std::vector<std::future<otpp::result<int>>> calls;
  std::vector<otpp::pid> pids;
  for (int i = 0; i < 1000; ++i) pids.push_back(*node.spawn<counter>(i));
  auto saved = otpp::get_log_level();
  otpp::set_log_level(otpp::log_level::off);  // 2000 expected error lines
  for (auto& p : pids) calls.push_back(otpp::call(node, p, crash{"storm"}, asio::use_future));
  for (auto& f : calls) EXPECT_EQ(get(f).error(), otpp::errc::exit);
  otpp::set_log_level(saved);
  ASSERT_TRUE(eventually([&] { return node.process_count() == 0; }));
  auto p = *node.spawn<counter>(5);
  EXPECT_EQ(*call_sync(node, p, increment{1}), 6);
}

}  // namespace

namespace {

TEST_F(RuntimeTest, KillOvertakesAQueuedStop) {
  auto g = std::make_shared<gate>();
  auto rec = std::make_shared<recorder>();
  auto b = *node.spawn<blocker>(g, rec);
  std::promise<std::string> reason;
  node.watch_process(b, [&](const otpp::exit_reason& r) { reason.set_value(r.text()); });
  auto busy = otpp::call(node, b, block{}, asio::use_future);
  ASSERT_TRUE(rec->wait_for_event("blocked"));
  node.stop_process(b, otpp::exit_reason::shutdown());
  node.exit(b, otpp::exit_reason::kill());
  g->open();
  auto f = reason.get_future();
  EXPECT_EQ(get(f), "killed");
  EXPECT_EQ(rec->count("terminate:shutdown"), 0u);
  EXPECT_EQ(*get(busy), 1);  // the running handler finished; nothing ran after it
}

}  // namespace

namespace {

struct quit {
  static constexpr std::string_view tag = "quit";
  std::string reason;
  MSGPACK_DEFINE_MAP(reason)
};
class quitter : public otpp::gen_server<quitter> {
 public:
  explicit quitter(std::shared_ptr<recorder> r) : rec_(std::move(r)) {}
  static void define_handlers(otpp::handlers<quitter>& h) {
    h.cast<quit>([](quitter& self, quit q) {
      self.stop(otpp::exit_reason(q.reason));
      self.rec_->add("handler-returned");
    });
    h.cast<note>([](quitter& self, note n) { self.rec_->add(n.text); });
  }
  void terminate(const otpp::exit_reason& r) { rec_->add("terminate:" + r.text()); }

 private:
  std::shared_ptr<recorder> rec_;
};

TEST_F(RuntimeTest, StopFromHandlerRunsTerminateWithReasonAndDropsTheRest) {
  for (std::string reason : {"normal", "shutdown", "custom"}) {
    auto rec = std::make_shared<recorder>();
    auto q = *node.spawn<quitter>(rec);
    std::promise<std::string> seen;
    node.watch_process(q, [&](const otpp::exit_reason& r) { seen.set_value(r.text()); });
    ASSERT_TRUE(otpp::cast(node, q, quit{reason}));
    (void)otpp::cast(node, q, note{"after-stop"});  // may be queued or refused: never handled
    auto f = seen.get_future();
    EXPECT_EQ(get(f), reason);
    EXPECT_EQ(rec->events(), (std::vector<std::string>{"handler-returned", "terminate:" + reason}));
    EXPECT_EQ(otpp::cast(node, q, note{"late"}).error(), otpp::errc::noproc);
  }
}

}  // namespace
