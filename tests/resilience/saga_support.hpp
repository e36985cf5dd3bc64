// Scripted saga steps for the saga tests: each action and compensation completes inline with
// the next scripted outcome (success when none is left), or is held until the test releases
// it, and every call is written down with its context and node time.
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <asio/async_result.hpp>

#include "otpp/resilience/saga.hpp"

namespace otpp_test {

struct saga_call {
  std::string what{};  // "do <step>" or "undo <step>"
  otpp::resilience::saga_context context{};
  otpp::time_point at{};
};

struct saga_script {
  otpp::node* node = nullptr;
  std::map<std::string, std::deque<otpp::result<std::string>>> actions{};
  std::map<std::string, std::deque<otpp::result<void>>> compensations{};
  std::map<std::string, bool> hold{};  // step name -> its action is held
  std::vector<std::function<void(otpp::result<std::string>)>> held{};
  std::vector<saga_call> calls{};

  std::vector<std::string> whats() const {
    std::vector<std::string> out;
    for (const auto& c : calls) out.push_back(c.what);
    return out;
  }
  otpp::resilience::saga_step step(const std::string& name) {
    using otpp::resilience::saga_context;
    return otpp::resilience::saga_step::make(
        name,
        [this, name](const saga_context& ctx, auto&& token) {
          return asio::async_initiate<decltype(token), void(otpp::result<std::string>)>(
              [this, name, &ctx](auto h) {
                calls.push_back({"do " + name, ctx, node->now()});
                if (hold[name]) {
                  auto shared = std::make_shared<decltype(h)>(std::move(h));
                  held.push_back(
                      [shared](otpp::result<std::string> r) { (*shared)(std::move(r)); });
                  return;
                }
                auto& q = actions[name];
                otpp::result<std::string> r = name + "-out";
                if (!q.empty()) {
                  r = std::move(q.front());
                  q.pop_front();
                }
                std::move(h)(std::move(r));
              },
              token);
        },
        [this, name](const saga_context& ctx, auto&& token) {
          return asio::async_initiate<decltype(token), void(otpp::result<void>)>(
              [this, name, &ctx](auto h) {
                calls.push_back({"undo " + name, ctx, node->now()});
                auto& q = compensations[name];
                otpp::result<void> r;
                if (!q.empty()) {
                  r = std::move(q.front());
                  q.pop_front();
                }
                std::move(h)(std::move(r));
              },
              token);
        });
  }
};

}  // namespace otpp_test
