// otpp_cluster_sim [--nodes 50,200,1000] [--quick] [--seed S]
// Runs the membership + downing core of N simulated nodes on virtual time (simulator.hpp)
// and prints one JSON object per figure (tools/bench/README.md). Figures are virtual time
// and bytes: the machine's speed or load does not change them, only how long the run takes.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "simulator.hpp"

namespace {

using namespace otpp::cluster::sim;
using namespace std::chrono_literals;

void emit(std::size_t n, const std::string& what, const char* unit, double value,
          const std::string& extra = {}) {
  std::printf("{\"name\":\"cluster_sim.n%zu.%s\",\"unit\":\"%s\",\"value\":%.3f,\"n\":%zu%s}\n", n,
              what.c_str(), unit, value, n, extra.empty() ? "" : ("," + extra).c_str());
  std::fflush(stdout);
}

std::string kv(const char* k, double v) {
  char b[96];
  std::snprintf(b, sizeof b, "\"%s\":%.3f", k, v);
  return b;
}
// snprintf, not string concatenation: g++ 12 at -O3 warns falsely (-Wrestrict) on the latter.
std::string kv(const char* k, std::uint64_t v) {
  char b[96];
  std::snprintf(b, sizeof b, "\"%s\":%llu", k, static_cast<unsigned long long>(v));
  return b;
}
std::string kv(const char* k, bool v) {
  char b[96];
  std::snprintf(b, sizeof b, "\"%s\":%s", k, v ? "true" : "false");
  return b;
}

double wall_s(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

void run(std::size_t n, bool quick, std::uint64_t seed) {
  const auto wall = std::chrono::steady_clock::now();
  sim_options o;
  o.seed = seed + n;
  simulator s(o);
  s.reserve(n + 1);
  s.bootstrap(n);
  const auto start = s.now();
  std::fprintf(stderr, "n=%zu: bootstrapped in %.1f s wall\n", n, wall_s(wall));
  // 1,000 nodes cost ~4 s of CPU per virtual second (each node merges 6 full states of 1,000
  // entries a second, and the simulator runs all 1,000): that size gets shorter windows.
  const bool big = n >= 1000;
  s.run_for(big ? 1s : 2s);  // past start-up: every node has gossiped a few rounds

  // Steady state: full-state gossip, default interval and fanout.
  const duration gossip_window = quick ? 2s : big ? 3s : 5s;
  auto g = measure_gossip(s, gossip_window);
  emit(n, "gossip_bytes_per_node_per_s", "bytes/s", g.bytes_per_node_per_s,
       kv("messages_per_node_per_s", g.messages_per_node_per_s) + "," +
           kv("bytes_per_message", g.bytes_per_message) + "," +
           kv("window_s", std::chrono::duration<double>(gossip_window).count()));

  // Join through one seed (node 0).
  auto j = measure_join(s, 0, 30s);
  emit(n, "join_convergence_ms", "ms", to_ms(j.time),
       kv("converged", j.converged) + "," + kv("hello_bytes_from_seed", j.hello_bytes_from_seed) +
           "," + kv("hello_messages", j.hello_messages) + "," +
           kv("hello_bytes_total", j.hello_bytes));
  emit(n, "join_hello_bytes", "bytes", static_cast<double>(j.hello_bytes_from_seed),
       kv("hello_bytes_total", j.hello_bytes));
  s.run_for(1s);

  // Crash of a member that is neither the seed nor the new node.
  auto c = measure_crash(s, n / 2, 30s);
  emit(n, "crash_convergence_ms", "ms", to_ms(c.time),
       kv("converged", c.converged) + "," + kv("survivors", std::uint64_t(c.survivors)) + "," +
           kv("reason_connection_closed", std::uint64_t(c.reason_connection_closed)));
  s.run_for(1s);

  // 1% loss of heartbeats and gossip, nothing fails.
  duration window = big ? 10s : 60s;
  if (quick) window = big ? 3s : 15s;
  auto l = measure_loss(s, 0.01, window);
  emit(n, "false_downings_1pct_loss", "count", static_cast<double>(l.node_down + l.downed),
       kv("window_s", std::chrono::duration<double>(window).count()) + "," +
           kv("node_down", l.node_down) + "," + kv("downed", l.downed) + "," +
           kv("minority", l.minority) + "," + kv("unreachable_flaps", l.unreachable) + "," +
           kv("gossip_lost", l.gossip_lost));
  s.run_for(2s);

  if (!big) {
    // Stress, not a target: 30% loss, where 6 heartbeats lost in a row (600 ms of silence)
    // is common. Shows the flaps are real and that the stable period keeps them from
    // becoming downings.
    const duration stress = quick ? 5s : 20s;
    auto h = measure_loss(s, 0.30, stress);
    emit(n, "unreachable_flaps_30pct_loss", "count", static_cast<double>(h.unreachable),
         kv("window_s", std::chrono::duration<double>(stress).count()) + "," +
             kv("node_down", h.node_down) + "," + kv("downed", h.downed) + "," +
             kv("minority", h.minority));
    s.run_for(2s);
  }

  // 60|40 split of the survivors.
  auto p = measure_partition(s, 0.6, 30s);
  emit(n, "partition.majority_decision_ms", "ms", to_ms(p.majority_time),
       kv("decided", p.decided) + "," + kv("majority", std::uint64_t(p.majority)) + "," +
           kv("minority", std::uint64_t(p.minority)) + "," +
           kv("majority_reported_minority", p.majority_reported_minority) + "," +
           kv("minority_downed_someone", p.minority_downed_someone) + "," +
           kv("majority_downed_majority", p.majority_downed_majority) + "," +
           kv("downed", p.downed));
  emit(n, "partition.minority_report_ms", "ms", to_ms(p.minority_time), kv("decided", p.decided));
  std::fprintf(stderr, "n=%zu: done in %.1f s wall for %.1f s of virtual time\n", n, wall_s(wall),
               std::chrono::duration<double>(s.now() - start).count());
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::size_t> sizes{50, 200, 1000};
  bool quick = false;
  std::uint64_t seed = 42;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) {
      quick = true;
    } else if (!std::strcmp(argv[i], "--nodes") && i + 1 < argc) {
      sizes.clear();
      for (char* p = argv[++i]; *p;) {
        char* end = nullptr;
        auto v = std::strtoull(p, &end, 10);
        if (end == p || v < 3) {
          std::fprintf(stderr, "--nodes: a comma-separated list of sizes >= 3\n");
          return 2;
        }
        sizes.push_back(v);
        p = *end == ',' ? end + 1 : end;
      }
    } else if (!std::strcmp(argv[i], "--seed") && i + 1 < argc) {
      seed = std::strtoull(argv[++i], nullptr, 10);
    } else {
      std::fprintf(stderr, "usage: otpp_cluster_sim [--nodes 50,200,1000] [--quick] [--seed S]\n");
      return 2;
    }
  }
  for (auto n : sizes) run(n, quick, seed);
  return 0;
}
