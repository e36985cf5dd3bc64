// A server for the cancellation and domain-error tests, locally and across nodes: it holds
// the replies of `hold` calls until `answer_held` answers them (returning how many callers
// still wanted theirs), and declines a `charge` over 100 with a domain error and details.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "otpp/runtime.hpp"

namespace otpp_test {

struct hold {
  static constexpr std::string_view tag = "resilience_test.hold";
  using reply = int;
  int unused = 0;
  MSGPACK_DEFINE_MAP(unused)
};
struct answer_held {
  static constexpr std::string_view tag = "resilience_test.answer_held";
  using reply = int;  // how many held replies were still wanted
  int value = 0;
  MSGPACK_DEFINE_MAP(value)
};
struct declined {
  std::string card;
  int amount = 0;
  MSGPACK_DEFINE_MAP(card, amount)
};
struct charge {
  static constexpr std::string_view tag = "resilience_test.charge";
  using reply = int;
  int amount = 0;
  MSGPACK_DEFINE_MAP(amount)
};

class shop : public otpp::gen_server<shop> {
 public:
  static void define_handlers(otpp::handlers<shop>& h) {
    h.call<hold>(
        [](shop& self, hold, otpp::reply_to<int> r) { self.held_.push_back(std::move(r)); });
    h.call<answer_held>([](shop& self, answer_held m) {
      int wanted = 0;
      for (auto& r : self.held_) wanted += r(m.value) ? 1 : 0;
      self.held_.clear();
      return wanted;
    });
    h.call<charge>([](shop&, charge c) -> otpp::result<int> {
      if (c.amount > 100) {
        return otpp::domain_failure("payment_declined", "over the card's limit",
                                    declined{"4242", c.amount});
      }
      return c.amount;
    });
  }

 private:
  std::vector<otpp::reply_to<int>> held_;
};

}  // namespace otpp_test
