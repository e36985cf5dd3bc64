// The health endpoint over real sockets on 127.0.0.1: status codes 200 / 503 (also when a check
// hangs past its timeout, and past the endpoint's own wait), JSON bodies, the metrics text, 404,
// a taken port, and stop.
#include <atomic>
#include <memory>
#include <string>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "health/prometheus_parser.hpp"
#include "otpp/health.hpp"
#include "otpp/runtime.hpp"

namespace otpp_test {
namespace {

using namespace std::chrono_literals;
using otpp::errc;
namespace health = otpp::health;
using health::check_result;

struct endpoint : ::testing::Test {
  otpp::node node{{.name = "http_node", .threads = 2}};
  health::registry* reg = nullptr;
  std::uint16_t port = 0;

  void SetUp() override {
    node.start();
    reg = &health::of(node);
    reg->require_cluster(false);
  }
  void serve(health::http_options o = {}) {
    auto p = reg->serve(std::move(o));
    ASSERT_TRUE(p) << p.fail().message();
    port = *p;
    ASSERT_NE(port, 0);
    EXPECT_EQ(reg->port(), port);
  }
  httplib::Result get(const std::string& path) {
    httplib::Client c("127.0.0.1", port);
    c.set_connection_timeout(10, 0);
    c.set_read_timeout(30, 0);  // generous: a loaded machine
    return c.Get(path.c_str());
  }
};

TEST_F(endpoint, LiveAndReadyAnswer200WithJson) {
  ASSERT_TRUE(reg->add_check("db", [](health::check_done d) { d(check_result::healthy("ok")); }));
  serve();
  auto live = get("/health/live");
  ASSERT_TRUE(live) << httplib::to_string(live.error());
  EXPECT_EQ(live->status, 200);
  EXPECT_EQ(live->get_header_value("Content-Type"), "application/json");
  auto j = nlohmann::json::parse(live->body);
  EXPECT_EQ(j["status"], "healthy");
  EXPECT_EQ(j["checks"][0]["name"], "liveness");

  auto ready = get("/health/ready");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 200);
  j = nlohmann::json::parse(ready->body);
  EXPECT_EQ(j["status"], "healthy");
  ASSERT_EQ(j["checks"].size(), 1u);
  EXPECT_EQ(j["checks"][0]["name"], "db");
  EXPECT_EQ(j["checks"][0]["detail"], "ok");
  EXPECT_EQ(j["checks"][0]["critical"], true);
  EXPECT_TRUE(j["checks"][0]["duration_ms"].is_number());
}

TEST_F(endpoint, DegradedIs200UnhealthyIs503) {
  ASSERT_TRUE(
      reg->add_check("soft", [](health::check_done d) { d(check_result::degraded("slow")); }));
  serve();
  auto r = get("/health/ready");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(nlohmann::json::parse(r->body)["status"], "degraded");
  ASSERT_TRUE(
      reg->add_check("hard", [](health::check_done d) { d(check_result::unhealthy("db down")); }));
  r = get("/health/ready");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  auto j = nlohmann::json::parse(r->body);
  EXPECT_EQ(j["status"], "unhealthy");
  EXPECT_EQ(j["checks"][1]["detail"], "db down");
}

TEST_F(endpoint, ReadinessWithoutAClusterIs503) {
  reg->require_cluster(true);
  serve();
  auto r = get("/health/ready");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  auto j = nlohmann::json::parse(r->body);
  EXPECT_EQ(j["checks"][0]["name"], "cluster");
  EXPECT_EQ(j["checks"][0]["detail"], "not joined to a cluster");
}

TEST_F(endpoint, ACheckHangingPastItsTimeoutAnswers503) {
  // The check never answers: its own timeout (node time, real clock here) decides.
  ASSERT_TRUE(reg->add_check("hang", [](health::check_done) {}, {.timeout = 200ms}));
  serve({.check_timeout = 20000ms});
  auto r = get("/health/ready");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  auto j = nlohmann::json::parse(r->body);
  EXPECT_EQ(j["status"], "unhealthy");
  EXPECT_EQ(j["checks"][0]["name"], "hang");
  EXPECT_EQ(j["checks"][0]["detail"], "timed out after 200ms");
  EXPECT_GE(j["checks"][0]["duration_ms"].get<double>(), 200.0);
  // Liveness is unaffected by a hanging readiness check.
  auto live = get("/health/live");
  ASSERT_TRUE(live);
  EXPECT_EQ(live->status, 200);
}

TEST_F(endpoint, AReportLaterThanTheEndpointsWaitAnswers503) {
  // The check's own timeout is far away: the HTTP thread stops waiting first.
  ASSERT_TRUE(reg->add_check("hang", [](health::check_done) {}, {.timeout = 3600s}));
  serve({.check_timeout = 300ms});
  auto r = get("/health/ready");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  auto j = nlohmann::json::parse(r->body);
  EXPECT_EQ(j["status"], "unhealthy");
  EXPECT_EQ(j["checks"][0]["name"], "readiness");
  EXPECT_EQ(j["checks"][0]["detail"], "no report within 300ms");
}

TEST_F(endpoint, MetricsInPrometheusTextFormat) {
  auto c = reg->metrics().make_counter("app_orders_total", "Orders taken.", {{"shop", "main"}});
  ASSERT_TRUE(c);
  c->inc(3);
  serve();
  auto r = get("/metrics");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  std::string error;
  auto p = parse_prometheus(r->body, error);
  ASSERT_TRUE(p) << error << "\n" << r->body;
  EXPECT_EQ(p->value("app_orders_total", {{"shop", "main"}}), 3);
  auto procs = p->value("otpp_processes", {{"node", "http_node"}});
  ASSERT_TRUE(procs);
  EXPECT_GE(*procs, 0);
}

TEST_F(endpoint, UnknownPathIs404) {
  serve();
  auto r = get("/nope");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
}

TEST_F(endpoint, ServeErrors) {
  EXPECT_EQ(reg->serve({.threads = 0}).error(), errc::invalid_argument);
  serve();
  EXPECT_EQ(reg->serve().error(), errc::running);
  // Another node cannot take (or share) the same port.
  otpp::node other({.name = "other", .threads = 1});
  other.start();
  auto taken = health::of(other).serve({.port = port});
  ASSERT_FALSE(taken);
  EXPECT_EQ(taken.error(), std::errc::address_in_use) << taken.fail().message();
  EXPECT_EQ(health::of(other).serve({.bind_address = "localhost"}).error(), errc::invalid_argument);
  other.stop();
}

TEST_F(endpoint, StopClosesTheEndpoint) {
  serve();
  ASSERT_TRUE(get("/health/live"));
  reg->stop();
  EXPECT_EQ(reg->port(), 0);
  auto r = get("/health/live");
  EXPECT_FALSE(r);
  reg->stop();  // idempotent
  // Serving again works (a fresh ephemeral port).
  serve();
  EXPECT_TRUE(get("/health/live"));
}

TEST_F(endpoint, StopRightAfterServeEnds) {
  // No request in between: the listen loop may not have begun when stop() comes.
  for (int i = 0; i < 20; ++i) {
    serve();
    reg->stop();
    EXPECT_EQ(reg->port(), 0);
  }
}

TEST_F(endpoint, NodeStopStopsTheEndpoint) {
  serve();
  node.stop();
  EXPECT_EQ(reg->port(), 0);
  EXPECT_FALSE(get("/health/live"));
}

}  // namespace
}  // namespace otpp_test
