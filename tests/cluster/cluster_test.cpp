// Nodes of one test process joined into clusters over real TCP on 127.0.0.1.
#include <gtest/gtest.h>

#include "cluster/cluster_support.hpp"
#include "otpp/router.hpp"
#include "otpp/transport/endpoint.hpp"
#include "runtime/test_support.hpp"

namespace {

using namespace otpp_test;
using otpp::errc;
using otpp::cluster::node_event_kind;

struct echo {
  static constexpr std::string_view tag = "echo";
  using reply = std::string;
  std::string text;
  MSGPACK_DEFINE_MAP(text)
};
struct stall {
  static constexpr std::string_view tag = "stall";
  using reply = int;
  OTPP_NO_FIELDS()
};
struct grow {
  static constexpr std::string_view tag = "grow";
  using reply = std::string;
  std::size_t size = 0;
  MSGPACK_DEFINE_MAP(size)
};
struct seq {
  static constexpr std::string_view tag = "seq";
  std::uint64_t n = 0;
  MSGPACK_DEFINE_MAP(n)
};
struct seq_report {
  static constexpr std::string_view tag = "seq_report";
  using reply = std::vector<std::uint64_t>;  // {received, out of order}
  OTPP_NO_FIELDS()
};
// Answered with an error value of otpp's category (a domain answer, not a crash).
struct find_key {
  static constexpr std::string_view tag = "find_key";
  using reply = std::string;
  std::string key;
  MSGPACK_DEFINE_MAP(key)
};
// A message whose body is a string where `echo` expects a map.
struct wrong_echo {
  static constexpr std::string_view tag = "echo";
  using reply = std::string;
  int text = 0;
  MSGPACK_DEFINE(text)
};

class worker : public otpp::gen_server<worker> {
 public:
  explicit worker(std::shared_ptr<gate> g = nullptr) : gate_(std::move(g)) {}
  static void define_handlers(otpp::handlers<worker>& h) {
    h.call<echo>([](worker&, echo e) { return "echo:" + e.text; });
    h.call<grow>([](worker&, grow g) { return std::string(g.size, 'y'); });
    h.call<stall>([](worker& self, stall) {
      if (self.gate_) self.gate_->pass();
      return 1;
    });
    h.call<crash>([](worker&, crash c) -> int { throw std::runtime_error(c.why); });
    h.call<find_key>([](worker&, find_key k) -> otpp::result<std::string> {
      if (k.key == "busy") return otpp::failure(errc::bulkhead_full, "too many lookups");
      return otpp::failure(errc::not_found, "no key " + k.key);
    });
    h.cast<seq>([](worker& self, seq s) {
      if (s.n != self.next_) ++self.out_of_order_;
      self.next_ = s.n + 1;
      ++self.received_;
    });
    h.call<seq_report>([](worker& self, seq_report) {
      return std::vector<std::uint64_t>{self.received_, self.out_of_order_};
    });
  }

 private:
  std::shared_ptr<gate> gate_;
  std::uint64_t next_ = 0, received_ = 0, out_of_order_ = 0;
};

// Three nodes through a chain of seeds: C knows only B, B only A.
struct three_nodes : ::testing::Test {
  void SetUp() override {
    pa = free_port(), pb = free_port(), pc = free_port();
    a = test_node::start("a", pa, fast_options());
    b = test_node::start("b", pb, fast_options({"127.0.0.1:" + std::to_string(pa)}));
    c = test_node::start("c", pc, fast_options({node_name("b", pb)}));
    ASSERT_TRUE(converged({a.get(), b.get(), c.get()}, 3)) << "three nodes did not converge";
  }
  std::uint16_t pa = 0, pb = 0, pc = 0;
  std::unique_ptr<test_node> a, b, c;
};

TEST_F(three_nodes, ChainOfSeedsConvergesToFullMesh) {
  for (auto* t : {a.get(), b.get(), c.get()}) {
    auto ms = t->cluster->members();
    ASSERT_EQ(ms.size(), 3u);
    EXPECT_TRUE(ms.front().self);
    EXPECT_EQ(ms.front().id, t->id);
    for (const auto& m : ms) EXPECT_NE(m.creation, 0u);
    // node_up exactly once per other node.
    for (auto* other : {a.get(), b.get(), c.get()}) {
      if (other == t) continue;
      EXPECT_TRUE(
          eventually([&] { return t->log->count(node_event_kind::node_up, other->id) == 1; }));
    }
  }
  EXPECT_EQ(a->cluster->self().to_string(), a->id);
}

TEST_F(three_nodes, CallAndCastAcrossNodes) {
  auto w = c->node->spawn<worker>();
  ASSERT_TRUE(w);
  auto r = call_sync(*a->node, *w, echo{"hi"}, 10s);
  ASSERT_TRUE(r) << r.fail().message();
  EXPECT_EQ(*r, "echo:hi");
  // Counter from the runtime tests: cast then call, order kept.
  auto k = b->node->spawn<counter>(0);
  ASSERT_TRUE(k);
  ASSERT_TRUE(otpp::cast(*a->node, *k, increment{5}));
  auto n = call_sync(*a->node, *k, get_count{}, 10s);
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 5);
}

TEST_F(three_nodes, RemoteErrorsAreDistinct) {
  auto w = c->node->spawn<worker>();
  ASSERT_TRUE(w);
  // noproc: a pid that does not exist there.
  otpp::pid ghost(w->node(), w->creation(), w->serial() + 100000);
  auto r1 = call_sync(*a->node, ghost, echo{"x"}, 10s);
  EXPECT_EQ(r1.error(), errc::noproc);
  // bad_message: the body does not decode into the handler's type.
  auto r2 = call_sync(*a->node, *w, wrong_echo{7}, 10s);
  EXPECT_EQ(r2.error(), errc::bad_message) << r2.fail().message();
  // exit: the callee dies during the call, with its reason.
  auto r3 = call_sync(*a->node, *w, crash{"kaboom"}, 10s);
  EXPECT_EQ(r3.error(), errc::exit);
  EXPECT_NE(r3.fail().message().find("kaboom"), std::string::npos) << r3.fail().message();
  // timeout: the callee does not answer in time (the late reply is dropped).
  auto g = std::make_shared<gate>();
  auto slow = c->node->spawn<worker>(g);
  ASSERT_TRUE(slow);
  auto r4 = call_sync(*a->node, *slow, stall{}, 100ms);
  EXPECT_EQ(r4.error(), errc::timeout);
  g->open();
  EXPECT_TRUE(eventually([&] { return otpp::pending_remote_calls(*a->node) == 0; }));
  // An error value the handler answers travels as itself (not as exit), with its reason.
  auto r7 = call_sync(*a->node, *slow, find_key{"k1"}, 10s);
  EXPECT_EQ(r7.error(), errc::not_found) << r7.fail().message();
  EXPECT_EQ(r7.fail().reason, "no key k1");
  auto r8 = call_sync(*a->node, *slow, find_key{"busy"}, 10s);
  EXPECT_EQ(r8.error(), errc::bulkhead_full) << r8.fail().message();
  // An old incarnation's pid: noproc.
  otpp::pid old(w->node(), w->creation() + 1, w->serial());
  auto r5 = call_sync(*a->node, old, echo{"x"}, 10s);
  EXPECT_EQ(r5.error(), errc::noproc);
  // A node nobody knows: nodedown at once.
  otpp::pid nowhere(otpp::node_atom::intern("zz@127.0.0.1:1"), 1, 1);
  auto r6 = call_sync(*a->node, nowhere, echo{"x"}, 10s);
  EXPECT_EQ(r6.error(), errc::nodedown);
  EXPECT_EQ(otpp::cast(*a->node, nowhere, seq{}).error(), errc::nodedown);
}

TEST_F(three_nodes, HundredThousandCastsArriveInOrder) {
  auto w = b->node->spawn<worker>();
  ASSERT_TRUE(w);
  constexpr std::uint64_t total = 100000;
  std::atomic<std::uint64_t> refused{0};
  // From one thread of A (no process: order holds per sender).
  std::thread t([&] {
    for (std::uint64_t i = 0; i < total; ++i) {
      while (true) {
        auto r = otpp::cast(*a->node, *w, seq{i});
        if (r) break;
        // mailbox_full on the connection queue: back off and resend (nothing was queued).
        ASSERT_EQ(r.error(), errc::mailbox_full) << r.fail().message();
        ++refused;
        std::this_thread::sleep_for(1ms);
      }
    }
  });
  t.join();
  std::vector<std::uint64_t> report;
  ASSERT_TRUE(eventually(
      [&] {
        auto r = call_sync(*a->node, *w, seq_report{}, 10s);
        if (!r) return false;
        report = *r;
        return report[0] == total;
      },
      60s))
      << "received " << (report.empty() ? 0 : report[0]);
  EXPECT_EQ(report[1], 0u) << "out of order";
}

TEST_F(three_nodes, GracefulStopIsSeenAsGracefulShutdown) {
  auto cid = c->id;
  c->node->stop();
  for (auto* t : {a.get(), b.get()}) {
    ASSERT_TRUE(eventually([&] { return t->log->count(node_event_kind::node_down, cid) == 1; }));
    auto e = t->log->find(node_event_kind::node_down, cid);
    EXPECT_EQ(e->reason, errc::graceful_shutdown);
  }
  EXPECT_TRUE(converged({a.get(), b.get()}, 2));
}

TEST_F(three_nodes, CallPendingWhenItsNodeGoesFailsAtOnce) {
  auto g = std::make_shared<gate>();
  auto slow = c->node->spawn<worker>(g);
  ASSERT_TRUE(slow);
  auto pending = otpp::call(*a->node, *slow, stall{}, 600s, asio::use_future);
  ASSERT_TRUE(eventually([&] { return otpp::pending_remote_calls(*a->node) == 1; }));
  c->cluster->leave();  // closes every connection of C
  // nodedown long before the call's own 600 s timeout (get() bounds the wait at 30 s).
  auto r = get(pending);
  EXPECT_EQ(r.error(), errc::nodedown) << (r ? "answered" : r.fail().message());
  g->open();
  auto cid = c->id;
  for (auto* t : {a.get(), b.get()}) {
    ASSERT_TRUE(eventually([&] { return t->log->count(node_event_kind::node_down, cid) == 1; }));
    EXPECT_EQ(t->log->find(node_event_kind::node_down, cid)->reason, errc::graceful_shutdown);
  }
}

TEST_F(three_nodes, RemoteMonitorAndLinkFireNoconnectionWhenTheNodeGoes) {
  auto w = c->node->spawn<worker>();
  ASSERT_TRUE(w);
  auto rec = std::make_shared<recorder>();
  auto obs = a->node->spawn<observer>(rec, true);
  ASSERT_TRUE(obs);
  ASSERT_TRUE(otpp::send(*a->node, *obs, watch{*w, false}));
  ASSERT_TRUE(otpp::send(*a->node, *obs, watch{*w, true}));
  ASSERT_TRUE(rec->wait([](const auto& e) { return e.size() >= 2; }));
  ASSERT_TRUE(eventually([&] {
    auto s = a->cluster->stats();
    return s.links == 1 && s.monitors == 1;
  }));
  c->node->stop();
  ASSERT_TRUE(rec->wait_for_event("down:noconnection"));
  ASSERT_TRUE(rec->wait_for_event("EXIT:noconnection"));
  EXPECT_TRUE(eventually([&] {
    auto s = a->cluster->stats();
    return s.links == 0 && s.monitors == 0;
  }));
}

TEST_F(three_nodes, RemoteMonitorSeesTheExitReason) {
  auto w = c->node->spawn<worker>();
  ASSERT_TRUE(w);
  auto rec = std::make_shared<recorder>();
  auto obs = a->node->spawn<observer>(rec, true);
  ASSERT_TRUE(obs);
  ASSERT_TRUE(otpp::send(*a->node, *obs, watch{*w, false}));
  ASSERT_TRUE(rec->wait_for_event("watching"));
  // The monitor request and the crash travel in order on one connection... but from different
  // senders; wait until C's side holds the monitor.
  ASSERT_TRUE(eventually([&] { return c->cluster->stats().monitors == 1; }));
  (void)call_sync(*b->node, *w, crash{"bang"}, 10s);
  ASSERT_TRUE(rec->wait_for_event("down:bang"));
  // A monitor of a dead remote process: down noproc.
  ASSERT_TRUE(otpp::send(*a->node, *obs, watch{*w, false}));
  ASSERT_TRUE(rec->wait_for_event("down:noproc"));
  // A link to a dead remote process: EXIT noproc.
  ASSERT_TRUE(otpp::send(*a->node, *obs, watch{*w, true}));
  ASSERT_TRUE(rec->wait_for_event("EXIT:noproc"));
  EXPECT_TRUE(eventually([&] {
    return a->cluster->stats().monitors == 0 && c->cluster->stats().monitors == 0 &&
           a->cluster->stats().links == 0 && c->cluster->stats().links == 0;
  }));
}

TEST(cluster, WrongSecretNeverJoins) {
  auto pa = free_port(), pb = free_port();
  auto a = test_node::start("a", pa, fast_options());
  auto o = fast_options({"127.0.0.1:" + std::to_string(pa)});
  o.transport.secret = "another-secret-0123456789abcdef";
  auto b = test_node::start("b", pb, std::move(o));
  // Several attempts are refused; it never becomes a member.
  ASSERT_TRUE(eventually([&] { return b->cluster->stats().connect_attempts >= 3; }));
  EXPECT_EQ(a->cluster->members().size(), 1u);
  EXPECT_EQ(b->cluster->members().size(), 1u);
  EXPECT_EQ(a->log->count(node_event_kind::node_up), 0u);
}

TEST(cluster, SeedsDownAtStartJoinWhenOneAppears) {
  auto pa = free_port(), pb = free_port();
  auto b = test_node::start("b", pb, fast_options({"127.0.0.1:" + std::to_string(pa)}));
  ASSERT_TRUE(eventually([&] { return b->cluster->stats().connect_attempts >= 2; }));
  EXPECT_EQ(b->cluster->members().size(), 1u);  // runs alone
  auto a = test_node::start("a", pa, fast_options());
  EXPECT_TRUE(converged({a.get(), b.get()}, 2));
}

// options::on_event is in place before the node dials: it hears the seed's node_up exactly
// once however fast the seed answers. subscribe() hears what happens after the call only.
TEST(cluster, OnEventHearsEveryEventAndSubscribeOnlyLaterOnes) {
  auto pa = free_port(), pb = free_port(), pc = free_port();
  auto a = test_node::start("a", pa, fast_options());
  auto b = test_node::start("b", pb, fast_options({"127.0.0.1:" + std::to_string(pa)}));
  ASSERT_TRUE(converged({a.get(), b.get()}, 2));
  EXPECT_EQ(b->log->count(node_event_kind::node_up, a->id), 1u);
  EXPECT_EQ(a->log->count(node_event_kind::node_up, b->id), 1u);
  auto late = std::make_shared<event_log>();
  auto s = b->cluster->subscribe([late](const otpp::cluster::node_event& e) { late->add(e); });
  auto c = test_node::start("c", pc, fast_options({"127.0.0.1:" + std::to_string(pb)}));
  ASSERT_TRUE(converged({a.get(), b.get(), c.get()}, 3));
  ASSERT_TRUE(eventually([&] { return late->count(node_event_kind::node_up, c->id) == 1; }));
  EXPECT_EQ(late->count(node_event_kind::node_up, a->id), 0u);  // before the subscription
  EXPECT_EQ(b->log->count(node_event_kind::node_up), 2u);
  EXPECT_EQ(c->log->count(node_event_kind::node_up), 2u);
  b->cluster->unsubscribe(s);
}

TEST(cluster, OwnAddressInSeedsIsIgnored) {
  auto pa = free_port();
  auto a = test_node::start("a", pa, fast_options({"127.0.0.1:" + std::to_string(pa)}));
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(a->cluster->stats().connect_attempts, 0u);
  EXPECT_EQ(a->cluster->members().size(), 1u);
}

TEST(cluster, InvalidNodeNameOrOptionsAreRefused) {
  otpp::node n1({.name = "not a node id", .threads = 1});
  n1.start();
  EXPECT_EQ(otpp::cluster::join(n1, fast_options()).error(), errc::invalid_argument);
  otpp::node n2({.name = "x@127.0.0.1:" + std::to_string(free_port()), .threads = 1});
  n2.start();
  auto o = fast_options({"nonsense"});
  EXPECT_EQ(otpp::cluster::join(n2, o).error(), errc::invalid_argument);
  auto weak = fast_options();
  weak.transport.secret = "short";
  EXPECT_FALSE(otpp::cluster::join(n2, weak));
  EXPECT_EQ(otpp::cluster::find(n2), nullptr);
}

TEST(cluster, PortInUseIsAnError) {
  auto p = free_port();
  auto a = test_node::start("a", p, fast_options());
  otpp::node n({.name = node_name("b", p), .threads = 1});
  n.start();
  EXPECT_FALSE(otpp::cluster::join(n, fast_options()));
}

TEST(cluster, EightNodesStartedAtOnceConverge) {
  std::vector<std::uint16_t> ports;
  for (int i = 0; i < 8; ++i) ports.push_back(free_port());
  std::vector<std::unique_ptr<test_node>> nodes;
  auto seeds = std::vector<std::string>{"127.0.0.1:" + std::to_string(ports[0]),
                                        "127.0.0.1:" + std::to_string(ports[1])};
  for (int i = 0; i < 8; ++i) {
    nodes.push_back(test_node::start("n" + std::to_string(i), ports[i], fast_options(seeds), 1));
  }
  std::vector<test_node*> raw;
  for (auto& n : nodes) raw.push_back(n.get());
  ASSERT_TRUE(converged(raw, 8));
  for (auto* t : raw) EXPECT_EQ(t->cluster->stats().connections, 7u);  // one per pair
}

TEST(cluster, FiveGrowToEight) {
  std::vector<std::uint16_t> ports;
  for (int i = 0; i < 8; ++i) ports.push_back(free_port());
  std::vector<std::unique_ptr<test_node>> nodes;
  std::vector<test_node*> raw;
  for (int i = 0; i < 5; ++i) {
    auto seeds =
        i == 0 ? std::vector<std::string>{}
               : std::vector<std::string>{node_name("n" + std::to_string(i - 1), ports[i - 1])};
    nodes.push_back(test_node::start("n" + std::to_string(i), ports[i], fast_options(seeds), 1));
    raw.push_back(nodes.back().get());
  }
  ASSERT_TRUE(converged(raw, 5));
  for (int i = 5; i < 8; ++i) {
    // A host name as seed: "localhost" resolves to each of its addresses, each is tried.
    nodes.push_back(test_node::start("n" + std::to_string(i), ports[i],
                                     fast_options({"localhost:" + std::to_string(ports[2])}), 1));
    raw.push_back(nodes.back().get());
  }
  ASSERT_TRUE(converged(raw, 8));
  for (auto* t : raw) {
    for (auto* other : raw) {
      if (other == t) continue;
      EXPECT_EQ(t->log->count(node_event_kind::node_up, other->id), 1u);
    }
  }
}

TEST(cluster, RestartedNodeIsANewIncarnationAndOldPidsAreDead) {
  auto pa = free_port(), pb = free_port();
  auto a = test_node::start("a", pa, fast_options());
  auto b = test_node::start("b", pb, fast_options({"127.0.0.1:" + std::to_string(pa)}));
  ASSERT_TRUE(converged({a.get(), b.get()}, 2));
  auto w = b->node->spawn<worker>();
  ASSERT_TRUE(w);
  auto old_creation = b->node->creation();
  b.reset();  // graceful
  ASSERT_TRUE(eventually([&] { return a->log->count(node_event_kind::node_down) == 1; }));
  b = test_node::start("b", pb, fast_options({"127.0.0.1:" + std::to_string(pa)}));
  ASSERT_NE(b->node->creation(), old_creation);
  ASSERT_TRUE(converged({a.get(), b.get()}, 2));
  EXPECT_EQ(a->log->count(node_event_kind::node_up, b->id), 2u);
  auto r = call_sync(*a->node, *w, echo{"x"}, 10s);
  EXPECT_EQ(r.error(), errc::noproc);
}

TEST(cluster, OversizedMessageIsRefusedWithFrameTooLarge) {
  auto pa = free_port(), pb = free_port();
  auto oa = fast_options();
  oa.transport.max_frame_size = 4096;
  auto ob = fast_options({"127.0.0.1:" + std::to_string(pa)});
  ob.transport.max_frame_size = 4096;
  auto a = test_node::start("a", pa, oa);
  auto b = test_node::start("b", pb, ob);
  ASSERT_TRUE(converged({a.get(), b.get()}, 2));
  auto w = b->node->spawn<worker>();
  ASSERT_TRUE(w);
  std::string big(10000, 'x');
  auto r = call_sync(*a->node, *w, echo{big}, 10s);
  EXPECT_EQ(r.error(), errc::frame_too_large) << (r ? "answered" : r.fail().message());
  // The connection is untouched: a small call still works.
  auto ok = call_sync(*a->node, *w, echo{"small"}, 10s);
  ASSERT_TRUE(ok) << ok.fail().message();
  // A reply over the bound: the callee's node answers frame_too_large instead (and logs it).
  auto big_reply = call_sync(*a->node, *w, grow{10000}, 60s);
  EXPECT_EQ(big_reply.error(), errc::frame_too_large)
      << (big_reply ? "answered" : big_reply.fail().message());
  EXPECT_EQ(a->cluster->stats().connections, 1u);
}

TEST(cluster, TagsAndUptimeAreListedEverywhere) {
  auto pa = free_port(), pb = free_port(), pc = free_port();
  auto oa = fast_options();
  oa.tags = {{"role", "db"}, {"zone", "eu-1"}};
  auto a = test_node::start("a", pa, oa);
  auto b = test_node::start("b", pb, fast_options({"127.0.0.1:" + std::to_string(pa)}));
  auto c = test_node::start("c", pc, fast_options({node_name("b", pb)}));
  ASSERT_TRUE(converged({a.get(), b.get(), c.get()}, 3));
  for (auto* t : {b.get(), c.get()}) {
    ASSERT_TRUE(eventually([&] {
      for (const auto& m : t->cluster->members()) {
        if (m.id == a->id) return m.tags == oa.tags && m.up_since <= t->node->now();
      }
      return false;
    }));
  }
  // Heartbeat counters move with gossip rounds.
  auto heartbeat_of = [](test_node& t, const std::string& id) {
    for (const auto& m : t.cluster->members()) {
      if (m.id == id) return m.heartbeat;
    }
    return std::uint64_t{0};
  };
  auto before = heartbeat_of(*b, a->id);
  EXPECT_TRUE(eventually([&] { return heartbeat_of(*b, a->id) > before; }));
}

TEST(cluster, HiddenNodeCallsButIsNotAMember) {
  auto pa = free_port(), pb = free_port(), ph = free_port();
  auto a = test_node::start("a", pa, fast_options());
  auto b = test_node::start("b", pb, fast_options({"127.0.0.1:" + std::to_string(pa)}));
  ASSERT_TRUE(converged({a.get(), b.get()}, 2));
  auto o = fast_options({"127.0.0.1:" + std::to_string(pa)});
  o.hidden = true;
  auto h = test_node::start("tool", ph, o);
  auto w = a->node->spawn<worker>();
  ASSERT_TRUE(w);
  ASSERT_TRUE(eventually([&] { return a->cluster->stats().connections == 2; }));
  ASSERT_TRUE(eventually([&] { return h->up_members() == 2; }));  // the tool's side is up too
  auto r = call_sync(*h->node, *w, echo{"from tool"}, 10s);
  ASSERT_TRUE(r) << r.fail().message();
  EXPECT_EQ(*r, "echo:from tool");
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(a->cluster->members().size(), 2u);
  EXPECT_EQ(b->cluster->members().size(), 2u);
  EXPECT_EQ(b->cluster->stats().connections, 1u);  // nobody dials a hidden node
  EXPECT_EQ(a->log->count(node_event_kind::node_up, h->id), 0u);
}

}  // namespace

namespace {

// A peer that holds the secret but speaks the cluster protocol badly: the transport alone.
struct raw_peer {
  asio::io_context io;
  std::unique_ptr<otpp::transport::endpoint> ep;
  std::thread runner;
  std::mutex mu;
  std::vector<std::pair<std::uint8_t, std::vector<std::uint8_t>>> frames;
  std::atomic<bool> down{false};
  otpp::transport::connection_ptr conn;

  explicit raw_peer(const std::string& id) {
    otpp::transport::config cfg;
    cfg.node_id = id;
    cfg.creation = 77;
    cfg.secret = test_secret;
    otpp::transport::connection_events ev;
    ev.on_frame = [this](const otpp::transport::connection_ptr&, otpp::transport::frame_view f) {
      std::lock_guard lock(mu);
      frames.emplace_back(f.kind, std::vector<std::uint8_t>(f.payload.begin(), f.payload.end()));
    };
    ev.on_down = [this](const otpp::transport::connection_ptr&, const otpp::failure&) {
      down = true;
    };
    ep = std::move(*otpp::transport::endpoint::create(io, cfg, std::move(ev)));
  }
  bool connect(std::uint16_t port) {
    std::promise<otpp::result<otpp::transport::connection_ptr>> p;
    ep->connect("127.0.0.1", port, [&](otpp::result<otpp::transport::connection_ptr> r) {
      p.set_value(std::move(r));
    });
    runner = std::thread([this] {
      auto guard = asio::make_work_guard(io);
      io.run();
    });
    auto r = p.get_future().get();
    if (!r) return false;
    conn = *r;
    return true;
  }
  template <class... T>
  void send(std::uint8_t kind, const T&... fields) {
    msgpack::sbuffer b;
    msgpack::packer<msgpack::sbuffer> pk(b);
    pk.pack_array(sizeof...(T));
    (pk.pack(fields), ...);
    (void)conn->send(kind, otpp::transport::bytes_view(
                               reinterpret_cast<const std::uint8_t*>(b.data()), b.size()));
  }
  // A send/call frame: the header array, then the body as its own object.
  template <class Body, class... T>
  void send_with_body(std::uint8_t kind, const Body& body, const T&... header) {
    msgpack::sbuffer b;
    msgpack::packer<msgpack::sbuffer> pk(b);
    pk.pack_array(sizeof...(T));
    (pk.pack(header), ...);
    pk.pack(body);
    (void)conn->send(kind, otpp::transport::bytes_view(
                               reinterpret_cast<const std::uint8_t*>(b.data()), b.size()));
  }
  void send_raw(std::uint8_t kind, std::vector<std::uint8_t> bytes) {
    (void)conn->send(kind, otpp::transport::bytes_view(bytes.data(), bytes.size()));
  }
  std::optional<msgpack::object_handle> wait_frame(std::uint8_t kind) {
    std::optional<msgpack::object_handle> out;
    eventually([&] {
      std::lock_guard lock(mu);
      for (auto& [k, bytes] : frames) {
        if (k == kind) {
          out = msgpack::unpack(reinterpret_cast<const char*>(bytes.data()), bytes.size());
          return true;
        }
      }
      return false;
    });
    return out;
  }
  ~raw_peer() {
    ep->close();
    io.stop();
    if (runner.joinable()) runner.join();
  }
};

TEST(cluster, CallFromTheWireToADeadPidIsAnsweredNoproc) {
  auto pa = free_port();
  auto a = test_node::start("a", pa, fast_options());
  raw_peer evil("evil@127.0.0.1:9");
  ASSERT_TRUE(evil.connect(pa));
  // [to serial, to creation, from serial, call id, tag] body
  evil.send_with_body(0x21, std::map<std::string, std::string>{{"text", "x"}},
                      std::uint64_t{999999}, a->node->creation(), std::uint64_t{5},
                      std::uint64_t{42}, std::string("echo"));
  auto reply = evil.wait_frame(0x22);
  ASSERT_TRUE(reply);
  auto arr = reply->get().as<std::vector<msgpack::object>>();
  EXPECT_EQ(arr.at(0).as<std::uint64_t>(), 42u);
  EXPECT_EQ(arr.at(1).as<int>(), 2);  // wire status noproc
  // A reply for a call nobody waits for is dropped, a send to nobody counted.
  evil.send(0x22, std::uint64_t{12345}, std::uint8_t{0}, 1);
  evil.send_with_body(0x20, 1, std::uint64_t{999999}, a->node->creation(), std::uint64_t{5}, false,
                      std::string("echo"));
  EXPECT_TRUE(eventually([&] { return a->cluster->stats().undeliverable >= 2; }));
  EXPECT_FALSE(evil.down.load());
}

TEST(cluster, APeerCannotAnswerACallMadeToAnotherNode) {
  auto pa = free_port(), pb = free_port();
  auto a = test_node::start("a", pa, fast_options());
  auto b = test_node::start("b", pb, fast_options({"127.0.0.1:" + std::to_string(pa)}));
  ASSERT_TRUE(converged({a.get(), b.get()}, 2));
  auto g = std::make_shared<gate>();
  auto slow = b->node->spawn<worker>(g);
  ASSERT_TRUE(slow);
  auto pending = otpp::call(*a->node, *slow, stall{}, 60s, asio::use_future);
  ASSERT_TRUE(eventually([&] { return otpp::pending_remote_calls(*a->node) == 1; }));
  // Call ids are small counters: a peer holding the secret can guess them.
  raw_peer evil("evil@127.0.0.1:9");
  ASSERT_TRUE(evil.connect(pa));
  const auto before = a->cluster->stats().frames_in;
  constexpr std::uint64_t forged = 20000;
  for (std::uint64_t id = 1; id <= forged; ++id) evil.send(0x22, id, std::uint8_t{0}, 666);
  // Every forged reply arrived and was dropped; the call still waits for B.
  ASSERT_TRUE(eventually([&] { return a->cluster->stats().frames_in >= before + forged; }));
  EXPECT_EQ(otpp::pending_remote_calls(*a->node), 1u);
  g->open();
  auto r = get(pending);
  ASSERT_TRUE(r) << r.fail().message();
  EXPECT_EQ(*r, 1);  // B's answer, not 666
}

TEST(cluster, MalformedClusterFrameClosesThatConnectionOnly) {
  auto pa = free_port(), pb = free_port();
  auto a = test_node::start("a", pa, fast_options());
  auto b = test_node::start("b", pb, fast_options({"127.0.0.1:" + std::to_string(pa)}));
  ASSERT_TRUE(converged({a.get(), b.get()}, 2));
  raw_peer evil("evil@127.0.0.1:9");
  ASSERT_TRUE(evil.connect(pa));
  // A call frame missing its fields.
  evil.send(0x21, std::uint64_t{1});
  EXPECT_TRUE(eventually([&] { return evil.down.load(); }));
  EXPECT_EQ(a->cluster->stats().bad_frames, 1u);
  // The cluster itself is untouched.
  EXPECT_TRUE(converged({a.get(), b.get()}, 2));
}

// Found by the fuzzer: msgpack sizes an array from its header before reading its elements.
TEST(cluster, FrameAnnouncingAHugeArrayIsRefusedWithoutAllocating) {
  auto pa = free_port();
  auto a = test_node::start("a", pa, fast_options());
  raw_peer evil("evil@127.0.0.1:9");
  ASSERT_TRUE(evil.connect(pa));
  evil.send_raw(0x20, {0xdd, 0xff, 0xff, 0xff, 0xff});  // array32 of 2^32-1 elements
  EXPECT_TRUE(eventually([&] { return evil.down.load(); }));
  EXPECT_EQ(a->cluster->stats().bad_frames, 1u);
  auto w = a->node->spawn<counter>(0);
  EXPECT_TRUE(w);  // the node lives on
}

TEST(cluster, UnknownFrameKindIsRefusedByTheTransport) {
  auto pa = free_port();
  auto a = test_node::start("a", pa, fast_options());
  raw_peer evil("evil@127.0.0.1:9");
  ASSERT_TRUE(evil.connect(pa));
  evil.send(0x7f, 1);
  EXPECT_TRUE(eventually([&] { return evil.down.load(); }));
  EXPECT_EQ(a->cluster->stats().bad_frames, 0u);  // never reached the cluster layer
}

TEST(cluster, MonitorNodesSendsEventsToAProcess) {
  auto pa = free_port(), pb = free_port();
  auto a = test_node::start("a", pa, fast_options());
  auto rec = std::make_shared<recorder>();
  struct listener : otpp::gen_server<listener> {
    explicit listener(std::shared_ptr<recorder> r) : rec(std::move(r)) {}
    static void define_handlers(otpp::handlers<listener>& h) {
      h.info<otpp::cluster::node_event>([](listener& self, otpp::cluster::node_event e) {
        self.rec->add(std::string(otpp::cluster::to_string(e.kind)) + ":" + e.node);
      });
    }
    std::shared_ptr<recorder> rec;
  };
  auto l = a->node->spawn<listener>(rec);
  ASSERT_TRUE(l);
  a->cluster->monitor_nodes(*l, true);
  auto b = test_node::start("b", pb, fast_options({"127.0.0.1:" + std::to_string(pa)}));
  ASSERT_TRUE(rec->wait_for_event("node_up:" + b->id));
  b.reset();
  ASSERT_TRUE(rec->wait_for_event("node_down:" + node_name("b", pb)));
}

}  // namespace
