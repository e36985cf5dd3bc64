// Behaviour registry and remote spawn: in-process 3-node clusters over TCP on 127.0.0.1.
#include <gtest/gtest.h>

#include <asio/experimental/deferred.hpp>  // asio 1.22: deferred is still experimental
#include <asio/use_awaitable.hpp>

#include "cluster/cluster_support.hpp"
#include "otpp/registry.hpp"
#include "otpp/registry/behaviours.hpp"
#include "otpp/registry/join_cluster.hpp"
#include "runtime/test_support.hpp"

namespace {

using namespace otpp_test;
using otpp::errc;

struct echo {
  static constexpr std::string_view tag = "echo";
  using reply = std::string;
  std::string text;
  MSGPACK_DEFINE_MAP(text)
};
struct crash_now {
  static constexpr std::string_view tag = "crash_now";
  OTPP_NO_FIELDS()
};
struct worker_args {
  std::string prefix;
  MSGPACK_DEFINE_MAP(prefix)
};

// Spawned by name: answers echo with its prefix; crash (a call) throws its reason.
class worker : public otpp::gen_server<worker> {
 public:
  worker() = default;
  explicit worker(worker_args a) : prefix_(std::move(a.prefix)) {}
  static void define_handlers(otpp::handlers<worker>& h) {
    h.call<echo>([](worker& self, echo e) { return self.prefix_ + e.text; });
    h.call<crash>([](worker&, crash c) -> int { throw std::runtime_error(c.why); });
  }

 private:
  std::string prefix_ = "plain:";
};

class refuser : public otpp::gen_server<refuser> {
 public:
  otpp::result<void> init() { return otpp::failure(errc::init_failed, "no database"); }
  static void define_handlers(otpp::handlers<refuser>&) {}
};

// Crashes on its first message, which its init sends itself.
class crasher : public otpp::gen_server<crasher> {
 public:
  otpp::result<void> init() { return otpp::cast(this_node(), self(), crash_now{}); }
  static void define_handlers(otpp::handlers<crasher>& h) {
    h.cast<crash_now>([](crasher&, crash_now) { throw std::runtime_error("crashed after init"); });
  }
};

// Its init waits on the gate the test holds.
std::shared_ptr<gate> init_gate;
class blocker : public otpp::gen_server<blocker> {
 public:
  otpp::result<void> init() {
    if (auto g = init_gate) g->pass();
    return {};
  }
  static void define_handlers(otpp::handlers<blocker>&) {}
};

// A caller process: spawns from inside a handler (co_await) and records EXIT / down.
struct spawn_req {
  static constexpr std::string_view tag = "spawn_req";
  using reply = std::string;
  std::string target;
  std::string behaviour;
  bool link = false;
  bool monitor = false;
  bool use_future = false;  // the refused blocking form
  MSGPACK_DEFINE_MAP(target, behaviour, link, monitor, use_future)
};
struct get_child {
  static constexpr std::string_view tag = "get_child";
  using reply = otpp::pid;
  OTPP_NO_FIELDS()
};
class spawner : public otpp::gen_server<spawner> {
 public:
  spawner(std::shared_ptr<recorder> r, bool trap) : rec_(std::move(r)), trap_(trap) {}
  otpp::result<void> init() {
    trap_exit(trap_);
    return {};
  }
  static void define_handlers(otpp::handlers<spawner>& h) {
    h.call<spawn_req>([](spawner& self, spawn_req r) -> asio::awaitable<std::string> {
      otpp::remote_spawn_options o;
      o.link = r.link;
      o.monitor = r.monitor;
      if (r.use_future) {
        auto f = otpp::spawn_remote(self.this_node(), r.target, r.behaviour, o, asio::use_future);
        auto got = f.get();  // refused at once: no blocking wait happens
        co_return got ? "ok" : "error:" + got.fail().message();
      }
      auto got = co_await otpp::spawn_remote(self.this_node(), r.target, r.behaviour, o,
                                             asio::use_awaitable);
      if (!got) co_return "error:" + got.fail().message();
      self.child_ = got->child;
      if (r.monitor && got->monitor.id == 0) co_return "error:no monitor ref";
      co_return "ok";
    });
    h.call<get_child>([](spawner& self, get_child) { return self.child_; });
    h.info<otpp::down>(
        [](spawner& self, otpp::down d) { self.rec_->add("down:" + d.reason.text()); });
    h.info<otpp::exit_message>(
        [](spawner& self, otpp::exit_message m) { self.rec_->add("EXIT:" + m.reason.text()); });
  }

 private:
  std::shared_ptr<recorder> rec_;
  bool trap_;
  otpp::pid child_;
};

// Records log lines of the registry (the sink is process-wide: one test at a time).
struct log_capture {
  std::shared_ptr<recorder> lines = std::make_shared<recorder>();
  otpp::log_sink previous;
  log_capture() {
    previous = otpp::set_log_sink(
        [l = lines](otpp::log_level, std::string_view component, std::string_view text) {
          if (component == "registry") l->add(std::string(text));
        });
  }
  ~log_capture() { otpp::set_log_sink(previous); }
  bool saw(const std::string& part) {
    return lines->wait([&](const auto& e) {
      return std::any_of(e.begin(), e.end(),
                         [&](const std::string& s) { return s.find(part) != std::string::npos; });
    });
  }
};

void register_all(otpp::node& n, const std::string& only_for) {
  ASSERT_TRUE((otpp::register_behaviour<worker, worker_args>(n, "worker")));
  ASSERT_TRUE(otpp::register_behaviour<worker>(n, "plain"));
  ASSERT_TRUE(otpp::register_behaviour<refuser>(n, "refuser"));
  ASSERT_TRUE(otpp::register_behaviour<crasher>(n, "crasher"));
  ASSERT_TRUE(otpp::register_behaviour<blocker>(n, "blocker"));
  ASSERT_TRUE(otpp::register_behaviour<worker>(n, "restricted", {.allowed_nodes = {only_for}}));
}

otpp::result<otpp::remote_spawned> spawn_sync(otpp::node& n, const std::string& target,
                                              const std::string& behaviour, worker_args args,
                                              otpp::remote_spawn_options o = {}) {
  auto f =
      otpp::spawn_remote(n, target, behaviour, std::move(args), std::move(o), asio::use_future);
  return get(f);
}
otpp::result<otpp::remote_spawned> spawn_sync(otpp::node& n, const std::string& target,
                                              const std::string& behaviour,
                                              otpp::remote_spawn_options o = {}) {
  auto f = otpp::spawn_remote(n, target, behaviour, std::move(o), asio::use_future);
  return get(f);
}

struct spawn_cluster : ::testing::Test {
  void SetUp() override {
    init_gate.reset();
    pa = free_port(), pb = free_port(), pc = free_port();
    // a registers its behaviours before joining; b and c after.
    auto ida = node_name("a", pa);
    a_early = std::make_unique<otpp::node>(otpp::node_options{.name = ida, .threads = 2});
    a_early->start();
    register_all(*a_early, node_name("c", pc));
    a = std::make_unique<test_node>();
    a->id = ida;
    a->node = std::move(a_early);
    auto joined = otpp::cluster::join(*a->node, fast_options());
    ASSERT_TRUE(joined);
    a->cluster = *joined;
    ASSERT_TRUE(otpp::serve_remote_spawn(*a->node));
    b = test_node::start("b", pb, fast_options({"127.0.0.1:" + std::to_string(pa)}));
    c = test_node::start("c", pc, fast_options({node_name("b", pb)}));
    register_all(*b->node, c->id);
    register_all(*c->node, c->id);
    ASSERT_TRUE(converged({a.get(), b.get(), c.get()}, 3)) << "three nodes did not converge";
  }
  void TearDown() override {
    if (init_gate) init_gate->open();
  }
  std::vector<test_node*> all() { return {a.get(), b.get(), c.get()}; }
  bool no_tracked_links_or_monitors() {
    return eventually([&] {
      for (auto* t : all()) {
        if (!t->cluster) continue;
        auto s = t->cluster->stats();
        if (s.links != 0 || s.monitors != 0) return false;
      }
      return true;
    });
  }

  std::uint16_t pa = 0, pb = 0, pc = 0;
  std::unique_ptr<otpp::node> a_early;
  std::unique_ptr<test_node> a, b, c;
};

TEST(behaviours, RegistryTable) {
  otpp::node n({.name = "solo", .threads = 1});
  n.start();
  EXPECT_TRUE(otpp::register_behaviour<worker>(n, "one"));
  EXPECT_EQ(otpp::register_behaviour<worker>(n, "one").error(),
            make_error_code(errc::already_registered));
  EXPECT_EQ(otpp::register_behaviour<worker>(n, "").error(),
            make_error_code(errc::invalid_argument));
  EXPECT_TRUE((otpp::register_behaviour<worker, worker_args>(n, "two")));
  EXPECT_EQ(otpp::registered_behaviours(n), (std::vector<std::string>{"one", "two"}));
  EXPECT_TRUE(otpp::unregister_behaviour(n, "one"));
  EXPECT_EQ(otpp::unregister_behaviour(n, "one").error(), make_error_code(errc::not_found));
  EXPECT_EQ(otpp::registered_behaviours(n), (std::vector<std::string>{"two"}));
  // Without a cluster: spawns on this node work, others are nodedown.
  auto local = spawn_sync(n, "solo", "two", worker_args{"s:"});
  ASSERT_TRUE(local) << local.fail().message();
  auto r = call_sync(n, local->child, echo{"x"});
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, "s:x");
  EXPECT_EQ(spawn_sync(n, "b@127.0.0.1:1", "two", worker_args{}).error(),
            make_error_code(errc::nodedown));
  EXPECT_EQ(otpp::serve_remote_spawn(n).error(), make_error_code(errc::nodedown));
}

TEST_F(spawn_cluster, SpawnsByNameOnEveryNodeAndLocally) {
  for (auto* from : all()) {
    for (auto* to : all()) {
      auto s = spawn_sync(*from->node, to->id, "worker", worker_args{from->id + ">"});
      ASSERT_TRUE(s) << from->id << " -> " << to->id << ": " << s.fail().message();
      EXPECT_EQ(std::string(s->child.node().name()), to->id);
      EXPECT_TRUE(to->node->alive(s->child));
      auto r = call_sync(*from->node, s->child, echo{"hi"}, 10s);
      ASSERT_TRUE(r) << r.fail().message();
      EXPECT_EQ(*r, from->id + ">hi");
    }
  }
  // No arguments (Args = void), a callback, and a deferred operation.
  std::promise<otpp::result<otpp::remote_spawned>> p;
  otpp::spawn_remote(*a->node, b->id, "plain", {},
                     [&p](otpp::result<otpp::remote_spawned> r) { p.set_value(std::move(r)); });
  auto fut = p.get_future();
  auto cb = get(fut);
  ASSERT_TRUE(cb) << cb.fail().message();
  auto echoed = call_sync(*a->node, cb->child, echo{"cb"}, 10s);
  ASSERT_TRUE(echoed);
  EXPECT_EQ(*echoed, "plain:cb");
  auto op = otpp::spawn_remote(*a->node, c->id, "worker", worker_args{"d:"}, {},
                               asio::experimental::deferred);
  auto df = std::move(op)(asio::use_future);
  auto d = get(df);
  ASSERT_TRUE(d) << d.fail().message();
  EXPECT_EQ(std::string(d->child.node().name()), c->id);
}

TEST_F(spawn_cluster, ErrorsAreDistinctWithTheirReasons) {
  log_capture logs;
  for (auto* to : {a.get(), b.get()}) {  // locally and over the wire
    SCOPED_TRACE(to->id);
    auto unknown = spawn_sync(*a->node, to->id, "nobody", otpp::remote_spawn_options{});
    EXPECT_EQ(unknown.error(), make_error_code(errc::unknown_behaviour));
    EXPECT_NE(unknown.reason().find("nobody"), std::string::npos);
    // worker_args is a map: a bare string does not decode.
    auto f = otpp::spawn_remote(*a->node, to->id, "worker", std::string("not a map"), {},
                                asio::use_future);
    auto bad = get(f);
    EXPECT_EQ(bad.error(), make_error_code(errc::bad_message));
    // Args = void takes nil only.
    auto g = otpp::spawn_remote(*a->node, to->id, "plain", 42, {}, asio::use_future);
    EXPECT_EQ(get(g).error(), make_error_code(errc::bad_message));
    auto refused = spawn_sync(*a->node, to->id, "refuser", otpp::remote_spawn_options{});
    EXPECT_EQ(refused.error(), make_error_code(errc::init_failed));
    EXPECT_NE(refused.reason().find("no database"), std::string::npos) << refused.reason();
    auto not_allowed = spawn_sync(*a->node, to->id, "restricted", otpp::remote_spawn_options{});
    EXPECT_EQ(not_allowed.error(), make_error_code(errc::not_authorised));
    // Named: the second start loses the name and never runs init.
    otpp::remote_spawn_options named;
    named.local_name = "the_one";
    auto first = spawn_sync(*a->node, to->id, "plain", named);
    ASSERT_TRUE(first) << first.fail().message();
    auto where = otpp::whereis(*to->node, "the_one");
    ASSERT_TRUE(where);
    EXPECT_EQ(*where, first->child);
    auto second = spawn_sync(*a->node, to->id, "plain", named);
    EXPECT_EQ(second.error(), make_error_code(errc::already_registered));
    EXPECT_NE(second.reason().find(first->child.to_string()), std::string::npos);
    EXPECT_EQ(*otpp::whereis(*to->node, "the_one"), first->child);
  }
  // The allowed node may.
  auto ok = spawn_sync(*c->node, b->id, "restricted", otpp::remote_spawn_options{});
  EXPECT_TRUE(ok) << ok.fail().message();
  // Refused options.
  otpp::remote_spawn_options link;
  link.link = true;  // from a plain thread: no caller process
  EXPECT_EQ(spawn_sync(*a->node, b->id, "plain", link).error(),
            make_error_code(errc::invalid_argument));
  EXPECT_EQ(
      spawn_sync(*a->node, "nobody@127.0.0.1:1", "plain", otpp::remote_spawn_options{}).error(),
      make_error_code(errc::nodedown));
  // The node that detected each error logged it.
  EXPECT_TRUE(logs.saw(b->id + ": spawn of 'nobody' for " + a->id + " refused"));
  EXPECT_TRUE(logs.saw(b->id + ": spawn of 'restricted' for " + a->id + " refused"));
}

TEST_F(spawn_cluster, FromInsideAHandlerTheBlockingFormIsRefused) {
  auto rec = std::make_shared<recorder>();
  auto s = a->node->spawn<spawner>(rec, false);
  ASSERT_TRUE(s);
  auto r = call_sync(*a->node, *s, spawn_req{b->id, "plain", false, false, true}, 10s);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->rfind("error:would_block", 0), 0u) << *r;
  auto ok = call_sync(*a->node, *s, spawn_req{b->id, "plain", false, false, false}, 10s);
  ASSERT_TRUE(ok);
  EXPECT_EQ(*ok, "ok");
}

TEST_F(spawn_cluster, LinkedChildCrashKillsTheCallerOrReachesItAsExit) {
  for (auto* to : {b.get(), a.get()}) {
    SCOPED_TRACE(to->id);
    // Not trapping: the child's crash kills the caller with the child's reason.
    auto rec = std::make_shared<recorder>();
    auto s = a->node->spawn<spawner>(rec, false);
    ASSERT_TRUE(s);
    auto caller_exit = std::make_shared<recorder>();
    a->node->watch_process(
        *s, [caller_exit](const otpp::exit_reason& r) { caller_exit->add(r.text()); });
    auto r = call_sync(*a->node, *s, spawn_req{to->id, "plain", true, false, false}, 10s);
    ASSERT_TRUE(r);
    ASSERT_EQ(*r, "ok");
    auto child = call_sync(*a->node, *s, get_child{});
    ASSERT_TRUE(child);
    auto crashed = call_sync(*a->node, *child, crash{"child boom"}, 10s);
    EXPECT_FALSE(crashed);
    EXPECT_TRUE(caller_exit->wait_for_event("child boom"));

    // Trapping: an EXIT message with the real reason, the caller lives.
    auto rec2 = std::make_shared<recorder>();
    auto t = a->node->spawn<spawner>(rec2, true);
    ASSERT_TRUE(t);
    auto r2 = call_sync(*a->node, *t, spawn_req{to->id, "plain", true, false, false}, 10s);
    ASSERT_TRUE(r2);
    ASSERT_EQ(*r2, "ok");
    auto child2 = call_sync(*a->node, *t, get_child{});
    ASSERT_TRUE(child2);
    (void)call_sync(*a->node, *child2, crash{"second boom"}, 10s);
    EXPECT_TRUE(rec2->wait_for_event("EXIT:second boom"));
    EXPECT_TRUE(a->node->alive(*t));

    // A child that crashes right after init: the trapping caller still hears.
    auto r3 = call_sync(*a->node, *t, spawn_req{to->id, "crasher", true, false, false}, 10s);
    ASSERT_TRUE(r3);
    ASSERT_EQ(*r3, "ok");
    EXPECT_TRUE(rec2->wait_for_event("EXIT:crashed after init"));
    a->node->stop_process(*t);
  }
  EXPECT_TRUE(no_tracked_links_or_monitors());
}

TEST_F(spawn_cluster, MonitoredChildDownCarriesTheRealReason) {
  for (auto* to : {c.get(), a.get()}) {
    SCOPED_TRACE(to->id);
    auto rec = std::make_shared<recorder>();
    auto s = a->node->spawn<spawner>(rec, false);
    ASSERT_TRUE(s);
    auto r = call_sync(*a->node, *s, spawn_req{to->id, "plain", false, true, false}, 10s);
    ASSERT_TRUE(r);
    ASSERT_EQ(*r, "ok");
    auto child = call_sync(*a->node, *s, get_child{});
    ASSERT_TRUE(child);
    (void)call_sync(*a->node, *child, crash{"monitored boom"}, 10s);
    EXPECT_TRUE(rec->wait_for_event("down:monitored boom"));
    // Crashing right after init: the monitor was in place before init ran.
    auto r2 = call_sync(*a->node, *s, spawn_req{to->id, "crasher", false, true, false}, 10s);
    ASSERT_TRUE(r2);
    ASSERT_EQ(*r2, "ok");
    EXPECT_TRUE(rec->wait_for_event("down:crashed after init"));
    EXPECT_TRUE(a->node->alive(*s));  // a monitor never kills
    // A failed spawn leaves no monitor behind.
    auto r3 = call_sync(*a->node, *s, spawn_req{to->id, "refuser", true, true, false}, 10s);
    ASSERT_TRUE(r3);
    EXPECT_EQ(r3->rfind("error:init_failed", 0), 0u) << *r3;
    a->node->stop_process(*s);
  }
  EXPECT_TRUE(no_tracked_links_or_monitors());
}

TEST_F(spawn_cluster, TargetStoppedMidSpawnAnswersNodedownPromptly) {
  init_gate = std::make_shared<gate>();
  auto before = c->node->process_count();
  auto f = otpp::spawn_remote(*a->node, c->id, "blocker", otpp::remote_spawn_options{},
                              asio::use_future);
  ASSERT_TRUE(eventually([&] { return c->node->process_count() > before; }));
  std::thread stopper([&] { c->node->stop(); });
  auto r = get(f, 10s);
  EXPECT_EQ(r.error(), make_error_code(errc::nodedown)) << r.fail().message();
  init_gate->open();
  stopper.join();
}

TEST_F(spawn_cluster, LateSuccessAfterTimeoutKillsTheOrphan) {
  init_gate = std::make_shared<gate>();
  log_capture logs;
  auto baseline = b->node->process_count();
  otpp::remote_spawn_options o;
  o.timeout = 200ms;
  auto r = spawn_sync(*a->node, b->id, "blocker", o);
  EXPECT_EQ(r.error(), make_error_code(errc::timeout));
  EXPECT_EQ(b->node->process_count(), baseline + 1);  // still in init
  init_gate->open();
  EXPECT_TRUE(logs.saw(a->id + ": killing spawned <" + b->id));
  EXPECT_TRUE(eventually([&] { return b->node->process_count() == baseline; }));
  // Locally too.
  init_gate = std::make_shared<gate>();
  auto local_base = a->node->process_count();
  auto l = spawn_sync(*a->node, a->id, "blocker", o);
  EXPECT_EQ(l.error(), make_error_code(errc::timeout));
  init_gate->open();
  EXPECT_TRUE(eventually([&] { return a->node->process_count() == local_base; }));
}

TEST_F(spawn_cluster, MalformedSpawnFramesAreLoggedAndAnswered) {
  log_capture logs;
  auto send = [&](const msgpack::sbuffer& b) {
    return a->cluster->send_channel(otpp::node_atom::find(this->b->id), 0,
                                    otpp::cluster::channels::spawn,
                                    {reinterpret_cast<const std::uint8_t*>(b.data()), b.size()});
  };
  auto raw = [&](std::vector<std::uint8_t> bytes) {
    return a->cluster->send_channel(otpp::node_atom::find(b->id), 0, otpp::cluster::channels::spawn,
                                    bytes);
  };
  ASSERT_TRUE(raw({}));                              // empty
  ASSERT_TRUE(raw({0xc1}));                          // never-used msgpack byte
  ASSERT_TRUE(raw({0xdd, 0xff, 0xff, 0xff, 0xff}));  // an array announcing 2^32 elements
  ASSERT_TRUE(raw({0x93, 0x01, 0x01}));              // truncated
  msgpack::sbuffer short_request;
  msgpack::pack(short_request, std::make_tuple(1, 1, 4242));  // id readable, fields missing
  ASSERT_TRUE(send(short_request));
  msgpack::sbuffer wrong_types;
  msgpack::pack(wrong_types, std::make_tuple(1, 1, 4343, "x", 5, 6, 7, 8, 9));
  ASSERT_TRUE(send(wrong_types));
  msgpack::sbuffer future_version;
  msgpack::pack(future_version, std::make_tuple(9, 1, 4444));
  ASSERT_TRUE(send(future_version));
  EXPECT_TRUE(logs.saw(b->id + ": bad spawn frame from " + a->id));
  // The answers for the readable ids reach a, which has no such spawn pending.
  EXPECT_TRUE(logs.saw(a->id + ": spawn reply 4242 from " + b->id));
  EXPECT_TRUE(logs.saw(a->id + ": spawn reply 4343 from " + b->id));
  EXPECT_TRUE(logs.saw(a->id + ": spawn reply 4444 from " + b->id));
  // The connection stays usable.
  auto s = spawn_sync(*a->node, b->id, "worker", worker_args{"after:"});
  ASSERT_TRUE(s) << s.fail().message();
  auto r = call_sync(*a->node, s->child, echo{"x"}, 10s);
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, "after:x");
  EXPECT_EQ(a->cluster->stats().connections, 2u);
}

TEST_F(spawn_cluster, HiddenNodeSpawns) {
  auto o = fast_options({"127.0.0.1:" + std::to_string(pa)});
  o.hidden = true;
  auto h = test_node::start("tool", free_port(), o);
  ASSERT_TRUE(eventually([&] {
    for (const auto& p : h->cluster->ready_peers()) {
      if (std::string(p.id()) == a->id) return true;
    }
    return false;
  }));
  auto s = spawn_sync(*h->node, a->id, "worker", worker_args{"tool:"});
  ASSERT_TRUE(s) << s.fail().message();
  auto r = call_sync(*h->node, s->child, echo{"x"}, 10s);
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, "tool:x");
}

// Counts its inits: a start that loses its global name must never run one.
std::atomic<int> counted_inits{0};
class counted : public otpp::gen_server<counted> {
 public:
  otpp::result<void> init() {
    ++counted_inits;
    return {};
  }
  static void define_handlers(otpp::handlers<counted>& h) {
    h.call<echo>([](counted&, echo e) { return "counted:" + e.text; });
  }
};

// Three nodes joined with join_cluster (global names served), each with behaviour "counted",
// their registries met.
void start_counted_trio(std::vector<std::unique_ptr<test_node>>& nodes) {
  auto pa = free_port(), pb = free_port(), pc = free_port();
  for (auto [name, port, seed] :
       {std::tuple{"a", pa, std::uint16_t{0}}, {"b", pb, pa}, {"c", pc, pa}}) {
    auto t = std::make_unique<test_node>();
    t->id = node_name(name, port);
    t->node = std::make_unique<otpp::node>(otpp::node_options{.name = t->id, .threads = 2});
    t->node->start();
    ASSERT_TRUE(otpp::register_behaviour<counted>(*t->node, "counted"));
    auto c = otpp::join_cluster(
        *t->node, fast_options(seed ? std::vector<std::string>{"127.0.0.1:" + std::to_string(seed)}
                                    : std::vector<std::string>{}));
    ASSERT_TRUE(c) << c.fail().message();
    t->cluster = *c;
    nodes.push_back(std::move(t));
  }
  ASSERT_TRUE(converged({nodes[0].get(), nodes[1].get(), nodes[2].get()}, 3));
  ASSERT_TRUE(eventually([&] {
    for (auto& t : nodes) {
      if (otpp::global_stats(*t->node).peers != 2) return false;
    }
    return true;
  }));
}

TEST(spawn_global_name, TheNameIsTakenBeforeInitAndGoesWithTheChild) {
  counted_inits = 0;
  std::vector<std::unique_ptr<test_node>> nodes;
  start_counted_trio(nodes);
  ASSERT_EQ(nodes.size(), 3u);
  auto& a = *nodes[0];
  auto& b = *nodes[1];
  auto& c = *nodes[2];
  otpp::remote_spawn_options o;
  o.global_name = "the_db";
  auto first = spawn_sync(*a.node, b.id, "counted", o);
  ASSERT_TRUE(first) << first.fail().message();
  EXPECT_EQ(counted_inits.load(), 1);
  // Visible from every node; reachable by name.
  for (auto& t : nodes) {
    EXPECT_TRUE(eventually([&] {
      auto w = otpp::whereis(*t->node, otpp::global("the_db"));
      return w && *w == first->child;
    })) << t->id;
  }
  auto r = otpp::call(*c.node, otpp::global("the_db"), echo{"x"}, 10s, asio::use_future).get();
  ASSERT_TRUE(r) << r.fail().message();
  EXPECT_EQ(*r, "counted:x");
  // A second start under the same name, on another node or locally, never runs init.
  auto second = spawn_sync(*a.node, c.id, "counted", o);
  EXPECT_EQ(second.error(), make_error_code(errc::already_registered)) << second.fail().message();
  auto third = spawn_sync(*a.node, a.id, "counted", o);
  EXPECT_EQ(third.error(), make_error_code(errc::already_registered)) << third.fail().message();
  EXPECT_EQ(counted_inits.load(), 1);
  // The name goes with the child, everywhere, and can be taken again (here locally).
  b.node->exit(first->child, otpp::exit_reason::kill());
  for (auto& t : nodes) {
    EXPECT_TRUE(eventually([&] { return !otpp::whereis(*t->node, otpp::global("the_db")); }))
        << t->id;
  }
  auto again = spawn_sync(*a.node, a.id, "counted", o);
  ASSERT_TRUE(again) << again.fail().message();
  EXPECT_EQ(again->child.node(), a.node->atom());
  EXPECT_EQ(counted_inits.load(), 2);
}

TEST(spawn_global_name, TheEpochFencesTheNameAndAStaleStartLeavesNoProcess) {
  counted_inits = 0;
  log_capture logs;
  std::vector<std::unique_ptr<test_node>> nodes;
  start_counted_trio(nodes);
  ASSERT_EQ(nodes.size(), 3u);
  auto& a = *nodes[0];
  auto& b = *nodes[1];
  auto& c = *nodes[2];
  auto name = otpp::global("fenced_db");
  otpp::remote_spawn_options o;
  o.global_name = "fenced_db";
  o.global_epoch = 5;
  auto first = spawn_sync(*a.node, b.id, "counted", o);
  ASSERT_TRUE(first) << first.fail().message();
  for (auto& t : nodes) {
    EXPECT_TRUE(eventually([&] {
      auto l = otpp::global_lookup(*t->node, name);
      return l && l->holder == first->child && l->epoch == 5;
    })) << t->id;
  }
  // The child goes; the name's epoch stays.
  b.node->exit(first->child, otpp::exit_reason::kill());
  for (auto& t : nodes) {
    EXPECT_TRUE(eventually([&] { return !otpp::whereis(*t->node, name); })) << t->id;
    EXPECT_TRUE(eventually([&] { return otpp::global_epoch(*t->node, name) == 5; })) << t->id;
  }
  auto base_a = a.node->process_count();
  auto base_c = c.node->process_count();
  // Below it, on another node, and at it locally (another process): stale_epoch, init never
  // ran, and the child that waited for the name is gone.
  o.global_epoch = 4;
  auto stale = spawn_sync(*a.node, c.id, "counted", o);
  EXPECT_EQ(stale.error(), make_error_code(errc::stale_epoch)) << stale.fail().message();
  EXPECT_NE(stale.reason().find("epoch 5 was registered"), std::string::npos) << stale.reason();
  o.global_epoch = 5;
  auto equal = spawn_sync(*a.node, a.id, "counted", o);
  EXPECT_EQ(equal.error(), make_error_code(errc::stale_epoch)) << equal.fail().message();
  EXPECT_EQ(counted_inits.load(), 1);
  EXPECT_TRUE(eventually([&] { return c.node->process_count() == base_c; }))
      << c.node->process_count() << " processes on c, " << base_c << " before";
  EXPECT_TRUE(eventually([&] { return a.node->process_count() == base_a; }))
      << a.node->process_count() << " processes on a, " << base_a << " before";
  EXPECT_TRUE(logs.saw("spawn of 'counted' on " + c.id + ": stale_epoch"));
  for (auto& t : nodes) EXPECT_FALSE(otpp::whereis(*t->node, name)) << t->id;
  // Above it: started, and registered with that epoch everywhere.
  o.global_epoch = 6;
  auto newer = spawn_sync(*a.node, c.id, "counted", o);
  ASSERT_TRUE(newer) << newer.fail().message();
  EXPECT_EQ(counted_inits.load(), 2);
  for (auto& t : nodes) {
    EXPECT_TRUE(eventually([&] {
      auto l = otpp::global_lookup(*t->node, name);
      return l && l->holder == newer->child && l->epoch == 6;
    })) << t->id;
  }
  // An epoch fences a global name: without one it is a mistake.
  otpp::remote_spawn_options bad;
  bad.global_epoch = 3;
  EXPECT_EQ(spawn_sync(*a.node, b.id, "counted", bad).error(),
            make_error_code(errc::invalid_argument));
  EXPECT_TRUE(logs.saw("a global_epoch needs a global_name"));
}

// Raw request frames as an older sender (no epoch field) and a broken one write them.
TEST(spawn_global_name, TheEpochFieldIsOptionalOnTheWireAndCheckedWhenPresent) {
  log_capture logs;
  std::vector<std::unique_ptr<test_node>> nodes;
  start_counted_trio(nodes);
  ASSERT_EQ(nodes.size(), 3u);
  auto& a = *nodes[0];
  auto& b = *nodes[1];
  auto name = otpp::global("wire_db");
  // The name's epoch is 5, and nobody holds it.
  auto p = b.node->spawn<counted>();
  ASSERT_TRUE(p);
  ASSERT_TRUE(otpp::register_name(*b.node, name, *p, {.epoch = 5}));
  ASSERT_TRUE(otpp::unregister_name(*b.node, name));
  ASSERT_TRUE(eventually([&] { return !otpp::whereis(*b.node, name); }));
  auto send = [&](const msgpack::sbuffer& f) {
    return a.cluster->send_channel(otpp::node_atom::find(b.id), 0, otpp::cluster::channels::spawn,
                                   {reinterpret_cast<const std::uint8_t*>(f.data()), f.size()});
  };
  auto request = [](std::uint64_t id, auto... extra) {
    msgpack::sbuffer f;
    msgpack::packer<msgpack::sbuffer> pk(f);
    pk.pack_array(9 + sizeof...(extra));
    pk.pack(1u);  // version
    pk.pack(1u);  // request
    pk.pack(id);
    pk.pack(0u);  // no caller
    pk.pack(std::string("counted"));
    pk.pack_nil();  // args
    pk.pack(false);
    pk.pack(0u);
    pk.pack(std::string());
    (pk.pack(extra), ...);
    return f;
  };
  // An older sender's request (a global name, no epoch): epoch 0, not fenced. Nobody waits for
  // it on a, which kills the child its success names.
  ASSERT_TRUE(send(request(9100, std::string("wire_db"))));
  EXPECT_TRUE(logs.saw(a.id + ": killing spawned <" + b.id));
  // With an epoch below 5: refused, answered with the pinned status (a's log shows the reason).
  ASSERT_TRUE(eventually([&] { return !otpp::whereis(*b.node, name); }));
  ASSERT_TRUE(send(request(9101, std::string("wire_db"), std::uint64_t{4})));
  EXPECT_TRUE(logs.saw(a.id + ": spawn reply 9101 from " + b.id +
                       " for no pending spawn (dropped): 'wire_db' at epoch 4: epoch 5"));
  // An epoch that is no unsigned integer: a malformed request, answered.
  ASSERT_TRUE(send(request(9102, std::string("wire_db"), std::string("five"))));
  ASSERT_TRUE(send(request(9103, std::string("wire_db"), std::int64_t{-5})));
  EXPECT_TRUE(logs.saw(b.id + ": bad spawn frame from " + a.id));
  EXPECT_TRUE(logs.saw(a.id + ": spawn reply 9102 from " + b.id));
  EXPECT_TRUE(logs.saw(a.id + ": spawn reply 9103 from " + b.id));
  EXPECT_FALSE(otpp::whereis(*b.node, name));
  EXPECT_EQ(otpp::global_epoch(*b.node, name), 5u);
}

}  // namespace
