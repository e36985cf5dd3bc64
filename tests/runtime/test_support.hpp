// Shared test messages and servers.
#pragma once

#include <chrono>
#include <future>
#include <string>

#include <asio/use_future.hpp>
#include <gtest/gtest.h>

#include "otpp/runtime.hpp"

namespace otpp_test {

using namespace std::chrono_literals;

struct increment {
  static constexpr std::string_view tag = "increment";
  using reply = int;
  int by = 1;
  MSGPACK_DEFINE_MAP(by)
};
struct get_count {
  static constexpr std::string_view tag = "get_count";
  using reply = int;
  OTPP_NO_FIELDS()
};
struct reset {
  static constexpr std::string_view tag = "reset";
  int to = 0;
  MSGPACK_DEFINE_MAP(to)
};
struct crash {
  static constexpr std::string_view tag = "crash";
  using reply = int;
  std::string why = "boom";
  MSGPACK_DEFINE_MAP(why)
};
struct ping {
  static constexpr std::string_view tag = "ping";
  int n = 0;
  MSGPACK_DEFINE_MAP(n)
};

class counter : public otpp::gen_server<counter> {
 public:
  explicit counter(int start = 0) : n_(start) {}
  static void define_handlers(otpp::handlers<counter>& h) {
    h.call<increment>(&counter::on_increment);
    h.call<get_count>([](counter& self, get_count) { return self.n_; });
    h.call<crash>([](counter&, crash c) -> int { throw std::runtime_error(c.why); });
    h.cast<reset>([](counter& self, reset r) { self.n_ = r.to; });
    h.cast<increment>([](counter& self, increment m) { self.n_ += m.by; });
  }
  int on_increment(increment m) { return n_ += m.by; }

 private:
  int n_;
};

// Waits for a future with a generous bound: a hang fails the test instead of wedging CI.
template <class T>
T get(std::future<T>& f, std::chrono::seconds bound = std::chrono::seconds(30)) {
  if (f.wait_for(bound) != std::future_status::ready) {
    ADD_FAILURE() << "future not ready in time";
    std::abort();
  }
  return f.get();
}

template <class M>
auto call_sync(otpp::node& n, const otpp::pid& to, M msg,
               std::chrono::milliseconds timeout = otpp::default_call_timeout) {
  auto f = otpp::call(n, to, std::move(msg), timeout, asio::use_future);
  return get(f);
}

}  // namespace otpp_test
