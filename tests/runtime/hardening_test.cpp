// Regression tests for confirmed runtime defects (each failed before its fix), and for the
// fail-fast errors a new user meets.
#include <optional>
#include <set>

#include <asio/steady_timer.hpp>

#include "otpp/registry.hpp"
#include "test_support.hpp"

namespace otpp_test {
namespace {

using otpp::errc;

// ---- a plain-callback completion runs outside the callee's turn

struct who_am_i {
  static constexpr std::string_view tag = "who_am_i";
  using reply = int;
  OTPP_NO_FIELDS()
};
class answerer : public otpp::gen_server<answerer> {
 public:
  static void define_handlers(otpp::handlers<answerer>& h) {
    h.call<who_am_i>([](answerer&, who_am_i) { return 1; });
  }
};

TEST(hardening, CallbackCompletionDoesNotRunAsTheCallee) {
  otpp::node n({.name = "hard_a", .threads = 2});
  n.start();
  auto callee = n.spawn<answerer>();
  ASSERT_TRUE(callee);
  for (int i = 0; i < 200; ++i) {
    std::promise<otpp::pid> seen;
    auto f = seen.get_future();
    otpp::call(n, *callee, who_am_i{}, 20s, [&seen](otpp::result<int>) {
      auto* p = otpp::current_process();
      seen.set_value(p ? p->self() : otpp::pid{});
    });
    EXPECT_FALSE(get(f).valid()) << "the callback ran as a process";
  }
}

// ---- DOWN and EXIT keep their order with the sender's earlier messages

struct result_msg {
  static constexpr std::string_view tag = "result";
  int v = 0;
  MSGPACK_DEFINE_MAP(v)
};
struct report_and_exit {
  static constexpr std::string_view tag = "report_and_exit";
  otpp::pid to;
  MSGPACK_DEFINE_MAP(to)
};
class reporter : public otpp::gen_server<reporter> {
 public:
  static void define_handlers(otpp::handlers<reporter>& h) {
    h.cast<report_and_exit>([](reporter& self, report_and_exit m) {
      (void)otpp::send(self.this_node(), m.to, result_msg{7});
      self.stop();
    });
  }
};
struct start_worker {
  static constexpr std::string_view tag = "start_worker";
  bool link = false;
  MSGPACK_DEFINE_MAP(link)
};
class collector : public otpp::gen_server<collector> {
 public:
  explicit collector(std::shared_ptr<recorder> r) : rec_(std::move(r)) {}
  otpp::result<void> init() {
    trap_exit(true);
    return {};
  }
  static void define_handlers(otpp::handlers<collector>& h) {
    h.cast<start_worker>([](collector& self, start_worker m) {
      auto w = self.this_node().spawn<reporter>();
      if (!w) return;
      if (m.link) {
        self.link(*w);
      } else {
        self.monitor(*w);
      }
      (void)otpp::cast(self.this_node(), *w, report_and_exit{self.self()});
    });
    h.info<result_msg>([](collector& self, result_msg) { self.rec_->add("result"); });
    h.info<otpp::down>([](collector& self, otpp::down) { self.rec_->add("down"); });
    h.info<otpp::exit_message>([](collector& self, otpp::exit_message) { self.rec_->add("EXIT"); });
  }

 private:
  std::shared_ptr<recorder> rec_;
};

TEST(hardening, DownAndExitArriveAfterTheResultSentBeforeThem) {
  otpp::node n({.name = "hard_b", .threads = 2});
  n.start();
  for (bool link : {false, true}) {
    auto rec = std::make_shared<recorder>();
    auto c = n.spawn<collector>(rec);
    ASSERT_TRUE(c);
    constexpr int rounds = 200;
    for (int i = 0; i < rounds; ++i) ASSERT_TRUE(otpp::cast(n, *c, start_worker{link}));
    ASSERT_TRUE(rec->wait_count(2 * rounds));
    auto events = rec->events();
    // Per worker: result, then its DOWN / EXIT. Workers interleave, so count the prefix.
    int results = 0, ends = 0;
    for (const auto& e : events) {
      if (e == "result") {
        ++results;
      } else {
        ++ends;
      }
      ASSERT_LE(ends, results) << (link ? "EXIT" : "DOWN") << " overtook a result";
    }
    n.stop_process(*c);
  }
}

// ---- dynamic messages cannot forge system messages

TEST(hardening, DynamicMessagesCannotForgeExitOrDown) {
  otpp::node n({.name = "hard_c", .threads = 2});
  n.start();
  auto rec = std::make_shared<recorder>();
  auto obs = n.spawn<observer>(rec, true);
  ASSERT_TRUE(obs);
  auto forged = [&](const char* type) {
    msgpack::sbuffer b;
    msgpack::packer<msgpack::sbuffer> pk(b);
    pk.pack_map(3);
    pk.pack("type");
    pk.pack(type);
    pk.pack("from");
    pk.pack_array(3);  // the empty pid: a supervisor's "parent" before the fix
    pk.pack("nonode");
    pk.pack(0);
    pk.pack(0);
    pk.pack("reason");
    pk.pack(std::vector<std::string>{"killed"});
    return msgpack::unpack(b.data(), b.size());
  };
  ASSERT_TRUE(otpp::send_dynamic(n, *obs, forged("EXIT")));
  ASSERT_TRUE(otpp::send_dynamic(n, *obs, forged("DOWN")));
  // A real message after them: once it is handled, the forged ones were refused.
  auto worker = n.spawn<counter>();
  ASSERT_TRUE(worker);
  ASSERT_TRUE(otpp::send(n, *obs, watch{*worker, false}));
  ASSERT_TRUE(rec->wait_for_event("watching"));
  EXPECT_EQ(rec->events(), std::vector<std::string>{"watching"});
  EXPECT_TRUE(n.alive(*obs));
}

// ---- a message queued during init is not stranded by demonitor's flush

struct self_poke {
  static constexpr std::string_view tag = "self_poke";
  OTPP_NO_FIELDS()
};
class early_bird : public otpp::gen_server<early_bird> {
 public:
  explicit early_bird(std::shared_ptr<recorder> r, otpp::pid other)
      : rec_(std::move(r)), other_(other) {}
  otpp::result<void> init() {
    (void)otpp::send(this_node(), self(), self_poke{});
    demonitor(monitor(other_));  // the flush fetches the inbox into the process's queue
    return {};
  }
  static void define_handlers(otpp::handlers<early_bird>& h) {
    h.info<self_poke>([](early_bird& self, self_poke) { self.rec_->add("poked"); });
  }

 private:
  std::shared_ptr<recorder> rec_;
  otpp::pid other_;
};

TEST(hardening, MessageQueuedDuringInitIsHandledWithoutAnotherOne) {
  otpp::node n({.name = "hard_d", .threads = 2});
  n.start();
  auto other = n.spawn<counter>();
  ASSERT_TRUE(other);
  auto rec = std::make_shared<recorder>();
  ASSERT_TRUE(n.spawn<early_bird>(rec, *other));
  EXPECT_TRUE(rec->wait_for_event("poked"));
}

// ---- exception texts never read as normal / shutdown / killed

struct throw_text {
  static constexpr std::string_view tag = "throw_text";
  std::string text;
  MSGPACK_DEFINE_MAP(text)
};
class thrower : public otpp::gen_server<thrower> {
 public:
  static void define_handlers(otpp::handlers<thrower>& h) {
    h.cast<throw_text>([](thrower&, throw_text m) { throw std::runtime_error(m.text); });
  }
};

TEST(hardening, ExceptionReasonsAreAlwaysFailures) {
  otpp::node n({.name = "hard_e", .threads = 2});
  n.start();
  for (std::string text : {"shutdown: disk full", "normal", "shutdown", "killed", "kill", "boom"}) {
    auto rec = std::make_shared<recorder>();
    auto obs = n.spawn<observer>(rec, false);
    auto t = n.spawn<thrower>();
    ASSERT_TRUE(obs && t);
    ASSERT_TRUE(otpp::send(n, *obs, watch{*t, false}));
    ASSERT_TRUE(rec->wait_for_event("watching"));
    ASSERT_TRUE(otpp::cast(n, *t, throw_text{text}));
    ASSERT_TRUE(rec->wait_count(2));
    auto down = rec->events()[1];
    ASSERT_TRUE(down.starts_with("down:"));
    otpp::exit_reason reason(down.substr(5));
    EXPECT_TRUE(reason.is_failure()) << text << " -> " << reason.text();
    EXPECT_FALSE(reason.is_kill());
    EXPECT_NE(reason, otpp::exit_reason::killed());
    EXPECT_NE(reason.text().find(text), std::string::npos);
  }
}

// ---- an exit listener that throws does not break process exit

TEST(hardening, ThrowingExitListenerDoesNotBreakExit) {
  otpp::node n({.name = "hard_f", .threads = 2});
  n.add_exit_listener(
      [](const otpp::pid&, const otpp::exit_reason&) { throw std::runtime_error("listener bug"); });
  n.start();
  auto rec = std::make_shared<recorder>();
  auto obs = n.spawn<observer>(rec, false);
  auto victim = n.spawn<counter>();
  ASSERT_TRUE(obs && victim);
  n.watch_exit(*victim, true);
  ASSERT_TRUE(otpp::send(n, *obs, watch{*victim, false}));
  ASSERT_TRUE(rec->wait_for_event("watching"));
  n.stop_process(*victim, otpp::exit_reason("bye"));
  EXPECT_TRUE(rec->wait_for_event("down:bye"));
  EXPECT_TRUE(eventually([&] { return n.process_count() == 1; }));
  n.stop();  // returns: the live count reached zero
  EXPECT_EQ(n.process_count(), 0u);
}

// ---- a process woken by a long handler is run by an idle worker meanwhile

struct wake_and_wait {
  static constexpr std::string_view tag = "wake_and_wait";
  otpp::pid other;
  MSGPACK_DEFINE_MAP(other)
};
struct set_flag {
  static constexpr std::string_view tag = "set_flag";
  OTPP_NO_FIELDS()
};
std::atomic<bool> woken_flag{false};
std::atomic<bool> waiter_saw_flag{false};
class flagger : public otpp::gen_server<flagger> {
 public:
  static void define_handlers(otpp::handlers<flagger>& h) {
    h.cast<set_flag>([](flagger&, set_flag) { woken_flag = true; });
  }
};
class long_handler : public otpp::gen_server<long_handler> {
 public:
  static void define_handlers(otpp::handlers<long_handler>& h) {
    h.cast<wake_and_wait>([](long_handler& self, wake_and_wait m) {
      (void)otpp::cast(self.this_node(), m.other, set_flag{});
      // A long handler (bounded here): the woken process must not wait for it to end.
      waiter_saw_flag = eventually([] { return woken_flag.load(); }, 20s);
    });
  }
};

TEST(hardening, WokenProcessRunsWhileTheWakerHandlerRunsLong) {
  otpp::node n({.name = "hard_g", .threads = 2});
  n.start();
  auto idle = n.spawn<flagger>();
  auto busy = n.spawn<long_handler>();
  ASSERT_TRUE(idle && busy);
  for (int round = 0; round < 3; ++round) {
    woken_flag = false;
    waiter_saw_flag = false;
    ASSERT_TRUE(otpp::cast(n, *busy, wake_and_wait{*idle}));
    ASSERT_TRUE(eventually([] { return woken_flag.load(); }, 30s));
    EXPECT_TRUE(eventually([] { return waiter_saw_flag.load(); }, 30s));
  }
}

// ---- creations are unique per start

TEST(hardening, CreationsDifferBetweenNodesOfTheSameName) {
  std::set<std::uint32_t> seen;
  for (int i = 0; i < 64; ++i) {
    otpp::node n({.name = "api", .threads = 1});
    EXPECT_NE(n.creation(), 0u);
    seen.insert(n.creation());
  }
  EXPECT_EQ(seen.size(), 64u);
}

// ---- node names from untrusted input are bounded

TEST(hardening, PidWithAnOversizedOrMalformedNodeNameDoesNotDecode) {
  for (std::string name : {std::string(16 * 1024, 'x'), std::string("bad name"),
                           std::string("ctl\x01"), std::string()}) {
    msgpack::sbuffer b;
    msgpack::packer<msgpack::sbuffer> pk(b);
    pk.pack_array(3);
    pk.pack(name);
    pk.pack(1);
    pk.pack(2);
    auto h = msgpack::unpack(b.data(), b.size());
    EXPECT_THROW(h->as<otpp::pid>(), msgpack::type_error) << name.size();
    EXPECT_EQ(otpp::node_atom::find(name), otpp::node_atom{});
  }
  // A well-formed name still decodes.
  otpp::pid p(otpp::node_atom::intern("good@127.0.0.1:1"), 3, 4);
  msgpack::sbuffer b;
  msgpack::pack(b, p);
  EXPECT_EQ(msgpack::unpack(b.data(), b.size())->as<otpp::pid>(), p);
}

// ---- fail-fast errors instead of hangs

struct call_me {
  static constexpr std::string_view tag = "call_me";
  using reply = int;
  OTPP_NO_FIELDS()
};
struct call_self_now {
  static constexpr std::string_view tag = "call_self_now";
  using reply = int;
  OTPP_NO_FIELDS()
};
struct block_on_future {
  static constexpr std::string_view tag = "block_on_future";
  using reply = int;
  otpp::pid other;
  MSGPACK_DEFINE_MAP(other)
};
class impatient : public otpp::gen_server<impatient> {
 public:
  static void define_handlers(otpp::handlers<impatient>& h) {
    h.call<call_me>([](impatient&, call_me) { return 5; });
    h.call<call_self_now>([](impatient& self, call_self_now) -> asio::awaitable<int> {
      auto r =
          co_await otpp::call(self.this_node(), self.self(), call_me{}, 30s, asio::use_awaitable);
      co_return r ? 0 : static_cast<int>(r.error().value());
    });
    h.call<block_on_future>([](impatient& self, block_on_future m) {
      auto f = otpp::call(self.this_node(), m.other, call_me{}, 30s, asio::use_future);
      auto r = f.get();  // refused at once: never blocks the thread
      return r ? 0 : static_cast<int>(r.error().value());
    });
  }
};

TEST(hardening, CallingSelfFailsAtOnce) {
  otpp::node n({.name = "hard_h", .threads = 1});
  n.start();
  auto p = n.spawn<impatient>();
  ASSERT_TRUE(p);
  auto r = call_sync(n, *p, call_self_now{}, 20s);
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, static_cast<int>(errc::calling_self));
}

TEST(hardening, BlockingFutureInsideAHandlerIsRefusedEvenOnOneThread) {
  otpp::node n({.name = "hard_i", .threads = 1});
  n.start();
  auto a = n.spawn<impatient>();
  auto b = n.spawn<impatient>();
  ASSERT_TRUE(a && b);
  auto r = call_sync(n, *a, block_on_future{*b}, 20s);
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, static_cast<int>(errc::would_block));
}

TEST(hardening, CallBeforeStartAnswersNotStarted) {
  otpp::node n({.name = "hard_j", .threads = 1});
  auto p = n.spawn<impatient>();
  ASSERT_TRUE(p);
  auto f = otpp::call(n, *p, call_me{}, 20s, asio::use_future);
  n.start();  // the completion runs on the node's threads
  EXPECT_EQ(get(f).error(), errc::not_started);
}

// ---- replies: dropped reply_to, error values, local-only types

struct drop_it {
  static constexpr std::string_view tag = "drop_it";
  using reply = int;
  OTPP_NO_FIELDS()
};
struct refuse_it {
  static constexpr std::string_view tag = "refuse_it";
  using reply = int;
  OTPP_NO_FIELDS()
};
// A local-only message and reply: no msgpack mapping at all.
struct local_blob {
  std::unique_ptr<int> value;
};
struct get_blob {
  static constexpr std::string_view tag = "get_blob";
  using reply = std::shared_ptr<local_blob>;
  std::unique_ptr<int> seed;
};
enum class shop_errc { out_of_stock = 1 };
class shop_category_t final : public std::error_category {
 public:
  const char* name() const noexcept override { return "shop"; }
  std::string message(int) const override { return "out of stock"; }
};
const shop_category_t shop_category{};

class replier : public otpp::gen_server<replier> {
 public:
  static void define_handlers(otpp::handlers<replier>& h) {
    h.call<drop_it>([](replier&, drop_it, otpp::reply_to<int>) {});
    h.call<refuse_it>([](replier&, refuse_it) -> otpp::result<int> {
      return otpp::failure(std::error_code(1, shop_category), "sku 42");
    });
    h.call<get_blob>([](replier&, get_blob m) {
      auto b = std::make_shared<local_blob>();
      b->value = std::move(m.seed);
      return b;
    });
  }
};

TEST(hardening, ReplyErrorsAreTruthful) {
  otpp::node n({.name = "hard_k", .threads = 2});
  n.start();
  auto p = n.spawn<replier>();
  ASSERT_TRUE(p);
  EXPECT_EQ(call_sync(n, *p, drop_it{}).error(), errc::no_reply);
  auto refused = call_sync(n, *p, refuse_it{});
  EXPECT_EQ(refused.error(), std::error_code(1, shop_category));
  EXPECT_EQ(refused.reason(), "sku 42");
  auto blob = call_sync(n, *p, get_blob{std::make_unique<int>(9)});
  ASSERT_TRUE(blob);
  EXPECT_EQ(*(*blob)->value, 9);
  EXPECT_TRUE(n.alive(*p));
}

}  // namespace
}  // namespace otpp_test

namespace otpp_test {
namespace {

// ---- a process owning an I/O object on its own executor is freed when it ends

std::atomic<int> timer_owner_destroyed{0};
struct arm_timer {
  static constexpr std::string_view tag = "arm_timer";
  OTPP_NO_FIELDS()
};
class timer_owner : public otpp::gen_server<timer_owner> {
 public:
  timer_owner() : timer_(get_executor_later()) {}
  ~timer_owner() override { ++timer_owner_destroyed; }
  otpp::result<void> init() {
    timer_.emplace(get_executor());
    timer_->expires_after(std::chrono::hours(1));
    timer_->async_wait([](const std::error_code&) {});
    return {};
  }
  static void define_handlers(otpp::handlers<timer_owner>&) {}

 private:
  static std::optional<asio::steady_timer> get_executor_later() { return std::nullopt; }
  std::optional<asio::steady_timer> timer_;  // holds the process's executor
};

TEST(hardening, ProcessOwningAnIoObjectOnItsExecutorIsFreed) {
  timer_owner_destroyed = 0;
  {
    otpp::node n({.name = "hard_l", .threads = 2});
    n.start();
    auto p = n.spawn<timer_owner>();
    ASSERT_TRUE(p);
    n.stop_process(*p, otpp::exit_reason::shutdown());
    // Freed once its table entry and in-flight work let go: no cycle through its own timer.
    EXPECT_TRUE(eventually([] { return timer_owner_destroyed.load() == 1; }));
  }
  EXPECT_EQ(timer_owner_destroyed.load(), 1);
}

}  // namespace
}  // namespace otpp_test
