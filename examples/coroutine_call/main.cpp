// A gen_server whose call handler is a coroutine: the "shop" node's quote server answers a quote
// for an order by awaiting, item by item, calls to the price list on the "prices" node (found by
// its global name), and replies with the combined result; an item the list has no price for, or
// a call that fails (an error value: timeout, nodedown...), is named in the quote. While the
// handler is suspended the quote server takes no other message (like a gen_server waiting in a
// call), but its node's threads are free. Two nodes in this one OS process, joined over TCP on
// 127.0.0.1.
//
// Run: example_coroutine_call   (exits 0 when both quotes came back as expected, else 1)
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <asio/use_awaitable.hpp>
#include <asio/use_future.hpp>

#include "otpp/registry/join_cluster.hpp"
#include "otpp/runtime.hpp"

namespace {

using namespace std::chrono_literals;

struct price_of {  // to the price list: the price of one item in cents, none if it has no price
  static constexpr std::string_view tag = "shop.price_of";
  using reply = std::optional<long>;
  std::string item;
  MSGPACK_DEFINE_MAP(item)
};

class price_list : public otpp::gen_server<price_list> {
 public:
  static void define_handlers(otpp::handlers<price_list>& h) {
    h.call<price_of>([](price_list& self, price_of m) -> std::optional<long> {
      auto it = self.prices_.find(m.item);
      if (it == self.prices_.end()) return std::nullopt;
      return it->second;
    });
  }

 private:
  std::map<std::string, long> prices_{{"apple", 40}, {"bread", 250}, {"cheese", 600}};
};

struct quote {
  long total = 0;                    // cents, of the items priced
  std::vector<std::string> missing;  // items not priced, and why
  MSGPACK_DEFINE_MAP(total, missing)
};
struct quote_order {  // to the quote server
  static constexpr std::string_view tag = "shop.quote_order";
  using reply = quote;
  std::map<std::string, long> items;  // item -> quantity
  MSGPACK_DEFINE_MAP(items)
};

class quote_server : public otpp::gen_server<quote_server> {
 public:
  static void define_handlers(otpp::handlers<quote_server>& h) {
    // Returning asio::awaitable<R> makes the handler a coroutine: each co_await suspends it
    // until the other node answers, and what it co_returns is the caller's reply.
    h.call<quote_order>([](quote_server& self, quote_order order) -> asio::awaitable<quote> {
      quote q;
      const auto prices = otpp::global("prices");
      for (const auto& [item, quantity] : order.items) {
        // Named first, then moved: never a temporary message inside co_await (g++ 12 bug).
        price_of ask{item};
        auto price =
            co_await otpp::call(self.this_node(), prices, std::move(ask), 5s, asio::use_awaitable);
        if (!price) {  // the call failed: timeout, nodedown, noproc (no price list)...
          q.missing.push_back(item + " (" + price.error().message() + ")");
        } else if (!*price) {  // the price list answered: no such item
          q.missing.push_back(item + " (no price)");
        } else {
          q.total += **price * quantity;
        }
      }
      co_return q;
    });
  }
};

[[noreturn]] void fail(const std::string& why) {
  std::printf("coroutine_call FAILED: %s\n", why.c_str());
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

// A started node named name@127.0.0.1:<free port>, joined through `seeds`.
std::unique_ptr<otpp::node> start_node(const std::string& name, otpp::cluster::options o) {
  for (int attempt = 1;; ++attempt) {
    auto id = name + "@127.0.0.1:" + std::to_string(free_port());
    auto n = std::make_unique<otpp::node>(otpp::node_options{.name = id, .threads = 2});
    n->start();
    auto joined = otpp::join_cluster(*n, o);
    if (joined) return n;
    if (joined.error() != std::errc::address_in_use || attempt == 5) {
      fail(id + ": join_cluster: " + joined.error().message());
    }
  }
}

}  // namespace

int main() {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  otpp::set_log_level(otpp::log_level::error);  // the story is on stdout; node logs: errors only
  otpp::cluster::options o;
  std::random_device rd;  // the nodes authenticate each other: a fresh secret per run
  for (int i = 0; i < 32; ++i) o.transport.secret += "0123456789abcdef"[rd() % 16];

  auto prices_node = start_node("prices", o);
  o.seeds = {prices_node->name()};
  auto shop_node = start_node("shop", o);
  std::printf("nodes %s and %s, joined over TCP\n", prices_node->name().c_str(),
              shop_node->name().c_str());

  auto prices = prices_node->spawn<price_list>();
  if (!prices) fail("spawn price_list");
  if (auto r = otpp::register_name(*prices_node, otpp::global("prices"), *prices); !r) {
    fail("register prices: " + r.error().message());
  }
  auto quotes = shop_node->spawn<quote_server>();
  if (!quotes) fail("spawn quote_server");
  // The shop's replica of the global names learns "prices" once the nodes are connected.
  for (auto until = std::chrono::steady_clock::now() + 30s;
       !otpp::whereis(*shop_node, otpp::global("prices"));) {
    if (std::chrono::steady_clock::now() > until) fail("shop never saw the global name prices");
    std::this_thread::sleep_for(20ms);
  }

  auto ask = [&](quote_order order) {
    auto q = otpp::call(*shop_node, *quotes, std::move(order), 30s, asio::use_future).get();
    if (!q) fail("quote: " + q.error().message());
    std::string missing;
    for (const auto& m : q->missing) missing += " " + m;
    std::printf("  total %ld cents%s%s\n", q->total,
                missing.empty() ? "" : ", missing:", missing.c_str());
    return *q;
  };
  std::printf("quote 2 apple + 1 bread + 1 cheese (3 calls from shop to prices, awaited):\n");
  auto q1 = ask(quote_order{{{"apple", 2}, {"bread", 1}, {"cheese", 1}}});
  if (q1.total != 2 * 40 + 250 + 600 || !q1.missing.empty()) fail("wrong first quote");
  std::printf("quote 3 bread + 1 caviar (the price list has no price for caviar):\n");
  auto q2 = ask(quote_order{{{"bread", 3}, {"caviar", 1}}});
  if (q2.total != 750 || q2.missing.size() != 1 || q2.missing[0] != "caviar (no price)")
    fail("wrong second quote");

  shop_node->stop();
  prices_node->stop();
  std::printf("done\n");
  return 0;
}
