// The order workflow across three cluster nodes over TCP on 127.0.0.1 (in this process):
// the saga runs on `orders`, reserves stock on `stock`, charges payment on `payments` and
// confirms the reservation on `stock`.
// When payment is declined (a domain error of the payment service, not a transport error),
// the reservation is released, once, and the stock is back where it was.
#include <future>
#include <map>
#include <set>

#include <gtest/gtest.h>
#include <asio/use_future.hpp>

#include "cluster/cluster_support.hpp"
#include "otpp/resilience/saga.hpp"

namespace otpp_test {
namespace {

using namespace std::chrono_literals;
using otpp::errc;
using otpp::failure;
using otpp::result;
namespace res = otpp::resilience;

struct reserve_stock {
  static constexpr std::string_view tag = "saga_test.reserve";
  using reply = int;  // units left
  std::string key;
  int units = 0;
  MSGPACK_DEFINE_MAP(key, units)
};
struct release_stock {
  static constexpr std::string_view tag = "saga_test.release";
  using reply = bool;  // something was released
  std::string key;
  MSGPACK_DEFINE_MAP(key)
};
struct confirm_stock {
  static constexpr std::string_view tag = "saga_test.confirm";
  using reply = bool;  // the reservation was there
  std::string key;
  MSGPACK_DEFINE_MAP(key)
};
struct stock_state {
  int available = 0;
  int releases = 0;  // releases that released something
  int reserve_requests = 0;
  int confirmed = 0;
  MSGPACK_DEFINE_MAP(available, releases, reserve_requests, confirmed)
};
struct query {
  static constexpr std::string_view tag = "saga_test.query";
  using reply = stock_state;
  OTPP_NO_FIELDS()
};

// Stock keyed by idempotency key: a repeated reserve or release changes nothing.
class stock : public otpp::gen_server<stock> {
 public:
  static void define_handlers(otpp::handlers<stock>& h) {
    h.call<reserve_stock>([](stock& s, reserve_stock r) -> result<int> {
      ++s.state_.reserve_requests;
      if (s.held_.count(r.key)) return s.state_.available;
      if (r.units > s.state_.available) return failure(errc::invalid_argument, "out of stock");
      s.state_.available -= r.units;
      s.held_[r.key] = r.units;
      return s.state_.available;
    });
    h.call<release_stock>([](stock& s, release_stock r) {
      auto it = s.held_.find(r.key);
      if (it == s.held_.end()) return false;
      s.state_.available += it->second;
      ++s.state_.releases;
      s.held_.erase(it);
      return true;
    });
    h.call<confirm_stock>([](stock& s, confirm_stock c) -> result<bool> {
      if (!s.held_.count(c.key)) return failure(errc::not_found, "no reservation " + c.key);
      ++s.state_.confirmed;
      return true;
    });
    h.call<query>([](stock& s, query) { return s.state_; });
  }

 private:
  stock_state state_{.available = 10};
  std::map<std::string, int> held_;
};

// The payment service's own errors: domain errors, distinct from the transport's.
enum class payment_errc { declined = 1 };
class payment_category_t final : public std::error_category {
 public:
  const char* name() const noexcept override { return "payments"; }
  std::string message(int) const override { return "payment_declined"; }
};
const payment_category_t payment_category{};

struct charge {
  static constexpr std::string_view tag = "saga_test.charge";
  using reply = std::string;  // receipt
  std::string key;
  int amount = 0;
  MSGPACK_DEFINE_MAP(key, amount)
};
class payments : public otpp::gen_server<payments> {
 public:
  static void define_handlers(otpp::handlers<payments>& h) {
    h.call<charge>([](payments&, charge c) -> result<std::string> {
      if (c.amount > 100)
        return failure(std::error_code(static_cast<int>(payment_errc::declined), payment_category),
                       "payment_declined: limit 100");
      return "receipt-" + c.key;
    });
  }
};

TEST(saga_remote, DeclinedPaymentReleasesTheStockReservedOnAnotherNode) {
  auto po = free_port(), ps = free_port(), pp = free_port();
  auto seed = "127.0.0.1:" + std::to_string(po);
  auto orders = test_node::start("saga_orders", po, fast_options());
  auto stock_node = test_node::start("saga_stock", ps, fast_options({seed}));
  auto pay_node = test_node::start("saga_pay", pp, fast_options({seed}));
  ASSERT_TRUE(converged({orders.get(), stock_node.get(), pay_node.get()}, 3));
  auto stock_pid = stock_node->node->spawn<stock>();
  auto pay_pid = pay_node->node->spawn<payments>();
  ASSERT_TRUE(stock_pid && pay_pid);

  otpp::node& n = *orders->node;
  const otpp::pid s = *stock_pid, p = *pay_pid;
  auto& runner = res::saga_runner::of(n);
  res::saga_definition order{.name = "order"};
  order.steps.push_back(res::saga_step::make(
      "reserve",
      [&n, s](const res::saga_context& c, auto&& token) {
        return otpp::call(n, s, reserve_stock{c.idempotency_key, 3}, 10s,
                          std::forward<decltype(token)>(token));
      },
      [&n, s](const res::saga_context& c, auto&& token) {
        // Releases what the reserve step of this run holds (its key).
        return otpp::call(n, s, release_stock{c.run_id + "/reserve"}, 10s,
                          std::forward<decltype(token)>(token));
      }));
  order.steps.push_back(
      res::saga_step::make("charge", [&n, p](const res::saga_context& c, auto&& token) {
        return otpp::call(n, p, charge{c.idempotency_key, std::stoi(c.input)}, 10s,
                          std::forward<decltype(token)>(token));
      }));
  order.steps.push_back(
      res::saga_step::make("confirm", [&n, s](const res::saga_context& c, auto&& token) {
        return otpp::call(n, s, confirm_stock{c.run_id + "/reserve"}, 10s,
                          std::forward<decltype(token)>(token));
      }));
  order.compensation_retry = {.max_attempts = 5, .initial_delay = 50ms, .max_delay = 500ms};
  ASSERT_TRUE(runner.define(std::move(order)));
  auto state = [&] { return otpp::call(n, s, query{}, 10s, asio::use_future).get(); };

  // Declined: the reservation is released.
  auto declined = runner.start("order", "250", asio::use_future).get();
  ASSERT_TRUE(declined) << declined.fail().message();
  EXPECT_EQ(declined->status, res::saga_status::compensated);
  ASSERT_TRUE(declined->failed_step);
  EXPECT_EQ(declined->failed_step->step, "charge");
  // A domain error of the remote service, not one of the transport's.
  EXPECT_NE(declined->failed_step->error.code.category(), otpp::error_category());
  EXPECT_NE(declined->failed_step->error.reason.find("payment_declined"), std::string::npos)
      << declined->failed_step->error.message();
  auto after = state();
  ASSERT_TRUE(after);
  EXPECT_EQ(after->available, 10);
  EXPECT_EQ(after->releases, 1);
  EXPECT_EQ(after->reserve_requests, 1);
  EXPECT_EQ(after->confirmed, 0);

  // Accepted: the stock stays reserved and the receipt is the charge step's output.
  auto paid = runner.start("order", "80", asio::use_future).get();
  ASSERT_TRUE(paid) << paid.fail().message();
  EXPECT_EQ(paid->status, res::saga_status::completed);
  ASSERT_EQ(paid->outputs.size(), 3u);
  EXPECT_EQ(paid->outputs[1].second, "receipt-" + paid->run_id + "/charge");
  after = state();
  ASSERT_TRUE(after);
  EXPECT_EQ(after->available, 7);
  EXPECT_EQ(after->releases, 1);
  EXPECT_EQ(after->confirmed, 1);
}

}  // namespace
}  // namespace otpp_test
