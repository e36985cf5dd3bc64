// The runtime's seams for distribution: the router door, calls answered from outside the node,
// node-owned services, and deterministic time (manual scheduler + manual clock).
#include <optional>

#include "otpp/registry.hpp"
#include "otpp/router.hpp"
#include "test_support.hpp"

namespace otpp_test {
namespace {

using otpp::errc;

// What a router saw: one entry per envelope that left the node.
struct routed {
  otpp::pid to;
  otpp::detail::envelope_kind kind;
  otpp::pid from;
  std::string tag;
  std::string body;  // msgpack bytes of a message's payload
  std::uint64_t call_id = 0;
  otpp::exit_reason reason;
  otpp::monitor_ref ref;
  bool from_link = false;
};

class capture_router final : public otpp::router {
 public:
  otpp::result<void> route(const otpp::pid& to, otpp::detail::envelope& e) override {
    if (fail_with) return otpp::failure(*fail_with, "test router refuses");
    routed r{to, e.kind, {}, {}, {}, 0, {}, {}, false};
    if (e.kind <= otpp::detail::envelope_kind::system_info) {
      auto& m = static_cast<otpp::detail::message_envelope&>(e);
      r.from = m.from;
      r.tag = std::string(m.tag);
      msgpack::sbuffer buffer;
      msgpack::packer<msgpack::sbuffer> packer(buffer);
      if (!m.pack_body(packer)) return otpp::failure(errc::not_serializable, r.tag);
      r.body.assign(buffer.data(), buffer.size());
      if (m.call) r.call_id = m.call->call_id;
    } else {
      auto& s = static_cast<otpp::detail::signal_envelope&>(e);
      r.from = s.from;
      r.reason = s.reason;
      r.ref = s.ref;
      r.from_link = s.from_link;
    }
    {
      std::lock_guard lock(mutex);
      seen.push_back(std::move(r));
    }
    cv.notify_all();
    return {};
  }
  bool wait_count(std::size_t n) {
    std::unique_lock lock(mutex);
    return cv.wait_for(lock, std::chrono::seconds(20), [&] { return seen.size() >= n; });
  }
  routed at(std::size_t i) {
    std::lock_guard lock(mutex);
    return seen.at(i);
  }
  std::optional<errc> fail_with;
  std::mutex mutex;
  std::condition_variable cv;
  std::vector<routed> seen;
};

const otpp::pid remote_pid(otpp::node_atom::intern("far@10.0.0.9:4370"), 7, 42);

msgpack::object_handle packed(int v) {
  msgpack::sbuffer b;
  msgpack::pack(b, v);
  return msgpack::unpack(b.data(), b.size());
}
msgpack::object_handle packed(const std::string& v) {
  msgpack::sbuffer b;
  msgpack::pack(b, v);
  return msgpack::unpack(b.data(), b.size());
}

// Records each completion of a call (to check it resolves exactly once).
struct completions {
  std::mutex mutex;
  std::vector<otpp::result<int>> got;
  void add(otpp::result<int> r) {
    std::lock_guard lock(mutex);
    got.push_back(std::move(r));
  }
  std::size_t size() {
    std::lock_guard lock(mutex);
    return got.size();
  }
  otpp::result<int> first() {
    std::lock_guard lock(mutex);
    return got.front();
  }
};

TEST(router, WithoutRouterOtherNodesPidsAnswerNoproc) {
  otpp::node n({.name = "seams_a", .threads = 2});
  n.start();
  auto r = otpp::cast(n, remote_pid, increment{1});
  EXPECT_EQ(r.error(), errc::noproc);
  auto c = call_sync(n, remote_pid, get_count{});
  EXPECT_EQ(c.error(), errc::noproc);
}

TEST(router, CastLeavesThroughTheRouterSerialisedOnce) {
  capture_router router;
  otpp::node n({.name = "seams_b", .threads = 2});
  otpp::set_router(n, &router);
  n.start();
  ASSERT_TRUE(otpp::cast(n, remote_pid, increment{5}));
  ASSERT_TRUE(router.wait_count(1));
  auto got = router.at(0);
  EXPECT_EQ(got.to, remote_pid);
  EXPECT_EQ(got.kind, otpp::detail::envelope_kind::cast);
  EXPECT_EQ(got.tag, "increment");
  auto body = msgpack::unpack(got.body.data(), got.body.size());
  EXPECT_EQ(body->as<increment>().by, 5);
}

TEST(router, DeadIncarnationOfThisNodeIsDeadAndNeverRouted) {
  capture_router router;
  otpp::node n({.name = "seams_c", .threads = 2});
  otpp::set_router(n, &router);
  n.start();
  otpp::pid old_incarnation(n.atom(), n.creation() + 1, 5);
  EXPECT_EQ(otpp::cast(n, old_incarnation, increment{1}).error(), errc::noproc);
  EXPECT_TRUE(router.seen.empty());
}

TEST(router, CallAnsweredFromOutsideTheNode) {
  capture_router router;
  otpp::node n({.name = "seams_d", .threads = 2});
  otpp::set_router(n, &router);
  n.start();
  auto done = std::make_shared<completions>();
  otpp::call(n, remote_pid, get_count{}, 20s, [done](otpp::result<int> r) { done->add(r); });
  ASSERT_TRUE(router.wait_count(1));
  auto req = router.at(0);
  EXPECT_EQ(req.kind, otpp::detail::envelope_kind::call);
  ASSERT_NE(req.call_id, 0u);
  EXPECT_EQ(otpp::pending_remote_calls(n), 1u);

  ASSERT_TRUE(otpp::complete_remote_call(n, req.call_id, packed(41)));
  ASSERT_TRUE(eventually([&] { return done->size() == 1; }));
  EXPECT_EQ(done->first().value(), 41);
  EXPECT_EQ(otpp::pending_remote_calls(n), 0u);
  // A second reply for the same call is late: dropped, the caller is not completed again.
  EXPECT_EQ(otpp::complete_remote_call(n, req.call_id, packed(42)).error(), errc::not_found);
  EXPECT_EQ(done->size(), 1u);
}

TEST(router, ReplyThatDoesNotDecodeAnswersBadMessage) {
  capture_router router;
  otpp::node n({.name = "seams_e", .threads = 2});
  otpp::set_router(n, &router);
  n.start();
  auto done = std::make_shared<completions>();
  otpp::call(n, remote_pid, get_count{}, 20s, [done](otpp::result<int> r) { done->add(r); });
  ASSERT_TRUE(router.wait_count(1));
  ASSERT_TRUE(otpp::complete_remote_call(n, router.at(0).call_id, packed(std::string("x"))));
  ASSERT_TRUE(eventually([&] { return done->size() == 1; }));
  EXPECT_EQ(done->first().error(), errc::bad_message);
}

TEST(router, RemoteErrorReachesTheCaller) {
  capture_router router;
  otpp::node n({.name = "seams_f", .threads = 2});
  otpp::set_router(n, &router);
  n.start();
  auto done = std::make_shared<completions>();
  otpp::call(n, remote_pid, get_count{}, 20s, [done](otpp::result<int> r) { done->add(r); });
  ASSERT_TRUE(router.wait_count(1));
  ASSERT_TRUE(otpp::complete_remote_call(n, router.at(0).call_id,
                                         otpp::failure(errc::exit, "remote boom")));
  ASSERT_TRUE(eventually([&] { return done->size() == 1; }));
  EXPECT_EQ(done->first().error(), errc::exit);
  EXPECT_EQ(done->first().reason(), "remote boom");
}

TEST(router, RoutingFailureAnswersTheCallAtOnce) {
  capture_router router;
  otpp::node n({.name = "seams_g", .threads = 2});
  router.fail_with = errc::nodedown;
  otpp::set_router(n, &router);
  n.start();
  auto done = std::make_shared<completions>();
  // An infinite timeout: only the routing failure can complete it.
  otpp::call(n, remote_pid, get_count{}, otpp::infinity,
             [done](otpp::result<int> r) { done->add(r); });
  ASSERT_TRUE(eventually([&] { return done->size() == 1; }));
  EXPECT_EQ(done->first().error(), errc::nodedown);
  EXPECT_EQ(otpp::pending_remote_calls(n), 0u);
  EXPECT_EQ(otpp::cast(n, remote_pid, increment{1}).error(), errc::nodedown);
}

TEST(router, PeerDownFailsItsPendingCalls) {
  capture_router router;
  otpp::node n({.name = "seams_h", .threads = 2});
  otpp::set_router(n, &router);
  n.start();
  auto done = std::make_shared<completions>();
  for (int i = 0; i < 3; ++i) {
    otpp::call(n, remote_pid, get_count{}, otpp::infinity,
               [done](otpp::result<int> r) { done->add(r); });
  }
  ASSERT_TRUE(router.wait_count(3));
  EXPECT_EQ(otpp::fail_remote_calls(n, remote_pid.node(), otpp::failure(errc::nodedown)), 3u);
  ASSERT_TRUE(eventually([&] { return done->size() == 3; }));
  EXPECT_EQ(done->first().error(), errc::nodedown);
}

TEST(router, NodeDestroyedWithRemoteCallsWaitingAnswersThemNodeStopped) {
  capture_router router;
  auto done = std::make_shared<completions>();
  {
    otpp::node n({.name = "seams_k", .threads = 2});
    otpp::set_router(n, &router);
    n.start();
    otpp::call(n, remote_pid, get_count{}, otpp::infinity,
               [done](otpp::result<int> r) { done->add(r); });
    ASSERT_TRUE(router.wait_count(1));
  }
  // The destructor ran the completion it queued: resolved exactly once, never lost.
  ASSERT_EQ(done->size(), 1u);
  EXPECT_EQ(done->first().error(), errc::node_stopped);
}

// A process that links to and monitors a pid it is told about, then may crash.
struct link_to {
  static constexpr std::string_view tag = "link_to";
  otpp::pid target;
  MSGPACK_DEFINE_MAP(target)
};
struct monitor_to {
  static constexpr std::string_view tag = "monitor_to";
  otpp::pid target;
  MSGPACK_DEFINE_MAP(target)
};
struct die {
  static constexpr std::string_view tag = "die";
  std::string why;
  MSGPACK_DEFINE_MAP(why)
};
class linker : public otpp::gen_server<linker> {
 public:
  static void define_handlers(otpp::handlers<linker>& h) {
    h.cast<link_to>([](linker& self, link_to m) { self.link(m.target); });
    h.cast<monitor_to>([](linker& self, monitor_to m) { self.monitor(m.target); });
    h.cast<die>([](linker& self, die m) { self.stop(otpp::exit_reason(m.why)); });
  }
};

TEST(router, LinksMonitorsAndExitSignalsToOtherNodesGoThroughTheRouter) {
  capture_router router;
  otpp::node n({.name = "seams_i", .threads = 2});
  otpp::set_router(n, &router);
  n.start();
  auto p = n.spawn<linker>();
  ASSERT_TRUE(p);
  ASSERT_TRUE(otpp::cast(n, *p, link_to{remote_pid}));
  ASSERT_TRUE(otpp::cast(n, *p, monitor_to{remote_pid}));
  ASSERT_TRUE(router.wait_count(2));
  EXPECT_EQ(router.at(0).kind, otpp::detail::envelope_kind::link);
  EXPECT_EQ(router.at(0).from, *p);
  EXPECT_EQ(router.at(1).kind, otpp::detail::envelope_kind::monitor);
  EXPECT_NE(router.at(1).ref.id, 0u);
  ASSERT_TRUE(otpp::cast(n, *p, die{"crashed"}));
  ASSERT_TRUE(router.wait_count(3));
  auto exit_signal = router.at(2);
  EXPECT_EQ(exit_signal.kind, otpp::detail::envelope_kind::exit_signal);
  EXPECT_EQ(exit_signal.to, remote_pid);
  EXPECT_EQ(exit_signal.reason.text(), "crashed");
  EXPECT_TRUE(exit_signal.from_link);
}

TEST(router, LinkRefusedByTheRouterActsAsADeadProcess) {
  capture_router router;
  otpp::node n({.name = "seams_j", .threads = 2});
  router.fail_with = errc::nodedown;
  otpp::set_router(n, &router);
  n.start();
  auto rec = std::make_shared<recorder>();
  auto obs = n.spawn<observer>(rec, true);
  ASSERT_TRUE(obs);
  ASSERT_TRUE(otpp::send(n, *obs, watch{remote_pid, true}));
  EXPECT_TRUE(rec->wait_for_event("EXIT:noproc"));
  ASSERT_TRUE(otpp::send(n, *obs, watch{remote_pid, false}));
  EXPECT_TRUE(rec->wait_for_event("down:noproc"));
}

// ---- node-owned services

class counting_service final : public otpp::node_service {
 public:
  explicit counting_service(otpp::node& n) : node_(n) { ++created; }
  ~counting_service() override {
    ++destroyed;
    processes_at_destruction = node_.process_count();
  }
  static inline std::atomic<int> created{0};
  static inline std::atomic<int> destroyed{0};
  static inline std::atomic<std::size_t> processes_at_destruction{99};

 private:
  otpp::node& node_;
};

TEST(services, OnePerNodeDestroyedWithItAfterItsProcesses) {
  counting_service::created = 0;
  counting_service::destroyed = 0;
  {
    otpp::node a({.name = "svc_a", .threads = 1});
    otpp::node b({.name = "svc_b", .threads = 1});
    a.start();
    b.start();
    auto& sa = a.use_service<counting_service>();
    EXPECT_EQ(&sa, &a.use_service<counting_service>());
    EXPECT_NE(&sa, static_cast<void*>(&b.use_service<counting_service>()));
    EXPECT_EQ(counting_service::created, 2);
    ASSERT_TRUE(a.spawn<counter>());
  }
  EXPECT_EQ(counting_service::destroyed, 2);
  EXPECT_EQ(counting_service::processes_at_destruction, 0u);
}

TEST(services, NodeRestartedAtTheSameAddressHasNoStaleNames) {
  std::optional<otpp::node> n;
  n.emplace(otpp::node_options{.name = "svc_c", .threads = 1});
  n->start();
  auto p = n->spawn<counter>();
  ASSERT_TRUE(p);
  ASSERT_TRUE(otpp::register_name(*n, "worker", *p));
  auto* address = &*n;
  n.reset();
  n.emplace(otpp::node_options{.name = "svc_c", .threads = 1});
  ASSERT_EQ(&*n, address);  // the same storage: an address-keyed table would leak names here
  n->start();
  EXPECT_EQ(otpp::whereis(*n, "worker").error(), errc::noproc);
  EXPECT_TRUE(otpp::registered_names(*n).empty());
  auto q = n->spawn<counter>();
  ASSERT_TRUE(q);
  EXPECT_TRUE(otpp::register_name(*n, "worker", *q));
}

// whereis from terminate during a node stop still sees the registry (it was erased by a stop
// hook before any process stopped). A process's own name is freed only after its terminate,
// so looking up its own name there must find it.
struct whereis_in_terminate : otpp::gen_server<whereis_in_terminate> {
  explicit whereis_in_terminate(std::shared_ptr<recorder> r) : rec(std::move(r)) {}
  void terminate(const otpp::exit_reason&) {
    auto me = otpp::whereis(this_node(), "me");
    rec->add(me && *me == self() ? "found" : "missing");
  }
  std::shared_ptr<recorder> rec;
};

TEST(services, RegistryReadableFromTerminateDuringStop) {
  auto rec = std::make_shared<recorder>();
  {
    otpp::node n({.name = "svc_d", .threads = 2});
    n.start();
    auto p = n.spawn<whereis_in_terminate>(rec);
    ASSERT_TRUE(p);
    ASSERT_TRUE(otpp::register_name(n, "me", *p));
    n.stop();
  }
  EXPECT_EQ(rec->events(), std::vector<std::string>{"found"});
}

// ---- deterministic time: a manual node on a manual clock

// Holds every call's reply_to without answering (so only a timeout ends the call).
struct hold {
  static constexpr std::string_view tag = "hold";
  using reply = int;
  OTPP_NO_FIELDS()
};
struct tick {
  static constexpr std::string_view tag = "tick";
  int n = 0;
  MSGPACK_DEFINE_MAP(n)
};
class sleeper : public otpp::gen_server<sleeper> {
 public:
  explicit sleeper(std::shared_ptr<recorder> r) : rec_(std::move(r)) {}
  static void define_handlers(otpp::handlers<sleeper>& h) {
    h.call<hold>(
        [](sleeper& self, hold, otpp::reply_to<int> r) { self.held_.push_back(std::move(r)); });
    h.info<tick>([](sleeper& self, tick t) { self.rec_->add("tick:" + std::to_string(t.n)); });
    h.info<otpp::idle_timeout>([](sleeper& self, otpp::idle_timeout) { self.rec_->add("idle"); });
  }

 private:
  std::shared_ptr<recorder> rec_;
  std::vector<otpp::reply_to<int>> held_;
};

struct manual_fixture : ::testing::Test {
  std::shared_ptr<otpp::manual_clock> clock = std::make_shared<otpp::manual_clock>();
  otpp::node node{{.name = "manual_a", .clock = clock, .manual = true}};
  std::shared_ptr<recorder> rec = std::make_shared<recorder>();
  void SetUp() override { node.start(); }
};

TEST_F(manual_fixture, CallTimeoutOnVirtualTime) {
  auto p = node.spawn<sleeper>(rec);
  ASSERT_TRUE(p);
  auto done = std::make_shared<completions>();
  otpp::call(node, *p, hold{}, 1000ms, [done](otpp::result<int> r) { done->add(r); });
  node.poll();
  clock->advance(999ms);
  node.poll();
  EXPECT_EQ(done->size(), 0u);
  clock->advance(1ms);
  node.poll();
  ASSERT_EQ(done->size(), 1u);
  EXPECT_EQ(done->first().error(), errc::timeout);
}

TEST_F(manual_fixture, SendAfterAndCancelOnVirtualTime) {
  auto p = node.spawn<sleeper>(rec);
  ASSERT_TRUE(p);
  node.send_after(500ms, *p, tick{1});
  auto cancelled = node.send_after(300ms, *p, tick{2});
  node.poll();
  EXPECT_TRUE(node.cancel_timer(cancelled));
  EXPECT_FALSE(node.cancel_timer(cancelled));
  clock->advance(499ms);
  node.poll();
  EXPECT_TRUE(rec->events().empty());
  clock->advance(1ms);
  node.poll();
  EXPECT_EQ(rec->events(), std::vector<std::string>{"tick:1"});
}

TEST_F(manual_fixture, IdleTimeoutOnVirtualTime) {
  auto p = node.spawn_opt<sleeper>({.idle_timeout = 100ms}, rec);
  ASSERT_TRUE(p);
  node.poll();
  clock->advance(60ms);
  node.poll();
  ASSERT_TRUE(otpp::send(node, *p, tick{1}));  // activity restarts the idle period
  node.poll();
  clock->advance(60ms);
  node.poll();
  EXPECT_EQ(rec->count("idle"), 0u);
  clock->advance(40ms);
  node.poll();
  EXPECT_EQ(rec->count("idle"), 1u);
  clock->advance(100ms);
  node.poll();
  EXPECT_EQ(rec->count("idle"), 2u);
}

TEST(manual, SeveralNodesStepTogetherOnOneClock) {
  auto clock = std::make_shared<otpp::manual_clock>();
  otpp::node a({.name = "manual_b", .clock = clock, .manual = true});
  otpp::node b({.name = "manual_c", .clock = clock, .manual = true});
  a.start();
  b.start();
  auto rec_a = std::make_shared<recorder>();
  auto rec_b = std::make_shared<recorder>();
  auto pa = a.spawn<sleeper>(rec_a);
  auto pb = b.spawn<sleeper>(rec_b);
  ASSERT_TRUE(pa && pb);
  for (int i = 1; i <= 5; ++i) {
    a.send_after(std::chrono::milliseconds(100 * i), *pa, tick{i});
    b.send_after(std::chrono::milliseconds(150 * i), *pb, tick{i});
  }
  for (int step = 0; step < 6; ++step) {
    clock->advance(100ms);
    a.poll();
    b.poll();
  }
  EXPECT_EQ(rec_a->events(),
            (std::vector<std::string>{"tick:1", "tick:2", "tick:3", "tick:4", "tick:5"}));
  EXPECT_EQ(rec_b->events(), (std::vector<std::string>{"tick:1", "tick:2", "tick:3", "tick:4"}));
  EXPECT_EQ(a.now(), b.now());
}

TEST(manual, NodeStopRunsOnTheCallersThread) {
  auto rec = std::make_shared<recorder>();
  {
    otpp::node n({.name = "manual_d", .manual = true});
    n.start();
    ASSERT_TRUE(n.spawn<observer>(rec, false));
    n.stop();
    EXPECT_EQ(n.process_count(), 0u);
  }
  EXPECT_EQ(rec->events(), std::vector<std::string>{"terminate:shutdown"});
}

}  // namespace
}  // namespace otpp_test

namespace otpp_test {
namespace {

// Spinning idle workers (node_options::idle_spin) change only when a worker sleeps.
TEST(scheduler, SpinningIdleWorkersDeliverEverything) {
  otpp::node n({.name = "spin_a", .threads = 2, .idle_spin = std::chrono::microseconds(50)});
  n.start();
  auto c = n.spawn<counter>();
  ASSERT_TRUE(c);
  for (int i = 0; i < 2000; ++i) ASSERT_TRUE(otpp::cast(n, *c, increment{1}));
  int last = 0;
  for (int i = 0; i < 200; ++i) {
    auto r = call_sync(n, *c, increment{0});
    ASSERT_TRUE(r);
    last = *r;
  }
  EXPECT_EQ(last, 2000);
}

}  // namespace
}  // namespace otpp_test
