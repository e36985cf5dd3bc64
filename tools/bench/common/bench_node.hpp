// What the drivers of node-process benchmarks (remote, registry) share: node settings from the
// environment, addresses on 127.0.0.1, the cluster options of a benchmark node, the result
// line, and the --serve seed list.
#pragma once

#include <asio/ip/tcp.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "otpp/cluster/cluster.hpp"

namespace otpp_bench {

// Worker threads of each node (OTPP_BENCH_THREADS, default 2: one per vCPU, as Erlang's
// schedulers).
inline std::size_t node_threads() {
  const char* t = std::getenv("OTPP_BENCH_THREADS");
  return t ? static_cast<std::size_t>(std::atoi(t)) : 2;
}
// node_options::idle_spin of every node (OTPP_BENCH_SPIN_US, default 0: sleep at once; Erlang's
// schedulers busy-wait before they sleep by default).
inline std::chrono::microseconds idle_spin() {
  const char* t = std::getenv("OTPP_BENCH_SPIN_US");
  return std::chrono::microseconds(t ? std::atoi(t) : 0);
}

inline std::uint16_t free_port() {
  asio::io_context io;
  asio::ip::tcp::acceptor a(io, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  return a.local_endpoint().port();
}
inline std::string id_of(const std::string& name, std::uint16_t port) {
  return name + "@127.0.0.1:" + std::to_string(port);
}

// The record protection every node requires (OTPP_BENCH_PROTECTION: hmac-sha256,
// aes-256-gcm or chacha20-poly1305; unset: the default offer, which agrees on hmac-sha256).
// An unknown name ends the benchmark rather than measure something else.
inline std::vector<otpp::transport::record_protection> record_protections() {
  otpp::transport::config defaults;
  const char* name = std::getenv("OTPP_BENCH_PROTECTION");
  if (!name || !*name) return defaults.record_protections;
  const auto p = otpp::transport::parse_record_protection(name);
  if (!p) {
    std::fprintf(stderr, "OTPP_BENCH_PROTECTION: unknown record protection %s\n", name);
    std::exit(2);
  }
  return {*p};
}

inline otpp::cluster::options cluster_options(std::vector<std::string> seeds,
                                              const std::string& secret) {
  otpp::cluster::options o;
  o.seeds = std::move(seeds);
  o.transport.secret = secret;
  o.transport.record_protections = record_protections();
  o.retry_initial = std::chrono::milliseconds(5);
  o.retry_max = std::chrono::milliseconds(100);
  return o;
}

// One result line: {"name":..,"unit":..,"value":..[,extra]}; extra = ,"key":number,...
inline void print(const std::string& name, const char* unit, double value,
                  const std::string& extra = {}) {
  std::printf("{\"name\":\"%s\",\"unit\":\"%s\",\"value\":%.3f%s}\n", name.c_str(), unit, value,
              extra.c_str());
  std::fflush(stdout);
}

// "a,b,c" (the --serve argument) as a list; empty items skipped.
inline std::vector<std::string> split_seeds(const std::string& s) {
  std::vector<std::string> out;
  std::size_t at = 0;
  while (at <= s.size()) {
    auto comma = s.find(',', at);
    if (comma == std::string::npos) comma = s.size();
    if (comma > at) out.push_back(s.substr(at, comma - at));
    at = comma + 1;
  }
  return out;
}

}  // namespace otpp_bench
