// The node's health registry (health::of(node)): named checks run concurrently, each bounded by
// its own timeout on the node's clock; liveness (the node's schedulers answer within a bound)
// and readiness (this node is an up member of its cluster, plus the checks); the node's
// metrics_registry; and an optional HTTP endpoint (off until serve()).
//
//   auto& health = otpp::health::of(node);
//   health.add_check("db", [&](auto done) { db.ping([done](bool ok) {
//     done(ok ? otpp::health::check_result::healthy() :
//     otpp::health::check_result::unhealthy("down"));
//   }); }, {.timeout = 2s});
//   auto port = health.serve({.port = 9100});   // GET /health/live, /health/ready, /metrics
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/dispatch.hpp>

#include "otpp/clock.hpp"
#include "otpp/health/metrics.hpp"
#include "otpp/node.hpp"
#include "otpp/result.hpp"

namespace otpp::health {

// Worst last: aggregation takes the maximum.
enum class status { healthy = 0, degraded = 1, unhealthy = 2 };
const char* to_string(status s) noexcept;

struct check_result {
  status state = status::healthy;
  std::string detail;
  static check_result healthy(std::string detail = {}) {
    return {status::healthy, std::move(detail)};
  }
  static check_result degraded(std::string detail) { return {status::degraded, std::move(detail)}; }
  static check_result unhealthy(std::string detail) {
    return {status::unhealthy, std::move(detail)};
  }
};

// A check is an asynchronous operation: it starts a probe and calls `done` once (from any
// thread, now or later). It is started on a node thread outside any process: it must not
// block (send a call, arm a timer, ...). A `done` called after the timeout is ignored.
using check_done = std::function<void(check_result)>;
using check_fn = std::function<void(check_done done)>;

struct check_options {
  clock_type::duration timeout = std::chrono::seconds(5);  // node time
  // A critical check's unhealthy (or timeout) makes the whole report unhealthy; a
  // non-critical one's makes it at most degraded.
  bool critical = true;
};

// One check of a report. duration: node time from its start to its result (or timeout).
struct check_report {
  std::string name;
  status state = status::healthy;
  std::string detail;
  clock_type::duration duration{};
  bool critical = true;
};

struct health_report {
  status state = status::healthy;    // the worst check (non-critical ones count as degraded)
  std::vector<check_report> checks;  // in registration order; built-in ones first
  clock_type::duration duration{};
};
// {"status":"...","duration_ms":...,"checks":[{"name","status","detail","duration_ms","critical"}]}
std::string to_json(const health_report& r);

struct http_options {
  std::string bind_address = "127.0.0.1";  // an IP address; loopback unless configured
  std::uint16_t port = 0;                  // 0: an ephemeral port (serve() answers it)
  // How long an HTTP thread waits for a report: past it the request answers 503 (the checks'
  // own timeouts are node time and may be longer or never fire on a stuck node).
  std::chrono::milliseconds check_timeout{10000};
  std::chrono::milliseconds liveness_bound{1000};  // for /health/live (see live())
  std::size_t threads = 2;                         // HTTP worker threads
};

class registry final : public node_service {
 public:
  explicit registry(node& n);
  ~registry() override;  // stops the endpoint

  // Errors: invalid_argument (empty name, no function), already_registered (name taken).
  result<void> add_check(std::string name, check_fn f, check_options o = {});
  bool remove_check(std::string_view name);

  // Readiness needs an up cluster membership (the built-in check "cluster"): on by default;
  // off for a node that never joins a cluster.
  void require_cluster(bool on);

  // Readiness: "cluster" (if required) and every check, concurrently; completes
  // void(health_report) on the token's executor (a callback without one: on a node thread).
  template <class Token>
  auto ready(Token&& token) {
    return asio::async_initiate<Token, void(health_report)>(
        [this](auto h) { start_ready(wrap(std::move(h))); }, token);
  }
  // Liveness: a probe process answers a call within `bound` (node time) or the report is
  // unhealthy ("liveness" check). The process runs on the node's scheduler, so the answer
  // proves a worker thread takes process work.
  template <class Token>
  auto live(clock_type::duration bound, Token&& token) {
    return asio::async_initiate<Token, void(health_report)>(
        [this, bound](auto h) { start_live(bound, wrap(std::move(h))); }, token);
  }

  // The node's metrics: node counters (processes, mailboxes, cluster connections and frames,
  // ...) are collected at every render; add your own series and observe() policies here.
  metrics_registry& metrics() noexcept { return *metrics_; }

  // Starts the HTTP endpoint (GET /health/live, /health/ready, /metrics) and answers the bound
  // port. Errors: running (already serving), invalid_argument (threads 0, bind_address not an
  // IP address), or the bind failure (std::errc::address_in_use: the port is taken, also by
  // another node's endpoint: the socket has no SO_REUSEPORT). Stopped by stop() and at node
  // stop (its stop hook).
  result<std::uint16_t> serve(http_options o = {});
  // Stops the endpoint: waits for its requests in flight (each bounded by check_timeout).
  // Idempotent. Call it from a thread outside the node's processes.
  void stop();
  std::uint16_t port() const;  // the bound port, 0 when not serving

  node& owner() noexcept { return node_; }

 private:
  using report_handler = std::function<void(health_report)>;
  template <class H>
  static report_handler wrap(H h) {
    auto shared = std::make_shared<H>(std::move(h));
    return [shared](health_report r) {
      auto ex = asio::get_associated_executor(*shared);
      asio::dispatch(ex,
                     [shared, r = std::move(r)]() mutable { std::move (*shared)(std::move(r)); });
    };
  }
  void start_ready(report_handler h);
  void start_live(clock_type::duration bound, report_handler h);
  struct state;
  class http;
  node& node_;
  std::shared_ptr<state> state_;
  std::unique_ptr<metrics_registry> metrics_;
  mutable std::mutex http_mutex_;
  std::unique_ptr<http> http_;
};

// The node's health registry (created on first use).
registry& of(node& n);

}  // namespace otpp::health
