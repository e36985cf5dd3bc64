// Introspection (otpp/registry/introspect.hpp): what a node answers about itself, locally and
// to a peer over real TCP, its refusals, its timeouts, malformed frames, and pid::parse.
#include "otpp/registry/introspect.hpp"

#include <future>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "cluster/cluster_support.hpp"
#include "common/eventually.hpp"
#include "otpp/registry.hpp"
#include "otpp/registry/join_cluster.hpp"

namespace otpp_test {
namespace {

using namespace std::chrono_literals;
namespace in = otpp::introspect;

struct echo {
  static constexpr std::string_view tag = "introspect_test.echo";
  using reply = std::string;
  std::string text;
  MSGPACK_DEFINE_MAP(text)
};
struct hold {
  static constexpr std::string_view tag = "introspect_test.hold";
  using reply = std::string;
  OTPP_NO_FIELDS()
};

class echo_server : public otpp::gen_server<echo_server> {
 public:
  static void define_handlers(otpp::handlers<echo_server>& h) {
    h.call<echo>([](echo_server&, echo e) { return "echo:" + e.text; });
    h.call<hold>([](echo_server& self, hold, otpp::reply_to<std::string> r) {
      self.held_.push_back(std::move(r));
    });
  }

 private:
  std::vector<otpp::reply_to<std::string>> held_;
};

// Waits for a callback-style request's answer.
template <class T, class Start>
otpp::result<T> ask(Start start) {
  auto p = std::make_shared<std::promise<otpp::result<T>>>();
  auto f = p->get_future();
  start([p](otpp::result<T> r) { p->set_value(std::move(r)); });
  if (f.wait_for(60s) != std::future_status::ready) {
    ADD_FAILURE() << "no answer in 60 s";
    return otpp::failure(otpp::errc::timeout, "test bound");
  }
  return f.get();
}

msgpack::object_handle dynamic(const std::string& type, const std::string& text = {}) {
  msgpack::sbuffer b;
  msgpack::packer<msgpack::sbuffer> pk(b);
  pk.pack_map(text.empty() ? 1 : 2);
  pk.pack(std::string("type"));
  pk.pack(type);
  if (!text.empty()) {
    pk.pack(std::string("text"));
    pk.pack(text);
  }
  return msgpack::unpack(b.data(), b.size());
}

struct member {
  std::unique_ptr<otpp::node> node;
  otpp::cluster::service* cluster = nullptr;
  std::string id;
};

std::unique_ptr<member> start_member(const std::string& name, std::vector<std::string> seeds,
                                     bool serve = true) {
  auto m = std::make_unique<member>();
  m->id = node_name(name, free_port());
  m->node = std::make_unique<otpp::node>(otpp::node_options{.name = m->id, .threads = 2});
  m->node->start();
  auto joined = serve ? otpp::join_cluster(*m->node, fast_options(std::move(seeds)))
                      : otpp::cluster::join(*m->node, fast_options(std::move(seeds)));
  EXPECT_TRUE(joined) << joined.fail().message();
  if (joined) m->cluster = *joined;
  return m;
}

bool ready_to(const member& from, const member& to) {
  return eventually([&] {
    for (const auto& p : from.cluster->ready_peers()) {
      if (p.id() == to.id) return true;
    }
    return false;
  });
}

TEST(PidParse, RoundTripsAndRejectsWhatIsNoPid) {
  otpp::pid p(otpp::node_atom::intern("api@127.0.0.1:4370"), 7, 42);
  auto back = otpp::pid::parse(p.to_string());
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, p);
  for (const char* bad :
       {"", "<>", "<a.1>", "<a@h:1.x.2>", "<a@h:1.1.0>", "a@h:1.1.2", "<a@h:1.1.2", "<a b@h:1.1.2>",
        "<a@h:1.99999999999.2>", "<.1.2>", "<a@h:1.1.-2>", "<a@h:1.1.2 >"}) {
    EXPECT_FALSE(otpp::pid::parse(bad)) << bad;
  }
}

TEST(Introspect, ALoneNodeAnswersLocally) {
  otpp::node n({.name = "alone@127.0.0.1:1", .threads = 2});
  n.start();
  auto s = n.spawn_opt<echo_server>({.label = "echoes"});
  ASSERT_TRUE(s);
  ASSERT_TRUE(otpp::register_name(n, "echo", *s));
  auto sum = in::summary(n);
  EXPECT_EQ(sum.id, n.name());
  EXPECT_EQ(sum.members, 1u);
  EXPECT_GE(sum.processes, 1u);
  auto list = in::processes(n, {.sort = "mailbox", .limit = 0});
  ASSERT_EQ(list.total, n.process_count());
  bool seen = false;
  for (const auto& e : list.processes) {
    if (e.pid == s->to_string()) {
      seen = true;
      EXPECT_EQ(e.names, std::vector<std::string>{"echo"});
      EXPECT_EQ(e.behaviour, "echoes");
      EXPECT_NE(e.type.find("echo_server"), std::string::npos) << e.type;
    }
  }
  EXPECT_TRUE(seen);
  EXPECT_THROW((void)in::processes(n, {.sort = "colour", .limit = 0}), std::invalid_argument);
  EXPECT_EQ(in::members(n).size(), 1u);
  EXPECT_TRUE(in::globals(n).empty());
  EXPECT_TRUE(in::groups(n).empty());
  // Asking itself works without the wire, a call included (by local name).
  auto self = ask<in::node_summary>([&](auto done) { in::remote_summary(n, n.name(), 5s, done); });
  ASSERT_TRUE(self) << self.fail().message();
  EXPECT_EQ(self->id, n.name());
  auto reply = ask<msgpack::object_handle>([&](auto done) {
    in::remote_call(n, n.name(), "echo", dynamic("introspect_test.echo", "me"), 5s, done);
  });
  ASSERT_TRUE(reply) << reply.fail().message();
  EXPECT_EQ(reply->get().as<std::string>(), "echo:me");
  // Another node, without a cluster: nodedown.
  auto other =
      ask<in::node_summary>([&](auto done) { in::remote_summary(n, "x@127.0.0.1:2", 5s, done); });
  ASSERT_FALSE(other);
  EXPECT_EQ(other.fail().code, otpp::errc::nodedown);
  EXPECT_FALSE(in::serve(n));  // nothing to serve on
}

TEST(Introspect, APeerAsksOverTheWire) {
  auto a = start_member("a", {});
  auto b = start_member("b", {a->id});
  ASSERT_TRUE(a->cluster && b->cluster);
  ASSERT_TRUE(ready_to(*a, *b));
  auto server = b->node->spawn<echo_server>();
  ASSERT_TRUE(server);
  ASSERT_TRUE(otpp::register_name(*b->node, otpp::global("svc"), *server));
  ASSERT_TRUE(otpp::pg::join(*b->node, "topic", *server));

  auto sum = ask<in::node_summary>([&](auto d) { in::remote_summary(*a->node, b->id, 10s, d); });
  ASSERT_TRUE(sum) << sum.fail().message();
  EXPECT_EQ(sum->id, b->id);
  EXPECT_EQ(sum->creation, b->node->creation());
  auto members = ask<std::vector<in::member_entry>>(
      [&](auto d) { in::remote_members(*a->node, b->id, 10s, d); });
  ASSERT_TRUE(members);
  EXPECT_TRUE(eventually([&] {
    auto m = ask<std::vector<in::member_entry>>(
        [&](auto d) { in::remote_members(*a->node, b->id, 10s, d); });
    return m && m->size() == 2;
  }));
  auto names = ask<std::vector<in::global_entry>>(
      [&](auto d) { in::remote_globals(*a->node, b->id, 10s, d); });
  ASSERT_TRUE(names);
  ASSERT_EQ(names->size(), 1u);
  EXPECT_EQ((*names)[0].name, "svc");
  EXPECT_EQ((*names)[0].pid, server->to_string());
  EXPECT_EQ((*names)[0].node, b->id);
  auto groups = ask<std::vector<in::group_entry>>(
      [&](auto d) { in::remote_groups(*a->node, b->id, 10s, d); });
  ASSERT_TRUE(groups);
  ASSERT_EQ(groups->size(), 1u);
  EXPECT_EQ((*groups)[0].members, std::vector<std::string>{server->to_string()});
  auto list = ask<in::process_list>(
      [&](auto d) { in::remote_processes(*a->node, b->id, {.sort = "pid", .limit = 1}, 10s, d); });
  ASSERT_TRUE(list);
  EXPECT_EQ(list->processes.size(), 1u);
  EXPECT_GE(list->total, 1u);
  auto bad_sort = ask<in::process_list>(
      [&](auto d) { in::remote_processes(*a->node, b->id, {.sort = "size", .limit = 0}, 10s, d); });
  ASSERT_FALSE(bad_sort);
  EXPECT_EQ(bad_sort.fail().code, otpp::errc::invalid_argument);

  // Calls through b: by global name, by pid; and their errors come back as they are.
  auto reply = ask<msgpack::object_handle>([&](auto d) {
    in::remote_call(*a->node, b->id, "svc", dynamic("introspect_test.echo", "x"), 10s, d);
  });
  ASSERT_TRUE(reply) << reply.fail().message();
  EXPECT_EQ(reply->get().as<std::string>(), "echo:x");
  auto by_pid = ask<msgpack::object_handle>([&](auto d) {
    in::remote_call(*a->node, b->id, server->to_string(), dynamic("introspect_test.echo", "y"), 10s,
                    d);
  });
  ASSERT_TRUE(by_pid);
  EXPECT_EQ(by_pid->get().as<std::string>(), "echo:y");
  auto nobody = ask<msgpack::object_handle>([&](auto d) {
    in::remote_call(*a->node, b->id, "nobody", dynamic("introspect_test.echo"), 10s, d);
  });
  ASSERT_FALSE(nobody);
  EXPECT_EQ(nobody.fail().code, otpp::errc::noproc);
  auto not_pid = ask<msgpack::object_handle>([&](auto d) {
    in::remote_call(*a->node, b->id, "<junk>", dynamic("introspect_test.echo"), 10s, d);
  });
  ASSERT_FALSE(not_pid);
  EXPECT_EQ(not_pid.fail().code, otpp::errc::invalid_argument);
  auto unknown_type = ask<msgpack::object_handle>([&](auto d) {
    in::remote_call(*a->node, b->id, "svc", dynamic("introspect_test.nothing"), 10s, d);
  });
  ASSERT_FALSE(unknown_type);
  EXPECT_EQ(unknown_type.fail().code, otpp::errc::bad_message);
  auto held = ask<msgpack::object_handle>([&](auto d) {
    in::remote_call(*a->node, b->id, "svc", dynamic("introspect_test.hold"), 300ms, d);
  });
  ASSERT_FALSE(held);
  EXPECT_EQ(held.fail().code, otpp::errc::timeout);
  auto cast = ask<void>([&](auto d) {
    in::remote_cast(*a->node, b->id, "svc", dynamic("introspect_test.echo", "c"), 10s, d);
  });
  EXPECT_TRUE(cast) << cast.fail().message();
}

TEST(Introspect, ANodeRefusesWhatItsOptionsForbid) {
  auto a = start_member("a", {});
  auto b = start_member("b", {a->id});
  ASSERT_TRUE(a->cluster && b->cluster);
  ASSERT_TRUE(in::serve(*b->node, {.allow_call = false, .allow_stop = false}));
  ASSERT_TRUE(ready_to(*a, *b));
  auto call = ask<msgpack::object_handle>([&](auto d) {
    in::remote_call(*a->node, b->id, "x", dynamic("introspect_test.echo"), 10s, d);
  });
  ASSERT_FALSE(call);
  EXPECT_EQ(call.fail().code, otpp::errc::not_authorised);
  auto stop = ask<void>([&](auto d) { in::remote_stop(*a->node, b->id, 10s, d); });
  ASSERT_FALSE(stop);
  EXPECT_EQ(stop.fail().code, otpp::errc::not_authorised);
  // An allowed stop begins 100 ms after its answer: a refused one must not come later either.
  std::this_thread::sleep_for(300ms);
  EXPECT_TRUE(b->node->running());
  // Reading is still served.
  EXPECT_TRUE(ask<in::node_summary>([&](auto d) { in::remote_summary(*a->node, b->id, 10s, d); }));
  // And a node that allows it stops, gracefully, after answering.
  auto stop_a = ask<void>([&](auto d) { in::remote_stop(*b->node, a->id, 10s, d); });
  EXPECT_TRUE(stop_a) << stop_a.fail().message();
  EXPECT_TRUE(eventually([&] { return !a->node->running(); }));
}

TEST(Introspect, SilenceTimesOutAndALostPeerFailsWhatIsPending) {
  auto a = start_member("a", {});
  auto mute = start_member("mute", {a->id}, false);  // cluster::join only: serves nothing
  ASSERT_TRUE(a->cluster && mute->cluster);
  ASSERT_TRUE(ready_to(*a, *mute));
  auto silent =
      ask<in::node_summary>([&](auto d) { in::remote_summary(*a->node, mute->id, 300ms, d); });
  ASSERT_FALSE(silent);
  EXPECT_EQ(silent.fail().code, otpp::errc::timeout);
  // A request still pending when the peer goes: nodedown, long before its own timeout.
  auto p = std::make_shared<std::promise<otpp::result<in::node_summary>>>();
  auto f = p->get_future();
  in::remote_summary(*a->node, mute->id, 120s, [p](auto r) { p->set_value(std::move(r)); });
  mute->node->stop();
  ASSERT_EQ(f.wait_for(60s), std::future_status::ready);
  auto lost = f.get();
  ASSERT_FALSE(lost);
  EXPECT_EQ(lost.fail().code, otpp::errc::nodedown);
  // And a node this one never heard of.
  auto stranger = ask<in::node_summary>(
      [&](auto d) { in::remote_summary(*a->node, "stranger@127.0.0.1:9", 10s, d); });
  ASSERT_FALSE(stranger);
  EXPECT_EQ(stranger.fail().code, otpp::errc::nodedown);
}

TEST(Introspect, MalformedFramesAreLoggedAndAnsweredWhenTheyCanBe) {
  std::mutex mu;
  std::vector<std::string> lines;
  auto previous = otpp::set_log_sink([&](otpp::log_level, std::string_view c, std::string_view t) {
    std::lock_guard lock(mu);
    lines.push_back(std::string(c) + ": " + std::string(t));
  });
  auto a = start_member("a", {}, false);
  auto b = start_member("b", {a->id});
  ASSERT_TRUE(a->cluster && b->cluster);
  ASSERT_TRUE(ready_to(*a, *b));
  // a speaks raw frames on the channel and records what b answers.
  auto replies = std::make_shared<std::vector<std::vector<std::uint64_t>>>();
  auto replies_mu = std::make_shared<std::mutex>();
  a->cluster->open_channel(
      otpp::cluster::channels::introspect,
      {.on_frame =
           [replies, replies_mu](const otpp::cluster::peer&, std::span<const std::uint8_t> bytes) {
             auto h = msgpack::unpack(reinterpret_cast<const char*>(bytes.data()), bytes.size());
             const auto& o = h.get();
             std::lock_guard lock(*replies_mu);
             replies->push_back(
                 {o.via.array.ptr[2].as<std::uint64_t>(), o.via.array.ptr[3].as<std::uint64_t>()});
           },
       .on_peer_up = {},
       .on_peer_down = {}});
  auto send = [&](auto pack) {
    msgpack::sbuffer buf;
    msgpack::packer<msgpack::sbuffer> pk(buf);
    pack(pk);
    auto atom = otpp::node_atom::find(b->id);
    return a->cluster->send_channel(
        atom, 0, otpp::cluster::channels::introspect,
        {reinterpret_cast<const std::uint8_t*>(buf.data()), buf.size()});
  };
  const std::uint8_t garbage[] = {0xc1, 0xff, 0x00};
  ASSERT_TRUE(a->cluster->send_channel(otpp::node_atom::find(b->id), 0,
                                       otpp::cluster::channels::introspect, garbage));
  ASSERT_TRUE(send([](auto& pk) {  // an unknown request kind
    pk.pack_array(5);
    pk.pack(1);
    pk.pack(1);
    pk.pack(7);
    pk.pack(99);
    pk.pack_map(0);
  }));
  ASSERT_TRUE(send([](auto& pk) {  // another version
    pk.pack_array(5);
    pk.pack(2);
    pk.pack(1);
    pk.pack(8);
    pk.pack(1);
    pk.pack_map(0);
  }));
  ASSERT_TRUE(send([](auto& pk) {  // a request cut short
    pk.pack_array(4);
    pk.pack(1);
    pk.pack(1);
    pk.pack(9);
    pk.pack(1);
  }));
  ASSERT_TRUE(send([](auto& pk) {  // call arguments of the wrong shape
    pk.pack_array(5);
    pk.pack(1);
    pk.pack(1);
    pk.pack(10);
    pk.pack(6);
    pk.pack(std::string("not a map"));
  }));
  ASSERT_TRUE(send([](auto& pk) {  // and after all that, a well-formed summary request
    pk.pack_array(5);
    pk.pack(1);
    pk.pack(1);
    pk.pack(11);
    pk.pack(1);
    pk.pack_map(0);
  }));
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lock(*replies_mu);
    return replies->size() == 5;
  }));
  {
    std::lock_guard lock(*replies_mu);
    std::map<std::uint64_t, std::uint64_t> status;
    for (const auto& r : *replies) status[r[0]] = r[1];
    EXPECT_EQ(status[7], 12u);  // unknown_request
    EXPECT_EQ(status[8], 11u);  // unsupported_version
    EXPECT_EQ(status[9], 10u);  // malformed_request
    EXPECT_EQ(status[10], 4u);  // bad_message
    EXPECT_EQ(status[11], 0u);  // ok: b still answers properly
  }
  bool logged = false;
  {
    std::lock_guard lock(mu);
    for (const auto& l : lines)
      logged |= l.find("malformed frame from " + a->id) != std::string::npos;
  }
  EXPECT_TRUE(logged);
  a->cluster->close_channel(otpp::cluster::channels::introspect);
  b.reset();
  a.reset();
  otpp::set_log_sink(previous);
}

TEST(Introspect, SeedsSayWhyTheyDoNotConnect) {
  auto a = start_member("a", {});
  ASSERT_TRUE(a->cluster);
  otpp::node wrong({.name = node_name("wrong", free_port()), .threads = 2});
  wrong.start();
  auto o = fast_options({a->id, node_name("nobody", free_port())});
  o.transport.secret = "ffffffffffffffffffffffffffffffff";
  auto c = otpp::cluster::join(wrong, o);
  ASSERT_TRUE(c);
  EXPECT_TRUE(eventually([&] {
    auto s = (*c)->seeds();
    return s.size() == 2 && s[0].last_error == otpp::errc::not_authorised &&
           s[1].last_error == otpp::errc::connection_refused && s[0].failed_attempts > 0 &&
           !s[0].connected;
  }));
  auto b = start_member("b", {a->id});
  ASSERT_TRUE(b->cluster);
  EXPECT_TRUE(eventually([&] {
    auto s = b->cluster->seeds();
    return s.size() == 1 && s[0].connected && !s[0].last_error;
  }));
}

}  // namespace
}  // namespace otpp_test
