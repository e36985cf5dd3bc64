// Publish/subscribe across nodes with process groups (otpp::pg, Erlang's pg): a topic is a group;
// subscribers on three nodes join it, a publisher on one of them casts to the group (every node
// holds a replica of the members, so publishing is a local lookup plus one cast per member), and
// everyone prints what they got. A subscriber that leaves the group, or dies, is taken out of
// every replica and is not sent to any more. Three nodes in this one OS process, joined over TCP
// on 127.0.0.1.
//
// Run: example_pubsub   (exits 0 when every subscriber got exactly what it should, else 1)
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <asio/use_future.hpp>

#include "otpp/registry/join_cluster.hpp"
#include "otpp/runtime.hpp"

namespace {

using namespace std::chrono_literals;

constexpr std::string_view topic = "news";

struct headline {  // what the publisher casts to the topic
  static constexpr std::string_view tag = "pubsub.headline";
  int number = 0;
  std::string text;
  MSGPACK_DEFINE_MAP(number, text)
};
struct unsubscribe {
  static constexpr std::string_view tag = "pubsub.unsubscribe";
  OTPP_NO_FIELDS()
};
struct received {  // a call: the headlines this subscriber got so far
  static constexpr std::string_view tag = "pubsub.received";
  using reply = std::vector<int>;
  OTPP_NO_FIELDS()
};

class subscriber : public otpp::gen_server<subscriber> {
 public:
  explicit subscriber(std::string name) : name_(std::move(name)) {}
  // Subscribing is joining the topic's group; the membership goes with the process.
  otpp::result<void> init() { return otpp::pg::join(this_node(), topic, self()); }
  static void define_handlers(otpp::handlers<subscriber>& h) {
    h.cast<headline>([](subscriber& self, headline m) {
      std::printf("  %s on %s got headline %d: %s\n", self.name_.c_str(),
                  self.this_node().name().c_str(), m.number, m.text.c_str());
      self.got_.push_back(m.number);
    });
    h.cast<unsubscribe>([](subscriber& self, unsubscribe) {
      (void)otpp::pg::leave(self.this_node(), topic, self.self());
    });
    h.call<received>([](subscriber& self, received) { return self.got_; });
  }

 private:
  std::string name_;
  std::vector<int> got_;
};

[[noreturn]] void fail(const std::string& why) {
  std::printf("pubsub FAILED: %s\n", why.c_str());
  std::exit(1);
}

std::uint16_t free_port() {  // the kernel's pick; someone may take it before we listen: retried
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (s < 0 || ::bind(s, reinterpret_cast<sockaddr*>(&a), len) != 0 ||
      ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    fail("no free port on 127.0.0.1");
  }
  ::close(s);
  return ntohs(a.sin_port);
}

// A started node named name@127.0.0.1:<free port>, joined through o.seeds.
std::unique_ptr<otpp::node> start_node(const std::string& name, const otpp::cluster::options& o) {
  for (int attempt = 1;; ++attempt) {
    auto id = name + "@127.0.0.1:" + std::to_string(free_port());
    auto n = std::make_unique<otpp::node>(otpp::node_options{.name = id, .threads = 2});
    n->start();
    auto joined = otpp::join_cluster(*n, o);  // + global names, process groups, remote spawn
    if (joined) return n;
    if (joined.error() != std::errc::address_in_use || attempt == 5) {
      fail(id + ": join_cluster: " + joined.error().message());
    }
  }
}

// Polls `done` until it holds, at most 30 s (replicas converge within gossip rounds).
void await(const std::function<bool()>& done, const std::string& what) {
  for (auto until = std::chrono::steady_clock::now() + 30s; !done();) {
    if (std::chrono::steady_clock::now() > until) fail(what + " (waited 30 s)");
    std::this_thread::sleep_for(20ms);
  }
}

}  // namespace

int main() {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  otpp::set_log_level(otpp::log_level::error);  // the story is on stdout; node logs: errors only
  otpp::cluster::options o;
  std::random_device rd;  // the nodes authenticate each other: a fresh secret per run
  for (int i = 0; i < 32; ++i) o.transport.secret += "0123456789abcdef"[rd() % 16];
  auto n1 = start_node("n1", o);
  o.seeds = {n1->name()};
  auto n2 = start_node("n2", o);
  auto n3 = start_node("n3", o);
  otpp::node& publisher = *n2;

  // What the publisher's replica sees of the topic (pg::monitor sends the same as a message).
  otpp::pg::subscribe(publisher, std::string(topic), [](const otpp::pg::membership_change& c) {
    std::printf("  (the publisher's replica of '%s': %zu joined, %zu left)\n", c.group.c_str(),
                c.joined.size(), c.left.size());
  });

  struct sub {
    std::string name;
    otpp::node* on;
    otpp::pid pid;
  };
  std::vector<sub> subs{{"alice", n1.get(), {}},
                        {"bob", n2.get(), {}},
                        {"carol", n3.get(), {}},
                        {"dave", n3.get(), {}}};
  for (auto& s : subs) {
    auto p = s.on->spawn<subscriber>(s.name);
    if (!p) fail("spawn " + s.name + ": " + p.error().message());
    s.pid = *p;
  }
  auto members_seen_by_publisher = [&] { return otpp::pg::members(publisher, topic).size(); };
  await([&] { return members_seen_by_publisher() == 4; }, "the publisher did not see 4 members");
  std::printf("alice (n1), bob (n2), carol and dave (n3) subscribed to '%s'\n",
              std::string(topic).c_str());

  auto got = [](const sub& s) {
    auto r = otpp::call(*s.on, s.pid, received{}, 10s, asio::use_future).get();
    if (!r) fail("ask " + s.name + ": " + r.error().message());
    return *r;
  };
  auto publish = [&](int number, const std::string& text) {
    std::printf("n2 publishes headline %d to the %zu subscribers its replica lists\n", number,
                members_seen_by_publisher());
    return otpp::pg::cast(publisher, topic, headline{number, text});  // how many were sent
  };

  if (publish(1, "otpp joins the cluster") != 4) fail("headline 1 did not go to 4 subscribers");
  for (auto& s : subs)
    await([&] { return got(s) == std::vector<int>{1}; }, s.name + " did not get headline 1");

  std::printf("bob unsubscribes; carol dies\n");
  (void)otpp::cast(*n2, subs[1].pid, unsubscribe{});
  n3->exit(subs[2].pid, otpp::exit_reason::kill());
  await([&] { return members_seen_by_publisher() == 2; }, "the publisher still lists bob or carol");

  if (publish(2, "groups forget who left") != 2) fail("headline 2 did not go to 2 subscribers");
  for (auto* s : {&subs[0], &subs[3]}) {
    await([&] { return got(*s) == std::vector<int>{1, 2}; }, s->name + " did not get headline 2");
  }
  if (got(subs[1]) != std::vector<int>{1}) fail("bob got a headline after he unsubscribed");
  std::printf("alice and dave got both headlines; bob, still running, got only the first\n");

  n3->stop();
  n2->stop();
  n1->stop();
  std::printf("done\n");
  return 0;
}
