// The everyday OTP pieces in one program: a named start, handle_continue, a call answered with
// a domain error, a coroutine handler that awaits another process (the g++ 12 rule: name the
// message before co_await), a catch-all handler, inspect (sys:get_state) and a synchronous stop.
#include <cstdio>
#include <map>
#include <string>

#include <asio/use_awaitable.hpp>
#include <asio/use_future.hpp>

#include "otpp/registry.hpp"
#include "otpp/runtime.hpp"

namespace {

using namespace std::chrono_literals;

// A domain error category: reaches callers intact (locally; on the wire as its code).
enum class stock_errc { out_of_stock = 1 };
class stock_category_t final : public std::error_category {
 public:
  const char* name() const noexcept override { return "stock"; }
  std::string message(int) const override { return "out of stock"; }
};
const stock_category_t stock_category{};

struct reserve {
  static constexpr std::string_view tag = "reserve";
  using reply = int;  // units left
  std::string sku;
  int units = 1;
  MSGPACK_DEFINE_MAP(sku, units)
};
struct restock {
  static constexpr std::string_view tag = "restock";
  std::string sku;
  int units = 0;
  MSGPACK_DEFINE_MAP(sku, units)
};

class inventory : public otpp::gen_server<inventory> {
 public:
  // Runs right after init, before any message: loading without holding the spawner.
  void handle_continue() { stock_ = {{"apple", 3}, {"pear", 0}}; }
  static void define_handlers(otpp::handlers<inventory>& h) {
    h.call<reserve>([](inventory& self, reserve r) -> otpp::result<int> {
      auto& left = self.stock_[r.sku];
      if (left < r.units) return otpp::failure(std::error_code(1, stock_category), r.sku);
      return left -= r.units;
    });
    h.cast<restock>([](inventory& self, restock r) { self.stock_[r.sku] += r.units; });
    h.unknown([](inventory&, const otpp::unknown_message& m) {
      std::printf("inventory: ignored '%.*s'\n", static_cast<int>(m.tag.size()), m.tag.data());
    });
  }
  int units(const std::string& sku) const {
    auto it = stock_.find(sku);
    return it == stock_.end() ? 0 : it->second;
  }

 private:
  std::map<std::string, int> stock_;
};

struct checkout {
  static constexpr std::string_view tag = "checkout";
  using reply = std::string;
  std::string sku;
  MSGPACK_DEFINE_MAP(sku)
};
class shop : public otpp::gen_server<shop> {
 public:
  static void define_handlers(otpp::handlers<shop>& h) {
    h.call<checkout>([](shop& self, checkout c) -> asio::awaitable<std::string> {
      auto where = otpp::whereis(self.this_node(), "inventory");
      if (!where) co_return "no inventory";
      reserve request{c.sku, 1};  // named first: never a braced temporary inside co_await
      auto r = co_await otpp::call(self.this_node(), *where, std::move(request), 1s,
                                   asio::use_awaitable);
      co_return r ? c.sku + ": reserved, " + std::to_string(*r) + " left"
                  : c.sku + ": " + r.fail().message();
    });
  }
};

}  // namespace

int main() {
  otpp::node node({.name = "otp_basics", .threads = 2});
  node.start();
  auto inv = otpp::spawn_named<inventory>(node, "inventory", {});
  auto again = otpp::spawn_named<inventory>(node, "inventory", {});
  std::printf("second start: %s (holder %s)\n", again.error().message().c_str(),
              again.reason().c_str());
  auto s = node.spawn<shop>();
  if (!inv || !s) return 1;
  for (const char* sku : {"apple", "pear"}) {
    auto r = otpp::call(node, *s, checkout{sku}, asio::use_future).get();
    std::printf("%s\n", r ? r->c_str() : r.fail().message().c_str());
  }
  (void)otpp::cast(node, *inv, restock{"pear", 5});
  (void)otpp::send(node, *inv, checkout{"typo"});  // no info handler: the catch-all sees it
  auto pears = otpp::inspect<inventory>(
                   node, *inv, [](const inventory& i) { return i.units("pear"); }, asio::use_future)
                   .get();
  std::printf("pears in stock: %d\n", pears.value_or(-1));
  auto stopped = otpp::stop(node, *inv, otpp::exit_reason::shutdown(), 1s, asio::use_future).get();
  std::printf("inventory stopped: %s\n", stopped ? "ok" : stopped.fail().message().c_str());
  node.stop();
  return pears.value_or(-1) == 5 && stopped ? 0 : 1;
}
