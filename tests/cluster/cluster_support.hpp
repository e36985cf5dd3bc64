// In-process cluster nodes on 127.0.0.1 for tests.
#pragma once

#include <algorithm>
#include <asio/ip/tcp.hpp>
#include <atomic>
#include <fstream>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/eventually.hpp"
#include "otpp/cluster/cluster.hpp"
#include "otpp/runtime.hpp"

namespace otpp_test {

using namespace std::chrono_literals;

inline const std::string test_secret = "0123456789abcdef0123456789abcdef";

// A port nobody listens on right now, for a node to listen on later. It is drawn below the
// kernel's ephemeral range: a port from that range (what binding port 0 gives) can be taken
// meanwhile as the local port of some outgoing connection (connect() picks them at random),
// and the node then fails to listen with "Address already in use". Each port is given out
// once per test process.
inline std::uint16_t free_port() {
  static std::mutex mu;
  static std::mt19937 rng(std::random_device{}());
  static std::set<std::uint16_t> given;
  std::lock_guard lock(mu);
  int ephemeral_low = 32768;
  if (std::ifstream range("/proc/sys/net/ipv4/ip_local_port_range"); range) range >> ephemeral_low;
  const int low = 10000, high = std::min(ephemeral_low, 65536) - 1;
  asio::io_context io;
  const auto address = asio::ip::make_address("127.0.0.1");
  if (high - low >= 1000) {
    std::uniform_int_distribution<int> pick(low, high);
    for (int attempt = 0; attempt < 500; ++attempt) {
      const auto port = static_cast<std::uint16_t>(pick(rng));
      if (given.count(port)) continue;
      asio::ip::tcp::acceptor probe(io);
      std::error_code ec;
      probe.open(asio::ip::tcp::v4(), ec);
      if (!ec) probe.bind({address, port}, ec);
      if (ec) continue;
      given.insert(port);
      return port;
    }
  }
  asio::ip::tcp::acceptor a(io, asio::ip::tcp::endpoint(address, 0));
  return a.local_endpoint().port();
}

inline std::string node_name(const std::string& name, std::uint16_t port) {
  return name + "@127.0.0.1:" + std::to_string(port);
}

// Fast detection for tests; the bounds in assertions stay generous (slow, loaded machines).
inline otpp::cluster::options fast_options(std::vector<std::string> seeds = {}) {
  otpp::cluster::options o;
  o.seeds = std::move(seeds);
  o.transport.secret = test_secret;
  o.gossip_interval = 200ms;
  o.heartbeat_interval = 50ms;
  o.unreachable_after = 1000ms;
  o.downing.stable_after = 1000ms;
  o.retry_initial = 20ms;
  o.retry_max = 300ms;
  o.leave_timeout = 2000ms;
  return o;
}

// Records every node event a node's cluster reports.
struct event_log {
  std::mutex mu;
  std::vector<otpp::cluster::node_event> events;
  void add(const otpp::cluster::node_event& e) {
    std::lock_guard lock(mu);
    events.push_back(e);
  }
  std::size_t count(otpp::cluster::node_event_kind k, const std::string& node = {}) {
    std::lock_guard lock(mu);
    std::size_t n = 0;
    for (const auto& e : events) n += e.kind == k && (node.empty() || e.node == node);
    return n;
  }
  std::optional<otpp::cluster::node_event> find(otpp::cluster::node_event_kind k,
                                                const std::string& node) {
    std::lock_guard lock(mu);
    for (const auto& e : events) {
      if (e.kind == k && e.node == node) return e;
    }
    return std::nullopt;
  }
};

struct test_node {
  std::unique_ptr<otpp::node> node;
  otpp::cluster::service* cluster = nullptr;
  std::shared_ptr<event_log> log = std::make_shared<event_log>();
  std::string id;

  static std::unique_ptr<test_node> start(const std::string& name, std::uint16_t port,
                                          otpp::cluster::options o, std::size_t threads = 2) {
    auto t = std::make_unique<test_node>();
    t->id = node_name(name, port);
    t->node = std::make_unique<otpp::node>(otpp::node_options{.name = t->id, .threads = threads});
    t->node->start();
    // Logged from the first event (a subscribe after join could miss a quick node_up).
    o.on_event = [log = t->log, also = std::move(o.on_event)](const otpp::cluster::node_event& e) {
      log->add(e);
      if (also) also(e);
    };
    auto c = otpp::cluster::join(*t->node, std::move(o));
    if (!c) {
      ADD_FAILURE() << "join " << t->id << ": " << c.fail().message();
      return t;
    }
    t->cluster = *c;
    return t;
  }

  std::size_t up_members() const {
    std::size_t n = 0;
    for (const auto& m : cluster->members()) {
      n += m.status == otpp::cluster::member_status::up && m.connected && m.reachable;
    }
    return n;
  }
};

// Every node sees `n` members up, connected and reachable, with one connection to each other
// member, twice 100 ms apart: nodes started at once may still be resolving a duplicate
// connection when they first look converged, and the one that loses takes what was in flight
// on it with it (tests that then spawn or call at once would see nodedown or a timeout).
inline bool converged(const std::vector<test_node*>& nodes, std::size_t n,
                      std::chrono::milliseconds bound = 30s) {
  auto settled = [&] {
    for (auto* t : nodes) {
      if (!t->cluster || t->up_members() != n || t->cluster->stats().connections + 1 < n) {
        return false;
      }
    }
    return true;
  };
  auto until = std::chrono::steady_clock::now() + bound;
  while (std::chrono::steady_clock::now() < until) {
    if (!eventually(settled, std::chrono::duration_cast<std::chrono::milliseconds>(
                                 until - std::chrono::steady_clock::now()))) {
      return false;
    }
    std::this_thread::sleep_for(100ms);
    if (settled()) return true;
  }
  return false;
}

}  // namespace otpp_test
