// The main demo: a node with a few processes. It spawns workers, calls them (typed replies,
// a coroutine handler calling another process), registers a name, crashes one worker and shows
// the monitor firing, then stops the node gracefully.
#include <asio/use_awaitable.hpp>
#include <asio/use_future.hpp>
#include <cstdio>
#include <future>
#include <string>

#include <otpp/registry.hpp>
#include <otpp/runtime.hpp>

namespace {

struct add {
  static constexpr std::string_view tag = "add";
  using reply = long;
  long amount = 0;
  MSGPACK_DEFINE_MAP(amount)
};
struct fail_now {
  static constexpr std::string_view tag = "fail_now";
  using reply = long;
  std::string why;
  MSGPACK_DEFINE_MAP(why)
};
struct sum_of {  // asks an aggregator to call several accounts and add their totals
  static constexpr std::string_view tag = "sum_of";
  using reply = long;
  std::vector<otpp::pid> accounts;
  MSGPACK_DEFINE_MAP(accounts)
};
struct watch {  // a call, so the monitor is in place before the caller goes on
  static constexpr std::string_view tag = "watch";
  using reply = bool;
  otpp::pid who;
  MSGPACK_DEFINE_MAP(who)
};

class account : public otpp::gen_server<account> {
 public:
  explicit account(std::string owner) : owner_(std::move(owner)) {}
  static void define_handlers(otpp::handlers<account>& h) {
    h.call<add>([](account& self, add a) { return self.total_ += a.amount; });
    h.call<fail_now>([](account&, fail_now f) -> long { throw std::runtime_error(f.why); });
  }
  void terminate(const otpp::exit_reason& why) {
    std::printf("  [%s] terminate(%s)\n", owner_.c_str(), why.text().c_str());
  }

 private:
  std::string owner_;
  long total_ = 0;
};

class aggregator : public otpp::gen_server<aggregator> {
 public:
  explicit aggregator(std::promise<std::string>* down_seen) : down_seen_(down_seen) {}
  static void define_handlers(otpp::handlers<aggregator>& h) {
    // A coroutine handler: calls other processes without blocking a thread.
    h.call<sum_of>([](aggregator& self, sum_of s) -> asio::awaitable<long> {
      long sum = 0;
      for (const auto& p : s.accounts) {
        auto r = co_await otpp::call(self.this_node(), p, add{0}, asio::use_awaitable);
        if (r) sum += *r;
      }
      co_return sum;
    });
    h.call<watch>([](aggregator& self, watch w) {
      self.monitor(w.who);
      return true;
    });
    h.info<otpp::down>([](aggregator& self, otpp::down d) {
      std::printf("  monitor fired: %s is down, reason '%s'\n", d.who.to_string().c_str(),
                  d.reason.text().c_str());
      self.down_seen_->set_value(d.reason.text());
    });
  }

 private:
  std::promise<std::string>* down_seen_;
};

}  // namespace

int main() {
  otpp::node node({.name = "demo@localhost"});
  node.start();
  std::printf("node %s started (creation %u)\n", node.name().c_str(), node.creation());

  auto alice = node.spawn<account>("alice");
  auto bob = node.spawn<account>("bob");
  std::promise<std::string> down_seen;
  auto agg = node.spawn<aggregator>(&down_seen);
  if (!alice || !bob || !agg) return 1;
  std::printf("spawned alice %s, bob %s, aggregator %s\n", alice->to_string().c_str(),
              bob->to_string().c_str(), agg->to_string().c_str());

  (void)otpp::register_name(node, "alice", *alice);
  auto a = otpp::call(node, otpp::by_name("alice"), add{40}, asio::use_future).get();
  auto b = otpp::call(node, *bob, add{2}, asio::use_future).get();
  std::printf("call alice add 40 -> %ld, call bob add 2 -> %ld\n", *a, *b);
  auto sum = otpp::call(node, *agg, sum_of{{*alice, *bob}}, asio::use_future).get();
  std::printf("aggregator (coroutine calling both) -> %ld\n", sum ? *sum : -1);

  (void)otpp::call(node, *agg, watch{*bob}, asio::use_future).get();
  auto crashed = otpp::call(node, *bob, fail_now{"disk on fire"}, asio::use_future).get();
  std::printf("call bob fail_now -> error '%s', reason '%s'\n", crashed.error().message().c_str(),
              crashed.reason().c_str());
  auto down_future = down_seen.get_future();
  if (down_future.wait_for(std::chrono::seconds(10)) != std::future_status::ready) return 1;
  down_future.get();

  auto gone = otpp::call(node, *bob, add{1}, asio::use_future).get();
  std::printf("call bob again -> %s\n", gone.error().message().c_str());
  auto nobody = otpp::call(node, otpp::by_name("carol"), add{1}, asio::use_future).get();
  std::printf("call by unknown name 'carol' -> %s\n", nobody.error().message().c_str());

  std::printf("stopping node gracefully (%zu processes)\n", node.process_count());
  node.stop();
  std::printf("node stopped\n");
  return 0;
}
