// Shared test messages and servers.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <asio/use_future.hpp>

#include "common/eventually.hpp"
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
  int on_increment_peek() const { return n_; }

 private:
  int n_;
};

// Thread-safe event log that tests wait on (bounded waits, never fixed sleeps).
class recorder {
 public:
  void add(std::string event) {
    {
      std::lock_guard lock(mutex_);
      events_.push_back(std::move(event));
    }
    cv_.notify_all();
  }
  // Waits (bounded) until `pred(events)` holds; returns whether it did.
  template <class Pred>
  bool wait(Pred pred, std::chrono::seconds bound = std::chrono::seconds(20)) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, bound, [&] { return pred(events_); });
  }
  bool wait_count(std::size_t n, std::chrono::seconds bound = std::chrono::seconds(20)) {
    return wait([n](const auto& e) { return e.size() >= n; }, bound);
  }
  bool wait_for_event(const std::string& ev) {
    return wait([&](const auto& e) { return std::find(e.begin(), e.end(), ev) != e.end(); });
  }
  std::vector<std::string> events() {
    std::lock_guard lock(mutex_);
    return events_;
  }
  std::size_t count(const std::string& ev) {
    std::lock_guard lock(mutex_);
    return static_cast<std::size_t>(std::count(events_.begin(), events_.end(), ev));
  }
  std::size_t count_prefix(const std::string& prefix) {
    std::lock_guard lock(mutex_);
    return static_cast<std::size_t>(std::count_if(
        events_.begin(), events_.end(), [&](const auto& e) { return e.starts_with(prefix); }));
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<std::string> events_;
};

// A gate that a handler blocks on until the test opens it (bounded).
class gate {
 public:
  void open() {
    {
      std::lock_guard lock(mutex_);
      open_ = true;
    }
    cv_.notify_all();
  }
  void pass() {
    std::unique_lock lock(mutex_);
    cv_.wait_for(lock, std::chrono::seconds(30), [this] { return open_; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool open_ = false;
};

// Watches processes: monitors on request and records down / EXIT messages.
struct watch {
  static constexpr std::string_view tag = "watch";
  otpp::pid target;
  bool link = false;
  MSGPACK_DEFINE_MAP(target, link)
};
class observer : public otpp::gen_server<observer> {
 public:
  observer(std::shared_ptr<recorder> r, bool trap) : rec_(std::move(r)), trap_(trap) {}
  otpp::result<void> init() {
    trap_exit(trap_);
    return {};
  }
  static void define_handlers(otpp::handlers<observer>& h) {
    h.info<watch>([](observer& self, watch w) {
      if (w.link) {
        self.link(w.target);
      } else {
        self.monitor(w.target);
      }
      self.rec_->add("watching");
    });
    h.info<otpp::down>(
        [](observer& self, otpp::down d) { self.rec_->add("down:" + d.reason.text()); });
    h.info<otpp::exit_message>(
        [](observer& self, otpp::exit_message m) { self.rec_->add("EXIT:" + m.reason.text()); });
  }
  void terminate(const otpp::exit_reason& r) { rec_->add("terminate:" + r.text()); }

 private:
  std::shared_ptr<recorder> rec_;
  bool trap_;
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
